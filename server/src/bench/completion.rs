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
use crate::features::completion::{generate_suggestion, prompt_edits, CompletionConfig, Markers, PromptBuilder};

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
            let line_end = text[cursor..].find('\n').map(|i| cursor + i).unwrap_or(text.len());
            let generated = generate_suggestion(s, &text[line_start..cursor], &text[cursor..line_end], &config, &AtomicBool::new(false), started)?;
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
