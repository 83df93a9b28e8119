//! Self-debug and "find a faster version" through the real server and real models: the actions are offered by
//! `textDocument/codeAction`, do their work in `codeAction/resolve` (tests run in a scratch copy that includes
//! unsaved buffers), report `$/progress`, can be cancelled, and carry an edit only when verification passed.

use std::path::Path;
use std::time::{Duration, Instant};

use pie_ls_harness::{default_model, test_model, LspClient};
use serde_json::{json, Value};

fn workspace(files: &[(&str, &str)]) -> tempdir::Dir {
    let dir = tempdir::Dir::new();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

/// A small temporary folder, removed on drop.
mod tempdir {
    pub struct Dir(std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p = std::env::temp_dir().join(format!("pie-ls-verified-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn uri(dir: &Path, name: &str) -> String {
    format!("file://{}", dir.join(name).display())
}

/// The code actions at (line, character) of `uri`, filtered to `kind`.
fn actions(client: &mut LspClient, uri: &str, line: u32, character: u32, kind: &str) -> Vec<Value> {
    let result = client
        .request(
            "textDocument/codeAction",
            json!({
                "textDocument": { "uri": uri },
                "range": { "start": { "line": line, "character": character }, "end": { "line": line, "character": character } },
                "context": { "diagnostics": [], "only": [kind] }
            }),
        )
        .expect("codeAction");
    result.as_array().cloned().unwrap_or_default().into_iter().filter(|a| a["kind"] == kind).collect()
}

fn resolve(client: &mut LspClient, action: &Value, timeout: Duration) -> Value {
    let id = client.send_request("codeAction/resolve", action.clone());
    client.wait_response(id, timeout).expect("codeAction/resolve")
}

/// Applies a WorkspaceEdit's edits for `uri` to `text` (single-line-ASCII-safe: positions are UTF-16 and the
/// fixtures are ASCII).
fn apply(text: &str, edit: &Value, uri: &str) -> String {
    let mut edits: Vec<Value> = edit["changes"][uri].as_array().cloned().unwrap_or_default();
    edits.sort_by_key(|e| std::cmp::Reverse((e["range"]["start"]["line"].as_u64(), e["range"]["start"]["character"].as_u64())));
    let mut out = text.to_owned();
    for e in edits {
        let off = |p: &Value| {
            let line = p["line"].as_u64().unwrap() as usize;
            let ch = p["character"].as_u64().unwrap() as usize;
            let start: usize = out.split_inclusive('\n').take(line).map(str::len).sum();
            start + ch
        };
        let (s, t) = (off(&e["range"]["start"]), off(&e["range"]["end"]));
        out.replace_range(s..t, e["newText"].as_str().unwrap());
    }
    out
}

const CALC_ON_DISK: &str = "def add(a, b):\n    return a + b\n\n\ndef scale(xs, k):\n    return [x * k for x in xs]\n";
const CALC_UNSAVED: &str = "def add(a, b):\n    return a - b\n\n\ndef scale(xs, k):\n    return [x * k for x in xs]\n";
const TESTS: &str = "from calc import add, scale\n\n\ndef test_add():\n    assert add(2, 3) == 5\n\n\ndef test_zero():\n    assert add(0, 0) == 0\n\n\ndef test_scale():\n    assert scale([1, 2], 3) == [3, 6]\n";

const BANK_ON_DISK: &str = "def below_zero(operations):\n    \"\"\"Whether the balance, starting at zero, ever falls below zero.\"\"\"\n    balance = 0\n    for op in operations:\n        balance += op\n        if balance < 0:\n            return True\n    return False\n\n\ndef total(operations):\n    return sum(operations)\n";
const BANK_TESTS: &str = "from bank import below_zero, total\n\n\ndef test_dips_below_zero():\n    assert below_zero([1, 2, -4, 5]) == True\n\n\ndef test_stays_positive():\n    assert below_zero([1, 2, 3]) == False\n\n\ndef test_total():\n    assert total([1, 2, 3]) == 6\n";

#[test]
fn self_debug_fixes_the_unsaved_buffer_and_proves_it_with_the_tests() {
    // The file on disk is right; the editor's unsaved buffer has the bug. The fix must come from running the
    // buffer's text, and edit only bank.py.
    let unsaved = BANK_ON_DISK.replace("balance < 0", "balance < -1");
    let ws = workspace(&[("bank.py", BANK_ON_DISK), ("test_bank.py", BANK_TESTS)]);
    let mut client = LspClient::builder().model(&default_model()).root(ws.path()).spawn().unwrap();
    let (bank, tests) = (uri(ws.path(), "bank.py"), uri(ws.path(), "test_bank.py"));
    client.open(&bank, "python", &unsaved);
    client.open(&tests, "python", BANK_TESTS);
    let offered = actions(&mut client, &tests, 4, 8, "quickfix");
    assert_eq!(offered.len(), 1, "{offered:?}");
    assert_eq!(offered[0]["title"], "Fix so that test_dips_below_zero passes");
    assert!(offered[0]["edit"].is_null(), "nothing is computed before the user picks the action");
    let t0 = Instant::now();
    let resolved = resolve(&mut client, &offered[0], Duration::from_secs(600));
    eprintln!("resolved in {:.1} s: {}", t0.elapsed().as_secs_f64(), serde_json::to_string_pretty(&resolved["data"]).unwrap());
    let result = &resolved["data"]["result"];
    assert_eq!(result["status"], "fixed", "{resolved}");
    let changes = resolved["edit"]["changes"].as_object().expect("an edit");
    assert_eq!(changes.keys().collect::<Vec<_>>(), vec![&bank], "only the function under test is edited, never the tests");
    let fixed = apply(&unsaved, &resolved["edit"], &bank);
    assert!(!fixed.contains("balance < -1"), "{fixed}");
    assert!(fixed.contains("def total(operations):\n    return sum(operations)\n"), "the rest of the file is untouched: {fixed}");
    let evidence = result["evidence"].as_array().unwrap();
    assert!(evidence[0].as_str().unwrap().contains("test_dips_below_zero: failed before"), "{evidence:?}");
    assert!(evidence[1].as_str().unwrap().contains("0 newly failing"), "{evidence:?}");
    // The fixed module really passes every test.
    let check = workspace(&[("bank.py", &fixed), ("test_bank.py", BANK_TESTS)]);
    let status = std::process::Command::new("python3")
        .arg("-c")
        .arg("import test_bank as t; t.test_dips_below_zero(); t.test_stays_positive(); t.test_total()")
        .current_dir(check.path())
        .status()
        .unwrap();
    assert!(status.success(), "{fixed}");
    // The user saw progress from begin to end (printed: this is the transcript of what an editor shows).
    let progress = client.take_notifications("$/progress");
    for p in &progress {
        let v = &p["value"];
        eprintln!("progress {:<6} {}", v["kind"].as_str().unwrap_or(""), v["title"].as_str().or(v["message"].as_str()).unwrap_or(""));
    }
    for m in client.take_notifications("window/showMessage") {
        eprintln!("message: {}", m["message"].as_str().unwrap_or(""));
    }
    eprintln!("edit for bank.py:\n{}", resolved["edit"]["changes"][&bank][0]["newText"].as_str().unwrap_or(""));
    let kinds: Vec<&str> = progress
        .iter()
        .filter(|p| p["token"].as_str().is_some_and(|t| t.starts_with("pie-ls/action/")))
        .filter_map(|p| p["value"]["kind"].as_str())
        .collect();
    assert!(kinds.first() == Some(&"begin") && kinds.last() == Some(&"end") && kinds.contains(&"report"), "{kinds:?}");
    assert_eq!(std::fs::read_to_string(ws.path().join("bank.py")).unwrap(), BANK_ON_DISK, "the workspace on disk is never written");
    client.shutdown().unwrap();
}

#[test]
fn nothing_is_offered_without_cause_and_errors_say_why() {
    let ws = workspace(&[("calc.py", CALC_ON_DISK), ("test_calc.py", TESTS)]);
    let mut client = LspClient::builder()
        .model(&test_model())
        .root(ws.path())
        .init_options(json!({ "tests": { "timeoutMs": 20000 } }))
        .spawn()
        .unwrap();
    let tests = uri(ws.path(), "test_calc.py");
    client.open(&tests, "python", TESTS);
    // Not on a test: no self-debug offer.
    assert!(actions(&mut client, &tests, 0, 3, "quickfix").is_empty());
    // On a passing test: the resolve says so and offers no edit.
    let offered = actions(&mut client, &tests, 4, 8, "quickfix");
    let resolved = resolve(&mut client, &offered[0], Duration::from_secs(120));
    assert!(resolved["edit"].is_null(), "{resolved}");
    assert!(resolved["disabled"]["reason"].as_str().unwrap().contains("already passes"), "{resolved}");
    // A missing test command is a clear message, not a hang or a crash.
    client.notify("workspace/didChangeConfiguration", json!({ "settings": { "tests": { "commands": { "python": "no-such-test-runner-xyz {file}" } } } }));
    let offered = actions(&mut client, &tests, 4, 8, "quickfix");
    let resolved = resolve(&mut client, &offered[0], Duration::from_secs(120));
    assert!(resolved["disabled"]["reason"].as_str().unwrap().contains("command not found"), "{resolved}");
    // A document changed since the offer is refused with ContentModified.
    let stale = offered[0].clone();
    client.edit(&tests, vec![pie_ls_harness::range_change((0, 0), (0, 0), "# edited\n")]);
    let id = client.send_request("codeAction/resolve", stale);
    let err = client.wait_response(id, Duration::from_secs(30)).unwrap_err();
    assert!(err.to_string().contains("-32801") || err.to_string().contains("changed"), "{err}");
    assert!(client.is_alive());
    client.shutdown().unwrap();

    // Without a model the actions are shown disabled, with the reason.
    let mut client = LspClient::builder().without_model().root(ws.path()).spawn().unwrap();
    client.open(&tests, "python", TESTS);
    let offered = actions(&mut client, &tests, 4, 8, "quickfix");
    assert!(offered[0]["disabled"]["reason"].as_str().unwrap().contains("needs the model"), "{offered:?}");
    let calc = uri(ws.path(), "calc.py");
    client.open(&calc, "python", CALC_ON_DISK);
    let faster = actions(&mut client, &calc, 5, 6, "refactor.rewrite");
    assert_eq!(faster[0]["title"], "Find a faster version of `scale`");
    // A selection is for extract method: the function-level actions stay out of its light bulb.
    let selected = client
        .request(
            "textDocument/codeAction",
            json!({ "textDocument": { "uri": calc }, "range": { "start": { "line": 5, "character": 4 }, "end": { "line": 5, "character": 30 } },
                    "context": { "diagnostics": [] } }),
        )
        .unwrap();
    assert!(selected.as_array().unwrap().iter().all(|a| a["kind"] != "refactor.rewrite" && a["kind"] != "quickfix"), "{selected}");
    client.shutdown().unwrap();
}

fn sleeping_processes(marker: &str) -> usize {
    let out = std::process::Command::new("pgrep").arg("-f").arg(marker).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn cancelling_a_running_action_kills_its_test_process() {
    let ws = workspace(&[("calc.py", CALC_UNSAVED), ("test_calc.py", TESTS)]);
    // A test command that hangs: the action must stop it when cancelled, either way a client cancels.
    // Unique per run, so no process of another run can be mistaken for this one's.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let marker = format!("sleep 86{}.{:06}", std::process::id() % 10, nanos % 1_000_000);
    let mut client = LspClient::builder()
        .model(&test_model())
        .root(ws.path())
        .init_options(json!({ "tests": { "commands": { "python": format!("{marker}; false") }, "timeoutMs": 120000 } }))
        .spawn()
        .unwrap();
    let tests = uri(ws.path(), "test_calc.py");
    client.open(&tests, "python", TESTS);
    let offered = actions(&mut client, &tests, 4, 8, "quickfix");

    // 1. $/cancelRequest of the resolve.
    let id = client.send_request("codeAction/resolve", offered[0].clone());
    let t0 = Instant::now();
    while sleeping_processes(&marker) == 0 && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(sleeping_processes(&marker) > 0, "the test command never started");
    client.cancel(id);
    let err = client.wait_response(id, Duration::from_secs(20)).unwrap_err();
    assert!(err.to_string().contains("-32800") || err.to_string().to_lowercase().contains("cancel"), "{err}");
    let t1 = Instant::now();
    while sleeping_processes(&marker) > 0 && t1.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let ps = std::process::Command::new("sh").arg("-c").arg(format!("ps -eo pid,ppid,pgid,stat,args | grep '{marker}'")).output().unwrap();
    assert_eq!(sleeping_processes(&marker), 0, "the hanging test survived the cancellation: {}\n{}", String::from_utf8_lossy(&ps.stdout), client.stderr());

    // 2. The cancel button of the progress (window/workDoneProgress/cancel).
    client.take_notifications("$/progress");
    let id = client.send_request("codeAction/resolve", offered[0].clone());
    let token = loop {
        let progress = client.wait_notification("$/progress", Duration::from_secs(30)).unwrap();
        if progress["value"]["kind"] == "begin" && progress["token"].as_str().is_some_and(|t| t.starts_with("pie-ls/action/")) {
            assert_eq!(progress["value"]["cancellable"], true);
            break progress["token"].clone();
        }
    };
    let t2 = Instant::now();
    while sleeping_processes(&marker) == 0 && t2.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    client.notify("window/workDoneProgress/cancel", json!({ "token": token }));
    let resolved = client.wait_response(id, Duration::from_secs(20)).unwrap();
    assert_eq!(resolved["disabled"]["reason"], "cancelled", "{resolved}");
    assert_eq!(sleeping_processes(&marker), 0);
    assert!(client.is_alive());
    client.shutdown().unwrap();
}

#[test]
fn a_faster_version_is_offered_with_its_measured_speedup_and_then_kept() {
    let dir = pie_ls_harness::tests_dir().join("fixtures/perf/02_has_duplicates");
    let slow = std::fs::read_to_string(dir.join("slow.py")).unwrap();
    let tests = std::fs::read_to_string(dir.join("test_slow.py")).unwrap();
    let ws = workspace(&[("slow.py", &slow), ("test_slow.py", &tests)]);
    // One greedy candidate keeps the test short; the default is 3.
    let mut client = LspClient::builder()
        .model(&default_model())
        .root(ws.path())
        .init_options(json!({ "perf": { "candidates": 1, "runs": 12, "budgetS": 30 } }))
        .spawn()
        .unwrap();
    let uri = uri(ws.path(), "slow.py");
    client.open(&uri, "python", &slow);
    let offered = actions(&mut client, &uri, 5, 8, "refactor.rewrite");
    assert_eq!(offered.len(), 1, "{offered:?}");
    assert_eq!(offered[0]["title"], "Find a faster version of `has_duplicate_ids`");
    let t0 = Instant::now();
    let resolved = resolve(&mut client, &offered[0], Duration::from_secs(600));
    eprintln!("resolved in {:.1} s: {}", t0.elapsed().as_secs_f64(), serde_json::to_string_pretty(&resolved).unwrap());
    let result = &resolved["data"]["result"];
    assert_eq!(result["status"], "faster", "{resolved}");
    let m = &result["measurement"];
    assert!(m["equivalent"] == true && m["ci_low"].as_f64().unwrap() > 1.0, "{m}");
    assert!(m["recorded_inputs"].as_u64().unwrap() > 0, "inputs recorded from the user's tests: {m}");
    let title = resolved["title"].as_str().unwrap();
    assert!(title.starts_with("Faster `has_duplicate_ids`: ") && title.contains("x (95% CI "), "{title}");
    let new_text = apply(&slow, &resolved["edit"], &uri);
    assert!(new_text.starts_with("\"\"\"Validation helpers for imported records.\"\"\""), "{new_text}");
    // The rewrite passes the user's tests for real.
    let check = workspace(&[("slow.py", &new_text), ("test_slow.py", &tests)]);
    let ok = std::process::Command::new("python3")
        .arg("-c")
        .arg("import test_slow as t\nfor n in dir(t):\n    n.startswith('test') and getattr(t, n)()")
        .current_dir(check.path())
        .status()
        .unwrap();
    assert!(ok.success(), "{new_text}");
    // Asked again at the same version, the measured action is offered directly, with its edit and title.
    let again = actions(&mut client, &uri, 5, 8, "refactor.rewrite");
    assert_eq!(again[0]["title"].as_str(), Some(title));
    assert!(again[0]["edit"]["changes"].is_object());
    // After an edit it is a plain offer again: the measurement was for the old text.
    client.edit(&uri, vec![pie_ls_harness::range_change((0, 0), (0, 0), "# edited\n")]);
    let after = actions(&mut client, &uri, 6, 8, "refactor.rewrite");
    assert_eq!(after[0]["title"], "Find a faster version of `has_duplicate_ids`");
    client.shutdown().unwrap();
}
