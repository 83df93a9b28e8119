//! The warm KV cache through the real server: edits reach the engine in order, each keystroke encodes a handful
//! of tokens instead of the file while the text after the cursor is moved by rotation (with the default FIM
//! model, whose prompt holds the text on both sides of the cursor), and model problems are clear errors that
//! leave the document machinery working (with the small test model).

use std::time::{Duration, Instant};

use pie_ls_harness::{default_model, range_change, test_model, LspClient};
use serde_json::{json, Value};

const URI: &str = "file:///w/stats.py";

/// Held by the test that counts the idle refresh's tokens against its per-minute CPU budget and by the heavy
/// default-model tests, so that they never run side by side on the 2 cores: beside two such tests, the catch-up
/// test saw its 512 + 32 tokens exceeded (640 refreshed in all, 2026-12-07; not diagnosed yet).
static TIMING_SENSITIVE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    TIMING_SENSITIVE.lock().unwrap_or_else(|p| p.into_inner())
}

fn source() -> String {
    helpers(12)
}

fn helpers(n: usize) -> String {
    let mut text = String::from("import math\n\n");
    for i in 0..n {
        text.push_str(&format!(
            "def helper_{i}(values, scale={i}):\n    \"\"\"Scaled mean of the values.\"\"\"\n    total = sum(v * scale for v in values)\n    return total / max(len(values), 1)\n\n\n"
        ));
    }
    text
}

/// Waits until the document is warm (the model loads and reads the file in the background).
fn warm_stats(lsp: &mut LspClient, uri: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        match lsp.cache_stats(uri) {
            Ok(stats) if pie_ls_harness::is_read(&stats) => return stats,
            Ok(_) | Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            other => panic!("document never became warm: {other:?}\nstderr: {}", lsp.stderr()),
        }
    }
}

#[test]
fn typing_encodes_only_the_edit_and_reuses_the_rest() {
    // The CPU budget of the refresh is lifted so that only its per-pause token budget (256 here) binds (a loaded
    // machine would otherwise spend the CPU budget first). The bounded correction is widened to 16 + 16 (the
    // default is 8 + 0), to check that it stays bounded.
    let mut lsp = LspClient::builder()
        .model(&default_model())
        .init_options(json!({ "model": { "refreshCpuSecondsPerMinute": 600, "refreshTokensPerPause": 256, "correctionTokens": 16, "correctionTailTokens": 16 } }))
        .spawn()
        .unwrap();
    let text = source();
    lsp.open(URI, "python", &text);
    let opened = warm_stats(&mut lsp, URI);
    let file_tokens = opened["cachedTokens"].as_u64().unwrap();
    assert!(file_tokens > 300, "{opened}");

    // The first keystroke in the middle of the file also moves the cursor marker there (the text between the old
    // and the new cursor position crosses the marker and is encoded once); typing after it is what is measured.
    let line = 20u32;
    lsp.edit(URI, vec![range_change((line, 0), (line, 0), "#")]);
    let moved = lsp.cache_stats(URI).unwrap();
    let typed = " note";
    for (i, ch) in typed.chars().enumerate() {
        let col = 1 + i as u32;
        lsp.edit(URI, vec![range_change((line, col), (line, col), &ch.to_string())]);
    }
    let after = lsp.cache_stats(URI).unwrap();
    let state = lsp.document_state(URI).unwrap();
    assert!(state["text"].as_str().unwrap().lines().nth(line as usize).unwrap().starts_with("# note"));
    let updates = after["updates"].as_u64().unwrap() - moved["updates"].as_u64().unwrap();
    assert!((1..=typed.len() as u64).contains(&updates), "keystrokes fold into at most one update each: {after}");
    let encoded = after["encodedTokens"].as_u64().unwrap() - moved["encodedTokens"].as_u64().unwrap();
    // Per keystroke: the edit's few tokens, and the bounded correction (a window after the edit and the prompt's
    // tail, 16 + 16 here), never the file.
    let corrected = after["correctionTokens"].as_u64().unwrap() - moved["correctionTokens"].as_u64().unwrap();
    assert!(corrected > 0 && corrected <= 40 * typed.len() as u64, "correction per keystroke is bounded: {after}");
    assert!(encoded <= (16 + 40) * typed.len() as u64, "{encoded} tokens encoded for {} keystrokes (file: {file_tokens}): {after}", typed.len());
    assert!(encoded < file_tokens / 4, "typing must not re-read the file: {encoded} of {file_tokens}");
    let shifted = after["shiftedTokens"].as_u64().unwrap() - moved["shiftedTokens"].as_u64().unwrap();
    assert!(shifted > file_tokens / 4, "the text after the cursor moved by rotation, not re-encoding: {after}");
    assert!(after["reusedTokens"].as_u64().unwrap() > file_tokens / 2, "{after}");
    assert_eq!(after["fullRecomputes"], 0, "{after}");

    // Idle: stale tokens are re-encoded in the background, nearest to the edit first, up to the per-pause budget
    // (256 tokens, set above), and then the server stops.
    let stale = after["staleTokens"].as_u64().unwrap();
    assert!(stale > 256, "the edit left the suffix stale: {after}");
    let deadline = Instant::now() + Duration::from_secs(120);
    let refreshed = loop {
        let stats = lsp.cache_stats(URI).unwrap();
        let refreshed = stats["refreshedTokens"].as_u64().unwrap() - after["refreshedTokens"].as_u64().unwrap();
        if refreshed >= 256 {
            break stats;
        }
        assert!(Instant::now() < deadline, "idle refresh never used its budget: {stats}");
        std::thread::sleep(Duration::from_millis(250));
    };
    std::thread::sleep(Duration::from_secs(3));
    let quiet = lsp.cache_stats(URI).unwrap();
    assert_eq!(quiet["refreshedTokens"], refreshed["refreshedTokens"], "the refresh stops at its budget: {quiet}");
    assert!(quiet["staleTokens"].as_u64().unwrap() < stale, "{quiet}");
    assert!(quiet["nearestStaleDistance"].as_u64().unwrap() >= 256, "nearest-first: the tokens right after the edit went first: {quiet}");

    // Closing drops the cache.
    lsp.close(URI);
    let err = lsp.cache_stats(URI).unwrap_err();
    assert!(err.message.contains("no warm cache"), "{err}");
}

/// Deletes helpers 0-3 (lines 2-25 of `long_source`, ~190 tokens) from a ~1.5k-token file; returns the cache
/// figures right after the edit is applied.
fn delete_a_block(lsp: &mut LspClient, uri: &str) -> Value {
    lsp.edit(uri, vec![range_change((2, 0), (26, 0), "")]);
    let state = lsp.document_state(uri).unwrap();
    assert!(state["text"].as_str().unwrap().contains("def helper_4(") && !state["text"].as_str().unwrap().contains("def helper_3("));
    lsp.cache_stats(uri).unwrap()
}

/// ~1.5k tokens: a block deleted near the top leaves a stale run longer than the catch-up.
fn long_source() -> String {
    helpers(32)
}

#[test]
fn a_deleted_block_is_caught_up_at_the_next_pause() {
    let _serial = serial();
    // Default settings: the idle refresh may do 32 tokens a pause and 3 CPU-s a minute, which would leave nearly
    // all of the run after a deleted block stale; the deletion earns a catch-up of 512 more (the default), nearest
    // first, and then the refresh stops.
    let uri = "file:///w/catch_up.py";
    let mut lsp = LspClient::builder().model(&default_model()).spawn().unwrap();
    lsp.open(uri, "python", &long_source());
    let opened = warm_stats(&mut lsp, uri);
    assert!(opened["cachedTokens"].as_u64().unwrap() > 1000, "{opened}");
    // The ~5 kB file was read in parts; the read ends only once what it left stale is settled (until then its
    // settling would take the deletion's stale run too, outside the budget checked here).
    assert_eq!((opened["reading"].as_bool(), opened["staleTokens"].as_u64()), (Some(false), Some(0)), "{opened}");
    let after = delete_a_block(&mut lsp, uri);
    let stale = after["staleTokens"].as_u64().unwrap();
    assert!(stale > 700, "the deletion left the rest of the file stale: {after}");
    let refreshed_since = |stats: &Value| stats["refreshedTokens"].as_u64().unwrap() - after["refreshedTokens"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let stats = lsp.cache_stats(uri).unwrap();
        if refreshed_since(&stats) >= 512 {
            break;
        }
        assert!(Instant::now() < deadline, "the catch-up never used its 512 tokens: {stats}");
        std::thread::sleep(Duration::from_millis(250));
    }
    std::thread::sleep(Duration::from_secs(3));
    let caught_up = lsp.cache_stats(uri).unwrap();
    let refreshed = refreshed_since(&caught_up);
    assert!((512..=512 + 32).contains(&refreshed), "the catch-up, then at most the pause's own 32: {caught_up}");
    assert!(caught_up["staleTokens"].as_u64().unwrap() + 500 <= stale, "{caught_up}");
    assert!(caught_up["nearestStaleDistance"].as_u64().unwrap() >= 512, "nearest to the deletion first: {caught_up}");
    assert_eq!(caught_up["fullRecomputes"], 0, "{caught_up}");

    // A keystroke afterwards is small: no catch-up for it, at most the pause's own allowance.
    lsp.edit(uri, vec![range_change((2, 0), (2, 0), "#")]);
    let typed = lsp.cache_stats(uri).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let quiet = lsp.cache_stats(uri).unwrap();
    let refreshed = quiet["refreshedTokens"].as_u64().unwrap() - typed["refreshedTokens"].as_u64().unwrap();
    assert!(refreshed <= 32, "a keystroke gets the pause's 32 tokens, no catch-up: {quiet}");
    assert!(quiet["staleTokens"].as_u64().unwrap() > 0, "{quiet}");
}

#[test]
fn without_the_catch_up_a_deleted_block_stays_stale_past_the_pause() {
    let uri = "file:///w/no_catch_up.py";
    let mut lsp = LspClient::builder().model(&default_model()).init_options(json!({ "model": { "refreshLargeEditTokens": 0 } })).spawn().unwrap();
    lsp.open(uri, "python", &long_source());
    warm_stats(&mut lsp, uri);
    let after = delete_a_block(&mut lsp, uri);
    std::thread::sleep(Duration::from_secs(4));
    let quiet = lsp.cache_stats(uri).unwrap();
    let refreshed = quiet["refreshedTokens"].as_u64().unwrap() - after["refreshedTokens"].as_u64().unwrap();
    assert!(refreshed <= 32, "only the pause's allowance: {quiet}");
    assert!(quiet["staleTokens"].as_u64().unwrap() + 32 >= after["staleTokens"].as_u64().unwrap(), "{quiet}");
}

#[test]
fn moving_up_the_file_and_back_moves_only_the_cursor_marker() {
    // A ~4.9 kB file, longer than the prompt's 4,000 + 500 bytes set here, so the prompt is a window; opened with
    // the cursor at the end, that window is the whole file. A fresh window for a cursor near the top would hold
    // only ~500 bytes after it and drop the ~130 lines below (~900 tokens), which the return to the bottom would
    // encode again. The warm document keeps its window while the cursor stays well inside it.
    let uri = "file:///w/window.py";
    let mut lsp = LspClient::builder()
        .model(&default_model())
        .init_options(json!({ "completion": { "prefixBytes": 4000, "suffixBytes": 500 } }))
        .spawn()
        .unwrap();
    let text = long_source();
    assert!(text.len() > 4500 && text.lines().count() > 190);
    lsp.open(uri, "python", &text);
    let opened = warm_stats(&mut lsp, uri);
    let type_at = |lsp: &mut LspClient, line: u32| {
        lsp.edit(uri, vec![range_change((line, 0), (line, 0), "#")]);
        lsp.cache_stats(uri).unwrap()
    };
    let bottom = type_at(&mut lsp, 185);
    let top = type_at(&mut lsp, 3);
    let back = type_at(&mut lsp, 186);
    let encoded = back["encodedTokens"].as_u64().unwrap() - bottom["encodedTokens"].as_u64().unwrap();
    assert!(encoded < 150, "two cursor jumps encoded {encoded} tokens (the marker's lines only, not the file's lower part): {top}\n{back}");
    for stats in [&top, &back] {
        // The whole file stays in the cache: nothing was dropped from the window on the way up.
        assert!(stats["cachedTokens"].as_u64().unwrap() + 10 >= opened["cachedTokens"].as_u64().unwrap(), "{opened}\n{stats}");
    }
    assert_eq!(back["fullRecomputes"], 0, "{back}");
    let state = lsp.document_state(uri).unwrap();
    let lines: Vec<&str> = state["text"].as_str().unwrap().lines().collect();
    assert!(lines[3].starts_with('#') && lines[185].starts_with('#') && lines[186].starts_with('#'), "{:?}", &lines[..6]);
}

#[test]
fn a_missing_model_is_a_clear_error_and_documents_still_work() {
    let mut lsp = LspClient::builder().model("/nonexistent/model.gguf").spawn().unwrap();
    let msg = lsp.wait_log_containing("no model loaded", Duration::from_secs(30)).unwrap();
    assert!(msg.contains("/nonexistent/model.gguf"), "{msg}");
    lsp.open(URI, "python", "x = 1\n");
    lsp.edit(URI, vec![range_change((0, 0), (0, 1), "y")]);
    assert_eq!(lsp.text(URI).unwrap(), "y = 1\n");
    let err = lsp.cache_stats(URI).unwrap_err();
    assert!(err.message.contains("no model loaded"), "{err}");
}

#[test]
fn a_corrupt_model_file_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("pie-ls-corrupt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("broken.gguf");
    let mut bytes = b"GGUF".to_vec();
    bytes.extend_from_slice(&[0xff; 64]);
    std::fs::write(&path, bytes).unwrap();
    let mut lsp = LspClient::builder().model(path.to_str().unwrap()).spawn().unwrap();
    let msg = lsp.wait_log_containing("model", Duration::from_secs(60)).unwrap();
    assert!(msg.contains("broken.gguf"), "{msg}");
    lsp.open(URI, "python", "x = 1\n");
    assert_eq!(lsp.text(URI).unwrap(), "x = 1\n");
    assert!(lsp.is_alive());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_server_reports_model_loading_as_progress() {
    let mut lsp = LspClient::builder().model(&test_model()).spawn().unwrap();
    let begin = lsp.wait_notification("$/progress", Duration::from_secs(60)).unwrap();
    assert_eq!(begin["value"]["kind"], "begin", "{begin}");
    assert!(begin["value"]["title"].as_str().unwrap().contains("loading model"), "{begin}");
    let end = lsp.wait_notification("$/progress", Duration::from_secs(120)).unwrap();
    assert_eq!(end["value"]["kind"], "end", "{end}");
    assert_eq!(end["token"], begin["token"]);
    let _ = json!(null);
}

#[test]
fn a_large_file_is_read_around_the_cursor_first_and_whole_when_idle() {
    // ~8 kB: more than the 4 kB over which a window is read in parts, so the open reads nothing but the prompt's
    // markers, a request reads ~1 kB around its cursor (`completion.firstReadBytes`) and is answered from that, and idle time reads the
    // rest of the window (of the document in use only), ending with a cache as exact as one read of the whole file.
    let uri = "file:///w/large.py";
    let text = helpers(52);
    assert!(text.len() > 8000, "{}", text.len());
    let mut lsp = LspClient::builder().model(&default_model()).init_options(json!({ "completion": { "maxTokens": 8 } })).spawn().unwrap();
    // Answered once the model is loaded: commands reach the warm thread in order.
    let _ = lsp.cache_stats(uri);
    lsp.open(uri, "python", &text);
    let opened = lsp.cache_stats(uri).unwrap();
    assert!(opened["cachedTokens"].as_u64().unwrap() < 20, "the open reads the markers only: {opened}");
    assert_eq!(opened["unreadBytes"].as_u64().unwrap() as usize, text.len(), "{opened}");

    // A request in the middle of the file: answered from the text around it.
    let line = text[..text.find("def helper_26(").unwrap()].matches('\n').count() as u32;
    let answer = lsp
        .request(
            "textDocument/inlineCompletion",
            json!({ "textDocument": { "uri": uri }, "position": { "line": line + 2, "character": 4 }, "context": { "triggerKind": 1 } }),
        )
        .unwrap();
    assert!(answer.get("items").is_some() || answer.is_array(), "{answer}");
    let first = lsp.cache_stats(uri).unwrap();
    let first_tokens = first["cachedTokens"].as_u64().unwrap();
    assert!(first_tokens > 100 && first_tokens < 500, "about 1 kB around the cursor: {first}");
    assert!(first["unreadBytes"].as_u64().unwrap() > 6000, "{first}");

    // Another document opened meanwhile is the one in use: it is read, and this one waits (not read on in the
    // background while the user works elsewhere), until a request brings the user back.
    let other = "file:///w/other.py";
    lsp.open(other, "python", &helpers(50));
    let unread = |lsp: &mut LspClient, uri: &str| lsp.cache_stats(uri).unwrap()["unreadBytes"].as_u64().unwrap();
    let (this_before, other_before) = (unread(&mut lsp, uri), unread(&mut lsp, other));
    std::thread::sleep(Duration::from_secs(4));
    let (this_after, other_after) = (unread(&mut lsp, uri), unread(&mut lsp, other));
    assert_eq!(this_after, this_before, "the document left is not read on");
    assert!(other_after < other_before, "the document in use is read: {other_before} -> {other_after}");
    lsp.close(other);
    lsp.request(
        "textDocument/inlineCompletion",
        json!({ "textDocument": { "uri": uri }, "position": { "line": line + 2, "character": 4 }, "context": { "triggerKind": 1 } }),
    )
    .unwrap();

    // Idle: the rest is read, and the cache is whole and exact (nothing stale, the tokens a fresh tokenization's).
    let read = lsp.wait_warm(uri, Duration::from_secs(300)).unwrap();
    let whole = read["cachedTokens"].as_u64().unwrap();
    assert!(whole > 3 * first_tokens, "{first}\n{read}");
    assert_eq!(read["fullRecomputes"], 0, "read in parts, never recomputed: {read}");
    let settled = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let stats = lsp.cache_stats(uri).unwrap();
            if stats["staleTokens"] == 0 {
                break stats;
            }
            assert!(Instant::now() < deadline, "what the read left stale was never settled: {stats}");
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    let check = lsp.request("pie/cacheCheck", json!({ "textDocument": { "uri": uri } })).unwrap();
    assert_eq!(check["tokensMatch"], true, "{check}");
    assert_eq!(check["promptMatches"], true, "{check}");
    assert_eq!(check["textMatchesDocument"], true, "{check}");
    assert_eq!(check["cachedTokens"].as_u64(), settled["cachedTokens"].as_u64(), "{check}");

    // From here on the file is warm: a keystroke and a request encode a few tokens, not the window.
    lsp.edit(uri, vec![range_change((line + 2, 4), (line + 2, 4), "r")]);
    lsp.request(
        "textDocument/inlineCompletion",
        json!({ "textDocument": { "uri": uri }, "position": { "line": line + 2, "character": 5 }, "context": { "triggerKind": 1 } }),
    )
    .unwrap();
    let typed = lsp.cache_stats(uri).unwrap();
    let encoded = typed["encodedTokens"].as_u64().unwrap() - settled["encodedTokens"].as_u64().unwrap();
    assert!(encoded < 100, "{encoded} tokens encoded for a keystroke and a request: {typed}");
}

#[test]
fn a_document_over_the_warm_limit_says_so_and_comes_back_when_it_shrinks() {
    // Over documents.maxWarmBytes a document gets no warm cache, so no suggestions: the user is told why, at the
    // open and when an edit crosses the limit either way (before, the suggestions stopped without a word).
    let uri = "file:///w/limit.py";
    let text = helpers(80);
    assert!(text.len() > 8_000);
    let mut lsp = LspClient::builder().model(&default_model()).init_options(json!({ "documents": { "maxWarmBytes": 6_000 } })).spawn().unwrap();
    lsp.open(uri, "python", &text);
    let msg = lsp.wait_log_containing("maxWarmBytes", Duration::from_secs(30)).unwrap();
    assert!(msg.contains("no suggestions") && msg.contains(&text.len().to_string()), "{msg}");
    assert!(lsp.cache_stats(uri).is_err());
    // Shrunk under the limit: warm again.
    let lines = text.lines().count() as u32;
    lsp.edit(uri, vec![range_change((20, 0), (lines - 10, 0), "")]);
    let msg = lsp.wait_log_containing("suggestions resume", Duration::from_secs(30)).unwrap();
    assert!(msg.contains(uri), "{msg}");
    lsp.wait_warm(uri, Duration::from_secs(120)).unwrap();
    // Grown over it by a paste: cold again, and said so.
    lsp.edit(uri, vec![range_change((5, 0), (5, 0), &text)]);
    let msg = lsp.wait_log_containing("over documents.maxWarmBytes", Duration::from_secs(30)).unwrap();
    assert!(msg.contains(uri), "{msg}");
    let cold = lsp.cache_stats(uri);
    assert!(cold.as_ref().is_err_and(|e| e.message.contains("no warm cache")), "{cold:?}");
}

#[test]
fn a_minified_file_of_one_long_line_gets_a_window_cut_inside_the_line() {
    let _serial = serial();
    // A window of whole lines was the whole line: opening a 400 kB one-line JavaScript file made a 204,460-token
    // prompt, the cache was dropped with a context overflow, and the file never got a suggestion. Here 120 kB.
    let uri = "file:///w/bundle.min.js";
    let text: String = (0..1500).map(|i| format!("function f{i}(a,b){{var c=a*{i}+b;if(c>{i}){{return c-{i}}}return g{i}(c)}}")).collect();
    assert!(text.len() > 100_000 && !text.contains('\n'));
    let mut lsp = LspClient::builder().model(&default_model()).init_options(json!({ "completion": { "maxTokens": 4 } })).spawn().unwrap();
    lsp.open(uri, "javascript", &text);
    let at = text.find("function f700(").unwrap() as u32;
    lsp.edit(uri, vec![range_change((0, at), (0, at), "var z=")]);
    for k in 0..3u32 {
        let answer = lsp.inline_completion(uri, (0, at + 6 + k)).unwrap_or_else(|e| panic!("keystroke {k}: {e}\nstderr: {}", lsp.stderr()));
        assert!(answer.get("items").is_some(), "{answer}");
        lsp.edit(uri, vec![range_change((0, at + 6 + k), (0, at + 6 + k), "a")]);
    }
    let stats = lsp.cache_stats(uri).unwrap_or_else(|e| panic!("no warm cache: {e}\nstderr: {}", lsp.stderr()));
    // The default window (12 kB + 4 kB) of minified code is a few thousand tokens, not the line's ~50,000.
    let cached = stats["cachedTokens"].as_u64().unwrap();
    assert!((100..12_000).contains(&cached), "{stats}");
    assert_eq!(stats["fullRecomputes"], 0, "{stats}");
    let check = lsp.cache_check(uri).unwrap();
    assert_eq!((check["tokensMatch"].as_bool(), check["textMatchesDocument"].as_bool()), (Some(true), Some(true)), "{check}");
    lsp.pump();
    let errors: Vec<Value> = lsp.take_notifications("window/logMessage").into_iter().filter(|m| m["type"] == 1).collect();
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn a_long_file_of_multibyte_text_is_windowed_and_read_in_parts_without_a_crash() {
    let _serial = serial();
    // The window, the first read and the read steps are sized in bytes; in text of 2-4-byte characters a cursor
    // less those bytes lands inside a character. Until 2026-12-07 the window's line blocks sliced there and the
    // model thread panicked (restarted, then off after repeated crashes) on any such file longer than the window.
    let uri = "file:///w/unicode.py";
    let mut text = String::from("import math\n\n");
    for i in 0..120 {
        text.push_str(&format!(
            "def 計算_{i}(値, 倍率={i}):\n    \"\"\"値の平均 — “scaled” mean, ü/ß/€ 😀.\"\"\"\n    合計 = sum(v * 倍率 for v in 値)\n    return 合計 / max(len(値), 1)\n\n\n"
        ));
    }
    assert!(text.len() > 20_000 && text.chars().count() * 4 < text.len() * 3, "a quarter of the bytes inside characters: {}", text.len());
    let settings = json!({ "completion": { "maxTokens": 4, "prefixBytes": 3000, "suffixBytes": 1000 } });
    let mut lsp = LspClient::builder().model(&default_model()).init_options(settings).spawn().unwrap();
    let _ = lsp.cache_stats(uri);
    lsp.open(uri, "python", &text);
    let lines: Vec<u32> = text.lines().enumerate().filter(|(_, l)| l.starts_with("    return")).map(|(i, _)| i as u32).collect();
    // Cursors across the file (each a window the cache does not hold: read around the cursor first), and a
    // keystroke at each before asking.
    for (n, &line) in lines.iter().step_by(24).enumerate() {
        let version = lsp.edit(uri, vec![range_change((line, 4), (line, 4), "x")]);
        assert!(version > 1);
        let answer = lsp.inline_completion(uri, (line, 5)).unwrap_or_else(|e| panic!("request {n} at line {line}: {e}\nstderr: {}", lsp.stderr()));
        assert!(answer.get("items").is_some() || answer.is_array(), "{answer}");
        let stats = lsp.cache_stats(uri).unwrap();
        assert!(stats["cachedTokens"].as_u64().unwrap() > 50, "line {line}: {stats}");
    }
    lsp.pump();
    let crashes: Vec<Value> = lsp
        .take_notifications("window/showMessage")
        .into_iter()
        .filter(|m| m["message"].as_str().is_some_and(|s| s.contains("crashed")))
        .collect();
    assert!(crashes.is_empty(), "{crashes:?}\nstderr: {}", lsp.stderr());
    assert!(!lsp.stderr().contains("crashed"), "{}", lsp.stderr());
}

#[test]
fn a_context_limit_under_512_tokens_serves_what_fits_and_refuses_the_rest_clearly() {
    // `model.contextLength` 256: the session's context was sized with `clamp(512, limit)`, which panicked, and
    // after repeated crashes the model thread ran without a model.
    let settings = json!({ "model": { "contextLength": 256 }, "completion": { "maxTokens": 4 } });
    let mut lsp = LspClient::builder().model(&test_model()).init_options(settings).spawn().unwrap();
    let ask = |lsp: &mut LspClient, uri: &str, line: u32| {
        lsp.request(
            "textDocument/inlineCompletion",
            json!({ "textDocument": { "uri": uri }, "position": { "line": line, "character": 4 }, "context": { "triggerKind": 1 } }),
        )
    };
    let short = "file:///w/short.py";
    lsp.open(short, "python", "def f(x):\n    return x + 1\n\n\ndef g(y):\n    \n");
    let answer = ask(&mut lsp, short, 5).unwrap_or_else(|e| panic!("{e}\nstderr: {}", lsp.stderr()));
    assert!(answer.get("items").is_some() || answer.is_array(), "{answer}");
    let long = "file:///w/long.py";
    lsp.open(long, "python", &helpers(40));
    let err = ask(&mut lsp, long, 100).unwrap_err();
    assert!(err.message.contains("context") && err.message.contains("256"), "{err}");
    // The short file is still served from its cache, and nothing crashed.
    ask(&mut lsp, short, 5).unwrap_or_else(|e| panic!("{e}\nstderr: {}", lsp.stderr()));
    assert!(lsp.cache_stats(short).unwrap()["cachedTokens"].as_u64().unwrap() > 5);
    assert!(!lsp.stderr().contains("crashed"), "{}", lsp.stderr());
}

#[test]
fn a_batch_size_under_the_sequences_a_session_uses_still_serves() {
    // `model.batchSize` 1: llama.cpp reserves an output row per sequence (PIE's scratch sequences) and asserted,
    // aborting the whole process, when the batch was smaller.
    let settings = json!({ "model": { "batchSize": 1 }, "completion": { "maxTokens": 4 } });
    let mut lsp = LspClient::builder().model(&test_model()).init_options(settings).spawn().unwrap();
    let uri = "file:///w/tiny_batch.py";
    lsp.open(uri, "python", "def f(x):\n    return x + 1\n\n\ndef g(y):\n    \n");
    let version = lsp.edit(uri, vec![range_change((5, 4), (5, 4), "r")]);
    assert_eq!(version, 2);
    let answer = lsp
        .request(
            "textDocument/inlineCompletion",
            json!({ "textDocument": { "uri": uri }, "position": { "line": 5, "character": 5 }, "context": { "triggerKind": 1 } }),
        )
        .unwrap_or_else(|e| panic!("{e}\nstderr: {}", lsp.stderr()));
    assert!(answer.get("items").is_some() || answer.is_array(), "{answer}");
    let check = lsp.request("pie/cacheCheck", json!({ "textDocument": { "uri": uri } })).unwrap();
    assert_eq!(check["tokensMatch"], true, "{check}");
    assert!(lsp.is_alive(), "{}", lsp.stderr());
}

#[test]
fn a_small_context_narrows_the_window_instead_of_dropping_the_cache() {
    let _serial = serial();
    // `model.contextLength` 2048 with the default 16 kB window (~4,000 tokens): the window was read into a
    // context that could not hold it, and the warm cache was dropped with an overflow error.
    let settings = json!({ "model": { "contextLength": 2048 }, "completion": { "maxTokens": 4 } });
    let mut lsp = LspClient::builder().model(&default_model()).init_options(settings).spawn().unwrap();
    let uri = "file:///w/long_small_ctx.py";
    let text = helpers(120);
    assert!(text.len() > 16_000, "longer than the default window: {}", text.len());
    lsp.open(uri, "python", &text);
    let line = text[..text.find("def helper_60(").unwrap()].matches('\n').count() as u32 + 2;
    let version = lsp.edit(uri, vec![range_change((line, 4), (line, 4), "t")]);
    assert_eq!(version, 2);
    let answer = lsp
        .request(
            "textDocument/inlineCompletion",
            json!({ "textDocument": { "uri": uri }, "position": { "line": line, "character": 5 }, "context": { "triggerKind": 1 } }),
        )
        .unwrap_or_else(|e| panic!("{e}\nstderr: {}", lsp.stderr()));
    assert!(answer.get("items").is_some() || answer.is_array(), "{answer}");
    let stats = warm_stats(&mut lsp, uri);
    let cached = stats["cachedTokens"].as_u64().unwrap();
    assert!(cached > 300 && cached < 2048, "{stats}");
    lsp.pump();
    let overflow: Vec<Value> = lsp.take_notifications("window/showMessage").into_iter().filter(|m| m.to_string().contains("overflow")).collect();
    assert!(overflow.is_empty(), "{overflow:?}");
    assert!(lsp.stderr().contains("narrowed to fit model.contextLength"), "{}", lsp.stderr());
}
