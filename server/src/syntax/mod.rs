//! Syntax trees: tree-sitter grammars and incremental re-parsing over a ropey `Rope`.
//!
//! Architecture invariant: this module knows nothing about LSP or models. Parsing never fails: a text that does
//! not parse still gets a tree, with ERROR and MISSING nodes in it.

mod languages;
mod parse;

pub use languages::Language;
pub use parse::{count_syntax_errors, for_each_node, ts_point_at, SyntaxTree};
pub(crate) use parse::advance_point;
