//! Features: turn a document snapshot and the configuration into plain data (edits, suggestions). Nothing is
//! offered to the user unless its verification passed.
pub mod chat;
pub mod code;
pub mod completion;
pub mod extract;
pub mod perf;
pub mod selfdebug;
