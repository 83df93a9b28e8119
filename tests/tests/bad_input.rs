//! Bad input through the real server: each case asserts the error the client sees, that the document state is
//! unchanged, and that the next request is still served.

use std::time::Duration;

use pie_ls_harness::{range_change, LspClient};
use serde_json::json;

const URI: &str = "file:///w/main.py";
const TEXT: &str = "def f(x):\n    return x + 1\n";
const WAIT: Duration = Duration::from_secs(20);

fn server_with_doc() -> LspClient {
    let mut lsp = LspClient::start().expect("server starts");
    lsp.open(URI, "python", TEXT);
    lsp
}

/// The document is exactly as opened and the server still answers.
fn assert_untouched(lsp: &mut LspClient) {
    let state = lsp.document_state(URI).expect("server still serves requests");
    assert_eq!(state["text"], TEXT);
    assert_eq!(state["version"], 1);
    assert_eq!(state["syntaxErrors"], 0);
}

#[test]
fn malformed_json_gets_a_parse_error_and_the_server_keeps_serving() {
    let mut lsp = server_with_doc();
    lsp.send_raw_body(b"{\"jsonrpc\": \"2.0\", \"id\": 99, \"method\": ");
    let response = lsp.wait_any_response(WAIT).expect("a response to the malformed message");
    assert_eq!(response["error"]["code"], -32700, "{response}");
    assert_untouched(&mut lsp);
}

#[test]
fn a_message_that_is_not_json_rpc_gets_an_error() {
    let mut lsp = server_with_doc();
    lsp.send_raw_body(b"[1, 2, 3]");
    let response = lsp.wait_any_response(WAIT).expect("a response");
    assert!(response["error"]["code"].as_i64().is_some(), "{response}");
    assert_untouched(&mut lsp);
}

#[test]
fn unknown_request_is_method_not_found() {
    let mut lsp = server_with_doc();
    let err = lsp.request("pie/noSuchThing", json!({})).unwrap_err();
    assert_eq!(err.code, -32601, "{err}");
    assert_untouched(&mut lsp);
}

#[test]
fn unknown_notification_is_logged() {
    let mut lsp = server_with_doc();
    lsp.notify("pie/noSuchNotification", json!({}));
    let msg = lsp.wait_log_containing("unknown notification", WAIT).unwrap();
    assert!(msg.contains("pie/noSuchNotification"), "{msg}");
    assert_untouched(&mut lsp);
}

#[test]
fn invalid_request_params_are_rejected() {
    let mut lsp = server_with_doc();
    let err = lsp.request("pie/documentState", json!({ "textDocument": 5 })).unwrap_err();
    assert_eq!(err.code, -32602, "{err}");
    let err = lsp.request("pie/documentState", json!({ "textDocument": { "uri": "file:///w/nope.py" } })).unwrap_err();
    assert_eq!(err.code, -32602);
    assert!(err.message.contains("not open"), "{err}");
    assert_untouched(&mut lsp);
}

#[test]
fn invalid_notification_params_are_logged_not_dropped_silently() {
    let mut lsp = server_with_doc();
    lsp.notify("textDocument/didChange", json!({ "textDocument": { "uri": URI }, "contentChanges": "oops" }));
    let msg = lsp.wait_log_containing("invalid params", WAIT).unwrap();
    assert!(msg.contains("textDocument/didChange"), "{msg}");
    assert_untouched(&mut lsp);
}

#[test]
fn change_for_a_document_that_is_not_open_is_reported() {
    let mut lsp = server_with_doc();
    lsp.change("file:///w/other.py", 2, vec![range_change((0, 0), (0, 0), "x")]);
    let msg = lsp.wait_log_containing("not open", WAIT).unwrap();
    assert!(msg.contains("other.py"), "{msg}");
    assert_untouched(&mut lsp);
}

#[test]
fn range_outside_the_document_rejects_the_whole_notification() {
    let mut lsp = server_with_doc();
    // The first change is valid, the second is not: neither applies (a notification is atomic).
    lsp.change(URI, 2, vec![range_change((0, 0), (0, 0), "# c\n"), range_change((40, 0), (41, 0), "x")]);
    let msg = lsp.wait_log_containing("didChange rejected", WAIT).unwrap();
    assert!(msg.contains("line 40 is past the end"), "{msg}");
    assert_untouched(&mut lsp);
    // An inverted range is refused too.
    lsp.change(URI, 2, vec![range_change((1, 0), (0, 0), "x")]);
    let msg = lsp.wait_log_containing("didChange rejected", WAIT).unwrap();
    assert!(msg.contains("after its end"), "{msg}");
    assert_untouched(&mut lsp);
    // And the next valid change still applies on top of the untouched text.
    lsp.change(URI, 2, vec![range_change((0, 4), (0, 5), "g")]);
    assert_eq!(lsp.text(URI).unwrap(), TEXT.replacen("def f", "def g", 1));
}

#[test]
fn stale_version_is_refused() {
    let mut lsp = server_with_doc();
    lsp.change(URI, 1, vec![range_change((0, 0), (0, 0), "# stale\n")]);
    let msg = lsp.wait_log_containing("stale version", WAIT).unwrap();
    assert!(msg.contains("already at version 1"), "{msg}");
    assert_untouched(&mut lsp);
}

#[test]
fn a_20_megabyte_file_is_stored_without_a_tree_and_stays_editable() {
    let mut lsp = server_with_doc();
    let line = "value = [i * 2 for i in range(100)]  # padding padding padding padding\n";
    let big: String = line.repeat(20 * 1024 * 1024 / line.len() + 1);
    assert!(big.len() >= 20 * 1024 * 1024);
    lsp.open("file:///w/big.py", "python", &big);
    let msg = lsp.wait_log_containing("maxParseBytes", WAIT).unwrap();
    assert!(msg.contains("no syntax tree"), "{msg}");
    lsp.change("file:///w/big.py", 2, vec![range_change((0, 0), (0, 5), "VALUE")]);
    let state = lsp.document_state("file:///w/big.py").unwrap();
    assert_eq!(state["syntaxErrors"], json!(null));
    assert_eq!(state["version"], 2);
    assert_eq!(state["lineCount"], big.matches('\n').count() + 1);
    assert!(state["text"].as_str().unwrap().starts_with("VALUE = [i"));
    assert_eq!(state["text"].as_str().unwrap().len(), big.len());
    assert_untouched(&mut lsp);
}

#[test]
fn binary_content_is_stored_but_not_parsed() {
    let mut lsp = server_with_doc();
    lsp.open("file:///w/blob.py", "python", "PK\u{0}\u{3}\u{4} binary \u{0}\u{0} data");
    let msg = lsp.wait_log_containing("binary content", WAIT).unwrap();
    assert!(msg.contains("blob.py"), "{msg}");
    let state = lsp.document_state("file:///w/blob.py").unwrap();
    assert_eq!(state["binary"], true);
    assert_eq!(state["syntaxErrors"], json!(null));
    assert_untouched(&mut lsp);
}

#[test]
fn invalid_initialization_options_fail_initialize_with_a_reason() {
    let err = LspClient::builder().init_options(json!({ "model": { "threads": "lots" } })).spawn().err().unwrap();
    assert!(err.to_string().contains("invalid initializationOptions"), "{err}");
}

#[test]
fn bad_configuration_keeps_the_previous_one() {
    let mut lsp = server_with_doc();
    lsp.notify("workspace/didChangeConfiguration", json!({ "settings": { "documents": { "maxParseBytes": "big" } } }));
    let msg = lsp.wait_log_containing("settings not applied", WAIT).unwrap();
    assert!(msg.contains("maxParseBytes") || msg.contains("invalid type"), "{msg}");
    assert_untouched(&mut lsp);
}

#[test]
fn shutdown_then_exit_ends_the_process_cleanly() {
    let lsp = server_with_doc();
    let status = lsp.shutdown().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn logs_never_reach_stdout() {
    // Debug logging on: everything on stdout must still be valid LSP frames (the harness would fail otherwise).
    let mut lsp = LspClient::builder().without_model().env("RUST_LOG", "debug").spawn().unwrap();
    lsp.open(URI, "python", TEXT);
    assert_untouched(&mut lsp);
    assert!(lsp.stderr().contains("initialized"), "logs go to stderr: {}", lsp.stderr());
}

#[test]
fn garbage_without_headers_is_skipped_and_the_stream_resyncs() {
    let mut lsp = server_with_doc();
    lsp.send_raw(b"hello this is not LSP\r\n\r\n");
    let response = lsp.wait_any_response(WAIT).expect("a response to the garbage");
    assert_eq!(response["error"]["code"], -32700, "{response}");
    assert_untouched(&mut lsp);
}
