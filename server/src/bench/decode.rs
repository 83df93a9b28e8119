//! `pie-ls bench decode`: generation speed of pie-ls's decode loop against llama.cpp's own `llama-server` on the
//! same model, threads and prompt, alternated in one run (these machines are noisy: only ratios measured side
//! by side mean anything).
//!
//! Both sides decode greedily from the same left-to-right prompt (the file up to a cursor near its end), so the
//! figure is the decode rate alone: pie-ls's first token comes from logits it already holds, and the server's
//! prompt is cached by its previous request. The server is an external program (`scripts/llama-server` builds
//! it); without `--server` only pie-ls's variants are measured.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::quantile;
use crate::engine::{resolve_model, Engine, EngineConfig, GenerateParams, KvSession, SamplingParams};

#[derive(Debug, Clone, clap::Args)]
pub struct DecodeBenchArgs {
    /// Model spec (default: $PIE_LS_MODEL, then the default model).
    #[arg(long)]
    pub model: Option<String>,
    /// Prompt sizes in tokens.
    #[arg(long, value_delimiter = ',', default_value = "4000")]
    pub sizes: Vec<usize>,
    /// Inference threads (both sides).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Tokens generated per repetition.
    #[arg(long, default_value_t = 48)]
    pub tokens: usize,
    /// Repetitions per side (alternated).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// pie-ls engine variants: `default`, `nodraft` (no drafts from the prompt: one token per decode), `draftN`
    /// (drafts of at most N tokens), `flash-on`, `flash-off`, `seq1` (one sequence: no room for PIE's scratch
    /// sequences, to see what they cost); `+` combines them (`nodraft+flash-on`).
    #[arg(long, value_delimiter = ',', default_value = "default")]
    pub variants: Vec<String>,
    /// The llama-server binary (default: $PIE_LS_LLAMA_SERVER); none: pie-ls alone.
    #[arg(long)]
    pub server: Option<PathBuf>,
    /// Source file (default: Python standard-library modules, concatenated).
    #[arg(long)]
    pub file: Option<PathBuf>,
}

pub fn run(args: DecodeBenchArgs) -> anyhow::Result<()> {
    let path = resolve_model(args.model.as_deref())?;
    let base = EngineConfig { threads: args.threads, ..EngineConfig::default() };
    let engine = Engine::load(&path, base.clone())?;
    let source = match &args.file {
        Some(file) => std::fs::read_to_string(file)?,
        None => super::completion::stdlib_source()?,
    };
    let server_bin = args.server.clone().or_else(|| std::env::var_os("PIE_LS_LLAMA_SERVER").map(PathBuf::from));
    println!(
        "pie-ls bench decode: model {}, {} threads, {} tokens x {} reps per side, greedy, alternated",
        engine.info().name, args.threads, args.tokens, args.reps
    );
    println!("{:>6} {:<22} {:>10} {:>10} {:>12} {:>10} {:>16}", "tokens", "side", "tok/s_p50", "tok/s_max", "ms/token_p50", "vs server", "draft accepted");
    for &size in &args.sizes {
        let prompt = super::completion::truncate_to_tokens(&engine, &source, size);
        let n_prompt = engine.tokenize(&prompt, false).len();
        let mut server = match &server_bin {
            Some(bin) => Some(Server::start(bin, &path, args.threads, n_prompt + args.tokens + 512)?),
            None => None,
        };
        let mut sessions = Vec::new();
        for variant in &args.variants {
            let config = variant_config(variant, &base)?;
            let mut session = KvSession::open(&engine.with_config(config), &prompt)?;
            session_rate(&mut session, 4)?; // warm-up: first logits, page-in
            sessions.push((variant.clone(), session, Vec::new()));
        }
        let mut server_rates = Vec::new();
        if let Some(server) = server.as_mut() {
            server.rate(&prompt, 4)?; // prefill and warm-up
        }
        for _ in 0..args.reps {
            for (_, session, rates) in sessions.iter_mut() {
                rates.push(session_rate(session, args.tokens)?);
            }
            if let Some(server) = server.as_mut() {
                server_rates.push(server.rate(&prompt, args.tokens)?);
            }
        }
        let server_p50 = (!server_rates.is_empty()).then(|| quantile(&mut server_rates.clone(), 0.5));
        let print = |side: &str, rates: &mut Vec<f64>, drafts: String| {
            let p50 = quantile(rates, 0.5);
            let max = rates.iter().cloned().fold(f64::NAN, f64::max);
            let vs = server_p50.map(|s| format!("{:.2}x", p50 / s)).unwrap_or_else(|| "-".into());
            println!("{:>6} {:<22} {:>10.1} {:>10.1} {:>12.1} {:>10} {:>16}", n_prompt, side, p50, max, 1e3 / p50, vs, drafts);
        };
        for (variant, session, rates) in sessions.iter_mut() {
            let stats = session.stats();
            let drafts = if stats.drafted_tokens == 0 {
                "-".to_string()
            } else {
                format!("{}/{} ({:.0}%)", stats.accepted_draft_tokens, stats.drafted_tokens, 100.0 * stats.accepted_draft_tokens as f64 / stats.drafted_tokens as f64)
            };
            print(&format!("pie-ls {variant}"), rates, drafts);
        }
        if !server_rates.is_empty() {
            print("llama-server", &mut server_rates, "-".into());
        }
    }
    println!("tok/s = generated tokens after the first / their decode time; vs server = this p50 / llama-server's p50; draft accepted = draft tokens the model confirmed / drafted (warm-up included)");
    Ok(())
}

/// The engine configuration of a variant: modifiers joined by `+` (e.g. `nodraft+flash-on`), applied to `base`.
fn variant_config(variant: &str, base: &EngineConfig) -> anyhow::Result<EngineConfig> {
    let mut config = base.clone();
    for modifier in variant.split('+') {
        match modifier {
            "default" => {}
            "flash-on" => config.flash_attention = Some(true),
            "flash-off" => config.flash_attention = Some(false),
            "seq1" => config.max_fold_sites = 0,
            "nodraft" => config.draft_tokens = 0,
            m if m.strip_prefix("draft").is_some_and(|n| n.parse::<usize>().is_ok()) => {
                config.draft_tokens = m["draft".len()..].parse().unwrap();
            }
            other => bail!("unknown variant {other:?} in {variant:?} (default, nodraft, draftN, flash-on, flash-off, seq1; join them with +)"),
        }
    }
    Ok(config)
}

/// Decode rate of one greedy generation of `tokens` tokens (generation stops early at end-of-generation).
fn session_rate(session: &mut KvSession, tokens: usize) -> anyhow::Result<f64> {
    let params = GenerateParams { max_tokens: tokens, sampling: SamplingParams::greedy(), stop: Vec::new() };
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    let mut n = 0usize;
    session.generate(&params, &AtomicBool::new(false), |_| {
        let now = Instant::now();
        first.get_or_insert(now);
        last = now;
        n += 1;
    })?;
    let Some(first) = first else { bail!("the model generated nothing") };
    let secs = last.duration_since(first).as_secs_f64();
    if n < 2 || secs <= 0.0 {
        bail!("too few tokens generated to time ({n})");
    }
    Ok((n - 1) as f64 / secs)
}

/// A llama-server child process on a free loopback port, killed on drop.
struct Server {
    child: std::process::Child,
    port: u16,
}

impl Server {
    fn start(bin: &Path, model: &Path, threads: usize, n_ctx: usize) -> anyhow::Result<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = std::process::Command::new(bin)
            .args(["-m"]).arg(model)
            .args(["-t", &threads.to_string(), "-c", &n_ctx.to_string(), "-np", "1", "--host", "127.0.0.1"])
            .args(["--port", &port.to_string(), "--no-webui"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut server = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!("llama-server exited while loading ({status})");
            }
            if let Ok((200, _)) = server.request("GET", "/health", "") {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!("llama-server did not become healthy within 120 s");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Decode rate the server reports for one greedy `/completion` of `tokens` tokens.
    fn rate(&mut self, prompt: &str, tokens: usize) -> anyhow::Result<f64> {
        let body = serde_json::json!({
            "prompt": prompt, "n_predict": tokens, "cache_prompt": true, "temperature": 0.0,
            "top_k": 1, "samplers": ["top_k"], "stream": false,
        });
        let (status, reply) = self.request("POST", "/completion", &body.to_string())?;
        if status != 200 {
            bail!("llama-server answered {status}: {reply}");
        }
        let reply: serde_json::Value = serde_json::from_str(&reply).context("llama-server's reply is not JSON")?;
        let timings = &reply["timings"];
        let n = timings["predicted_n"].as_f64().unwrap_or(0.0);
        let ms = timings["predicted_ms"].as_f64().unwrap_or(0.0);
        if n < 2.0 || ms <= 0.0 {
            bail!("llama-server generated too few tokens to time: {timings}");
        }
        // The server's predicted_ms counts every generated token's decode; the first one is sampled from the
        // prompt's logits, like pie-ls's, so n - 1 decodes took that time.
        Ok((n - 1.0) / (ms / 1e3))
    }

    /// One HTTP/1.1 request with `Connection: close`; returns the status and the body.
    fn request(&self, method: &str, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(600)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        let raw = String::from_utf8_lossy(&raw);
        let (head, body) = raw.split_once("\r\n\r\n").context("malformed HTTP reply")?;
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("no HTTP status")?;
        Ok((status, body.to_owned()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
