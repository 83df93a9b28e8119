use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use super::*;

fn limits(ms: u64) -> Limits {
    Limits { timeout: Duration::from_millis(ms), ..Limits::default() }
}

fn run(cmd: &str, limits: &Limits) -> RunOutput {
    let dir = std::env::temp_dir();
    run_shell(cmd, &dir, &[], limits, &AtomicBool::new(false))
}

#[test]
fn a_hanging_command_times_out_and_its_whole_process_group_dies() {
    let scratch = Scratch::empty("runner-test").unwrap();
    let pidfile = scratch.path().join("pid");
    let cmd = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
    let t0 = Instant::now();
    let out = run_shell(&cmd, scratch.path(), &[], &limits(500), &AtomicBool::new(false));
    assert_eq!(out.status, RunStatus::TimedOut, "{out:?}");
    assert!(t0.elapsed() < Duration::from_secs(10));
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // SAFETY: signal 0 only checks existence.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| s.contains(") Z")).unwrap_or(true);
    assert!(!alive || zombie, "the background child {pid} survived the timeout");
    assert!(out.summary().contains("timed out"));
}

#[test]
fn the_memory_cap_stops_a_run_that_allocates_too_much() {
    let capped = Limits { memory_mb: 200, ..limits(20_000) };
    let out = run("python3 -c \"x = bytearray(600 * 1024 * 1024); print('allocated')\"", &capped);
    assert!(!out.success(), "{out:?}");
    assert!(out.output.contains("MemoryError"), "{}", out.output);
    let small = run("python3 -c \"x = bytearray(50 * 1024 * 1024); print('allocated')\"", &capped);
    assert!(small.success() && small.output.contains("allocated"), "{small:?}");
}

#[test]
fn output_is_bounded_head_and_tail() {
    let l = Limits { output_bytes: 1000, ..limits(20_000) };
    let out = run("seq 1 100000", &l);
    assert!(out.success());
    assert!(out.output.starts_with("1\n2\n3\n"));
    assert!(out.output.trim_end().ends_with("100000"));
    assert!(out.output.contains("bytes of output left out"));
    assert!(out.output.len() < 1200);
}

#[test]
fn a_missing_command_and_a_crash_are_reported_clearly() {
    let out = run("definitely-not-a-command-pie-ls", &limits(5_000));
    assert_eq!(out.status, RunStatus::Exited(127));
    assert!(out.explained_output().contains("command was not found"));
    let crash = run("kill -SEGV $$", &limits(5_000));
    assert_eq!(crash.status, RunStatus::Signaled(libc::SIGSEGV), "{crash:?}");
    assert!(crash.summary().contains("crashed"));
}

#[test]
fn cancelling_stops_a_run_at_once() {
    let cancel = std::sync::Arc::new(AtomicBool::new(false));
    let c2 = cancel.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        c2.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let t0 = Instant::now();
    let out = run_shell("sleep 30", &std::env::temp_dir(), &[], &limits(60_000), &cancel);
    assert_eq!(out.status, RunStatus::Cancelled);
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[test]
fn runs_have_no_network_where_namespaces_are_permitted() {
    // /proc/net/dev lists the interfaces of the reader's own network namespace.
    let interfaces = |out: &RunOutput| -> Vec<String> {
        out.output.lines().skip(2).filter_map(|l| l.split(':').next()).map(|s| s.trim().to_owned()).collect()
    };
    let out = run("cat /proc/net/dev", &limits(5_000));
    assert!(out.success(), "{out:?}");
    if network_isolation_available() {
        assert!(out.network_isolated);
        assert_eq!(interfaces(&out), vec!["lo"], "only loopback inside the namespace");
    } else {
        assert!(!out.network_isolated);
    }
    let open = run_shell("cat /proc/net/dev", &std::env::temp_dir(), &[], &Limits { isolate_network: false, ..limits(5_000) }, &AtomicBool::new(false));
    assert!(!open.network_isolated);
    assert!(interfaces(&open).len() > 1 || !network_isolation_available());
}

#[test]
fn the_scratch_copy_skips_build_outputs_and_holds_unsaved_buffers() {
    let src = Scratch::empty("runner-src").unwrap();
    std::fs::create_dir_all(src.path().join("pkg")).unwrap();
    std::fs::create_dir_all(src.path().join(".git")).unwrap();
    std::fs::create_dir_all(src.path().join("target/debug")).unwrap();
    std::fs::write(src.path().join("pkg/a.py"), "on disk").unwrap();
    std::fs::write(src.path().join("b.py"), "b").unwrap();
    std::fs::write(src.path().join(".git/HEAD"), "x").unwrap();
    std::fs::write(src.path().join("target/debug/big"), "x").unwrap();
    let copy = Scratch::copy_of(src.path(), &[("pkg/a.py".into(), "unsaved".into())], "runner-copy", Default::default()).unwrap();
    assert_eq!(copy.read("pkg/a.py".as_ref()).unwrap(), "unsaved");
    assert_eq!(copy.read("b.py".as_ref()).unwrap(), "b");
    assert!(!copy.path().join(".git").exists() && !copy.path().join("target").exists());
    assert!(copy.write("../escape.py".as_ref(), "x").is_err());
    let path = copy.path().to_owned();
    drop(copy);
    assert!(!path.exists(), "the scratch copy is removed when dropped");
    let tiny = scratch::CopyLimits { max_files: 1, max_bytes: 1 << 20 };
    let err = Scratch::copy_of(src.path(), &[], "runner-copy", tiny).err().unwrap();
    assert!(err.contains("too large"), "{err}");
}

#[test]
fn outcomes_are_read_from_every_supported_format() {
    let text = "PASSED tests/test_a.py::test_ok\nFAILED tests/test_a.py::K::test_bad - AssertionError: x\n\
                test tests::adds ... ok\ntest tests::subs ... FAILED\n\
                --- PASS: TestAdd (0.00s)\n    --- FAIL: TestSub/neg (0.00s)\n\
                ok 1 - adds numbers\nnot ok 2 - subtracts\nok 3 - later # SKIP not yet\n\
                ERROR collecting x\nFAILED hard\n";
    let got: Vec<(String, TestStatus)> = parse_outcomes(text).into_iter().map(|o| (o.name, o.status)).collect();
    use TestStatus::*;
    let want = [
        ("tests/test_a.py::test_ok", Passed),
        ("tests/test_a.py::K::test_bad", Failed),
        ("tests::adds", Passed),
        ("tests::subs", Failed),
        ("TestAdd", Passed),
        ("TestSub/neg", Failed),
        ("adds numbers", Passed),
        ("subtracts", Failed),
        ("later", Skipped),
    ];
    assert_eq!(got, want.iter().map(|(n, s)| (n.to_string(), *s)).collect::<Vec<_>>());
}

#[test]
fn templates_quote_every_value() {
    let target = TestTarget { file: "tests/test it.py".into(), name: "test_x".into(), class: Some("K".into()) };
    let root = std::path::Path::new("/tmp/r");
    let rendered = templates::render("pytest {file}::{qualified} -m {module} in {dir}", root, &target);
    assert_eq!(rendered, "pytest 'tests/test it.py'::K::test_x -m 'tests.test it' in tests");
    let evil = TestTarget { file: "a.py".into(), name: "x'; rm -rf /; '".into(), class: None };
    assert_eq!(templates::render("t {test}", root, &evil), "t 'x'\\''; rm -rf /; '\\'''");
}

#[test]
fn the_python_fallback_runner_reports_values_and_pytest_style_summary_lines() {
    let scratch = Scratch::empty("runner-py").unwrap();
    scratch.write("calc.py".as_ref(), "def add(a, b):\n    return a - b\n").unwrap();
    scratch
        .write(
            "test_calc.py".as_ref(),
            "import unittest\nfrom calc import add\n\ndef test_add():\n    assert add(2, 3) == 5\n\ndef test_zero():\n    assert add(0, 0) == 0\n\n\
             class K(unittest.TestCase):\n    def test_m(self):\n        self.assertEqual(add(1, 1), 2)\n",
        )
        .unwrap();
    // Force the fallback: a Python whose pytest import fails the same way a missing pytest does.
    let commands = TestCommands::default();
    let target = TestTarget { file: "test_calc.py".into(), name: "test_add".into(), class: None };
    scratch.write(PY_RUNNER_FILE.as_ref(), python_fallback_runner()).unwrap();
    let out = run_shell(&templates::render(super::templates::PY_FALLBACK_TEST_FOR_TESTS, scratch.path(), &target), scratch.path(), &[], &commands.limits(), &AtomicBool::new(false));
    assert_eq!(out.status, RunStatus::Exited(1), "{}", out.output);
    assert!(out.output.contains("assert -1 == 5"), "{}", out.output);
    assert!(out.output.contains("return a - b") || out.output.contains("add(2, 3)"), "{}", out.output);
    let suite = commands.run_suite("python", scratch.path(), &target, &AtomicBool::new(false)).unwrap();
    let outcomes = parse_outcomes(&suite.output);
    let status = |n: &str| outcomes.iter().find(|o| o.name.ends_with(n)).map(|o| o.status);
    assert_eq!(status("::test_add"), Some(TestStatus::Failed), "{}", suite.output);
    assert_eq!(status("::test_zero"), Some(TestStatus::Passed));
    assert_eq!(status("::K::test_m"), Some(TestStatus::Failed));
}

/// A file outside any scratch copy and outside the system directories (a temp dir of the test's own).
fn outside_secret() -> (Scratch, PathBuf) {
    let dir = Scratch::empty("runner-outside").unwrap();
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, "the secret").unwrap();
    (dir, secret)
}

#[test]
fn confined_runs_write_only_in_the_scratch_copy_and_their_temp_dir() {
    let scratch = Scratch::empty("runner-confined").unwrap();
    let home = std::env::var("HOME").unwrap();
    let escape = Path::new(&home).join(format!(".pie-ls-confine-test-{}", std::process::id()));
    let (_outside, secret) = outside_secret();
    // The code that runs is in the scratch copy (as a candidate is); the command names no outside path (the
    // paths a user writes in a configured command are readable).
    let script = format!(
        "echo inside > here.txt && echo tmp > \"$TMPDIR/t\" && cat \"$TMPDIR/t\" here.txt && cat /etc/hostname >/dev/null && echo escaped > {} ; echo out=$?; cat {} ; echo read=$?\n",
        shell_quote(&escape.display().to_string()),
        shell_quote(&secret.display().to_string())
    );
    scratch.write("candidate.sh".as_ref(), &script).unwrap();
    let out = run_shell("sh candidate.sh", scratch.path(), &[], &limits(20_000), &AtomicBool::new(false));
    if landlock_abi() == 0 {
        assert!(!out.confined);
        assert!(out.isolation().contains("files not confined on this platform"));
        let _ = std::fs::remove_file(&escape);
        return;
    }
    assert!(out.confined, "{out:?}");
    assert!(out.isolation().contains("files confined to the scratch copy"));
    assert!(out.output.contains("tmp\ninside"), "the scratch copy and TMPDIR are writable: {}", out.output);
    assert!(out.output.contains("out=1") || out.output.contains("out=2"), "the write to $HOME must fail: {}", out.output);
    assert!(!escape.exists(), "{} was written", escape.display());
    assert!(!out.output.contains("the secret") && !out.output.contains("read=0"), "a file outside must not be readable: {}", out.output);
    assert!(scratch.path().join("here.txt").exists());
    // The same run unconfined reads the file (so the test above is about the confinement, not the file).
    let open = run_shell(&format!("cat {}", shell_quote(&secret.display().to_string())), scratch.path(), &[], &Limits { confine: false, ..limits(5_000) }, &AtomicBool::new(false));
    assert!(open.output.contains("the secret") && !open.confined, "{open:?}");
}

#[test]
fn a_denied_run_says_it_was_confined() {
    if landlock_abi() == 0 {
        return;
    }
    let scratch = Scratch::empty("runner-confined").unwrap();
    let home = std::env::var("HOME").unwrap();
    let target = Path::new(&home).join(format!(".pie-ls-confine-py-{}", std::process::id()));
    scratch.write("candidate.py".as_ref(), &format!("open({:?}, 'w').write('x')\n", target.display().to_string())).unwrap();
    let out = run_shell("python3 candidate.py", scratch.path(), &[], &limits(20_000), &AtomicBool::new(false));
    assert!(!out.success() && out.output.contains("PermissionError"), "{out:?}");
    assert!(!target.exists());
    assert!(out.confinement_note().is_some() && out.explained_output().contains("the run was confined"), "{}", out.explained_output());
}
