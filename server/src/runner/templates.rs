//! Test command templates, per `languageId`, with defaults for Python, Rust, JavaScript and Go. A template is a
//! shell command with placeholders, each replaced by a shell-quoted value:
//! `{file}` the test file (relative to the workspace root), `{test}` the test's name, `{qualified}` `Class::name`
//! for a test method (the name otherwise), `{module}` the file as a dotted module, `{dir}` the test file's folder,
//! `{root}` the scratch copy's root.
//!
//! Python falls back to pie-ls's own small runner (unittest cases and plain `test_*` functions) when pytest is not
//! installed, so a fresh machine can still self-debug.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{run_shell, Limits, RunOutput};

/// File name of the fallback runner inside a scratch copy's `.pie-ls/` folder.
pub const PY_RUNNER_FILE: &str = ".pie-ls/pie_runtest.py";

/// The fallback Python runner's source.
pub fn python_fallback_runner() -> &'static str {
    include_str!("pie_runtest.py")
}

/// Settings `tests.*`: how to run one test and the suite, per `languageId`, and the limits of every run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TestCommands {
    /// Command that runs one test, per `languageId`; overrides the default for that language.
    pub commands: HashMap<String, String>,
    /// Command that runs the suite checked for regressions, per `languageId`.
    pub suites: HashMap<String, String>,
    /// Wall-clock limit of one run.
    pub timeout_ms: u64,
    /// Memory cap of a run (heap and private memory of each process), MiB.
    pub memory_mb: u64,
    /// Cut the network during runs where the platform permits it.
    pub isolate_network: bool,
    /// Confine runs' files (Landlock) where the platform permits it: writes only in the scratch copy.
    pub confine_files: bool,
}

impl Default for TestCommands {
    fn default() -> Self {
        TestCommands { commands: HashMap::new(), suites: HashMap::new(), timeout_ms: 60_000, memory_mb: 4096, isolate_network: true, confine_files: true }
    }
}

/// One test to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestTarget {
    /// The test file, relative to the workspace root.
    pub file: PathBuf,
    pub name: String,
    /// The enclosing class (Python `unittest.TestCase`, pytest class), if any.
    pub class: Option<String>,
}

impl TestTarget {
    pub fn qualified(&self) -> String {
        match &self.class {
            Some(c) => format!("{c}::{}", self.name),
            None => self.name.clone(),
        }
    }
}

fn default_test(language: &str) -> Option<&'static str> {
    Some(match language {
        "python" => "python3 -m pytest -q -rA -p no:cacheprovider {file}::{qualified}",
        "rust" => "cargo test {test}",
        "javascript" | "javascriptreact" => "node --test --test-reporter=tap --test-name-pattern={test} {file}",
        "go" => "go test -v -count=1 -run '^'{test}'$' ./{dir}",
        _ => return None,
    })
}

fn default_suite(language: &str) -> Option<&'static str> {
    Some(match language {
        "python" => "python3 -m pytest -q -rA -p no:cacheprovider {dir}",
        "rust" => "cargo test",
        "javascript" | "javascriptreact" => "node --test --test-reporter=tap",
        "go" => "go test -v -count=1 ./...",
        _ => return None,
    })
}

const PY_FALLBACK_TEST: &str = "python3 {runner} {file} {qualified}";
const PY_FALLBACK_SUITE: &str = "python3 {runner} --dir {dir}";
#[cfg(test)]
pub(super) const PY_FALLBACK_TEST_FOR_TESTS: &str = PY_FALLBACK_TEST;

impl TestCommands {
    pub fn limits(&self) -> Limits {
        Limits {
            timeout: Duration::from_millis(self.timeout_ms.max(100)),
            memory_mb: self.memory_mb,
            isolate_network: self.isolate_network,
            confine: self.confine_files,
            ..Limits::default()
        }
    }

    pub fn test_template(&self, language: &str) -> Option<String> {
        self.commands.get(language).cloned().or_else(|| default_test(language).map(str::to_owned))
    }

    pub fn suite_template(&self, language: &str) -> Option<String> {
        self.suites.get(language).cloned().or_else(|| default_suite(language).map(str::to_owned))
    }

    /// Runs the one test `target` in the scratch copy at `root`.
    pub fn run_test(&self, language: &str, root: &Path, target: &TestTarget, cancel: &AtomicBool) -> Result<RunOutput, String> {
        let template = self.test_template(language).ok_or_else(|| no_command(language, "commands"))?;
        Ok(self.run_with_fallback(language, root, target, &template, PY_FALLBACK_TEST, self.commands.contains_key(language), cancel))
    }

    /// Runs the regression suite of `target`'s language in the scratch copy at `root`.
    pub fn run_suite(&self, language: &str, root: &Path, target: &TestTarget, cancel: &AtomicBool) -> Result<RunOutput, String> {
        let template = self.suite_template(language).ok_or_else(|| no_command(language, "suites"))?;
        Ok(self.run_with_fallback(language, root, target, &template, PY_FALLBACK_SUITE, self.suites.contains_key(language), cancel))
    }

    #[allow(clippy::too_many_arguments)]
    fn run_with_fallback(
        &self,
        language: &str,
        root: &Path,
        target: &TestTarget,
        template: &str,
        fallback: &str,
        user_set: bool,
        cancel: &AtomicBool,
    ) -> RunOutput {
        let env = run_env(language, root);
        let out = run_shell(&render(template, root, target), root, &env, &self.limits(), cancel);
        if language == "python" && !user_set && out.output.contains("No module named pytest") {
            let runner = root.join(PY_RUNNER_FILE);
            if let Some(parent) = runner.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            let _ = std::fs::write(&runner, python_fallback_runner());
            return run_shell(&render(fallback, root, target), root, &env, &self.limits(), cancel);
        }
        out
    }
}

fn no_command(language: &str, key: &str) -> String {
    format!("no test command for `{language}` documents: set `tests.{key}.{language}` in the pie-ls settings")
}

/// Extra environment per language: Rust builds go to a per-workspace cache so each run does not rebuild every
/// dependency, and Go never downloads modules.
fn run_env(language: &str, root: &Path) -> Vec<(String, String)> {
    match language {
        "rust" => vec![("CARGO_TARGET_DIR".into(), super::persistent_cache_dir(root, "cargo").display().to_string()), ("CARGO_NET_OFFLINE".into(), "true".into())],
        "go" => vec![("GOPROXY".into(), "off".into()), ("GOFLAGS".into(), "-mod=mod".into())],
        _ => Vec::new(),
    }
}

/// Fills a template's placeholders with shell-quoted values.
pub(crate) fn render(template: &str, root: &Path, target: &TestTarget) -> String {
    let file = target.file.to_string_lossy().into_owned();
    let dir = match target.file.parent().map(|p| p.to_string_lossy().into_owned()) {
        Some(d) if !d.is_empty() => d,
        _ => ".".to_owned(),
    };
    let module = file.trim_end_matches(".py").replace(['/', '\\'], ".");
    let runner = root.join(PY_RUNNER_FILE).to_string_lossy().into_owned();
    let values = [
        ("{file}", file),
        ("{test}", target.name.clone()),
        ("{qualified}", target.qualified()),
        ("{module}", module),
        ("{dir}", dir),
        ("{root}", root.to_string_lossy().into_owned()),
        ("{runner}", runner),
    ];
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    'scan: while !rest.is_empty() {
        for (key, value) in &values {
            if let Some(after) = rest.strip_prefix(key) {
                out.push_str(&shell_quote(value));
                rest = after;
                continue 'scan;
            }
        }
        let c = rest.chars().next().unwrap();
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Quotes `s` for `sh` unless it is made of characters that need none.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c)) {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}
