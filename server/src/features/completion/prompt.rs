//! The prompt a warm document's KV cache mirrors: `PRE prefix SUF suffix MID` with the model's own FIM markers,
//! or the prefix alone for models without them.
//!
//! The cursor is part of the prompt, so typing and moving the cursor are edits to the cached prompt like any
//! other: `prompt_edits` turns old and new prompt into a few edit sites (a line diff), which PIE applies by
//! encoding the changed tokens and rotating the rest. Windows for long files move in steps of whole line blocks,
//! so a keystroke changes the prompt at the cursor only, and a warm document keeps its window while the cursor
//! stays well inside it (`build_keeping`), so moving the cursor away and back costs only the marker's move.

use similar::{DiffOp, TextDiff};

use crate::engine::{Engine, TextEdit};

/// The FIM marker texts of a model (special tokens, parsed as such by the tokenizer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Markers {
    pub prefix: String,
    pub suffix: String,
    pub middle: String,
}

impl Markers {
    /// The model's fill-in-the-middle markers (Qwen2.5-Coder, DeepSeek-Coder, StarCoder, CodeLlama... as llama.cpp
    /// reads them from the GGUF vocabulary), or `None`: the model completes left to right.
    pub fn of_model(engine: &Engine) -> Option<Markers> {
        let (pre, suf, mid) = engine.fim_tokens()?;
        let text = |t| String::from_utf8_lossy(&engine.token_bytes(t)).into_owned();
        let markers = Markers { prefix: text(pre), suffix: text(suf), middle: text(mid) };
        // The markers must tokenize back to exactly their special tokens, or the prompt would not mean FIM.
        let round_trips = [(pre, &markers.prefix), (suf, &markers.suffix), (mid, &markers.middle)]
            .iter()
            .all(|(tok, text)| engine.tokenize(text, false) == vec![*tok]);
        round_trips.then_some(markers)
    }
}

/// A prompt and where the cursor is in it (generation continues at the end).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prompt {
    pub text: String,
    /// First document byte included in the prompt.
    pub window_start: usize,
    /// One past the last document byte included.
    pub window_end: usize,
    /// The parts of the window not in the prompt yet (`None`: the whole window is). A window the cache does not
    /// hold (a file opened, a jump far away) is read around the cursor first and the rest when the user pauses
    /// (`PromptBuilder::read_first`, `build_unread`, `read_more`), so that the first suggestion does not wait for it.
    pub unread: Option<Unread>,
}

/// Window bytes a prompt does not hold yet: the prefix is `window_start..gap.0` then `gap.1..cursor`, the suffix
/// `cursor..suffix_to`. Read in this order: the gap from its start (each part then sees everything before it,
/// as a full read would), then the suffix at its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unread {
    pub gap: (usize, usize),
    pub suffix_to: usize,
}

impl Prompt {
    /// Window bytes not in the prompt yet.
    pub fn unread_bytes(&self) -> usize {
        self.unread.map_or(0, |u| (u.gap.1 - u.gap.0) + (self.window_end - u.suffix_to))
    }

    /// The document byte ranges the prompt holds.
    fn read_ranges(&self) -> Vec<(usize, usize)> {
        match self.unread {
            Some(u) => vec![(self.window_start, u.gap.0), (u.gap.1, u.suffix_to)],
            None => vec![(self.window_start, self.window_end)],
        }
    }
}

/// Builds prompts for one document, keeping the window still while the cursor stays inside it.
#[derive(Clone, Debug)]
pub struct PromptBuilder {
    markers: Option<Markers>,
    prefix_bytes: usize,
    suffix_bytes: usize,
    /// Bytes around the cursor read first when the cache does not hold the window (0: the whole window at once).
    first_read_bytes: usize,
}

/// The byte settings are capped here (1 TiB: more than any text), so that sums and quarters of them cannot
/// overflow when a user writes "as much as possible" as the largest integer.
const MAX_SETTING_BYTES: usize = 1 << 40;

/// Windows move in steps of this many lines, so that typing does not slide them on every keystroke.
const WINDOW_STEP_LINES: usize = 64;

/// A line block that reaches further than this past the byte budget (lines of 256 bytes and more on average: a
/// minified file, a data line) is not a window step: the window then moves in steps of `WINDOW_STEP_BYTES`, cut
/// inside the line when no line starts near the cut. Found by opening a 400 kB one-line JavaScript file: its
/// window was the whole line, a 204,460-token prompt that no context held, so the file got no suggestion at all.
const LONG_BLOCK_BYTES: usize = WINDOW_STEP_LINES * 256;
const WINDOW_STEP_BYTES: usize = 4_096;

/// How far a window or read boundary moves to reach a line start; further (inside a long line), it stays where
/// it is, on a character boundary.
const MAX_SNAP_BYTES: usize = 1_024;

/// A window is read in parts only when entering it would read more than this (or twice the first read, when
/// that is more): below it, one read takes a few seconds on 2 cores (~1,200 tokens), and a window read whole
/// at once never has to settle the part read first. Kept apart from the first read's size so that a smaller
/// first read (a closer first answer, sooner: `docs/benchmarks.md`, "What the first read's suggestion loses")
/// does not send every file over 2 kB through the read in steps.
pub const READ_IN_PARTS_OVER_BYTES: usize = 4_096;

impl PromptBuilder {
    pub fn new(markers: Option<Markers>, prefix_bytes: usize, suffix_bytes: usize) -> PromptBuilder {
        let (prefix_bytes, suffix_bytes) = (prefix_bytes.clamp(256, MAX_SETTING_BYTES), suffix_bytes.min(MAX_SETTING_BYTES));
        PromptBuilder { markers, prefix_bytes, suffix_bytes, first_read_bytes: 0 }
    }

    /// Reads a window the cache does not hold around the cursor first, `bytes` of it (FIM models only: a
    /// left-to-right prompt moves its window with every line typed, so it never keeps one to grow).
    pub fn with_first_read(mut self, bytes: usize) -> PromptBuilder {
        self.first_read_bytes = bytes.min(MAX_SETTING_BYTES);
        self
    }

    /// Entering more than this many bytes the cache does not hold reads the window in parts.
    fn read_in_parts_over(&self) -> usize {
        READ_IN_PARTS_OVER_BYTES.max(2 * self.first_read_bytes)
    }

    pub fn is_fim(&self) -> bool {
        self.markers.is_some()
    }

    /// The prompt for `text` with the cursor at byte `cursor` (clamped to a char boundary).
    pub fn build(&self, text: &str, cursor: usize) -> Prompt {
        self.build_with_context(text, cursor, "")
    }

    /// The same, after `context` (other files' code, see `CrossFileContext`). The context comes first so that
    /// typing in this document never changes it: only an edit in another document does.
    pub fn build_with_context(&self, text: &str, cursor: usize, context: &str) -> Prompt {
        let cursor = text.floor_char_boundary_compat(cursor);
        let (window_start, window_end) = self.fresh_window(text, cursor);
        self.render(text, cursor, window_start, window_end, None, context)
    }

    /// The same, keeping `kept` (the last prompt's window, carried into `text` by `carry_window`) while the cursor
    /// is well inside it and it is no larger than a fresh window may be. A window that followed the cursor would
    /// drop text when the cursor goes one way and encode it again when it comes back: after a block edit above
    /// the typing place, the return to it re-encoded 64-line blocks of suffix, 8-22 s at 4k tokens on 2 cores
    /// (`bench typing --block-edits`). A kept window costs the cache only the marker's move.
    /// With `unread` (carried into `text` by `carry_unread`), a window still being read stays while the cursor
    /// is inside its read part around the cursor.
    pub fn build_keeping(&self, text: &str, cursor: usize, context: &str, kept: (usize, usize), unread: Option<Unread>) -> Prompt {
        let cursor = text.floor_char_boundary_compat(cursor);
        let fresh = self.fresh_window(text, cursor);
        if let Some(unread) = unread {
            if self.may_keep_unread(text, cursor, kept, unread, fresh) {
                return self.render(text, cursor, kept.0, kept.1, Some(unread), context);
            }
        } else if self.markers.is_some() && self.may_keep(text, cursor, kept, fresh) {
            return self.render(text, cursor, kept.0, kept.1, None, context);
        }
        self.render(text, cursor, fresh.0, fresh.1, None, context)
    }

    /// When `prompt` (built for `text`) holds more than `read_in_parts_over` bytes that `held` (the prompt the
    /// cache mirrors, carried into `text`) does not: the same window read around the cursor first
    /// (`first_read_bytes`, three quarters of it before the cursor), the rest unread. `None`: read `prompt` at
    /// once. Reading 4,000 tokens takes ~30 s on 2 cores; the first read, ~600 tokens, a few seconds.
    pub fn read_first(&self, text: &str, cursor: usize, context: &str, prompt: &Prompt, held: Option<&Prompt>) -> Option<Prompt> {
        if self.markers.is_none() || self.first_read_bytes == 0 || prompt.unread.is_some() {
            return None;
        }
        let held = held.map(Prompt::read_ranges).unwrap_or_default();
        let entering: usize = prompt
            .read_ranges()
            .iter()
            .map(|&(a, b)| (b - a) - held.iter().map(|&(c, d)| b.min(d).saturating_sub(a.max(c))).sum::<usize>())
            .sum();
        if entering <= self.read_in_parts_over() {
            return None;
        }
        let cursor = text.floor_char_boundary_compat(cursor);
        let (start, end) = (prompt.window_start, prompt.window_end);
        let before = self.first_read_bytes * 3 / 4;
        let from = snap_back(text, cursor.saturating_sub(before)).clamp(start, cursor);
        let suffix_to = snap_forward(text, (cursor + self.first_read_bytes - before).min(text.len())).clamp(cursor, end);
        // What the cache holds from the window's start on stays read (a jump within a window being read keeps
        // what was read of its gap).
        let read_to = held.iter().find(|&&(a, b)| a <= start && start < b).map_or(start, |&(_, b)| b.min(from));
        let unread = (read_to < from || suffix_to < end).then_some(Unread { gap: (read_to, from), suffix_to });
        Some(self.render(text, cursor, start, end, unread, context))
    }

    /// The same window with nothing read yet but the cursor marker (`prompt` built for `text`, the cursor at
    /// its end: a file just opened, whose cursor the server does not know): the first command that brings a cursor
    /// reads around it (`read_first`), and idle time reads the window from its start. `prompt` itself when it
    /// is small enough to read at once (as `read_first` judges) or not FIM.
    pub fn build_unread(&self, text: &str, cursor: usize, context: &str, prompt: Prompt) -> Prompt {
        let cursor = text.floor_char_boundary_compat(cursor);
        let size = prompt.window_end - prompt.window_start;
        if self.markers.is_none() || self.first_read_bytes == 0 || size <= self.read_in_parts_over() || cursor != prompt.window_end {
            return prompt;
        }
        let unread = Unread { gap: (prompt.window_start, cursor), suffix_to: cursor };
        self.render(text, cursor, prompt.window_start, prompt.window_end, Some(unread), context)
    }

    /// The next step of reading `prompt`'s window (built for `text` with the cursor at `cursor`, after
    /// `context`): about `step` more bytes of the prefix gap, at its start; once the gap is read (`prefix_only`:
    /// not before), of the suffix, at its end. Returns the new prompt and the one insertion that makes it (a line
    /// diff could split it where the new lines repeat lines after them, and re-encode those). `None` when there
    /// is nothing left to read in that part.
    pub fn read_more(&self, text: &str, cursor: usize, context: &str, prompt: &Prompt, step: usize, prefix_only: bool) -> Option<(Prompt, TextEdit)> {
        let u = prompt.unread?;
        let markers = self.markers.as_ref()?;
        let (unread, at, added) = if u.gap.0 < u.gap.1 {
            let to = snap_forward(text, (u.gap.0 + step.max(1)).min(u.gap.1)).min(u.gap.1);
            (Unread { gap: (to, u.gap.1), ..u }, context.len() + markers.prefix.len() + (u.gap.0 - prompt.window_start), &text[u.gap.0..to])
        } else if !prefix_only && u.suffix_to < prompt.window_end {
            let to = snap_forward(text, (u.suffix_to + step.max(1)).min(prompt.window_end)).min(prompt.window_end);
            (Unread { suffix_to: to, ..u }, prompt.text.len() - markers.middle.len(), &text[u.suffix_to..to])
        } else {
            return None;
        };
        let done = unread.gap.0 >= unread.gap.1 && unread.suffix_to >= prompt.window_end;
        let unread = (!done).then_some(unread);
        let next = self.render(text, cursor, prompt.window_start, prompt.window_end, unread, context);
        Some((next, TextEdit::new(at, at, added)))
    }

    /// Where a warm document's prompt puts the cursor after an edit of `old` into `new` that ended at
    /// `edit_cursor`: there, when the window (`window`, carried into `new`) may stay for it, as it does while the
    /// user types; otherwise at the last cursor (`old_cursor`, carried), when the window may stay for that. An edit
    /// far from where the user types (a block deleted or pasted outside the window, a rename elsewhere) then leaves
    /// the prompt where it was, instead of moving the window there and back (each move re-encodes what enters the
    /// window: seconds per kilobyte on 2 cores); a completion request brings its own cursor.
    pub fn cursor_after_edit(&self, old: &str, new: &str, old_cursor: usize, prompt: &Prompt, edit_cursor: usize) -> usize {
        if self.markers.is_none() {
            return edit_cursor;
        }
        let kept = carry_window(old, new, (prompt.window_start, prompt.window_end));
        let unread = prompt.unread.map(|u| carry_unread(old, new, u));
        let stays = |cursor: usize| match unread {
            Some(u) => self.may_keep_unread(new, cursor, kept, u, self.fresh_window(new, cursor)),
            None => self.may_keep(new, cursor, kept, self.fresh_window(new, cursor)),
        };
        let edit_cursor = new.floor_char_boundary_compat(edit_cursor);
        if stays(edit_cursor) {
            return edit_cursor;
        }
        let carried = new.floor_char_boundary_compat(carry_point(old, new, old_cursor));
        if stays(carried) {
            carried
        } else {
            edit_cursor
        }
    }

    /// The window a prompt built from scratch gets: `prefix_bytes` before the cursor and (FIM) `suffix_bytes`
    /// after it, widened to whole line blocks; the whole file when it fits in both together (FIM), so that
    /// wherever the cursor goes, the cache only moves the marker.
    fn fresh_window(&self, text: &str, cursor: usize) -> (usize, usize) {
        if self.markers.is_some() && text.len() <= self.prefix_bytes + self.suffix_bytes {
            return (0, text.len());
        }
        let window_start = step_back(text, cursor.saturating_sub(self.prefix_bytes), cursor);
        let window_end = match &self.markers {
            Some(_) => step_forward(text, (cursor + self.suffix_bytes).min(text.len()), cursor),
            None => cursor,
        };
        (window_start, window_end)
    }

    /// Whether the window `kept` may stay for the cursor at `cursor`: the cursor is inside it, it holds at least
    /// half of the prefix and of the suffix a fresh window would (or all there is), and it is at most a quarter
    /// larger than the prefix and suffix budgets together (or than the fresh window, which line blocks widen), so
    /// the cache and the prompt stay bounded.
    fn may_keep(&self, text: &str, cursor: usize, kept: (usize, usize), fresh: (usize, usize)) -> bool {
        let (start, end) = kept;
        let well_formed = start <= cursor && cursor <= end && end <= text.len() && text.is_char_boundary(start) && text.is_char_boundary(end);
        well_formed
            && cursor - start >= (cursor - fresh.0).min(self.prefix_bytes / 2)
            && end - cursor >= (fresh.1 - cursor).min(self.suffix_bytes / 2)
            && self.within_size(kept, fresh)
    }

    /// Whether the window `(start, end)` is at most a quarter larger than the prefix and suffix budgets together,
    /// or than the fresh window (`fresh`, which line blocks widen).
    fn within_size(&self, (start, end): (usize, usize), fresh: (usize, usize)) -> bool {
        end - start <= (self.prefix_bytes + self.suffix_bytes).max(fresh.1 - fresh.0) * 5 / 4
    }

    /// Whether a window still being read (`kept`, `unread`) may stay for the cursor at `cursor`: the cursor is in
    /// the part read around it, and the window is no larger than `may_keep` allows.
    fn may_keep_unread(&self, text: &str, cursor: usize, (start, end): (usize, usize), unread: Unread, fresh: (usize, usize)) -> bool {
        let points = [start, unread.gap.0, unread.gap.1, cursor, unread.suffix_to, end];
        self.markers.is_some()
            && points.windows(2).all(|w| w[0] <= w[1])
            && end <= text.len()
            && points.iter().all(|&p| text.is_char_boundary(p))
            && self.within_size((start, end), fresh)
    }

    fn render(&self, text: &str, cursor: usize, window_start: usize, window_end: usize, unread: Option<Unread>, context: &str) -> Prompt {
        let (prefix, suffix_to) = match unread {
            Some(u) => (format!("{}{}", &text[window_start..u.gap.0], &text[u.gap.1..cursor]), u.suffix_to),
            None => (text[window_start..cursor].to_owned(), window_end),
        };
        let body = match &self.markers {
            Some(m) => {
                let suffix = &text[cursor..suffix_to];
                format!("{context}{}{prefix}{}{suffix}{}", m.prefix, m.suffix, m.middle)
            }
            None => format!("{context}{prefix}"),
        };
        Prompt { text: body, window_start, window_end, unread }
    }
}

/// Recently edited code of other open documents, as a preamble in the repository format the model was trained
/// on (`<|file_sep|>path` then the code, as in Qwen2.5-Coder and StarCoder2). Only models whose vocabulary has
/// such a separator token get one.
#[derive(Clone, Debug)]
pub struct CrossFileContext {
    separator: String,
    /// `(uri, chunk)`, least recently edited first.
    recent: std::collections::VecDeque<(String, String)>,
}

/// Other documents kept in the preamble, and the lines around each one's last edit.
const CONTEXT_DOCS: usize = 2;
const CONTEXT_LINES_BEFORE: usize = 24;
const CONTEXT_LINES_AFTER: usize = 8;

impl CrossFileContext {
    pub fn of_model(engine: &Engine) -> Option<CrossFileContext> {
        ["<|file_sep|>", "<file_sep>"]
            .into_iter()
            .find(|sep| engine.tokenize(sep, false).len() == 1 && engine.fim_tokens().is_some())
            .map(|sep| CrossFileContext::with_separator(sep))
    }

    pub fn with_separator(separator: &str) -> CrossFileContext {
        CrossFileContext { separator: separator.to_owned(), recent: Default::default() }
    }

    /// Records the code around an edit at byte `cursor` of `uri`'s `text`.
    pub fn note_edit(&mut self, uri: &str, text: &str, cursor: usize) {
        let cursor = cursor.min(text.len());
        let line = text.as_bytes()[..cursor].iter().filter(|b| **b == b'\n').count();
        let first = line.saturating_sub(CONTEXT_LINES_BEFORE);
        let chunk: String = text
            .split_inclusive('\n')
            .skip(first)
            .take(CONTEXT_LINES_BEFORE + CONTEXT_LINES_AFTER)
            .map(|l| if l.len() > 240 { &l[..l.floor_char_boundary_compat(240)] } else { l })
            .collect();
        self.recent.retain(|(u, _)| u != uri);
        self.recent.push_back((uri.to_owned(), chunk));
        while self.recent.len() > CONTEXT_DOCS + 1 {
            self.recent.pop_front();
        }
    }

    pub fn forget(&mut self, uri: &str) {
        self.recent.retain(|(u, _)| u != uri);
    }

    /// The preamble for `uri`'s prompt: the other documents' chunks, least recently edited first.
    pub fn for_document(&self, uri: &str) -> String {
        let others: Vec<&(String, String)> = self.recent.iter().filter(|(u, _)| u != uri).collect();
        let mut out = String::new();
        for (other, chunk) in others.iter().rev().take(CONTEXT_DOCS).rev() {
            let name = other.rsplit('/').next().unwrap_or(other);
            out.push_str(&format!("{}{name}\n{chunk}", self.separator));
            if !chunk.ends_with('\n') {
                out.push('\n');
            }
        }
        if !out.is_empty() {
            out.push_str(&self.separator);
            out.push_str(uri.rsplit('/').next().unwrap_or(uri));
            out.push('\n');
        }
        out
    }
}

pub(super) trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, at: usize) -> usize;
}

impl FloorCharBoundary for str {
    fn floor_char_boundary_compat(&self, mut at: usize) -> usize {
        at = at.min(self.len());
        while !self.is_char_boundary(at) {
            at -= 1;
        }
        at
    }
}

/// Where `old` and `new` differ, from their common prefix and suffix: `(start, old end, new end)`; `None` when
/// they are equal.
fn changed_span(old: &str, new: &str) -> Option<(usize, usize, usize)> {
    if old == new {
        return None;
    }
    let change = crate::engine::session::diff_edit(old, new);
    Some((change.start_byte, change.old_end_byte, change.start_byte + change.new_text.len()))
}

/// A prompt window `(start, end)` of `old` carried into `new` (the same document after some edits, told apart by
/// their common prefix and suffix): bytes before the change stay, bytes after it shift, and a boundary inside the
/// change goes to the change's start (the start) or end (the end), so the window keeps what it held and grows by
/// what was inserted inside it or at its edges. Both ends are then put on line starts (or the text's end).
pub fn carry_window(old: &str, new: &str, (start, end): (usize, usize)) -> (usize, usize) {
    let Some((at, old_end, new_end)) = changed_span(old, new) else { return (start, end) };
    let carry_start = |b: usize| if b <= at { b } else if b >= old_end { b - old_end + new_end } else { at };
    // Text inserted right at the end is taken in (the cursor may be there, typing at the end of the file); text
    // replaced right after it is not.
    let carry_end = |b: usize| if b >= old_end { b - old_end + new_end } else if b <= at { b } else { new_end };
    let start = new.floor_char_boundary_compat(carry_start(start));
    let end = new.floor_char_boundary_compat(carry_end(end)).max(start);
    // Back to the start of its line; forward to the start of the next line (not when that is far: a window cut
    // inside a long line stays cut there).
    let start = snap_back(new, start);
    let end = if end == 0 { end } else { snap_forward(new, end) };
    (start, end.max(start))
}

/// A prompt's unread parts carried from `old` into `new` like its window (`carry_window`): the gap's ends on line
/// starts, the suffix's end on a line start or the text's end. `PromptBuilder::build_keeping` checks the result.
pub fn carry_unread(old: &str, new: &str, unread: Unread) -> Unread {
    // One diff of the texts for the three points: this runs with every keystroke while a window is being read.
    let span = changed_span(old, new);
    let carry = |at: usize| new.floor_char_boundary_compat(carry_point_in(span, new, at));
    let gap = (snap_back(new, carry(unread.gap.0)), snap_back(new, carry(unread.gap.1)));
    Unread { gap, suffix_to: snap_forward(new, carry(unread.suffix_to)) }
}

/// The start of the line holding byte `at`.
/// Byte-wise: `at` may be inside a character (a cursor less a byte count), and the result, after a newline, is a
/// boundary. The server snaps with the bounded `snap_back`; the tests check it against this.
#[cfg(test)]
fn line_start(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
}

/// The start of the line after the one holding byte `at` (the text's end on the last line); `at` itself when it
/// is a line start. The server snaps with the bounded `snap_forward`; the tests check it against this.
#[cfg(test)]
fn next_line_start(text: &str, at: usize) -> usize {
    if at == 0 || at >= text.len() || text.as_bytes()[at - 1] == b'\n' {
        return at.min(text.len());
    }
    text.as_bytes()[at..].iter().position(|&b| b == b'\n').map_or(text.len(), |i| at + i + 1)
}

/// A byte position of `old` carried into `new` (see `carry_window`): before the change it stays, after it it
/// shifts, inside it it goes to the change's end.
fn carry_point(old: &str, new: &str, at: usize) -> usize {
    carry_point_in(changed_span(old, new), new, at)
}

/// `carry_point` with the change (`changed_span(old, new)`) already found.
fn carry_point_in(span: Option<(usize, usize, usize)>, new: &str, at: usize) -> usize {
    let Some((start, old_end, new_end)) = span else { return at.min(new.len()) };
    if at <= start {
        at
    } else if at >= old_end {
        at - old_end + new_end
    } else {
        new_end
    }
}

/// Lines that end before byte `at` (which may be inside a character).
fn newlines_before(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())].iter().filter(|&&b| b == b'\n').count()
}

/// The start of the line block at or before `at` (blocks are `WINDOW_STEP_LINES` lines, counted from the top).
/// In long lines (the block starts more than `LONG_BLOCK_BYTES` before `at`), the start of the
/// `WINDOW_STEP_BYTES` step at or before `at` instead, on a nearby line start or inside the line (`snap_back`):
/// either way it stays put while the cursor moves within a step.
fn step_back(text: &str, at: usize, cursor: usize) -> usize {
    if at == 0 {
        return 0;
    }
    let line = newlines_before(text, at);
    let block_line = line / WINDOW_STEP_LINES * WINDOW_STEP_LINES;
    let mut start = nth_line_start(text, block_line);
    if at.min(text.len()) - start > LONG_BLOCK_BYTES {
        start = snap_back(text, at / WINDOW_STEP_BYTES * WINDOW_STEP_BYTES).max(start);
    }
    start.min(cursor)
}

/// The end of the line block at or after `at` (in long lines, of the byte step: see `step_back`).
fn step_forward(text: &str, at: usize, cursor: usize) -> usize {
    if at >= text.len() {
        return text.len();
    }
    let line = newlines_before(text, at);
    let block_line = (line / WINDOW_STEP_LINES + 1) * WINDOW_STEP_LINES;
    let mut end = nth_line_start(text, block_line);
    if end - at > LONG_BLOCK_BYTES {
        end = snap_forward(text, at.div_ceil(WINDOW_STEP_BYTES) * WINDOW_STEP_BYTES).min(end);
    }
    end.max(cursor)
}

/// The start of the line holding `at`, when it is at most `MAX_SNAP_BYTES` before; else `at` (on a character
/// boundary, at or before it). Looks at most that far: `carry_window` runs with every keystroke, and a minified
/// line is hundreds of kilobytes.
fn snap_back(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    let from = at.saturating_sub(MAX_SNAP_BYTES + 1);
    match text.as_bytes()[from..at].iter().rposition(|&b| b == b'\n') {
        Some(i) => from + i + 1,
        None if at <= MAX_SNAP_BYTES => 0,
        None => text.floor_char_boundary_compat(at),
    }
}

/// The start of the next line (see `next_line_start`), when it is at most `MAX_SNAP_BYTES` after `at`; else
/// `at` (on a character boundary, at or after it, so that a boundary moved forward never moves back). Looks at
/// most that far, as `snap_back`.
fn snap_forward(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    if at == 0 || at == text.len() || text.as_bytes()[at - 1] == b'\n' {
        return at;
    }
    let to = (at + MAX_SNAP_BYTES).min(text.len());
    match text.as_bytes()[at..to].iter().position(|&b| b == b'\n') {
        Some(i) => at + i + 1,
        None if to == text.len() => to,
        None => ceil_char_boundary(text, at),
    }
}

fn ceil_char_boundary(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

fn nth_line_start(text: &str, n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    text.match_indices('\n').nth(n - 1).map(|(i, _)| i + 1).unwrap_or(text.len())
}

/// Sequential edits (each in the coordinates left by the previous ones) that turn `old` into `new`: one per
/// changed run of lines, so a keystroke is one site and a window move is one more.
pub fn prompt_edits(old: &str, new: &str) -> Vec<TextEdit> {
    prompt_edits_within(old, new, std::time::Duration::from_millis(20))
}

/// `prompt_edits` with the line diff bounded by `timeout`: past it `similar` gives up on the middle and reports it
/// as one deletion and one insertion.
fn prompt_edits_within(old: &str, new: &str, timeout: std::time::Duration) -> Vec<TextEdit> {
    let old_lines: Vec<usize> = line_offsets(old);
    let new_lines: Vec<usize> = line_offsets(new);
    // Diff our own '\n' lines: `similar`'s `diff_lines` also ends a line at a lone '\r', and its line indices
    // would then not match these offsets.
    let old_slices = line_slices(old, &old_lines);
    let new_slices = line_slices(new, &new_lines);
    let diff = TextDiff::configure().timeout(timeout).diff_slices(&old_slices, &new_slices);
    let mut edits: Vec<TextEdit> = Vec::new();
    // Where each op sits is counted from the ops' lengths, in order: `similar` can report a deletion's new-side
    // index one past where it is (a line deleted before an equal line that is then inserted again: the cursor
    // marker leaving a line of its own), and an edit placed there does not reproduce the prompt.
    let (mut old_line, mut new_line) = (0, 0);
    for op in diff.ops() {
        let (old_len, new_len, equal) = match *op {
            DiffOp::Equal { len, .. } => (len, len, true),
            DiffOp::Delete { old_len, .. } => (old_len, 0, false),
            DiffOp::Insert { new_len, .. } => (0, new_len, false),
            DiffOp::Replace { old_len, new_len, .. } => (old_len, new_len, false),
        };
        let (old_range, new_range) = (old_line..old_line + old_len, new_line..new_line + new_len);
        (old_line, new_line) = (old_range.end, new_range.end);
        if equal {
            continue;
        }
        // Where the op sits in the text left by the previous edits: everything before it is already `new`'s, so
        // its start is `new`'s offset. (Old offsets shifted by a running delta go wrong when the diff gives up at
        // its deadline: it then reports an insertion at the start of the deletion it just made, and the soak saw
        // an edit at byte 2^64 - 31.)
        let start = new_lines[new_range.start];
        let removed = old_lines[old_range.end] - old_lines[old_range.start];
        let new_text = &new[start..new_lines[new_range.end]];
        match edits.last_mut() {
            // Adjacent ops (a deletion then an insertion at the same place) are one site.
            Some(last) if last.start_byte + last.new_text.len() == start => {
                last.old_end_byte += removed;
                last.new_text.push_str(new_text);
            }
            _ => edits.push(TextEdit::new(start, start + removed, new_text)),
        }
    }
    if reproduces(old, &edits, new) {
        edits
    } else {
        // Never hand the engine edits that do not lead to the prompt: one edit from the common prefix and suffix.
        tracing::warn!("prompt diff: the line edits do not reproduce the new prompt; using one edit");
        vec![crate::engine::session::diff_edit(old, new)]
    }
}

/// Whether `edits`, applied in order to `old`, give `new` (checked without building the intermediate texts: the
/// edits are sorted and each is in the coordinates left by the previous ones).
fn reproduces(old: &str, edits: &[TextEdit], new: &str) -> bool {
    let mut out = String::with_capacity(new.len());
    let mut old_at = 0; // next byte of `old` not yet copied or replaced
    let mut delta: isize = 0; // new coordinates minus old coordinates so far
    for e in edits {
        let old_start = e.start_byte as isize - delta;
        let old_end = e.old_end_byte as isize - delta;
        if old_start < old_at as isize || old_end < old_start || old_end as usize > old.len() {
            return false;
        }
        let (old_start, old_end) = (old_start as usize, old_end as usize);
        let (Some(kept), true) = (old.get(old_at..old_start), old.is_char_boundary(old_end)) else { return false };
        out.push_str(kept);
        out.push_str(&e.new_text);
        old_at = old_end;
        delta += e.new_text.len() as isize - (old_end - old_start) as isize;
    }
    match old.get(old_at..) {
        Some(rest) => out.push_str(rest),
        None => return false,
    }
    out == new
}

fn line_slices<'a>(text: &'a str, offsets: &[usize]) -> Vec<&'a str> {
    offsets.windows(2).map(|w| &text[w[0]..w[1]]).collect()
}

/// Byte offset of the start of each line, plus the text's length at the end.
fn line_offsets(text: &str) -> Vec<usize> {
    let mut offsets = vec![0];
    offsets.extend(text.match_indices('\n').map(|(i, _)| i + 1));
    if *offsets.last().unwrap() != text.len() {
        offsets.push(text.len());
    }
    offsets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(text: &str, edits: &[TextEdit]) -> String {
        let mut out = text.to_owned();
        for e in edits {
            out.replace_range(e.start_byte..e.old_end_byte, &e.new_text);
        }
        out
    }

    fn markers() -> Markers {
        Markers { prefix: "<P>".into(), suffix: "<S>".into(), middle: "<M>".into() }
    }

    #[test]
    fn prompt_edits_reproduce_the_new_prompt_with_few_sites() {
        let old = "a\nb\nc\nd\ne\n";
        let new = "a\nB\nc\nd\nE\nf\n";
        let edits = prompt_edits(old, new);
        assert_eq!(apply(old, &edits), new);
        assert_eq!(edits.len(), 2);
        let typed = prompt_edits("x = 1\n<S>y\n", "x = 12\n<S>y\n");
        assert_eq!(typed.len(), 1);
        assert_eq!(apply("", &[]), "");
        assert_eq!(apply("abc", &prompt_edits("abc", "abd")), "abd");
    }

    #[test]
    fn a_cursor_marker_that_leaves_a_line_of_its_own_is_two_small_edits() {
        // The marker alone on a line above an empty one, then typing far below (the shape of a prompt after a
        // block deletion and the return to the typing place, from bench typing --block-edits). similar reports
        // the deletion of the marker's line with a new-side index one past where it is; positions taken from
        // it made edits that did not reproduce the prompt, and the one-edit fallback re-encoded the ~7 kB
        // between the two places.
        let filler: String = (0..200).map(|i| format!("    x_{i} = {i}\n")).collect();
        let old = format!("<P>class A:\n<S>\n\nclass B:\n{filler}    done = 1\n<M>");
        let new = format!("<P>class A:\n\n\nclass B:\n{filler}    done = 1\n    y = <S>\n<M>");
        let edits = prompt_edits(&old, &new);
        assert_eq!(apply(&old, &edits), new);
        let inserted: usize = edits.iter().map(|e| e.new_text.len()).sum();
        assert!(edits.len() >= 2 && inserted < 40, "{edits:?}");
    }

    #[test]
    fn prompt_edits_handle_lone_carriage_returns_and_any_line_endings() {
        // A lone '\r' is a line end to `similar` but not to us; the edits must still apply to the bytes.
        let cases = [
            ("a\rb\nc\n", "a\rb\nC\n"),
            ("x\ry\rz\n1\n2\n", "x\ry\n1\n2\n3"),
            ("p\r\nq\r\n", "p\r\nQ\rq\r\n"),
            ("\r\r\r", "\r\n\r"),
            ("one\ntwo", "one\rtwo\n"),
        ];
        for (old, new) in cases {
            let edits = prompt_edits(old, new);
            for e in &edits {
                assert!(e.start_byte <= e.old_end_byte, "{old:?} -> {new:?}: {e:?}");
            }
            assert_eq!(apply(old, &edits), new, "{old:?} -> {new:?}");
        }
    }

    #[test]
    fn prompt_edits_apply_when_the_line_diff_runs_out_of_time() {
        // A zero timeout makes `similar` give up on every middle part (its deadline fallback).
        let mut seed = 7u64;
        let mut next = move |n: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let lines = ["def f(x):\n", "    return x\n", "\n", "a = 1\r", "# é\n", "pass\n", "b"];
        for _ in 0..300 {
            let mut pick = || {
                let n = next(12);
                (0..n).map(|_| lines[next(lines.len() as u64) as usize]).collect::<String>()
            };
            let (old, new) = (pick(), pick());
            for timeout in [std::time::Duration::ZERO, std::time::Duration::from_secs(1)] {
                let edits = prompt_edits_within(&old, &new, timeout);
                assert_eq!(apply(&old, &edits), new, "{old:?} -> {new:?} ({timeout:?}): {edits:?}");
            }
        }
        // The deadline fallback's ops for this pair (delete 0..2, keep old line 2 as new line 0, insert at old
        // line 1): old offsets plus a running delta put the insertion at byte -10.
        let old = "    return x\ndef f(x):\ndef f(x):\n";
        let new = "def f(x):\ndef f(x):\ndef f(x):\n    return x\ndef f(x):\npass\ndef f(x):\npass\ndef f(x):\n";
        assert_eq!(apply(old, &prompt_edits_within(old, new, std::time::Duration::ZERO)), new);
    }

    #[test]
    fn fim_prompt_and_left_to_right_prompt() {
        let b = PromptBuilder::new(Some(markers()), 1000, 1000);
        assert_eq!(b.build("def f():\n    return 1\n", 13).text, "<P>def f():\n    <S>return 1\n<M>");
        let l2r = PromptBuilder::new(None, 1000, 1000);
        assert_eq!(l2r.build("abc", 2).text, "ab");
    }

    #[test]
    fn other_documents_come_first_and_typing_here_does_not_change_them() {
        let mut ctx = CrossFileContext::with_separator("<F>");
        ctx.note_edit("file:///w/util.py", "def helper(x):\n    return x * 2\n", 5);
        let b = PromptBuilder::new(Some(markers()), 1000, 1000);
        let here = ctx.for_document("file:///w/main.py");
        assert_eq!(here, "<F>util.py\ndef helper(x):\n    return x * 2\n<F>main.py\n");
        assert_eq!(ctx.for_document("file:///w/util.py"), "", "a document is not its own context");
        // Typing in main.py (its own edits are noted too) leaves main.py's preamble as it was.
        ctx.note_edit("file:///w/main.py", "y = helper(1)\n", 3);
        assert_eq!(ctx.for_document("file:///w/main.py"), here);
        let p = b.build_with_context("y = helper(1)\n", 4, &here);
        assert!(p.text.starts_with("<F>util.py") && p.text.contains("<P>y = <S>"));
        ctx.forget("file:///w/util.py");
        assert_eq!(ctx.for_document("file:///w/main.py"), "");
    }

    /// `line 0\nline 1\n...`: a file whose lines are easy to find.
    fn numbered_lines(n: usize) -> String {
        (0..n).map(|i| format!("line {i}\n")).collect()
    }

    /// Bytes of prompt text the edits from `old` to `new` insert: what the cache would encode.
    fn inserted(old: &str, new: &str) -> usize {
        prompt_edits(old, new).iter().map(|e| e.new_text.len()).sum()
    }

    #[test]
    fn a_window_far_from_the_cache_is_read_around_the_cursor_first_then_in_steps_to_the_whole_window() {
        let text = numbered_lines(4000); // ~35 kB
        let b = PromptBuilder::new(Some(markers()), 4000, 1000).with_first_read(1000);
        let cursor = text.find("line 2500\n").unwrap() + 3;
        let whole = b.build(&text, cursor);
        // Nothing held (a file opened): the window is the same, read around the cursor first, on line starts.
        let first = b.read_first(&text, cursor, "", &whole, None).expect("a first read");
        assert_eq!((first.window_start, first.window_end), (whole.window_start, whole.window_end));
        let u = first.unread.expect("a first read");
        assert_eq!(u.gap.0, whole.window_start);
        assert!(cursor - u.gap.1 <= 750 + 10 && cursor - u.gap.1 >= 740, "{u:?}");
        assert!(u.suffix_to - cursor >= 250 && u.suffix_to - cursor <= 260, "{u:?}");
        assert!(text[..u.gap.1].ends_with('\n') && text[..u.suffix_to].ends_with('\n'));
        assert_eq!(first.unread_bytes(), whole.text.len() - first.text.len());
        assert!(first.text.contains("line 2499\nlin<S>e 2500\n") && !first.text.contains("line 2400\n"));
        // Read on: the gap from its start (each step is one insertion right after what was read of the gap, so it
        // sees all the text before it), then the suffix at its end, until the prompt is the whole window's.
        let mut p = first.clone();
        let mut steps = 0;
        while let Some((next, edit)) = b.read_more(&text, cursor, "", &p, 300, false) {
            assert_eq!(apply(&p.text, &[edit]), next.text);
            // One site for the cache, and the text it adds is the next lines of the document, inserted right
            // after what was read of the gap (after the prefix marker), or before the middle marker (the suffix).
            assert_eq!(prompt_edits(&p.text, &next.text).len(), 1);
            let u = p.unread.unwrap();
            let (at, added, part_done) = if u.gap.0 < u.gap.1 {
                assert!(b.read_more(&text, cursor, "", &p, 300, true).is_some());
                let to = next.unread.map_or(u.gap.1, |n| n.gap.0);
                ("<P>".len() + (u.gap.0 - p.window_start), &text[u.gap.0..to], to == u.gap.1)
            } else {
                // Not while `prefix_only`.
                assert!(b.read_more(&text, cursor, "", &p, 300, true).is_none());
                let to = next.unread.map_or(p.window_end, |n| n.suffix_to);
                (p.text.len() - "<M>".len(), &text[u.suffix_to..to], to == p.window_end)
            };
            assert_eq!(next.text, format!("{}{added}{}", &p.text[..at], &p.text[at..]));
            assert!((added.len() >= 300 || part_done) && added.len() < 320 && added.ends_with('\n'), "{}", added.len());
            p = next;
            steps += 1;
        }
        assert_eq!(p, whole);
        let unread = first.unread_bytes();
        assert!(steps >= unread / 320 && steps <= unread / 300 + 2, "{steps} steps for {unread} bytes");
        // Held (the cache holds most of the window already): read at once, as before.
        let near = b.build(&text, cursor - 200);
        assert_eq!(b.read_first(&text, cursor, "", &whole, Some(&near)), None);
        // Off, or a small file: at once.
        let off = PromptBuilder::new(Some(markers()), 4000, 1000);
        assert_eq!(off.read_first(&text, cursor, "", &whole, None), None);
        let small = numbered_lines(100);
        let all = b.build(&small, 50);
        assert_eq!(b.read_first(&small, 50, "", &all, None), None);
    }

    #[test]
    fn windows_and_reads_in_parts_stay_on_char_boundaries_in_text_of_multibyte_characters() {
        // Every size here (first read, threshold, window, step) is in bytes, and in text of 2-4-byte characters
        // a cursor less those bytes lands inside a character: each place must come back to a boundary (a slice
        // there panics the warm thread).
        let text: String = (0..900).map(|i| format!("é{i}—ß “€” 😀 {}\n", "ü".repeat(i % 7))).collect();
        let b = PromptBuilder::new(Some(markers()), 4000, 1000).with_first_read(1000);
        let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).step_by(97).chain([text.len()]).collect();
        let mut read_in_parts = 0;
        for &cursor in &boundaries {
            let whole = b.build(&text, cursor);
            let opened = b.build_unread(&text, text.len(), "", b.build(&text, text.len()));
            let Some(first) = b.read_first(&text, cursor, "", &whole, None) else {
                assert!(whole.window_end - whole.window_start <= READ_IN_PARTS_OVER_BYTES, "{cursor}");
                continue;
            };
            for p in [&whole, &opened, &first] {
                assert!(text.is_char_boundary(p.window_start) && text.is_char_boundary(p.window_end));
            }
            let mut p = first.clone();
            let mut steps = 0;
            while let Some((next, _)) = b.read_more(&text, cursor, "", &p, 301, false) {
                p = next;
                steps += 1;
                assert!(steps < 100);
            }
            assert_eq!(p, whole, "read on to the whole window at {cursor}");
            // Typed and carried.
            let typed = format!("{}ø{}", &text[..cursor], &text[cursor..]);
            let u = carry_unread(&text, &typed, first.unread.unwrap());
            assert!(typed.is_char_boundary(u.gap.0) && typed.is_char_boundary(u.gap.1) && typed.is_char_boundary(u.suffix_to));
            let kept = b.build_keeping(&typed, cursor + "ø".len(), "", carry_window(&text, &typed, (whole.window_start, whole.window_end)), Some(u));
            assert!(kept.text.contains("ø"));
            read_in_parts += 1;
        }
        assert!(read_in_parts > boundaries.len() / 2, "{read_in_parts} of {}", boundaries.len());
    }

    #[test]
    fn a_window_in_long_lines_is_cut_inside_them_and_stays_while_typing() {
        // A minified file (one 400 kB line) and a data line of 100 kB between lines of code: a window of whole
        // lines was the whole line, a prompt of 200,000 tokens that no context holds.
        let minified: String = (0..5000).map(|i| format!("function f{i}(a,b){{var c=a*{i}+b;return c-{i}}}")).collect();
        let code = |n: usize, name: &str| -> String { (0..n).map(|i| format!("def {name}_{i}(x):\n    return x + {i}\n\n")).collect() };
        let data = format!("{}DATA = '{}'\n{}", code(200, "f"), "ab€".repeat(25_000), code(200, "g"));
        let b = PromptBuilder::new(Some(markers()), 12_000, 4_000).with_first_read(1024);
        let bound = 12_000 + 4_000 + 2 * LONG_BLOCK_BYTES + 2 * MAX_SNAP_BYTES + 64;
        for text in [&minified, &data] {
            let mut cursors: Vec<usize> = (1..40).map(|k| text.len() * k / 40).collect();
            cursors.extend(text.find("DATA").map(|d| d + 30_001));
            for cursor in cursors {
                let cursor = text.floor_char_boundary_compat(cursor);
                let whole = b.build(text, cursor);
                assert!(whole.text.len() <= bound, "{cursor}: a window of {} bytes", whole.text.len());
                assert!(whole.window_start + 12_000 <= cursor || whole.window_start == 0, "{cursor}");
                // Typing here keeps the window where it was (the cache moves only the keystrokes), but where the
                // cursor crosses into the next step of the window, once.
                let mut typed = text.to_string();
                let mut window = (whole.window_start, whole.window_end);
                let mut moves = 0;
                for k in 0..20 {
                    let before = typed.clone();
                    typed.insert(cursor + k, 'x');
                    let carried = carry_window(&before, &typed, window);
                    assert_eq!(carried, (window.0, window.1 + 1), "{cursor} +{k}: carried as it was, one byte longer");
                    let kept = b.build_keeping(&typed, cursor + k + 1, "", carried, None);
                    if (kept.window_start, kept.window_end) != carried {
                        moves += 1;
                        assert!(kept.window_start > window.0 && kept.window_start <= window.0 + WINDOW_STEP_BYTES + MAX_SNAP_BYTES, "{cursor} +{k}");
                    }
                    assert!(kept.text.len() <= bound, "{cursor} +{k}");
                    window = (kept.window_start, kept.window_end);
                }
                assert!(moves <= 1, "{cursor}: the window moved {moves} times in 20 keystrokes");
                // Read in parts around the cursor first, in steps of about the step's size.
                let Some(first) = b.read_first(text, cursor, "", &whole, None) else { panic!("{cursor}: a window of {} bytes is read in parts", whole.window_end - whole.window_start) };
                assert!(first.text.len() <= 1024 + 2 * MAX_SNAP_BYTES + 64, "{cursor}: a first read of {} bytes", first.text.len());
                let mut p = first;
                while let Some((next, edit)) = b.read_more(text, cursor, "", &p, 384, false) {
                    assert!(!edit.new_text.is_empty() && edit.new_text.len() <= 384 + MAX_SNAP_BYTES + 4, "{cursor}: a step of {}", edit.new_text.len());
                    p = next;
                }
                assert_eq!(p, whole, "{cursor}");
            }
        }
    }

    #[test]
    fn the_bounded_snaps_agree_with_whole_line_scans() {
        let unbounded_back = |text: &str, at: usize| {
            let start = line_start(text, at);
            if at.min(text.len()) - start <= MAX_SNAP_BYTES { start } else { text.floor_char_boundary_compat(at) }
        };
        let unbounded_forward = |text: &str, at: usize| {
            let at = at.min(text.len());
            let next = next_line_start(text, at);
            if next - at <= MAX_SNAP_BYTES { next } else { ceil_char_boundary(text, at) }
        };
        let text: String = (0..60).map(|i| format!("{}é\n", "x".repeat((i * 97) % 2_600))).collect();
        for at in (0..=text.len() + 3).step_by(7).chain([MAX_SNAP_BYTES, MAX_SNAP_BYTES + 1, MAX_SNAP_BYTES + 2]) {
            assert_eq!(snap_back(&text, at), unbounded_back(&text, at), "back {at}");
            assert_eq!(snap_forward(&text, at), unbounded_forward(&text, at), "forward {at}");
        }
    }

    #[test]
    fn the_largest_integer_as_a_byte_setting_means_the_whole_file() {
        // `completion.prefixBytes` etc. come from the user's settings; the largest integer must not overflow the
        // window's sums (a wrapped sum in a release build gave a window of a few bytes).
        let text = numbered_lines(3000);
        let cursor = text.len() / 2;
        let b = PromptBuilder::new(Some(markers()), usize::MAX, usize::MAX).with_first_read(usize::MAX);
        let whole = b.build(&text, cursor);
        assert_eq!((whole.window_start, whole.window_end), (0, text.len()));
        assert_eq!(b.read_first(&text, cursor, "", &whole, None), None, "a first read of all of it is one read");
        let kept = b.build_keeping(&text, cursor + 10, "", (0, text.len()), None);
        assert_eq!((kept.window_start, kept.window_end), (0, text.len()));
        let lr = PromptBuilder::new(None, usize::MAX, usize::MAX);
        assert_eq!(lr.build(&text, cursor).window_start, 0);
        // All the suffix, a budget of prefix: the sum wrapped to less than the prefix, and the window ended a line
        // block after the cursor.
        let suffix_all = PromptBuilder::new(Some(markers()), 2_000, usize::MAX).build(&text, cursor);
        assert_eq!(suffix_all.window_end, text.len());
    }

    #[test]
    fn which_windows_are_read_in_parts_does_not_follow_a_smaller_first_read() {
        // A 1 kB first read still reads a window whole when it enters at most 4 kB: the threshold is its own.
        let b = PromptBuilder::new(Some(markers()), 12_000, 4_000).with_first_read(1_024);
        for (lines, in_parts) in [(300, false), (420, false), (600, true), (2000, true)] {
            let text = numbered_lines(lines);
            let cursor = text.len() / 2;
            let whole = b.build(&text, cursor);
            let size = whole.window_end - whole.window_start;
            assert_eq!(size > READ_IN_PARTS_OVER_BYTES, in_parts, "{lines} lines: {size} bytes");
            assert_eq!(b.read_first(&text, cursor, "", &whole, None).is_some(), in_parts, "{size} bytes");
            // Opened (the cursor at the end, unknown): nothing read but the markers only when read in parts.
            let opened = b.build(&text, text.len());
            assert_eq!(b.build_unread(&text, text.len(), "", opened).unread.is_some(), in_parts, "{size} bytes");
            if in_parts {
                // The first read is the 1 kB around the cursor, not the 4 kB of the threshold.
                let u = b.read_first(&text, cursor, "", &whole, None).unwrap().unread.unwrap();
                assert!(u.suffix_to - u.gap.1 <= 1_024 + 20, "{u:?}");
            }
        }
        // A first read larger than half the threshold raises it (twice the first read, as before).
        let big = PromptBuilder::new(Some(markers()), 12_000, 4_000).with_first_read(4_096);
        let text = numbered_lines(800);
        assert!(text.len() > READ_IN_PARTS_OVER_BYTES && text.len() <= 8_192, "{}", text.len());
        let whole = big.build(&text, text.len() / 2);
        assert_eq!(big.read_first(&text, text.len() / 2, "", &whole, None), None);
    }

    #[test]
    fn a_window_being_read_stays_while_the_cursor_types_in_its_read_part() {
        let text = numbered_lines(4000);
        let b = PromptBuilder::new(Some(markers()), 4000, 1000).with_first_read(1000);
        let cursor = text.find("line 2500\n").unwrap() + 3;
        let first = b.read_first(&text, cursor, "", &b.build(&text, cursor), None).unwrap();
        let window = (first.window_start, first.window_end);
        // A keystroke at the cursor: the window and its unread parts are carried, and the prompt only changes there.
        let typed = format!("{}x{}", &text[..cursor], &text[cursor..]);
        let unread = carry_unread(&text, &typed, first.unread.unwrap());
        let kept = carry_window(&text, &typed, window);
        let after = b.build_keeping(&typed, cursor + 1, "", kept, Some(unread));
        assert_eq!(after.unread, Some(Unread { suffix_to: first.unread.unwrap().suffix_to + 1, ..first.unread.unwrap() }));
        assert_eq!(inserted(&first.text, &after.text), "line 2500\n".len() + 1 + "<S>".len());
        assert_eq!(after.unread_bytes(), first.unread_bytes());
        // The cursor somewhere it has not read (in the gap): a fresh window, whole (the caller may read it first).
        let far = text.find("line 2200\n").unwrap();
        let moved = b.build_keeping(&text, far, "", window, first.unread);
        assert_eq!(moved, b.build(&text, far));
        assert!(b.read_first(&text, far, "", &moved, Some(&first)).is_some());
        // When the window stays (a file that fits whole) and its gap was read in part, what was read stays read.
        let small = numbered_lines(700); // ~6 kB: over the 4 kB read in parts
        assert!(small.len() > READ_IN_PARTS_OVER_BYTES + 1000, "{}", small.len());
        let wide = PromptBuilder::new(Some(markers()), 8000, 1000).with_first_read(1000);
        // A file opened: nothing read but the markers; a cursor in it reads around it and keeps what was read.
        let opened = wide.build_unread(&small, small.len(), "", wide.build(&small, small.len()));
        assert_eq!(opened.text, "<P><S><M>");
        assert_eq!(opened.unread_bytes(), small.len());
        assert_eq!((opened.window_start, opened.window_end), (0, small.len()));
        let mut part = opened.clone();
        for _ in 0..3 {
            part = wide.read_more(&small, small.len(), "", &part, 300, true).unwrap().0;
        }
        let read_to = part.unread.unwrap().gap.0;
        assert!(read_to >= 900, "{read_to}");
        let in_gap = small.find("line 250\n").unwrap();
        let whole = wide.build(&small, in_gap);
        assert_eq!((whole.window_start, whole.window_end), (0, small.len()));
        let again = wide.read_first(&small, in_gap, "", &whole, Some(&part)).unwrap();
        assert_eq!(again.unread.unwrap().gap.0, read_to);
        assert!(inserted(&part.text, &again.text) < 1100, "{}", inserted(&part.text, &again.text));
        // A line deleted inside the read prefix part moves the gap's end and the window's end with it.
        let line = text.find("line 2499\n").unwrap();
        let deleted = format!("{}{}", &text[..line], &text[line + "line 2499\n".len()..]);
        let u = carry_unread(&text, &deleted, first.unread.unwrap());
        assert_eq!(u.gap, first.unread.unwrap().gap);
        assert_eq!(u.suffix_to, first.unread.unwrap().suffix_to - "line 2499\n".len());
    }

    #[test]
    fn a_window_is_carried_through_edits_and_put_on_line_starts() {
        let old = "a\nbb\ncc\ndd\nee\n";
        // Typing inside the window: the end shifts by what was typed.
        assert_eq!(carry_window(old, "a\nbXb\ncc\ndd\nee\n", (2, 11)), (2, 12));
        // A block deleted above the window: both ends shift back.
        assert_eq!(carry_window(old, "a\ndd\nee\n", (8, 14)), (2, 8));
        // Text inserted right at the end is taken in (typing at the end of the file); replaced after it is not.
        assert_eq!(carry_window(old, "a\nbb\ncc\ndd\nee\nff\n", (2, 14)), (2, 17));
        assert_eq!(carry_window(old, "a\nbb\ncc\nXX\nee\n", (2, 8)), (2, 8));
        // A deletion across the start: the start goes to where the deletion was, back to its line's start.
        assert_eq!(carry_window(old, "a\nbcc\ndd\nee\n", (5, 11)), (2, 9));
        // Unchanged text: unchanged window.
        assert_eq!(carry_window(old, old, (5, 8)), (5, 8));
    }

    #[test]
    fn a_file_that_fits_is_the_whole_window_wherever_the_cursor_goes() {
        let text: String = (0..300).map(|i| format!("value_{i} = {i}\n")).collect(); // ~4.6 kB
        let b = PromptBuilder::new(Some(markers()), 4000, 1000);
        let bottom = b.build(&text, text.find("value_290").unwrap());
        let top = b.build(&text, text.find("value_5 ").unwrap());
        assert_eq!((bottom.window_start, bottom.window_end), (0, text.len()));
        assert_eq!((top.window_start, top.window_end), (0, text.len()));
        assert!(top.text.starts_with("<P>value_0 = 0\n") && top.text.contains("<S>value_5 = 5\n"));
        // Up and back down: only the marker moves.
        assert!(inserted(&bottom.text, &top.text) < 40 && inserted(&top.text, &bottom.text) < 40);
        // One byte more than both budgets: windowed again.
        let small = PromptBuilder::new(Some(markers()), 2000, text.len() - 2001);
        assert!(small.build(&text, 10).window_end < text.len());
    }

    #[test]
    fn a_kept_window_gives_way_when_the_cursor_nears_its_edge_or_leaves_it() {
        let text = numbered_lines(2000); // ~16 kB
        let b = PromptBuilder::new(Some(markers()), 2000, 500);
        let cursor = text.find("line 1050").unwrap();
        let first = b.build(&text, cursor);
        let kept = (first.window_start, first.window_end);
        // A few lines up: kept, and the cache moves only the marker, there and back.
        let near = text.find("line 1020").unwrap();
        assert!(b.build(&text, near).window_end < first.window_end, "a fresh window there would drop suffix lines");
        let up = b.build_keeping(&text, near, "", kept, None);
        assert_eq!((up.window_start, up.window_end), (first.window_start, first.window_end));
        let back = b.build_keeping(&text, cursor, "", (up.window_start, up.window_end), None);
        assert_eq!(back, first);
        assert!(inserted(&first.text, &up.text) < 40 && inserted(&up.text, &back.text) < 40);
        // Near the window's start the prefix would be under half its budget: a fresh window.
        let edge = first.window_start + 200;
        assert_eq!(b.build_keeping(&text, edge, "", kept, None), b.build(&text, edge));
        // Outside it: a fresh window.
        let far = text.find("line 100\n").unwrap();
        assert_eq!(b.build_keeping(&text, far, "", kept, None), b.build(&text, far));
        // A window larger than both budgets together is not kept, even with the cursor inside.
        let huge = (0, text.len());
        assert_eq!(b.build_keeping(&text, cursor, "", huge, None), first);
        // Models without FIM markers: the prompt ends at the cursor, nothing to keep.
        let l2r = PromptBuilder::new(None, 2000, 500);
        assert_eq!(l2r.build_keeping(&text, near, "", kept, None), l2r.build(&text, near));
    }

    #[test]
    fn an_edit_far_from_the_cursor_leaves_the_prompt_where_it_was() {
        let text = numbered_lines(4000); // ~35 kB
        let b = PromptBuilder::new(Some(markers()), 4000, 1000);
        let typing = text.find("line 3500").unwrap();
        let p = b.build(&text, typing);
        let window = (p.window_start, p.window_end);
        assert!(window.0 > 20_000, "{window:?}");
        // A block of 30 lines deleted far above the window: the cursor stays at the typing place (carried), and
        // the prompt text does not change at all.
        let (a, z) = (text.find("line 100\n").unwrap(), text.find("line 130\n").unwrap());
        let deleted = format!("{}{}", &text[..a], &text[z..]);
        let cursor = b.cursor_after_edit(&text, &deleted, typing, &p, a);
        assert_eq!(cursor, typing - (z - a));
        let after = b.build_keeping(&deleted, cursor, "", carry_window(&text, &deleted, window), None);
        assert_eq!(after.text, p.text);
        // Typing a few lines above the cursor, inside the window: the cursor goes to the edit, as usual.
        let near = text.find("line 3480").unwrap();
        let typed = format!("{}x{}", &text[..near], &text[near..]);
        assert_eq!(b.cursor_after_edit(&text, &typed, typing, &p, near + 1), near + 1);
        // Models without FIM markers: always the edit.
        let l2r = PromptBuilder::new(None, 4000, 1000);
        assert_eq!(l2r.cursor_after_edit(&text, &deleted, typing, &p, a), a);
    }

    #[test]
    fn window_stays_still_while_typing_and_moves_in_blocks() {
        let text = numbered_lines(1000);
        let b = PromptBuilder::new(Some(markers()), 2000, 500);
        let cursor = text.find("line 700").unwrap();
        let p1 = b.build(&text, cursor);
        let p2 = b.build(&text, cursor + 4);
        assert_eq!(p1.window_start, p2.window_start);
        assert!(p1.window_start > 0 && p1.window_end < text.len());
        assert!(p1.text.len() < 4000);
        // Typing one character is one edit site.
        let mut typed = text.clone();
        typed.insert(cursor, 'x');
        assert_eq!(prompt_edits(&p1.text, &b.build(&typed, cursor + 1).text).len(), 1);
    }
}
