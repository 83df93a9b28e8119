//! Parsing a rope with tree-sitter (chunk by chunk, no copy of the whole text), tree-sitter points, and tree
//! walks. Documents keep their trees through `incremental.rs`; `SyntaxTree` is a one-off parse from scratch.

use std::time::Instant;

use ropey::Rope;
use tree_sitter::{Parser, Point, Tree};

use super::Language;

pub struct SyntaxTree {
    language: Language,
    tree: Tree,
    /// Wall time of the parse, in milliseconds.
    last_parse_ms: f64,
}

impl SyntaxTree {
    /// Parses `text` from scratch.
    pub fn new(language: Language, text: &Rope) -> SyntaxTree {
        let mut parser = Parser::new();
        // The grammars are compiled in and checked by a unit test; a failure here is a build bug.
        parser.set_language(&language.grammar()).expect("grammar ABI matches the tree-sitter crate");
        let started = Instant::now();
        let tree = parse_rope(&mut parser, text, None);
        SyntaxTree { language, tree, last_parse_ms: started.elapsed().as_secs_f64() * 1e3 }
    }

    pub fn language(&self) -> Language {
        self.language
    }

    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    pub fn last_parse_ms(&self) -> f64 {
        self.last_parse_ms
    }
}

pub(super) fn parse_rope(parser: &mut Parser, text: &Rope, old: Option<&Tree>) -> Tree {
    let len = text.len_bytes();
    let mut read = |byte: usize, _: Point| -> &[u8] {
        if byte >= len {
            return &[];
        }
        let (chunk, chunk_start, _, _) = text.chunk_at_byte(byte);
        &chunk.as_bytes()[byte - chunk_start..]
    };
    // Without a timeout or cancellation flag tree-sitter always returns a tree.
    parser.parse_with_options(&mut read, old, None).expect("tree-sitter returns a tree when not cancelled")
}

/// Tree-sitter's point for a byte offset when the text has no lone `\r`: then ropey's lines (which also end at
/// `\r\n`, where the `\n` is the last byte) are exactly tree-sitter's rows, and this is O(log n). With lone
/// `\r`s (old Mac line endings, rare) it falls back to `ts_point_at`'s scan.
pub fn ts_point_fast(text: &Rope, byte: usize, lone_crs: usize) -> Point {
    if lone_crs > 0 {
        return ts_point_at(text, byte);
    }
    let byte = byte.min(text.len_bytes());
    let row = text.byte_to_line(byte);
    Point { row, column: byte - text.line_to_byte(row) }
}

/// How many lone `\r`s (not followed by `\n`) start at a byte in `from..to`: ropey counts them as line breaks,
/// tree-sitter does not. Reads one byte past `to`.
pub fn lone_crs_in(text: &Rope, from: usize, to: usize) -> usize {
    let len = text.len_bytes();
    let (from, to) = (from.min(len), to.min(len));
    if from >= to {
        return 0;
    }
    let mut count = 0;
    let mut prev_cr = false;
    // `bytes_at` takes any byte offset: `from` may fall inside a multi-byte character.
    for b in text.bytes_at(from).take(to - from) {
        if prev_cr && b != b'\n' {
            count += 1;
        }
        prev_cr = b == b'\r';
    }
    if prev_cr && (to == len || text.byte(to) != b'\n') {
        count += 1;
    }
    count
}

/// Tree-sitter's point for a byte offset: rows count `\n` only (a lone `\r` is not a row break for tree-sitter),
/// columns are bytes since the last `\n`. O(n): a scan from the start.
pub fn ts_point_at(text: &Rope, byte: usize) -> Point {
    let mut row = 0;
    let mut last_newline_end = 0;
    let mut chunk_start = 0;
    for chunk in text.chunks() {
        let bytes = chunk.as_bytes();
        let take = bytes.len().min(byte.saturating_sub(chunk_start));
        for (i, b) in bytes[..take].iter().enumerate() {
            if *b == b'\n' {
                row += 1;
                last_newline_end = chunk_start + i + 1;
            }
        }
        chunk_start += bytes.len();
        if chunk_start >= byte {
            break;
        }
    }
    Point { row, column: byte - last_newline_end }
}

/// The point reached from `start` after the text `s`.
pub(crate) fn advance_point(start: Point, s: &str) -> Point {
    match s.rfind('\n') {
        Some(last) => Point { row: start.row + s.matches('\n').count(), column: s.len() - last - 1 },
        None => Point { row: start.row, column: start.column + s.len() },
    }
}

/// Counts ERROR and MISSING nodes.
pub fn count_syntax_errors(tree: &Tree) -> usize {
    let root = tree.root_node();
    if !root.has_error() {
        return 0;
    }
    let mut count = 0;
    let mut cursor = root.walk();
    'walk: loop {
        let node = cursor.node();
        if node.is_error() || node.is_missing() {
            count += 1;
        }
        // Only descend into subtrees that contain an error.
        if node.has_error() && cursor.goto_first_child() {
            continue;
        }
        loop {
            if cursor.goto_next_sibling() {
                continue 'walk;
            }
            if !cursor.goto_parent() {
                break 'walk;
            }
        }
    }
    count
}

/// Visits every node under `root` in document order (pre-order), without recursion.
pub fn for_each_node<'t>(root: tree_sitter::Node<'t>, mut visit: impl FnMut(tree_sitter::Node<'t>)) {
    let mut cursor = root.walk();
    'walk: loop {
        visit(cursor.node());
        if cursor.goto_first_child() {
            continue;
        }
        loop {
            if cursor.goto_next_sibling() {
                continue 'walk;
            }
            if !cursor.goto_parent() || cursor.node() == root {
                break 'walk;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_count_only_newlines() {
        let rope = Rope::from_str("ab\r\ncd\ref");
        assert_eq!(ts_point_at(&rope, 0), Point { row: 0, column: 0 });
        assert_eq!(ts_point_at(&rope, 4), Point { row: 1, column: 0 });
        assert_eq!(ts_point_at(&rope, 9), Point { row: 1, column: 5 });
        assert_eq!(advance_point(Point { row: 1, column: 2 }, "x\nyz"), Point { row: 2, column: 2 });
    }

    #[test]
    fn fast_points_agree_with_the_scan_without_lone_crs() {
        let rope = Rope::from_str("ab\r\ncd\nef\r\n\r\ngh");
        assert_eq!(lone_crs_in(&rope, 0, rope.len_bytes()), 0);
        for byte in 0..=rope.len_bytes() {
            assert_eq!(ts_point_fast(&rope, byte, 0), ts_point_at(&rope, byte), "byte {byte}");
        }
        let mac = Rope::from_str("a\rb\r\nc\r");
        assert_eq!(lone_crs_in(&mac, 0, mac.len_bytes()), 2);
        assert_eq!(lone_crs_in(&mac, 1, 2), 1);
        assert_eq!(lone_crs_in(&mac, 3, 4), 0, "the \\r of \\r\\n");
        assert_eq!(ts_point_fast(&mac, 7, 2), Point { row: 1, column: 2 });
        assert_eq!(lone_crs_in(&Rope::from_str("é\r"), 1, 3), 1, "from inside a character");
    }

    #[test]
    fn errors_are_counted() {
        let rope = Rope::from_str("def f(:\n  return 1\n");
        let tree = SyntaxTree::new(Language::Python, &rope);
        assert!(count_syntax_errors(tree.tree()) >= 1);
        let ok = SyntaxTree::new(Language::Python, &Rope::from_str("x = 1\n"));
        assert_eq!(count_syntax_errors(ok.tree()), 0);
    }
}
