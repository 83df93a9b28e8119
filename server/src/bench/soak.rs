//! `pie-ls bench soak`: drives the real server (this binary, `serve`, over stdio through the test harness) for
//! `--minutes N` with what an editor does over a long session, then checks that nothing drifted:
//!
//! - 8 documents in 5 languages: two of 10,000 lines, one over `documents.maxWarmBytes` (never warm), the rest
//!   small; `model.maxWarmDocuments` 4, so warm caches are evicted and rebuilt all along;
//! - typing bursts (ASCII, accents, emoji: several UTF-16 widths), pastes, deletions, undo-like large
//!   replacements back to an earlier text, completions (inline and items), typing along a shown suggestion,
//!   completions cancelled by a keystroke or `$/cancelRequest`, configuration changes, closes and reopens.
//!
//! At the end every document's text and version (`pie/documentState`) must equal the client's, and every warm
//! cache (`pie/cacheCheck`) must hold a fresh tokenization of its prompt and the document's current text. The
//! server's resident memory is sampled throughout; the stated bound: after the warm-up (until every warm slot was
//! filled once, the first eviction, and at least the first 30% of the run), RSS stays below the warm-up's peak
//! plus 10% (at least `--rss-slack-mib`, 64 MiB). No error response or
//! error log is allowed except the expected ones (a cancelled request, a cache query for a document that has no warm cache).
//! Prints the figures and a `soak-result {json}` line; exits non-zero when a check failed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use pie_ls_harness::{range_change, LspClient, RpcError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::{quantile, synth};

#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// How long to drive the server, in minutes.
    #[arg(long, default_value_t = 30.0)]
    pub minutes: f64,
    /// Model spec (default: $PIE_LS_MODEL, then the default model).
    #[arg(long)]
    pub model: Option<String>,
    /// Inference threads of the server.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Seed of the operation mix (the same seed gives the same operations).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Bytes of text before and after the cursor in the prompt (`completion.prefixBytes`/`suffixBytes`): smaller
    /// than the server's defaults, so that rebuilding an evicted cache is cheap and evictions can be frequent.
    #[arg(long, default_value_t = 3000)]
    pub prefix_bytes: usize,
    #[arg(long, default_value_t = 1000)]
    pub suffix_bytes: usize,
    /// Least growth of RSS over the warm-up's peak that is allowed after it, in MiB (the bound is the larger of
    /// this and 10%).
    #[arg(long, default_value_t = 64)]
    pub rss_slack_mib: u64,
    /// Server binary (default: this executable).
    #[arg(long)]
    pub server: Option<PathBuf>,
}

const MAX_WARM_BYTES: usize = 1 << 20;
const MAX_WARM_DOCS: usize = 4;
const TIMEOUT: Duration = Duration::from_secs(300);
/// What the server logs (info) when it evicts a warm cache (`warm::WarmThread::touch`).
const EVICTION_LOG: &str = "evicting the warm cache of";

/// Snippets typed one character per keystroke: ASCII, two-byte, three-byte and astral characters.
const TYPED: &[&str] = &[
    "result = self.",
    "total += value * 2",
    "if item is None:",
    "name = 'café crème'",
    "emoji = \"🦀 ✓\"",
    "return compute(",
    "// naïve ünïcode",
];

struct Doc {
    uri: String,
    language: &'static str,
    text: String,
    version: i32,
    open: bool,
    /// An earlier text, for undo-like replacements.
    snapshot: Option<String>,
    warm_eligible: bool,
}

#[derive(Default)]
struct Figures {
    ops: BTreeMap<&'static str, u64>,
    keystrokes: u64,
    completions: u64,
    non_empty: u64,
    typed_along: u64,
    served_from_cache: u64,
    cancelled: u64,
    expected_errors: u64,
    unexpected: Vec<String>,
    latency_ms: Vec<f64>,
    rss: Vec<(f64, u64)>,
    /// Seconds into the run when the server first evicted a warm cache (every warm slot was then in use).
    slots_filled_at: Option<f64>,
}

impl Figures {
    fn unexpected(&mut self, what: String) {
        eprintln!("soak: unexpected: {what}");
        self.unexpected.push(what);
    }
}

pub fn run(args: SoakArgs) -> anyhow::Result<()> {
    let model = match &args.model {
        Some(spec) => spec.clone(),
        None => crate::engine::resolve_model(None)?.display().to_string(),
    };
    let server = match &args.server {
        Some(path) => path.clone(),
        None => std::env::current_exe().context("finding this executable")?,
    };
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut docs = documents();
    let settings = |rng: &mut StdRng| {
        let max_tokens = [16, 32, 64][rng.gen_range(0..3)];
        let first_ms = [0, 150, 250][rng.gen_range(0..3)];
        json!({
            "model": { "threads": args.threads, "maxWarmDocuments": MAX_WARM_DOCS, "path": model },
            "documents": { "maxWarmBytes": MAX_WARM_BYTES },
            "completion": {
                "maxTokens": max_tokens,
                "firstSuggestionMs": first_ms,
                "multiline": rng.gen_bool(0.7),
                "prefixBytes": args.prefix_bytes,
                "suffixBytes": args.suffix_bytes,
            }
        })
    };
    let mut init = settings(&mut rng);
    init["completion"] = json!({ "prefixBytes": args.prefix_bytes, "suffixBytes": args.suffix_bytes });
    let mut lsp = LspClient::builder()
        .binary(&server)
        .encoding("utf-16")
        .capabilities(json!({ "experimental": { "pieStatusNotification": true } }))
        .init_options(init)
        .spawn()?;
    let pid = lsp.pid();
    let started = Instant::now();
    let total = Duration::from_secs_f64(args.minutes * 60.0);
    let mut fig = Figures::default();
    println!(
        "pie-ls bench soak: {:.1} min, model {model}, {} threads, seed {}; documents: {}",
        args.minutes,
        args.threads,
        args.seed,
        docs.iter().map(|d| format!("{} ({} lines, {} KiB)", short(&d.uri), d.text.lines().count(), d.text.len() / 1024)).collect::<Vec<_>>().join(", ")
    );
    for doc in docs.iter_mut() {
        lsp.open_version(&doc.uri, doc.language, doc.version, &doc.text);
        doc.open = true;
    }
    // The warm thread handles commands in order and reads the window of the document in use (the last opened):
    // once that one is read, every open was handled. The others are read around the cursor when the run first
    // edits them (`completion.firstReadBytes`), the rest when idle.
    let last = docs.iter().rev().find(|d| d.warm_eligible).map(|d| d.uri.clone()).context("no warm-eligible document")?;
    wait_warm(&mut lsp, &last)?;
    println!("soak: all documents open after {:.1} s", started.elapsed().as_secs_f64());
    // The run's minutes count from here: reading the documents in is not part of them.
    let started = Instant::now();
    let mut next_rss = Instant::now();
    let mut next_report = Instant::now() + Duration::from_secs(60);
    while started.elapsed() < total {
        if Instant::now() >= next_rss {
            fig.rss.push((started.elapsed().as_secs_f64(), rss_bytes(pid)));
            next_rss += Duration::from_secs(5);
            if fig.slots_filled_at.is_none() && lsp.stderr().contains(EVICTION_LOG) {
                fig.slots_filled_at = Some(started.elapsed().as_secs_f64());
            }
        }
        if Instant::now() >= next_report {
            let (_, rss) = fig.rss.last().copied().unwrap_or_default();
            println!(
                "soak: {:>5.1} min, {} ops, {} keystrokes, {} completions, RSS {} MiB, {} unexpected",
                started.elapsed().as_secs_f64() / 60.0,
                fig.ops.values().sum::<u64>(),
                fig.keystrokes,
                fig.completions,
                rss >> 20,
                fig.unexpected.len()
            );
            next_report += Duration::from_secs(60);
        }
        let d = rng.gen_range(0..docs.len());
        if !docs[d].open {
            let doc = &mut docs[d];
            doc.version = 1;
            lsp.open_version(&doc.uri, doc.language, doc.version, &doc.text);
            doc.open = true;
            *fig.ops.entry("reopen").or_default() += 1;
            continue;
        }
        let roll = rng.gen_range(0..100);
        let op = match roll {
            0..=39 => "typing",
            40..=49 => "paste",
            50..=55 => "delete",
            56..=61 => "undo",
            62..=71 => "cancel",
            72..=76 => "completion-item",
            77..=80 => "config",
            81..=84 => "close",
            85..=92 => "check-text",
            _ => "cache-query",
        };
        *fig.ops.entry(op).or_default() += 1;
        match op {
            "typing" => typing(&mut lsp, &mut docs[d], &mut rng, &mut fig)?,
            "paste" => {
                let from = rng.gen_range(0..docs.len());
                let source = &docs[from].text;
                let lines: Vec<&str> = source.split_inclusive('\n').collect();
                let a = rng.gen_range(0..lines.len());
                let n = rng.gen_range(1..=40).min(lines.len() - a);
                let pasted = lines[a..a + n].concat();
                let at = line_start(&docs[d].text, rng.gen_range(0..=docs[d].text.lines().count()));
                change(&mut lsp, &mut docs[d], at, at, &pasted);
            }
            "delete" => {
                let text = &docs[d].text;
                let lines = text.lines().count().max(1);
                let a = rng.gen_range(0..lines);
                let b = (a + rng.gen_range(1..=12)).min(lines);
                let (start, end) = (line_start(text, a), line_start(text, b));
                change(&mut lsp, &mut docs[d], start, end, "");
            }
            "undo" => undo_like(&mut lsp, &mut docs[d], &mut rng),
            "cancel" => cancelled_completion(&mut lsp, &mut docs[d], &mut rng, &mut fig)?,
            "completion-item" => {
                let cursor = random_line_end(&docs[d].text, &mut rng);
                let (line, character) = position(&docs[d].text, cursor);
                let params = json!({ "textDocument": { "uri": docs[d].uri }, "position": { "line": line, "character": character } });
                match lsp.request_with_timeout("textDocument/completion", params, TIMEOUT) {
                    Ok(result) => check_items(&result, &mut fig),
                    Err(err) => fig.unexpected(format!("textDocument/completion: {err}")),
                }
            }
            "config" => lsp.notify("workspace/didChangeConfiguration", json!({ "settings": { "pie-ls": settings(&mut rng) } })),
            "close" => {
                lsp.close(&docs[d].uri);
                docs[d].open = false;
            }
            "check-text" => {
                check_text(&mut lsp, &docs[d], &mut fig);
            }
            _ => match lsp.request_with_timeout("pie/cacheStats", json!({ "textDocument": { "uri": docs[d].uri } }), TIMEOUT) {
                Ok(stats) if stats["cachedTokens"].as_u64().is_some() => {}
                Ok(other) => fig.unexpected(format!("pie/cacheStats answered {other}")),
                Err(err) => expect_no_warm_cache(&err, &docs[d], &mut fig),
            },
        }
        drain_notifications(&mut lsp, &mut fig);
    }
    let elapsed = started.elapsed();
    // The end: every document open again, then the checks.
    for doc in docs.iter_mut().filter(|d| !d.open) {
        doc.version = 1;
        lsp.open_version(&doc.uri, doc.language, doc.version, &doc.text);
        doc.open = true;
    }
    let mut texts_equal = 0;
    for doc in &docs {
        if check_text(&mut lsp, doc, &mut fig) {
            texts_equal += 1;
        }
    }
    let (mut warm_checked, mut warm_ok, mut cold) = (0, 0, 0);
    for doc in &docs {
        match lsp.request_with_timeout("pie/cacheCheck", json!({ "textDocument": { "uri": doc.uri } }), TIMEOUT) {
            Ok(check) => {
                warm_checked += 1;
                let ok = check["tokensMatch"] == true && check["promptMatches"] == true && check["textMatchesDocument"] == true;
                if ok {
                    warm_ok += 1;
                } else {
                    fig.unexpected(format!("{}: warm cache out of step: {check}", doc.uri));
                }
            }
            Err(err) => {
                cold += 1;
                expect_no_warm_cache(&err, doc, &mut fig);
            }
        }
    }
    drain_notifications(&mut lsp, &mut fig);
    fig.rss.push((started.elapsed().as_secs_f64(), rss_bytes(pid)));
    let status = lsp.shutdown();
    if !matches!(&status, Ok(s) if s.success()) {
        fig.unexpected(format!("shutdown: {status:?}"));
    }

    // Memory: the warm-up's peak against everything after it. The warm-up lasts until every warm slot was filled
    // once (the first eviction), at least 30% of the run: before that, building caches is growth by design.
    let warmup_end = (elapsed.as_secs_f64() * 0.3).max(fig.slots_filled_at.unwrap_or(0.0));
    let peak = |after: bool| fig.rss.iter().filter(|(t, _)| (*t > warmup_end) == after).map(|(_, r)| *r).max().unwrap_or(0);
    let (warmup_peak, later_peak) = (peak(false), peak(true));
    let bound = warmup_peak + (warmup_peak / 10).max(args.rss_slack_mib << 20);
    let rss_ok = later_peak <= bound && warmup_peak > 0;
    if !rss_ok {
        fig.unexpected(format!("RSS grew after warm-up: peak {} MiB, bound {} MiB", later_peak >> 20, bound >> 20));
    }
    let ops: u64 = fig.ops.values().sum();
    println!("soak: {:.1} min, {ops} operations: {:?}", elapsed.as_secs_f64() / 60.0, fig.ops);
    println!(
        "soak: {} keystrokes, {} completions ({} non-empty, {} typed along, {} served from the shown suggestion), {} cancelled",
        fig.keystrokes, fig.completions, fig.non_empty, fig.typed_along, fig.served_from_cache, fig.cancelled
    );
    println!(
        "soak: completion latency p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms (the machine's load included)",
        quantile(&mut fig.latency_ms, 0.5),
        quantile(&mut fig.latency_ms, 0.95),
        fig.latency_ms.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "soak: documents equal to the client's: {texts_equal}/{}; warm caches checked {warm_checked}, in step {warm_ok}; without a warm cache {cold} (over the limit or evicted)",
        docs.len()
    );
    println!(
        "soak: RSS start {} MiB, warm-up peak {} MiB, after warm-up peak {} MiB (bound {} MiB), end {} MiB",
        fig.rss.first().map(|r| r.1 >> 20).unwrap_or(0),
        warmup_peak >> 20,
        later_peak >> 20,
        bound >> 20,
        fig.rss.last().map(|r| r.1 >> 20).unwrap_or(0)
    );
    let filled = match fig.slots_filled_at {
        Some(t) => format!("every warm slot filled (first eviction) by {t:.0} s"),
        None => "no eviction, so the warm slots may never all have been filled".into(),
    };
    let samples: Vec<String> = fig.rss.iter().map(|(_, r)| (r >> 20).to_string()).collect();
    println!("soak: warm-up ended at {warmup_end:.0} s ({filled}); RSS every 5 s, MiB: {}", samples.join(" "));
    println!("soak: expected errors {} (cancelled requests, cache queries without a warm cache), unexpected {}", fig.expected_errors, fig.unexpected.len());
    let result = json!({
        "minutes": elapsed.as_secs_f64() / 60.0,
        "operations": ops,
        "keystrokes": fig.keystrokes,
        "completions": fig.completions,
        "nonEmpty": fig.non_empty,
        "servedFromCache": fig.served_from_cache,
        "cancelled": fig.cancelled,
        "documents": docs.len(),
        "documentsEqual": texts_equal,
        "warmChecked": warm_checked,
        "warmInStep": warm_ok,
        "rssWarmupPeakMiB": warmup_peak >> 20,
        "rssLaterPeakMiB": later_peak >> 20,
        "rssBoundMiB": bound >> 20,
        "expectedErrors": fig.expected_errors,
        "unexpected": fig.unexpected,
    });
    println!("soak-result {result}");
    if !fig.unexpected.is_empty() || texts_equal != docs.len() || warm_checked == 0 {
        bail!("the soak found {} problem(s) (first: {:?})", fig.unexpected.len().max(1), fig.unexpected.first());
    }
    Ok(())
}

fn documents() -> Vec<Doc> {
    let js = (0..120).map(|i| format!("export function widget{i}(parts) {{\n  let acc = 0;\n  for (const p of parts) {{\n    if (p > {i}) acc += p;\n  }}\n  return acc;\n}}\n\n")).collect::<String>();
    let ts = (0..120).map(|i| format!("interface Shape{i} {{ area(): number; name: string }}\n\nexport class Square{i} implements Shape{i} {{\n  constructor(private side: number, public name = \"s{i}\") {{}}\n  area(): number {{\n    return this.side * this.side;\n  }}\n}}\n\n")).collect::<String>();
    let go = format!(
        "package main\n\nimport \"fmt\"\n\n{}",
        (0..120).map(|i| format!("func helper{i}(values []int) int {{\n\ttotal := 0\n\tfor _, v := range values {{\n\t\tif v > {i} {{\n\t\t\ttotal += v\n\t\t}}\n\t}}\n\tfmt.Println(total)\n\treturn total\n}}\n\n")).collect::<String>()
    );
    let mut huge = synth::python(36_000);
    while huge.len() <= MAX_WARM_BYTES {
        huge.push_str(&synth::python(2_000));
    }
    let docs = [
        ("file:///soak/big.py", "python", synth::python(10_000)),
        ("file:///soak/big.rs", "rust", synth::rust(10_000)),
        ("file:///soak/small.py", "python", synth::python(300)),
        ("file:///soak/small.rs", "rust", synth::rust(400)),
        ("file:///soak/widgets.js", "javascript", js),
        ("file:///soak/shapes.ts", "typescript", ts),
        ("file:///soak/helpers.go", "go", go),
        ("file:///soak/huge.py", "python", huge),
    ];
    docs.into_iter()
        .map(|(uri, language, text)| Doc {
            uri: uri.into(),
            language,
            warm_eligible: text.len() <= MAX_WARM_BYTES,
            text,
            version: 1,
            open: false,
            snapshot: None,
        })
        .collect()
}

fn short(uri: &str) -> &str {
    uri.rsplit('/').next().unwrap_or(uri)
}

fn wait_warm(lsp: &mut LspClient, uri: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        match lsp.request_with_timeout("pie/cacheStats", json!({ "textDocument": { "uri": uri } }), TIMEOUT) {
            Ok(stats) if pie_ls_harness::is_read(&stats) => return Ok(()),
            Ok(_) => {}
            Err(err) if err.message.contains("no model") => bail!("the server has no model: {err}; stderr:\n{}", lsp.stderr()),
            Err(_) => {}
        }
        if Instant::now() > deadline {
            bail!("{uri} never became warm; server stderr:\n{}", lsp.stderr());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Resident memory of a process (Linux `/proc`; 0 elsewhere).
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// LSP position (UTF-16) of a byte offset; lines end at `\n` (the soak's texts have no other terminator).
fn position(text: &str, at: usize) -> (u32, u32) {
    let before = &text[..at];
    let line = before.matches('\n').count() as u32;
    let start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, before[start..].encode_utf16().count() as u32)
}

fn line_start(text: &str, line: usize) -> usize {
    if line == 0 {
        return 0;
    }
    text.match_indices('\n').nth(line - 1).map(|(i, _)| i + 1).unwrap_or(text.len())
}

/// The end of a random line's content.
fn random_line_end(text: &str, rng: &mut StdRng) -> usize {
    let lines = text.lines().count().max(1);
    let start = line_start(text, rng.gen_range(0..lines));
    text[start..].find('\n').map(|i| start + i).unwrap_or(text.len())
}

/// Sends one ranged change replacing `start..end` and applies it to the client's copy.
fn change(lsp: &mut LspClient, doc: &mut Doc, start: usize, end: usize, new_text: &str) {
    let (a, b) = (position(&doc.text, start), position(&doc.text, end));
    doc.version += 1;
    lsp.change(&doc.uri, doc.version, vec![range_change(a, b, new_text)]);
    doc.text.replace_range(start..end, new_text);
}

fn inline_params(doc: &Doc, cursor: usize) -> Value {
    let (line, character) = position(&doc.text, cursor);
    json!({ "textDocument": { "uri": doc.uri }, "position": { "line": line, "character": character }, "context": { "triggerKind": 2 } })
}

/// A burst of keystrokes at a random place, often followed by a suggestion, sometimes typed along.
fn typing(lsp: &mut LspClient, doc: &mut Doc, rng: &mut StdRng, fig: &mut Figures) -> anyhow::Result<()> {
    let mut cursor = random_line_end(&doc.text, rng);
    if rng.gen_bool(0.5) {
        let line = &doc.text[doc.text[..cursor].rfind('\n').map(|i| i + 1).unwrap_or(0)..cursor];
        let indent: String = line.chars().take_while(|c| *c == ' ' || *c == '\t').collect();
        let ins = format!("\n{indent}");
        change(lsp, doc, cursor, cursor, &ins);
        cursor += ins.len();
    }
    let snippet = TYPED[rng.gen_range(0..TYPED.len())];
    let n = rng.gen_range(1..=snippet.chars().count());
    for ch in snippet.chars().take(n) {
        let s = ch.to_string();
        change(lsp, doc, cursor, cursor, &s);
        cursor += s.len();
        fig.keystrokes += 1;
    }
    if !doc.warm_eligible || rng.gen_bool(0.3) {
        return Ok(());
    }
    let t0 = Instant::now();
    let result = match lsp.request_with_timeout("textDocument/inlineCompletion", inline_params(doc, cursor), TIMEOUT) {
        Ok(result) => result,
        Err(err) => {
            fig.unexpected(format!("inlineCompletion on {}: {err}", doc.uri));
            return Ok(());
        }
    };
    fig.completions += 1;
    fig.latency_ms.push(t0.elapsed().as_secs_f64() * 1e3);
    let Some(text) = check_inline(&result, doc, cursor, fig) else { return Ok(()) };
    // Sometimes accept the start of the suggestion the way typing along does: its first characters, then ask.
    if rng.gen_bool(0.5) {
        let take: String = text.chars().take(rng.gen_range(1..=3)).collect();
        if take.contains('\n') {
            return Ok(());
        }
        change(lsp, doc, cursor, cursor, &take);
        cursor += take.len();
        fig.typed_along += 1;
        lsp.pump();
        lsp.take_notifications("pie/status");
        let result = match lsp.request_with_timeout("textDocument/inlineCompletion", inline_params(doc, cursor), TIMEOUT) {
            Ok(result) => result,
            Err(err) => {
                fig.unexpected(format!("inlineCompletion (typed along) on {}: {err}", doc.uri));
                return Ok(());
            }
        };
        fig.completions += 1;
        if check_inline(&result, doc, cursor, fig).is_some() {
            // The answer's `pie/status` came before it: no token generated means the shown suggestion served it.
            lsp.pump();
            if lsp.take_notifications("pie/status").last().is_some_and(|s| s["generatedTokens"] == 0) {
                fig.served_from_cache += 1;
            }
        }
    }
    Ok(())
}

/// Checks an inline completion answer's shape; returns its text when it has one.
fn check_inline(result: &Value, doc: &Doc, cursor: usize, fig: &mut Figures) -> Option<String> {
    let Some(items) = result["items"].as_array() else {
        fig.unexpected(format!("inlineCompletion answered without items: {result}"));
        return None;
    };
    let item = items.first()?;
    let (line, character) = position(&doc.text, cursor);
    let text = item["insertText"].as_str().unwrap_or_default();
    if item["range"]["start"] != json!({ "line": line, "character": character }) || text.is_empty() || text.contains('\u{FFFD}') {
        fig.unexpected(format!("malformed suggestion at {line}:{character}: {item}"));
        return None;
    }
    fig.non_empty += 1;
    Some(text.to_owned())
}

fn check_items(result: &Value, fig: &mut Figures) {
    fig.completions += 1;
    if result.is_null() {
        return;
    }
    let Some(items) = result["items"].as_array() else {
        fig.unexpected(format!("textDocument/completion answered {result}"));
        return;
    };
    if items.iter().any(|i| i["textEdit"]["newText"].as_str().is_none()) {
        fig.unexpected(format!("completion item without a text edit: {result}"));
    } else if !items.is_empty() {
        fig.non_empty += 1;
    }
}

/// A suggestion asked for and then made outdated: by the next keystroke or by `$/cancelRequest`.
fn cancelled_completion(lsp: &mut LspClient, doc: &mut Doc, rng: &mut StdRng, fig: &mut Figures) -> anyhow::Result<()> {
    let cursor = random_line_end(&doc.text, rng);
    let id = lsp.send_request("textDocument/inlineCompletion", inline_params(doc, cursor));
    std::thread::sleep(Duration::from_millis(rng.gen_range(0..200)));
    let by_request = rng.gen_bool(0.5);
    if by_request {
        lsp.cancel(id);
    } else {
        change(lsp, doc, cursor, cursor, " ");
        fig.keystrokes += 1;
    }
    fig.completions += 1;
    match lsp.wait_response(id, TIMEOUT) {
        Ok(result) if result["items"].is_array() => fig.cancelled += u64::from(result["items"] == json!([])),
        Ok(other) => fig.unexpected(format!("cancelled inlineCompletion answered {other}")),
        Err(err) if by_request && err.code == -32800 => {
            fig.cancelled += 1;
            fig.expected_errors += 1;
        }
        Err(err) => fig.unexpected(format!("cancelled inlineCompletion: {err}")),
    }
    Ok(())
}

/// Back to an earlier text in one large replacement (what undo after a long edit sends), or a snapshot taken now.
fn undo_like(lsp: &mut LspClient, doc: &mut Doc, rng: &mut StdRng) {
    match doc.snapshot.take() {
        Some(old) if old != doc.text => {
            let (cur, old_b) = (doc.text.as_bytes(), old.as_bytes());
            let mut p = cur.iter().zip(old_b).take_while(|(a, b)| a == b).count();
            while !doc.text.is_char_boundary(p) || !old.is_char_boundary(p) {
                p -= 1;
            }
            let max_s = cur.len().min(old_b.len()) - p;
            let mut s = cur.iter().rev().zip(old_b.iter().rev()).take(max_s).take_while(|(a, b)| a == b).count();
            while !doc.text.is_char_boundary(cur.len() - s) || !old.is_char_boundary(old_b.len() - s) {
                s -= 1;
            }
            let (end, replacement) = (cur.len() - s, old[p..old_b.len() - s].to_owned());
            change(lsp, doc, p, end, &replacement);
        }
        _ => {
            doc.snapshot = Some(doc.text.clone());
            // And a large replacement now: a block of lines in reverse order.
            let lines: Vec<&str> = doc.text.split_inclusive('\n').collect();
            let a = rng.gen_range(0..lines.len());
            let b = (a + rng.gen_range(20..=400)).min(lines.len());
            let block: String = lines[a..b].iter().rev().copied().collect();
            let (start, end) = (line_start(&doc.text, a), line_start(&doc.text, b));
            change(lsp, doc, start, end, &block);
        }
    }
}

/// `pie/documentState` equals the client's text and version.
fn check_text(lsp: &mut LspClient, doc: &Doc, fig: &mut Figures) -> bool {
    if !doc.open {
        return true;
    }
    match lsp.request_with_timeout("pie/documentState", json!({ "textDocument": { "uri": doc.uri } }), TIMEOUT) {
        Ok(state) if state["text"].as_str() == Some(doc.text.as_str()) && state["version"] == doc.version => true,
        Ok(state) => {
            fig.unexpected(format!(
                "{}: server has version {} and {} bytes, client version {} and {} bytes",
                doc.uri,
                state["version"],
                state["text"].as_str().map(str::len).unwrap_or(0),
                doc.version,
                doc.text.len()
            ));
            false
        }
        Err(err) => {
            fig.unexpected(format!("pie/documentState {}: {err}", doc.uri));
            false
        }
    }
}

/// A cache query may fail only because the document has no warm cache (over the limit, or evicted).
fn expect_no_warm_cache(err: &RpcError, doc: &Doc, fig: &mut Figures) {
    if err.message.contains("has no warm cache") {
        fig.expected_errors += 1;
    } else {
        fig.unexpected(format!("cache query on {}: {err}", doc.uri));
    }
}

/// Takes the notifications that piled up; error logs and error messages count as unexpected.
fn drain_notifications(lsp: &mut LspClient, fig: &mut Figures) {
    lsp.pump();
    for method in ["window/logMessage", "window/showMessage"] {
        for n in lsp.take_notifications(method) {
            if n["type"] == 1 {
                fig.unexpected(format!("{method}: {}", n["message"]));
            }
        }
    }
    for method in ["pie/status", "$/progress"] {
        lsp.take_notifications(method);
    }
}
