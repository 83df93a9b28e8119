//! One incrementally maintained tree-sitter tree per document.
//!
//! Each text change becomes an `InputEdit` on the old tree (so unchanged subtrees are reused) and the tree is
//! re-parsed once per `didChange` notification, reading the rope chunk by chunk (no copy of the whole text).

use std::time::Instant;

use ropey::Rope;
use tree_sitter::{InputEdit, Parser, Point, Tree};

use super::Language;

pub struct SyntaxTree {
    language: Language,
    parser: Parser,
    tree: Tree,
    /// Wall time of the last (re-)parse, in milliseconds.
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
        SyntaxTree { language, parser, tree, last_parse_ms: started.elapsed().as_secs_f64() * 1e3 }
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

    /// Records an edit on the old tree. Call once per text change, before `reparse`.
    pub fn edit(&mut self, edit: &InputEdit) {
        self.tree.edit(edit);
    }

    /// Re-parses after one or more `edit` calls, reusing unchanged subtrees.
    pub fn reparse(&mut self, text: &Rope) {
        let started = Instant::now();
        self.tree = parse_rope(&mut self.parser, text, Some(&self.tree));
        self.last_parse_ms = started.elapsed().as_secs_f64() * 1e3;
    }

    /// Replaces the tree by a fresh one (after a whole-document change or to undo a failed edit batch).
    pub fn reset(&mut self, text: &Rope, tree: Option<Tree>) {
        match tree {
            Some(tree) => self.tree = tree,
            None => {
                let started = Instant::now();
                self.tree = parse_rope(&mut self.parser, text, None);
                self.last_parse_ms = started.elapsed().as_secs_f64() * 1e3;
            }
        }
    }
}

fn parse_rope(parser: &mut Parser, text: &Rope, old: Option<&Tree>) -> Tree {
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

/// Tree-sitter's point for a byte offset: rows count `\n` only (a lone `\r` is not a row break for tree-sitter),
/// columns are bytes since the last `\n`.
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
    fn errors_are_counted() {
        let rope = Rope::from_str("def f(:\n  return 1\n");
        let tree = SyntaxTree::new(Language::Python, &rope);
        assert!(count_syntax_errors(tree.tree()) >= 1);
        let ok = SyntaxTree::new(Language::Python, &Rope::from_str("x = 1\n"));
        assert_eq!(count_syntax_errors(ok.tree()), 0);
    }
}
