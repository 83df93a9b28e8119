//! Running a suggestion on a session whose prompt is already in place: greedy generation that stops at the end
//! of the block, the token cap, the time budget, or a cancellation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{finish_suggestion, BlockStop, CompletionConfig};
use crate::engine::{EngineError, GenerateParams, KvSession, SamplingParams};

/// A finished suggestion.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The cleaned suggestion (may be empty).
    pub text: String,
    pub tokens: usize,
    /// Milliseconds from `started` to the first generated piece.
    pub first_token_ms: Option<f64>,
}

/// Generates at the end of `session`'s prompt. `line_before_cursor` and `rest_of_line` are the document text
/// around the cursor on its line; `started` is when the keystroke or request arrived (for the time budget and
/// the first-token figure). A raised `cancel` gives `Err(EngineError::Cancelled)`.
pub fn generate_suggestion(
    session: &mut KvSession,
    line_before_cursor: &str,
    rest_of_line: &str,
    config: &CompletionConfig,
    cancel: &AtomicBool,
    started: Instant,
) -> Result<Generated, EngineError> {
    let block = BlockStop::new(line_before_cursor, config.multiline);
    let stop_now = AtomicBool::new(false);
    let mut generated = String::new();
    let mut first_token_ms = None;
    let mut pieces = 0usize;
    let budget = Duration::from_millis(config.time_budget_ms);
    let params = GenerateParams { max_tokens: config.max_tokens, sampling: SamplingParams::greedy(), stop: Vec::new() };
    let result = session.generate(&params, &stop_now, |piece| {
        first_token_ms.get_or_insert_with(|| started.elapsed().as_secs_f64() * 1e3);
        generated.push_str(piece);
        pieces += 1;
        if cancel.load(Ordering::Relaxed) || block.cut(&generated).is_some() || started.elapsed() > budget {
            stop_now.store(true, Ordering::Relaxed);
        }
    });
    let tokens = match result {
        Ok(generation) => generation.tokens,
        // Our own stop (block end, budget) rather than the caller's cancellation: keep what was generated.
        Err(EngineError::Cancelled) if !cancel.load(Ordering::Relaxed) => pieces,
        Err(err) => return Err(err),
    };
    Ok(Generated { text: finish_suggestion(&generated, &block, rest_of_line), tokens, first_token_ms })
}
