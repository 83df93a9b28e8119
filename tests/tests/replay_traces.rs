//! Every trace in `tests/traces/` replays against the real server (with the small test model) with all its
//! expectations met.

use pie_ls_harness::headline;
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

/// The demo's headline on a real file of the repository: the edit is a PIE update (a few tokens encoded, not the
/// file again), and the re-read encodes the whole edited text. Figures of time are printed by the demo, not
/// asserted here.
#[test]
fn the_headline_measures_one_pie_update_against_a_full_re_read() {
    let file = std::fs::read_to_string(pie_ls_harness::tests_dir().join("eval/run_gate.py")).unwrap();
    let text = headline::leading_part(&file, 6_000);
    assert!(text.len() > 3_000 && text.len() <= 6_000, "{} bytes", text.len());
    let mut lsp = LspClient::builder().model(&pie_ls_harness::test_model()).init_options(headline::settings(text)).spawn().unwrap();
    let h = headline::run(&mut lsp, text).unwrap();
    assert!(h.tokens > 500, "{h:?}");
    // The test model has no FIM markers, so its prompt ends at the cursor: the text after the edit leaves the
    // prompt instead of moving (the default model's FIM prompt keeps and rotates it; the demo shows that).
    assert!(h.update_encoded > 0 && h.update_encoded * 10 < h.reread_tokens, "the update encoded the file again: {h:?}");
    assert!(h.reread_tokens > h.tokens, "the re-read holds the whole edited text: {h:?}");
    assert!(h.update_ms.is_finite() && h.update_ms > 0.0, "{h:?}");
}
