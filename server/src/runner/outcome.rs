//! Per-test outcomes read from test runners' output, so "nothing that passed before fails" can be checked test by
//! test. Formats: pytest `-rA` summary lines (and pie-ls's fallback runner, which prints the same), `cargo test`,
//! `go test -v`, and TAP (`node --test --test-reporter=tap`).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestStatus {
    Passed,
    Failed,
    Skipped,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestOutcome {
    pub name: String,
    pub status: TestStatus,
}

pub fn parse_outcomes(output: &str) -> Vec<TestOutcome> {
    let mut out = Vec::new();
    for line in output.lines() {
        if let Some(o) = pytest_line(line).or_else(|| cargo_line(line)).or_else(|| go_line(line)).or_else(|| tap_line(line)) {
            out.push(o);
        }
    }
    out
}

fn outcome(name: &str, status: TestStatus) -> Option<TestOutcome> {
    let name = name.trim();
    (!name.is_empty()).then(|| TestOutcome { name: name.to_owned(), status })
}

fn pytest_line(line: &str) -> Option<TestOutcome> {
    let (word, rest) = line.split_once(' ')?;
    let status = match word {
        "PASSED" | "XFAIL" => TestStatus::Passed,
        "FAILED" | "ERROR" | "XPASS" => TestStatus::Failed,
        "SKIPPED" => TestStatus::Skipped,
        _ => return None,
    };
    let id = rest.split(" - ").next()?.trim();
    // Only node ids (`file.py::name`); "ERROR collecting ..." headers and prose are not outcomes.
    if !id.contains("::") && !id.ends_with(".py") {
        return None;
    }
    outcome(id, status)
}

fn cargo_line(line: &str) -> Option<TestOutcome> {
    let rest = line.strip_prefix("test ")?;
    let (name, result) = rest.rsplit_once(" ... ")?;
    let status = match result.trim() {
        "ok" => TestStatus::Passed,
        "FAILED" => TestStatus::Failed,
        r if r.starts_with("ignored") => TestStatus::Skipped,
        _ => return None,
    };
    outcome(name, status)
}

fn go_line(line: &str) -> Option<TestOutcome> {
    let rest = line.trim_start().strip_prefix("--- ")?;
    let (word, rest) = rest.split_once(": ")?;
    let status = match word {
        "PASS" => TestStatus::Passed,
        "FAIL" => TestStatus::Failed,
        "SKIP" => TestStatus::Skipped,
        _ => return None,
    };
    outcome(rest.split_whitespace().next()?, status)
}

fn tap_line(line: &str) -> Option<TestOutcome> {
    let t = line.trim_start();
    let (status, rest) = if let Some(r) = t.strip_prefix("not ok ") {
        (TestStatus::Failed, r)
    } else if let Some(r) = t.strip_prefix("ok ") {
        (TestStatus::Passed, r)
    } else {
        return None;
    };
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit()).trim_start();
    let name = rest.strip_prefix("- ").unwrap_or(rest);
    let (name, directive) = match name.split_once(" # ") {
        Some((n, d)) => (n, d.to_ascii_uppercase()),
        None => (name, String::new()),
    };
    let status = if directive.starts_with("SKIP") || directive.starts_with("TODO") { TestStatus::Skipped } else { status };
    outcome(name, status)
}
