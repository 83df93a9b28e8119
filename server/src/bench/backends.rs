//! `pie-ls bench backends`: the same typing trace on one file, keystroke by keystroke, through
//!
//! - `pie-ls local (PIE)`: the real server (this binary, over LSP) with its in-process model;
//! - `pie-ls -> llama-server`: the real server with `backend.kind = "llama-server"` on a real llama-server
//!   (`--cache-reuse 256`, one slot), the layout pie-ls sends (`/infill`, stable parts first);
//! - `llama.vim -> llama-server`: llama.vim's request shape sent straight to a fresh llama-server started the same
//!   way (`/infill`, 256 lines before the cursor's line, the line up to the cursor as `prompt`, the rest of the
//!   line and 64 lines as suffix, `n_cache_reuse 256`, `t_max_prompt_ms 500`, `t_max_predict_ms 1000`).
//!
//! Per keystroke: keystroke-to-suggestion (client side), first token, and prompt tokens evaluated (pie/status;
//! llama-server's `timings.prompt_n`). The server is started by this command, from `--llama-server`,
//! `$PIE_LS_LLAMA_SERVER`, or `scripts/llama-server`'s cache; it is an external program, never linked.

use std::io::Read;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::completion::{stdlib_source, truncate_to_tokens};
use super::quantile;
use crate::engine::{resolve_model, Engine, EngineConfig};

#[derive(Debug, Clone, clap::Args)]
pub struct BackendsBenchArgs {
    /// Model spec (default: $PIE_LS_MODEL, then the default model). A FIM model: llama-server's `/infill` needs one.
    #[arg(long)]
    pub model: Option<String>,
    /// The llama-server binary (default: $PIE_LS_LLAMA_SERVER, then scripts/llama-server's cache).
    #[arg(long)]
    pub llama_server: Option<std::path::PathBuf>,
    /// Document size in tokens.
    #[arg(long, default_value_t = 4000)]
    pub size: usize,
    /// Threads (pie-ls's model and llama-server alike).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Cursor positions (spread over the second half of the file).
    #[arg(long, default_value_t = 3)]
    pub positions: usize,
    /// Keystrokes typed at each position.
    #[arg(long, default_value_t = 10)]
    pub keystrokes: usize,
    /// Tokens per suggestion at most (all three).
    #[arg(long, default_value_t = 24)]
    pub suggestion_tokens: usize,
    /// Source file (default: Python standard-library modules, concatenated).
    #[arg(long)]
    pub file: Option<std::path::PathBuf>,
    /// Extra settings for the in-process row (JSON, merged into its `initializationOptions`), e.g.
    /// '{"model":{"draftTokens":2}}'.
    #[arg(long)]
    pub settings: Option<String>,
    /// Only the in-process row (to compare settings quickly; the peer's figures need the full run).
    #[arg(long)]
    pub local_only: bool,
}

/// The statement typed at each position, one character per keystroke.
const TYPED: &str = "result = self.";

#[derive(Default)]
struct Figures {
    suggestion_ms: Vec<f64>,
    first_token_ms: Vec<f64>,
    evaluated: Vec<f64>,
    errors: usize,
    /// Tokens generation drafted from the document, and those the model confirmed (the in-process row).
    drafts: Option<(u64, u64)>,
}

pub fn run(args: BackendsBenchArgs) -> anyhow::Result<()> {
    let model = resolve_model(args.model.as_deref())?;
    let binary = llama_server_binary(args.llama_server.clone())?;
    let source = match &args.file {
        Some(file) => std::fs::read_to_string(file)?,
        None => stdlib_source()?,
    };
    let (tokens, doc) = {
        // Only to count tokens; dropped before the servers start.
        let engine = Engine::load(&model, EngineConfig { threads: args.threads, ..EngineConfig::default() })?;
        let doc = truncate_to_tokens(&engine, &source, args.size);
        (engine.tokenize(&doc, false).len(), doc)
    };
    println!(
        "pie-ls bench backends: model {}, {tokens}-token file, {} threads, {} positions x {} keystrokes, suggestions up to {} tokens",
        model.display(),
        args.threads,
        args.positions,
        args.keystrokes,
        args.suggestion_tokens
    );
    let trace = Trace::new(&doc, args.positions, args.keystrokes);
    let mut rows: Vec<(&str, Figures)> = Vec::new();

    eprintln!("== pie-ls local (PIE)");
    let mut local = json!({ "model": { "path": model.display().to_string(), "threads": args.threads } });
    if let Some(extra) = &args.settings {
        let extra: Value = serde_json::from_str(extra).context("--settings is not JSON")?;
        pie_ls_harness::merge(&mut local, extra);
    }
    rows.push(("pie-ls local (PIE)", through_pie_ls(&args, &trace, local, None)?));

    if args.local_only {
        print_rows(&mut rows);
        return Ok(());
    }

    eprintln!("== pie-ls -> llama-server");
    let server = LlamaServer::start(&binary, &model, args.threads)?;
    let backend = json!({ "model": { "enabled": false }, "backend": { "kind": "llama-server", "url": server.url(), "timeoutMs": 60000 } });
    rows.push(("pie-ls -> llama-server", through_pie_ls(&args, &trace, backend, Some(&server))?));
    drop(server);

    eprintln!("== llama.vim -> llama-server");
    let server = LlamaServer::start(&binary, &model, args.threads)?;
    rows.push(("llama.vim -> llama-server", llama_vim(&args, &trace, &server)?));
    drop(server);

    print_rows(&mut rows);
    Ok(())
}

/// The figures table; ratios are to the first row's median.
fn print_rows(rows: &mut [(&str, Figures)]) {
    println!("{:<26} {:>10} {:>10} {:>10} {:>10} {:>13} {:>7}", "path", "sugg_p50", "sugg_p95", "first_p50", "first_p95", "evaluated/key", "errors");
    let base = rows.first().map(|(_, f)| quantile(&mut f.suggestion_ms.clone(), 0.5)).unwrap_or(f64::NAN);
    for (name, f) in rows.iter_mut() {
        let p50 = quantile(&mut f.suggestion_ms, 0.5);
        println!(
            "{:<26} {:>8.0}ms {:>8.0}ms {:>8.0}ms {:>8.0}ms {:>13.1} {:>7}   ({:.2}x local p50)",
            name,
            p50,
            quantile(&mut f.suggestion_ms, 0.95),
            quantile(&mut f.first_token_ms, 0.5),
            quantile(&mut f.first_token_ms, 0.95),
            f.evaluated.iter().sum::<f64>() / f.evaluated.len().max(1) as f64,
            f.errors,
            p50 / base,
        );
    }
    for (name, f) in rows.iter() {
        if let Some((drafted, accepted)) = f.drafts.filter(|(d, _)| *d > 0) {
            println!("{name}: {accepted} of {drafted} drafted tokens confirmed ({:.0}%)", 100.0 * accepted as f64 / drafted as f64);
        }
    }
    println!("sugg = keystroke sent to finished suggestion (client side; pie-ls serves typing along a shown suggestion without a request); first = to the first generated token, over the keystrokes that generated; evaluated/key = prompt tokens the model ran per keystroke (local: the warm cache's encodings, edits included; llama-server: timings.prompt_n)");
}

/// The edits of the trace: at each position a new line at that line's indentation, then `TYPED` one character
/// at a time. `steps[i]` is (text before, byte offset, inserted text, timed).
struct Trace {
    doc: String,
    steps: Vec<(usize, String, bool)>,
}

impl Trace {
    fn new(doc: &str, positions: usize, keystrokes: usize) -> Trace {
        let mut text = doc.to_owned();
        let mut steps = Vec::new();
        for p in 0..positions {
            let line_starts: Vec<usize> = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
            let line = line_starts.len() / 2 + (p + 1) * line_starts.len() / (2 * (positions + 1));
            let start = line_starts[line.min(line_starts.len() - 1)];
            let indent: String = text[start..].chars().take_while(|c| *c == ' ' || *c == '\t').collect();
            let opened = format!("{indent}\n");
            steps.push((start, opened.clone(), false));
            text.insert_str(start, &opened);
            let mut cursor = start + indent.len();
            for ch in TYPED.chars().take(keystrokes) {
                steps.push((cursor, ch.to_string(), true));
                text.insert(cursor, ch);
                cursor += ch.len_utf8();
            }
        }
        Trace { doc: doc.to_owned(), steps }
    }
}

/// (line, UTF-16 character) of byte `at`.
fn lsp_position(text: &str, at: usize) -> (u32, u32) {
    let line = text[..at].matches('\n').count() as u32;
    let start = text[..at].rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, text[start..at].encode_utf16().count() as u32)
}

fn through_pie_ls(args: &BackendsBenchArgs, trace: &Trace, options: Value, server: Option<&LlamaServer>) -> anyhow::Result<Figures> {
    use pie_ls_harness::{range_change, LspClient};
    let binary = std::env::current_exe().context("finding this executable")?;
    let mut options = options;
    pie_ls_harness::merge(&mut options, json!({ "completion": { "maxTokens": args.suggestion_tokens, "firstSuggestionMs": 0, "timeBudgetMs": 60000 } }));
    let mut lsp = LspClient::builder()
        .binary(&binary)
        .capabilities(json!({ "experimental": { "pieStatusNotification": true } }))
        .init_options(options)
        .spawn()?;
    let uri = "file:///bench/backends.py";
    lsp.open(uri, "python", &trace.doc);
    if server.is_none() {
        let deadline = Instant::now() + Duration::from_secs(1800);
        while !lsp.cache_stats(uri).is_ok_and(|s| pie_ls_harness::is_read(&s)) {
            if Instant::now() > deadline {
                bail!("the document never became warm; server stderr:\n{}", lsp.stderr());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let mut text = trace.doc.clone();
    let mut f = Figures::default();
    // Prompt tokens run through the model so far: the warm cache's encodings (edits are encoded on didChange,
    // before any request), or the server's own prompt_n summed over requests.
    let evaluated_so_far = |lsp: &mut LspClient| -> f64 {
        let stats = lsp.cache_stats(uri).unwrap_or_default();
        stats.get("encodedTokens").or(stats.get("evaluatedTokens")).and_then(Value::as_f64).unwrap_or(f64::NAN)
    };
    let mut before = evaluated_so_far(&mut lsp);
    for (at, inserted, timed) in &trace.steps {
        let pos = lsp_position(&text, *at);
        let started = Instant::now();
        lsp.edit(uri, vec![range_change(pos, pos, inserted)]);
        text.insert_str(*at, inserted);
        let cursor = if *timed { at + inserted.len() } else { at + inserted.len() - 1 };
        let (line, character) = lsp_position(&text, cursor);
        let params = json!({ "textDocument": { "uri": uri }, "position": { "line": line, "character": character }, "context": { "triggerKind": 2 } });
        let answer = lsp.request("textDocument/inlineCompletion", params);
        let elapsed = started.elapsed().as_secs_f64() * 1e3;
        // Sent before the answer, but on another channel: it may arrive just after it.
        let status = answer.as_ref().ok().and_then(|_| lsp.wait_notification("pie/status", Duration::from_secs(5)).ok());
        let after = evaluated_so_far(&mut lsp);
        let evaluated = after - before;
        before = after;
        if std::env::var_os("PIE_LS_BENCH_DEBUG").is_some() {
            eprintln!("  {inserted:?}: {answer:?} {status:?} evaluated {evaluated}");
        }
        if !timed {
            // The cursor jump (and, for the server, its first prompt) is not part of typing.
            continue;
        }
        match answer {
            Ok(_) => {
                f.suggestion_ms.push(elapsed);
                f.evaluated.push(evaluated);
                // A suggestion served from the one shown (typing along it) generated nothing: no first token.
                if let Some(first) = status.and_then(|s| s["firstTokenMs"].as_f64()) {
                    f.first_token_ms.push(first);
                }
            }
            Err(err) => {
                eprintln!("  error: {err}");
                f.errors += 1;
            }
        }
    }
    if server.is_none() {
        let stats = lsp.cache_stats(uri).unwrap_or_default();
        if let (Some(drafted), Some(accepted)) = (stats["draftedTokens"].as_u64(), stats["acceptedDraftTokens"].as_u64()) {
            f.drafts = Some((drafted, accepted));
        }
    }
    let _ = lsp.shutdown();
    Ok(f)
}

/// llama.vim's `/infill` request for the cursor at `cursor` (its defaults: 256 lines of prefix, 64 of suffix).
fn llama_vim_request(text: &str, cursor: usize, max_tokens: usize) -> Value {
    let line_start = text[..cursor].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line_end = text[cursor..].find('\n').map(|i| cursor + i).unwrap_or(text.len());
    let before: Vec<&str> = text[..line_start].split_inclusive('\n').collect();
    let prefix: String = before[before.len().saturating_sub(256)..].concat();
    let after: String = text[line_end..].split_inclusive('\n').skip(1).take(64).collect();
    json!({
        "id_slot": 0,
        "input_prefix": prefix,
        "input_suffix": format!("{}\n{after}", &text[cursor..line_end]),
        "input_extra": [],
        "prompt": &text[line_start..cursor],
        "n_predict": max_tokens,
        "top_k": 40,
        "top_p": 0.90,
        "samplers": ["top_k", "top_p", "infill"],
        "stream": true,
        "cache_prompt": true,
        "n_cache_reuse": 256,
        "t_max_prompt_ms": 500,
        "t_max_predict_ms": 1000,
        "timings_per_token": true,
    })
}

fn llama_vim(args: &BackendsBenchArgs, trace: &Trace, server: &LlamaServer) -> anyhow::Result<Figures> {
    // A new connection per request, as llama.vim's curl makes (llama-server drops idle ones after 5 s).
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build()?;
    let url = format!("{}/infill", server.url());
    let mut text = trace.doc.clone();
    let mut f = Figures::default();
    for (at, inserted, timed) in &trace.steps {
        text.insert_str(*at, inserted);
        let cursor = if *timed { at + inserted.len() } else { at + inserted.len() - 1 };
        let body = llama_vim_request(&text, cursor, args.suggestion_tokens);
        let started = Instant::now();
        let result = crate::inference::runtime().block_on(stream_infill(&client, &url, body, started));
        if !timed {
            continue;
        }
        match result {
            Ok((first, evaluated)) => {
                f.suggestion_ms.push(started.elapsed().as_secs_f64() * 1e3);
                f.first_token_ms.push(first.unwrap_or(f64::NAN));
                f.evaluated.push(evaluated.unwrap_or(f64::NAN));
            }
            Err(err) => {
                eprintln!("  error: {err}");
                f.errors += 1;
            }
        }
    }
    Ok(f)
}

/// Posts a streamed `/infill` and reads it to its last event (`stop: true`): time to the first content, and
/// `timings.prompt_n`.
async fn stream_infill(client: &reqwest::Client, url: &str, body: Value, started: Instant) -> anyhow::Result<(Option<f64>, Option<f64>)> {
    use futures::StreamExt;
    let response = client.post(url).json(&body).send().await?;
    if !response.status().is_success() {
        bail!("{} answered {}", url, response.status());
    }
    let mut stream = response.bytes_stream();
    let (mut buffer, mut first, mut evaluated) = (Vec::new(), None, None);
    while let Some(chunk) = stream.next().await {
        buffer.extend_from_slice(&chunk?);
        while let Some(newline) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=newline).collect();
            let Some(data) = std::str::from_utf8(&line).ok().and_then(|l| l.trim().strip_prefix("data:").map(str::trim).map(str::to_owned)) else { continue };
            let Ok(event) = serde_json::from_str::<Value>(&data) else { continue };
            if event["content"].as_str().is_some_and(|c| !c.is_empty()) && first.is_none() {
                first = Some(started.elapsed().as_secs_f64() * 1e3);
            }
            if let Some(n) = event.pointer("/timings/prompt_n").and_then(Value::as_f64) {
                evaluated = Some(n);
            }
            if event["stop"] == true {
                return Ok((first, evaluated));
            }
        }
    }
    Ok((first, evaluated))
}

fn llama_server_binary(arg: Option<std::path::PathBuf>) -> anyhow::Result<std::path::PathBuf> {
    if let Some(path) = arg.or_else(|| std::env::var_os("PIE_LS_LLAMA_SERVER").map(Into::into)) {
        return Ok(path);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
    let path = cache.join("pie-ls/llama-server/11434.0.0/build/bin/llama-server");
    if !path.exists() {
        bail!("{} is missing: run scripts/llama-server, or pass --llama-server", path.display());
    }
    Ok(path)
}

/// A llama-server on 127.0.0.1 (llama.vim's recommended flags for one user), stopped on drop.
struct LlamaServer {
    child: std::process::Child,
    port: u16,
}

impl LlamaServer {
    fn start(binary: &std::path::Path, model: &std::path::Path, threads: usize) -> anyhow::Result<LlamaServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = std::process::Command::new(binary)
            .arg("-m")
            .arg(model)
            .args(["-t", &threads.to_string(), "-c", "16384", "-np", "1", "--cache-reuse", "256", "-b", "1024", "-ub", "1024"])
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--no-webui"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut server = LlamaServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if health(port) {
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                bail!("llama-server exited while loading ({status})");
            }
            if Instant::now() > deadline {
                bail!("llama-server did not become healthy in 5 minutes");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn health(port: u16) -> bool {
    use std::io::Write;
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if write!(stream, "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_vims_shape_and_the_trace() {
        let text: String = (0..400).map(|i| format!("line {i}\n")).collect();
        let cursor = text.find("line 300").unwrap() + 4;
        let r = llama_vim_request(&text, cursor, 16);
        assert_eq!(r["prompt"], "line");
        assert!(r["input_prefix"].as_str().unwrap().starts_with("line 44\n") && r["input_prefix"].as_str().unwrap().ends_with("line 299\n"));
        assert!(r["input_suffix"].as_str().unwrap().starts_with(" 300\nline 301\n"));
        assert_eq!(r["input_suffix"].as_str().unwrap().lines().count(), 65);
        let trace = Trace::new("a\n    b\nc\n", 1, 3);
        assert_eq!(trace.steps.len(), 4);
        assert!(!trace.steps[0].2 && trace.steps[1..].iter().all(|s| s.2));
        assert_eq!(lsp_position("ab\ncd", 4), (1, 1));
    }
}
