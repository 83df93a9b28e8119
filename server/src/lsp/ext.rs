//! pie-ls extensions to LSP (`pie/*` methods). Documented for users in `docs/lsp-extensions.md`; keep the two in
//! step.

use serde::{Deserialize, Serialize};
use tower_lsp::lsp_types::TextDocumentIdentifier;

/// Request `pie/documentState`: what the server believes a document is.
pub const DOCUMENT_STATE: &str = "pie/documentState";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentStateParams {
    pub text_document: TextDocumentIdentifier,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DocumentState {
    pub uri: String,
    pub version: i32,
    pub text: String,
    /// Lines as LSP counts them (`\n`, `\r\n` and `\r` end a line; a trailing terminator starts an empty line).
    pub line_count: usize,
    pub language_id: String,
    /// ERROR and MISSING nodes in the tree; `null` when the document has no tree (unknown language, binary
    /// content, or larger than `documents.maxParseBytes`).
    pub syntax_errors: Option<usize>,
    /// Wall time of the last (re-)parse in milliseconds; `null` without a tree.
    pub parse_ms: Option<f64>,
    /// The tree-sitter language in use, `null` when none.
    pub syntax_language: Option<String>,
    /// True when the text holds NUL bytes: stored, never parsed nor sent to a model.
    pub binary: bool,
}

/// Request `pie/syntaxTree`, params as `pie/documentState`: the document's tree as an S-expression (`null`
/// without a tree). For debugging and for tests that compare the incremental tree with a fresh parse.
pub const SYNTAX_TREE: &str = "pie/syntaxTree";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SyntaxTreeResult {
    pub uri: String,
    pub version: i32,
    pub sexp: Option<String>,
}

/// Request `pie/cacheStats`, params as `pie/documentState`: what PIE did for this document's warm KV cache
/// (`engine::CacheStats`, counters cumulative since the document was opened).
pub const CACHE_STATS: &str = "pie/cacheStats";

/// Request `pie/cacheCheck`, params as `pie/documentState`: a consistency check of the document's warm cache, for
/// soaks and debugging. Errors as `pie/cacheStats` when the document has no warm cache.
pub const CACHE_CHECK: &str = "pie/cacheCheck";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CacheCheck {
    pub uri: String,
    /// The document version the warm cache was last moved to.
    pub version: i32,
    /// Tokens in the cache's token list.
    pub cached_tokens: usize,
    /// Tokens of a fresh tokenization of the cached prompt.
    pub fresh_tokens: usize,
    /// The cache's token list equals a fresh tokenization of its prompt.
    pub tokens_match: bool,
    /// Index of the first differing token, when they differ.
    pub first_mismatch: Option<usize>,
    /// The session's prompt is the prompt the warm thread built for the document.
    pub prompt_matches: bool,
    /// The warm thread's copy of the document equals the document store's text (and version).
    pub text_matches_document: bool,
}
