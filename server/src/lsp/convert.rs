//! Conversions between `lsp_types` and the document module's plain types.

use tower_lsp::lsp_types::{Position, TextDocumentContentChangeEvent};

use crate::document::{ContentChange, LineCol};

pub fn line_col(pos: Position) -> LineCol {
    LineCol { line: pos.line, character: pos.character }
}

pub fn content_change(event: TextDocumentContentChangeEvent) -> ContentChange {
    ContentChange { range: event.range.map(|r| (line_col(r.start), line_col(r.end))), text: event.text }
}
