//! What Emacs 28.2 with eglot 1.9 found, each through the real binary: (a) the empty `didChangeConfiguration`
//! eglot sends after `initialized` must not reset `initializationOptions`; (b) `shutdown` with `"params": null` is
//! a valid request; (d) no disabled code actions to a client without `disabledSupport`, and the edit inline for
//! one that cannot resolve; (e) no colour codes in a log that is not a terminal.

use std::time::{Duration, Instant};

use pie_ls_harness::{test_model, LspClient};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

fn emacs() -> Value {
    let path = format!("{}/fixtures/client-capabilities/emacs_v29.1.json", pie_ls_harness::tests_dir().display());
    serde_json::from_str::<Value>(&std::fs::read_to_string(path).unwrap()).unwrap()["capabilities"].clone()
}

/// Whether the server gave `uri` a syntax tree (it does not when the text is over `documents.maxParseBytes`).
fn parsed(lsp: &mut LspClient, uri: &str) -> bool {
    !lsp.document_state(uri).unwrap()["syntaxLanguage"].is_null()
}

#[test]
fn empty_or_foreign_settings_keep_the_initialization_options() {
    let mut lsp = LspClient::builder().without_model().init_options(json!({ "documents": { "maxParseBytes": 10 } })).spawn().unwrap();
    let text = "def f(x):\n    return x + 1\n";
    // What eglot sends right after `initialized`, then other shapes of "nothing for pie-ls".
    lsp.notify("workspace/didChangeConfiguration", json!({ "settings": {} }));
    lsp.notify("workspace/didChangeConfiguration", json!({ "settings": null }));
    lsp.notify("workspace/didChangeConfiguration", json!({}));
    lsp.notify("workspace/didChangeConfiguration", json!({ "settings": { "pylsp": { "plugins": {} } } }));
    lsp.notify("workspace/didChangeConfiguration", json!({ "settings": { "pie-ls": {} } }));
    lsp.open("file:///w/a.py", "python", text);
    assert!(!parsed(&mut lsp, "file:///w/a.py"), "maxParseBytes 10 from initializationOptions was lost");
    // A setting that is sent changes that setting only.
    lsp.notify("workspace/didChangeConfiguration", json!({ "settings": { "pie-ls": { "completion": { "maxTokens": 8 } } } }));
    lsp.open("file:///w/b.py", "python", text);
    assert!(!parsed(&mut lsp, "file:///w/b.py"), "a completion setting reset documents.maxParseBytes");
    lsp.notify("workspace/didChangeConfiguration", json!({ "settings": { "documents": { "maxParseBytes": 100000 } } }));
    lsp.open("file:///w/c.py", "python", text);
    assert!(parsed(&mut lsp, "file:///w/c.py"), "documents.maxParseBytes 100000 was not applied");
    assert!(lsp.take_notifications("window/logMessage").iter().all(|m| m["params"]["type"] != 1), "an error was logged");
}

#[test]
fn completion_max_tokens_from_initialization_options_survive_an_empty_configuration() {
    // eglot's case: `completion.maxTokens: 8` produced 42 tokens after `{"settings": {}}`.
    let mut lsp = LspClient::builder()
        .model(&test_model())
        .init_options(json!({ "model": { "threads": 2, "contextLength": 2048 }, "completion": { "maxTokens": 3 } }))
        .spawn()
        .unwrap();
    lsp.notify("workspace/didChangeConfiguration", json!({ "settings": {} }));
    let uri = "file:///w/m.py";
    lsp.open(uri, "python", "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    ");
    let deadline = Instant::now() + Duration::from_secs(180);
    while lsp.cache_stats(uri).ok().and_then(|s| s["cachedTokens"].as_u64()).unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "never warm: {}", lsp.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    lsp.request("textDocument/inlineCompletion", json!({ "textDocument": { "uri": uri }, "position": { "line": 5, "character": 4 } }))
        .unwrap();
    let status = lsp.wait_notification("pie/status", WAIT).unwrap();
    let generated = status["generatedTokens"].as_u64().unwrap();
    assert!((1..=3).contains(&generated), "generated {generated} tokens with maxTokens 3: {status}");
}

#[test]
fn shutdown_with_null_params_is_answered_and_exit_ends_with_status_0() {
    let mut lsp = LspClient::start().unwrap();
    lsp.send(&json!({ "jsonrpc": "2.0", "id": 9001, "method": "shutdown", "params": null }));
    assert_eq!(lsp.wait_response(9001, WAIT), Ok(Value::Null));
    lsp.send(&json!({ "jsonrpc": "2.0", "method": "exit", "params": null }));
    let status = lsp.wait_exit(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_client_without_disabled_support_or_resolve_gets_no_disabled_actions_and_edits_inline() {
    // No model: the verified actions would be offered disabled ("needs the model"), so they are left out too.
    let mut lsp = LspClient::builder().exact_capabilities(emacs()).without_model().spawn().unwrap();
    let uri = "file:///w/shop.py";
    lsp.open(uri, "python", "def total(items):\n    s = 0\n    for x in items:\n        s += x\n    return s\n");
    let actions = |lsp: &mut LspClient, start: (u32, u32), end: (u32, u32)| {
        let params = json!({
            "textDocument": { "uri": uri },
            "range": { "start": { "line": start.0, "character": start.1 }, "end": { "line": end.0, "character": end.1 } },
            "context": { "diagnostics": [] }
        });
        lsp.request("textDocument/codeAction", params).unwrap().as_array().cloned().unwrap_or_default()
    };
    // An assignment target cannot be extracted: nothing, rather than an entry that does nothing.
    assert_eq!(actions(&mut lsp, (1, 4), (1, 5)), Vec::<Value>::new());
    // A cursor on a function: "find a faster version" would be disabled without a model: left out.
    assert_eq!(actions(&mut lsp, (0, 5), (0, 5)), Vec::<Value>::new());
    // The loop can be extracted: the edit comes inline, with no data for a resolve eglot never sends.
    let offered = actions(&mut lsp, (2, 0), (4, 0));
    assert_eq!(offered.len(), 1, "{offered:?}");
    let edits = offered[0]["edit"]["changes"][uri].as_array().unwrap_or_else(|| panic!("no inline edit: {}", offered[0]));
    assert!(edits.iter().any(|e| e["newText"].as_str().is_some_and(|t| t.contains("def "))), "{edits:?}");
    assert!(offered[0]["disabled"].is_null() && offered[0]["data"].is_null(), "{}", offered[0]);
    let caps = &lsp.initialize_result()["capabilities"];
    assert_eq!(caps["codeActionProvider"]["resolveProvider"], false, "{caps}");
    assert!(caps["inlineCompletionProvider"].is_null(), "eglot declares no inline completion: {caps}");
}

#[test]
fn logs_on_a_pipe_carry_no_colour_codes() {
    let mut lsp = LspClient::builder().without_model().env("RUST_LOG", "info").spawn().unwrap();
    lsp.open("file:///w/a.py", "python", "x = 1\n");
    lsp.document_state("file:///w/a.py").unwrap();
    let deadline = Instant::now() + WAIT;
    while !lsp.stderr().contains("initialized") {
        assert!(Instant::now() < deadline, "no log line on stderr: {:?}", lsp.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!lsp.stderr().contains('\u{1b}'), "colour codes on a pipe: {:?}", lsp.stderr());
}
