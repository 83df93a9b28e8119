//! LSP glue for suggestions: `textDocument/inlineCompletion` (LSP 3.18, typed here because tower-lsp 0.20's
//! `lsp-types` predates it), the completion item for clients without inline completion, the `pie/status`
//! notification, and serving a suggestion the user is typing along without generating again.

use crate::warm::Growing;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ropey::Rope;
use serde::{Deserialize, Serialize};
use tower_lsp::lsp_types::{
    CompletionItem, CompletionItemKind, CompletionTextEdit, Documentation, MarkupContent, MarkupKind, Position, Range,
    TextDocumentIdentifier, TextEdit,
};

use crate::document::{to_char_idx, to_line_col, LineCol, PositionEncoding};

pub const INLINE_COMPLETION: &str = "textDocument/inlineCompletion";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InlineCompletionParams {
    pub text_document: TextDocumentIdentifier,
    pub position: Position,
    #[serde(default)]
    pub context: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InlineCompletionList {
    pub items: Vec<InlineCompletionItem>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InlineCompletionItem {
    pub insert_text: String,
    pub range: Range,
}

/// `pie/status`: what the last suggestion cost (sent after each completion request).
pub enum StatusNotification {}

impl tower_lsp::lsp_types::notification::Notification for StatusNotification {
    type Params = serde_json::Value;
    const METHOD: &'static str = "pie/status";
}

/// A suggestion to insert at `position` of the document at `version`.
#[derive(Debug, Clone)]
pub struct Suggestion {
    pub text: String,
    pub position: Position,
}

pub fn inline_list(suggestion: &Suggestion) -> InlineCompletionList {
    let at = suggestion.position;
    InlineCompletionList {
        items: vec![InlineCompletionItem { insert_text: suggestion.text.clone(), range: Range { start: at, end: at } }],
    }
}

/// The suggestion as a completion item: a text edit over the word before the cursor, carrying the whole
/// (possibly multi-line) text, so that clients filter it by the word the user is typing.
/// Markdown documentation and `preselect` only for clients that declare them.
pub fn completion_item(suggestion: &Suggestion, word: (Position, String), caps: &super::caps::ClientCaps) -> CompletionItem {
    let (word_start, word_text) = word;
    let new_text = format!("{word_text}{}", suggestion.text);
    // The first line with text: a suggestion that starts with a line break would have an empty label.
    let first_line = new_text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or_default().to_owned();
    let multi_line = suggestion.text.contains('\n');
    CompletionItem {
        label: if multi_line { format!("{first_line} …") } else { first_line },
        kind: Some(CompletionItemKind::TEXT),
        detail: Some("pie-ls".into()),
        documentation: multi_line.then(|| {
            if caps.markdown_documentation {
                Documentation::MarkupContent(MarkupContent { kind: MarkupKind::Markdown, value: format!("```\n{new_text}\n```") })
            } else {
                Documentation::String(new_text.clone())
            }
        }),
        filter_text: Some(new_text.lines().next().unwrap_or_default().to_owned()),
        sort_text: Some("0".into()),
        preselect: caps.preselect.then_some(true),
        text_edit: Some(CompletionTextEdit::Edit(TextEdit {
            range: Range { start: word_start, end: suggestion.position },
            new_text,
        })),
        ..Default::default()
    }
}

/// The start of the identifier that ends at `position`, and its text.
pub fn word_start(rope: &Rope, position: Position, enc: PositionEncoding) -> (Position, String) {
    let pos = LineCol { line: position.line, character: position.character };
    let Ok(cursor) = to_char_idx(rope, pos, enc) else { return (position, String::new()) };
    let mut start = cursor;
    while start > 0 {
        let c = rope.char(start - 1);
        if !(c.is_alphanumeric() || c == '_' || c == '$') {
            break;
        }
        start -= 1;
    }
    let lc = to_line_col(rope, start, enc);
    (Position { line: lc.line, character: lc.character }, rope.slice(start..cursor).to_string())
}

/// Raises a cancellation flag when dropped: tower-lsp drops a handler's future on `$/cancelRequest`.
pub struct CancelOnDrop(pub Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The last suggestion shown for a document: the text around the cursor when it was made, and the suggestion
/// as extended so far.
pub struct Shown {
    prefix: String,
    suffix: String,
    suggestion: Growing,
}

impl Shown {
    pub fn new(text: &str, cursor: usize, suggestion: Growing) -> Shown {
        Shown { prefix: text[..cursor].to_owned(), suffix: text[cursor..].to_owned(), suggestion }
    }

    /// When the user typed the beginning of the suggestion (or nothing: asked again where it was made) and
    /// nothing else changed, the rest of it as extended so far.
    pub fn continue_with(&self, text: &str, cursor: usize) -> Option<String> {
        if cursor > text.len() || !text.is_char_boundary(cursor) || text[cursor..] != self.suffix {
            return None;
        }
        let typed = text[..cursor].strip_prefix(self.prefix.as_str())?;
        let suggestion = self.suggestion.get();
        let rest = suggestion.strip_prefix(typed)?;
        (!rest.is_empty()).then(|| rest.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typing_along_a_suggestion_serves_the_rest() {
        let growing = Growing::default();
        growing.set("comp");
        let shown = Shown::new("x = \n", 4, growing.clone());
        assert_eq!(shown.continue_with("x = \n", 4).as_deref(), Some("comp"), "asked again where it was made");
        growing.set("compute(1)");
        assert_eq!(shown.continue_with("x = com\n", 7).as_deref(), Some("pute(1)"), "extended in the background");
        assert_eq!(shown.continue_with("x = cam\n", 7), None, "typed something else");
        assert_eq!(shown.continue_with("x = com\ny", 7), None, "text after the cursor changed");
        assert_eq!(shown.continue_with("x = compute(1)\n", 14), None, "nothing left");
    }

    #[test]
    fn the_completion_item_replaces_the_word_being_typed() {
        let rope = Rope::from_str("    resu");
        let (start, word) = word_start(&rope, Position { line: 0, character: 8 }, PositionEncoding::Utf16);
        assert_eq!((start.character, word.as_str()), (4, "resu"));
        let s = Suggestion { text: "lt = 1\nreturn result".into(), position: Position { line: 0, character: 8 } };
        let markdown = super::super::caps::ClientCaps { markdown_documentation: true, preselect: true, ..Default::default() };
        let item = completion_item(&s, (start, word.clone()), &markdown);
        assert!(matches!(&item.documentation, Some(Documentation::MarkupContent(m)) if m.kind == MarkupKind::Markdown));
        assert_eq!(item.preselect, Some(true));
        let Some(CompletionTextEdit::Edit(edit)) = item.text_edit else { panic!() };
        assert_eq!(edit.new_text, "result = 1\nreturn result");
        assert_eq!(item.filter_text.as_deref(), Some("result = 1"));
        // A client that lists no markdown (Emacs 29) gets plain text, and no preselect it did not declare.
        let plain = completion_item(&s, (start, word), &Default::default());
        assert!(matches!(&plain.documentation, Some(Documentation::String(t)) if t == "result = 1\nreturn result"));
        assert_eq!(plain.preselect, None);
    }
}
