//! From raw model output to a suggestion: stop at the end of the block, do not repeat what already follows the
//! cursor, drop trailing blank lines.

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
        }
    }

    /// The length of `generated` that is inside the block, or `None` while the block has not ended yet.
    pub fn cut(&self, generated: &str) -> Option<usize> {
        let mut offset: usize = 0;
        let mut blank_run = 0;
        for (i, line) in generated.split_inclusive('\n').enumerate() {
            let complete = line.ends_with('\n');
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
    let mut text = match stop.cut(generated) {
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
    fn text_already_after_the_cursor_is_not_repeated() {
        let stop = BlockStop::new("print(", true);
        assert_eq!(finish_suggestion("value)", &stop, ")"), "value");
        assert_eq!(finish_suggestion("a, b))\n", &stop, "))"), "a, b");
        assert_eq!(finish_suggestion("x\n\n", &stop, ""), "x");
    }
}
