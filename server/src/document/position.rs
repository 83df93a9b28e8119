//! Position conversion between LSP `(line, character)` and rope indices: the only code that knows about
//! UTF-8, UTF-16 and UTF-32 code units.
//!
//! Lines are split at `\n`, `\r\n` and a lone `\r`, exactly as the LSP specification says (ropey is built with
//! only its `cr_lines` feature for this reason: its default `unicode_lines` would also split at U+2028 and
//! friends, which LSP clients do not).
//!
//! Clamping rules, in one place:
//! - a `character` past the end of a line's content means the end of that content (the spec: "defaults back to
//!   the line length"); a line terminator is never split;
//! - a `character` that falls inside one character (half of a UTF-16 surrogate pair, a UTF-8 continuation byte)
//!   snaps back to that character's start;
//! - a `line` at or past the line count is an error: it means the client and the server disagree about the
//!   document, and applying such an edit anywhere would corrupt it.
//!
//! Every conversion is O(log n) in the document size (ropey keeps UTF-16 and line metadata in its tree).

use ropey::Rope;

/// The position encoding negotiated at `initialize` (LSP 3.17 `general.positionEncodings`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PositionEncoding {
    Utf8,
    /// The LSP default, and what a client that says nothing gets.
    #[default]
    Utf16,
    Utf32,
}

impl PositionEncoding {
    pub fn as_lsp_str(self) -> &'static str {
        match self {
            PositionEncoding::Utf8 => "utf-8",
            PositionEncoding::Utf16 => "utf-16",
            PositionEncoding::Utf32 => "utf-32",
        }
    }

    pub fn from_lsp_str(name: &str) -> Option<PositionEncoding> {
        match name {
            "utf-8" => Some(PositionEncoding::Utf8),
            "utf-16" => Some(PositionEncoding::Utf16),
            "utf-32" => Some(PositionEncoding::Utf32),
            _ => None,
        }
    }

    /// Picks the cheapest encoding the client offers: UTF-8 (our offsets are bytes), then UTF-32, else the
    /// mandatory UTF-16.
    pub fn negotiate<'a>(offered: impl IntoIterator<Item = &'a str>) -> PositionEncoding {
        let offered: Vec<PositionEncoding> = offered.into_iter().filter_map(Self::from_lsp_str).collect();
        [PositionEncoding::Utf8, PositionEncoding::Utf32]
            .into_iter()
            .find(|it| offered.contains(it))
            .unwrap_or(PositionEncoding::Utf16)
    }
}

/// A zero-based LSP position, `character` counted in the negotiated encoding's code units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LineCol {
    pub line: u32,
    pub character: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PositionError {
    #[error("line {line} is past the end of the document ({line_count} lines)")]
    LinePastEnd { line: u32, line_count: usize },
    #[error("range start {start:?} is after its end {end:?}")]
    Inverted { start: LineCol, end: LineCol },
}

/// The char range `[start, content_end)` of a line, without its terminator. Fails for a line past the end.
pub fn line_content(rope: &Rope, line: usize) -> Result<(usize, usize), PositionError> {
    let line_count = rope.len_lines();
    if line >= line_count {
        return Err(PositionError::LinePastEnd { line: line as u32, line_count });
    }
    let start = rope.line_to_char(line);
    let mut end = if line + 1 < line_count { rope.line_to_char(line + 1) } else { rope.len_chars() };
    if end > start && rope.char(end - 1) == '\n' {
        end -= 1;
        if end > start && rope.char(end - 1) == '\r' {
            end -= 1;
        }
    } else if end > start && rope.char(end - 1) == '\r' {
        end -= 1;
    }
    Ok((start, end))
}

/// Converts an LSP position to a char index into `rope`, with the clamping rules of this module.
pub fn to_char_idx(rope: &Rope, pos: LineCol, enc: PositionEncoding) -> Result<usize, PositionError> {
    let (start, end) = line_content(rope, pos.line as usize)?;
    let character = pos.character as usize;
    let idx = match enc {
        PositionEncoding::Utf32 => start + character.min(end - start),
        PositionEncoding::Utf16 => {
            let cu_start = rope.char_to_utf16_cu(start);
            let cu_end = rope.char_to_utf16_cu(end);
            // Ropey maps a code unit inside a surrogate pair to the char that holds it: the snap-back rule.
            rope.utf16_cu_to_char((cu_start + character).min(cu_end))
        }
        PositionEncoding::Utf8 => {
            let b_start = rope.char_to_byte(start);
            let b_end = rope.char_to_byte(end);
            rope.byte_to_char((b_start + character).min(b_end))
        }
    };
    Ok(idx)
}

/// Converts a char index (clamped to the document) to an LSP position.
pub fn to_line_col(rope: &Rope, char_idx: usize, enc: PositionEncoding) -> LineCol {
    let char_idx = char_idx.min(rope.len_chars());
    let line = rope.char_to_line(char_idx);
    let start = rope.line_to_char(line);
    let character = match enc {
        PositionEncoding::Utf32 => char_idx - start,
        PositionEncoding::Utf16 => rope.char_to_utf16_cu(char_idx) - rope.char_to_utf16_cu(start),
        PositionEncoding::Utf8 => rope.char_to_byte(char_idx) - rope.char_to_byte(start),
    };
    LineCol { line: line as u32, character: character as u32 }
}

/// Converts an LSP range to a char range. An inverted range is an error, not silently swapped: it is a client
/// bug worth reporting.
pub fn to_char_range(
    rope: &Rope,
    start: LineCol,
    end: LineCol,
    enc: PositionEncoding,
) -> Result<(usize, usize), PositionError> {
    if start > end {
        return Err(PositionError::Inverted { start, end });
    }
    let start_idx = to_char_idx(rope, start, enc)?;
    let end_idx = to_char_idx(rope, end, enc)?;
    Ok((start_idx, end_idx.max(start_idx)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lc(line: u32, character: u32) -> LineCol {
        LineCol { line, character }
    }

    #[test]
    fn astral_characters_count_two_utf16_units() {
        let rope = Rope::from_str("a😀b\n");
        assert_eq!(to_char_idx(&rope, lc(0, 3), PositionEncoding::Utf16), Ok(2));
        assert_eq!(to_char_idx(&rope, lc(0, 2), PositionEncoding::Utf32), Ok(2));
        assert_eq!(to_char_idx(&rope, lc(0, 5), PositionEncoding::Utf8), Ok(2));
        // Inside the surrogate pair / inside the UTF-8 sequence: snap back to the emoji.
        assert_eq!(to_char_idx(&rope, lc(0, 2), PositionEncoding::Utf16), Ok(1));
        assert_eq!(to_char_idx(&rope, lc(0, 3), PositionEncoding::Utf8), Ok(1));
        assert_eq!(to_line_col(&rope, 2, PositionEncoding::Utf16), lc(0, 3));
        assert_eq!(to_line_col(&rope, 2, PositionEncoding::Utf8), lc(0, 5));
    }

    #[test]
    fn crlf_and_lone_cr_are_line_breaks_and_never_split() {
        let rope = Rope::from_str("ab\r\ncd\ref\n");
        assert_eq!(rope.len_lines(), 4);
        assert_eq!(to_char_idx(&rope, lc(0, 99), PositionEncoding::Utf16), Ok(2));
        assert_eq!(to_char_idx(&rope, lc(1, 0), PositionEncoding::Utf16), Ok(4));
        assert_eq!(to_char_idx(&rope, lc(1, 9), PositionEncoding::Utf16), Ok(6));
        assert_eq!(to_char_idx(&rope, lc(2, 0), PositionEncoding::Utf16), Ok(7));
        assert_eq!(to_char_idx(&rope, lc(3, 0), PositionEncoding::Utf16), Ok(10));
        assert_eq!(to_line_col(&rope, 10, PositionEncoding::Utf16), lc(3, 0));
    }

    #[test]
    fn line_past_end_is_an_error_and_line_end_clamps() {
        let rope = Rope::from_str("x\ny");
        assert_eq!(to_char_idx(&rope, lc(1, 50), PositionEncoding::Utf8), Ok(3));
        assert!(matches!(
            to_char_idx(&rope, lc(2, 0), PositionEncoding::Utf8),
            Err(PositionError::LinePastEnd { line: 2, line_count: 2 })
        ));
        assert!(to_char_range(&rope, lc(1, 0), lc(0, 0), PositionEncoding::Utf8).is_err());
    }

    #[test]
    fn negotiation_prefers_utf8_then_utf32_then_utf16() {
        assert_eq!(PositionEncoding::negotiate(["utf-16", "utf-8"]), PositionEncoding::Utf8);
        assert_eq!(PositionEncoding::negotiate(["utf-32", "utf-16"]), PositionEncoding::Utf32);
        assert_eq!(PositionEncoding::negotiate(["latin-1"]), PositionEncoding::Utf16);
        assert_eq!(PositionEncoding::negotiate([]), PositionEncoding::Utf16);
    }
}
