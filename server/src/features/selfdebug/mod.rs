//! Self-debug: make a failing test pass by fixing the function it exercises, with execution feedback.
//!
//! Loop (after Self-Debug, Chen et al. 2024): run the test in a scratch copy; show the model the function, the test
//! and the trimmed failure; ask for an explanation, then the whole corrected function; put it in the scratch copy;
//! re-run the test, then the suite. Up to `rounds` rounds, each round seeing the previous attempt's failure (the
//! conversation grows, so the KV cache re-encodes only the new turn).
//!
//! Invariants: only the one function is replaced (tests are never edited, a test function is never the target);
//! a `Fix` is returned only when the target test passes and every suite test that passed before still passes.
//! Every run goes through `runner` (scratch copy, timeout, memory cap, process-group kill).

mod locate;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use locate::{function_under_test, Target};

use crate::engine::SamplingParams;
use crate::features::chat::{explain_then_code, reindent, ChatModel, Conversation};
use crate::features::code::{find_function, parse};
use crate::runner::{parse_outcomes, trim_lines, RunOutput, RunStatus, Scratch, TestCommands, TestStatus, TestTarget};
use crate::syntax::{count_syntax_errors, Language};

/// What to fix.
#[derive(Clone, Debug)]
pub struct Job {
    pub language: Language,
    /// The workspace on disk; it is copied, never written.
    pub root: PathBuf,
    /// Unsaved editor buffers, relative to `root`, written over the copy.
    pub overlays: Vec<(PathBuf, String)>,
    pub test: TestTarget,
    /// Byte range of the test in its file (the text the copy holds).
    pub test_range: std::ops::Range<usize>,
    pub rounds: usize,
    pub commands: TestCommands,
    /// Tokens the model may write per round (explanation and function).
    pub max_tokens: usize,
}

/// One round, as the user (and the evaluation) sees it.
#[derive(Clone, Debug)]
pub struct Round {
    pub explanation: String,
    pub candidate: Option<String>,
    /// How the round ended: "the test passes and nothing regressed", "test still fails", ...
    pub verdict: String,
}

/// A verified fix.
#[derive(Clone, Debug)]
pub struct Fix {
    /// The file to edit, relative to the root, its text when the job started, and the range to replace.
    pub file: PathBuf,
    pub original_text: String,
    pub range: std::ops::Range<usize>,
    pub new_function: String,
    pub function: String,
    pub explanation: String,
    /// Lines of evidence: what ran, before and after.
    pub evidence: Vec<String>,
    pub rounds: Vec<Round>,
}

/// Why no fix is offered, with the rounds tried.
#[derive(Clone, Debug)]
pub struct NoFix {
    pub reason: String,
    pub rounds: Vec<Round>,
}

impl NoFix {
    fn early(reason: impl Into<String>) -> NoFix {
        NoFix { reason: reason.into(), rounds: Vec::new() }
    }
}

const SYSTEM: &str = "You are a careful software engineer. You fix bugs in functions so that their tests pass. \
You never change the tests.";

/// Runs the self-debug loop. `progress(message, percent)` reports each step; `cancel` stops it (runs are killed).
pub fn self_debug(job: &Job, model: &dyn ChatModel, cancel: &Arc<AtomicBool>, progress: &mut dyn FnMut(&str, u32)) -> Result<Fix, NoFix> {
    let lang_id = crate::features::code::language_id(job.language);
    progress("copying the workspace", 0);
    let scratch = Scratch::copy_of(&job.root, &job.overlays, "selfdebug", Default::default()).map_err(NoFix::early)?;
    let root = scratch.path().to_owned();
    // A hang or a crash leaves little output: say what happened first.
    let clean = |out: &RunOutput| {
        let note = match &out.status {
            RunStatus::TimedOut => format!("(the test did not finish: killed after {:.0} s)\n", out.duration.as_secs_f64()),
            RunStatus::Signaled(sig) => format!("(the test process crashed with signal {sig})\n"),
            _ => String::new(),
        };
        format!("{note}{}", clean_output(&out.explained_output(), &root))
    };

    progress(&format!("running {}", job.test.name), 5);
    let before = job.commands.run_test(lang_id, &root, &job.test, cancel).map_err(NoFix::early)?;
    check_ran(&before, cancel)?;
    if before.success() {
        return Err(NoFix::early(format!("{} already passes ({}); nothing to fix", job.test.name, before.summary())));
    }
    let target = function_under_test(job.language, &root, &job.test.file, job.test_range.clone(), &before.output).map_err(NoFix::early)?;
    if is_test_file_function(&target, &job.test) {
        return Err(NoFix::early(format!("the failure points at the test `{}` itself; tests are never edited", target.function.name)));
    }
    progress(&format!("running the suite before the fix ({})", target.function.name), 10);
    let suite_before = job.commands.run_suite(lang_id, &root, &job.test, cancel).map_err(NoFix::early)?;
    check_ran(&suite_before, cancel)?;
    let passed_before = passed(&suite_before);

    let test_text = std::fs::read_to_string(root.join(&job.test.file)).unwrap_or_default();
    let test_source = test_text.get(job.test_range.clone()).unwrap_or("").to_owned();
    let fence = lang_id;
    let name = target.function.name.clone();
    let mut conversation = Conversation::new(SYSTEM);
    conversation.user(&format!(
        "The test `{test}` fails. The test is correct; the bug is in the function `{name}`.\n\nThe function under test, in `{file}`:\n```{fence}\n{function}\n```\n\nThe test, in `{test_file}`:\n```{fence}\n{test_source}\n```\n\nOutput of the test:\n```\n{output}\n```\n\nExplain the bug in `{name}` in one sentence, then write the whole corrected function `{name}`.",
        test = job.test.name,
        file = target.file.display(),
        function = target.function.text(&target.text),
        test_file = job.test.file.display(),
        output = clean(&before),
    ));
    let old_errors = parse(job.language, &target.text).map(|t| count_syntax_errors(&t)).unwrap_or(0);
    let mut rounds: Vec<Round> = Vec::new();
    let mut tried: BTreeSet<String> = BTreeSet::new();
    for round in 1..=job.rounds.max(1) {
        let pct = 15 + (80 * (round as u32 - 1)) / job.rounds.max(1) as u32;
        progress(&format!("round {round}/{}: asking the model", job.rounds), pct);
        // Round 1 is greedy; later rounds sample, and a reply that repeats an earlier attempt is drawn again once
        // (a small model otherwise tends to answer the feedback with the same code).
        let mut draw = 0u64;
        let (reply, candidate, explanation) = loop {
            let sampling = match (round, draw) {
                (1, 0) => SamplingParams::greedy(),
                _ => SamplingParams { temperature: if draw == 0 { 0.7 } else { 1.0 }, seed: 1000 * round as u64 + draw, ..Default::default() },
            };
            let turn = explain_then_code(model, &conversation, &format!("The bug in `{name}`:"), &format!("The corrected function `{name}`:"), fence, sampling, job.max_tokens, cancel)
                .map_err(|e| NoFix { reason: format!("the model failed: {e}"), rounds: rounds.clone() })?;
            if cancel.load(Ordering::Relaxed) {
                return Err(NoFix { reason: "cancelled".into(), rounds });
            }
            let candidate = function_from(job.language, &turn.code, &name)
                .map(|c| keep_docstring(job.language, target.function.text(&target.text), &c))
                .map(|c| reindent(&c, &target.function.indent).trim_start().to_owned());
            let repeated = candidate.as_ref().is_some_and(|c| tried.contains(c));
            if repeated && draw == 0 {
                draw += 1;
                continue;
            }
            break (turn.turn, candidate, turn.explanation);
        };
        conversation.assistant(&reply);
        let Some(new_function) = candidate else {
            rounds.push(Round { explanation, candidate: None, verdict: format!("the reply had no function `{name}`") });
            conversation.user(&format!("Your reply had no complete function `{name}` in a code block. Write the whole corrected function `{name}` in one ```{fence} code block."));
            continue;
        };
        let mut new_text = target.text.clone();
        new_text.replace_range(target.function.range.clone(), &new_function);
        let new_errors = parse(job.language, &new_text).map(|t| count_syntax_errors(&t)).unwrap_or(usize::MAX);
        if new_errors > old_errors || !tried.insert(new_function.clone()) {
            let why = if new_errors > old_errors { "it does not parse" } else { "it is the same code as an earlier attempt, which failed" };
            rounds.push(Round { explanation, candidate: Some(new_function), verdict: format!("rejected: {why}") });
            conversation.user(&format!("That version is rejected: {why}. Write a different corrected function `{name}` in one ```{fence} code block."));
            continue;
        }
        scratch.write(&target.file, &new_text).map_err(NoFix::early)?;
        progress(&format!("round {round}/{}: running {}", job.rounds, job.test.name), pct + 40 / job.rounds.max(1) as u32);
        let after = job.commands.run_test(lang_id, &root, &job.test, cancel).map_err(NoFix::early)?;
        check_ran(&after, cancel).map_err(|e| NoFix { rounds: rounds.clone(), ..e })?;
        if !after.success() {
            let why = after.confinement_note().map(|n| format!(" ({n})")).unwrap_or_default();
            rounds.push(Round { explanation, candidate: Some(new_function), verdict: format!("{} still fails{why}", job.test.name) });
            conversation.user(&format!(
                "With your version `{}` still fails:\n```\n{}\n```\nExplain in one sentence what is still wrong, then write the whole corrected function `{name}` in one ```{fence} code block.",
                job.test.name,
                clean(&after)
            ));
            continue;
        }
        progress(&format!("round {round}/{}: {} passes; running the suite", job.rounds, job.test.name), pct + 60 / job.rounds.max(1) as u32);
        let suite_after = job.commands.run_suite(lang_id, &root, &job.test, cancel).map_err(NoFix::early)?;
        check_ran(&suite_after, cancel).map_err(|e| NoFix { rounds: rounds.clone(), ..e })?;
        let passed_after = passed(&suite_after);
        let broken: Vec<&String> = passed_before.difference(&passed_after).collect();
        if !broken.is_empty() || (passed_before.is_empty() && passed_after.is_empty() && !suite_after.success()) {
            let names = broken.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
            rounds.push(Round { explanation, candidate: Some(new_function), verdict: format!("{} passes but it breaks {names}", job.test.name) });
            conversation.user(&format!(
                "Now `{}` passes, but these tests that passed before fail: {names}.\n```\n{}\n```\nFix `{name}` so that all of them pass; write the whole function in one ```{fence} code block.",
                job.test.name,
                clean(&suite_after)
            ));
            continue;
        }
        rounds.push(Round { explanation: explanation.clone(), candidate: Some(new_function.clone()), verdict: "the test passes and nothing regressed".into() });
        let isolation = after.isolation();
        let evidence = vec![
            format!("{}: failed before ({}), passes after round {round} ({:.1} s, {isolation})", job.test.name, short_status(&before), after.duration.as_secs_f64()),
            format!(
                "suite `{}`: {} passed before, {} passed after, 0 newly failing",
                suite_after.command.replace(&format!("{}/", root.display()), ""),
                passed_before.len(),
                passed_after.len()
            ),
        ];
        progress("verified", 100);
        return Ok(Fix {
            file: target.file.clone(),
            original_text: target.text.clone(),
            range: target.function.range.clone(),
            new_function,
            function: name,
            explanation,
            evidence,
            rounds,
        });
    }
    Err(NoFix { reason: format!("no verified fix for {} after {} rounds", job.test.name, job.rounds), rounds })
}

/// The function `name` from model-written `code` (which may hold imports or other helpers: only the function is
/// taken, the rest of the file stays as the user wrote it).
fn function_from(lang: Language, code: &str, name: &str) -> Option<String> {
    let tree = parse(lang, code)?;
    let f = find_function(lang, code, &tree, name)?;
    Some(f.text(code).to_owned())
}

/// The candidate with the original function's docstring put back: a fix changes code, not documentation (small
/// models often drop or rewrite docstring examples while copying).
pub(crate) fn keep_docstring(lang: Language, original: &str, candidate: &str) -> String {
    if lang != Language::Python {
        return candidate.to_owned();
    }
    let (Some(old), Some(new)) = (docstring_range(original), docstring_range(candidate)) else { return candidate.to_owned() };
    let mut out = candidate.to_owned();
    out.replace_range(new, &original[old]);
    out
}

/// Byte range of a Python function's docstring (the string that opens its body).
fn docstring_range(function: &str) -> Option<std::ops::Range<usize>> {
    let tree = parse(Language::Python, function)?;
    let def = tree.root_node().named_child(0)?;
    let body = def.child_by_field_name("body")?;
    let first = body.named_child(0)?;
    let string = first.named_child(0).filter(|n| first.kind() == "expression_statement" && n.kind() == "string")?;
    Some(string.byte_range())
}

fn is_test_file_function(target: &Target, test: &TestTarget) -> bool {
    target.file == test.file && (target.function.name == test.name || target.function.name.starts_with("test"))
}

fn passed(out: &RunOutput) -> BTreeSet<String> {
    parse_outcomes(&out.output).into_iter().filter(|o| o.status == TestStatus::Passed).map(|o| o.name).collect()
}

fn check_ran(out: &RunOutput, cancel: &AtomicBool) -> Result<(), NoFix> {
    if cancel.load(Ordering::Relaxed) || out.status == RunStatus::Cancelled {
        return Err(NoFix::early("cancelled"));
    }
    match &out.status {
        RunStatus::FailedToStart(e) => Err(NoFix::early(format!("the test command could not start: {e}"))),
        RunStatus::Exited(127) => Err(NoFix::early(format!("{}: command not found; set the test command in the pie-ls settings", out.command))),
        _ => Ok(()),
    }
}

fn short_status(out: &RunOutput) -> String {
    match &out.status {
        RunStatus::Exited(c) => format!("exit {c}"),
        RunStatus::TimedOut => "timed out".into(),
        RunStatus::Signaled(s) => format!("signal {s}"),
        other => format!("{other:?}"),
    }
}

/// The output as the model and the user should see it: scratch paths made relative, trimmed head and tail.
fn clean_output(output: &str, root: &Path) -> String {
    let root_s = format!("{}/", root.display());
    let text = output.replace(&root_s, "");
    let trimmed = trim_lines(text.trim(), 12, 40);
    if trimmed.len() > 4000 {
        let cut = trimmed.len() - 4000;
        let mut start = cut;
        while !trimmed.is_char_boundary(start) {
            start += 1;
        }
        return format!("[...]\n{}", &trimmed[start..]);
    }
    trimmed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_original_docstring_is_kept() {
        let original = "def f(x):\n    \"\"\"Adds one.\n    >>> f(1)\n    2\n    \"\"\"\n    return x - 1\n";
        let candidate = "def f(x):\n    \"\"\"Adds.\"\"\"\n    return x + 1";
        assert_eq!(keep_docstring(Language::Python, original, candidate), "def f(x):\n    \"\"\"Adds one.\n    >>> f(1)\n    2\n    \"\"\"\n    return x + 1");
        assert_eq!(keep_docstring(Language::Python, original, "def f(x):\n    return x + 1"), "def f(x):\n    return x + 1");
    }
}
