//! Every trace in `tests/traces/` replays against the real server (with the small test model) with all its
//! expectations met.

use pie_ls_harness::trace::{replay, ReplayOptions, Trace};
use pie_ls_harness::LspClient;

#[test]
fn all_traces_replay_with_their_expectations_met() {
    let dir = pie_ls_harness::tests_dir().join("traces");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            let trace = Trace::load(&path).unwrap();
            let mut lsp = LspClient::builder().model(&pie_ls_harness::test_model()).spawn().unwrap();
            let report = replay(&mut lsp, &trace, ReplayOptions::default(), |_| {}).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            assert!(report.checks > 0, "{} has no expectations", path.display());
            replayed += 1;
        }
    }
    assert!(replayed >= 1);
}
