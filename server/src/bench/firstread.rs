//! `pie-ls bench first-read`: what the first suggestion loses when it is answered from the text read around the
//! cursor (`completion.firstReadBytes`) instead of the whole prompt window. At lines spread over a long file, each
//! line's text after its indentation is taken out and the model writes it again (greedy, one line) from the whole
//! window and from first reads of several sizes; the figures are how often a first read writes the whole
//! window's line, how often each writes the real line, and what each prompt costs to read.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;

use crate::engine::bench::edit_similarity;
use crate::engine::{resolve_model, Engine, EngineConfig, KvSession};
use crate::features::completion::{CompletionConfig, Markers, PromptBuilder};

#[derive(Debug, Clone, clap::Args)]
pub struct FirstReadBenchArgs {
    /// Model spec (default: $PIE_LS_MODEL, then the default model).
    #[arg(long)]
    pub model: Option<String>,
    /// Inference threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Source file (default: Python standard-library modules, cut to about `--bytes`, as `bench typing` uses).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Size of the file, in bytes.
    #[arg(long, default_value_t = 32_000)]
    pub bytes: usize,
    /// Lines to write again, spread evenly over the file's middle four fifths.
    #[arg(long, default_value_t = 16)]
    pub positions: usize,
    /// First-read sizes to compare (bytes around the cursor), each against the whole window.
    #[arg(long, value_delimiter = ',', default_value = "1024,2048,4096")]
    pub sizes: Vec<usize>,
    /// Most tokens generated for a line.
    #[arg(long, default_value_t = 32)]
    pub max_tokens: usize,
}

#[derive(Default, Clone)]
struct Way {
    agree: usize,
    exact: usize,
    /// Summed edit similarity to the whole window's line and to the real line.
    sim_whole: f64,
    sim_real: f64,
    tokens: usize,
    read_ms: f64,
}

pub fn run(args: FirstReadBenchArgs) -> anyhow::Result<()> {
    let path = resolve_model(args.model.as_deref())?;
    let engine = Engine::load(&path, EngineConfig { threads: args.threads, ..EngineConfig::default() })?;
    let markers = Markers::of_model(&engine).context("this benchmark needs a fill-in-the-middle model")?;
    let defaults = CompletionConfig::default();
    let whole_builder = PromptBuilder::new(Some(markers), defaults.prefix_bytes, defaults.suffix_bytes);
    let text = super::typing::source_text_of(args.file.as_deref(), args.bytes)?;
    let lines: Vec<(usize, &str)> = {
        let mut at = 0;
        text.split_inclusive('\n')
            .map(|l| {
                let start = at;
                at += l.len();
                (start, l)
            })
            .collect()
    };
    // Lines with something to write: at least 12 characters after the indentation, not a comment.
    let candidates: Vec<usize> = (lines.len() / 10..lines.len() * 9 / 10)
        .filter(|&i| {
            let body = lines[i].1.trim();
            body.len() >= 12 && !body.starts_with('#')
        })
        .collect();
    anyhow::ensure!(candidates.len() >= args.positions, "the file has only {} lines to write again", candidates.len());
    let picks: Vec<usize> = (0..args.positions).map(|k| candidates[k * candidates.len() / args.positions]).collect();
    println!("# pie-ls bench first-read\n");
    println!(
        "model {}, {} threads, file {} bytes, {} lines written again, window {} + {} bytes",
        path.display(),
        args.threads,
        text.len(),
        picks.len(),
        defaults.prefix_bytes,
        defaults.suffix_bytes
    );
    let mut whole = Way::default();
    let mut firsts = vec![Way::default(); args.sizes.len()];
    let started = Instant::now();
    for (n, &i) in picks.iter().enumerate() {
        let (start, line) = lines[i];
        let indent = line.len() - line.trim_start().len();
        let target = line[indent..].trim_end_matches(['\n', '\r']).to_owned();
        // The line's text taken out; the cursor after its indentation.
        let cut = format!("{}{}", &text[..start + indent], &text[start + indent + target.len()..]);
        let cursor = start + indent;
        let full = whole_builder.build(&cut, cursor);
        let (line_whole, tokens, ms) = write_line(&engine, &full.text, args.max_tokens)?;
        whole.exact += (line_whole.trim() == target.trim()) as usize;
        whole.agree += 1;
        whole.sim_whole += 1.0;
        whole.sim_real += edit_similarity(&line_whole, &target);
        whole.tokens += tokens;
        whole.read_ms += ms;
        for (k, &size) in args.sizes.iter().enumerate() {
            let builder = whole_builder.clone().with_first_read(size);
            let prompt = builder.read_first(&cut, cursor, "", &full, None).unwrap_or_else(|| full.clone());
            let (written, tokens, ms) = if prompt.text == full.text { (line_whole.clone(), tokens, ms) } else { write_line(&engine, &prompt.text, args.max_tokens)? };
            let way = &mut firsts[k];
            way.agree += (written.trim() == line_whole.trim()) as usize;
            way.exact += (written.trim() == target.trim()) as usize;
            way.sim_whole += edit_similarity(&written, &line_whole);
            way.sim_real += edit_similarity(&written, &target);
            way.tokens += tokens;
            way.read_ms += ms;
        }
        eprintln!("[{}/{}] line {} done ({:.0} s)", n + 1, picks.len(), i + 1, started.elapsed().as_secs_f64());
    }
    let cases = picks.len().max(1) as f64;
    println!(
        "\n| prompt | writes the whole window's line % | similarity to it % | writes the real line % | similarity to it % | prompt tokens (mean) | read ms (mean) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    println!(
        "| whole window | 100 | 100 | {:.1} | {:.1} | {:.0} | {:.0} |",
        100.0 * whole.exact as f64 / cases,
        100.0 * whole.sim_real / cases,
        whole.tokens as f64 / cases,
        whole.read_ms / cases
    );
    for (size, way) in args.sizes.iter().zip(&firsts) {
        println!(
            "| first read, {size} bytes | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} |",
            100.0 * way.agree as f64 / cases,
            100.0 * way.sim_whole / cases,
            100.0 * way.exact as f64 / cases,
            100.0 * way.sim_real / cases,
            way.tokens as f64 / cases,
            way.read_ms / cases
        );
    }
    Ok(())
}

/// Reads `prompt` into a fresh session and writes one line greedily: the line, the prompt's tokens, the read's ms.
fn write_line(engine: &Engine, prompt: &str, max_tokens: usize) -> anyhow::Result<(String, usize, f64)> {
    let t = Instant::now();
    let mut session = KvSession::open(engine, prompt)?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let tokens = session.stats().cached_tokens;
    Ok((session.greedy_line(max_tokens)?, tokens, ms))
}
