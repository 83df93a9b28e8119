//! `pie-ls bench perf`: "Find a faster version" on the slow-to-fast Python fixtures of `tests/fixtures/perf`.
//!
//! Each fixture holds `slow.py` (the function to speed up), `test_slow.py` (the user's tests), `fast.py` (a
//! hand-written faster reference) and sometimes `wrong.py` (fast but wrong: it passes the tests yet differs on
//! other inputs). The user's workspace is `slow.py` + `test_slow.py` only.
//! - `--source model` (default): the default model writes the candidates; an offer is counted incorrect when it
//!   disagrees with the hand-written reference on the harness's inputs (an independent check).
//! - `--source reference`: `fast.py` and then `wrong.py` are the candidates, to show the verification accepts
//!   the first and rejects the second.
//! Speedups follow the PIE paper's convention: a fixture without an offer counts as 1.0.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;

use crate::engine::{resolve_model, Engine, EngineConfig};
use crate::features::chat::{ChatModel, LocalChat, ScriptedChat};
use crate::features::perf::{find_faster_with, Job};
use crate::runner::{Scratch, TestCommands};

#[derive(Debug, Clone, clap::Args)]
pub struct PerfBenchArgs {
    /// The fixtures folder.
    #[arg(long, default_value = "tests/fixtures/perf")]
    pub fixtures: PathBuf,
    /// Where candidates come from: `model` or `reference`.
    #[arg(long, default_value = "model")]
    pub source: String,
    /// Candidates per fixture (model source).
    #[arg(long, default_value_t = 3)]
    pub candidates: usize,
    /// A/B runs per candidate.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// Seconds of harness time per candidate.
    #[arg(long, default_value_t = 40)]
    pub budget_s: u64,
    /// Only fixtures whose name contains this.
    #[arg(long)]
    pub only: Option<String>,
    #[arg(long)]
    pub model: Option<String>,
    /// An action model (path or `hf:` spec): candidates come from it instead of `--model`.
    #[arg(long)]
    pub action_model: Option<String>,
    /// With `--action-model`: take every other candidate from `--model` too.
    #[arg(long)]
    pub with_completion_model: bool,
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Print every candidate's code and verdict (to stderr).
    #[arg(long)]
    pub show_candidates: bool,
}

pub fn run(args: PerfBenchArgs) -> anyhow::Result<()> {
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(&args.fixtures)
        .with_context(|| format!("reading {}", args.fixtures.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("slow.py").is_file())
        .filter(|p| args.only.as_ref().is_none_or(|o| p.to_string_lossy().contains(o.as_str())))
        .collect();
    fixtures.sort();
    anyhow::ensure!(!fixtures.is_empty(), "no fixtures in {}", args.fixtures.display());
    let mut models: Vec<(&str, LocalChat)> = Vec::new();
    if args.source == "model" {
        let config = EngineConfig { threads: args.threads, n_ctx: 8192, ..EngineConfig::default() };
        if let Some(spec) = &args.action_model {
            models.push(("action model", LocalChat::new(Engine::load(&resolve_model(Some(spec))?, config.clone())?)));
        }
        if args.action_model.is_none() || args.with_completion_model {
            models.push(("completion model", LocalChat::new(Engine::load(&resolve_model(args.model.as_deref())?, config)?)));
        }
    }
    let sources: Vec<crate::features::selfdebug::Source> = models.iter().map(|(role, chat)| (*role, chat as &dyn ChatModel)).collect();
    let model = (!sources.is_empty()).then_some(());
    let started = std::time::Instant::now();
    println!("perf on {} fixtures, candidates from {}, {} A/B runs, {} cores", fixtures.len(), args.source, args.runs, std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    println!("| fixture | category | offered | speedup (95% CI) | candidates | verdicts |\n|---|---|---|---|---|---|");
    let (mut offered, mut at_least_110, mut incorrect, mut wrong_rejected, mut wrong_total, mut reference_differs) = (0, 0, 0, 0, 0, 0);
    let mut speedups = Vec::new();
    for dir in &fixtures {
        let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json"))?)?;
        let function = meta["function"].as_str().context("meta.json has no function")?.to_owned();
        let category = meta["category"].as_str().unwrap_or("").to_owned();
        let workspace = Scratch::empty("perf-user").map_err(anyhow::Error::msg)?;
        for f in ["slow.py", "test_slow.py"] {
            workspace.write(f.as_ref(), &std::fs::read_to_string(dir.join(f))?).map_err(anyhow::Error::msg)?;
        }
        let job = Job {
            root: workspace.path().to_owned(),
            overlays: Vec::new(),
            file: "slow.py".into(),
            function: function.clone(),
            candidates: args.candidates,
            runs: args.runs,
            max_tokens: 384,
            budget_s: args.budget_s,
            commands: TestCommands { timeout_ms: 60_000, ..Default::default() },
        };
        let cancel = Arc::new(AtomicBool::new(false));
        // The reference source puts fast.py (and wrong.py where there is one) through the pipeline as candidates.
        let mut scripted: Vec<(&str, ScriptedChat)> = Vec::new();
        if model.is_none() {
            for file in ["fast.py", "wrong.py"].into_iter().filter(|f| dir.join(f).is_file()) {
                scripted.push((file, ScriptedChat::code("the hand-written reference.", std::fs::read_to_string(dir.join(file))?)));
            }
        }
        let runs: Vec<(&str, Vec<crate::features::selfdebug::Source>, usize)> = match &model {
            Some(()) => vec![("model", sources.clone(), args.candidates)],
            None => scripted.iter().map(|(file, chat)| (*file, vec![("reference", chat as &dyn ChatModel)], 1)).collect(),
        };
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        for (source, chat, n) in runs {
            let job = Job { candidates: n, ..job.clone() };
            let result = find_faster_with(&job, &chat, &cancel, &mut |_, _| {});
            let (cands, offer) = match &result {
                Ok(f) => (&f.candidates, Some(f)),
                Err(no) => (&no.candidates, None),
            };
            if args.show_candidates {
                for c in cands.iter() {
                    eprintln!("--- {name} candidate ({}):\n{}\n", c.verdict, c.code.as_deref().unwrap_or("(no code)"));
                }
            }
            let verdicts = cands.iter().map(|c| c.verdict.replace('|', "/")).map(|v| v.chars().take(90).collect::<String>()).collect::<Vec<_>>().join("; ");
            let label = if source == "model" { name.clone() } else { format!("{name} ({source})") };
            if source == "wrong.py" {
                wrong_total += 1;
                if offer.is_none() {
                    wrong_rejected += 1;
                }
            }
            match offer {
                Some(f) => {
                    let m = &f.measurement;
                    let s = m.speedup.unwrap_or(1.0);
                    if source != "wrong.py" {
                        offered += 1;
                        speedups.push(s);
                        if s >= 1.10 {
                            at_least_110 += 1;
                        }
                    }
                    // Independent re-check: a fresh harness run (another seed) against the original, plus a note when
                    // the hand-written reference disagrees (e.g. where the original itself cannot run).
                    let correct = source != "wrong.py" && (source != "model" || agrees(dir, "slow.py", &function, f));
                    if !correct {
                        incorrect += 1;
                        eprintln!("offered for {label}, which disagrees with the original on a re-check:\n{}", crate::features::perf::apply(&f.original_text, &f.edits));
                    }
                    if source == "model" && !agrees(dir, "fast.py", &function, f) {
                        reference_differs += 1;
                        eprintln!("note: the offer for {label} agrees with the original but not everywhere with the hand-written reference:\n{}", crate::features::perf::apply(&f.original_text, &f.edits));
                    }
                    println!(
                        "| {label} | {category} | yes{} | {s:.2}x ({:.2}–{:.2}) | {} | {verdicts} |",
                        if correct { "" } else { " (INCORRECT)" },
                        m.ci_low.unwrap_or(0.0),
                        m.ci_high.unwrap_or(0.0),
                        cands.len()
                    );
                }
                None => {
                    if source != "wrong.py" {
                        speedups.push(1.0);
                    }
                    println!("| {label} | {category} | no | - | {} | {verdicts} |", cands.len());
                }
            }
        }
    }
    let n = fixtures.len();
    let median = crate::bench::quantile(&mut speedups.clone(), 0.5);
    let mean = speedups.iter().sum::<f64>() / speedups.len().max(1) as f64;
    println!("\nfixtures: {n}; offered: {offered}; verified speedup >= 1.10x: {at_least_110} ({:.0}%)", 100.0 * at_least_110 as f64 / n as f64);
    println!("median speedup (no offer = 1.0): {median:.2}x; mean {mean:.2}x; {:.1} min in all", started.elapsed().as_secs_f64() / 60.0);
    println!("incorrect offers (differ from the original on an independent re-check): {incorrect}");
    if reference_differs > 0 {
        println!("offers that differ from the hand-written reference somewhere (see the notes): {reference_differs}");
    }
    if wrong_total > 0 {
        println!("fast-but-wrong candidates rejected: {wrong_rejected} of {wrong_total}");
    }
    Ok(())
}

/// Whether the offered version agrees with `baseline` (the original `slow.py`, or the reference `fast.py`) in a
/// fresh harness run with another seed: the baseline as "old", the offer as "new".
fn agrees(dir: &Path, baseline: &str, function: &str, offer: &crate::features::perf::Faster) -> bool {
    let Ok(scratch) = Scratch::empty("perf-check") else { return false };
    let offered = crate::features::perf::apply(&offer.original_text, &offer.edits);
    let (Ok(fast), Ok(tests)) = (std::fs::read_to_string(dir.join(baseline)), std::fs::read_to_string(dir.join("test_slow.py"))) else { return false };
    let ok = scratch.write("slow.py".as_ref(), &fast).and(scratch.write("test_slow.py".as_ref(), &tests)).and(scratch.write("offer.py".as_ref(), &offered)).and(scratch.write("h.py".as_ref(), crate::features::perf::harness_source()));
    if ok.is_err() {
        return false;
    }
    let out = scratch.path().join("r.json");
    let cmd = format!(
        "python3 h.py --root . --module-file slow.py --function {function} --candidate-file {} --tests test_slow.py --out {} --runs 5 --budget-s 20 --seed 2",
        scratch.path().join("offer.py").display(),
        out.display()
    );
    let limits = crate::runner::Limits { timeout: std::time::Duration::from_secs(60), ..Default::default() };
    crate::runner::run_shell(&cmd, scratch.path(), &[], &limits, &AtomicBool::new(false));
    std::fs::read_to_string(&out)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["equivalent"].as_bool())
        .unwrap_or(false)
}
