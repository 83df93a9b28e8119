//! The demo's headline (`pie-ls-replay --headline FILE`): on one real file, what an edit costs with PIE against a
//! full re-read of the same text, both measured through the real server in the same run, and the suggestion the
//! user gets right after the edit.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use crate::{range_change, LspClient};

/// What the demo types: the start of a new top-level function, left where a suggestion is wanted (the last line,
/// indented inside the `with`). Python, because the default model and the demo file are.
pub const TYPED: &str = "def count_lines(path):\n    \"\"\"Number of lines in the text file at `path`.\"\"\"\n    with open(path) as f:\n        ";

/// The figures of one headline run.
#[derive(Debug, Clone)]
pub struct Headline {
    /// Tokens in the warm cache once the file was read.
    pub tokens: u64,
    /// From `didOpen` to a warm cache (the one full read; the first document also waits for the model to load).
    pub open: Duration,
    /// The line the edit was typed at (0-based).
    pub edit_line: u32,
    /// The server's own wall time for the PIE update (`lastUpdateMs`), the tokens it encoded, and the cached tokens
    /// after the edit it moved by rotation instead of recomputing them.
    pub update_ms: f64,
    pub update_encoded: u64,
    pub update_shifted: u64,
    /// The suggestion asked for right after the edit (none when the model proposed nothing), and how long it took
    /// from the request to the answer.
    pub suggestion: Option<String>,
    pub suggestion_time: Duration,
    /// The same edited text opened from scratch under another URI: the full re-read PIE avoided.
    pub reread: Duration,
    pub reread_tokens: u64,
}

/// The server settings the headline runs under: the defaults, except that the file is read whole at once and the prompt's window around the cursor
/// (`completion.prefixBytes` / `suffixBytes`, 12,000 / 4,000 bytes by default) holds the whole file from any
/// cursor. Otherwise typing in the middle of a 15 kB file also moves the window (lines enter the prompt at the top
/// and leave it at the bottom), which PIE handles as one more edit but which is not the edit being shown, and the
/// re-read would read another prompt than the edited one.
pub fn settings(text: &str) -> Value {
    // The re-read the demo compares the update with is one read of the whole file, the way the server read a file
    // before it read around the cursor first (`completion.firstReadBytes`): that read, in parts, takes longer.
    json!({ "completion": { "prefixBytes": text.len() + 1, "suffixBytes": text.len() + 1, "firstReadBytes": 0 } })
}

/// The leading whole lines of `text`, at most `max_bytes`, cut before a top-level definition so that the document
/// ends where a definition ends (the whole text when it is short enough).
pub fn leading_part(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let (mut before_definition, mut whole_lines, mut offset) = (0, 0, 0);
    for line in text.split_inclusive('\n') {
        if offset > max_bytes {
            break;
        }
        if offset > 0 && is_top_level_definition(line) {
            before_definition = offset;
        }
        offset += line.len();
        if offset <= max_bytes {
            whole_lines = offset;
        }
    }
    &text[..if before_definition > 0 { before_definition } else { whole_lines }]
}

fn is_top_level_definition(line: &str) -> bool {
    ["def ", "class ", "async def "].iter().any(|k| line.starts_with(k))
}

/// The line the demo types at: the top-level definition nearest the middle of the document, so that about half of
/// the file sits after the edit and has to move.
pub fn edit_line(text: &str) -> Option<u32> {
    let lines: Vec<&str> = text.lines().collect();
    let middle = lines.len() / 2;
    (0..lines.len()).filter(|&i| i > 0 && is_top_level_definition(lines[i])).min_by_key(|&i| i.abs_diff(middle)).map(|i| i as u32)
}

/// With a server started with [`settings`]: opens `text`, waits for the cache, types [`TYPED`] before the
/// definition nearest the middle, reads the update's cost from `pie/cacheStats`, asks for a suggestion at the
/// cursor, then closes the document and reads the edited text again from scratch.
pub fn run(lsp: &mut LspClient, text: &str) -> Result<Headline> {
    let Some(line) = edit_line(text) else { bail!("the file has no top-level `def` or `class` after its first line to type before") };
    let uri = "file:///demo/headline.py";
    let started = Instant::now();
    lsp.open(uri, "python", text);
    let before = lsp.wait_warm(uri, Duration::from_secs(600))?;
    let open = started.elapsed();
    let tokens = before["cachedTokens"].as_u64().unwrap_or(0);
    let typed = format!("{TYPED}\n\n\n");
    lsp.edit(uri, vec![range_change((line, 0), (line, 0), &typed)]);
    let after = lsp.cache_stats(uri)?;
    let delta = |key: &str| after[key].as_u64().unwrap_or(0).saturating_sub(before[key].as_u64().unwrap_or(0));
    let cursor_line = line + TYPED.lines().count() as u32 - 1;
    let cursor_character = TYPED.rsplit('\n').next().unwrap_or("").len() as u32;
    let asked = Instant::now();
    let answer = lsp.request(
        "textDocument/inlineCompletion",
        json!({
            "textDocument": { "uri": uri },
            "position": { "line": cursor_line, "character": cursor_character },
            "context": { "triggerKind": 1 },
        }),
    )?;
    let suggestion_time = asked.elapsed();
    let suggestion = first_item_text(&answer);
    let edited = lsp.document_state(uri)?["text"].as_str().unwrap_or_default().to_owned();
    lsp.close(uri);
    let reread_uri = "file:///demo/headline-reread.py";
    let started = Instant::now();
    lsp.open(reread_uri, "python", &edited);
    let reread_stats = lsp.wait_warm(reread_uri, Duration::from_secs(600))?;
    let reread = started.elapsed();
    Ok(Headline {
        tokens,
        open,
        edit_line: line,
        update_ms: after["lastUpdateMs"].as_f64().unwrap_or(f64::NAN),
        update_encoded: delta("encodedTokens"),
        update_shifted: delta("shiftedTokens"),
        suggestion,
        suggestion_time,
        reread,
        reread_tokens: reread_stats["cachedTokens"].as_u64().unwrap_or(0),
    })
}

fn first_item_text(answer: &Value) -> Option<String> {
    let items = answer.get("items").unwrap_or(answer);
    let text = items.get(0)?.get("insertText")?;
    let text = text.as_str().or_else(|| text.get("value").and_then(Value::as_str))?;
    (!text.trim().is_empty()).then(|| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leading_part_ends_before_a_definition() {
        let text = "import os\n\ndef a():\n    return 1\n\ndef b():\n    return 2\n";
        assert_eq!(leading_part(text, 1000), text);
        assert_eq!(leading_part(text, 40), "import os\n\ndef a():\n    return 1\n\n");
        // No definition to cut before: whole lines up to the limit.
        assert_eq!(leading_part("x = 1\ny = 2\n", 8), "x = 1\n");
    }

    #[test]
    fn the_edit_goes_before_the_definition_nearest_the_middle() {
        let text = "import os\ndef a():\n    pass\ndef b():\n    pass\n    pass\n    pass\ndef c():\n    pass\n";
        assert_eq!(edit_line(text), Some(3));
        assert_eq!(edit_line("def only():\n    pass\n"), None);
    }
}
