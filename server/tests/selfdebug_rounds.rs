//! The self-debug loop's rounds, with prepared candidates (no model) and the real test runner: no candidate is run
//! twice (duplicates up to comments and spacing are drawn again, then skipped), every round is a fresh conversation
//! that states the earlier attempts and how they failed, and a candidate that passes the target test but breaks
//! another test file of the same function is rejected.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use pie_ls::features::chat::{Role, ScriptedChat};
use pie_ls::features::selfdebug::{normalised, self_debug_with, Job};
use pie_ls::runner::{Scratch, TestCommands, TestTarget};
use pie_ls::syntax::Language;

const CALC: &str = "def add(a, b):\n    return a - b\n\n\ndef double(x):\n    return 2 * x\n";
const TESTS: &str = "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n\n\ndef test_zero():\n    assert add(0, 0) == 0\n";
// Another test file of the same function: not the suite of the failing test, but evidence all the same.
const MORE_TESTS: &str = "from calc import add, double\n\n\ndef test_negative():\n    assert add(-3, 0) == -3\n\n\ndef test_double():\n    assert double(2) == 4\n";

fn candidate(explanation: &str, code: &str) -> [String; 2] {
    [explanation.to_owned(), code.to_owned()]
}

#[test]
fn rounds_explore_and_never_run_a_candidate_twice() {
    let ws = Scratch::empty("selfdebug-rounds").unwrap();
    ws.write("calc.py".as_ref(), CALC).unwrap();
    ws.write("test_calc.py".as_ref(), TESTS).unwrap();
    ws.write("test_more.py".as_ref(), MORE_TESTS).unwrap();
    let start = TESTS.find("def test_add").unwrap();
    let end = TESTS.find("\n\n\ndef test_zero").unwrap();
    let job = Job {
        language: Language::Python,
        root: ws.path().to_owned(),
        overlays: Vec::new(),
        test: TestTarget { file: "test_calc.py".into(), name: "test_add".into(), class: None },
        test_range: start..end,
        rounds: 3,
        candidates: 2,
        commands: TestCommands::default(),
        max_tokens: 128,
        confirm: 0,
    };
    let replies: Vec<String> = [
        // Round 1, candidate 1: wrong (2 * 3 is 6).
        candidate("it subtracts.", "def add(a, b):\n    return a * b"),
        // Round 1, candidate 2: the same code with a comment and other spacing, then the original itself, then
        // the same again: drawn three times, never run.
        candidate("it subtracts.", "def add(a, b):\n    # multiply\n    return a*b"),
        candidate("it is fine.", "def add(a, b):\n    return a - b"),
        candidate("it subtracts.", "def add(a, b):\n\n    return a*b  # again"),
        // Round 2, candidate 1: passes test_add and its suite, but breaks test_more.py's test_negative.
        candidate("signs are lost.", "def add(a, b):\n    return abs(a) + abs(b)"),
        // Round 2, candidate 2: right.
        candidate("it subtracts instead of adding.", "def add(a, b):\n    return a + b"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let model = ScriptedChat::new(replies);
    let fix = self_debug_with(&job, &[("scripted", &model)], &Arc::new(AtomicBool::new(false)), &mut |_, _| {}).expect("a verified fix");

    assert_eq!(fix.round(), 2);
    assert_eq!(fix.new_function, "def add(a, b):\n    return a + b");
    assert_eq!(model.remaining(), 0, "every prepared reply was asked for");
    let verdicts: Vec<(usize, &str)> = fix.rounds.iter().map(|r| (r.round, r.verdict.as_str())).collect();
    assert_eq!(verdicts.len(), 4, "{verdicts:#?}");
    assert_eq!(verdicts[0], (1, "test_add still fails"));
    assert_eq!(verdicts[1], (1, "skipped: the same code as an earlier candidate or the original"));
    assert!(verdicts[2].0 == 2 && verdicts[2].1.starts_with("test_add passes but it breaks") && verdicts[2].1.contains("test_negative"), "{verdicts:#?}");
    assert_eq!(verdicts[3], (2, "the test passes and nothing regressed"));
    // What ran is pairwise different, and differs from the original.
    let ran: Vec<String> = fix.rounds.iter().filter(|r| !r.verdict.starts_with("skipped")).map(|r| normalised(Language::Python, r.candidate.as_deref().unwrap())).collect();
    let mut unique = ran.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ran.len(), "no candidate ran twice");
    assert!(!ran.contains(&normalised(Language::Python, "def add(a, b):\n    return a - b")));
    assert!(fix.evidence.iter().any(|e| e.contains("other tests of `add`") && e.contains("test_more.py")), "{:?}", fix.evidence);

    // Every request is a fresh conversation: system and user only, never the model's own earlier turn.
    let asked = model.asked();
    assert!(asked.iter().all(|(messages, _)| messages.len() == 2 && messages[0].role == Role::System && messages[1].role == Role::User));
    let round_1 = &asked[0].0[1].content;
    let round_2 = &asked.last().unwrap().0[1].content;
    assert!(!round_1.contains("Wrong version"), "{round_1}");
    assert!(round_2.contains("Wrong version 1") && round_2.contains("return a * b"), "round 2 states what was tried: {round_2}");
    assert!(round_2.contains("test_add` still fails") && round_2.contains("assert"), "and how it failed: {round_2}");
    assert!(round_2.contains("Do not repeat them"), "{round_2}");
}

// A documented function with two failing tests: the target and a sibling that calls the same function.
const MEDIAN: &str = "def median(xs):\n    \"\"\"The middle value.\n    >>> median([3, 1, 2])\n    2\n    \"\"\"\n    xs = sorted(xs)\n    return xs[len(xs) // 2 + 1]\n";
const MEDIAN_TESTS: &str = "from stats import median\n\n\ndef test_three():\n    assert median([3, 1, 2]) == 2\n\n\ndef test_five():\n    assert median([5, 1, 4, 2, 3]) == 3\n\n\ndef test_ties():\n    assert median([1, 2, 2, 2]) == 2\n";

fn median_job(ws: &Scratch, rounds: usize) -> Job {
    ws.write("stats.py".as_ref(), MEDIAN).unwrap();
    ws.write("test_stats.py".as_ref(), MEDIAN_TESTS).unwrap();
    let start = MEDIAN_TESTS.find("def test_three").unwrap();
    let end = MEDIAN_TESTS.find("\n\n\ndef test_five").unwrap();
    Job {
        language: Language::Python,
        root: ws.path().to_owned(),
        overlays: Vec::new(),
        test: TestTarget { file: "test_stats.py".into(), name: "test_three".into(), class: None },
        test_range: start..end,
        rounds,
        candidates: 1,
        commands: TestCommands::default(),
        max_tokens: 128,
        confirm: 0,
    }
}

// A fix that only special-cases the target's input is not offered while a round can still find a full one; the next
// round is told which sibling still fails. The model writes only the body: the signature and docstring are given.
#[test]
fn a_fix_that_leaves_other_tests_of_the_function_failing_is_not_a_full_fix() {
    let ws = Scratch::empty("selfdebug-siblings").unwrap();
    let job = median_job(&ws, 3);
    let special_case = "    if xs == [3, 1, 2]:\n        return 2\n    xs = sorted(xs)\n    return xs[len(xs) // 2 + 1]";
    let right = "    xs = sorted(xs)\n    return xs[len(xs) // 2]";
    let replies: Vec<String> = [candidate("it is off for three.", special_case), candidate("the index is one too far.", right)].into_iter().flatten().collect();
    let model = ScriptedChat::new(replies);
    let fix = self_debug_with(&job, &[("scripted", &model)], &Arc::new(AtomicBool::new(false)), &mut |_, _| {}).expect("a verified fix");
    assert_eq!(fix.round(), 2);
    assert!(fix.still_failing.is_empty(), "{:?}", fix.still_failing);
    let head = "def median(xs):\n    \"\"\"The middle value.\n    >>> median([3, 1, 2])\n    2\n    \"\"\"\n";
    assert_eq!(fix.new_function, format!("{head}{right}"));
    assert!(model.asked().iter().filter(|(_, prefill)| prefill.contains("```python\n")).all(|(_, prefill)| prefill.ends_with(head)), "the code block opens with the signature and docstring");
    let verdicts: Vec<&str> = fix.rounds.iter().map(|r| r.verdict.as_str()).collect();
    assert!(verdicts[0].contains("other tests of `median` still fail") && verdicts[0].contains("test_five"), "{verdicts:?}");
    assert!(!verdicts[0].contains("test_ties"), "test_ties passed before: it is no sibling to fix: {verdicts:?}");
    let asked = model.asked();
    let round_2 = &asked.last().unwrap().0[1].content;
    assert!(round_2.contains("other tests of `median` still fail: test_five") && round_2.contains("if xs == [3, 1, 2]"), "{round_2}");
    assert!(fix.evidence.iter().any(|e| e.contains("failed before pass too") && e.contains("test_five")), "{:?}", fix.evidence);
}

// A candidate that fixes the index and also drops duplicates passes every test (they have no case where that matters)
// and is still wrong: only the line the tests need is kept, the other goes back to what the user wrote.
#[test]
fn a_fix_keeps_only_the_changes_the_tests_need() {
    let ws = Scratch::empty("selfdebug-minimal").unwrap();
    let job = median_job(&ws, 1);
    let extra = "    xs = sorted(set(xs))\n    return xs[len(xs) // 2]";
    let model = ScriptedChat::new(candidate("the index is one too far.", extra));
    let fix = self_debug_with(&job, &[("scripted", &model)], &Arc::new(AtomicBool::new(false)), &mut |_, _| {}).expect("a verified fix");
    assert!(fix.is_full());
    assert!(fix.new_function.ends_with("    xs = sorted(xs)\n    return xs[len(xs) // 2]"), "{}", fix.new_function);
    assert!(fix.evidence.iter().any(|e| e.starts_with("only the changes the tests need: 1 of the candidate's 2 changed blocks")), "{:?}", fix.evidence);
    let last = fix.rounds.last().unwrap();
    assert_eq!(last.candidate.as_deref(), Some(fix.new_function.as_str()));
    assert!(last.verdict.contains("1 of its 2 changed blocks"), "{}", last.verdict);
}

// The second fix needs both of its changed lines, so trying each without the other fails; it is still compared as
// written (not as the last version tried) and agrees with the first.
#[test]
fn a_fix_whose_every_change_is_needed_is_compared_as_written() {
    let ws = Scratch::empty("selfdebug-minimal-agree").unwrap();
    let job = Job { confirm: 2, ..median_job(&ws, 1) };
    let right = "    xs = sorted(xs)\n    return xs[len(xs) // 2]";
    let renamed = "    ys = sorted(xs)\n    return ys[len(ys) // 2]";
    let replies: Vec<String> = [candidate("the index is one too far.", right), candidate("the index is one too far.", renamed)].into_iter().flatten().collect();
    let model = ScriptedChat::new(replies);
    let fix = self_debug_with(&job, &[("scripted", &model)], &Arc::new(AtomicBool::new(false)), &mut |_, _| {}).expect("a verified fix");
    assert!(fix.is_full(), "{:?}", fix.disputed);
    assert!(fix.new_function.ends_with(right), "{}", fix.new_function);
    assert!(fix.evidence.iter().any(|e| e.starts_with("second opinion: another fix")), "{:?}", fix.evidence);
    assert!(fix.rounds.iter().all(|r| !r.verdict.contains("changed blocks")), "{:#?}", fix.rounds);
}

// When no round finds a full fix, the special-cased one is offered as what it is: partial, naming what still fails.
#[test]
fn a_partial_fix_is_offered_last_and_says_what_still_fails() {
    let ws = Scratch::empty("selfdebug-partial").unwrap();
    let job = median_job(&ws, 1);
    let special_case = "    if xs == [3, 1, 2]:\n        return 2\n    return sorted(xs)[len(xs) // 2 + 1]";
    let model = ScriptedChat::new(candidate("it is off for three.", special_case));
    let fix = self_debug_with(&job, &[("scripted", &model)], &Arc::new(AtomicBool::new(false)), &mut |_, _| {}).expect("a partial fix");
    assert_eq!(fix.still_failing, vec!["test_stats.py::test_five".to_owned()]);
    assert!(fix.evidence.iter().any(|e| e.starts_with("not a full fix") && e.contains("test_five")), "{:?}", fix.evidence);
    assert_eq!(fix.rounds.len(), 1);
    assert!(fix.new_function.ends_with(special_case));
}

// The same rule for a JavaScript suite (`node:test`): the sibling is found by its test name.
#[test]
fn a_javascript_fix_must_pass_the_other_tests_of_the_function_too() {
    let ws = Scratch::empty("selfdebug-js-siblings").unwrap();
    let source = "function median(xs) {\n  const s = [...xs].sort((a, b) => a - b);\n  return s[Math.floor(s.length / 2) + 1];\n}\n\nmodule.exports = { median };\n";
    let tests = "const test = require('node:test');\nconst assert = require('node:assert');\nconst { median } = require('./stats');\n\ntest('three', () => {\n  assert.strictEqual(median([3, 1, 2]), 2);\n});\n\ntest('five', () => {\n  assert.strictEqual(median([5, 1, 4, 2, 3]), 3);\n});\n";
    ws.write("stats.js".as_ref(), source).unwrap();
    ws.write("stats.test.js".as_ref(), tests).unwrap();
    let start = tests.find("test('three'").unwrap();
    let end = tests.find("\n\ntest('five'").unwrap();
    let job = Job {
        language: Language::JavaScript,
        root: ws.path().to_owned(),
        overlays: Vec::new(),
        test: TestTarget { file: "stats.test.js".into(), name: "three".into(), class: None },
        test_range: start..end,
        rounds: 2,
        candidates: 1,
        commands: TestCommands::default(),
        max_tokens: 128,
        confirm: 0,
    };
    let special_case = "function median(xs) {\n  if (xs.length === 3) return 2;\n  const s = [...xs].sort((a, b) => a - b);\n  return s[Math.floor(s.length / 2) + 1];\n}";
    let right = "function median(xs) {\n  const s = [...xs].sort((a, b) => a - b);\n  return s[Math.floor(s.length / 2)];\n}";
    let replies: Vec<String> = [candidate("three is off.", special_case), candidate("one too far.", right)].into_iter().flatten().collect();
    let model = ScriptedChat::new(replies);
    let fix = self_debug_with(&job, &[("scripted", &model)], &Arc::new(AtomicBool::new(false)), &mut |_, _| {}).expect("a verified fix");
    assert_eq!(fix.round(), 2, "{:#?}", fix.rounds);
    assert!(fix.still_failing.is_empty());
    assert!(fix.rounds[0].verdict.contains("other tests of `median` still fail: five"), "{:#?}", fix.rounds);
    assert_eq!(fix.new_function, right);
}

// Thin tests: two examples, sides always in the same order. A fix that only works for that order passes them as
// well as a right one does; only inputs near the tests' own (the sides swapped, a sign flipped) tell them apart.
const TRIANGLE: &str = "def right_angle(a, b, c):\n    return c * c == a * a - b * b\n";
const TRIANGLE_TESTS: &str = "from tri import right_angle\n\n\ndef test_yes():\n    assert right_angle(3, 4, 5)\n\n\ndef test_no():\n    assert not right_angle(1, 2, 3)\n";
const ORDERED: &str = "def right_angle(a, b, c):\n    return c * c == a * a + b * b";
const SORTED: &str = "def right_angle(a, b, c):\n    s = sorted([a, b, c])\n    return s[2] ** 2 == s[0] ** 2 + s[1] ** 2";
const SORTED_AGAIN: &str = "def right_angle(a, b, c):\n    x, y, z = sorted((a, b, c))\n    return x * x + y * y == z * z";

fn triangle_job(ws: &Scratch) -> Job {
    ws.write("tri.py".as_ref(), TRIANGLE).unwrap();
    ws.write("test_tri.py".as_ref(), TRIANGLE_TESTS).unwrap();
    let start = TRIANGLE_TESTS.find("def test_yes").unwrap();
    let end = TRIANGLE_TESTS.find("\n\n\ndef test_no").unwrap();
    Job {
        language: Language::Python,
        root: ws.path().to_owned(),
        overlays: Vec::new(),
        test: TestTarget { file: "test_tri.py".into(), name: "test_yes".into(), class: None },
        test_range: start..end,
        rounds: 1,
        candidates: 1,
        commands: TestCommands::default(),
        max_tokens: 128,
        confirm: 2,
    }
}

fn triangle_fix(replies: &[&str]) -> (pie_ls::features::selfdebug::Fix, ScriptedChat) {
    let ws = Scratch::empty("selfdebug-second-opinion").unwrap();
    let job = triangle_job(&ws);
    let replies: Vec<String> = replies.iter().flat_map(|code| candidate("it subtracts.", code)).collect();
    let model = ScriptedChat::new(replies);
    let fix = self_debug_with(&job, &[("scripted", &model)], &Arc::new(AtomicBool::new(false)), &mut |_, _| {}).expect("a fix");
    (fix, model)
}

// Two fixes written apart that return the same near the tests' inputs confirm each other: the first is offered.
#[test]
fn a_second_fix_that_agrees_confirms_the_first() {
    let (fix, model) = triangle_fix(&[SORTED, SORTED_AGAIN]);
    assert!(fix.is_full() && fix.disputed.is_none(), "{:?}", fix.disputed);
    assert_eq!(fix.new_function, SORTED);
    assert_eq!(model.remaining(), 0);
    assert!(fix.evidence.iter().any(|e| e.starts_with("second opinion: another fix") && e.contains("returns the same")), "{:?}", fix.evidence);
    assert_eq!(fix.rounds.last().and_then(|r| r.candidate.as_deref()), Some(SORTED), "the fix is the last round entry");
}

// The order-dependent fix passes both tests first, then two that agree with each other and not with it: the majority
// is offered, and the order-dependent one is not.
#[test]
fn two_fixes_that_agree_outvote_one_that_passes_the_same_tests() {
    let (fix, model) = triangle_fix(&[ORDERED, SORTED, SORTED_AGAIN]);
    assert!(fix.is_full(), "{:?}", fix.disputed);
    assert_eq!(fix.new_function, SORTED);
    assert_eq!(model.remaining(), 0);
    let passing = fix.rounds.iter().filter(|r| r.verdict == "the test passes and nothing regressed").count();
    assert_eq!(passing, 3, "{:#?}", fix.rounds);
}

// Two fixes that pass the same tests and differ near their inputs, with no third to decide: the first is offered as
// disputed, naming an input where they differ, and counts as no full fix.
#[test]
fn two_fixes_that_differ_make_a_disputed_fix() {
    let (fix, model) = triangle_fix(&[ORDERED, SORTED, "def right_angle(a, b, c):\n    return False"]);
    assert_eq!(model.remaining(), 0);
    assert!(!fix.is_full());
    assert_eq!(fix.new_function, ORDERED);
    let disputed = fix.disputed.as_deref().expect("disputed");
    assert!(disputed.contains("`right_angle(") && disputed.contains("returns"), "{disputed}");
    assert!(fix.evidence.iter().any(|e| e.starts_with("not confirmed:")), "{:?}", fix.evidence);
}

// With no second fix that passes, the first is offered, and the evidence says there was nothing to compare it with.
#[test]
fn a_fix_without_a_second_opinion_says_so() {
    let (fix, model) = triangle_fix(&[SORTED, "def right_angle(a, b, c):\n    return False", "def right_angle(a, b, c):\n    return a < b < c"]);
    assert_eq!(model.remaining(), 0);
    assert!(fix.is_full());
    assert_eq!(fix.new_function, SORTED);
    assert!(fix.evidence.iter().any(|e| e.contains("nothing to compare with")), "{:?}", fix.evidence);
}

// The same function with a docstring: the second opinion can then also be a version written from the docstring and
// the test alone. With a docstring, a candidate's code is what the model writes after the signature and docstring.
const TRIANGLE_DOC: &str = "def right_angle(a, b, c):\n    \"\"\"Whether a triangle with sides a, b and c, given in any order, has a right angle.\"\"\"\n    return c * c == a * a - b * b\n";
const ORDERED_BODY: &str = "    return c * c == a * a + b * b";
const SORTED_BODY: &str = "    s = sorted([a, b, c])\n    return s[2] ** 2 == s[0] ** 2 + s[1] ** 2";
const SORTED_AGAIN_BODY: &str = "    x, y, z = sorted((a, b, c))\n    return x * x + y * y == z * z";
const FALSE_BODY: &str = "    return False";
// Passes test_yes, breaks test_no.
const INCREASING_BODY: &str = "    return a < b < c";

fn triangle_doc_fix(bodies: &[&str]) -> (pie_ls::features::selfdebug::Fix, ScriptedChat) {
    let ws = Scratch::empty("selfdebug-apart").unwrap();
    let job = triangle_job(&ws);
    ws.write("tri.py".as_ref(), TRIANGLE_DOC).unwrap();
    let replies: Vec<String> = bodies.iter().flat_map(|code| candidate("it subtracts.", code)).collect();
    let model = ScriptedChat::new(replies);
    let fix = self_debug_with(&job, &[("scripted", &model)], &Arc::new(AtomicBool::new(false)), &mut |_, _| {}).expect("a fix");
    (fix, model)
}

fn with_doc(body: &str) -> String {
    let head_end = TRIANGLE_DOC.find("\n    return").unwrap() + 1;
    format!("{}{body}", &TRIANGLE_DOC[..head_end])
}

// A lone fix (the other candidates fail) is confirmed by a version written from the docstring that agrees with it;
// that version is asked for without the buggy body.
#[test]
fn a_version_written_from_the_docstring_confirms_a_lone_fix() {
    let (fix, model) = triangle_doc_fix(&[SORTED_BODY, FALSE_BODY, INCREASING_BODY, SORTED_AGAIN_BODY]);
    assert_eq!(model.remaining(), 0);
    assert!(fix.is_full(), "{:?}", fix.disputed);
    assert_eq!(fix.new_function, with_doc(SORTED_BODY));
    assert_eq!(fix.second_opinion, "apart");
    assert!(fix.evidence.iter().any(|e| e.contains("written from its docstring and the test alone") && e.contains("returns the same")), "{:?}", fix.evidence);
    let asked = model.asked();
    let (apart, _) = asked.last().unwrap();
    let request: String = apart.iter().map(|m| m.content.clone()).collect();
    assert!(request.contains("given in any order") && request.contains("right_angle(3, 4, 5)"), "{request}");
    assert!(!request.contains("a * a - b * b"), "the buggy body is not shown: {request}");
}

// Two fixes that differ, and a version written from the docstring that agrees with the second: the second is offered
// as a full fix, and the evidence says a dispute was settled.
#[test]
fn a_version_written_from_the_docstring_settles_a_dispute() {
    let (fix, model) = triangle_doc_fix(&[ORDERED_BODY, SORTED_BODY, FALSE_BODY, SORTED_AGAIN_BODY]);
    assert_eq!(model.remaining(), 0);
    assert!(fix.is_full(), "{:?}", fix.disputed);
    assert_eq!(fix.new_function, with_doc(SORTED_BODY));
    assert_eq!(fix.second_opinion, "apart");
    assert!(fix.evidence.iter().any(|e| e.starts_with("it settles a dispute")), "{:?}", fix.evidence);
}

// A lone fix that only works for one order of the sides, and a version written from the docstring that passes the
// same tests and differs: the fix is offered as disputed, naming the input.
#[test]
fn a_version_written_from_the_docstring_that_differs_disputes_a_lone_fix() {
    let (fix, model) = triangle_doc_fix(&[ORDERED_BODY, FALSE_BODY, INCREASING_BODY, SORTED_BODY, FALSE_BODY]);
    assert_eq!(model.remaining(), 0);
    assert!(!fix.is_full());
    assert_eq!(fix.second_opinion, "disputed");
    assert_eq!(fix.new_function, with_doc(ORDERED_BODY));
    let disputed = fix.disputed.as_deref().expect("disputed");
    assert!(disputed.contains("written from its docstring alone") && disputed.contains("`right_angle("), "{disputed}");
}

// Neither the extra candidates nor the versions written apart pass: the fix is offered, saying so.
#[test]
fn a_lone_fix_says_what_was_drawn_to_compare_with() {
    let (fix, model) = triangle_doc_fix(&[SORTED_BODY, FALSE_BODY, INCREASING_BODY, FALSE_BODY, INCREASING_BODY]);
    assert_eq!(model.remaining(), 0);
    assert!(fix.is_full());
    assert_eq!(fix.second_opinion, "none");
    assert!(fix.evidence.iter().any(|e| e.contains("nor the 2 versions written from the docstring alone")), "{:?}", fix.evidence);
}
