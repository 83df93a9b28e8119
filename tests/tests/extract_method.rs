//! Extract method through the real server: every fixture in `tests/fixtures/extract/<language>/` is opened,
//! `textDocument/codeAction` is asked for the selection between `«` and `»`, and the action must be offered (then
//! resolved, its `WorkspaceEdit` applied and compared with `<case>.after.<ext>`) or disabled with the reason
//! written in the fixture's `refused: ...` comment. Where the language runs here (Python, JavaScript, Rust, Go,
//! Java; TypeScript through `tsc --strict` when the VS Code extension's `node_modules` is installed), the program
//! runs before and after and must print the same.
//!
//! `EXTRACT_BLESS=1` writes missing after-files (review them before committing).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pie_ls_harness::LspClient;
use serde_json::{json, Value};

const KIND: &str = "refactor.extract.function";

fn fixtures_dir(lang: &str) -> PathBuf {
    pie_ls_harness::tests_dir().join("fixtures/extract").join(lang)
}

/// A fixture with its selection markers removed.
struct Case {
    name: String,
    path: PathBuf,
    text: String,
    /// (line, UTF-16 column) of the selection ends.
    start: (u32, u32),
    end: (u32, u32),
    refused: Option<String>,
}

fn utf16_pos(text: &str, byte: usize) -> (u32, u32) {
    let before = &text[..byte];
    let line = before.matches('\n').count() as u32;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = text[line_start..byte].encode_utf16().count() as u32;
    (line, col)
}

fn byte_of(text: &str, line: u32, character: u32) -> usize {
    let mut offset = 0;
    for _ in 0..line {
        match text[offset..].find('\n') {
            Some(i) => offset += i + 1,
            None => return text.len(),
        }
    }
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let mut units = 0;
    for (i, c) in text[offset..line_end].char_indices() {
        if units >= character {
            return offset + i;
        }
        units += c.len_utf16() as u32;
    }
    line_end
}

fn load(path: &Path) -> Case {
    let marked = std::fs::read_to_string(path).unwrap();
    let start_byte = marked.find('«').unwrap_or_else(|| panic!("{}: no « marker", path.display()));
    let without = marked.replacen('«', "", 1);
    let end_byte = without.find('»').unwrap_or_else(|| panic!("{}: no » marker", path.display()));
    let text = without.replacen('»', "", 1);
    let refused = text.lines().find_map(|l| l.split_once("refused: ").map(|(_, r)| r.trim().to_owned()));
    Case {
        name: path.file_name().unwrap().to_string_lossy().into_owned(),
        path: path.to_owned(),
        start: utf16_pos(&text, start_byte),
        end: utf16_pos(&text, end_byte),
        text,
        refused,
    }
}

fn cases(lang: &str, ext: &str) -> Vec<Case> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(fixtures_dir(lang))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.ends_with(&format!(".{ext}")) && !name.contains(".after.")
        })
        .collect();
    paths.sort();
    paths.iter().map(|p| load(p)).collect()
}

/// Applies LSP `TextEdit`s (UTF-16 positions, all relative to the original text).
fn apply_edits(text: &str, edits: &[Value]) -> String {
    let mut spans: Vec<(usize, usize, String)> = edits
        .iter()
        .map(|e| {
            let r = &e["range"];
            let s = byte_of(text, r["start"]["line"].as_u64().unwrap() as u32, r["start"]["character"].as_u64().unwrap() as u32);
            let t = byte_of(text, r["end"]["line"].as_u64().unwrap() as u32, r["end"]["character"].as_u64().unwrap() as u32);
            (s, t, e["newText"].as_str().unwrap().to_owned())
        })
        .collect();
    spans.sort_by_key(|s| (s.0, s.1));
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "overlapping edits: {edits:?}");
    }
    let mut out = text.to_owned();
    for (s, t, new) in spans.into_iter().rev() {
        out.replace_range(s..t, &new);
    }
    out
}

fn code_actions(lsp: &mut LspClient, uri: &str, start: (u32, u32), end: (u32, u32)) -> Result<Vec<Value>, String> {
    let res = lsp
        .request(
            "textDocument/codeAction",
            json!({
                "textDocument": { "uri": uri },
                "range": { "start": { "line": start.0, "character": start.1 }, "end": { "line": end.0, "character": end.1 } },
                "context": { "diagnostics": [] }
            }),
        )
        .map_err(|e| e.to_string())?;
    Ok(res.as_array().cloned().unwrap_or_default())
}

fn extract_action(actions: &[Value]) -> Option<Value> {
    actions.iter().find(|a| a["kind"] == KIND).cloned()
}

fn program(lang: &str) -> Option<&'static str> {
    match lang {
        "python" => which("python3").then_some("python3"),
        "javascript" => which("node").then_some("node"),
        "rust" => which("rustc").then_some("rustc"),
        "go" => which("go").then_some("go"),
        "java" => which("java").then_some("java"),
        "typescript" => (which("node") && tsc().exists()).then_some("tsc"),
        _ => None,
    }
}

/// The TypeScript compiler the VS Code extension installs (`editors/vscode/node_modules`), when present.
fn tsc() -> PathBuf {
    pie_ls_harness::tests_dir().join("../editors/vscode/node_modules/typescript/bin/tsc")
}

fn which(bin: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {bin}")).output().is_ok_and(|o| o.status.success())
}

/// Runs a program's text and returns its stdout, or why it failed.
fn run_program(lang: &str, ext: &str, text: &str, tag: &str) -> Result<String, String> {
    let dir = std::env::temp_dir().join(format!("pie-ls-extract-test-{}-{lang}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("main.{ext}"));
    std::fs::write(&file, text).unwrap();
    let output = match lang {
        "python" => Command::new("python3").arg(&file).output(),
        "javascript" => Command::new("node").arg(&file).output(),
        // Strict type checking, then the emitted JavaScript runs.
        "typescript" => {
            let compiled = Command::new("node")
                .arg(tsc())
                .args(["--strict", "--target", "es2020", "--outDir"])
                .arg(&dir)
                .arg(&file)
                .output()
                .map_err(|e| e.to_string())?;
            if !compiled.status.success() {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(format!("tsc failed:\n{}", String::from_utf8_lossy(&compiled.stdout)));
            }
            Command::new("node").arg(dir.join("main.js")).output()
        }
        // The single-file source launcher: compiles in memory and runs the first class's `main`.
        "java" => Command::new("java").arg(&file).output(),
        "go" => Command::new("go").arg("run").arg(&file).env("GOFLAGS", "-mod=mod").env("GO111MODULE", "off").output(),
        "rust" => {
            let bin = dir.join("main_bin");
            let compiled = Command::new("rustc")
                .args(["--edition", "2021", "-A", "warnings", "-o"])
                .arg(&bin)
                .arg(&file)
                .output()
                .map_err(|e| e.to_string())?;
            if !compiled.status.success() {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(format!("rustc failed:\n{}", String::from_utf8_lossy(&compiled.stderr)));
            }
            Command::new(&bin).output()
        }
        _ => unreachable!("only runnable languages"),
    };
    let _ = std::fs::remove_dir_all(&dir);
    let output = output.map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(format!("exit {}:\n{}", output.status, String::from_utf8_lossy(&output.stderr)));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn runnable(lang: &str, text: &str) -> bool {
    match lang {
        "python" | "javascript" => !text.contains("no-run"),
        "rust" => text.contains("fn main"),
        "go" => text.contains("func main"),
        "java" => text.contains("static void main"),
        "typescript" => text.contains("console.log") && !text.contains("declare "),
        _ => false,
    }
}

/// Runs one case; `Err` describes the failure.
fn check_case(lsp: &mut LspClient, lang: &str, lang_id: &str, ext: &str, case: &Case, n: usize) -> Result<(), String> {
    let uri = format!("file:///w/{lang}/{n}/{}", case.name);
    lsp.open(&uri, lang_id, &case.text);
    let actions = code_actions(lsp, &uri, case.start, case.end)?;
    let action = extract_action(&actions).ok_or_else(|| format!("no extract action offered: {actions:?}"))?;
    if let Some(expected) = &case.refused {
        let reason = action["disabled"]["reason"].as_str().ok_or_else(|| format!("expected a refusal ({expected}), got {action}"))?;
        if !reason.contains(expected.as_str()) {
            return Err(format!("refused with {reason:?}, expected it to contain {expected:?}"));
        }
        return Ok(());
    }
    if let Some(reason) = action["disabled"]["reason"].as_str() {
        return Err(format!("refused: {reason}"));
    }
    let resolved = lsp.request("codeAction/resolve", action.clone()).map_err(|e| format!("resolve: {e}"))?;
    if resolved["disabled"].is_object() {
        return Err(format!("disabled at resolve: {resolved}"));
    }
    let edits = resolved["edit"]["changes"][&uri].as_array().cloned().ok_or_else(|| format!("no edit for {uri}: {resolved}"))?;
    let after = apply_edits(&case.text, &edits);
    let after_path = case.path.with_file_name(case.name.replace(&format!(".{ext}"), &format!(".after.{ext}")));
    match std::fs::read_to_string(&after_path) {
        Ok(expected) if expected == after => {}
        Ok(expected) => {
            if std::env::var("EXTRACT_BLESS").is_ok_and(|v| v == "force") {
                std::fs::write(&after_path, &after).unwrap();
            } else {
                return Err(format!("after-text differs.\n--- expected\n{expected}\n--- got\n{after}"));
            }
        }
        Err(_) if std::env::var("EXTRACT_BLESS").is_ok() => std::fs::write(&after_path, &after).unwrap(),
        Err(_) => return Err(format!("missing {}; got:\n{after}", after_path.display())),
    }
    // The edited document must parse as cleanly as the original, as the server sees it.
    if program(lang).is_some() && runnable(lang, &case.text) {
        let before_out = run_program(lang, ext, &case.text, &format!("{n}b")).map_err(|e| format!("the fixture itself fails: {e}"))?;
        let after_out = run_program(lang, ext, &after, &format!("{n}a")).map_err(|e| format!("the result fails: {e}\n{after}"))?;
        if before_out != after_out {
            return Err(format!("output changed:\n--- before\n{before_out}\n--- after\n{after_out}"));
        }
    }
    lsp.close(&uri);
    Ok(())
}

/// A server without a model: fixtures pin the deterministic names.
fn server_without_model() -> LspClient {
    LspClient::builder().init_options(json!({ "model": { "enabled": false } })).spawn().expect("server starts")
}

fn run_language(lang: &str, lang_id: &str, ext: &str) {
    let cases = cases(lang, ext);
    assert!(!cases.is_empty(), "no fixtures for {lang}");
    let mut lsp = server_without_model();
    let mut failures = Vec::new();
    let mut refused = 0;
    for (n, case) in cases.iter().enumerate() {
        if let Err(why) = check_case(&mut lsp, lang, lang_id, ext, case, n) {
            failures.push(format!("{}: {why}", case.name));
        } else if case.refused.is_some() {
            refused += 1;
        }
    }
    let ran = if program(lang).is_some() { "run before/after" } else { "not run (no toolchain)" };
    eprintln!(
        "extract {lang}: {}/{} fixtures pass ({} extractions, {refused} refusals; programs {ran})",
        cases.len() - failures.len(),
        cases.len(),
        cases.iter().filter(|c| c.refused.is_none()).count()
    );
    assert!(lsp.is_alive(), "server died");
    assert!(failures.is_empty(), "{} of {} {lang} fixtures failed:\n\n{}", failures.len(), cases.len(), failures.join("\n\n"));
}

#[test]
fn python_fixtures() {
    run_language("python", "python", "py");
}

#[test]
fn rust_fixtures() {
    run_language("rust", "rust", "rs");
}

#[test]
fn javascript_fixtures() {
    run_language("javascript", "javascript", "js");
}

#[test]
fn typescript_fixtures() {
    run_language("typescript", "typescript", "ts");
}

#[test]
fn go_fixtures() {
    run_language("go", "go", "go");
}

#[test]
fn java_fixtures() {
    run_language("java", "java", "java");
}

#[test]
fn capability_is_advertised_with_resolve() {
    let lsp = LspClient::start().unwrap();
    let caps = &lsp.initialize_result()["capabilities"]["codeActionProvider"];
    assert_eq!(caps["resolveProvider"], true, "{caps}");
    assert!(caps["codeActionKinds"].as_array().unwrap().iter().any(|k| k == KIND), "{caps}");
}

#[test]
fn bad_requests_get_errors_and_the_server_keeps_serving() {
    let mut lsp = server_without_model();
    let uri = "file:///w/bad.py";
    lsp.open(uri, "python", "def f(a):\n    b = a + 1\n    return b\n");
    // A line past the end is an error, not a crash.
    let err = code_actions(&mut lsp, uri, (0, 0), (40, 0)).unwrap_err();
    assert!(err.contains("-32602") || err.contains("past the end"), "{err}");
    // An inverted range too.
    assert!(code_actions(&mut lsp, uri, (2, 0), (1, 0)).is_err());
    // A document that is not open.
    assert!(code_actions(&mut lsp, "file:///w/nope.py", (0, 0), (1, 0)).is_err());
    // A columnn far past the line end is clamped: the action is still computed.
    let actions = code_actions(&mut lsp, uri, (1, 0), (1, 999)).unwrap();
    assert!(extract_action(&actions).is_some_and(|a| a["disabled"].is_null()), "{actions:?}");
    // Resolve with foreign data.
    let err = lsp.request("codeAction/resolve", json!({ "title": "x", "data": { "foo": 1 } })).unwrap_err();
    assert_eq!(err.code, -32602, "{err}");
    let err = lsp.request("codeAction/resolve", json!({ "title": "x" })).unwrap_err();
    assert_eq!(err.code, -32602, "{err}");
    // An unsupported language gets no action at all.
    lsp.open("file:///w/a.c", "c", "int main() { return 0; }\n");
    assert!(code_actions(&mut lsp, "file:///w/a.c", (0, 0), (0, 10)).unwrap().is_empty());
    assert!(lsp.is_alive());
    lsp.document_state(uri).expect("still serving");
}

#[test]
fn only_filter_and_stale_resolve() {
    let mut lsp = server_without_model();
    let uri = "file:///w/only.py";
    lsp.open(uri, "python", "def f(a):\n    b = a + 1\n    return b\n");
    let res = lsp
        .request(
            "textDocument/codeAction",
            json!({ "textDocument": { "uri": uri }, "range": { "start": { "line": 1, "character": 4 }, "end": { "line": 1, "character": 13 } },
                    "context": { "diagnostics": [], "only": ["quickfix"] } }),
        )
        .unwrap();
    assert_eq!(res, json!([]));
    let res = lsp
        .request(
            "textDocument/codeAction",
            json!({ "textDocument": { "uri": uri }, "range": { "start": { "line": 1, "character": 4 }, "end": { "line": 1, "character": 13 } },
                    "context": { "diagnostics": [], "only": ["refactor.extract"] } }),
        )
        .unwrap();
    let action = extract_action(res.as_array().unwrap()).expect("offered under refactor.extract");
    // The document changes: resolving the old action is refused with ContentModified.
    lsp.edit(uri, vec![pie_ls_harness::range_change((0, 0), (0, 0), "# edited\n")]);
    let err = lsp.request("codeAction/resolve", action).unwrap_err();
    assert_eq!(err.code, -32801, "{err}");
}

/// The code-action request on a 2,000-line file: median latency (printed; asserted under a generous bound).
#[test]
fn code_action_latency_on_a_2000_line_file() {
    let mut text = String::new();
    let mut n = 0;
    while text.lines().count() < 2000 {
        text.push_str(&format!(
            "def function_{n}(items, factor):\n    total = 0\n    for item in items:\n        scaled = item * factor\n        if scaled > 10:\n            total += scaled\n        else:\n            total -= 1\n    result = total * 2\n    return result\n\n\n"
        ));
        n += 1;
    }
    let lines = text.lines().count();
    let uri = "file:///w/big.py";
    let mut lsp = server_without_model();
    lsp.open(uri, "python", &text);
    // A selection in the middle of the file: the loop of one function.
    let target_fn = n / 2;
    let line0 = (target_fn * 12 + 2) as u32;
    let mut samples = Vec::new();
    for _ in 0..41 {
        let started = Instant::now();
        let actions = code_actions(&mut lsp, uri, (line0, 4), (line0 + 5, 24)).unwrap();
        samples.push(started.elapsed());
        let action = extract_action(&actions).unwrap();
        assert!(action["disabled"].is_null(), "{action}");
    }
    samples.sort();
    let median = samples[samples.len() / 2];
    eprintln!(
        "extract codeAction latency on a {lines}-line Python file: median {:.2} ms, min {:.2} ms, max {:.2} ms ({} requests)",
        median.as_secs_f64() * 1e3,
        samples[0].as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3,
        samples.len()
    );
    assert!(median < Duration::from_millis(500), "median {median:?}");
}

/// With the default configuration (the model loads when one is installed), resolve still returns a valid,
/// behaviour-preserving edit: the model's name when it passed validation, the deterministic one otherwise.
#[test]
fn resolve_with_the_default_model_configuration_keeps_behaviour() {
    let case = load(&fixtures_dir("python").join("params_order.py"));
    let mut lsp = LspClient::start().expect("server starts");
    let uri = "file:///w/model/params_order.py";
    lsp.open(uri, "python", &case.text);
    let actions = code_actions(&mut lsp, uri, case.start, case.end).unwrap();
    let action = extract_action(&actions).expect("offered");
    assert!(action["disabled"].is_null(), "{action}");
    let resolved = lsp
        .request_with_timeout("codeAction/resolve", action, Duration::from_secs(90))
        .expect("resolve answers");
    let title = resolved["title"].as_str().unwrap().to_owned();
    let name = title.split('`').nth(1).expect("name in the title").to_owned();
    assert!(name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'), "not snake_case: {title}");
    let edits = resolved["edit"]["changes"][uri].as_array().cloned().unwrap();
    let after = apply_edits(&case.text, &edits);
    assert!(after.contains(&format!("def {name}(")), "{after}");
    if program("python").is_some() {
        assert_eq!(run_program("python", "py", &case.text, "mb").unwrap(), run_program("python", "py", &after, "ma").unwrap());
    }
    eprintln!("extract with the default model configuration named the function `{name}`");
}
