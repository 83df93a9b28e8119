//! Performance-improving edits: "Find a faster version" of a Python function, offered only when it is verified
//! equivalent and measured faster.
//!
//! Pipeline: the model writes 2-4 candidates (one greedy, the rest sampled, all from one cached prompt); each must
//! (1) keep every user test that passed before passing, (2) agree with the original on every input the tests pass
//! to the function and on larger generated ones (`harness.py`: return values, exceptions and argument mutations),
//! (3) be faster in alternated A/B runs with the 95% bootstrap interval of the median ratio above 1.0. The fastest
//! such candidate is returned, with its figures.
//!
//! Invariants: only the one function (and imports it needs) changes; all code runs through `runner`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::engine::SamplingParams;
use crate::features::chat::{explain_then_code, reindent, ChatModel, Conversation};
use crate::features::code::{find_function, parse};
use crate::runner::{parse_outcomes, run_shell, shell_quote, RunOutput, RunStatus, Scratch, TestCommands, TestStatus, TestTarget};
use crate::syntax::{count_syntax_errors, Language};

/// Where the harness is written inside a scratch copy.
const HARNESS_FILE: &str = ".pie-ls/perf_harness.py";
const CANDIDATE_FILE: &str = ".pie-ls/perf_candidate.py";
const RESULT_FILE: &str = ".pie-ls/perf_result.json";

pub fn harness_source() -> &'static str {
    include_str!("harness.py")
}

#[derive(Clone, Debug)]
pub struct Job {
    pub root: PathBuf,
    pub overlays: Vec<(PathBuf, String)>,
    /// The module holding the function, relative to `root`.
    pub file: PathBuf,
    pub function: String,
    pub candidates: usize,
    pub runs: usize,
    pub max_tokens: usize,
    pub budget_s: u64,
    pub commands: TestCommands,
}

/// What the harness measured for one candidate (its JSON result).
#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize)]
pub struct Measurement {
    pub equivalent: bool,
    pub reason: Option<String>,
    pub mismatch: Option<serde_json::Value>,
    #[serde(default)]
    pub recorded_inputs: usize,
    #[serde(default)]
    pub generated_inputs: usize,
    #[serde(default)]
    pub checked_inputs: usize,
    pub speedup: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    #[serde(default)]
    pub runs: usize,
    pub old_ms: Option<f64>,
    pub new_ms: Option<f64>,
    #[serde(default)]
    pub bench_input: String,
}

/// One candidate and why it was kept or rejected.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Candidate {
    pub code: Option<String>,
    pub explanation: String,
    pub verdict: String,
    pub measurement: Option<Measurement>,
}

/// A verified faster version.
#[derive(Clone, Debug)]
pub struct Faster {
    pub file: PathBuf,
    pub original_text: String,
    /// Byte edits of `original_text`: the function, and imports the new version needs.
    pub edits: Vec<(std::ops::Range<usize>, String)>,
    pub function: String,
    pub measurement: Measurement,
    pub explanation: String,
    pub evidence: Vec<String>,
    pub candidates: Vec<Candidate>,
}

impl Faster {
    /// The action title: speedup and interval; "≥10% faster" is claimed only above 1.10.
    pub fn title(&self) -> String {
        let m = &self.measurement;
        let (s, lo, hi) = (m.speedup.unwrap_or(1.0), m.ci_low.unwrap_or(1.0), m.ci_high.unwrap_or(1.0));
        let claim = if lo >= 1.10 { " (≥10% faster)" } else { "" };
        format!("Faster `{}`: {s:.2}x (95% CI {lo:.2}–{hi:.2}x, {} runs){claim}", self.function, m.runs)
    }
}

#[derive(Clone, Debug)]
pub struct NoFaster {
    pub reason: String,
    pub candidates: Vec<Candidate>,
}

impl NoFaster {
    fn early(reason: impl Into<String>) -> NoFaster {
        NoFaster { reason: reason.into(), candidates: Vec::new() }
    }
}

/// The usual fixes, named so that a small model reaches for an algorithmic change rather than copying the code.
const SYSTEM: &str = "You are an expert Python programmer who makes code faster without changing what it does. \
You know the usual fixes: a set or a dict instead of searching a list, functools.lru_cache or a table instead of \
repeated recursive calls, str.join instead of += on strings in a loop, collections.deque instead of list.pop(0) \
or list.insert(0, x), collections.Counter for counting, sorting once instead of in a loop, running sums instead of \
re-summing, compiling a regular expression once.";

/// Asks for candidates, verifies and measures each, returns the fastest verified one.
pub fn find_faster(job: &Job, model: &dyn ChatModel, cancel: &Arc<AtomicBool>, progress: &mut dyn FnMut(&str, u32)) -> Result<Faster, NoFaster> {
    find_faster_with(job, &[("model", model)], cancel, progress)
}

/// `find_faster` with candidates from several models, taken in turn.
pub fn find_faster_with(job: &Job, sources: &[crate::features::selfdebug::Source], cancel: &Arc<AtomicBool>, progress: &mut dyn FnMut(&str, u32)) -> Result<Faster, NoFaster> {
    if sources.is_empty() {
        return Err(NoFaster::early("no model to write candidates"));
    }
    let lang = Language::Python;
    progress("copying the workspace", 0);
    let scratch = Scratch::copy_of(&job.root, &job.overlays, "perf", Default::default()).map_err(NoFaster::early)?;
    let root = scratch.path().to_owned();
    scratch.write(HARNESS_FILE.as_ref(), harness_source()).map_err(NoFaster::early)?;
    let original = scratch.read(&job.file).map_err(NoFaster::early)?;
    let tree = parse(lang, &original).ok_or_else(|| NoFaster::early("the file did not parse"))?;
    let function = find_function(lang, &original, &tree, &job.function)
        .filter(|f| f.class.is_none())
        .ok_or_else(|| NoFaster::early(format!("no top-level function `{}` in {}", job.function, job.file.display())))?;
    let old_errors = count_syntax_errors(&tree);

    let tests = tests_mentioning(&root, &job.function);
    let mut passed_before = std::collections::BTreeSet::new();
    if let Some(first) = tests.first() {
        progress(&format!("running the tests of `{}` before any change", job.function), 5);
        let out = run_tests(job, &root, first, cancel)?;
        passed_before = passed(&out);
    }

    let usage = tests.first().and_then(|t| std::fs::read_to_string(root.join(t)).ok()).map(|t| first_lines(&t, 40)).unwrap_or_default();
    let hints = complexity_hints(function.text(&original), &job.function);
    let task = format!(
        "Rewrite this function so that it runs faster on large inputs, with exactly the same behaviour for every input: the same return values, the same exceptions and the same changes to its arguments. Keep its name and parameters.\n\n```python\n{}\n```\n{}{}",
        function.text(&original),
        if usage.is_empty() { String::new() } else { format!("\nHow it is used (the tests):\n```python\n{usage}\n```\n") },
        if hints.is_empty() { String::new() } else { format!("\nWhat in this code is usually slow, and the usual fix:\n{}\n", hints.iter().map(|h| format!("- {h}")).collect::<Vec<_>>().join("\n")) },
    );
    let wanted = job.candidates.clamp(1, 8);
    // Normalised code of the original and of every candidate drawn: none is measured twice.
    let mut seen: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    seen.insert(crate::features::selfdebug::normalised(lang, function.text(&original)));
    let mut feedback: Vec<String> = Vec::new();
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut best: Option<(usize, String, Vec<(std::ops::Range<usize>, String)>)> = None;
    for k in 0..wanted {
        if cancel.load(Ordering::Relaxed) {
            return Err(NoFaster { reason: "cancelled".into(), candidates });
        }
        let (source, model) = sources[k % sources.len()];
        let pct = 10 + (85 * k as u32) / wanted as u32;
        progress(&format!("candidate {}/{wanted}: asking the {source}", k + 1), pct);
        // Each candidate sees how the earlier ones fared (a fresh conversation, not their turns).
        let conversation = candidate_conversation(&task, &feedback);
        // A candidate that copies the original or an earlier one is drawn again, hotter, twice at most.
        let mut drawn = None;
        for draw in 0..3u64 {
            let sampling = if k < sources.len() && draw == 0 {
                SamplingParams::greedy()
            } else {
                SamplingParams { temperature: 0.8 + 0.1 * draw as f32, seed: 77 + 100 * draw + k as u64, ..Default::default() }
            };
            let turn = explain_then_code(model, &conversation, "What makes the current version slow:", &format!("A faster `{}` with exactly the same behaviour:", job.function), "python", sampling, job.max_tokens, None, cancel)
                .map_err(|e| NoFaster { reason: format!("the model failed: {e}"), candidates: candidates.clone() })?;
            let key = candidate_edits(&original, &function, &turn.code, &job.function)
                .and_then(|e| e.last().map(|l| crate::features::selfdebug::normalised(lang, &l.1)));
            if key.as_ref().is_some_and(|k| seen.contains(k)) {
                if draw == 2 {
                    let code = candidate_edits(&original, &function, &turn.code, &job.function).and_then(|e| e.last().map(|l| l.1.clone()));
                    candidates.push(Candidate { code, explanation: turn.explanation, verdict: "same as the original or an earlier candidate".into(), measurement: None });
                }
                continue;
            }
            seen.extend(key);
            drawn = Some((turn.explanation, turn.code));
            break;
        }
        let Some((explanation, code)) = drawn else { continue };
        let Some(edits) = candidate_edits(&original, &function, &code, &job.function) else {
            candidates.push(Candidate { code: Some(code), explanation, verdict: format!("no function `{}` in the reply", job.function), measurement: None });
            continue;
        };
        let new_text = apply(&original, &edits);
        let new_fn = edits.last().map(|e| e.1.clone()).unwrap_or_default();
        let errors = parse(lang, &new_text).map(|t| count_syntax_errors(&t)).unwrap_or(usize::MAX);
        if errors > old_errors {
            candidates.push(Candidate { code: Some(new_fn), explanation, verdict: "does not parse".into(), measurement: None });
            continue;
        }
        // (1) The user's tests, on the module with the candidate in place.
        if let Some(first) = tests.first() {
            progress(&format!("candidate {}/{wanted}: running the tests", k + 1), pct + 30 / wanted as u32);
            scratch.write(&job.file, &new_text).map_err(NoFaster::early)?;
            let out = run_tests(job, &root, first, cancel);
            scratch.write(&job.file, &original).map_err(NoFaster::early)?;
            let out = out?;
            let now = passed(&out);
            let broken: Vec<&String> = passed_before.difference(&now).collect();
            if !broken.is_empty() {
                let names = broken.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
                let why = out.confinement_note().map(|n| format!(" ({n})")).unwrap_or_default();
                // The failing assertion tells the next candidate what the rewrite got wrong, not only that it did.
                let how = failure_excerpt(&out.explained_output(), &root);
                feedback.push(format!("This version breaks the tests {names}{why}:\n```python\n{new_fn}\n```\nHow they fail:\n```\n{how}\n```"));
                candidates.push(Candidate { code: Some(new_fn), explanation, verdict: format!("rejected: breaks {names}{why}"), measurement: None });
                continue;
            }
        }
        // (2) + (3) Old vs new on recorded and generated inputs, then the A/B benchmark.
        progress(&format!("candidate {}/{wanted}: comparing with the original and timing it", k + 1), pct + 50 / wanted as u32);
        scratch.write(CANDIDATE_FILE.as_ref(), &new_text).map_err(NoFaster::early)?;
        let m = match measure(job, &root, &tests, cancel) {
            Ok(m) => m,
            Err(e) => {
                if cancel.load(Ordering::Relaxed) {
                    return Err(NoFaster { reason: "cancelled".into(), candidates });
                }
                candidates.push(Candidate { code: Some(new_fn), explanation, verdict: format!("rejected: {e}"), measurement: None });
                continue;
            }
        };
        let verdict = verdict(&m);
        let accepted = verdict.starts_with("verified");
        if !accepted {
            feedback.push(tried_feedback(&new_fn, &m));
        }
        candidates.push(Candidate { code: Some(new_fn.clone()), explanation: explanation.clone(), verdict, measurement: Some(m.clone()) });
        if accepted {
            let better = match &best {
                Some((i, _, _)) => m.speedup > candidates[*i].measurement.as_ref().and_then(|b| b.speedup),
                None => true,
            };
            if better {
                best = Some((candidates.len() - 1, explanation, edits));
            }
        }
    }
    progress("done", 100);
    let Some((index, explanation, edits)) = best else {
        let reason = format!("no candidate was both equivalent and measurably faster ({} tried)", candidates.len());
        return Err(NoFaster { reason, candidates });
    };
    let m = candidates[index].measurement.clone().unwrap_or_default();
    let evidence = vec![
        format!(
            "{:.2}x faster (95% CI {:.2}–{:.2}x), median of {} alternated A/B runs: {:.3} ms -> {:.3} ms on {}",
            m.speedup.unwrap_or(0.0),
            m.ci_low.unwrap_or(0.0),
            m.ci_high.unwrap_or(0.0),
            m.runs,
            m.old_ms.unwrap_or(0.0),
            m.new_ms.unwrap_or(0.0),
            m.bench_input
        ),
        format!("same results on {} inputs ({} from the tests, {} generated)", m.checked_inputs, m.recorded_inputs, m.generated_inputs),
        if tests.is_empty() {
            "no test mentions the function: equivalence rests on the generated inputs".to_owned()
        } else {
            format!("{} test(s) passed before and after ({})", passed_before.len(), tests.iter().map(|t| t.display().to_string()).collect::<Vec<_>>().join(", "))
        },
        format!("machine: {} CPU cores", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)),
        format!("runs: {}", isolation_of(&job.commands)),
    ];
    Ok(Faster { file: job.file.clone(), original_text: original, edits, function: job.function.clone(), measurement: m, explanation, evidence, candidates })
}

/// The conversation for one candidate: the task, and what became of earlier candidates (the last two).
fn candidate_conversation(task: &str, feedback: &[String]) -> Conversation {
    let mut conversation = Conversation::new(SYSTEM);
    let mut text = task.to_owned();
    if !feedback.is_empty() {
        text.push_str("\nEarlier rewrites that were not good enough:\n");
        for f in &feedback[feedback.len().saturating_sub(2)..] {
            text.push_str(&format!("\n{f}\n"));
        }
        text.push_str("\nTry a different, algorithmically faster approach.\n");
    }
    text.push_str("\nSay in one sentence what makes the current version slow, then write the whole faster function (with any imports it needs).");
    conversation.user(&text);
    conversation
}

/// What the harness found about a candidate that was not offered, in words for the next candidate: the input
/// it was timed on (the slow one) or the input it got wrong.
fn tried_feedback(code: &str, m: &Measurement) -> String {
    let what = if !m.equivalent {
        let example = m.mismatch.as_ref().map(|x| format!(" For example {x}.")).unwrap_or_default();
        format!("It behaves differently from the original: {}.{example}", m.reason.clone().unwrap_or_else(|| "different results".into()))
    } else {
        match (m.old_ms, m.new_ms) {
            (Some(old), Some(new)) => format!("It is correct but not faster: on {} the original takes {old:.2} ms and this version {new:.2} ms.", m.bench_input),
            _ => "It is correct but could not be shown to be faster.".to_owned(),
        }
    };
    format!("```python\n{code}\n```\n{}", shorten(what, 600))
}

/// `text` cut to at most `max` bytes (at a character boundary), with "..." when cut.
fn shorten(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

/// The lines of a failing test run that say what went wrong: pytest's `E` lines (the assertion with its values,
/// the exception) and its `FAILED` summary lines; for other runners the end of the output. At most ~800 bytes.
fn failure_excerpt(output: &str, root: &Path) -> String {
    let text = output.replace(&format!("{}/", root.display()), "");
    let mut lines: Vec<&str> = text.lines().filter(|l| l.starts_with("E ") || l.starts_with("FAILED ")).collect();
    lines.dedup();
    let picked = if lines.is_empty() { crate::runner::trim_lines(text.trim(), 0, 12) } else { lines[..lines.len().min(12)].join("\n") };
    shorten(picked, 800)
}

/// The usual complexity fixes that apply to `code` (the function `name`), found from what it does.
pub fn complexity_hints(code: &str, name: &str) -> Vec<&'static str> {
    let mut hints = Vec::new();
    let Some(tree) = parse(Language::Python, code) else { return hints };
    let mut loops = 0usize;
    let mut max_depth = 0usize;
    let (mut in_list, mut sorted_in_loop, mut str_concat, mut recursion, mut pop_front, mut count_in_loop, mut slice_agg, mut remove_in_loop, mut regex_in_loop) =
        (false, false, false, false, false, false, false, false, false);
    let memoised = code.contains("lru_cache") || code.contains("@cache") || code.contains("memo");
    let mut stack = vec![(tree.root_node(), 0usize)];
    while let Some((node, depth)) = stack.pop() {
        let text = &code[node.byte_range()];
        let is_loop = matches!(node.kind(), "for_statement" | "while_statement" | "list_comprehension" | "generator_expression" | "set_comprehension" | "dictionary_comprehension");
        if is_loop {
            loops += 1;
            max_depth = max_depth.max(depth + 1);
        }
        match node.kind() {
            "comparison_operator" if depth > 0 && (text.contains(" in ") || text.contains("not in")) => {
                // `x in y` where y is not a literal set/dict or a call to set(): likely a list scan.
                let rhs = node.named_child(node.named_child_count().saturating_sub(1)).map(|n| n.kind()).unwrap_or("");
                if !matches!(rhs, "set" | "dictionary") {
                    in_list = true;
                }
            }
            "call" => {
                let callee = node.child_by_field_name("function").map(|f| &code[f.byte_range()]).unwrap_or("");
                if depth > 0 && (callee == "sorted" || callee.ends_with(".sort")) {
                    sorted_in_loop = true;
                }
                if callee == name {
                    recursion = true;
                }
                if callee.ends_with(".pop") && text.ends_with("(0)") || callee.ends_with(".insert") && text.contains("(0,") {
                    pop_front = true;
                }
                if depth > 0 && (callee.ends_with(".count") || callee.ends_with(".index")) {
                    count_in_loop = true;
                }
                if depth > 0 && matches!(callee, "sum" | "max" | "min" | "len" | "sorted" | "set") && text.contains('[') && text.contains(':') {
                    slice_agg = true;
                }
                if depth > 0 && callee.ends_with(".remove") {
                    remove_in_loop = true;
                }
                if depth > 0 && callee.starts_with("re.") && !callee.starts_with("re.compile") {
                    regex_in_loop = true;
                }
            }
            "augmented_assignment" if depth > 0 && text.contains("+=") => {
                let rhs = node.child_by_field_name("right").map(|r| r.kind()).unwrap_or("");
                if matches!(rhs, "string" | "binary_operator" | "call" | "subscript" | "identifier") && (rhs == "string" || text.contains("str(") || text.contains('"') || text.contains('\'')) {
                    str_concat = true;
                }
            }
            _ => {}
        }
        let next = depth + usize::from(is_loop);
        let mut cursor = node.walk();
        for child in node.children(&mut cursor) {
            stack.push((child, next));
        }
    }
    if in_list {
        hints.push("`in` / `not in` on a list inside a loop scans the whole list each time: build a set (or a dict) once before the loop.");
    }
    if sorted_in_loop {
        hints.push("sorting inside a loop repeats the same work: sort once before the loop (and use `bisect` for lookups), or keep a heap.");
    }
    if str_concat {
        hints.push("building a string with `+=` in a loop copies it every time: collect the pieces in a list and `''.join` them once.");
    }
    if recursion && !memoised {
        hints.push("the function calls itself without remembering results: memoise with `functools.lru_cache` on an inner helper, or fill a table bottom-up.");
    }
    if pop_front {
        hints.push("`list.pop(0)` / `list.insert(0, x)` shift the whole list: use `collections.deque` (`popleft`, `appendleft`).");
    }
    if count_in_loop {
        hints.push("`.count()` / `.index()` inside a loop scans the sequence each time: count once with `collections.Counter` or a dict.");
    }
    if slice_agg {
        hints.push("`sum`/`max`/`min` over a slice inside a loop recomputes from scratch: keep a running total or maximum (prefix sums, a sliding window).");
    }
    if remove_in_loop {
        hints.push("`list.remove` inside a loop scans and shifts the list each time: build the result in one pass with a comprehension over a set of what to drop.");
    }
    if regex_in_loop {
        hints.push("a regular expression used inside a loop: compile it once with `re.compile` before the loop.");
    }
    if max_depth >= 2 && hints.is_empty() {
        hints.push("nested loops over the same data are quadratic: one pass with a dict or set keyed by what the inner loop searches for, or sorting once, is usually enough.");
    }
    let _ = loops;
    hints
}

/// The offer rule: equivalent, and the interval's lower bound above 1.0.
fn verdict(m: &Measurement) -> String {
    if !m.equivalent {
        let why = m.reason.clone().unwrap_or_else(|| "differs from the original".into());
        let example = m.mismatch.as_ref().map(|x| format!(" (e.g. {x})")).unwrap_or_default();
        return format!("rejected: {why}{example}");
    }
    match (m.speedup, m.ci_low, m.ci_high) {
        (Some(s), Some(lo), Some(hi)) if lo > 1.0 => format!("verified: {s:.2}x (95% CI {lo:.2}–{hi:.2}x)"),
        (Some(s), Some(lo), Some(hi)) => format!("equivalent but not measurably faster: {s:.2}x (95% CI {lo:.2}–{hi:.2}x)"),
        _ => "equivalent, but no benchmark figures".into(),
    }
}

fn measure(job: &Job, root: &Path, tests: &[PathBuf], cancel: &AtomicBool) -> Result<Measurement, String> {
    let budget_s = job.budget_s.max(5);
    let mode = format!("--runs {} --budget-s {budget_s}", job.runs.max(5));
    let limits = crate::runner::Limits { timeout: Duration::from_secs(budget_s + 30), ..job.commands.limits() };
    run_harness(root, &job.file, &job.function, CANDIDATE_FILE, RESULT_FILE, &mode, tests, &limits, cancel)
}

/// Self-debug's second opinion: do two fixes of `function` return the same near the inputs the tests give it? The
/// module at `module_file` in `root` (a scratch copy) holds one fix, `other_module` is the module text with the other
/// one; the harness compares them where both return normally (`--agree`). Runs through `runner` like every check.
pub fn agree(root: &Path, module_file: &Path, function: &str, other_module: &str, tests: &[PathBuf], commands: &TestCommands, cancel: &AtomicBool) -> Result<Measurement, String> {
    const OTHER_FILE: &str = ".pie-ls/agree_other.py";
    const AGREE_RESULT: &str = ".pie-ls/agree_result.json";
    const BUDGET_S: u64 = 10;
    let write = |rel: &str, text: &str| {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap_or(root)).and_then(|_| std::fs::write(&path, text)).map_err(|e| format!("writing {rel}: {e}"))
    };
    write(HARNESS_FILE, harness_source())?;
    write(OTHER_FILE, other_module)?;
    let limits = crate::runner::Limits { timeout: Duration::from_secs(BUDGET_S + 20), ..commands.limits() };
    run_harness(root, module_file, function, OTHER_FILE, AGREE_RESULT, &format!("--budget-s {BUDGET_S} --agree"), tests, &limits, cancel)
}

/// Runs the harness (already written to `HARNESS_FILE` in `root`) on `module_file`'s `function` against the module
/// at `candidate_file` (relative to `root`), in `mode` (its extra arguments), and reads its JSON result.
#[allow(clippy::too_many_arguments)]
fn run_harness(root: &Path, module_file: &Path, function: &str, candidate_file: &str, result_file: &str, mode: &str, tests: &[PathBuf], limits: &crate::runner::Limits, cancel: &AtomicBool) -> Result<Measurement, String> {
    let result = root.join(result_file);
    let _ = std::fs::remove_file(&result);
    let mut cmd = format!(
        "python3 {} --root . --module-file {} --function {} --candidate-file {} --out {} {mode}",
        HARNESS_FILE,
        shell_quote(&module_file.to_string_lossy()),
        shell_quote(function),
        shell_quote(&root.join(candidate_file).to_string_lossy()),
        shell_quote(&result.to_string_lossy()),
    );
    if !tests.is_empty() {
        cmd.push_str(" --tests");
        for t in tests {
            cmd.push(' ');
            cmd.push_str(&shell_quote(&t.to_string_lossy()));
        }
    }
    let out = run_shell(&cmd, root, &[], limits, cancel);
    if out.status == RunStatus::Cancelled {
        return Err("cancelled".into());
    }
    let text = std::fs::read_to_string(&result).map_err(|_| {
        let why = out.confinement_note().map(|n| format!(" ({n})")).unwrap_or_default();
        format!("the harness gave no result ({}): {}{why}", out.summary(), last_line(&out))
    })?;
    serde_json::from_str(&text).map_err(|e| format!("the harness result is not readable: {e}"))
}

/// How candidate runs are isolated here (the same probes `run_shell` uses).
fn isolation_of(commands: &TestCommands) -> String {
    let net = if commands.isolate_network && crate::runner::network_isolation_available() { "no network" } else { "network not isolated on this platform" };
    let fs = if commands.confine_files && crate::runner::landlock_abi() > 0 { "files confined to the scratch copy" } else { "files not confined on this platform" };
    format!("{net}, {fs}")
}

fn last_line(out: &RunOutput) -> String {
    out.output.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").to_owned()
}

fn run_tests(job: &Job, root: &Path, test_file: &Path, cancel: &AtomicBool) -> Result<RunOutput, NoFaster> {
    let target = TestTarget { file: test_file.to_owned(), name: String::new(), class: None };
    let out = job.commands.run_suite("python", root, &target, cancel).map_err(NoFaster::early)?;
    match &out.status {
        RunStatus::Cancelled => Err(NoFaster::early("cancelled")),
        RunStatus::FailedToStart(e) => Err(NoFaster::early(format!("the test command could not start: {e}"))),
        _ => Ok(out),
    }
}

fn passed(out: &RunOutput) -> std::collections::BTreeSet<String> {
    parse_outcomes(&out.output).into_iter().filter(|o| o.status == TestStatus::Passed).map(|o| o.name).collect()
}

/// Python test files (`test_*.py`, `*_test.py`) under `root` that mention `name`.
fn tests_mentioning(root: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(root.join(&rel)) else { continue };
        for e in entries.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            let path = rel.join(&file);
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                if !file.starts_with('.') && file != "__pycache__" && out.len() < 50 {
                    stack.push(path);
                }
            } else if file.ends_with(".py") && (file.starts_with("test_") || file.ends_with("_test.py")) {
                if std::fs::read_to_string(root.join(&path)).is_ok_and(|t| t.contains(name)) {
                    out.push(path);
                }
            }
        }
    }
    out.sort();
    out
}

fn first_lines(text: &str, n: usize) -> String {
    text.lines().take(n).collect::<Vec<_>>().join("\n")
}

/// The edits that put the candidate's function (and imports the module lacks) into `original`.
fn candidate_edits(original: &str, function: &crate::features::code::FunctionSpan, code: &str, name: &str) -> Option<Vec<(std::ops::Range<usize>, String)>> {
    let tree = parse(Language::Python, code)?;
    let f = find_function(Language::Python, code, &tree, name)?;
    // The rewrite keeps the original's docstring (it changes code, not documentation).
    let kept = crate::features::selfdebug::keep_docstring(Language::Python, function.text(original), f.text(code));
    let new_fn = reindent(&kept, &function.indent).trim_start().to_owned();
    let mut imports = String::new();
    let root = tree.root_node();
    for i in 0..root.named_child_count() {
        let node = root.named_child(i)?;
        if matches!(node.kind(), "import_statement" | "import_from_statement") {
            let line = &code[node.byte_range()];
            // Only imports the new function uses (a model often adds some it then does not need).
            let names: Vec<&str> = line
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .filter(|w| !w.is_empty() && !matches!(*w, "import" | "from" | "as"))
                .collect();
            let used = names.iter().any(|n| new_fn.contains(n));
            if used && !original.lines().any(|l| l.trim() == line.trim()) {
                imports.push_str(line);
                imports.push('\n');
            }
        }
    }
    let mut edits = Vec::new();
    if !imports.is_empty() {
        let at = import_position(original);
        edits.push((at..at, imports));
    }
    edits.push((function.range.clone(), new_fn));
    Some(edits)
}

/// Where new imports go: after the module docstring and any `from __future__` imports.
fn import_position(original: &str) -> usize {
    let Some(tree) = parse(Language::Python, original) else { return 0 };
    let root = tree.root_node();
    let mut at = 0;
    for i in 0..root.named_child_count() {
        let Some(node) = root.named_child(i) else { break };
        let text = &original[node.byte_range()];
        let docstring = i == 0 && node.kind() == "expression_statement" && node.named_child(0).is_some_and(|c| c.kind() == "string");
        if docstring || (node.kind() == "future_import_statement") || text.starts_with("from __future__") {
            at = original[node.end_byte()..].find('\n').map(|n| node.end_byte() + n + 1).unwrap_or(original.len());
        } else {
            break;
        }
    }
    at
}

/// Applies non-overlapping byte edits (sorted by start).
pub fn apply(text: &str, edits: &[(std::ops::Range<usize>, String)]) -> String {
    let mut sorted: Vec<&(std::ops::Range<usize>, String)> = edits.iter().collect();
    sorted.sort_by_key(|e| e.0.start);
    let mut out = String::with_capacity(text.len() + 256);
    let mut pos = 0;
    for (range, new) in sorted {
        out.push_str(&text[pos..range.start]);
        out.push_str(new);
        pos = range.end;
    }
    out.push_str(&text[pos..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_excerpt_keeps_the_assertion_and_drops_the_noise() {
        let root = Path::new("scratch-1");
        let pytest = "============ FAILURES ============\n____ test_dedupe ____\n\n    def test_dedupe():\n>       assert dedupe([3, 1, 3]) == [3, 1]\nE       assert [1, 3] == [3, 1]\nE         At index 0 diff: 1 != 3\n\nscratch-1/test_slow.py:5: AssertionError\n=== short test summary info ===\nFAILED test_slow.py::test_dedupe - assert [1, 3] == [3, 1]\n1 failed in 0.02s\n";
        let got = failure_excerpt(pytest, root);
        assert_eq!(got, "E       assert [1, 3] == [3, 1]\nE         At index 0 diff: 1 != 3\nFAILED test_slow.py::test_dedupe - assert [1, 3] == [3, 1]");
        // Another runner: the end of its output, without the scratch path.
        let other = (0..30).map(|i| format!("line {i}")).collect::<Vec<_>>().join("\n") + "\nTraceback in scratch-1/slow.py\nValueError: x";
        let got = failure_excerpt(&other, root);
        assert!(got.ends_with("Traceback in slow.py\nValueError: x"), "{got}");
        assert!(!got.contains("line 5\n"), "{got}");
        // Many long assertion lines: cut to about 800 bytes.
        let long = (0..400).map(|i| format!("E   assert {i} == {}", "9".repeat(100))).collect::<Vec<_>>().join("\n");
        let got = failure_excerpt(&long, root);
        assert!(got.starts_with("E   assert 0 == 99") && got.ends_with("...") && got.len() <= 803, "{got}");
    }

    #[test]
    fn candidates_bring_their_imports_and_replace_only_the_function() {
        let original = "\"\"\"Doc.\"\"\"\nimport os\n\n\ndef f(xs):\n    return [x for x in xs if xs.count(x) == 1]\n\n\ndef g():\n    pass\n";
        let tree = parse(Language::Python, original).unwrap();
        let function = find_function(Language::Python, original, &tree, "f").unwrap();
        let code = "from collections import Counter\nimport os\nimport sys\n\ndef f(xs):\n    c = Counter(xs)\n    return [x for x in xs if c[x] == 1]\n";
        let edits = candidate_edits(original, &function, code, "f").unwrap();
        let out = apply(original, &edits);
        assert_eq!(out, "\"\"\"Doc.\"\"\"\nfrom collections import Counter\nimport os\n\n\ndef f(xs):\n    c = Counter(xs)\n    return [x for x in xs if c[x] == 1]\n\n\ndef g():\n    pass\n");
        // The original docstring is kept.
        let documented = "def g(n):\n    \"\"\"Doc of g.\"\"\"\n    return n\n";
        let t = parse(Language::Python, documented).unwrap();
        let g = find_function(Language::Python, documented, &t, "g").unwrap();
        let edits = candidate_edits(documented, &g, "def g(n):\n    return n + 0\n", "g").unwrap();
        assert_eq!(apply(documented, &edits), "def g(n):\n    return n + 0\n");
        let edits = candidate_edits(documented, &g, "def g(n):\n    \"\"\"Other.\"\"\"\n    return n + 0\n", "g").unwrap();
        assert_eq!(apply(documented, &edits), "def g(n):\n    \"\"\"Doc of g.\"\"\"\n    return n + 0\n");
        let decorated = "@lru_cache(None)\ndef f(n):\n    return n\n";
        let t2 = parse(Language::Python, decorated).unwrap();
        assert_eq!(find_function(Language::Python, decorated, &t2, "f").unwrap().range, 0..decorated.len() - 1);
    }

    #[test]
    fn hints_name_the_fix_for_what_the_code_does() {
        let membership = "def f(xs, ys):\n    out = []\n    for x in xs:\n        if x not in ys:\n            out.append(x)\n    return out\n";
        assert!(complexity_hints(membership, "f").iter().any(|h| h.contains("build a set")));
        let fib = "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n";
        assert!(complexity_hints(fib, "fib").iter().any(|h| h.contains("lru_cache")));
        let concat = "def f(xs):\n    s = ''\n    for x in xs:\n        s += str(x) + ','\n    return s\n";
        assert!(complexity_hints(concat, "f").iter().any(|h| h.contains("join")));
        let queue = "def f(q):\n    while q:\n        x = q.pop(0)\n    return x\n";
        assert!(complexity_hints(queue, "f").iter().any(|h| h.contains("deque")));
        let sorting = "def f(xs, qs):\n    return [sorted(xs)[q] for q in qs]\n";
        assert!(complexity_hints(sorting, "f").iter().any(|h| h.contains("sort once")));
        assert!(complexity_hints("def f(x):\n    return x + 1\n", "f").is_empty());
    }

    #[test]
    fn the_title_claims_ten_percent_only_above_1_10() {
        let mut m = Measurement { equivalent: true, speedup: Some(1.3), ci_low: Some(1.2), ci_high: Some(1.4), runs: 20, ..Default::default() };
        let f = Faster { file: "a.py".into(), original_text: String::new(), edits: vec![], function: "f".into(), measurement: m.clone(), explanation: String::new(), evidence: vec![], candidates: vec![] };
        assert_eq!(f.title(), "Faster `f`: 1.30x (95% CI 1.20–1.40x, 20 runs) (≥10% faster)");
        m.ci_low = Some(1.05);
        assert!(!Faster { measurement: m.clone(), ..f.clone() }.title().contains("10%"));
        assert!(verdict(&m).starts_with("verified"));
        m.ci_low = Some(0.98);
        assert!(verdict(&m).starts_with("equivalent but not"));
        m.equivalent = false;
        assert!(verdict(&m).starts_with("rejected"));
    }
}
