//! Features: turn a document snapshot and the configuration into plain data (edits, suggestions). Nothing is
//! offered to the user unless its verification passed.
pub mod completion;
pub mod extract;
