//! `pie-ls-replay TRACE [--fast]`: replays a recorded edit trace against the real server and shows, step by step,
//! what the server believes the document is. The headless demo of the README runs this.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use pie_ls_harness::trace::{replay, Event, ReplayOptions, Trace};
use pie_ls_harness::LspClient;
use serde_json::json;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut trace_path = None;
    let mut realtime = true;
    for arg in args.by_ref() {
        match arg.as_str() {
            "--fast" => realtime = false,
            "-h" | "--help" => {
                println!("usage: pie-ls-replay TRACE.jsonl [--fast]\n  Replays a trace against the pie-ls binary ($PIE_LS_BIN or next to this one).");
                return Ok(());
            }
            other => trace_path = Some(PathBuf::from(other)),
        }
    }
    let trace_path = trace_path.context("usage: pie-ls-replay TRACE.jsonl [--fast]")?;
    let trace = Trace::load(&trace_path)?;
    println!("replaying {} ({} steps) against {}", trace_path.display(), trace.steps.len(), pie_ls_harness::server_binary()?.display());
    let mut lsp = LspClient::start()?;
    let encoding = lsp.initialize_result()["capabilities"]["positionEncoding"].clone();
    println!("initialized: position encoding {encoding}, incremental sync");
    let mut last_uri = String::new();
    let mut changes_since_print = 0;
    let report = replay(&mut lsp, &trace, ReplayOptions { realtime }, |event| match event {
        Event::Opened { uri } => {
            println!("open   {uri}");
            last_uri = uri.to_owned();
        }
        Event::Changed { uri, version, changes } => {
            changes_since_print += 1;
            last_uri = uri.to_owned();
            if changes > 1 || changes_since_print % 10 == 0 {
                println!("change {uri} v{version} ({changes} content change{})", if changes == 1 { "" } else { "s" });
            }
        }
        Event::Checked { uri, state } => println!(
            "check  {uri} v{}: {} lines, {} syntax errors, last parse {:.3} ms — text matches the expected state",
            state["version"], state["lineCount"], state["syntaxErrors"], state["parseMs"].as_f64().unwrap_or(f64::NAN)
        ),
        Event::Answered { method, result } => println!("answer {method}: {result}"),
    })?;
    let state = lsp.document_state(&last_uri)?;
    println!("\nfinal text of {last_uri} (version {}):\n{}", state["version"], state["text"].as_str().unwrap_or_default());
    let tree = lsp.request("pie/syntaxTree", json!({ "textDocument": { "uri": last_uri } }))?;
    let sexp = tree["sexp"].as_str().unwrap_or("(none)");
    println!("tree: {}…", &sexp[..sexp.char_indices().nth(160).map(|(i, _)| i).unwrap_or(sexp.len())]);
    println!("\nreplayed {} changes, {} checks passed, in {:.2} s", report.changes, report.checks, report.elapsed.as_secs_f64());
    let status = lsp.shutdown()?;
    std::thread::sleep(Duration::from_millis(10));
    println!("server exited: {status}");
    Ok(())
}
