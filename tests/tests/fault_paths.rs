//! Fault paths through the real binary with the test model: the model file is truncated and removed while the
//! server runs, and the warm thread panics (through the `PIE_LS_TEST_PANIC` hook). In each case the server keeps
//! serving documents, tells the user once (`window/showMessage`), and recovers without a restart.

use std::time::{Duration, Instant};

use pie_ls_harness::{range_change, test_model, LspClient};
use serde_json::{json, Value};

const URI: &str = "file:///w/fault.py";
const SOURCE: &str = "def mean(values):\n    total = sum(values)\n    return total / len(values)\n\n\ndef spread(values):\n    return max(values) - min(values)\n";

fn wait_warm(lsp: &mut LspClient) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Ok(stats) = lsp.cache_stats(URI) {
            if stats["cachedTokens"].as_u64().unwrap_or(0) > 0 {
                return stats;
            }
        }
        assert!(Instant::now() < deadline, "never warm; stderr: {}", lsp.stderr());
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn complete(lsp: &mut LspClient, line: u32, character: u32) -> Result<Value, pie_ls_harness::RpcError> {
    lsp.request_with_timeout(
        "textDocument/completion",
        json!({ "textDocument": { "uri": URI }, "position": { "line": line, "character": character } }),
        Duration::from_secs(120),
    )
}

/// The `window/showMessage` texts received so far that contain `needle`.
fn shown(lsp: &mut LspClient, needle: &str) -> Vec<String> {
    lsp.pump();
    lsp.take_notifications("window/showMessage")
        .into_iter()
        .filter_map(|p| p["message"].as_str().map(str::to_owned))
        .filter(|m| m.contains(needle))
        .collect()
}

/// Polls `shown` until a message with `needle` arrives.
fn wait_shown(lsp: &mut LspClient, needle: &str, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    while seen.is_empty() {
        assert!(Instant::now() < deadline, "no showMessage with {needle:?}; stderr: {}", lsp.stderr());
        std::thread::sleep(Duration::from_millis(100));
        seen = shown(lsp, needle);
    }
    seen
}

fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pie-ls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_model_file_truncated_then_removed_while_serving_is_reported_once_and_changes_nothing() {
    let dir = scratch_dir("fault-model");
    let model = dir.join("model.gguf");
    std::fs::copy(test_model(), &model).unwrap();
    let mut lsp = LspClient::builder().model(model.to_str().unwrap()).init_options(json!({ "model": { "threads": 2 } })).spawn().unwrap();
    lsp.open(URI, "python", SOURCE);
    wait_warm(&mut lsp);

    // Truncated to half, as an interrupted re-download leaves it. A mapped model would die of SIGBUS here.
    let len = std::fs::metadata(&model).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&model).unwrap().set_len(len / 2).unwrap();
    let reports = wait_shown(&mut lsp, "model file", Duration::from_secs(30));
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(reports[0].contains("truncated") && reports[0].contains("model.gguf"), "{reports:?}");

    // The model in memory still answers, over edits that touch every layer of it.
    lsp.edit(URI, vec![range_change((7, 0), (7, 0), "\ndef median(values):\n    ")]);
    complete(&mut lsp, 9, 4).unwrap_or_else(|e| panic!("completion after truncation: {e}; stderr: {}", lsp.stderr()));
    let stats = lsp.cache_stats(URI).unwrap();
    assert!(stats["cachedTokens"].as_u64().unwrap() > 0, "{stats}");

    // Removed: still nothing breaks, and the user is not told again.
    std::fs::remove_file(&model).unwrap();
    for (i, ch) in "return".chars().enumerate() {
        lsp.edit(URI, vec![range_change((9, 4 + i as u32), (9, 4 + i as u32), &ch.to_string())]);
    }
    std::thread::sleep(Duration::from_secs(5));
    complete(&mut lsp, 9, 10).unwrap_or_else(|e| panic!("completion after removal: {e}; stderr: {}", lsp.stderr()));
    assert_eq!(shown(&mut lsp, "model file"), Vec::<String>::new(), "reported once");
    let expected = SOURCE.to_owned() + "\ndef median(values):\n    return";
    assert_eq!(lsp.text(URI).unwrap(), expected);
    assert!(lsp.is_alive());
    lsp.shutdown().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_warm_thread_panic_is_reported_once_and_the_documents_come_back_warm() {
    let mut lsp = LspClient::builder()
        .model(&test_model())
        .init_options(json!({ "model": { "threads": 2 } }))
        .env("PIE_LS_TEST_PANIC", "edit")
        .spawn()
        .unwrap();
    lsp.open(URI, "python", SOURCE);
    let before = wait_warm(&mut lsp);

    // The first edit panics the warm thread: it restarts with the loaded model and gets the documents again.
    lsp.edit(URI, vec![range_change((1, 4), (1, 9), "acc")]);
    let reports = wait_shown(&mut lsp, "crashed", Duration::from_secs(30));
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(reports[0].contains("PIE_LS_TEST_PANIC on edit") && reports[0].contains("restarted"), "{reports:?}");
    let after = wait_warm(&mut lsp);
    assert!(after["cachedTokens"].as_u64().unwrap() >= before["cachedTokens"].as_u64().unwrap() / 2, "{after}");

    // Later edits reach the new cache and the server's text stays exact; a completion compares the warm copy.
    lsp.edit(URI, vec![range_change((2, 11), (2, 16), "acc")]);
    let edited = lsp.cache_stats(URI).unwrap();
    assert!(edited["updates"].as_u64().unwrap() > after["updates"].as_u64().unwrap(), "{edited}");
    complete(&mut lsp, 2, 14).unwrap_or_else(|e| panic!("completion after the restart: {e}; stderr: {}", lsp.stderr()));
    let text = SOURCE.replacen("total = sum", "acc = sum", 1).replacen("return total /", "return acc /", 1);
    assert_eq!(lsp.text(URI).unwrap(), text);
    lsp.pump();
    let diverged: Vec<Value> = lsp
        .take_notifications("window/logMessage")
        .into_iter()
        .filter(|p| p["message"].as_str().is_some_and(|m| m.contains("differed from the document")))
        .collect();
    assert!(diverged.is_empty(), "{diverged:?}");
    assert_eq!(shown(&mut lsp, "crashed"), Vec::<String>::new(), "reported once");
    lsp.shutdown().unwrap();
}

#[test]
fn a_warm_thread_that_keeps_panicking_degrades_to_no_model_and_documents_still_work() {
    let mut lsp = LspClient::builder()
        .model(&test_model())
        .init_options(json!({ "model": { "threads": 2 } }))
        .env("PIE_LS_TEST_PANIC", "complete:always")
        .spawn()
        .unwrap();
    lsp.open(URI, "python", SOURCE);
    wait_warm(&mut lsp);
    // Every completion crashes the thread: each is an error, never a hang, until it gives the model up.
    for i in 0..5u32 {
        lsp.edit(URI, vec![range_change((7, i), (7, i), "#")]);
        let err = complete(&mut lsp, 7, 1 + i).unwrap_err();
        assert!(err.message.contains("thread"), "{err}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let err = loop {
        let err = lsp.cache_stats(URI).unwrap_err();
        if err.message.contains("crashed") || Instant::now() > deadline {
            break err;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(err.message.contains("no model loaded") && err.message.contains("crashed"), "{err}");
    let mut reports = Vec::new();
    while reports.len() < 2 && Instant::now() < deadline + Duration::from_secs(10) {
        reports.extend(shown(&mut lsp, "crashed"));
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    reports.extend(shown(&mut lsp, "crashed"));
    assert_eq!(reports.len(), 2, "the first crash and the giving up, nothing per crash: {reports:?}");
    assert!(reports[1].contains("without a model"), "{reports:?}");
    lsp.edit(URI, vec![range_change((0, 0), (0, 0), "import math\n")]);
    assert_eq!(lsp.text(URI).unwrap(), format!("import math\n{SOURCE}#####"));
    let state = lsp.document_state(URI).unwrap();
    assert_eq!(state["syntaxErrors"], 0, "{state}");
    lsp.shutdown().unwrap();
}

#[test]
fn a_panic_in_a_request_handler_is_an_error_for_that_request_and_the_server_goes_on() {
    // tower-lsp polls every handler on the server's task: before the guard contained it, one panicking handler
    // ended the process (an extract-method selection on a license comment did, 2026-12-07).
    let mut lsp = LspClient::builder().without_model().env("PIE_LS_TEST_PANIC", "codeAction").spawn().unwrap();
    lsp.open(URI, "python", SOURCE);
    let params = json!({
        "textDocument": { "uri": URI },
        "range": { "start": { "line": 1, "character": 4 }, "end": { "line": 2, "character": 40 } },
        "context": { "diagnostics": [] }
    });
    let err = lsp.request("textDocument/codeAction", params.clone()).unwrap_err();
    assert_eq!(err.code, -32603, "{err}");
    assert!(err.message.contains("bug") && err.message.contains("textDocument/codeAction") && err.message.contains("PIE_LS_TEST_PANIC"), "{err}");
    let logged = lsp.wait_log_containing("recovered", Duration::from_secs(10)).unwrap();
    assert!(logged.contains("PIE_LS_TEST_PANIC"), "{logged}");
    // The same request again (the hook fires once) is answered, and edits still apply in order.
    let actions = lsp.request("textDocument/codeAction", params).unwrap();
    assert!(actions.is_array(), "{actions}");
    lsp.edit(URI, vec![range_change((1, 4), (1, 9), "acc")]);
    assert!(lsp.text(URI).unwrap().contains("acc = sum"));
    assert!(lsp.is_alive());
    lsp.shutdown().unwrap();
}

/// The server's environment as the kernel started its current program (`/proc/<pid>/environ`).
fn started_environment(lsp: &LspClient) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{}/environ", lsp.pid())).expect("reading the server's environ");
    raw.split(|&b| b == 0).filter(|v| !v.is_empty()).map(|v| String::from_utf8_lossy(v).into_owned()).collect()
}

/// Whether the server's log says `needle` within a few seconds (stderr is read on a thread of its own).
fn stderr_says(lsp: &LspClient, needle: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lsp.stderr().contains(needle) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    lsp.stderr().contains(needle)
}

#[test]
fn llama_cpp_threads_spin_briefly_at_barriers_unless_the_environment_chose() {
    // libgomp reads GOMP_SPINCOUNT when it is loaded, so the server runs itself again (same pid) with it set; under
    // load its default spin made each barrier cost a scheduler slice (`engine/openmp.rs`).
    let users = ["GOMP_SPINCOUNT", "OMP_WAIT_POLICY"].iter().find_map(|k| std::env::var(k).ok().map(|v| format!("{k}={v}")));
    let mut lsp = LspClient::builder().without_model().spawn().unwrap();
    lsp.open(URI, "python", SOURCE);
    assert_eq!(lsp.text(URI).unwrap(), SOURCE, "the server that runs again serves the same stdio");
    let env = started_environment(&lsp);
    match &users {
        None => assert!(env.iter().any(|v| v == "GOMP_SPINCOUNT=1000"), "{env:?}"),
        Some(chosen) => assert!(env.contains(chosen) && !env.iter().any(|v| v.starts_with("PIE_LS_OPENMP_RERUN=")), "{env:?}"),
    }
    assert!(stderr_says(&lsp, "OpenMP threads"), "{}", lsp.stderr());
    lsp.shutdown().unwrap();

    // A spin count of the user's own is kept, and the server does not run again.
    let mut lsp = LspClient::builder().without_model().env("GOMP_SPINCOUNT", "5000").spawn().unwrap();
    lsp.open(URI, "python", SOURCE);
    assert_eq!(lsp.text(URI).unwrap(), SOURCE);
    let env = started_environment(&lsp);
    assert!(env.iter().any(|v| v == "GOMP_SPINCOUNT=5000"), "{env:?}");
    assert!(!env.iter().any(|v| v.starts_with("PIE_LS_OPENMP_RERUN=")), "{env:?}");
    assert!(stderr_says(&lsp, "GOMP_SPINCOUNT=5000"), "{}", lsp.stderr());
    lsp.shutdown().unwrap();
}

#[test]
fn big_freed_buffers_go_back_to_the_system_unless_the_environment_chose() {
    // glibc's rising mmap threshold kept evicted warm caches resident (`engine/heap.rs`); the memory itself is
    // judged by the soak (tests/soak.rs), this checks the setting and that a user's own is kept.
    let users = std::env::var("MALLOC_MMAP_THRESHOLD_").ok();
    let mut lsp = LspClient::builder().without_model().spawn().unwrap();
    lsp.open(URI, "python", SOURCE);
    assert_eq!(lsp.text(URI).unwrap(), SOURCE);
    match &users {
        None => assert!(stderr_says(&lsp, "blocks of 4 MiB or more are mapped on their own"), "{}", lsp.stderr()),
        Some(v) => assert!(stderr_says(&lsp, &format!("MALLOC_MMAP_THRESHOLD_={v}")), "{}", lsp.stderr()),
    }
    lsp.shutdown().unwrap();

    let mut lsp = LspClient::builder().without_model().env("MALLOC_MMAP_THRESHOLD_", "1048576").spawn().unwrap();
    lsp.open(URI, "python", SOURCE);
    assert_eq!(lsp.text(URI).unwrap(), SOURCE);
    assert!(stderr_says(&lsp, "the environment's (MALLOC_MMAP_THRESHOLD_=1048576)"), "{}", lsp.stderr());
    lsp.shutdown().unwrap();
}
