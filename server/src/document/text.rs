//! One open document: text, version, language and syntax tree, changed only through `apply_changes`.

use ropey::Rope;
use tree_sitter::InputEdit;

use super::position::{to_char_range, LineCol, PositionEncoding, PositionError};
use crate::syntax::{advance_point, ts_point_at, Language, SyntaxTree};

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
    syntax: Option<SyntaxTree>,
    /// Set when the text holds a NUL byte: such a document is stored but never parsed nor sent to a model.
    binary: bool,
}

impl Document {
    pub fn new(uri: &str, language_id: &str, version: i32, text: &str, limits: DocumentLimits) -> Document {
        let rope = Rope::from_str(text);
        let language = Language::detect(language_id, uri);
        let binary = text.as_bytes().contains(&0);
        let mut doc = Document { language_id: language_id.to_owned(), language, version, rope, syntax: None, binary };
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
    pub fn syntax(&self) -> Option<&SyntaxTree> {
        self.syntax.as_ref()
    }
    pub fn is_binary(&self) -> bool {
        self.binary
    }

    /// Applies one `didChange` notification atomically and returns the edits in byte offsets.
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
        let saved_rope = self.rope.clone();
        let saved_tree = self.syntax.as_ref().map(|it| it.tree().clone());
        let mut edits = Vec::with_capacity(changes.len());
        let mut whole_replacement = false;
        for (index, change) in changes.iter().enumerate() {
            let applied = match change.range {
                None => {
                    whole_replacement = true;
                    let old_len = self.rope.len_bytes();
                    self.rope = Rope::from_str(&change.text);
                    self.binary = change.text.as_bytes().contains(&0);
                    Ok(ByteEdit { start_byte: 0, old_end_byte: old_len, new_text: change.text.clone() })
                }
                Some((start, end)) => self.apply_ranged(start, end, &change.text, enc),
            };
            match applied {
                Ok(edit) => edits.push(edit),
                Err(source) => {
                    self.rope = saved_rope;
                    if let (Some(syntax), Some(tree)) = (self.syntax.as_mut(), saved_tree) {
                        syntax.reset(&self.rope, Some(tree));
                    }
                    return Err(ChangeError::BadRange { index, source });
                }
            }
        }
        self.version = version;
        if whole_replacement {
            self.syntax = None;
        }
        let parse_allowed = self.parse_allowed(limits);
        match self.syntax.as_mut() {
            Some(syntax) if parse_allowed => syntax.reparse(&self.rope),
            _ => self.refresh_syntax(limits),
        }
        Ok(edits)
    }

    fn apply_ranged(
        &mut self,
        start: LineCol,
        end: LineCol,
        text: &str,
        enc: PositionEncoding,
    ) -> Result<ByteEdit, PositionError> {
        let (start_char, end_char) = to_char_range(&self.rope, start, end, enc)?;
        let start_byte = self.rope.char_to_byte(start_char);
        let old_end_byte = self.rope.char_to_byte(end_char);
        if let Some(syntax) = self.syntax.as_mut() {
            let start_position = ts_point_at(&self.rope, start_byte);
            let removed = self.rope.slice(start_char..end_char).to_string();
            syntax.edit(&InputEdit {
                start_byte,
                old_end_byte,
                new_end_byte: start_byte + text.len(),
                start_position,
                old_end_position: advance_point(start_position, &removed),
                new_end_position: advance_point(start_position, text),
            });
        }
        self.rope.remove(start_char..end_char);
        self.rope.insert(start_char, text);
        if text.as_bytes().contains(&0) {
            self.binary = true;
        }
        Ok(ByteEdit { start_byte, old_end_byte, new_text: text.to_owned() })
    }

    fn parse_allowed(&self, limits: DocumentLimits) -> bool {
        self.language.is_some() && !self.binary && self.rope.len_bytes() <= limits.max_parse_bytes
    }

    /// Creates or drops the tree so that it exists exactly when parsing is allowed.
    fn refresh_syntax(&mut self, limits: DocumentLimits) {
        match (self.language, self.parse_allowed(limits)) {
            (Some(language), true) => {
                if self.syntax.is_none() {
                    self.syntax = Some(SyntaxTree::new(language, &self.rope));
                }
            }
            _ => self.syntax = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lc(line: u32, character: u32) -> LineCol {
        LineCol { line, character }
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
        assert_eq!(doc.syntax().unwrap().tree().root_node().to_sexp(), {
            let fresh = SyntaxTree::new(Language::Python, doc.rope());
            fresh.tree().root_node().to_sexp()
        });
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
        assert!(doc.is_binary() && doc.syntax().is_none());
        let mut doc = Document::new("file:///a.py", "python", 1, "x = 1\n", limits);
        assert!(doc.syntax().is_some());
        let grow = [ContentChange { range: Some((lc(1, 0), lc(1, 0))), text: "y = 22222\n".into() }];
        doc.apply_changes(2, &grow, PositionEncoding::Utf8, limits).unwrap();
        assert!(doc.syntax().is_none(), "grew past the parse limit");
    }
}
