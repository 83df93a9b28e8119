//! All open documents, keyed by URI.

use std::collections::HashMap;

use super::text::{ByteEdit, ChangeError, ContentChange, Document, DocumentLimits};
use super::PositionEncoding;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("document {0} is not open (send textDocument/didOpen first)")]
    NotOpen(String),
    #[error("{uri}: {source}")]
    Change { uri: String, source: ChangeError },
}

#[derive(Default)]
pub struct DocumentStore {
    docs: HashMap<String, Document>,
}

impl DocumentStore {
    /// Opens (or, when the client re-opens without closing, replaces) a document. Returns whether one was replaced.
    pub fn open(&mut self, uri: &str, language_id: &str, version: i32, text: &str, limits: DocumentLimits) -> bool {
        let doc = Document::new(uri, language_id, version, text, limits);
        self.docs.insert(uri.to_owned(), doc).is_some()
    }

    pub fn close(&mut self, uri: &str) -> Result<(), StoreError> {
        self.docs.remove(uri).map(drop).ok_or_else(|| StoreError::NotOpen(uri.to_owned()))
    }

    pub fn get(&self, uri: &str) -> Result<&Document, StoreError> {
        self.docs.get(uri).ok_or_else(|| StoreError::NotOpen(uri.to_owned()))
    }

    pub fn change(
        &mut self,
        uri: &str,
        version: i32,
        changes: &[ContentChange],
        enc: PositionEncoding,
        limits: DocumentLimits,
    ) -> Result<Vec<ByteEdit>, StoreError> {
        let doc = self.docs.get_mut(uri).ok_or_else(|| StoreError::NotOpen(uri.to_owned()))?;
        doc.apply_changes(version, changes, enc, limits).map_err(|source| StoreError::Change { uri: uri.to_owned(), source })
    }

    /// Every open document, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Document)> {
        self.docs.iter().map(|(uri, doc)| (uri.as_str(), doc))
    }

    /// Every open document's URI and text (ropes are cheap to clone; the text is built once per document).
    pub fn texts(&self) -> Vec<(String, String)> {
        self.docs.iter().map(|(uri, doc)| (uri.clone(), doc.rope().to_string())).collect()
    }

    pub fn len(&self) -> usize {
        self.docs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }
}
