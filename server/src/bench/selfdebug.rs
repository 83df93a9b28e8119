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
    /// Candidates drawn for a second opinion once a fix passes (`selfDebug.confirm`; 0: off).
    #[arg(long, default_value_t = 2)]
    pub confirm: usize,
    /// Inference threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Print every round's explanation and code for the first N mutants.
    #[arg(long, default_value_t = 1)]
    pub transcripts: usize,
    /// Append each mutant's outcome to this JSON-lines file, and skip the mutants it already holds (same model):
    /// a long run can stop and resume, and the summary covers every recorded mutant.
    #[arg(long)]
    pub record: Option<PathBuf>,
}

/// One mutant's outcome, as `--record` keeps it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Outcome {
    mutant: String,
    family: String,
    model: String,
    /// "fixed", "partial" (the target passes, other tests of the function still fail), "none", "skipped".
    status: String,
    /// Round of the offered fix (0 when none).
    round: usize,
    /// Whether the offered fix passes the dataset's hidden full tests.
    full_pass: bool,
    /// Candidates run.
    candidates: usize,
    /// Source of the offered fix.
    source: String,
    secs: f64,
    /// For an offered fix: `Fix::second_opinion` ("agreed", "apart": agreed by a version written from the docstring,
    /// "none": nothing to compare with, "disputed", "off"); empty in records made before it was kept.
    #[serde(default)]
    second_opinion: String,
    /// Whether changed blocks the tests do not need were put back.
    #[serde(default)]
    trimmed: bool,
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
        .filter(|p| Flavour::of(p).is_some())
        .collect();
    dirs.sort_by_key(|p| natural_key(p));
    dirs.truncate(args.limit);
    anyhow::ensure!(!dirs.is_empty(), "no mutants in {}", args.mutants.display());
    println!("self-debug on {} mutants, model {name}, {} rounds, {} candidates per round, second opinion from up to {} more, {} threads", dirs.len(), args.rounds, args.candidates, args.confirm, args.threads);
    let commands = TestCommands { timeout_ms: 20_000, ..Default::default() };
    let mut outcomes: Vec<Outcome> = match &args.record {
        Some(path) if path.exists() => std::fs::read_to_string(path)?
            .lines()
            .filter_map(|l| serde_json::from_str::<Outcome>(l).ok())
            .filter(|o| o.model == name)
            .collect(),
        _ => Vec::new(),
    };
    if !outcomes.is_empty() {
        println!("{} mutants already recorded for this model; running the rest", outcomes.len());
    }
    let started = Instant::now();
    let mut later_round_transcript: Option<String> = None;
    for (i, dir) in dirs.iter().enumerate() {
        let label = dir.file_name().unwrap().to_string_lossy().into_owned();
        if outcomes.iter().any(|o| o.mutant == label) {
            continue;
        }
        let family = std::fs::read_to_string(dir.join("meta.json"))
            .ok()
            .and_then(|m| serde_json::from_str::<serde_json::Value>(&m).ok())
            .and_then(|v| v.get("family").and_then(|f| f.as_str()).map(str::to_owned))
            .unwrap_or_else(|| "?".into());
        let mut outcome = Outcome { mutant: label.clone(), family: family.clone(), model: name.clone(), status: "skipped".into(), round: 0, full_pass: false, candidates: 0, source: String::new(), secs: 0.0, second_opinion: String::new(), trimmed: false };
        // The user's workspace holds the solution and the example tests only: the dataset's full tests stay hidden.
        let flavour = Flavour::of(dir).expect("filtered above");
        let job = user_workspace(dir, flavour).and_then(|w| job_for(w.path(), flavour, &commands, args.rounds, args.candidates, args.max_tokens, args.confirm).map(|j| (w, j)));
        let (_workspace, job) = match job {
            Ok(j) => j,
            Err(e) => {
                println!("{:>3} {label:<22} skipped: {e}", i + 1);
                record(&args.record, &outcome)?;
                outcomes.push(outcome);
                continue;
            }
        };
        let t0 = Instant::now();
        let cancel = Arc::new(AtomicBool::new(false));
        let result = self_debug_with(&job, &sources, &cancel, &mut |_, _| {});
        outcome.secs = t0.elapsed().as_secs_f64();
        let (verdict, rounds) = match &result {
            Ok(fix) => {
                outcome.full_pass = full_tests_pass(dir, flavour, fix);
                outcome.round = fix.round();
                outcome.candidates = fix.rounds.len();
                outcome.source = fix.rounds.last().map(|c| c.source.clone()).unwrap_or_default();
                outcome.status = fix.status().into();
                outcome.second_opinion = fix.second_opinion.into();
                outcome.trimmed = fix.put_back > 0;
                let kind = match outcome.status.as_str() {
                    "fixed" => "fixed",
                    "disputed" => "disputed fix offered",
                    _ => "partial fix offered",
                };
                let full = if outcome.full_pass { "pass" } else if fix.is_full() { "FAIL (false pass)" } else { "fail" };
                let why = fix.disputed.as_deref().map(|d| format!("\n      disputed: {d}")).unwrap_or_default();
                (format!("{kind} in round {} ({} candidates run, second opinion: {}); full tests {full}{why}", outcome.round, outcome.candidates, fix.second_opinion), &fix.rounds)
            }
            Err(no) => {
                outcome.status = "none".into();
                outcome.candidates = no.rounds.len();
                (format!("not fixed: {}", no.reason), &no.rounds)
            }
        };
        println!("{:>3} {label:<22} {family:<16} {:>5.1} s  {verdict}", i + 1, outcome.secs);
        let transcript = rounds
            .iter()
            .map(|r| format!("      round {} ({}): {}\n      explanation: {}\n      code:\n{}", r.round, r.source, r.verdict, r.explanation.replace('\n', " "), indent(r.candidate.as_deref().unwrap_or("(none)"))))
            .collect::<Vec<_>>()
            .join("\n");
        if i < args.transcripts {
            println!("{transcript}");
        }
        let round_one_failed = rounds.iter().any(|r| r.round == 1);
        if later_round_transcript.is_none() && outcome.status == "fixed" && outcome.full_pass && outcome.round > 1 && round_one_failed {
            // Printed at once too: a long run stopped before its summary still shows it.
            println!("      (the first fix found after round 1 failed; every round:)\n{transcript}");
            later_round_transcript = Some(format!("{label} ({family}):\n{transcript}"));
        }
        record(&args.record, &outcome)?;
        outcomes.push(outcome);
    }
    summary(&name, &outcomes, args.rounds, started.elapsed().as_secs_f64(), args.with_completion_model);
    if let Some(t) = &later_round_transcript {
        println!("\nA fix found after round 1 failed:\n{t}");
    }
    Ok(())
}

fn record(path: &Option<PathBuf>, outcome: &Outcome) -> anyhow::Result<()> {
    let Some(path) = path else { return Ok(()) };
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("opening {}", path.display()))?;
    writeln!(file, "{}", serde_json::to_string(outcome)?)?;
    Ok(())
}

/// The tables, over every outcome (recorded earlier or run now).
fn summary(name: &str, outcomes: &[Outcome], rounds: usize, secs_now: f64, show_sources: bool) {
    let ran: Vec<&Outcome> = outcomes.iter().filter(|o| o.status != "skipped").collect();
    let total = ran.len();
    let skipped = outcomes.len() - total;
    let pct = |n: usize| 100.0 * n as f64 / total.max(1) as f64;
    let full_fixes = |k: usize| ran.iter().filter(|o| o.status == "fixed" && o.round <= k).count();
    let minutes: f64 = ran.iter().map(|o| o.secs).sum::<f64>() / 60.0;
    println!("\n## self-debug, {name} ({total} mutants, {minutes:.1} min of self-debug; {:.1} min this run)", secs_now / 60.0);
    println!("| rounds allowed | fixes offered (pass the gate) | fix rate | also pass the hidden full tests |");
    println!("|---|---|---|---|");
    for k in [1, 2, rounds].into_iter().filter(|&k| k <= rounds).collect::<std::collections::BTreeSet<_>>() {
        let n = full_fixes(k);
        let correct = ran.iter().filter(|o| o.status == "fixed" && o.round <= k && o.full_pass).count();
        println!("| {k} | {n} | {:.1}% | {correct} ({:.1}%) |", pct(n), pct(correct));
    }
    let fixes = full_fixes(rounds);
    let false_passes = ran.iter().filter(|o| o.status == "fixed" && !o.full_pass).count();
    println!("false passes (passed the gate, fail the hidden full tests): {false_passes} of {fixes} fixes ({:.1}%)", 100.0 * false_passes as f64 / fixes.max(1) as f64);
    // Where the false passes are: fixes another fix agreed with, and fixes nothing could be compared with.
    let fixed: Vec<&&Outcome> = ran.iter().filter(|o| o.status == "fixed" && !o.second_opinion.is_empty()).collect();
    if !fixed.is_empty() {
        let row = |what: &str| {
            let of: Vec<&&&Outcome> = fixed.iter().filter(|o| o.second_opinion == what).collect();
            format!("{what} {} ({} false)", of.len(), of.iter().filter(|o| !o.full_pass).count())
        };
        let trimmed: Vec<&&&Outcome> = fixed.iter().filter(|o| o.trimmed).collect();
        println!(
            "fixes by second opinion: {}, {}, {}, {}; cut down to the changes the tests need: {} ({} false)",
            row("agreed"),
            row("apart"),
            row("none"),
            row("off"),
            trimmed.len(),
            trimmed.iter().filter(|o| !o.full_pass).count()
        );
    }
    let partial: Vec<&&Outcome> = ran.iter().filter(|o| o.status == "partial").collect();
    println!(
        "partial fixes offered (target passes, other tests of the function still fail; shown as such, not counted above): {} ({} of them pass the hidden full tests)",
        partial.len(),
        partial.iter().filter(|o| o.full_pass).count()
    );
    let disputed: Vec<&&Outcome> = ran.iter().filter(|o| o.status == "disputed").collect();
    println!(
        "disputed fixes offered (pass every test, but another fix that passes them too returns something else near the tests' inputs; shown as such, not counted above): {} ({} of them pass the hidden full tests)",
        disputed.len(),
        disputed.iter().filter(|o| o.full_pass).count()
    );
    println!("skipped mutants: {skipped}");
    let fix_secs: Vec<f64> = ran.iter().filter(|o| o.status == "fixed").map(|o| o.secs).collect();
    let median = if fix_secs.is_empty() { 0.0 } else { super::quantile(&mut fix_secs.clone(), 0.5) };
    println!(
        "time per fix: median {median:.1} s, mean {:.1} s over fixed mutants; per mutant (all): {:.1} s",
        if fix_secs.is_empty() { 0.0 } else { fix_secs.iter().sum::<f64>() / fix_secs.len() as f64 },
        60.0 * minutes / total.max(1) as f64
    );
    let mut by_source: std::collections::BTreeMap<&str, usize> = Default::default();
    for o in ran.iter().filter(|o| o.status == "fixed") {
        *by_source.entry(o.source.as_str()).or_default() += 1;
    }
    if by_source.len() > 1 || show_sources {
        println!("fixes by the source of the winning candidate: {}", by_source.iter().map(|(s, n)| format!("{s} {n}")).collect::<Vec<_>>().join(", "));
    }
    let mut by_family: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    for o in &ran {
        let e = by_family.entry(o.family.as_str()).or_default();
        e.0 += 1;
        e.1 += usize::from(o.status == "fixed" && o.full_pass);
    }
    println!("\n| mutation family | mutants | correct fixes (full tests pass) |\n|---|---|---|");
    for (family, (n, ok)) in &by_family {
        println!("| {family} | {n} | {ok} |");
    }
}

fn natural_key(p: &Path) -> (String, u64, String) {
    let name = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let num: u64 = name.split('_').nth(1).and_then(|n| n.parse().ok()).unwrap_or(u64::MAX);
    (name.split('_').next().unwrap_or("").to_owned(), num, name)
}

fn indent(code: &str) -> String {
    code.lines().map(|l| format!("        {l}")).collect::<Vec<_>>().join("\n")
}

/// A mutant's language and file names: Python (`make_mutants.py`) or JavaScript (`make_js_mutants.py`).
#[derive(Clone, Copy, Debug)]
struct Flavour {
    language: Language,
    id: &'static str,
    solution: &'static str,
    tests: &'static str,
    full: &'static str,
}

impl Flavour {
    fn of(dir: &Path) -> Option<Flavour> {
        const ALL: [Flavour; 2] = [
            Flavour { language: Language::Python, id: "python", solution: "solution.py", tests: "test_solution.py", full: "python3 full_test.py" },
            Flavour { language: Language::JavaScript, id: "javascript", solution: "solution.js", tests: "solution.test.js", full: "node full_test.js" },
        ];
        ALL.into_iter().find(|f| dir.join(f.tests).is_file())
    }
}

fn user_workspace(dir: &Path, flavour: Flavour) -> Result<crate::runner::Scratch, String> {
    let ws = crate::runner::Scratch::empty("selfdebug-user")?;
    for f in [flavour.solution, flavour.tests] {
        let text = std::fs::read_to_string(dir.join(f)).map_err(|e| format!("{f}: {e}"))?;
        ws.write(f.as_ref(), &text)?;
    }
    Ok(ws)
}

/// The job a user would start: "Fix so that <first failing example test> passes".
fn job_for(dir: &Path, flavour: Flavour, commands: &TestCommands, rounds: usize, candidates: usize, max_tokens: usize, confirm: usize) -> Result<Job, String> {
    let probe = TestTarget { file: flavour.tests.into(), name: String::new(), class: None };
    let cancel = AtomicBool::new(false);
    let suite = commands.run_suite(flavour.id, dir, &probe, &cancel)?;
    let failing = parse_outcomes(&suite.output)
        .into_iter()
        .find(|o| o.status == TestStatus::Failed)
        .ok_or_else(|| format!("no failing gate test ({})", suite.summary()))?;
    let name = failing.name.rsplit("::").next().unwrap_or("").to_owned();
    let text = std::fs::read_to_string(dir.join(flavour.tests)).map_err(|e| e.to_string())?;
    let tree = parse(flavour.language, &text).ok_or("test file does not parse")?;
    let at = match flavour.language {
        Language::Python => text.find(&format!("def {name}(")).map(|i| i + 4),
        _ => text.find(&format!("'{name}'")).map(|i| i + 1),
    };
    let at = at.ok_or("failing test not found in the file")?;
    let test = test_at(flavour.language, &text, &tree, at).ok_or("no test at the failing test's position")?;
    Ok(Job {
        language: flavour.language,
        root: dir.to_owned(),
        overlays: Vec::new(),
        test: TestTarget { file: flavour.tests.into(), name: test.name, class: test.class },
        test_range: test.range,
        rounds,
        candidates,
        commands: commands.clone(),
        max_tokens,
        confirm,
    })
}

/// Whether the fixed solution passes the dataset's full tests (`python3 full_test.py`, in a scratch copy).
fn full_tests_pass(dir: &Path, flavour: Flavour, fix: &crate::features::selfdebug::Fix) -> bool {
    let mut text = fix.original_text.clone();
    text.replace_range(fix.range.clone(), &fix.new_function);
    let Ok(scratch) = crate::runner::Scratch::copy_of(dir, &[(fix.file.clone(), text)], "selfdebug-full", Default::default()) else { return false };
    let limits = Limits { timeout: Duration::from_secs(20), ..Limits::default() };
    run_shell(flavour.full, scratch.path(), &[], &limits, &AtomicBool::new(false)).success()
}
