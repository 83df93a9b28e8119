//! Code completion from the warm cache: the prompt layout (fill-in-the-middle or left-to-right), the window for
//! long files, and the post-processing that makes raw model output a suggestion (end of block, no repetition of
//! the text after the cursor).
//!
//! Architecture invariant: plain data in, plain data out. The engine runs the prompt; the LSP layer converts.

mod generate;
mod postprocess;
mod prompt;

pub use generate::{generate_suggestion, Generated};
pub use postprocess::{finish_suggestion, BlockStop};
pub use prompt::{prompt_edits, CrossFileContext, Markers, Prompt, PromptBuilder};

use serde::{Deserialize, Serialize};

/// Completion settings (`completion.*`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CompletionConfig {
    pub enabled: bool,
    /// Most tokens generated for one suggestion.
    pub max_tokens: usize,
    /// Wall-clock budget for one suggestion, generation included.
    pub time_budget_ms: u64,
    /// Bytes of text before the cursor in the prompt (longer files are windowed).
    pub prefix_bytes: usize,
    /// Bytes of text after the cursor in the prompt.
    pub suffix_bytes: usize,
    /// Offer multi-line suggestions (continue a block); off: stop at the end of the line.
    pub multiline: bool,
}

impl Default for CompletionConfig {
    fn default() -> Self {
        CompletionConfig {
            enabled: true,
            max_tokens: 64,
            time_budget_ms: 4000,
            prefix_bytes: 12_000,
            suffix_bytes: 4_000,
            multiline: true,
        }
    }
}
