//! From raw model output to a suggestion: stop at the end of the block or where it runs into the code that
//! already follows the cursor, do not repeat what already follows the cursor on its line, drop trailing blank
//! lines.

use super::prompt::FloorCharBoundary;

/// Decides, while tokens stream in, where the suggestion's block ends (by indentation).
#[derive(Clone, Debug)]
pub struct BlockStop {
    /// Indentation (in columns) of the line the cursor is on.
    base_indent: usize,
    multiline: bool,
    /// The cursor's line holds only whitespace before the cursor.
    cursor_on_blank_line: bool,
    /// Bytes of whitespace before the cursor on its line.
    cursor_indent_bytes: usize,
    /// The cursor's line up to the cursor, trimmed (for a first line that repeats the next one).
    line_before_cursor: String,
    /// The first `REPEAT_LOOKAHEAD_LINES` non-blank lines after the cursor's line, trimmed.
    following: Vec<String>,
}

/// Non-blank lines after the cursor's line that a suggestion must not repeat, and the least a line must hold
/// (trimmed) to count as repeated: a small model that has written what belongs at the cursor often goes on with
/// the code below it, which is already there (llama.vim discards such suggestions after the fact). Short lines
/// (`}`, `else:`, `return x`) recur legitimately in new code and are never taken for a repeat.
const REPEAT_LOOKAHEAD_LINES: usize = 3;
const REPEAT_MIN_CHARS: usize = 10;

/// Bytes after the cursor worth handing to `BlockStop::following`.
pub const FOLLOWING_BYTES: usize = 2048;

/// The text after `cursor` for `BlockStop::following`: at most `FOLLOWING_BYTES`, cut at a char boundary.
pub fn text_after_cursor(text: &str, cursor: usize) -> &str {
    let cursor = cursor.min(text.len());
    &text[cursor..text.floor_char_boundary_compat(cursor + FOLLOWING_BYTES)]
}

impl BlockStop {
    /// `line_before_cursor` is the text from the start of the cursor's line to the cursor.
    pub fn new(line_before_cursor: &str, multiline: bool) -> BlockStop {
        let blank = line_before_cursor.trim().is_empty();
        BlockStop {
            base_indent: indent_width(line_before_cursor),
            multiline,
            cursor_on_blank_line: blank,
            cursor_indent_bytes: if blank { line_before_cursor.len() } else { 0 },
            line_before_cursor: line_before_cursor.trim().to_owned(),
            following: Vec::new(),
        }
    }

    /// Also ends the suggestion where a line of it repeats one of the next non-blank lines after the cursor's
    /// line. `after_cursor` is the document from the cursor on (its first line is the rest of the cursor's line).
    pub fn following(mut self, after_cursor: &str) -> BlockStop {
        self.following = after_cursor
            .split('\n')
            .skip(1)
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .take(REPEAT_LOOKAHEAD_LINES)
            .map(str::to_owned)
            .collect();
        self
    }

    /// Whether generated line `i` (`content`, without its newline, complete) is code already after the cursor.
    /// Runs for each complete line at every generated token: later lines are compared in place.
    fn repeats(&self, i: usize, content: &str) -> bool {
        let long_enough = |line: &str| line.chars().count() >= REPEAT_MIN_CHARS;
        // The first line continues the cursor's: a repeat only of the very next line (the whole suggestion is
        // then that line again). Later lines: any of the next few, where a model that skipped one resumes.
        if i == 0 {
            // `line_before_cursor` is trimmed, so the joined line, trimmed, is it and the content trimmed at the end
            // (at the start too when nothing is before the cursor): compared in place, no string built per token.
            let before = self.line_before_cursor.as_str();
            let rest = if before.is_empty() { content.trim() } else { content.trim_end() };
            return before.chars().count() + rest.chars().count() >= REPEAT_MIN_CHARS
                && self.following.first().is_some_and(|next| next.len() == before.len() + rest.len() && next.starts_with(before) && next.ends_with(rest));
        }
        let line = content.trim();
        long_enough(line) && self.following.iter().any(|next| next == line)
    }

    /// The length of `generated` that is inside the block, or `None` while the block has not ended yet.
    pub fn cut(&self, generated: &str) -> Option<usize> {
        self.cut_at(generated, false)
    }

    /// `cut` for a generation that has ended: its last line is complete too.
    pub fn cut_finished(&self, generated: &str) -> Option<usize> {
        self.cut_at(generated, true)
    }

    fn cut_at(&self, generated: &str, finished: bool) -> Option<usize> {
        let mut offset: usize = 0;
        let mut blank_run = 0;
        for (i, line) in generated.split_inclusive('\n').enumerate() {
            let complete = line.ends_with('\n');
            if (complete || finished) && !self.following.is_empty() && self.repeats(i, line.trim_end_matches(['\n', '\r'])) {
                return Some(offset.saturating_sub(1));
            }
            if i > 0 {
                if !self.multiline {
                    return Some(offset.saturating_sub(1));
                }
                let content = line.trim_end_matches(['\n', '\r']);
                if content.trim().is_empty() {
                    blank_run += 1;
                    if blank_run >= 2 {
                        return Some(offset);
                    }
                } else {
                    blank_run = 0;
                    // A line less indented than the cursor's closes the block the suggestion is in. Judge it only
                    // once its indentation is known (some non-space character arrived).
                    if indent_width(content) < self.base_indent {
                        return Some(offset);
                    }
                }
            }
            if !complete {
                break;
            }
            offset += line.len();
        }
        None
    }
}

fn indent_width(s: &str) -> usize {
    s.chars().take_while(|c| *c == ' ' || *c == '\t').map(|c| if c == '\t' { 4 } else { 1 }).sum()
}

/// Cleans a finished generation: cut at the block end, drop the part that repeats the text after the cursor on
/// the same line (e.g. a closing bracket the editor already inserted), drop trailing blank lines.
pub fn finish_suggestion(generated: &str, stop: &BlockStop, rest_of_line: &str) -> String {
    let mut text = match stop.cut_finished(generated) {
        Some(cut) => generated[..cut.min(generated.len())].to_owned(),
        None => generated.to_owned(),
    };
    // On an empty (indented) line a model sometimes starts with a newline and the indentation again; accepted
    // as is, that would leave a blank line and double the indentation.
    if stop.cursor_on_blank_line && rest_of_line.trim().is_empty() && text.starts_with(['\n', '\r']) {
        let body = text.trim_start_matches(['\n', '\r']);
        let indent_chars = body.len() - body.trim_start_matches([' ', '\t']).len();
        text = body[indent_chars.min(stop.cursor_indent_bytes)..].to_owned();
    }
    while text.ends_with('\n') || text.ends_with(' ') || text.ends_with('\t') || text.ends_with('\r') {
        text.pop();
    }
    let rest = rest_of_line.trim_end();
    if !rest.is_empty() {
        // The longest tail of the first line that equals the start of the text after the cursor.
        let first_line_end = text.find('\n').unwrap_or(text.len());
        let first_line = &text[..first_line_end];
        let overlap = (1..=rest.len().min(first_line.len()))
            .rev()
            .find(|k| rest.is_char_boundary(*k) && first_line.is_char_boundary(first_line.len() - k) && first_line.ends_with(&rest[..*k]));
        if let Some(k) = overlap {
            if first_line_end == text.len() {
                text.truncate(text.len() - k);
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_ends_at_a_dedent_or_two_blank_lines() {
        let stop = BlockStop::new("    ", true);
        let gen = "total = 0\n    for x in xs:\n        total += x\n    return total\n\ndef other():\n";
        assert_eq!(&gen[..stop.cut(gen).unwrap()], "total = 0\n    for x in xs:\n        total += x\n    return total\n\n");
        assert_eq!(stop.cut("a = 1\n    b"), None);
        assert!(stop.cut("a\n\n\n").is_some());
    }

    #[test]
    fn a_leading_newline_on_an_empty_line_is_dropped_with_the_repeated_indentation() {
        let stop = BlockStop::new("    ", true);
        assert_eq!(finish_suggestion("\n    total = 0\n    return total\n", &stop, ""), "total = 0\n    return total");
        let not_blank = BlockStop::new("    x = 1", true);
        assert_eq!(finish_suggestion("\n    y = 2", &not_blank, ""), "\n    y = 2");
    }

    #[test]
    fn single_line_mode_stops_at_the_newline() {
        let stop = BlockStop::new("x = ", false);
        assert_eq!(finish_suggestion("compute(1)\nmore()\n", &stop, ""), "compute(1)");
    }

    #[test]
    fn a_suggestion_ends_where_it_runs_into_the_code_after_the_cursor() {
        let after = "\n            static = indent\n            if len(indent) + len(self.placeholder) > self.width:\n                static = ''\n";
        let stop = BlockStop::new("            r", true).following(after);
        // The second line is the code two lines below: cut before it (while streaming and when finished).
        let gen = "esult = self.width\n            if len(indent) + len(self.placeholder) > self.width:\n                x";
        assert_eq!(&gen[..stop.cut(gen).unwrap()], "esult = self.width");
        assert_eq!(finish_suggestion(gen, &stop, ""), "esult = self.width");
        // Still being written: not judged yet.
        assert_eq!(stop.cut("esult = 1\n            if len(indent) + len(self"), None);
        // The whole suggestion is the next line again: nothing is offered.
        let stop = BlockStop::new("            ", true).following(after);
        assert_eq!(finish_suggestion("static = indent\n", &stop, ""), "");
        assert_eq!(finish_suggestion("static = indent", &stop, ""), "", "also as the generation's last, unended line");
        // A first line that equals a later line (not the next) is new code that happens to match: kept.
        let stop = BlockStop::new("", true).following("\nfirst_line_of_code()\nsecond_line_of_code()\n");
        assert_eq!(finish_suggestion("second_line_of_code()", &stop, ""), "second_line_of_code()");
    }

    #[test]
    fn short_lines_that_recur_in_new_code_are_not_taken_for_a_repeat() {
        let stop = BlockStop::new("    ", true).following("\n    }\n    return total\n}\n");
        // The new block's `}` equals the next line but is short: kept. `return total` is already below: cut.
        let gen = "if (x) {\n        y();\n    }\n    return total\n";
        assert_eq!(finish_suggestion(gen, &stop, ""), "if (x) {\n        y();\n    }");
        // Without the following text nothing changes.
        assert_eq!(finish_suggestion(gen, &BlockStop::new("    ", true), ""), "if (x) {\n        y();\n    }\n    return total");
    }

    #[test]
    fn the_text_after_the_cursor_is_bounded_at_a_char_boundary() {
        let text = format!("ab{}", "é".repeat(FOLLOWING_BYTES));
        let after = text_after_cursor(&text, 1);
        assert!(after.len() <= FOLLOWING_BYTES && after.len() >= FOLLOWING_BYTES - 1, "{}", after.len());
        assert_eq!(text_after_cursor("abc", 9), "");
    }

    #[test]
    fn text_already_after_the_cursor_is_not_repeated() {
        let stop = BlockStop::new("print(", true);
        assert_eq!(finish_suggestion("value)", &stop, ")"), "value");
        assert_eq!(finish_suggestion("a, b))\n", &stop, "))"), "a, b");
        assert_eq!(finish_suggestion("x\n\n", &stop, ""), "x");
    }
}
