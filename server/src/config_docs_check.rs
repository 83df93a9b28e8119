//! One source of truth for the settings' defaults: the code. The settings tables of README.md and
//! docs/editors.md, and the VS Code extension's package.json (its defaults and "(server default N)"), are checked
//! against `Config::default()` and the engine's defaults, and every disagreement is reported with its file and
//! line, so that whoever adds a setting sees which row to write or fix.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::Config;
use crate::engine::EngineConfig;

const README: &str = include_str!("../../README.md");
const EDITORS: &str = include_str!("../../docs/editors.md");
const PACKAGE_JSON: &str = include_str!("../../editors/vscode/package.json");

/// Every server setting and its effective default, by dotted key. `null`: no fixed value (documented in words,
/// e.g. "all cores"); `{}`: a map keyed by language id.
fn code_defaults() -> BTreeMap<String, Value> {
    let mut value = serde_json::to_value(Config::default()).expect("Config serializes");
    // The `model.*` settings are optional overrides of the engine's defaults: document the engine's values.
    let engine = EngineConfig::default();
    value["model"]["enabled"] = json!(true);
    value["model"]["contextLength"] = json!(engine.n_ctx);
    value["model"]["batchSize"] = json!(engine.n_batch);
    value["model"]["maxWarmDocuments"] = json!(engine.max_warm_documents);
    value["model"]["correctionTokens"] = json!(engine.correction.after_edit);
    value["model"]["correctionTailTokens"] = json!(engine.correction.tail);
    value["model"]["correctionLargeEditTokens"] = json!(engine.correction.large_edit);
    value["model"]["correctionKeystrokeTokens"] = json!(engine.correction.keystroke);
    value["model"]["refreshTokensPerPause"] = json!(engine.refresh_tokens_per_pause);
    value["model"]["refreshCpuSecondsPerMinute"] = json!(engine.refresh_cpu_seconds_per_minute);
    value["model"]["refreshLargeEditTokens"] = json!(engine.refresh_large_edit_tokens);
    value["model"]["draftTokens"] = json!(engine.draft_tokens);
    value["model"]["flashAttention"] = json!(match engine.flash_attention {
        None => "auto",
        Some(true) => "on",
        Some(false) => "off",
    });
    let mut out = BTreeMap::new();
    flatten("", &value, &mut out);
    out
}

fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, v) in map {
                let key = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                flatten(&key, v, out);
            }
        }
        _ => {
            out.insert(prefix.to_owned(), value.clone());
        }
    }
}

/// A default as written in a table cell: `16384`, `` `true` ``, `""`, `{}`, `4 MiB`. `None` for words.
fn literal(cell: &str) -> Option<Value> {
    let cell = cell.trim().trim_matches('`').trim();
    if let Some((n, unit)) = cell.split_once(' ') {
        let scale = match unit {
            "KiB" => 1u64 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            _ => return None,
        };
        return n.parse::<u64>().ok().map(|n| json!(n * scale));
    }
    serde_json::from_str::<Value>(cell).ok()
}

fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Compares a documented default with the code's; `None` when they agree.
fn disagreement(key: &str, cell: &str, code: &Value) -> Option<String> {
    let words = cell.trim().trim_matches('`');
    match (literal(cell), code) {
        (Some(doc), code) if same(&doc, code) => None,
        // VS Code's empty string is "unset": the extension does not send it.
        (Some(Value::String(doc)), Value::Null) if doc.is_empty() => None,
        (None, Value::String(code)) if words == code => None,
        // Words ("all cores", "see below") are fine where the code has no single value.
        (None, Value::Null) => None,
        (None, Value::Object(m)) if m.is_empty() => None,
        (Some(doc), Value::Null) => Some(format!("`{key}` says {doc}, but the code has no fixed default (it is unset)")),
        (Some(doc), code) => Some(format!("`{key}` says {doc}, the code's default is {code}")),
        (None, code) => Some(format!("`{key}` says {:?}, write the code's default {code}", cell.trim())),
    }
}

/// The rows of every `| setting | default | ... |` table: (line number, keys, default cells).
fn setting_rows(doc: &str) -> Vec<(usize, Vec<String>, Vec<String>)> {
    let mut rows = Vec::new();
    let mut in_table = false;
    for (n, line) in doc.lines().enumerate() {
        let cells: Vec<&str> = line.trim().trim_matches('|').split('|').map(str::trim).collect();
        if !line.trim_start().starts_with('|') {
            in_table = false;
            continue;
        }
        if cells.first() == Some(&"setting") && cells.get(1) == Some(&"default") {
            in_table = true;
            continue;
        }
        if !in_table || cells.len() < 2 || cells[0].starts_with("---") {
            continue;
        }
        let keys: Vec<String> = cells[0].split('`').skip(1).step_by(2).map(str::to_owned).collect();
        // `a` / `b` | 1 / 2: one default per key.
        let defaults = if keys.len() > 1 { cells[1].split(" / ").map(str::to_owned).collect() } else { vec![cells[1].to_owned()] };
        rows.push((n + 1, keys, defaults));
    }
    rows
}

/// `tests.commands.<languageId>` is the map `tests.commands`.
fn setting_key(key: &str) -> &str {
    match key.find(".<") {
        Some(i) => &key[..i],
        None => key,
    }
}

fn check_readme(code: &BTreeMap<String, Value>, problems: &mut Vec<String>) {
    let mut documented = std::collections::BTreeSet::new();
    for (line, keys, defaults) in setting_rows(README) {
        if keys.len() != defaults.len() {
            problems.push(format!("README.md:{line}: {} settings but {} defaults", keys.len(), defaults.len()));
            continue;
        }
        for (key, cell) in keys.iter().zip(&defaults) {
            let key = setting_key(key);
            documented.insert(key.to_owned());
            match code.get(key) {
                None => problems.push(format!("README.md:{line}: `{key}` is not a setting in the code (config.rs)")),
                Some(value) => problems.extend(disagreement(key, cell, value).map(|p| format!("README.md:{line}: {p}"))),
            }
        }
    }
    for (key, value) in code {
        if !documented.contains(key) {
            problems.push(format!("README.md: no row for `{key}` in the configuration table (default {value})"));
        }
    }
}

fn check_editors_and_package(code: &BTreeMap<String, Value>, problems: &mut Vec<String>) {
    let package: Value = serde_json::from_str(PACKAGE_JSON).expect("package.json is JSON");
    let properties = &package["contributes"]["configuration"]["properties"];
    for (line, keys, defaults) in setting_rows(EDITORS) {
        for (key, cell) in keys.iter().zip(&defaults) {
            let Some(setting) = key.strip_prefix("pie-ls.") else { continue };
            if properties.get(key.as_str()).is_none() {
                problems.push(format!("docs/editors.md:{line}: `{key}` is not in editors/vscode/package.json"));
                continue;
            }
            // A server setting left unset in VS Code means the server's default: the row documents that one.
            let expected = match code.get(setting) {
                Some(value) => value.clone(),
                None => properties[key.as_str()]["default"].clone(),
            };
            problems.extend(disagreement(key, cell, &expected).map(|p| format!("docs/editors.md:{line}: {p}")));
        }
    }
    let Some(properties) = properties.as_object() else {
        problems.push("editors/vscode/package.json: no contributes.configuration.properties".into());
        return;
    };
    for (key, property) in properties {
        let Some(value) = key.strip_prefix("pie-ls.").and_then(|s| code.get(s)) else { continue };
        let default = &property["default"];
        let unset = default.is_null() || default == "";
        if !unset && disagreement(key, &default.to_string(), value).is_some() {
            problems.push(format!("editors/vscode/package.json: `{key}` defaults to {default}, the server's default is {value}"));
        }
        let description = property["description"].as_str().or(property["markdownDescription"].as_str()).unwrap_or("");
        if let Some(rest) = description.split("server default ").nth(1) {
            let said: String = rest.chars().take_while(|c| !matches!(c, ')' | ';' | ',')).collect();
            if let Some(p) = disagreement(key, &said, value) {
                problems.push(format!("editors/vscode/package.json: the description of {p}"));
            }
        }
    }
}

#[test]
fn documented_defaults_are_the_code_defaults() {
    let code = code_defaults();
    assert!(code.get("model.contextLength").is_some_and(|v| v.is_u64()), "{code:?}");
    let mut problems = Vec::new();
    check_readme(&code, &mut problems);
    check_editors_and_package(&code, &mut problems);
    assert!(problems.is_empty(), "the docs disagree with the code:\n{}", problems.join("\n"));
}

#[test]
fn the_check_reads_tables_and_catches_a_wrong_row() {
    let code = code_defaults();
    let table = "| setting | default | meaning |\n|---|---|---|\n| `model.contextLength` | 8192 | x |\n| `perf.runs` / `perf.budgetS` | 20 / 60 | y |\n";
    let rows = setting_rows(table);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[1].1, vec!["perf.runs".to_owned(), "perf.budgetS".to_owned()]);
    assert!(disagreement("model.contextLength", &rows[0].2[0], &code["model.contextLength"]).unwrap().contains("8192"));
    assert_eq!(disagreement("perf.runs", &rows[1].2[0], &code["perf.runs"]), None);
    assert_eq!(literal("4 MiB"), Some(json!(4u64 << 20)));
    assert_eq!(literal("all cores"), None);
    assert_eq!(setting_key("tests.commands.<languageId>"), "tests.commands");
}
