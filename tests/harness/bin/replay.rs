//! `pie-ls-replay TRACE [--fast]`: replays a recorded edit trace against the real server and shows, step by step,
//! what the server believes the document is. The headless demo of the README runs this.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use pie_ls_harness::trace::{replay, Event, ReplayOptions, Trace};
use pie_ls_harness::LspClient;
use serde_json::json;

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("       | {l}")).collect::<Vec<_>>().join("\n")
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut trace_path = None;
    let mut realtime = true;
    let mut model: Option<String> = None;
    let mut with_model = true;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--fast" => realtime = false,
            "--no-model" => with_model = false,
            "--model" => model = Some(args.next().context("--model needs a path")?),
            "-h" | "--help" => {
                println!("usage: pie-ls-replay TRACE.jsonl [--fast] [--model GGUF | --no-model]\n  Replays a trace against the pie-ls binary ($PIE_LS_BIN or next to this one).\n  Without --model the server uses $PIE_LS_MODEL or the default model.");
                return Ok(());
            }
            other => trace_path = Some(PathBuf::from(other)),
        }
    }
    let trace_path = trace_path.context("usage: pie-ls-replay TRACE.jsonl [--fast]")?;
    let trace = Trace::load(&trace_path)?;
    println!("replaying {} ({} steps) against {}", trace_path.display(), trace.steps.len(), pie_ls_harness::server_binary()?.display());
    let mut builder = LspClient::builder();
    builder = match (with_model, model) {
        (false, _) => builder.without_model(),
        (true, Some(path)) => builder.model(&path),
        (true, None) => builder,
    };
    let mut lsp = builder.spawn()?;
    let encoding = lsp.initialize_result()["capabilities"]["positionEncoding"].clone();
    println!("initialized: position encoding {encoding}, incremental sync");
    let mut last_uri = String::new();
    let mut changes_since_print = 0;
    let mut stats_at_print: Option<serde_json::Value> = None;
    let report = replay(&mut lsp, &trace, ReplayOptions { realtime }, |event| match event {
        Event::Warm { uri, stats, waited } => {
            println!(
                "warm   {uri}: {} tokens in the KV cache after {:.1} s (the one full read; from now on edits are PIE updates)",
                stats["cachedTokens"], waited.as_secs_f64()
            );
            stats_at_print = Some(stats.clone());
        }
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
        Event::Answered { method, result } if method == "textDocument/inlineCompletion" => {
            let text = result["items"][0]["insertText"].as_str().unwrap_or("(no suggestion)");
            println!("answer {method} at {}:\n{}", result["items"][0]["range"]["start"], indent(text));
        }
        Event::Answered { method, result } if method == "pie/cacheStats" => {
            let delta = |key: &str| {
                result[key].as_u64().unwrap_or(0) - stats_at_print.as_ref().and_then(|s| s[key].as_u64()).unwrap_or(0)
            };
            println!(
                "cache  {} tokens cached; since the last report: {} updates encoded {} tokens, reused {}, shifted {} by rotation; last update {:.1} ms; {} stale; {} full recomputes",
                result["cachedTokens"], delta("updates"), delta("encodedTokens"), delta("reusedTokens"), delta("shiftedTokens"),
                result["lastUpdateMs"].as_f64().unwrap_or(0.0), result["staleTokens"], result["fullRecomputes"]
            );
            stats_at_print = Some(result.clone());
        }
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
