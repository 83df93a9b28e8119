//! `pie-ls bench infill`: completion quality on HumanEval with a PIE-maintained cache vs full recomputation.
//!
//! For each problem, one line (single-line) or a block of up to three lines (multi-line) of the canonical
//! solution is masked, the model fills it in through the server's own prompt layout and suggestion loop, and
//! the problem's tests run on the result (python3, 10 s timeout). All ways reach the same prompt:
//! - `full`: the prompt encoded from scratch;
//! - `pie`: the cache first holds the file with the line present (cursor in place), then the user deletes the
//!   line and the cache follows by a PIE update (the suffix is rotated, not re-encoded, so it is stale), no
//!   correction, answered at once;
//! - `pie+cA/T`: the same update with the bounded correction (`--correction AFTER_EDIT:TAIL`), at once;
//! - `pie+refresh` (with `--refresh`): plain PIE after a complete idle refresh.
//!
//! With `--typed` the edit is typing instead of a deletion: the cache first holds the masked file without the
//! line before the cursor, and that line is typed a character at a time (Enter with its indentation as one
//! keystroke, as editors auto-indent), each keystroke a PIE update with the prompt following the cursor. That is
//! the staleness a suggestion asked for while typing meets: many one-token edits, none refreshed.
//!
//! pass@1 is greedy. Agreement is how often a way produces the identical infill to `full`.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::engine::fetch::{fetch_data, HUMAN_EVAL};
use crate::engine::bench::{correction_name, parse_correction};
use crate::engine::session::Snapshot;
use crate::engine::{resolve_model, Correction, Engine, EngineConfig, KvSession};
use crate::features::completion::{generate_suggestion, prompt_edits, text_after_cursor, CompletionConfig, Markers, PromptBuilder};

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
    /// Skip the first N problems (with `--limit`, runs a slice of the set).
    #[arg(long, default_value_t = 0)]
    pub skip: usize,
    /// Bounded corrections to compare, as AFTER_EDIT:TAIL token counts; each is a way.
    #[arg(long, value_delimiter = ',', default_value = "16:16")]
    pub correction: Vec<String>,
    /// Also measure plain PIE after a complete idle refresh.
    #[arg(long)]
    pub refresh: bool,
    /// Only single-line or multi-line cases (`single`, `multi`; default both).
    #[arg(long)]
    pub kind: Option<String>,
    /// The edit is the line before the cursor typed a keystroke at a time (one PIE update each), not the masked
    /// line's deletion.
    #[arg(long)]
    pub typed: bool,
}

struct Problem {
    prompt: String,
    solution: String,
    test: String,
    entry_point: String,
}

/// How a way brings the cache to the masked prompt.
#[derive(Clone, Copy)]
enum Way {
    Full,
    Pie(Correction),
    PieRefreshed,
}

#[derive(Default)]
struct Tally {
    cases: usize,
    /// Per way: passes, identical to full.
    pass: Vec<usize>,
    agree: Vec<usize>,
}

pub fn run(args: InfillBenchArgs) -> anyhow::Result<()> {
    let path = resolve_model(args.model.as_deref())?;
    let engine = Engine::load(&path, EngineConfig { threads: args.threads, ..EngineConfig::default() })?;
    let markers = Markers::of_model(&engine).context("this benchmark needs a fill-in-the-middle model")?;
    let prompts = PromptBuilder::new(Some(markers), usize::MAX / 4, usize::MAX / 4);
    let problems = load_humaneval()?;
    let mut ways: Vec<(String, Way)> = vec![("full".into(), Way::Full), ("pie".into(), Way::Pie(Correction::OFF))];
    for spec in &args.correction {
        let c = parse_correction(spec)?;
        if c != Correction::OFF {
            ways.push((correction_name(c), Way::Pie(c)));
        }
    }
    if args.refresh {
        ways.push(("pie+refresh".into(), Way::PieRefreshed));
    }
    let kinds: Vec<usize> = match args.kind.as_deref() {
        None => vec![1, 3],
        Some("single") => vec![1],
        Some("multi") => vec![3],
        Some(other) => anyhow::bail!("--kind must be single or multi, not {other}"),
    };
    let started = Instant::now();
    let mut single = Tally { pass: vec![0; ways.len()], agree: vec![0; ways.len()], ..Tally::default() };
    let mut multi = Tally { pass: vec![0; ways.len()], agree: vec![0; ways.len()], ..Tally::default() };
    let mut example = None;
    for (i, problem) in problems.iter().enumerate().skip(args.skip).take(args.limit) {
        for (lines, tally) in [(1usize, &mut single), (3usize, &mut multi)] {
            if !kinds.contains(&lines) {
                continue;
            }
            let Some(mut case) = mask(problem, lines) else { continue };
            if args.typed {
                let Some(typed) = before_typing(&case) else { continue };
                case.start = typed;
            }
            let config = CompletionConfig { max_tokens: if lines == 1 { 48 } else { 128 }, multiline: lines > 1, time_budget_ms: 120_000, ..CompletionConfig::default() };
            let mut outputs = Vec::with_capacity(ways.len());
            // The PIE ways start from one cached state of the file before the deletion.
            let mut before = None;
            for (_, way) in &ways {
                outputs.push(infill(&engine, &prompts, &case, &config, *way, &mut before)?);
            }
            tally.cases += 1;
            for (w, out) in outputs.iter().enumerate() {
                tally.pass[w] += passes(problem, &case, out) as usize;
                tally.agree[w] += (*out == outputs[0]) as usize;
            }
            if example.is_none() && lines == 1 && outputs.iter().all(|o| *o == outputs[0]) {
                example = Some((case.masked.clone(), outputs[0].clone()));
            }
        }
        if (i + 1 - args.skip) % 10 == 0 {
            eprintln!("{} problems, {:.0} s", i + 1 - args.skip, started.elapsed().as_secs_f64());
        }
    }
    let last = (args.skip + args.limit).min(problems.len());
    println!(
        "pie-ls bench infill{}: HumanEval problems {}..{}, model {}, {} threads, greedy, {:.0} s",
        if args.typed { " --typed (the line before the cursor typed, a PIE update a keystroke)" } else { "" },
        args.skip,
        last,
        engine.info().name,
        args.threads,
        started.elapsed().as_secs_f64()
    );
    println!("\n| kind | way | cases | pass@1 % | identical to full % |");
    println!("|---|---|---:|---:|---:|");
    for (name, t) in [("single-line", &single), ("multi-line", &multi)] {
        if t.cases == 0 {
            continue;
        }
        let pct = |n: usize| 100.0 * n as f64 / t.cases.max(1) as f64;
        for (w, (way, _)) in ways.iter().enumerate() {
            println!("| {name} | {way} | {} | {:.1} | {:.1} |", t.cases, pct(t.pass[w]), pct(t.agree[w]));
        }
    }
    if let Some((truth, got)) = example {
        println!("\nexample: masked {truth:?}, filled {got:?}");
    }
    Ok(())
}

struct Case {
    /// The file with the masked span cut out; the cursor is at `cursor`.
    masked_doc: String,
    cursor: usize,
    /// Where the PIE ways start: the file before the user deleted the span (the cursor where it is now).
    /// With `--typed`, the masked file before the line above the cursor was typed, and the keystrokes.
    start: Start,
    masked: String,
}

enum Start {
    Deleted { full_doc: String },
    Typed { doc: String, cursor: usize, keystrokes: Vec<String> },
}

/// The typing that ends in `case.masked_doc` with the cursor in place: from the first character of the nearest
/// non-blank line above the cursor's line (after its indentation) to the cursor, a character a keystroke, except
/// that a newline and the whitespace after it are one keystroke (Enter, auto-indented).
fn before_typing(case: &Case) -> Option<Start> {
    let doc = &case.masked_doc;
    let line_start = doc[..case.cursor].rfind('\n')?;
    let mut end = line_start;
    let content_start = loop {
        let start = doc[..end].rfind('\n').map_or(0, |i| i + 1);
        let line = &doc[start..end];
        if !line.trim().is_empty() {
            break start + (line.len() - line.trim_start().len());
        }
        if start == 0 {
            return None;
        }
        end = start - 1;
    };
    let typed = &doc[content_start..case.cursor];
    let mut keystrokes: Vec<String> = Vec::new();
    let mut chars = typed.chars().peekable();
    while let Some(c) = chars.next() {
        let mut key = c.to_string();
        if c == '\n' {
            while let Some(&w) = chars.peek().filter(|w| w.is_whitespace()) {
                key.push(w);
                chars.next();
            }
        }
        keystrokes.push(key);
    }
    let start_doc = format!("{}{}", &doc[..content_start], &doc[case.cursor..]);
    Some(Start::Typed { doc: start_doc, cursor: content_start, keystrokes })
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
    Some(Case { masked_doc, cursor, start: Start::Deleted { full_doc }, masked })
}

fn infill(
    engine: &Engine,
    prompts: &PromptBuilder,
    case: &Case,
    config: &CompletionConfig,
    way: Way,
    before: &mut Option<(KvSession, Snapshot)>,
) -> anyhow::Result<String> {
    let target = prompts.build(&case.masked_doc, case.cursor).text;
    let mut fresh;
    let session: &mut KvSession = match way {
        Way::Full => {
            fresh = KvSession::open(engine, &target)?;
            &mut fresh
        }
        Way::Pie(correction) => via_pie(engine, prompts, case, &target, correction, before)?,
        Way::PieRefreshed => {
            let session = via_pie(engine, prompts, case, &target, Correction::OFF, before)?;
            session.refresh_stale(usize::MAX, &AtomicBool::new(false))?;
            session
        }
    };
    let line_start = case.masked_doc[..case.cursor].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let generated = generate_suggestion(
        session,
        &case.masked_doc[line_start..case.cursor],
        text_after_cursor(&case.masked_doc, case.cursor),
        config,
        &AtomicBool::new(false),
        Instant::now(),
    )?;
    Ok(generated.text)
}

/// The session of where the PIE ways start (opened once per case), brought to `target` by PIE updates: the
/// deletion in one, or the keystrokes one by one.
fn via_pie<'a>(
    engine: &Engine,
    prompts: &PromptBuilder,
    case: &Case,
    target: &str,
    correction: Correction,
    before: &'a mut Option<(KvSession, Snapshot)>,
) -> anyhow::Result<&'a mut KvSession> {
    let old = match &case.start {
        Start::Deleted { full_doc } => prompts.build(full_doc, case.cursor).text,
        Start::Typed { doc, cursor, .. } => prompts.build(doc, *cursor).text,
    };
    if before.is_none() {
        let session = KvSession::open(engine, &old)?;
        let snap = session.snapshot()?;
        *before = Some((session, snap));
    }
    let (session, snap) = before.as_mut().expect("opened above");
    session.restore(snap)?;
    session.set_correction(correction);
    match &case.start {
        Start::Deleted { .. } => {
            session.update(target, &prompt_edits(&old, target))?;
        }
        Start::Typed { doc, cursor, keystrokes } => {
            let (mut doc, mut cursor, mut prompt) = (doc.clone(), *cursor, old);
            for key in keystrokes {
                doc.insert_str(cursor, key);
                cursor += key.len();
                let next = prompts.build(&doc, cursor).text;
                session.update(&next, &prompt_edits(&prompt, &next))?;
                prompt = next;
            }
            anyhow::ensure!(prompt == target, "the typed keystrokes did not end in the masked prompt");
        }
    }
    Ok(session)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn problem() -> Problem {
        Problem {
            prompt: "def f(xs):\n    \"\"\"Sum.\"\"\"\n".into(),
            solution: "    total = 0\n\n    for x in xs:\n        total += x\n    return total\n".into(),
            test: String::new(),
            entry_point: "f".into(),
        }
    }

    #[test]
    fn typing_the_line_above_ends_in_the_masked_file_with_enter_and_indent_as_one_keystroke() {
        let case = mask(&problem(), 1).expect("a solution to mask");
        assert_eq!(case.masked, "total += x");
        let Some(Start::Typed { doc, cursor, keystrokes }) = before_typing(&case) else { panic!("no typing") };
        // The nearest non-blank line above, from its first character.
        assert_eq!(keystrokes.concat(), "for x in xs:\n        ");
        assert_eq!(keystrokes.last().map(String::as_str), Some("\n        "));
        assert_eq!(keystrokes.len(), "for x in xs:".len() + 1);
        let mut typed = doc.clone();
        typed.insert_str(cursor, &keystrokes.concat());
        assert_eq!(typed, case.masked_doc);
        assert_eq!(cursor + keystrokes.concat().len(), case.cursor);
    }

    #[test]
    fn blank_lines_above_are_typed_through() {
        let problem = Problem { solution: "    a = 1\n    b = 2\n\n    c = a + b\n    return c\n".into(), ..problem() };
        let case = mask(&problem, 1).expect("a solution to mask");
        assert_eq!(case.masked, "c = a + b");
        let Some(Start::Typed { keystrokes, .. }) = before_typing(&case) else { panic!("no typing") };
        assert_eq!(keystrokes, ["b", " ", "=", " ", "2", "\n\n    "]);
    }
}
