//! The engine's error type: every failure a caller can meet (model missing or corrupt, context overflow,
//! cancellation, bad edits, llama.cpp refusing a batch) as one `thiserror` enum whose messages say what to do.

use std::path::PathBuf;

/// Everything that can go wrong in the engine. Messages are written for the end user.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("model file not found: {}", path.display())]
    ModelNotFound { path: PathBuf },

    #[error("no model configured and the default model is not in the cache ({}); run `pie-ls model fetch` to download it, or point PIE_LS_MODEL at a GGUF file", path.display())]
    DefaultModelMissing { path: PathBuf },

    #[error("invalid model spec `{spec}`: {reason}")]
    InvalidModelSpec { spec: String, reason: String },

    #[error("could not download `{spec}` from the Hugging Face Hub: {reason}")]
    HubDownload { spec: String, reason: String },

    #[error("{} is not a usable GGUF model: {reason}", path.display())]
    CorruptModel { path: PathBuf, reason: String },

    #[error("could not create a llama.cpp context ({reason})")]
    Context { reason: String },

    #[error("context overflow: the prompt needs {needed} tokens but the context limit is {limit} (raise the setting model.contextLength, or shorten the document)")]
    ContextOverflow { needed: usize, limit: usize },

    #[error("cancelled")]
    Cancelled,

    #[error("invalid edit: {0}")]
    InvalidEdit(String),

    #[error("the prompt is empty: there is no token to predict from")]
    EmptyPrompt,

    #[error("llama.cpp decode failed: {0}")]
    Decode(String),

    #[error("KV cache operation failed: {0}")]
    Cache(String),

    #[error("model fetch failed: {0}")]
    Fetch(String),

    #[error("I/O error on {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

impl EngineError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EngineError::Io { path: path.into(), source }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
