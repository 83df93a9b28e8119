//! `pie-ls bench completion`: keystroke-to-first-token and keystroke-to-suggestion latency on real code, for
//! three ways of keeping a completion prompt in the cache, measured side by side in one run on one engine:
//!
//! - `pie`: the whole file as a fill-in-the-middle prompt with the cursor marker in place; each keystroke is an
//!   edit applied by PIE (encode the new tokens, rotate the rest). This is what the server does.
//! - `prefix-only`: the same prompt, but everything after the first changed token is recomputed (what most
//!   tools do when they keep a cache at all).
//! - `llama.vim`: a snapshot of the file as stable context at the start, then a small volatile window (32
//!   lines before, 8 after the cursor) at the end, updated with llama-server's `--cache-reuse 256` algorithm.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{bail, Context};

use super::quantile;
use crate::engine::{resolve_model, Engine, EngineConfig, KvSession, TextEdit, UpdateMode};
use crate::features::completion::{generate_suggestion, prompt_edits, text_after_cursor, CompletionConfig, Markers, PromptBuilder};

#[derive(Debug, Clone, clap::Args)]
pub struct CompletionBenchArgs {
    /// Model spec (default: $PIE_LS_MODEL, then the default model).
    #[arg(long)]
    pub model: Option<String>,
    /// Document sizes in tokens.
    #[arg(long, value_delimiter = ',', default_value = "1000,4000")]
    pub sizes: Vec<usize>,
    /// Inference threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Cursor positions per size (spread over the second half of the file).
    #[arg(long, default_value_t = 3)]
    pub positions: usize,
    /// Keystrokes typed at each position.
    #[arg(long, default_value_t = 10)]
    pub keystrokes: usize,
    /// Keystrokes at each position for prefix-only, whose updates take seconds each.
    #[arg(long, default_value_t = 3)]
    pub slow_keystrokes: usize,
    /// Tokens per suggestion at most.
    #[arg(long, default_value_t = 24)]
    pub suggestion_tokens: usize,
    /// Source file (default: Python standard-library modules, concatenated).
    #[arg(long)]
    pub file: Option<std::path::PathBuf>,
    /// Measure keystroke-to-ghost-text through the real server (this binary, over LSP) at the server's default
    /// completion settings, with the first suggestion in time (`completion.firstSuggestionMs`) and without it
    /// (0: the whole suggestion before the answer), side by side.
    #[arg(long)]
    pub through_lsp: bool,
    /// Through LSP: the pause after each answer before the next keystroke, in milliseconds.
    #[arg(long, default_value_t = 600)]
    pub think_ms: u64,
    /// Through LSP: extra server settings (JSON, merged into `initializationOptions` of both runs), e.g.
    /// '{"model":{"refreshTokensPerPause":0}}' to see what the idle refresh costs the next keystroke.
    #[arg(long)]
    pub settings: Option<String>,
    /// Through LSP: only the run at the default `firstSuggestionMs` (skip the "before" run).
    #[arg(long)]
    pub default_only: bool,
    /// Through LSP: write the server's own log here (its `--log-file`; the level follows `RUST_LOG`; each run
    /// appends), to see where a slow answer's time went.
    #[arg(long)]
    pub server_log: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, PartialEq)]
enum Layout {
    Pie,
    PrefixOnly,
    LlamaVim,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::Pie => "pie",
            Layout::PrefixOnly => "prefix-only",
            Layout::LlamaVim => "llama.vim",
        }
    }
    fn mode(self) -> UpdateMode {
        match self {
            Layout::Pie => UpdateMode::Pie,
            Layout::PrefixOnly => UpdateMode::PrefixReuse,
            Layout::LlamaVim => UpdateMode::CacheReuse { min_chunk: 256 },
        }
    }
}

struct Figures {
    first_token_ms: Vec<f64>,
    suggestion_ms: Vec<f64>,
    encoded: Vec<f64>,
    example: Option<String>,
}

pub fn run(args: CompletionBenchArgs) -> anyhow::Result<()> {
    if args.through_lsp {
        return run_through_lsp(&args);
    }
    let path = resolve_model(args.model.as_deref())?;
    let config = EngineConfig { threads: args.threads, ..EngineConfig::default() };
    let engine = Engine::load(&path, config)?;
    let markers = Markers::of_model(&engine).context("this benchmark needs a fill-in-the-middle model")?;
    let source = match &args.file {
        Some(file) => std::fs::read_to_string(file)?,
        None => stdlib_source()?,
    };
    println!(
        "pie-ls bench completion: model {}, {} threads, {} positions x {} keystrokes ({} for prefix-only), suggestions up to {} tokens",
        engine.info().name, args.threads, args.positions, args.keystrokes, args.slow_keystrokes, args.suggestion_tokens
    );
    println!(
        "{:>6} {:<12} {:>10} {:>10} {:>10} {:>10} {:>14} {:>12}",
        "tokens", "layout", "first_p50", "first_p95", "sugg_p50", "sugg_p95", "encoded/key", "vs prefix"
    );
    for &size in &args.sizes {
        let doc = truncate_to_tokens(&engine, &source, size);
        let mut rows = Vec::new();
        for layout in [Layout::Pie, Layout::LlamaVim, Layout::PrefixOnly] {
            let figures = measure(&engine, &markers, &doc, layout, &args)?;
            rows.push((layout, figures));
        }
        let prefix_p50 = rows.iter().find(|(l, _)| *l == Layout::PrefixOnly).map(|(_, f)| quantile(&mut f.first_token_ms.clone(), 0.5));
        for (layout, f) in &mut rows {
            let first_p50 = quantile(&mut f.first_token_ms, 0.5);
            println!(
                "{:>6} {:<12} {:>8.0}ms {:>8.0}ms {:>8.0}ms {:>8.0}ms {:>14.1} {:>11.1}x",
                engine.tokenize(&doc, false).len(),
                layout.name(),
                first_p50,
                quantile(&mut f.first_token_ms, 0.95),
                quantile(&mut f.suggestion_ms, 0.5),
                quantile(&mut f.suggestion_ms, 0.95),
                f.encoded.iter().sum::<f64>() / f.encoded.len().max(1) as f64,
                prefix_p50.map(|p| p / first_p50).unwrap_or(f64::NAN),
            );
        }
        if let Some(example) = rows.iter().find_map(|(l, f)| (*l == Layout::Pie).then(|| f.example.clone()).flatten()) {
            println!("       example suggestion (pie, {size} tokens): {example:?}");
        }
    }
    println!("first = keystroke to first generated token; sugg = keystroke to finished suggestion; vs prefix = prefix-only first_p50 / this first_p50");
    Ok(())
}

/// The statement typed at each position, one character per keystroke.
const TYPED: &str = "result = self.";

fn measure(engine: &Engine, markers: &Markers, doc: &str, layout: Layout, args: &CompletionBenchArgs) -> anyhow::Result<Figures> {
    let keystrokes = if layout == Layout::PrefixOnly { args.slow_keystrokes } else { args.keystrokes }.min(TYPED.len());
    let pie_prompts = PromptBuilder::new(Some(markers.clone()), usize::MAX / 4, usize::MAX / 4);
    let config = CompletionConfig { max_tokens: args.suggestion_tokens, time_budget_ms: 60_000, ..CompletionConfig::default() };
    let snapshot = doc.to_owned();
    let build = |text: &str, cursor: usize| match layout {
        Layout::Pie | Layout::PrefixOnly => pie_prompts.build(text, cursor).text,
        Layout::LlamaVim => llama_vim_prompt(markers, &snapshot, text, cursor),
    };
    let mut figures = Figures { first_token_ms: Vec::new(), suggestion_ms: Vec::new(), encoded: Vec::new(), example: None };
    let line_starts: Vec<usize> = std::iter::once(0).chain(doc.match_indices('\n').map(|(i, _)| i + 1)).collect();
    let mut session: Option<KvSession> = None;
    let mut prompt = String::new();
    for p in 0..args.positions {
        // Positions in the second half of the file: where PIE has a long suffix to rotate, and prefix-only much to
        // recompute.
        let line = line_starts.len() / 2 + (p + 1) * line_starts.len() / (2 * (args.positions + 1));
        // A new line above `line`, at its indentation, as a user starting a statement there would type.
        let start = line_starts[line.min(line_starts.len() - 1)];
        let indent: String = doc[start..].chars().take_while(|c| *c == ' ' || *c == '\t').collect();
        let mut text = doc.to_owned();
        text.insert_str(start, &format!("{indent}\n"));
        let mut cursor = start + indent.len();
        let new_prompt = build(&text, cursor);
        // Moving to the position is not timed: it is the cursor jump, not the keystroke.
        match session.as_mut() {
            None => session = Some(KvSession::open(engine, &new_prompt)?),
            Some(s) => {
                s.update_with(&new_prompt, &prompt_edits(&prompt, &new_prompt), UpdateMode::Pie)?;
            }
        }
        prompt = new_prompt;
        let s = session.as_mut().expect("opened above");
        for ch in TYPED.chars().take(keystrokes) {
            text.insert(cursor, ch);
            cursor += ch.len_utf8();
            let new_prompt = build(&text, cursor);
            let edits: Vec<TextEdit> = prompt_edits(&prompt, &new_prompt);
            let started = Instant::now();
            let before = s.stats().encoded_tokens;
            s.update_with(&new_prompt, &edits, layout.mode())?;
            let line_start = text[..cursor].rfind('\n').map(|i| i + 1).unwrap_or(0);
            let generated = generate_suggestion(s, &text[line_start..cursor], text_after_cursor(&text, cursor), &config, &AtomicBool::new(false), started)?;
            figures.suggestion_ms.push(started.elapsed().as_secs_f64() * 1e3);
            figures.first_token_ms.push(generated.first_token_ms.unwrap_or(f64::NAN));
            figures.encoded.push((s.stats().encoded_tokens - before) as f64);
            if figures.example.is_none() && ch == '.' || figures.example.is_none() && generated.text.len() > 8 {
                figures.example = Some(format!("{}|{}", &text[line_start..cursor], generated.text));
            }
            prompt = new_prompt;
        }
    }
    Ok(figures)
}

/// What one server setting gave through LSP.
#[derive(Default)]
struct GhostFigures {
    ghost_ms: Vec<f64>,
    first_chars: Vec<f64>,
    paused_chars: Vec<f64>,
    empty: usize,
    generated_tokens: Vec<f64>,
    /// The server's own figures (pie/status): from receiving the request to the first token, and prompt tokens
    /// it encoded for the request.
    server_first_ms: Vec<f64>,
    encoded: Vec<f64>,
}

/// Keystroke to ghost text through the real server: a `didChange` of one character, then
/// `textDocument/inlineCompletion` at once, timed from sending the keystroke to the answer, at positions in the
/// second half of the file. After each answer the user pauses (`--think-ms`) and asks again at the same place,
/// which is served from the shown suggestion as extended meanwhile.
fn run_through_lsp(args: &CompletionBenchArgs) -> anyhow::Result<()> {
    use pie_ls_harness::{range_change, LspClient};
    use serde_json::json;
    let path = resolve_model(args.model.as_deref())?;
    let source = match &args.file {
        Some(file) => std::fs::read_to_string(file)?,
        None => stdlib_source()?,
    };
    let server = std::env::current_exe().context("finding this executable")?;
    let docs: Vec<(usize, String)> = {
        // Only to count tokens; dropped before the servers start.
        let engine = Engine::load(&path, EngineConfig { threads: args.threads, ..EngineConfig::default() })?;
        args.sizes.iter().map(|&size| {
            let doc = truncate_to_tokens(&engine, &source, size);
            (engine.tokenize(&doc, false).len(), doc)
        }).collect()
    };
    let defaults = CompletionConfig::default();
    println!(
        "pie-ls bench completion --through-lsp: model {}, {} threads, {} positions x {} keystrokes, {} ms pause after each answer; server defaults otherwise (maxTokens {}, firstSuggestionMs {})",
        path.display(), args.threads, args.positions, args.keystrokes, args.think_ms, defaults.max_tokens, defaults.first_suggestion_ms
    );
    if let Some(extra) = &args.settings {
        println!("settings: {extra}");
    }
    println!("{:>6} {:<28} {:>10} {:>10} {:>10} {:>12} {:>13} {:>7} {:>11} {:>14} {:>8}", "tokens", "setting", "ghost_p50", "ghost_p95", "ghost_max", "chars_first", "chars_paused", "empty", "gen_tokens", "srv_first_p50", "encoded");
    for (tokens, doc) in &docs {
        for (name, first_ms) in [("firstSuggestionMs 0 (before)", Some(0u64)), ("default (first in time)", None)] {
            if args.default_only && first_ms.is_some() {
                continue;
            }
            let mut completion = json!({});
            if let Some(ms) = first_ms {
                completion["firstSuggestionMs"] = json!(ms);
            }
            let mut options = json!({ "model": { "path": path.display().to_string(), "threads": args.threads }, "completion": completion });
            if let Some(extra) = &args.settings {
                pie_ls_harness::merge(&mut options, serde_json::from_str(extra).context("--settings is not JSON")?);
            }
            let mut builder = LspClient::builder()
                .binary(&server)
                .capabilities(json!({ "experimental": { "pieStatusNotification": true } }))
                .init_options(options);
            if let Some(log) = &args.server_log {
                builder = builder.arg("--log-file").arg(&log.to_string_lossy());
            }
            let mut lsp = builder.spawn()?;
            let uri = "file:///bench/ghost.py";
            lsp.open(uri, "python", doc);
            let deadline = Instant::now() + std::time::Duration::from_secs(1800);
            while !lsp.cache_stats(uri).is_ok_and(|s| pie_ls_harness::is_read(&s)) {
                if Instant::now() > deadline {
                    bail!("the document never became warm; server stderr:\n{}", lsp.stderr());
                }
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
            let mut f = GhostFigures::default();
            let mut text = doc.clone();
            let pos = |text: &str, at: usize| {
                let line = text[..at].matches('\n').count() as u32;
                let start = text[..at].rfind('\n').map(|i| i + 1).unwrap_or(0);
                (line, text[start..at].encode_utf16().count() as u32)
            };
            for p in 0..args.positions {
                let line_starts: Vec<usize> = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
                let line = line_starts.len() / 2 + (p + 1) * line_starts.len() / (2 * (args.positions + 1));
                let start = line_starts[line.min(line_starts.len() - 1)];
                let indent: String = text[start..].chars().take_while(|c| *c == ' ' || *c == '\t').collect();
                let at = pos(&text, start);
                lsp.edit(uri, vec![range_change(at, at, &format!("{indent}\n"))]);
                text.insert_str(start, &format!("{indent}\n"));
                let mut cursor = start + indent.len();
                // The cursor jump is not timed: wait until the warm thread has it. An edit that would move the
                // prompt's window leaves the window where it was (the server's `cursor_after_edit`) until a request
                // brings the cursor, so one untimed request here pays for the move.
                let (line, character) = pos(&text, cursor);
                let jump = json!({ "textDocument": { "uri": uri }, "position": { "line": line, "character": character }, "context": { "triggerKind": 1 } });
                lsp.request("textDocument/inlineCompletion", jump).map_err(|e| anyhow::anyhow!("{e}"))?;
                lsp.pump();
                lsp.take_notifications("pie/status");
                let _ = lsp.cache_stats(uri);
                for ch in TYPED.chars().take(args.keystrokes) {
                    let at = pos(&text, cursor);
                    let started = Instant::now();
                    lsp.edit(uri, vec![range_change(at, at, &ch.to_string())]);
                    text.insert(cursor, ch);
                    cursor += ch.len_utf8();
                    let (line, character) = pos(&text, cursor);
                    let params = json!({ "textDocument": { "uri": uri }, "position": { "line": line, "character": character }, "context": { "triggerKind": 2 } });
                    let result = lsp.request("textDocument/inlineCompletion", params.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
                    f.ghost_ms.push(started.elapsed().as_secs_f64() * 1e3);
                    lsp.pump();
                    if let Some(status) = lsp.take_notifications("pie/status").last() {
                        f.generated_tokens.push(status["generatedTokens"].as_f64().unwrap_or(0.0));
                        if let Some(ms) = status["firstTokenMs"].as_f64() {
                            f.server_first_ms.push(ms);
                        }
                        f.encoded.push(status["encodedTokens"].as_f64().unwrap_or(0.0));
                    }
                    let shown = result["items"][0]["insertText"].as_str().unwrap_or_default().chars().count();
                    if shown == 0 {
                        f.empty += 1;
                    }
                    f.first_chars.push(shown as f64);
                    std::thread::sleep(std::time::Duration::from_millis(args.think_ms));
                    let again = lsp.request("textDocument/inlineCompletion", params).map_err(|e| anyhow::anyhow!("{e}"))?;
                    f.paused_chars.push(again["items"][0]["insertText"].as_str().unwrap_or_default().chars().count() as f64);
                    lsp.take_notifications("pie/status");
                }
            }
            let _ = lsp.shutdown();
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
            println!(
                "{:>6} {:<28} {:>8.0}ms {:>8.0}ms {:>8.0}ms {:>12.1} {:>13.1} {:>7} {:>11.1} {:>12.0}ms {:>8.1}",
                tokens,
                name,
                quantile(&mut f.ghost_ms, 0.5),
                quantile(&mut f.ghost_ms, 0.95),
                f.ghost_ms.last().copied().unwrap_or(f64::NAN),
                mean(&f.first_chars),
                mean(&f.paused_chars),
                f.empty,
                mean(&f.generated_tokens),
                quantile(&mut f.server_first_ms, 0.5),
                mean(&f.encoded),
            );
        }
    }
    println!("ghost = keystroke sent to inline-completion answer received (client side); chars_first = length of that answer; chars_paused = length when asked again after the pause (the extension); empty = answers without a suggestion; gen_tokens = tokens generated before the answer (pie/status); srv_first = the server's time from receiving the request to the first token; encoded = prompt tokens the server encoded for the request (pie/status)");
    Ok(())
}

/// llama.vim's layout: stable extra context (a snapshot of the file) first, the volatile local window last.
fn llama_vim_prompt(markers: &Markers, snapshot: &str, text: &str, cursor: usize) -> String {
    let before: Vec<&str> = text[..cursor].split_inclusive('\n').collect();
    let prefix: String = before[before.len().saturating_sub(32)..].concat();
    let suffix: String = text[cursor..].split_inclusive('\n').take(8).collect();
    format!("{snapshot}\n\n{}{prefix}{}{suffix}{}", markers.prefix, markers.suffix, markers.middle)
}

pub(crate) fn truncate_to_tokens(engine: &Engine, source: &str, tokens: usize) -> String {
    let mut out = String::new();
    let mut count = 0;
    for line in source.split_inclusive('\n') {
        count += engine.tokenize(line, false).len();
        out.push_str(line);
        if count >= tokens {
            break;
        }
    }
    out
}

/// Real code that is on every machine: Python standard-library modules.
pub(crate) fn stdlib_source() -> anyhow::Result<String> {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sysconfig; print(sysconfig.get_paths()['stdlib'])"])
        .output()
        .context("running python3 to find the standard library (or pass --file)")?;
    let dir = std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let mut text = String::new();
    for name in ["textwrap.py", "shlex.py", "difflib.py", "argparse.py"] {
        if let Ok(src) = std::fs::read_to_string(dir.join(name)) {
            text.push_str(&src);
        }
    }
    if text.is_empty() {
        bail!("no standard-library sources under {}; pass --file", dir.display());
    }
    Ok(text)
}
