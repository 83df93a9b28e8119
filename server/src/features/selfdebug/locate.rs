//! Which function a failing test exercises: the deepest traceback frame in a workspace file that is not the test
//! file (Python), else the first function the test calls that is defined in the test file or a file it can see
//! (modules it imports, files of its language beside it).

use std::path::{Path, PathBuf};

use crate::features::code::{called_names, find_function, is_test_function, parse, FunctionSpan};
use crate::syntax::Language;

/// The function to fix: where it lives (relative to the workspace root), its file's text, and its span.
#[derive(Clone, Debug)]
pub struct Target {
    pub file: PathBuf,
    pub text: String,
    pub function: FunctionSpan,
}

/// Finds the function under test. `root` is the scratch copy, `test_file` relative to it, `output` the failing
/// run's output.
pub fn function_under_test(lang: Language, root: &Path, test_file: &Path, test_range: std::ops::Range<usize>, output: &str) -> Result<Target, String> {
    let test_text = std::fs::read_to_string(root.join(test_file)).map_err(|e| format!("cannot read {}: {e}", test_file.display()))?;
    if lang == Language::Python {
        for (file, name) in python_frames(root, output).into_iter().rev() {
            if file == test_file || name.starts_with("test") || name == "<module>" {
                continue;
            }
            if let Some(t) = target_in(lang, root, &file, &name) {
                return Ok(t);
            }
        }
    }
    let tree = parse(lang, &test_text).ok_or("the test file did not parse")?;
    let called = called_names(lang, &test_text, &tree, test_range);
    let candidates = candidate_files(lang, root, test_file, &test_text);
    for name in &called {
        for file in &candidates {
            if let Some(t) = target_in(lang, root, file, name) {
                let t_tree = parse(lang, &t.text);
                let is_test = t_tree.as_ref().is_some_and(|tr| is_test_function(lang, &t.text, tr, &t.function));
                if !is_test {
                    return Ok(t);
                }
            }
        }
    }
    Err(format!(
        "could not tell which function the test exercises (it calls {}; none is defined in the test file or the files it imports)",
        if called.is_empty() { "nothing".to_owned() } else { called.join(", ") }
    ))
}

fn target_in(lang: Language, root: &Path, file: &Path, name: &str) -> Option<Target> {
    let text = std::fs::read_to_string(root.join(file)).ok()?;
    let tree = parse(lang, &text)?;
    let function = find_function(lang, &text, &tree, name)?;
    Some(Target { file: file.to_owned(), text, function })
}

/// `(file relative to root, function)` of each `File "...", line N, in f` frame inside `root`, outermost first.
fn python_frames(root: &Path, output: &str) -> Vec<(PathBuf, String)> {
    let root_s = root.to_string_lossy();
    let mut out = Vec::new();
    for line in output.lines() {
        let Some(rest) = line.trim_start().strip_prefix("File \"") else { continue };
        let Some((path, rest)) = rest.split_once('"') else { continue };
        let Some(name) = rest.rsplit_once(", in ").map(|(_, n)| n.trim()) else { continue };
        let rel = if let Some(r) = path.strip_prefix(root_s.as_ref()) {
            PathBuf::from(r.trim_start_matches('/'))
        } else if !path.starts_with('/') {
            PathBuf::from(path)
        } else {
            continue;
        };
        if rel.starts_with(".pie-ls") || !root.join(&rel).is_file() {
            continue;
        }
        out.push((rel, name.to_owned()));
    }
    out
}

/// Files where a called function may be defined, most likely first: the test file, modules it imports (Python,
/// relative JS imports), then files of the same language in its folder and in the root.
fn candidate_files(lang: Language, root: &Path, test_file: &Path, test_text: &str) -> Vec<PathBuf> {
    let mut out = vec![test_file.to_owned()];
    let dir = test_file.parent().map(Path::to_path_buf).unwrap_or_default();
    let push = |p: PathBuf, out: &mut Vec<PathBuf>| {
        if root.join(&p).is_file() && !out.contains(&p) {
            out.push(p);
        }
    };
    for module in imported_modules(lang, test_text) {
        match lang {
            Language::Python => {
                let rel = module.replace('.', "/");
                for base in [dir.clone(), PathBuf::new()] {
                    push(base.join(format!("{rel}.py")), &mut out);
                    push(base.join(&rel).join("__init__.py"), &mut out);
                }
            }
            _ => {
                let p = dir.join(&module);
                for ext in ["", ".js", ".mjs", ".cjs", ".ts"] {
                    push(PathBuf::from(format!("{}{ext}", p.display())), &mut out);
                }
            }
        }
    }
    let ext: &[&str] = match lang {
        Language::Python => &["py"],
        Language::Rust => &["rs"],
        Language::Go => &["go"],
        Language::JavaScript => &["js", "mjs", "cjs"],
        Language::TypeScript | Language::Tsx => &["ts", "tsx"],
        _ => &[],
    };
    for folder in [dir.clone(), PathBuf::new(), PathBuf::from("src")] {
        let Ok(entries) = std::fs::read_dir(root.join(&folder)) else { continue };
        let mut names: Vec<PathBuf> = entries
            .flatten()
            .map(|e| folder.join(e.file_name()))
            .filter(|p| p.extension().is_some_and(|e| ext.contains(&e.to_string_lossy().as_ref())))
            .collect();
        names.sort();
        for p in names.into_iter().take(200) {
            push(p, &mut out);
        }
    }
    out
}

fn imported_modules(lang: Language, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let l = line.trim();
        match lang {
            Language::Python => {
                if let Some(rest) = l.strip_prefix("from ") {
                    if let Some((m, _)) = rest.split_once(" import ") {
                        out.push(m.trim().trim_start_matches('.').to_owned());
                    }
                } else if let Some(rest) = l.strip_prefix("import ") {
                    for m in rest.split(',') {
                        out.push(m.split(" as ").next().unwrap_or("").trim().to_owned());
                    }
                }
            }
            Language::JavaScript | Language::TypeScript | Language::Tsx => {
                for quote in ['\'', '"'] {
                    let Some(i) = l.find(&format!("{quote}./")) else { continue };
                    if l.contains("require(") || l.starts_with("import ") {
                        if let Some(end) = l[i + 1..].find(quote) {
                            out.push(l[i + 1..i + 1 + end].to_owned());
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out.retain(|m| !m.is_empty());
    out
}
