//! LSP glue for the actions that run the user's code: self-debug (`quickfix`, "Fix so that test_x passes") and
//! performance edits (`refactor.rewrite`, "Find a faster version of `f`").
//!
//! Offering is cheap (tree-sitter only, nothing runs). The work runs in `codeAction/resolve`, which the client
//! sends when the user picks the action: off the async runtime, reporting `$/progress` (cancellable), and stopped
//! (every process group killed) by `$/cancelRequest` or `window/workDoneProgress/cancel`. The resolved action
//! carries an edit only when verification passed; otherwise it comes back disabled with the reason, and
//! `data.result` holds the evidence either way (for clients that show it, and for tests).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tower_lsp::jsonrpc::{Error, ErrorCode, Result};
use tower_lsp::lsp_types::{
    CodeAction, CodeActionDisabled, CodeActionKind, CodeActionOrCommand, CodeActionParams, Position, Range, TextEdit, Url,
    WorkspaceEdit,
};

use super::code_action::Snapshot;
use crate::document::{to_char_range, to_line_col, LineCol, PositionEncoding};
use crate::features::code::{function_at, is_test_function, test_at};
use crate::syntax::Language;

pub const SELF_DEBUG_KIND: &str = "quickfix";
pub const FASTER_KIND: &str = "refactor.rewrite";

/// What a verified action's `data` holds between the offer and the resolve.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionData {
    /// `"selfDebug"` or `"faster"`.
    pub action: String,
    pub uri: Url,
    pub version: i32,
    /// The test (self-debug) or the function (faster).
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// Filled by the resolve: what was tried and what was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
}

impl ActionData {
    pub fn of(action: &CodeAction) -> Option<ActionData> {
        let data: ActionData = serde_json::from_value(action.data.clone()?).ok()?;
        matches!(data.action.as_str(), "selfDebug" | "faster").then_some(data)
    }
}

fn wanted(params: &CodeActionParams, kind: &str) -> bool {
    let Some(only) = &params.context.only else { return true };
    only.iter().any(|k| kind == k.as_str() || kind.starts_with(&format!("{}.", k.as_str())))
}

fn self_debug_language(lang: Language) -> bool {
    matches!(lang, Language::Python | Language::Rust | Language::JavaScript | Language::Go)
}

/// The self-debug and faster-version offers at the cursor (no code runs here).
pub fn offers(snapshot: &Snapshot, params: &CodeActionParams, model: std::result::Result<(), String>) -> Vec<CodeActionOrCommand> {
    let mut out = Vec::new();
    // A selection asks for a selection's actions (extract method); these work on the function or test at the
    // cursor, so they are offered for a bare cursor, or for a diagnostic.
    if params.range.start != params.range.end && params.context.diagnostics.is_empty() {
        return out;
    }
    let (Some(lang), Some(tree)) = (snapshot.language, &snapshot.tree) else { return out };
    let text = &snapshot.text;
    let Ok((start, _)) = to_char_range(&snapshot.rope, lc(params.range.start), lc(params.range.start), snapshot.encoding) else { return out };
    let byte = snapshot.rope.char_to_byte(start);
    let disabled = model.err().map(|reason| CodeActionDisabled { reason: format!("needs the model: {reason}") });
    let data = |action: &str, name: &str, class: Option<String>| {
        serde_json::to_value(ActionData { action: action.into(), uri: snapshot.uri.clone(), version: snapshot.version, name: name.into(), class, result: None }).ok()
    };
    if wanted(params, SELF_DEBUG_KIND) && self_debug_language(lang) {
        if let Some(test) = test_at(lang, &text, tree, byte) {
            out.push(CodeActionOrCommand::CodeAction(CodeAction {
                title: format!("Fix so that {} passes", test.name),
                kind: Some(CodeActionKind::QUICKFIX),
                diagnostics: Some(params.context.diagnostics.clone()).filter(|d| !d.is_empty()),
                disabled: disabled.clone(),
                data: data("selfDebug", &test.name, test.class),
                ..Default::default()
            }));
        }
    }
    if wanted(params, FASTER_KIND) && lang == Language::Python {
        if let Some(f) = function_at(lang, &text, tree, byte).filter(|f| f.class.is_none() && !is_test_function(lang, &text, tree, f)) {
            out.push(CodeActionOrCommand::CodeAction(CodeAction {
                title: format!("Find a faster version of `{}`", f.name),
                kind: Some(CodeActionKind::new(FASTER_KIND)),
                disabled,
                data: data("faster", &f.name, None),
                ..Default::default()
            }));
        }
    }
    out
}

/// Where a document lives: its workspace root (the folder that holds it, or its own folder) and its path there.
pub fn locate(uri: &Url, roots: &[PathBuf]) -> Result<(PathBuf, PathBuf)> {
    let path = uri.to_file_path().map_err(|_| invalid_params(format!("{uri} is not a file on disk; save it in a folder first")))?;
    let root = roots
        .iter()
        .filter(|r| path.starts_with(r))
        .max_by_key(|r| r.as_os_str().len())
        .cloned()
        .or_else(|| path.parent().map(Path::to_path_buf))
        .ok_or_else(|| invalid_params(format!("{uri} has no folder")))?;
    let rel = path.strip_prefix(&root).map(Path::to_path_buf).unwrap_or_else(|_| path.file_name().map(PathBuf::from).unwrap_or_default());
    Ok((root, rel))
}

/// The open documents under `root`, as overlays for the scratch copy.
pub fn overlays(open: &[(Url, String)], root: &Path) -> Vec<(PathBuf, String)> {
    open.iter()
        .filter_map(|(uri, text)| {
            let path = uri.to_file_path().ok()?;
            Some((path.strip_prefix(root).ok()?.to_path_buf(), text.clone()))
        })
        .collect()
}

/// A workspace edit of the file `root/rel`: `edits` are byte ranges of `original` and their new text.
pub fn file_edit(root: &Path, rel: &Path, original: &str, edits: &[(std::ops::Range<usize>, String)], encoding: PositionEncoding) -> Result<(Url, WorkspaceEdit)> {
    let uri = Url::from_file_path(root.join(rel)).map_err(|_| server_error(format!("{} is not a valid path", rel.display())))?;
    let rope = ropey::Rope::from_str(original);
    let pos = |byte: usize| {
        let lc = to_line_col(&rope, rope.byte_to_char(byte.min(rope.len_bytes())), encoding);
        Position { line: lc.line, character: lc.character }
    };
    let edits = edits.iter().map(|(range, new_text)| TextEdit { range: Range { start: pos(range.start), end: pos(range.end) }, new_text: new_text.clone() }).collect();
    let mut changes = HashMap::new();
    changes.insert(uri.clone(), edits);
    Ok((uri, WorkspaceEdit { changes: Some(changes), ..Default::default() }))
}

/// The resolved action carrying a verified edit and its evidence.
pub fn accepted(mut action: CodeAction, data: ActionData, edit: WorkspaceEdit, result: serde_json::Value) -> CodeAction {
    action.edit = Some(edit);
    action.disabled = None;
    action.data = serde_json::to_value(ActionData { result: Some(result), ..data }).ok();
    action
}

/// The resolved action when verification found nothing to offer.
pub fn refused(mut action: CodeAction, data: &ActionData, reason: &str, result: serde_json::Value) -> CodeAction {
    action.edit = None;
    action.disabled = Some(CodeActionDisabled { reason: reason.to_owned() });
    action.data = serde_json::to_value(ActionData { result: Some(result), ..data.clone() }).ok();
    action
}

/// Raises the flag when dropped: a resolve future dropped by `$/cancelRequest` stops its blocking work.
pub struct CancelOnDrop(pub Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn lc(p: Position) -> LineCol {
    LineCol { line: p.line, character: p.character }
}

pub fn invalid_params(message: String) -> Error {
    Error { code: ErrorCode::InvalidParams, message: message.into(), data: None }
}

pub fn server_error(message: String) -> Error {
    Error { code: ErrorCode::InternalError, message: message.into(), data: None }
}

pub fn content_modified(message: String) -> Error {
    Error { code: ErrorCode::ContentModified, message: message.into(), data: None }
}
