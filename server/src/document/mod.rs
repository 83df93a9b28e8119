//! The document store: one ropey `Rope` (plus a tree-sitter tree when the language is known) per open document.
//!
//! Architecture invariants:
//! - The text is exactly what the client has, line endings included: nothing is normalised.
//! - A `didChange` notification is atomic: either all of its content changes apply, in order, or none does and
//!   the document keeps its previous text, tree and version.
//! - Versions only go up. A change whose version is not greater than the document's is refused.
//! - The tree, when there is one, is read per version: a reader of version `v` gets the tree of `v` (see
//!   `syntax::IncrementalTree`); applying a change is O(edit) and never parses.
//! - This module knows nothing about LSP types or JSON: positions arrive as `LineCol` plus an encoding.

mod position;
mod store;
mod text;

pub use position::{line_content, to_char_idx, to_char_range, to_line_col, LineCol, PositionEncoding, PositionError};
pub use store::{DocumentStore, StoreError};
pub use text::{ByteEdit, ChangeError, ContentChange, Document, DocumentLimits};
