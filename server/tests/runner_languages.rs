//! The default test commands of each language, run for real on tiny projects: one passing and one failing test,
//! read back test by test. Needs python3, go, node and cargo (scripts/env.sh installs what is missing), and
//! pytest where `PIE_LS_PYTEST_PATH` points at it (scripts/test installs it there). Every run is confined
//! (Landlock) where the kernel offers it.

use std::sync::atomic::AtomicBool;

use pie_ls::runner::{parse_outcomes, RunStatus, Scratch, TestCommands, TestStatus, TestTarget};

fn status_of(outcomes: &[pie_ls::runner::TestOutcome], name: &str) -> Option<TestStatus> {
    outcomes.iter().find(|o| o.name.ends_with(name)).map(|o| o.status)
}

fn project(files: &[(&str, &str)]) -> Scratch {
    let s = Scratch::empty("runner-lang").unwrap();
    for (name, text) in files {
        s.write(name.as_ref(), text).unwrap();
    }
    s
}

fn check(language: &str, commands: &TestCommands, p: &Scratch, file: &str, failing: &str, passing: &str) {
    let cancel = AtomicBool::new(false);
    let one = |name: &str| TestTarget { file: file.into(), name: name.into(), class: None };
    let bad = commands.run_test(language, p.path(), &one(failing), &cancel).unwrap();
    assert!(!bad.success(), "{language}: {failing} must fail:\n{}", bad.output);
    let good = commands.run_test(language, p.path(), &one(passing), &cancel).unwrap();
    assert!(good.success(), "{language}: {passing} must pass alone (the filter must select it):\n{}", good.output);
    // Runs are confined where the kernel offers Landlock, and the toolchain still works inside.
    assert_eq!(good.confined, pie_ls::runner::landlock_abi() > 0, "{language}");
    let suite = commands.run_suite(language, p.path(), &one(failing), &cancel).unwrap();
    let outcomes = parse_outcomes(&suite.output);
    assert_eq!(status_of(&outcomes, failing), Some(TestStatus::Failed), "{language}:\n{}", suite.output);
    assert_eq!(status_of(&outcomes, passing), Some(TestStatus::Passed), "{language}:\n{}", suite.output);
}

#[test]
fn go_test() {
    let p = project(&[
        ("go.mod", "module calc\n\ngo 1.19\n"),
        ("calc.go", "package calc\n\nfunc Add(a, b int) int { return a - b }\n\nfunc Zero() int { return 0 }\n"),
        ("calc_test.go", "package calc\n\nimport \"testing\"\n\nfunc TestAdd(t *testing.T) {\n\tif Add(2, 3) != 5 {\n\t\tt.Fatalf(\"Add(2, 3) = %d, want 5\", Add(2, 3))\n\t}\n}\n\nfunc TestZero(t *testing.T) {\n\tif Zero() != 0 {\n\t\tt.Fatal(\"zero\")\n\t}\n}\n"),
    ]);
    check("go", &TestCommands::default(), &p, "calc_test.go", "TestAdd", "TestZero");
}

#[test]
fn node_test() {
    let p = project(&[
        ("calc.js", "exports.add = (a, b) => a - b;\nexports.zero = () => 0;\n"),
        ("calc.test.js", "const test = require('node:test');\nconst assert = require('node:assert');\nconst { add, zero } = require('./calc');\n\ntest('adds numbers', () => { assert.strictEqual(add(2, 3), 5); });\ntest('zero is zero', () => { assert.strictEqual(zero(), 0); });\n"),
    ]);
    check("javascript", &TestCommands::default(), &p, "calc.test.js", "adds numbers", "zero is zero");
}

#[test]
fn cargo_test() {
    let p = project(&[
        ("Cargo.toml", "[package]\nname = \"calc\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n"),
        ("src/lib.rs", "pub fn add(a: i32, b: i32) -> i32 { a - b }\n\n#[cfg(test)]\nmod tests {\n    use super::*;\n    #[test]\n    fn adds() { assert_eq!(add(2, 3), 5); }\n    #[test]\n    fn zero() { assert_eq!(add(0, 0), 0); }\n}\n"),
    ]);
    check("rust", &TestCommands::default(), &p, "src/lib.rs", "tests::adds", "tests::zero");
}

#[test]
fn python_with_and_without_pytest() {
    let files = [
        ("calc.py", "def add(a, b):\n    return a - b\n"),
        ("test_calc.py", "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n\n\ndef test_zero():\n    assert add(0, 0) == 0\n"),
    ];
    // Without pytest on the path: the built-in runner.
    let p = project(&files);
    // (pytest is not importable by plain python3 in CI: scripts/test installs it aside, under PIE_LS_PYTEST_PATH.)
    let defaults = TestCommands::default();
    check("python", &defaults, &p, "test_calc.py", "test_add", "test_zero");
    // With pytest (its -rA summary lines are what the outcome parser reads).
    match std::env::var("PIE_LS_PYTEST_PATH") {
        Ok(path) => {
            let with = TestCommands {
                commands: [("python".to_owned(), format!("PYTHONPATH={path} python3 -m pytest -q -rA -p no:cacheprovider {{file}}::{{qualified}}"))].into(),
                suites: [("python".to_owned(), format!("PYTHONPATH={path} python3 -m pytest -q -rA -p no:cacheprovider {{dir}}"))].into(),
                ..Default::default()
            };
            let p = project(&files);
            check("python", &with, &p, "test_calc.py", "test_add", "test_zero");
            let out = with.run_test("python", p.path(), &TestTarget { file: "test_calc.py".into(), name: "test_add".into(), class: None }, &AtomicBool::new(false)).unwrap();
            assert!(out.output.contains("assert -1 == 5"), "pytest's own assertion report: {}", out.output);
            assert_eq!(out.status, RunStatus::Exited(1));
        }
        Err(_) => eprintln!("PIE_LS_PYTEST_PATH is not set: the pytest path was not exercised (scripts/test sets it)"),
    }
}
