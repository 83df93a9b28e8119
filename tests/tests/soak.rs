//! A 2-minute soak through the real server with the test model: `pie-ls bench soak` drives 8 documents (two of
//! 10,000 lines, one over the warm limit) with typing, pastes, undo-like replacements, completions, cancellations,
//! configuration changes, closes and reopens, then checks every text, every warm cache and the memory bound. The
//! 30-minute run is `pie-ls bench soak` itself (not part of the suite).

use std::process::Command;

use pie_ls_harness::{server_binary, test_model};
use serde_json::Value;

#[test]
fn two_minutes_of_editing_leave_every_text_and_warm_cache_in_step() {
    let output = Command::new(server_binary().unwrap())
        // 128 MiB over the warm-up's peak: RSS swings 40-85 MiB within a run as caches are built, read and
        // evicted. With `engine/heap.rs`'s fixed mmap
        // threshold, runs here rose 35-57 MiB over the warm-up's peak; without it evicted caches stayed resident
        // (+88 MiB here, +138 MiB on a CI machine). Growth over a long session is what the 30-minute
        // `pie-ls bench soak` judges.
        .args(["bench", "soak", "--minutes", "2", "--seed", "7", "--prefix-bytes", "1500", "--suffix-bytes", "500", "--rss-slack-mib", "128", "--model", &test_model()])
        .output()
        .expect("running pie-ls bench soak");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "the soak failed:\n{stdout}\n{stderr}");
    let line = stdout.lines().find_map(|l| l.strip_prefix("soak-result ")).expect("a soak-result line");
    let result: Value = serde_json::from_str(line).unwrap();
    assert_eq!(result["documentsEqual"], result["documents"], "{result}");
    assert!(result["warmChecked"].as_u64().unwrap() >= 1, "{result}");
    assert_eq!(result["warmInStep"], result["warmChecked"], "{result}");
    // How much gets done in 2 minutes depends on the machine (a loaded one runs a few operations): only that
    // something was typed is asserted here; the figures are printed.
    assert!(result["keystrokes"].as_u64().unwrap() > 0, "the soak typed nothing: {result}");
    assert_eq!(result["unexpected"], serde_json::json!([]), "{result}");
}
