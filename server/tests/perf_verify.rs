//! The verification behind "Find a faster version", without a model: hand-written candidates go through the same
//! pipeline (`find_faster`) as the model's. A correct fast rewrite is offered with a confidence interval above
//! 1.0; a fast but wrong one (it passes the user's tests) is rejected by old-vs-new on generated inputs; a
//! correct but slower one is not offered.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use pie_ls::features::chat::ScriptedChat;
use pie_ls::features::perf::{find_faster, Job};
use pie_ls::runner::{Scratch, TestCommands};

fn fixture(name: &str) -> PathBuf {
    server_dir().join("../tests/fixtures/perf").join(name)
}

fn run(name: &str, function: &str, candidate: &str) -> Result<pie_ls::features::perf::Faster, pie_ls::features::perf::NoFaster> {
    let dir = fixture(name);
    let ws = Scratch::empty("perf-verify").unwrap();
    for f in ["slow.py", "test_slow.py"] {
        ws.write(f.as_ref(), &std::fs::read_to_string(dir.join(f)).unwrap()).unwrap();
    }
    let job = Job {
        root: ws.path().to_owned(),
        overlays: Vec::new(),
        file: "slow.py".into(),
        function: function.into(),
        candidates: 1,
        runs: 12,
        max_tokens: 256,
        budget_s: 25,
        commands: TestCommands::default(),
    };
    let model = ScriptedChat::code("it avoids repeated work.", candidate.to_owned());
    find_faster(&job, &model, &Arc::new(AtomicBool::new(false)), &mut |_, _| {})
}

fn read(name: &str, file: &str) -> String {
    std::fs::read_to_string(fixture(name).join(file)).unwrap()
}

#[test]
fn a_correct_fast_rewrite_is_offered_with_its_interval() {
    let faster = run("19_dedupe_order", "unique_in_order", &read("19_dedupe_order", "fast.py")).expect("offered");
    let m = &faster.measurement;
    assert!(m.equivalent && m.ci_low.unwrap() > 1.0, "{m:?}");
    assert!(m.recorded_inputs > 0 && m.generated_inputs > 0, "inputs from the tests and generated ones: {m:?}");
    assert!(faster.title().starts_with("Faster `unique_in_order`: ") && faster.title().contains("95% CI"), "{}", faster.title());
    let new_text = pie_ls::features::perf::apply(&faster.original_text, &faster.edits);
    assert!(new_text.starts_with("\"\"\"Playlist tools.\"\"\""), "the module docstring stays first: {new_text}");
    assert!(!new_text.contains("if item not in result"), "{new_text}");
}

#[test]
fn fast_but_wrong_rewrites_are_rejected_although_they_pass_the_tests() {
    for (name, function) in [("19_dedupe_order", "unique_in_order"), ("14_sliding_max", "sliding_max"), ("01_pair_sums", "count_pairs_with_sum")] {
        let no = run(name, function, &read(name, "wrong.py")).expect_err("a wrong candidate must not be offered");
        let verdict = &no.candidates[0].verdict;
        assert!(verdict.starts_with("rejected"), "{name}: {verdict}");
    }
}

#[test]
fn a_correct_but_slower_rewrite_is_not_offered() {
    let slower = "def unique_in_order(items):\n    result = []\n    for item in items:\n        if item not in result and item not in list(result):\n            result.append(item)\n    return result\n";
    let no = run("19_dedupe_order", "unique_in_order", slower).expect_err("slower must not be offered");
    let c = &no.candidates[0];
    assert!(c.verdict.starts_with("equivalent but not measurably faster"), "{}", c.verdict);
    assert!(c.measurement.as_ref().unwrap().ci_low.unwrap() < 1.0);
}

/// `server/` of the checkout the test runs from (cargo's run-time `CARGO_MANIFEST_DIR`; the compile-time one names
/// the checkout a shared build directory built the binary in).
fn server_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map(Into::into).unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}
