//! Running a suggestion on a session whose prompt is already in place: greedy generation that stops at the end
//! of the block, the token cap, the time budget, or a cancellation. With a first-suggestion time
//! (`completion.firstSuggestionMs`) the suggestion so far is handed over once that time has passed, cut at its
//! last complete line when it has one, and the same generation goes on (same cached prompt, no second prefill)
//! to extend it until the block ends, `completion.extensionMs` has passed, or the caller stops it.

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

/// Generates at the end of `session`'s prompt. `line_before_cursor` is the document text from the start of the
/// cursor's line to the cursor, `after_cursor` the text after it (`text_after_cursor`: the rest of its line and
/// the lines below, where the suggestion stops if it runs into them); `started` is when the keystroke or request
/// arrived (for the time budget and the first-token figure). A raised `cancel` gives
/// `Err(EngineError::Cancelled)`.
pub fn generate_suggestion(
    session: &mut KvSession,
    line_before_cursor: &str,
    after_cursor: &str,
    config: &CompletionConfig,
    cancel: &AtomicBool,
    started: Instant,
) -> Result<Generated, EngineError> {
    let mut never = Streaming { first_after: None, stop_extension: &|| false, interrupt: None, on_first: &mut |_| {}, on_extended: &mut |_| {} };
    generate_streaming(session, line_before_cursor, after_cursor, config, &|| cancel.load(Ordering::Relaxed), started, &mut never)
}

/// How a suggestion is streamed: a first part in time, then its extension.
pub struct Streaming<'a> {
    /// After this long (from `started`) the suggestion so far goes to `on_first`; `None`: only when finished.
    pub first_after: Option<Duration>,
    /// Polled after the first part went out: true ends the extension (a keystroke, other work waiting).
    pub stop_extension: &'a dyn Fn() -> bool,
    /// Raised from another thread when other work arrives: once the first part went out it also stops the decode
    /// step under way (the abort gate), so a keystroke does not wait for an extension step to end.
    pub interrupt: Option<&'a AtomicBool>,
    /// Called exactly once with the first part (the whole suggestion when it finished before the time).
    pub on_first: &'a mut dyn FnMut(&Generated),
    /// After the first part: the cleaned suggestion each time it grew.
    pub on_extended: &'a mut dyn FnMut(&str),
}

/// `generate_suggestion` with a first part in time. `cancel` (polled per token) cancels only until the first
/// part went out (`Err(Cancelled)`); afterwards only `stop_extension` ends the generation, and the result is the
/// extended suggestion as far as it got.
pub fn generate_streaming(
    session: &mut KvSession,
    line_before_cursor: &str,
    after_cursor: &str,
    config: &CompletionConfig,
    cancel: &dyn Fn() -> bool,
    started: Instant,
    streaming: &mut Streaming<'_>,
) -> Result<Generated, EngineError> {
    let block = BlockStop::new(line_before_cursor, config.multiline).following(after_cursor);
    let rest_of_line = after_cursor.split('\n').next().unwrap_or("");
    let stop_now = AtomicBool::new(false);
    let mut generated = String::new();
    let mut first_token_ms = None;
    let mut pieces = 0usize;
    let mut first_sent = false;
    let mut cancelled = false;
    let mut shown = String::new();
    // What the next decode step will take, about: the session's recent steps at first, then the longest wait
    // between two pieces of this generation. The first answer goes out when the next step would end past
    // `first_after`, so that it arrives by then rather than a step later (also at the very first piece).
    let (mut last_piece, mut step) = (None::<Duration>, session.step_estimate());
    let budget = Duration::from_millis(config.time_budget_ms);
    let extension = Duration::from_millis(config.extension_ms);
    let mut first_answer_at: Option<Duration> = None;
    let params = GenerateParams { max_tokens: config.max_tokens, sampling: SamplingParams::greedy(), stop: Vec::new() };
    // Raised with the first answer: from then on `streaming.interrupt` may stop a decode step midway.
    let extending = AtomicBool::new(false);
    let interrupt = streaming.interrupt.map(|flag| (flag, &extending));
    let result = session.generate_interruptible(&params, &stop_now, interrupt, |piece| {
        first_token_ms.get_or_insert_with(|| started.elapsed().as_secs_f64() * 1e3);
        let now = started.elapsed();
        if let Some(last) = last_piece {
            step = step.max(now.saturating_sub(last));
        }
        last_piece = Some(now);
        generated.push_str(piece);
        pieces += 1;
        let extension_over = first_answer_at.is_some_and(|at| now.saturating_sub(at) > extension);
        let finished = block.cut(&generated).is_some() || now > budget || extension_over;
        if !first_sent {
            if cancel() {
                cancelled = true;
                stop_now.store(true, Ordering::Relaxed);
                return;
            }
            if !finished && streaming.first_after.is_some_and(|after| now + step >= after) {
                // In time: the complete lines so far, or the line being written when none is complete yet.
                let upto = generated.rfind('\n').map(|i| i + 1).unwrap_or(generated.len());
                let text = finish_suggestion(&generated[..upto], &block, rest_of_line);
                let text = if text.is_empty() { finish_suggestion(&generated, &block, rest_of_line) } else { text };
                if !text.is_empty() {
                    first_sent = true;
                    first_answer_at = Some(now);
                    extending.store(true, Ordering::Relaxed);
                    let first_token_ms = first_token_ms;
                    (streaming.on_first)(&Generated { text: text.clone(), tokens: pieces, first_token_ms });
                    shown = text;
                }
            }
        } else if !finished {
            let text = finish_suggestion(&generated, &block, rest_of_line);
            if text.len() > shown.len() {
                (streaming.on_extended)(&text);
                shown = text;
            }
        }
        if finished || (first_sent && (streaming.stop_extension)()) {
            stop_now.store(true, Ordering::Relaxed);
        }
    });
    let tokens = match result {
        Ok(generation) => generation.tokens,
        // Our own stop (block end, budget, an ended extension) rather than the caller's cancellation: keep what
        // was generated.
        Err(EngineError::Cancelled) if first_sent || !cancelled => pieces,
        Err(err) if first_sent => {
            // The first part is out; the extension simply ends here.
            tracing::debug!("suggestion extension ended: {err}");
            pieces
        }
        Err(err) => return Err(err),
    };
    let done = Generated { text: finish_suggestion(&generated, &block, rest_of_line), tokens, first_token_ms };
    if first_sent {
        if done.text != shown {
            (streaming.on_extended)(&done.text);
        }
    } else {
        (streaming.on_first)(&done);
    }
    Ok(done)
}
