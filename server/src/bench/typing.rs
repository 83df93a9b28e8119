//! `pie-ls bench typing`: a realistic typing session replayed through the real server, measured from outside.
//!
//! The server is this executable (`pie-ls serve`), spawned with the headless harness and driven over stdio as an
//! editor drives it. The session types on a ~4k-token Python file: bursts of keystrokes (lines of code retyped
//! from elsewhere in the file, one `didChange` per character, 60-140 ms apart), a suggestion requested at each
//! pause (`textDocument/inlineCompletion`, waited for), and every few bursts a reading pause of a few seconds.
//! A sampler reads the server's CPU time from `/proc/PID/stat` every 100 ms.
//!
//! Figures: cores busy during the session (server CPU seconds per second of session, all threads), time from the
//! last keystroke (and from the last answer) until the server is idle (under 5% of a core in every following
//! 1-second window), the same at every reading pause (one end of session is one sample; the pauses are several),
//! suggestion latency p50/p95 (request to answer, client side), and the server's own
//! `pie/cacheStats` counters (correction and refresh work).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use pie_ls_harness::{merge, range_change, LspClient};
use serde_json::{json, Value};

use super::quantile;

#[derive(Debug, Clone, clap::Args)]
pub struct TypingBenchArgs {
    /// Model spec (default: $PIE_LS_MODEL, then the default model).
    #[arg(long)]
    pub model: Option<String>,
    /// Inference threads of the server.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Length of the typing session, in seconds.
    #[arg(long, default_value_t = 60.0)]
    pub seconds: f64,
    /// Seconds to keep watching the server after the session.
    #[arg(long, default_value_t = 20.0)]
    pub observe: f64,
    /// Source file to type in (default: Python standard-library modules, cut to about `--bytes`).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Size of the file typed in, in bytes (about 3.5 bytes per token for Python).
    #[arg(long, default_value_t = 15_000)]
    pub bytes: usize,
    /// Extra server settings (JSON, merged into `initializationOptions`), e.g. '{"model":{"correctionTokens":0}}'.
    #[arg(long)]
    pub settings: Option<String>,
    /// Random seed of the session script.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Before each reading pause, make a large edit: delete a block of 20-50 lines above the typing place, or paste
    /// the last deleted block back. Reports how much of the stale run it leaves the idle refresh catches up during
    /// the pause (compare with '{"model":{"refreshLargeEditTokens":0}}').
    #[arg(long)]
    pub block_edits: bool,
    /// Start the session right after the first suggestion, while the server still reads the file's window in
    /// the background (`completion.firstReadBytes`), instead of after the read: the figures then include it.
    #[arg(long)]
    pub type_while_reading: bool,
    /// Write the server's own log here (its `--log-file`; the level follows `RUST_LOG`), to see where the time goes.
    #[arg(long)]
    pub server_log: Option<PathBuf>,
}

/// Small deterministic RNG (the session must be the same on every run).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// CPU seconds (user + system, all threads) of a process, from `/proc/PID/stat`.
fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / ticks.max(1.0))
}

/// CPU samples `(seconds since start, cpu seconds)` taken every 100 ms on a thread.
struct Sampler {
    samples: Arc<Mutex<Vec<(f64, f64)>>>,
    stop: Arc<AtomicBool>,
    start: Instant,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let (s, st) = (Arc::clone(&samples), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                if let Some(cpu) = process_cpu_seconds(pid) {
                    s.lock().unwrap_or_else(|p| p.into_inner()).push((start.elapsed().as_secs_f64(), cpu));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Sampler { samples, stop, start }
    }

    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn samples(&self) -> Vec<(f64, f64)> {
        self.samples.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// CPU seconds at time `t` (linear between samples).
fn cpu_at(samples: &[(f64, f64)], t: f64) -> f64 {
    match samples.iter().position(|&(st, _)| st >= t) {
        Some(0) => samples[0].1,
        Some(i) => {
            let (t0, c0) = samples[i - 1];
            let (t1, c1) = samples[i];
            c0 + (c1 - c0) * ((t - t0) / (t1 - t0).max(1e-9))
        }
        None => samples.last().map(|s| s.1).unwrap_or(0.0),
    }
}

/// First time at or after `from` after which every 1-second window until the end of the samples used less than
/// 5% of a core; `None` if the server never got there.
fn idle_after(samples: &[(f64, f64)], from: f64) -> Option<f64> {
    idle_within(samples, from, samples.last()?.0)
}

/// `idle_after`, with the windows ending at `until` (a reading pause's end) instead of the last sample.
fn idle_within(samples: &[(f64, f64)], from: f64, until: f64) -> Option<f64> {
    let end = until.min(samples.last()?.0);
    let mut idle_since: Option<f64> = None;
    for &(t, c) in samples.iter().filter(|(t, _)| *t >= from && *t + 1.0 <= end) {
        let busy = cpu_at(samples, t + 1.0) - c;
        if busy >= 0.05 {
            idle_since = None;
        } else if idle_since.is_none() {
            idle_since = Some(t);
        }
    }
    idle_since
}

fn source_text(args: &TypingBenchArgs) -> anyhow::Result<String> {
    source_text_of(args.file.as_deref(), args.bytes)
}

/// `file`'s text, or Python standard-library modules, cut to whole lines within `bytes`.
pub(crate) fn source_text_of(file: Option<&std::path::Path>, bytes: usize) -> anyhow::Result<String> {
    let text = match file {
        Some(file) => std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?,
        None => {
            let out = std::process::Command::new("python3")
                .args(["-c", "import sysconfig; print(sysconfig.get_paths()['stdlib'])"])
                .output()
                .context("running python3 to find the standard library (or pass --file)")?;
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            // Modules no other benchmark types in.
            let mut text = String::new();
            for name in ["calendar.py", "fractions.py", "bisect.py"] {
                if let Ok(src) = std::fs::read_to_string(dir.join(name)) {
                    text.push_str(&src);
                }
            }
            if text.is_empty() {
                bail!("no standard-library sources under {}; pass --file", dir.display());
            }
            text
        }
    };
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        if out.len() + line.len() > bytes {
            break;
        }
        out.push_str(line);
    }
    if out.lines().count() < 100 {
        bail!("the file is too short for a typing session (needs 100 lines)");
    }
    Ok(out)
}

const URI: &str = "file:///bench/typing.py";

pub fn run(args: TypingBenchArgs) -> anyhow::Result<()> {
    let model = crate::engine::resolve_model(args.model.as_deref())?;
    let mut text = source_text(&args)?;
    let mut options = json!({ "model": { "path": model.display().to_string(), "threads": args.threads } });
    if let Some(extra) = &args.settings {
        let extra: Value = serde_json::from_str(extra).context("--settings is not JSON")?;
        merge(&mut options, extra);
    }
    let exe = std::env::current_exe().context("finding this executable")?;
    let mut builder = LspClient::builder().binary(&exe).capabilities(json!({ "window": { "workDoneProgress": false } })).init_options(options.clone());
    if let Some(log) = &args.server_log {
        builder = builder.arg("--log-file").arg(&log.to_string_lossy());
    }
    let mut lsp = builder.spawn()?;
    let pid = lsp.pid();
    // Answered once the model is loaded (the warm thread takes commands in order), so the load is not timed below.
    let _ = lsp.cache_stats(URI);
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let candidates: Vec<&String> = lines.iter().filter(|l| l.trim().len() >= 12 && l.trim().len() <= 60 && !l.trim().starts_with('#')).collect();
    let mut rng = Rng(args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    // Typing happens around three quarters of the file: a long prefix and a suffix, as in a real edit.
    let mut line = lines.len() * 3 / 4;

    // The user opens the file and starts at once: a new line at the typing place, and a suggestion there (timed
    // from the open: the server reads the file meanwhile). Then, before the session, the whole window is read.
    let opened_at = Instant::now();
    lsp.open(URI, "python", &text);
    let (mut cursor_line, mut cursor_col) = new_line_at(&mut lsp, &mut text, line);
    let first_answer = suggest(&mut lsp, cursor_line, cursor_col);
    let open_to_suggestion_ms = opened_at.elapsed().as_secs_f64() * 1e3;
    let at_first = lsp.cache_stats(URI).ok();
    let sampler;
    let (opened, open_to_read_s) = if args.type_while_reading {
        sampler = Sampler::start(pid);
        (at_first.clone().context("pie/cacheStats after the first suggestion")?, f64::NAN)
    } else {
        let opened = wait_warm(&mut lsp)?;
        let read_s = opened_at.elapsed().as_secs_f64();
        sampler = Sampler::start(pid);
        wait_quiet(&sampler, 60.0);
        (opened, read_s)
    };
    let before = lsp.cache_stats(URI).map_err(|e| anyhow::anyhow!("pie/cacheStats: {e}"))?;

    let t_start = sampler.now();
    let mut latencies = Vec::new();
    let mut empty = 0usize;
    let mut keystrokes = 0usize;
    let mut bursts = 0usize;
    let mut last_key = t_start;
    let mut last_answer = t_start;
    let mut reading_s = 0.0;
    // Each reading pause as (its burst's last keystroke, the pause's end): the user stopped there too.
    let mut pauses: Vec<(f64, f64)> = Vec::new();
    // `--block-edits`: the block deleted last (its first line and text), and what each pause after one saw.
    let mut removed: Option<(usize, String)> = None;
    let mut catch_ups: Vec<CatchUp> = Vec::new();
    let mut deleted = false;
    while sampler.now() - t_start < args.seconds {
        // A burst: retype a line from elsewhere in the file, character by character.
        let typed = candidates[(rng.next() % candidates.len() as u64) as usize].trim().to_owned();
        let chars: Vec<char> = typed.chars().collect();
        let n = (rng.range(8, 30) as usize).min(chars.len());
        for ch in &chars[..n] {
            let s = ch.to_string();
            lsp.edit(URI, vec![range_change((cursor_line, cursor_col), (cursor_line, cursor_col), &s)]);
            text_insert(&mut text, cursor_line, cursor_col, &s);
            cursor_col += ch.len_utf16() as u32;
            keystrokes += 1;
            last_key = sampler.now();
            std::thread::sleep(Duration::from_millis(rng.range(60, 140)));
        }
        bursts += 1;
        // The editor's debounce, then a suggestion at the pause.
        std::thread::sleep(Duration::from_millis(rng.range(250, 400)));
        let t = Instant::now();
        let answer = suggest(&mut lsp, cursor_line, cursor_col)?;
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
        empty += answer.is_empty() as usize;
        last_answer = sampler.now();
        lsp.take_notifications("pie/status");
        if sampler.now() - t_start >= args.seconds {
            break;
        }
        // The user reads the suggestion (or the code) now and then, and sometimes moves on to another line.
        if bursts % 3 == 0 {
            if args.block_edits {
                let shift = block_edit(&mut lsp, &mut text, &mut removed, cursor_line as usize, &mut rng);
                deleted = shift < 0;
                cursor_line = (cursor_line as i64 + shift) as u32;
                line = (line as i64 + shift) as usize;
                last_key = sampler.now();
            }
            let pause = rng.range(3000, 6000) as f64 / 1e3;
            reading_s += pause;
            if args.block_edits {
                let watched = watch_catch_up(&mut lsp, &sampler, pause)?;
                // Deletions earn the catch-up; pastes do not (they are only there to keep the file's size).
                if deleted {
                    catch_ups.push(watched);
                }
            } else {
                std::thread::sleep(Duration::from_secs_f64(pause));
            }
            pauses.push((last_key, sampler.now()));
        } else {
            std::thread::sleep(Duration::from_millis(rng.range(300, 800)));
        }
        if bursts % 4 == 0 {
            line = (line + rng.range(3, 12) as usize).min(lines.len() - 5);
            (cursor_line, cursor_col) = new_line_at(&mut lsp, &mut text, line);
        } else {
            // Finish the line and open the next one, as a user who accepts or ignores the suggestion does.
            (cursor_line, cursor_col) = newline_after(&mut lsp, &mut text, cursor_line, cursor_col);
        }
        // That edit is the user's last one when the session ends here: idle is measured from it, not from the
        // burst 3-6 s before (the server's log showed its update then, after the "idle" time had started).
        last_key = sampler.now();
    }
    let t_end = sampler.now();
    std::thread::sleep(Duration::from_secs_f64(args.observe));
    let after = lsp.cache_stats(URI).map_err(|e| anyhow::anyhow!("pie/cacheStats: {e}"))?;
    let samples = sampler.samples();
    drop(sampler);
    let session_s = t_end - t_start;
    let busy = (cpu_at(&samples, t_end) - cpu_at(&samples, t_start)) / session_s.max(1e-9);
    let idle_key = idle_after(&samples, last_key).map(|t| t - last_key);
    let idle_answer = idle_after(&samples, last_answer).map(|t| t - last_answer);
    // Time to idle after the last keystroke before each reading pause; a pause the server never went quiet in
    // counts as the whole pause (a lower bound).
    let pause_idle_at: Vec<Option<f64>> = pauses.iter().map(|&(key, end)| idle_within(&samples, key, end)).collect();
    let never_idle = pause_idle_at.iter().filter(|t| t.is_none()).count();
    let pause_idle: Vec<f64> = pauses.iter().zip(&pause_idle_at).map(|(&(key, end), t)| t.map_or(end, |t| t) - key).collect();
    let diff = |k: &str| after[k].as_f64().unwrap_or(0.0) - before[k].as_f64().unwrap_or(0.0);
    let fmt_s = |v: Option<f64>| v.map(|s| format!("{s:.1} s")).unwrap_or_else(|| format!("not within {:.0} s", args.observe));

    println!("# pie-ls bench typing\n");
    println!(
        "model {}, {} threads, file {} bytes / {} prompt tokens, settings {}",
        model.display(),
        args.threads,
        text.len(),
        opened["cachedTokens"],
        options
    );
    println!(
        "session {:.0} s: {} keystrokes in {} bursts, {} suggestions ({} empty), {:.0} s of reading pauses\n",
        session_s,
        keystrokes,
        bursts,
        latencies.len(),
        empty,
        reading_s
    );
    println!("| figure | value |");
    println!("|---|---:|");
    println!(
        "| file opened, a line typed at once, a suggestion: ms from the open to it (tokens cached then) | {:.0} ({}{}) |",
        open_to_suggestion_ms,
        at_first.as_ref().map_or(Value::Null, |s| s["cachedTokens"].clone()),
        if first_answer.is_err() { ", the request failed" } else { "" }
    );
    if args.type_while_reading {
        let left = after["unreadBytes"].as_u64().unwrap_or(0);
        println!("| file opened: the session started at once (`--type-while-reading`); window bytes unread at its end | {left} |");
    } else {
        println!("| file opened: s until the whole window is read | {open_to_read_s:.1} |");
    }
    println!("| cores busy during the session (server CPU s per s) | {busy:.2} |");
    println!("| server CPU seconds per minute of session | {:.1} |", busy * 60.0);
    println!("| idle (< 5% of a core) after the last keystroke | {} |", fmt_s(idle_key));
    println!("| idle after the last suggestion was answered | {} |", fmt_s(idle_answer));
    if !pause_idle.is_empty() {
        println!(
            "| idle after the last keystroke before each reading pause: p50 / max ({} pauses, {} never idle) | {:.1} / {:.1} s |",
            pause_idle.len(),
            never_idle,
            quantile(&mut pause_idle.clone(), 0.5),
            pause_idle.iter().cloned().fold(0.0, f64::max)
        );
    }
    println!("| suggestion latency p50 | {:.0} ms |", quantile(&mut latencies.clone(), 0.5));
    println!("| suggestion latency p95 | {:.0} ms |", quantile(&mut latencies.clone(), 0.95));
    println!("| PIE updates | {:.0} |", diff("updates"));
    println!("| tokens encoded (all causes) | {:.0} |", diff("encodedTokens"));
    println!("| correction tokens / time | {:.0} / {:.0} ms |", diff("correctionTokens"), diff("correctionMs"));
    println!("| refreshed tokens / time | {:.0} / {:.0} ms |", diff("refreshedTokens"), diff("refreshMs"));
    println!("| stale tokens at the end | {} (nearest at distance {}) |", after["staleTokens"], after["nearestStaleDistance"]);
    if !catch_ups.is_empty() {
        let n = catch_ups.len();
        let done: Vec<f64> = catch_ups.iter().filter_map(|c| c.caught_up_s).collect();
        let p50 = |v: Vec<f64>| quantile(&mut v.clone(), 0.5);
        let max = |v: Vec<f64>| v.iter().cloned().fold(0.0, f64::max);
        println!("| blocks deleted, each followed by a reading pause (and as many pasted back) | {n} |");
        println!(
            "| stale tokens right after a deletion: p50 / max | {:.0} / {:.0} |",
            p50(catch_ups.iter().map(|c| c.stale_after_edit as f64).collect()),
            max(catch_ups.iter().map(|c| c.stale_after_edit as f64).collect())
        );
        println!(
            "| stale tokens at the end of the pause after it: p50 / max | {:.0} / {:.0} |",
            p50(catch_ups.iter().map(|c| c.stale_at_end as f64).collect()),
            max(catch_ups.iter().map(|c| c.stale_at_end as f64).collect())
        );
        println!("| refreshed during the pause: p50 tokens | {:.0} |", p50(catch_ups.iter().map(|c| c.refreshed as f64).collect()));
        println!(
            "| caught up (nothing stale) within the pause | {} of {n}{} |",
            done.len(),
            if done.is_empty() { String::new() } else { format!(", after p50 {:.1} s / max {:.1} s", p50(done.clone()), max(done.clone())) }
        );
        println!("| server CPU seconds in that pause: p50 / max | {:.1} / {:.1} |", p50(catch_ups.iter().map(|c| c.cpu_s).collect()), max(catch_ups.iter().map(|c| c.cpu_s).collect()));
    }
    let _ = lsp.shutdown();
    Ok(())
}

/// What one reading pause after a block edit saw.
struct CatchUp {
    stale_after_edit: u64,
    stale_at_end: u64,
    refreshed: u64,
    /// Seconds from the edit until nothing was stale, if that happened within the pause.
    caught_up_s: Option<f64>,
    cpu_s: f64,
}

/// A large edit above the typing place: deletes a block of 20-50 lines, or pastes the last one back where it
/// was. Returns how many lines the typing place moved.
fn block_edit(lsp: &mut LspClient, text: &mut String, removed: &mut Option<(usize, String)>, cursor_line: usize, rng: &mut Rng) -> i64 {
    if let Some((at, block)) = removed.take() {
        lsp.edit(URI, vec![range_change((at as u32, 0), (at as u32, 0), &block)]);
        let offset = offset_of(text, at as u32, 0);
        text.insert_str(offset, &block);
        return block.lines().count() as i64;
    }
    let lines = rng.range(20, 50) as usize;
    if cursor_line < lines + 10 {
        return 0;
    }
    let at = rng.range(5, (cursor_line - lines - 5) as u64) as usize;
    let (start, end) = (offset_of(text, at as u32, 0), offset_of(text, (at + lines) as u32, 0));
    let block = text[start..end].to_owned();
    lsp.edit(URI, vec![range_change((at as u32, 0), ((at + lines) as u32, 0), "")]);
    text.replace_range(start..end, "");
    *removed = Some((at, block));
    -(lines as i64)
}

/// Watches the cache for `pause` seconds after a block edit (the stats query does not postpone or stop the
/// refresh).
fn watch_catch_up(lsp: &mut LspClient, sampler: &Sampler, pause: f64) -> anyhow::Result<CatchUp> {
    let stats = |lsp: &mut LspClient| lsp.cache_stats(URI).map_err(|e| anyhow::anyhow!("pie/cacheStats: {e}"));
    let t0 = sampler.now();
    // Answered after the edit is applied: the warm thread takes commands in order.
    let first = stats(lsp)?;
    let mut last = first.clone();
    let mut caught_up_s = None;
    while sampler.now() - t0 < pause {
        std::thread::sleep(Duration::from_millis(100));
        last = stats(lsp)?;
        if caught_up_s.is_none() && last["staleTokens"].as_u64() == Some(0) {
            caught_up_s = Some(sampler.now() - t0);
        }
    }
    let samples = sampler.samples();
    let count = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    Ok(CatchUp {
        stale_after_edit: count(&first, "staleTokens"),
        stale_at_end: count(&last, "staleTokens"),
        refreshed: count(&last, "refreshedTokens") - count(&first, "refreshedTokens"),
        caught_up_s,
        cpu_s: cpu_at(&samples, sampler.now()) - cpu_at(&samples, t0),
    })
}

/// Waits until the document is warm and its whole window read; returns its cache figures.
fn wait_warm(lsp: &mut LspClient) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        match lsp.cache_stats(URI) {
            Ok(stats) if pie_ls_harness::is_read(&stats) => return Ok(stats),
            Err(e) if e.message.contains("no model loaded") => bail!("the server has no model: {}", e.message),
            _ if Instant::now() > deadline => bail!("the document never became warm; server log:\n{}", lsp.stderr()),
            _ => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// Waits (at most `limit` s) until the server used under 5% of a core for 2 s.
fn wait_quiet(sampler: &Sampler, limit: f64) {
    let t0 = sampler.now();
    while sampler.now() - t0 < limit {
        std::thread::sleep(Duration::from_millis(500));
        let s = sampler.samples();
        let now = sampler.now();
        if now - t0 > 2.0 && cpu_at(&s, now) - cpu_at(&s, now - 2.0) < 0.1 {
            return;
        }
    }
}

fn suggest(lsp: &mut LspClient, line: u32, character: u32) -> anyhow::Result<String> {
    let result = lsp
        .request_with_timeout(
            "textDocument/inlineCompletion",
            json!({
                "textDocument": { "uri": URI },
                "position": { "line": line, "character": character },
                "context": { "triggerKind": 2 }
            }),
            Duration::from_secs(120),
        )
        .map_err(|e| anyhow::anyhow!("inlineCompletion: {e}"))?;
    let items = result.get("items").unwrap_or(&result);
    Ok(items.get(0).and_then(|i| i["insertText"].as_str()).unwrap_or("").to_owned())
}

/// Byte offset of (line, UTF-16 column) in `text`.
fn offset_of(text: &str, line: u32, col: u32) -> usize {
    let start: usize = text.split_inclusive('\n').take(line as usize).map(str::len).sum();
    let mut units = 0u32;
    for (i, ch) in text[start..].char_indices() {
        if units >= col || ch == '\n' {
            return start + i;
        }
        units += ch.len_utf16() as u32;
    }
    text.len()
}

fn text_insert(text: &mut String, line: u32, col: u32, s: &str) {
    let at = offset_of(text, line, col);
    text.insert_str(at, s);
}

/// Opens a new line above `line` at its indentation; returns the cursor.
fn new_line_at(lsp: &mut LspClient, text: &mut String, line: usize) -> (u32, u32) {
    let l = line as u32;
    let indent: String = text.lines().nth(line).unwrap_or("").chars().take_while(|c| *c == ' ').collect();
    let inserted = format!("{indent}\n");
    lsp.edit(URI, vec![range_change((l, 0), (l, 0), &inserted)]);
    text_insert(text, l, 0, &inserted);
    (l, indent.len() as u32)
}

/// Ends the cursor's line and opens the next at the same indentation; returns the cursor.
fn newline_after(lsp: &mut LspClient, text: &mut String, line: u32, col: u32) -> (u32, u32) {
    let indent: String = text.lines().nth(line as usize).unwrap_or("").chars().take_while(|c| *c == ' ').collect();
    let inserted = format!("\n{indent}");
    lsp.edit(URI, vec![range_change((line, col), (line, col), &inserted)]);
    text_insert(text, line, col, &inserted);
    (line + 1, indent.len() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_is_found_after_the_last_busy_window() {
        // Busy (1 core) until t = 3 s, then quiet.
        let samples: Vec<(f64, f64)> = (0..100).map(|i| i as f64 * 0.1).map(|t: f64| (t, t.min(3.0))).collect();
        let idle = idle_after(&samples, 1.0).unwrap();
        assert!((2.9..=3.05).contains(&idle), "{idle}");
        // Never quiet.
        let busy: Vec<(f64, f64)> = (0..50).map(|i| (i as f64 * 0.1, i as f64 * 0.1)).collect();
        assert_eq!(idle_after(&busy, 0.0), None);
    }

    #[test]
    fn idle_within_a_pause_ignores_the_work_after_it() {
        // Busy until 3 s, quiet until 5 s (the pause ends), busy again after.
        let cpu = |t: f64| t.min(3.0) + (t - 5.0).max(0.0);
        let samples: Vec<(f64, f64)> = (0..100).map(|i| i as f64 * 0.1).map(|t| (t, cpu(t))).collect();
        let idle = idle_within(&samples, 1.0, 5.0).unwrap();
        assert!((2.9..=3.05).contains(&idle), "{idle}");
        // Not a whole quiet second before the pause ends: not idle within it.
        assert_eq!(idle_within(&samples, 1.0, 3.5), None);
        // Over the whole run the server was busy again at the end.
        assert_eq!(idle_after(&samples, 1.0), None);
    }

    #[test]
    fn offsets_count_utf16_columns() {
        let t = "ab\néx = 1\n";
        assert_eq!(offset_of(t, 1, 0), 3);
        assert_eq!(offset_of(t, 1, 1), 5);
        assert_eq!(offset_of(t, 0, 9), 2);
        let mut s = t.to_owned();
        text_insert(&mut s, 1, 1, "Z");
        assert_eq!(s, "ab\néZx = 1\n");
    }

    #[test]
    fn cpu_of_this_process_is_readable() {
        let cpu = process_cpu_seconds(std::process::id()).expect("/proc/self/stat");
        assert!(cpu >= 0.0);
    }
}
