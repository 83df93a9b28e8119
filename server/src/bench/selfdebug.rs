//! `pie-ls bench selfdebug`: the self-debug loop on HumanEval-derived bugs.
//!
//! Mutants come from `tests/eval/make_mutants.py` (canonical solutions with one operator flip, off-by-one, wrong
//! variable...; each fails the dataset's tests and the docstring-example tests). The loop sees only what a user
//! would have: `test_solution.py`, the docstring examples as tests. A fix it offers is then run against the
//! dataset's full tests (`full_test.py`) to count fixes that passed the gate but are still wrong.
//! Round 1 is greedy, so "fixed after 1 round" is the same whether 1 or 3 rounds are allowed.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::engine::{resolve_model, Engine, EngineConfig};
use crate::features::chat::LocalChat;
use crate::features::code::{parse, test_at};
use crate::features::selfdebug::{self_debug_with, Job};
use crate::runner::{parse_outcomes, run_shell, Limits, TestCommands, TestStatus, TestTarget};
use crate::syntax::Language;

#[derive(Debug, Clone, clap::Args)]
pub struct SelfDebugBenchArgs {
    /// Folder made by `tests/eval/make_mutants.py` (one sub-folder per mutant).
    #[arg(long)]
    pub mutants: PathBuf,
    /// Mutants to use (in the folder's sorted order).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Rounds allowed.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Tokens per round.
    #[arg(long, default_value_t = 384)]
    pub max_tokens: usize,
    /// Model spec (default: $PIE_LS_MODEL, then the default model).
    #[arg(long)]
    pub model: Option<String>,
    /// An action model (path or `hf:` spec): candidates come from it instead of `--model`.
    #[arg(long)]
    pub action_model: Option<String>,
    /// With `--action-model`: take every other candidate from `--model` too.
    #[arg(long)]
    pub with_completion_model: bool,
    /// Candidates per round.
    #[arg(long, default_value_t = 2)]
    pub candidates: usize,
    /// Inference threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Print every round's explanation and code for the first N mutants.
    #[arg(long, default_value_t = 1)]
    pub transcripts: usize,
}

pub fn run(args: SelfDebugBenchArgs) -> anyhow::Result<()> {
    let config = EngineConfig { threads: args.threads, n_ctx: 8192, ..EngineConfig::default() };
    let load = |spec: Option<&str>| -> anyhow::Result<(String, LocalChat, f64)> {
        let t0 = Instant::now();
        let engine = Engine::load(&resolve_model(spec)?, config.clone())?;
        Ok((engine.info().name.clone(), LocalChat::new(engine), t0.elapsed().as_secs_f64()))
    };
    let mut models: Vec<(&str, String, LocalChat)> = Vec::new();
    if let Some(spec) = &args.action_model {
        let (name, chat, secs) = load(Some(spec))?;
        println!("action model {name} loaded in {secs:.1} s");
        models.push(("action model", name, chat));
    }
    if args.action_model.is_none() || args.with_completion_model {
        let (name, chat, secs) = load(args.model.as_deref())?;
        println!("completion model {name} loaded in {secs:.1} s");
        models.push(("completion model", name, chat));
    }
    let name = models.iter().map(|m| m.1.as_str()).collect::<Vec<_>>().join(" + ");
    let sources: Vec<crate::features::selfdebug::Source> = models.iter().map(|(role, _, chat)| (*role, chat as &dyn crate::features::chat::ChatModel)).collect();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&args.mutants)
        .with_context(|| format!("reading {} (make it with tests/eval/make_mutants.py)", args.mutants.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("test_solution.py").is_file())
        .collect();
    dirs.sort_by_key(|p| natural_key(p));
    dirs.truncate(args.limit);
    anyhow::ensure!(!dirs.is_empty(), "no mutants in {}", args.mutants.display());
    println!("self-debug on {} mutants, model {name}, {} rounds, {} candidates per round, {} threads", dirs.len(), args.rounds, args.candidates, args.threads);
    let commands = TestCommands { timeout_ms: 20_000, ..Default::default() };
    let started = Instant::now();
    let (mut fixed_at, mut gate_only, mut errors, mut total) = (vec![0usize; args.rounds + 1], 0usize, 0usize, 0usize);
    let mut by_family: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    let mut by_source: std::collections::BTreeMap<String, usize> = Default::default();
    let mut fix_secs: Vec<f64> = Vec::new();
    let mut later_round_transcript: Option<String> = None;
    for (i, dir) in dirs.iter().enumerate() {
        let family = std::fs::read_to_string(dir.join("meta.json"))
            .ok()
            .and_then(|m| serde_json::from_str::<serde_json::Value>(&m).ok())
            .and_then(|v| v.get("family").and_then(|f| f.as_str()).map(str::to_owned))
            .unwrap_or_else(|| "?".into());
        // The user's workspace holds the solution and the example tests only: the dataset's full tests stay hidden.
        let workspace = match user_workspace(dir) {
            Ok(w) => w,
            Err(e) => {
                println!("{:>3} skipped: {e}", i + 1);
                errors += 1;
                continue;
            }
        };
        let job = match job_for(workspace.path(), &commands, args.rounds, args.candidates, args.max_tokens) {
            Ok(job) => job,
            Err(e) => {
                println!("{:>3} {:<22} skipped: {e}", i + 1, dir.file_name().unwrap().to_string_lossy());
                errors += 1;
                continue;
            }
        };
        total += 1;
        let t0 = Instant::now();
        let cancel = Arc::new(AtomicBool::new(false));
        let result = self_debug_with(&job, &sources, &cancel, &mut |_, _| {});
        let entry = by_family.entry(family.clone()).or_default();
        entry.0 += 1;
        let label = dir.file_name().unwrap().to_string_lossy().into_owned();
        let (verdict, rounds) = match &result {
            Ok(fix) => {
                let full = full_tests_pass(dir, fix);
                let r = fix.round();
                fixed_at[r] += 1;
                fix_secs.push(t0.elapsed().as_secs_f64());
                *by_source.entry(fix.rounds.last().map(|c| c.source.clone()).unwrap_or_default()).or_default() += 1;
                if full {
                    entry.1 += 1;
                } else {
                    gate_only += 1;
                }
                (format!("fixed in round {r} ({} candidates run); full tests {}", fix.rounds.len(), if full { "pass" } else { "FAIL (gate-only fix)" }), &fix.rounds)
            }
            Err(no) => (format!("not fixed: {}", no.reason), &no.rounds),
        };
        println!("{:>3} {label:<22} {family:<16} {:>5.1} s  {verdict}", i + 1, t0.elapsed().as_secs_f64());
        let transcript = rounds
            .iter()
            .map(|r| format!("      round {} ({}): {}\n      explanation: {}\n      code:\n{}", r.round, r.source, r.verdict, r.explanation.replace('\n', " "), indent(r.candidate.as_deref().unwrap_or("(none)"))))
            .collect::<Vec<_>>()
            .join("\n");
        if i < args.transcripts {
            println!("{transcript}");
        }
        if later_round_transcript.is_none() && result.as_ref().is_ok_and(|f| f.round() > 1) {
            later_round_transcript = Some(format!("{label} ({family}):\n{transcript}"));
        }
    }
    let after = |k: usize| fixed_at[1..=k.min(args.rounds)].iter().sum::<usize>();
    let fixes = after(args.rounds);
    println!("\n## self-debug, {} ({} mutants, {:.1} min)", name, total, started.elapsed().as_secs_f64() / 60.0);
    println!("| rounds allowed | fixes offered (pass the gate) | fix rate | also pass the full tests |");
    println!("|---|---|---|---|");
    for k in [1, 2, args.rounds].into_iter().filter(|&k| k <= args.rounds).collect::<std::collections::BTreeSet<_>>() {
        // Which of the first-k-round fixes were gate-only is not tracked per round; the full-test column is exact
        // only for the last row.
        let n = after(k);
        println!("| {k} | {n} | {:.1}% | {} |", 100.0 * n as f64 / total.max(1) as f64, if k == args.rounds { format!("{} ({:.1}%)", n - gate_only, 100.0 * (n - gate_only) as f64 / total.max(1) as f64) } else { "-".into() });
    }
    println!("false passes (passed the gate, fail the full tests): {gate_only} of {fixes} fixes ({:.1}%)", 100.0 * gate_only as f64 / fixes.max(1) as f64);
    println!("skipped mutants: {errors}");
    let mean_fix = fix_secs.iter().sum::<f64>() / fix_secs.len().max(1) as f64;
    println!("time per fix (mean over fixed mutants): {mean_fix:.1} s; whole run per mutant: {:.1} s", started.elapsed().as_secs_f64() / total.max(1) as f64);
    if by_source.len() > 1 || args.with_completion_model {
        println!("fixes by the source of the winning candidate: {}", by_source.iter().map(|(s, n)| format!("{s} {n}")).collect::<Vec<_>>().join(", "));
    }
    if let Some(t) = &later_round_transcript {
        println!("\nA fix found after round 1 failed:\n{t}");
    }
    println!("\n| mutation family | mutants | correct fixes (full tests pass) |\n|---|---|---|");
    for (family, (n, ok)) in &by_family {
        println!("| {family} | {n} | {ok} |");
    }
    Ok(())
}

fn natural_key(p: &Path) -> (String, u64, String) {
    let name = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let num: u64 = name.split('_').nth(1).and_then(|n| n.parse().ok()).unwrap_or(u64::MAX);
    (name.split('_').next().unwrap_or("").to_owned(), num, name)
}

fn indent(code: &str) -> String {
    code.lines().map(|l| format!("        {l}")).collect::<Vec<_>>().join("\n")
}

fn user_workspace(dir: &Path) -> Result<crate::runner::Scratch, String> {
    let ws = crate::runner::Scratch::empty("selfdebug-user")?;
    for f in ["solution.py", "test_solution.py"] {
        let text = std::fs::read_to_string(dir.join(f)).map_err(|e| format!("{f}: {e}"))?;
        ws.write(f.as_ref(), &text)?;
    }
    Ok(ws)
}

/// The job a user would start: "Fix so that <first failing example test> passes".
fn job_for(dir: &Path, commands: &TestCommands, rounds: usize, candidates: usize, max_tokens: usize) -> Result<Job, String> {
    let probe = TestTarget { file: "test_solution.py".into(), name: String::new(), class: None };
    let cancel = AtomicBool::new(false);
    let suite = commands.run_suite("python", dir, &probe, &cancel)?;
    let failing = parse_outcomes(&suite.output)
        .into_iter()
        .find(|o| o.status == TestStatus::Failed)
        .ok_or_else(|| format!("no failing gate test ({})", suite.summary()))?;
    let name = failing.name.rsplit("::").next().unwrap_or("").to_owned();
    let text = std::fs::read_to_string(dir.join("test_solution.py")).map_err(|e| e.to_string())?;
    let tree = parse(Language::Python, &text).ok_or("test file does not parse")?;
    let at = text.find(&format!("def {name}(")).ok_or("failing test not found in the file")?;
    let test = test_at(Language::Python, &text, &tree, at + 4).ok_or("no test at the failing test's position")?;
    Ok(Job {
        language: Language::Python,
        root: dir.to_owned(),
        overlays: Vec::new(),
        test: TestTarget { file: "test_solution.py".into(), name: test.name, class: test.class },
        test_range: test.range,
        rounds,
        candidates,
        commands: commands.clone(),
        max_tokens,
    })
}

/// Whether the fixed solution passes the dataset's full tests (`python3 full_test.py`, in a scratch copy).
fn full_tests_pass(dir: &Path, fix: &crate::features::selfdebug::Fix) -> bool {
    let mut text = fix.original_text.clone();
    text.replace_range(fix.range.clone(), &fix.new_function);
    let Ok(scratch) = crate::runner::Scratch::copy_of(dir, &[(fix.file.clone(), text)], "selfdebug-full", Default::default()) else { return false };
    let limits = Limits { timeout: Duration::from_secs(20), ..Limits::default() };
    run_shell("python3 full_test.py", scratch.path(), &[], &limits, &AtomicBool::new(false)).success()
}
