//! Syntax trees: tree-sitter grammars, and trees kept in step with a document's edits and re-parsed off the
//! message path (`incremental.rs`).
//!
//! Architecture invariant: this module knows nothing about LSP or models. Parsing never fails: a text that does
//! not parse still gets a tree, with ERROR and MISSING nodes in it. A reader of version `v` gets the tree of `v`.

mod incremental;
mod languages;
mod parse;

pub use incremental::{Checkpoint, IncrementalTree, Parsed, TreeRequest};
pub use languages::Language;
pub use parse::{count_syntax_errors, for_each_node, lone_crs_in, ts_point_at, ts_point_fast, SyntaxTree};
pub(crate) use parse::advance_point;
