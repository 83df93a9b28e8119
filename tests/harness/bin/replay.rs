//! `pie-ls-replay TRACE [--fast]`: replays a recorded edit trace against the real server and shows, step by step,
//! what the server believes the document is. `pie-ls-replay --headline FILE`: one edit in the middle of a real
//! file, its PIE update against a full re-read of the same text, and the suggestion right after it (see
//! `headline.rs`). The headless demo of the README runs both.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use pie_ls_harness::headline;
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
    let mut headline_file: Option<PathBuf> = None;
    let mut headline_bytes = 15_000;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--fast" => realtime = false,
            "--headline" => headline_file = Some(PathBuf::from(args.next().context("--headline needs a Python file")?)),
            "--headline-bytes" => headline_bytes = args.next().context("--headline-bytes needs a number")?.parse()?,
            "--no-model" => with_model = false,
            "--model" => model = Some(args.next().context("--model needs a path")?),
            "-h" | "--help" => {
                println!("usage: pie-ls-replay TRACE.jsonl [--fast] [--model GGUF | --no-model]\n       pie-ls-replay --headline FILE.py [--headline-bytes N] [--model GGUF]\n  Replays a trace against the pie-ls binary ($PIE_LS_BIN or next to this one), or measures one edit in the\n  middle of FILE's first N bytes (default 15000, ~4k tokens) against a full re-read of the same text.\n  Without --model the server uses $PIE_LS_MODEL or the default model.");
                return Ok(());
            }
            other => trace_path = Some(PathBuf::from(other)),
        }
    }
    if let Some(file) = headline_file {
        anyhow::ensure!(with_model, "--headline measures the model's cache: it cannot run with --no-model");
        return run_headline(&file, headline_bytes, model);
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

/// The headline: one real file, one edit, the PIE update against a full re-read measured in the same run.
fn run_headline(file: &std::path::Path, max_bytes: usize, model: Option<String>) -> Result<()> {
    let full = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let text = headline::leading_part(&full, max_bytes);
    let mut builder = LspClient::builder().init_options(headline::settings(text));
    if let Some(path) = model {
        builder = builder.model(&path);
    }
    let mut lsp = builder.spawn()?;
    println!(
        "\nheadline: {} ({} lines, {} bytes{}), opened in the real server (its defaults, the prompt window widened to the whole file)",
        file.display(),
        text.lines().count(),
        text.len(),
        if text.len() < full.len() { ", its first definitions" } else { "" }
    );
    let h = headline::run(&mut lsp, text)?;
    println!("  read at open:     {} tokens into the KV cache in {:.1} s (the one full read, model load included)", h.tokens, h.open.as_secs_f64());
    println!(
        "  an edit:          a new function's first lines, typed before line {} in one didChange; the PIE update took {:.0} ms:\n                    {} tokens encoded, {} cached tokens after the edit moved by rotation",
        h.edit_line + 1,
        h.update_ms,
        h.update_encoded,
        h.update_shifted
    );
    println!("{}", indent(headline::TYPED));
    match &h.suggestion {
        Some(s) => println!("  suggestion:       asked for at the cursor right after the update, answered in {:.0} ms:\n{}", h.suggestion_time.as_secs_f64() * 1e3, indent(s)),
        None => println!("  suggestion:       none ({:.0} ms)", h.suggestion_time.as_secs_f64() * 1e3),
    }
    println!("  full re-read:     the same edited text opened from scratch: {} tokens in {:.1} s", h.reread_tokens, h.reread.as_secs_f64());
    println!("  => the edit cost {:.0} ms with PIE against {:.1} s for a full re-read ({:.0}x less)", h.update_ms, h.reread.as_secs_f64(), h.reread.as_secs_f64() * 1e3 / h.update_ms.max(0.001));
    let status = lsp.shutdown()?;
    println!("server exited: {status}");
    Ok(())
}
