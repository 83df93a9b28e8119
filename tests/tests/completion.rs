//! Suggestions from the warm cache, through the real server with the real default model
//! (Qwen2.5-Coder-0.5B, fill-in-the-middle): typing keeps the per-keystroke encoding small, suggestions are
//! well-formed, a keystroke cancels a suggestion in flight, no suggestion for an outdated version is shown, and
//! typing along a suggestion is served without generating.

use std::time::{Duration, Instant};

use pie_ls_harness::{default_model, range_change, LspClient};
use serde_json::{json, Value};

const URI: &str = "file:///w/geometry.py";

const SOURCE: &str = r#"import math


class Point:
    def __init__(self, x, y):
        self.x = x
        self.y = y

    def distance_to(self, other):
        dx = self.x - other.x
        dy = self.y - other.y
        return math.sqrt(dx * dx + dy * dy)


def centroid(points):
    n = len(points)
    sx = sum(p.x for p in points)
    sy = sum(p.y for p in points)
    return Point(sx / n, sy / n)


def perimeter(points):

"#;

fn server() -> LspClient {
    LspClient::builder()
        .model(&default_model())
        .init_options(json!({ "model": { "threads": 2 }, "completion": { "maxTokens": 48 } }))
        .spawn()
        .unwrap()
}

fn wait_warm(lsp: &mut LspClient) -> Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(stats) = lsp.cache_stats(URI) {
            if pie_ls_harness::is_read(&stats) {
                return stats;
            }
        }
        assert!(Instant::now() < deadline, "never warm; stderr: {}", lsp.stderr());
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn inline(lsp: &mut LspClient, line: u32, character: u32) -> Value {
    lsp.request(
        "textDocument/inlineCompletion",
        json!({ "textDocument": { "uri": URI }, "position": { "line": line, "character": character }, "context": { "triggerKind": 2 } }),
    )
    .unwrap()
}

#[test]
fn typing_then_pausing_gives_a_well_formed_suggestion_from_a_warm_cache() {
    let mut lsp = server();
    assert!(lsp.initialize_result()["capabilities"]["inlineCompletionProvider"].is_object());
    lsp.open(URI, "python", SOURCE);
    let opened = wait_warm(&mut lsp);
    let file_tokens = opened["cachedTokens"].as_u64().unwrap();

    // Type the body's first line keystroke by keystroke, checking the cache after each one.
    let line = SOURCE.lines().position(|l| l == "def perimeter(points):").unwrap() as u32 + 1;
    let typed = "    total = 0";
    let mut last = opened.clone();
    for (i, ch) in typed.chars().enumerate() {
        lsp.edit(URI, vec![range_change((line, i as u32), (line, i as u32), &ch.to_string())]);
        let stats = lsp.cache_stats(URI).unwrap();
        let encoded = stats["encodedTokens"].as_u64().unwrap() - last["encodedTokens"].as_u64().unwrap();
        assert!(encoded <= 24, "keystroke {i} encoded {encoded} tokens (file {file_tokens}): {stats}");
        last = stats;
    }
    assert_eq!(last["fullRecomputes"], 0);

    // Newline and indentation, then ask for a suggestion.
    lsp.edit(URI, vec![range_change((line, typed.len() as u32), (line, typed.len() as u32), "\n    ")]);
    let result = inline(&mut lsp, line + 1, 4);
    let items = result["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{result}");
    let text = items[0]["insertText"].as_str().unwrap();
    assert!(!text.trim().is_empty(), "{result}");
    assert_eq!(items[0]["range"]["start"], json!({ "line": line + 1, "character": 4 }));
    assert!(!text.contains("<|fim"), "no special tokens leak into suggestions: {text:?}");
    println!("suggestion after `total = 0` in perimeter():\n{text}");
    let status = lsp.wait_notification("pie/status", Duration::from_secs(5)).unwrap();
    assert_eq!(status["uri"], URI);
    assert!(status["encodedTokens"].as_u64().unwrap() < file_tokens / 4, "a warm request re-reads little: {status}");
    assert!(status["generatedTokens"].as_u64().unwrap() > 0, "{status}");
    assert!(status["firstTokenMs"].as_f64().is_some(), "{status}");

    // Typing the suggestion's first character serves the rest without generating.
    let first = text.chars().next().unwrap();
    lsp.edit(URI, vec![range_change((line + 1, 4), (line + 1, 4), &first.to_string())]);
    let rest = inline(&mut lsp, line + 1, 4 + first.len_utf16() as u32);
    // The rest of what was shown, and whatever the background extension added to it since.
    let rest_text = rest["items"][0]["insertText"].as_str().unwrap_or_default();
    assert!(rest_text.starts_with(&text[first.len_utf8()..]), "{rest} after {text:?}");
    let status = lsp.wait_notification("pie/status", Duration::from_secs(5)).unwrap();
    assert_eq!(status["generatedTokens"], 0, "{status}");
}

#[test]
fn completion_items_carry_the_suggestion_as_a_text_edit() {
    let mut lsp = server();
    lsp.open(URI, "python", SOURCE);
    wait_warm(&mut lsp);
    let line = SOURCE.lines().position(|l| l == "def perimeter(points):").unwrap() as u32 + 1;
    lsp.edit(URI, vec![range_change((line, 0), (line, 0), "    tot")]);
    let result = lsp
        .request("textDocument/completion", json!({ "textDocument": { "uri": URI }, "position": { "line": line, "character": 7 } }))
        .unwrap();
    let item = &result["items"][0];
    let edit = &item["textEdit"];
    assert_eq!(edit["range"]["start"], json!({ "line": line, "character": 4 }), "{result}");
    assert_eq!(edit["range"]["end"], json!({ "line": line, "character": 7 }), "{result}");
    let new_text = edit["newText"].as_str().unwrap();
    assert!(new_text.starts_with("tot") && new_text.len() > 3, "{result}");
}

#[test]
fn a_keystroke_cancels_the_suggestion_in_flight_and_stale_results_are_never_shown() {
    let mut lsp = server();
    lsp.open(URI, "python", SOURCE);
    wait_warm(&mut lsp);
    let line = SOURCE.lines().position(|l| l == "def perimeter(points):").unwrap() as u32 + 1;
    lsp.edit(URI, vec![range_change((line, 0), (line, 0), "    ")]);
    let id = lsp.send_request(
        "textDocument/inlineCompletion",
        json!({ "textDocument": { "uri": URI }, "position": { "line": line, "character": 4 } }),
    );
    std::thread::sleep(Duration::from_millis(150));
    let started = Instant::now();
    lsp.edit(URI, vec![range_change((line, 4), (line, 4), "r")]);
    let result = lsp.wait_response(id, Duration::from_secs(60)).unwrap();
    assert_eq!(result["items"], json!([]), "a suggestion for an outdated version must not be shown: {result}");
    assert!(started.elapsed() < Duration::from_secs(10), "cancellation took {:?}", started.elapsed());

    // $/cancelRequest works too: the request ends with RequestCancelled.
    let id = lsp.send_request(
        "textDocument/inlineCompletion",
        json!({ "textDocument": { "uri": URI }, "position": { "line": line, "character": 5 } }),
    );
    lsp.cancel(id);
    let err = lsp.wait_response(id, Duration::from_secs(60));
    assert!(matches!(&err, Err(e) if e.code == -32800) || matches!(&err, Ok(v) if v["items"] == json!([]) || v["items"].is_array()), "{err:?}");
    // And the server is still serving.
    let state = lsp.document_state(URI).unwrap();
    assert!(state["text"].as_str().unwrap().contains("    r"));
}

#[test]
fn code_recently_edited_in_another_document_joins_the_prompt_without_rereading_this_one() {
    let mut lsp = server();
    lsp.open(URI, "python", SOURCE);
    let alone = wait_warm(&mut lsp);
    let other = "file:///w/units.py";
    lsp.open(other, "python", "def to_metres(feet):\n    return feet * 0.3048\n");
    lsp.edit(other, vec![range_change((2, 0), (2, 0), "\ndef to_feet(metres):\n    return metres / 0.3048\n")]);
    // The next keystroke here brings the other file's chunk in front of this prompt, by a PIE update.
    let line = SOURCE.lines().position(|l| l == "def perimeter(points):").unwrap() as u32 + 1;
    lsp.edit(URI, vec![range_change((line, 0), (line, 0), "    ")]);
    let with_context = lsp.cache_stats(URI).unwrap();
    let grown = with_context["cachedTokens"].as_u64().unwrap() - alone["cachedTokens"].as_u64().unwrap();
    assert!(grown >= 20, "the other document's code is in the prompt: {alone} -> {with_context}");
    // What was encoded for the new text: the bounded correction and the idle refresh re-encode tokens that were
    // already cached (counted apart, and bounded per update), so they are not reading this document again.
    let delta = |key: &str| with_context[key].as_u64().unwrap() - alone[key].as_u64().unwrap();
    let encoded = delta("encodedTokens") - delta("correctionTokens") - delta("refreshedTokens");
    assert!(encoded < alone["cachedTokens"].as_u64().unwrap() / 2, "this document was not re-read: {encoded} new tokens encoded: {alone} -> {with_context}");
    let corrected = delta("correctionTokens");
    // Bounded per update: the keystroke windows, plus, when the other file's chunk or the cursor's move is a large
    // edit, at most `correctionLargeEditTokens` (128) after each change (the chunk, and the cursor leaving and
    // arriving).
    assert!(corrected <= 2 * 48 + 3 * 128, "the correction stays bounded per update: {corrected} tokens");
    assert_eq!(with_context["fullRecomputes"], 0);
    let result = inline(&mut lsp, line, 4);
    assert!(result["items"].as_array().is_some_and(|items| !items.is_empty()), "{result}");
}

#[test]
fn the_first_suggestion_comes_in_time_and_is_extended_in_the_background() {
    // A first-suggestion time of 1 ms: the answer is the first piece of text, the rest comes by extension. The
    // extension ends at the time budget too; a generous one keeps a loaded machine from ending it early.
    let mut lsp = LspClient::builder()
        .model(&default_model())
        .capabilities(json!({ "experimental": { "pieStatusNotification": true } }))
        .init_options(json!({ "model": { "threads": 2 }, "completion": { "maxTokens": 48, "firstSuggestionMs": 1, "timeBudgetMs": 600000 } }))
        .spawn()
        .unwrap();
    lsp.open(URI, "python", SOURCE);
    wait_warm(&mut lsp);
    let line = SOURCE.lines().position(|l| l == "def perimeter(points):").unwrap() as u32 + 1;
    lsp.edit(URI, vec![range_change((line, 0), (line, 0), "    total = 0\n    ")]);
    let first = inline(&mut lsp, line + 1, 4);
    let first_text = first["items"][0]["insertText"].as_str().unwrap_or_default().to_owned();
    assert!(!first_text.is_empty(), "{first}");
    let status = lsp.wait_notification("pie/status", Duration::from_secs(5)).unwrap();
    assert!(status["generatedTokens"].as_u64().unwrap() < 48, "answered before the whole suggestion: {status}");
    // Asking again at the same place (the user paused) serves the suggestion as extended meanwhile. The cache
    // query waits in the warm thread's queue until the extension ended.
    lsp.cache_stats(URI).unwrap();
    let again = inline(&mut lsp, line + 1, 4);
    let extended = again["items"][0]["insertText"].as_str().unwrap_or_default();
    assert!(extended.starts_with(&first_text) && extended.len() > first_text.len(), "{first_text:?} was not extended: {again}");
    let status = lsp.wait_notification("pie/status", Duration::from_secs(5)).unwrap();
    assert_eq!(status["generatedTokens"], 0, "served from the shown suggestion: {status}");
    println!("first {first_text:?}, extended {extended:?}");
}
