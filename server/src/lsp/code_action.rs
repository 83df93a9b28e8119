//! LSP glue for code actions: `textDocument/codeAction` offers extract method (`refactor.extract.function`),
//! disabled with a reason when the selection cannot be extracted, and `codeAction/resolve` renames it with the
//! model's suggestion when one is available.
//!
//! Shape of every handler: take a `PendingSnapshot` under the store lock (cheap: the rope and the tree share
//! structure), release the lock, wait for the tree of that version off the runtime, call `features::extract`,
//! convert byte offsets back to LSP positions.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tower_lsp::jsonrpc::{Error, ErrorCode, Result};
use tower_lsp::lsp_types::{
    CodeAction, CodeActionDisabled, CodeActionKind, CodeActionOrCommand, CodeActionParams, Position, Range, TextEdit,
    Url, WorkspaceEdit,
};

use crate::document::{to_char_range, to_line_col, DocumentStore, LineCol, PositionEncoding};
use crate::features::extract::{self, CheckCommand, ExtractOptions, Extraction, NameSuggester};
use crate::syntax::Language;

/// The code action kind of extract method.
pub const EXTRACT_FUNCTION_KIND: &str = "refactor.extract.function";

/// What a code-action handler needs from a document, taken under the store lock.
pub struct Snapshot {
    pub uri: Url,
    pub version: i32,
    pub rope: ropey::Rope,
    /// The rope's text, built once per request for every action that reads it.
    pub text: String,
    pub tree: Option<tree_sitter::Tree>,
    pub language: Option<Language>,
    pub encoding: PositionEncoding,
}

/// What `codeAction/resolve` gets back in `data`.
#[derive(Serialize, Deserialize)]
struct ResolveData {
    uri: Url,
    version: i32,
    range: Range,
}

/// A snapshot whose tree may still be parsing: taken under the store lock (O(1): the rope and the tree state
/// share structure), made `ready` after the lock is released.
pub struct PendingSnapshot {
    uri: Url,
    version: i32,
    rope: ropey::Rope,
    tree: Option<crate::syntax::TreeRequest>,
    language: Option<Language>,
    encoding: PositionEncoding,
}

impl PendingSnapshot {
    /// Waits for the tree of the snapshot's version (never another version's) and builds the text. Blocking:
    /// call it off the async runtime.
    pub fn ready(self) -> Snapshot {
        Snapshot {
            text: self.rope.to_string(),
            tree: self.tree.map(|request| request.wait().tree.clone()),
            uri: self.uri,
            version: self.version,
            rope: self.rope,
            language: self.language,
            encoding: self.encoding,
        }
    }
}

/// Takes a snapshot of `uri`; fails with `InvalidParams` when the document is not open.
pub fn snapshot(docs: &DocumentStore, uri: &Url, encoding: PositionEncoding) -> Result<PendingSnapshot> {
    let doc = docs.get(uri.as_str()).map_err(|e| invalid_params(e.to_string()))?;
    Ok(PendingSnapshot {
        uri: uri.clone(),
        version: doc.version(),
        rope: doc.rope().clone(),
        tree: doc.tree_request(),
        language: doc.language(),
        encoding,
    })
}

/// The URI a resolve request is about (to take its snapshot).
pub fn resolve_uri(action: &CodeAction) -> Result<Url> {
    Ok(resolve_data(action)?.uri)
}

/// Whether the client's `only` filter admits extract method.
fn wanted(params: &CodeActionParams) -> bool {
    let Some(only) = &params.context.only else { return true };
    only.iter().any(|kind| {
        let k = kind.as_str();
        EXTRACT_FUNCTION_KIND == k || EXTRACT_FUNCTION_KIND.starts_with(&format!("{k}."))
    })
}

/// `textDocument/codeAction`: the extract-method action for the selection, enabled only when the extraction
/// passed the gate. Tree-sitter only, no model call.
pub fn code_actions(snapshot: &Snapshot, params: &CodeActionParams) -> Result<Option<Vec<CodeActionOrCommand>>> {
    if !wanted(params) {
        return Ok(Some(Vec::new()));
    }
    let Some(language) = snapshot.language.filter(|l| extract::supports(*l)) else {
        return Ok(Some(Vec::new()));
    };
    let range = params.range;
    let data = serde_json::to_value(ResolveData { uri: snapshot.uri.clone(), version: snapshot.version, range }).ok();
    let action = match compute(snapshot, language, range, &ExtractOptions::default()) {
        Ok(extraction) => enabled_action(snapshot, &extraction, data),
        Err(Outcome::Refused(reason)) => disabled_action(reason, data),
        Err(Outcome::Error(err)) => return Err(err),
    };
    Ok(Some(vec![CodeActionOrCommand::CodeAction(action)]))
}

/// `codeAction/resolve`: recomputes the extraction on the current document, naming the function with
/// `suggester` when it gives a valid name (the deterministic name otherwise), and optionally running `check`.
pub fn resolve(
    action: CodeAction,
    snapshot: &Snapshot,
    suggester: Option<&dyn NameSuggester>,
    check: Option<&CheckCommand>,
) -> Result<CodeAction> {
    let data = resolve_data(&action)?;
    if data.version != snapshot.version {
        return Err(Error {
            code: ErrorCode::ContentModified,
            message: format!(
                "the document changed (version {} -> {}) since the action was offered; ask for code actions again",
                data.version, snapshot.version
            )
            .into(),
            data: None,
        });
    }
    let Some(language) = snapshot.language.filter(|l| extract::supports(*l)) else {
        return Err(invalid_params("extract method does not support this document's language".to_owned()));
    };
    let file_name = snapshot.uri.path().rsplit('/').next().unwrap_or("main").to_owned();
    let options = ExtractOptions { suggester, check: check.map(|c| (c, file_name.as_str())) };
    let raw_data = action.data.clone();
    match compute(snapshot, language, data.range, &options) {
        Ok(extraction) => Ok(enabled_action(snapshot, &extraction, raw_data)),
        Err(Outcome::Refused(reason)) => Ok(disabled_action(reason, raw_data)),
        Err(Outcome::Error(err)) => Err(err),
    }
}


enum Outcome {
    Refused(String),
    Error(Error),
}

fn compute(snapshot: &Snapshot, language: Language, range: Range, options: &ExtractOptions) -> std::result::Result<Extraction, Outcome> {
    let Some(tree) = &snapshot.tree else {
        return Err(Outcome::Refused("the document has no syntax tree (too large or binary)".to_owned()));
    };
    let rope = &snapshot.rope;
    let (start, end) = to_char_range(rope, line_col(range.start), line_col(range.end), snapshot.encoding)
        .map_err(|e| Outcome::Error(invalid_params(format!("bad range: {e}"))))?;
    let start_byte = rope.char_to_byte(start);
    let end_byte = rope.char_to_byte(end);
    extract::extract_with(&snapshot.text, tree, language, start_byte..end_byte, options).map_err(|r| Outcome::Refused(r.reason))
}

fn enabled_action(snapshot: &Snapshot, extraction: &Extraction, data: Option<serde_json::Value>) -> CodeAction {
    let edits: Vec<TextEdit> = extraction
        .edits
        .iter()
        .map(|e| TextEdit { range: lsp_range(snapshot, e.range.start, e.range.end), new_text: e.new_text.clone() })
        .collect();
    let mut changes = HashMap::new();
    changes.insert(snapshot.uri.clone(), edits);
    CodeAction {
        title: extraction.title(),
        kind: Some(CodeActionKind::new(EXTRACT_FUNCTION_KIND)),
        edit: Some(WorkspaceEdit { changes: Some(changes), ..Default::default() }),
        data,
        ..Default::default()
    }
}

fn disabled_action(reason: String, data: Option<serde_json::Value>) -> CodeAction {
    CodeAction {
        title: "Extract into function".to_owned(),
        kind: Some(CodeActionKind::new(EXTRACT_FUNCTION_KIND)),
        disabled: Some(CodeActionDisabled { reason }),
        data,
        ..Default::default()
    }
}

fn resolve_data(action: &CodeAction) -> Result<ResolveData> {
    let data = action.data.clone().ok_or_else(|| invalid_params("the code action has no data to resolve".to_owned()))?;
    serde_json::from_value(data).map_err(|e| invalid_params(format!("the code action's data is not ours: {e}")))
}

fn lsp_range(snapshot: &Snapshot, start_byte: usize, end_byte: usize) -> Range {
    let rope = &snapshot.rope;
    let pos = |byte: usize| {
        let char_idx = rope.byte_to_char(byte.min(rope.len_bytes()));
        let lc = to_line_col(rope, char_idx, snapshot.encoding);
        Position { line: lc.line, character: lc.character }
    };
    Range { start: pos(start_byte), end: pos(end_byte) }
}

fn line_col(pos: Position) -> LineCol {
    LineCol { line: pos.line, character: pos.character }
}

fn invalid_params(message: String) -> Error {
    Error { code: ErrorCode::InvalidParams, message: message.into(), data: None }
}
