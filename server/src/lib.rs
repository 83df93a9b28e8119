//! pie-ls: a local AI language server that keeps a code LLM's KV cache in step with the file (PIE).
//!
//! See `docs/ARCHITECTURE.md` for the bird's-eye view and the code map.

pub mod bench;
pub mod config;
pub mod document;
pub mod engine;
pub mod features;
pub mod inference;
pub mod lsp;
pub mod runner;
pub mod syntax;
pub mod warm;
