//! Model-written code is confined (Landlock, where the kernel offers it): a candidate that writes to `$HOME` or
//! reads a file outside the scratch copy fails its run, and the action is refused with the reason; the same
//! candidate without the escape is accepted, confined. Candidates are hand-written and go through the real
//! pipelines (`self_debug`, `find_faster`) with `ScriptedChat` in place of the model.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use pie_ls::features::chat::ScriptedChat;
use pie_ls::features::perf::{find_faster, Job as PerfJob};
use pie_ls::features::selfdebug::{self_debug, Job as DebugJob};
use pie_ls::runner::{landlock_abi, Scratch, TestCommands, TestTarget};
use pie_ls::syntax::Language;

const CALC: &str = "def add(a, b):\n    return a - b\n";
const TEST: &str = "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n";

fn home_file(tag: &str) -> PathBuf {
    Path::new(&std::env::var("HOME").unwrap()).join(format!(".pie-ls-escape-{tag}-{}", std::process::id()))
}

/// A file the candidate must not read: outside the scratch copy and the system directories.
fn secret() -> (Scratch, PathBuf) {
    let dir = Scratch::empty("confine-secret").unwrap();
    let path = dir.path().join("secret.txt");
    std::fs::write(&path, "5\n").unwrap();
    (dir, path)
}

fn debug(candidate: &str) -> Result<pie_ls::features::selfdebug::Fix, pie_ls::features::selfdebug::NoFix> {
    let ws = Scratch::empty("confine-ws").unwrap();
    ws.write("calc.py".as_ref(), CALC).unwrap();
    ws.write("test_calc.py".as_ref(), TEST).unwrap();
    let start = TEST.find("def test_add").unwrap();
    let job = DebugJob {
        language: Language::Python,
        root: ws.path().to_owned(),
        overlays: Vec::new(),
        test: TestTarget { file: "test_calc.py".into(), name: "test_add".into(), class: None },
        test_range: start..TEST.len(),
        rounds: 1,
        candidates: 1,
        commands: TestCommands::default(),
        max_tokens: 256,
        confirm: 0,
    };
    let model = ScriptedChat::code("it subtracts instead of adding.", candidate.to_owned());
    self_debug(&job, &model, &Arc::new(AtomicBool::new(false)), &mut |_, _| {})
}

#[test]
fn self_debug_refuses_a_fix_that_writes_to_home_or_reads_outside() {
    let good = debug("def add(a, b):\n    return a + b\n").expect("the plain fix is offered");
    let evidence = good.evidence.join("\n");
    if landlock_abi() == 0 {
        assert!(evidence.contains("files not confined on this platform"), "{evidence}");
        return;
    }
    assert!(evidence.contains("files confined to the scratch copy"), "{evidence}");

    let escape = home_file("selfdebug");
    let writes = format!("def add(a, b):\n    open({:?}, 'w').write('pwned')\n    return a + b\n", escape.display().to_string());
    let no = debug(&writes).expect_err("a fix that writes to $HOME must not be offered");
    assert!(!escape.exists(), "{} was written", escape.display());
    let _ = std::fs::remove_file(&escape);
    let verdict = &no.rounds[0].verdict;
    assert!(verdict.contains("still fails") && verdict.contains("the run was confined"), "{verdict}");

    let (_dir, path) = secret();
    let reads = format!("def add(a, b):\n    return a + b + int(open({:?}).read()) - 5\n", path.display().to_string());
    let no = debug(&reads).expect_err("a fix that reads outside the scratch copy must not be offered");
    let verdict = &no.rounds[0].verdict;
    assert!(verdict.contains("the run was confined"), "{verdict}");
}

fn faster(candidate: &str) -> Result<pie_ls::features::perf::Faster, pie_ls::features::perf::NoFaster> {
    let dir = server_dir().join("../tests/fixtures/perf/19_dedupe_order");
    let ws = Scratch::empty("confine-perf").unwrap();
    for f in ["slow.py", "test_slow.py"] {
        ws.write(f.as_ref(), &std::fs::read_to_string(dir.join(f)).unwrap()).unwrap();
    }
    let job = PerfJob {
        root: ws.path().to_owned(),
        overlays: Vec::new(),
        file: "slow.py".into(),
        function: "unique_in_order".into(),
        candidates: 1,
        runs: 8,
        max_tokens: 256,
        budget_s: 20,
        commands: TestCommands::default(),
    };
    find_faster(&job, &ScriptedChat::code("it keeps a set.", candidate.to_owned()), &Arc::new(AtomicBool::new(false)), &mut |_, _| {})
}

#[test]
fn a_faster_version_that_writes_to_home_is_rejected_with_the_reason() {
    if landlock_abi() == 0 {
        return;
    }
    let escape = home_file("perf");
    let candidate = format!(
        "def unique_in_order(items):\n    open({:?}, 'a').write('x')\n    seen = set()\n    result = []\n    for item in items:\n        if item not in seen:\n            seen.add(item)\n            result.append(item)\n    return result\n",
        escape.display().to_string()
    );
    let no = faster(&candidate).expect_err("must not be offered");
    assert!(!escape.exists(), "{} was written", escape.display());
    let _ = std::fs::remove_file(&escape);
    let verdict = &no.candidates[0].verdict;
    assert!(verdict.starts_with("rejected") && verdict.contains("the run was confined"), "{verdict}");
}

/// `server/` of the checkout the test runs from (cargo's run-time `CARGO_MANIFEST_DIR`; the compile-time one names
/// the checkout a shared build directory built the binary in).
fn server_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map(Into::into).unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}
