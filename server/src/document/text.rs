//! One open document: text, version, language and syntax tree, changed only through `apply_changes`.

use ropey::Rope;
use tree_sitter::InputEdit;

use super::position::{to_char_range, LineCol, PositionEncoding, PositionError};
use crate::syntax::{advance_point, lone_crs_in, ts_point_fast, IncrementalTree, Language, TreeRequest};

/// Limits that keep one pathological file from hurting the whole server.
#[derive(Clone, Copy, Debug)]
pub struct DocumentLimits {
    /// Documents larger than this keep their text but get no syntax tree.
    pub max_parse_bytes: usize,
}

impl Default for DocumentLimits {
    fn default() -> Self {
        DocumentLimits { max_parse_bytes: 4 << 20 }
    }
}

/// One content change as LSP sends it: a range in the negotiated encoding, or the whole document.
#[derive(Clone, Debug)]
pub struct ContentChange {
    pub range: Option<(LineCol, LineCol)>,
    pub text: String,
}

/// A change in byte offsets, in the coordinates of the text after the previous edits of the same batch: what the
/// inference engine consumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ByteEdit {
    pub start_byte: usize,
    pub old_end_byte: usize,
    pub new_text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("stale version {got}: the document is already at version {current}; the change was not applied")]
    StaleVersion { got: i32, current: i32 },
    #[error("content change #{index} is invalid: {source}; no change of this notification was applied")]
    BadRange { index: usize, source: PositionError },
}

pub struct Document {
    language_id: String,
    language: Option<Language>,
    version: i32,
    rope: Rope,
    /// The tree state, when the document is parsed at all: edited at once on every change, re-parsed off the
    /// message path (see `syntax::IncrementalTree`).
    syntax: Option<IncrementalTree>,
    /// Set when the text holds a NUL byte: such a document is stored but never parsed nor sent to a model.
    binary: bool,
    /// Lone `\r`s in the text, kept per edit: while there are none, tree-sitter points are O(log n).
    lone_crs: usize,
}

impl Document {
    pub fn new(uri: &str, language_id: &str, version: i32, text: &str, limits: DocumentLimits) -> Document {
        let rope = Rope::from_str(text);
        let language = Language::detect(language_id, uri);
        let binary = text.as_bytes().contains(&0);
        let lone_crs = lone_crs_in(&rope, 0, rope.len_bytes());
        let mut doc = Document { language_id: language_id.to_owned(), language, version, rope, syntax: None, binary, lone_crs };
        doc.refresh_syntax(limits);
        doc
    }

    pub fn version(&self) -> i32 {
        self.version
    }
    pub fn language_id(&self) -> &str {
        &self.language_id
    }
    pub fn language(&self) -> Option<Language> {
        self.language
    }
    pub fn rope(&self) -> &Rope {
        &self.rope
    }
    /// The language of the document's tree, when it has one (a known language, not binary, within the parse limit).
    pub fn syntax_language(&self) -> Option<Language> {
        self.syntax.as_ref().map(|it| it.language())
    }
    /// What a reader needs to get the tree of the current version (`TreeRequest::wait`, off the async runtime).
    /// `None` when the document has no tree.
    pub fn tree_request(&self) -> Option<TreeRequest> {
        self.syntax.as_ref().map(|it| it.request(self.version, &self.rope))
    }
    /// The version of the newest tree parsed so far, which may be older than the text (for benchmarks and logs).
    pub fn parsed_version(&self) -> Option<i32> {
        self.syntax.as_ref().and_then(|it| it.latest_version())
    }
    pub fn is_binary(&self) -> bool {
        self.binary
    }

    /// Applies one `didChange` notification atomically and returns the edits in byte offsets. O(edit): the tree
    /// gets `InputEdit`s here and is re-parsed on the parse thread.
    pub fn apply_changes(
        &mut self,
        version: i32,
        changes: &[ContentChange],
        enc: PositionEncoding,
        limits: DocumentLimits,
    ) -> Result<Vec<ByteEdit>, ChangeError> {
        if version <= self.version {
            return Err(ChangeError::StaleVersion { got: version, current: self.version });
        }
        // Ropes and trees share structure, so these snapshots are cheap and let a failed batch roll back.
        let saved = (self.rope.clone(), self.binary, self.lone_crs);
        let checkpoint = self.syntax.as_mut().map(|it| it.checkpoint());
        let mut edits = Vec::with_capacity(changes.len());
        for (index, change) in changes.iter().enumerate() {
            let applied = match change.range {
                None => {
                    let old_len = self.rope.len_bytes();
                    self.rope = Rope::from_str(&change.text);
                    self.binary = change.text.as_bytes().contains(&0);
                    self.lone_crs = lone_crs_in(&self.rope, 0, self.rope.len_bytes());
                    if let Some(syntax) = self.syntax.as_mut() {
                        syntax.replace_all(version);
                    }
                    Ok(ByteEdit { start_byte: 0, old_end_byte: old_len, new_text: change.text.clone() })
                }
                Some((start, end)) => self.apply_ranged(version, start, end, &change.text, enc),
            };
            match applied {
                Ok(edit) => edits.push(edit),
                Err(source) => {
                    (self.rope, self.binary, self.lone_crs) = saved;
                    if let (Some(syntax), Some(checkpoint)) = (self.syntax.as_mut(), checkpoint) {
                        syntax.rollback(checkpoint);
                    }
                    return Err(ChangeError::BadRange { index, source });
                }
            }
        }
        self.version = version;
        self.refresh_syntax(limits);
        Ok(edits)
    }

    fn apply_ranged(
        &mut self,
        version: i32,
        start: LineCol,
        end: LineCol,
        text: &str,
        enc: PositionEncoding,
    ) -> Result<ByteEdit, PositionError> {
        let (start_char, end_char) = to_char_range(&self.rope, start, end, enc)?;
        let start_byte = self.rope.char_to_byte(start_char);
        let old_end_byte = self.rope.char_to_byte(end_char);
        // A lone `\r` can only appear or disappear at the edit's edges: count there before and after.
        let crs_before = lone_crs_in(&self.rope, start_byte.saturating_sub(1), old_end_byte);
        if let Some(syntax) = self.syntax.as_mut() {
            let start_position = ts_point_fast(&self.rope, start_byte, self.lone_crs);
            let removed = self.rope.slice(start_char..end_char).to_string();
            syntax.edit(
                version,
                InputEdit {
                    start_byte,
                    old_end_byte,
                    new_end_byte: start_byte + text.len(),
                    start_position,
                    old_end_position: advance_point(start_position, &removed),
                    new_end_position: advance_point(start_position, text),
                },
            );
        }
        self.rope.remove(start_char..end_char);
        self.rope.insert(start_char, text);
        let crs_after = lone_crs_in(&self.rope, start_byte.saturating_sub(1), start_byte + text.len());
        self.lone_crs = self.lone_crs + crs_after - crs_before;
        if text.as_bytes().contains(&0) {
            self.binary = true;
        }
        Ok(ByteEdit { start_byte, old_end_byte, new_text: text.to_owned() })
    }

    fn parse_allowed(&self, limits: DocumentLimits) -> bool {
        self.language.is_some() && !self.binary && self.rope.len_bytes() <= limits.max_parse_bytes
    }

    /// Creates or drops the tree state so that it exists exactly when parsing is allowed, and queues the parse of
    /// the current version.
    fn refresh_syntax(&mut self, limits: DocumentLimits) {
        match (self.language, self.parse_allowed(limits)) {
            (Some(language), true) => {
                let version = self.version;
                let syntax = self.syntax.get_or_insert_with(|| IncrementalTree::new(language, version));
                syntax.schedule(version, &self.rope);
            }
            _ => self.syntax = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::syntax::SyntaxTree;

    fn lc(line: u32, character: u32) -> LineCol {
        LineCol { line, character }
    }

    /// Every node with its bytes and tree-sitter points: an incremental tree with a wrong point differs here.
    fn shape(tree: &tree_sitter::Tree) -> String {
        let mut out = String::new();
        crate::syntax::for_each_node(tree.root_node(), |n| {
            out.push_str(&format!("{} {:?} {:?}-{:?}\n", n.kind(), n.byte_range(), n.start_position(), n.end_position()))
        });
        out
    }

    fn fresh_sexp(rope: &Rope) -> String {
        shape(SyntaxTree::new(Language::Python, rope).tree())
    }

    /// Every version's tree is that version's fresh parse, whether the reader asks at once (racing the parse
    /// thread) or after later edits, through whole replacements, failed batches and `\r` line endings.
    #[test]
    fn readers_get_the_tree_of_their_version() {
        let limits = DocumentLimits::default();
        let mut doc = Document::new("file:///a.py", "python", 1, "def f(x):\r\n    return x\r\n", limits);
        let mut pending = vec![(doc.tree_request().unwrap(), fresh_sexp(doc.rope()))];
        let batches: Vec<Vec<ContentChange>> = vec![
            vec![ContentChange { range: Some((lc(1, 12), lc(1, 12))), text: " + (".into() }],
            vec![ContentChange { range: Some((lc(1, 16), lc(1, 16))), text: "1)".into() }],
            vec![ContentChange { range: None, text: "class A:\r    pass\r".into() }, ContentChange { range: Some((lc(2, 0), lc(2, 0))), text: "x = [\n".into() }],
            vec![ContentChange { range: Some((lc(0, 0), lc(0, 0))), text: "ok\r".into() }, ContentChange { range: Some((lc(99, 0), lc(99, 0))), text: "bad".into() }],
            vec![ContentChange { range: Some((lc(1, 8), lc(2, 4))), text: "".into() }],
            vec![ContentChange { range: Some((lc(0, 0), lc(0, 0))), text: "import os\n".into() }],
        ];
        for (i, batch) in batches.iter().enumerate() {
            let _ = doc.apply_changes(2 + i as i32, batch, PositionEncoding::Utf16, limits);
            assert_eq!(doc.lone_crs, lone_crs_in(doc.rope(), 0, doc.rope().len_bytes()), "batch {i}");
            pending.push((doc.tree_request().unwrap(), fresh_sexp(doc.rope())));
            if i % 2 == 0 {
                let (request, expected) = pending.pop().unwrap();
                assert_eq!(shape(&request.wait().tree), expected, "batch {i}, read at once");
            }
        }
        for (request, expected) in pending {
            let version = request.version();
            let parsed = request.wait();
            assert_eq!(parsed.version, version);
            assert_eq!(shape(&parsed.tree), expected, "version {version}, read later");
        }
    }

    #[test]
    fn failed_batch_rolls_back_everything() {
        let mut doc = Document::new("file:///a.py", "python", 1, "x = 1\n", DocumentLimits::default());
        let changes = [
            ContentChange { range: Some((lc(0, 0), lc(0, 0))), text: "y = 2\n".into() },
            ContentChange { range: Some((lc(9, 0), lc(9, 0))), text: "boom".into() },
        ];
        let err = doc.apply_changes(2, &changes, PositionEncoding::Utf16, DocumentLimits::default()).unwrap_err();
        assert!(matches!(err, ChangeError::BadRange { index: 1, .. }), "{err}");
        assert_eq!(doc.rope().to_string(), "x = 1\n");
        assert_eq!(doc.version(), 1);
        assert_eq!(shape(&doc.tree_request().unwrap().wait().tree), fresh_sexp(doc.rope()));
    }

    #[test]
    fn stale_versions_are_refused() {
        let mut doc = Document::new("file:///a.txt", "plaintext", 5, "abc", DocumentLimits::default());
        let change = [ContentChange { range: None, text: "z".into() }];
        let err = doc.apply_changes(5, &change, PositionEncoding::Utf16, DocumentLimits::default()).unwrap_err();
        assert_eq!(err, ChangeError::StaleVersion { got: 5, current: 5 });
        assert_eq!(doc.rope().to_string(), "abc");
    }

    #[test]
    fn binary_and_oversized_documents_have_no_tree() {
        let limits = DocumentLimits { max_parse_bytes: 10 };
        let doc = Document::new("file:///a.py", "python", 1, "x = 1\0\n", limits);
        assert!(doc.is_binary() && doc.tree_request().is_none());
        let mut doc = Document::new("file:///a.py", "python", 1, "x = 1\n", limits);
        assert!(doc.tree_request().is_some());
        let grow = [ContentChange { range: Some((lc(1, 0), lc(1, 0))), text: "y = 22222\n".into() }];
        doc.apply_changes(2, &grow, PositionEncoding::Utf8, limits).unwrap();
        assert!(doc.tree_request().is_none(), "grew past the parse limit");
    }
}
