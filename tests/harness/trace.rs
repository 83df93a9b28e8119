//! Recorded edit traces: JSON lines replayed against a live server, with assertions.
//!
//! Each line is one object with one of these keys:
//! - `{"open": {"uri", "languageId", "version", "text"}}` (or `"textFile"`, a path relative to the trace file);
//! - `{"change": <DidChangeTextDocumentParams>, "atMs": 120}`: `atMs` is when it was typed, relative to the start;
//! - `{"expect": {"uri": "...", "state": {...}}}`: `pie/documentState` must contain `state` (subset match);
//! - `{"request": {"method": "...", "params": {...}}, "expect": {...}}`: the result must contain `expect`;
//! - `{"waitWarm": "URI"}`: waits until the document has a warm KV cache (`pie/cacheStats`, up to 10 minutes);
//! - `{"comment": "..."}`: ignored.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{json_subset, LspClient};

#[derive(Debug, Clone)]
pub enum Step {
    Open(Value),
    Change { params: Value, at_ms: Option<u64> },
    Expect { uri: String, state: Value },
    Request { method: String, params: Value, expect: Option<Value> },
    WaitWarm { uri: String },
}

#[derive(Debug, Clone, Default)]
pub struct Trace {
    pub steps: Vec<Step>,
}

impl Trace {
    pub fn load(path: &Path) -> Result<Trace> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading trace {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut steps = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(line).with_context(|| format!("{}:{}", path.display(), n + 1))?;
            if let Some(step) = parse_step(value, base).with_context(|| format!("{}:{}", path.display(), n + 1))? {
                steps.push(step);
            }
        }
        Ok(Trace { steps })
    }
}

fn parse_step(value: Value, base: &Path) -> Result<Option<Step>> {
    if let Some(open) = value.get("open") {
        let mut item = open.clone();
        if let Some(file) = item.get("textFile").and_then(Value::as_str) {
            let text = std::fs::read_to_string(base.join(file)).with_context(|| format!("textFile {file}"))?;
            item["text"] = Value::String(text);
        }
        if item.get("version").is_none() {
            item["version"] = 1.into();
        }
        return Ok(Some(Step::Open(item)));
    }
    if let Some(change) = value.get("change") {
        return Ok(Some(Step::Change { params: change.clone(), at_ms: value.get("atMs").and_then(Value::as_u64) }));
    }
    if let Some(request) = value.get("request") {
        let method = request["method"].as_str().context("request.method")?.to_owned();
        return Ok(Some(Step::Request {
            method,
            params: request.get("params").cloned().unwrap_or(Value::Null),
            expect: value.get("expect").cloned(),
        }));
    }
    if let Some(expect) = value.get("expect") {
        let uri = expect["uri"].as_str().context("expect.uri")?.to_owned();
        return Ok(Some(Step::Expect { uri, state: expect.get("state").cloned().unwrap_or(Value::Null) }));
    }
    if let Some(uri) = value.get("waitWarm").and_then(Value::as_str) {
        return Ok(Some(Step::WaitWarm { uri: uri.to_owned() }));
    }
    if value.get("comment").is_some() {
        return Ok(None);
    }
    bail!("unknown trace step: {value}")
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ReplayOptions {
    /// Sleep so that changes go out at their recorded `atMs` (otherwise as fast as possible).
    pub realtime: bool,
}

/// What happened at one step, for observers (the demo prints these).
pub enum Event<'a> {
    Opened { uri: &'a str },
    Changed { uri: &'a str, version: i64, changes: usize },
    Checked { uri: &'a str, state: &'a Value },
    Answered { method: &'a str, result: &'a Value },
    Warm { uri: &'a str, stats: &'a Value, waited: Duration },
}

#[derive(Debug, Clone, Default)]
pub struct ReplayReport {
    pub changes: usize,
    pub checks: usize,
    pub elapsed: Duration,
}

/// Replays `trace`, failing at the first expectation the server does not meet.
pub fn replay(
    lsp: &mut LspClient,
    trace: &Trace,
    options: ReplayOptions,
    mut observe: impl FnMut(Event<'_>),
) -> Result<ReplayReport> {
    let started = Instant::now();
    let mut report = ReplayReport::default();
    for (index, step) in trace.steps.iter().enumerate() {
        match step {
            Step::Open(item) => {
                lsp.notify("textDocument/didOpen", serde_json::json!({ "textDocument": item }));
                observe(Event::Opened { uri: item["uri"].as_str().unwrap_or_default() });
            }
            Step::Change { params, at_ms } => {
                if let (true, Some(at)) = (options.realtime, at_ms) {
                    let due = started + Duration::from_millis(*at);
                    thread::sleep(due.saturating_duration_since(Instant::now()));
                }
                lsp.notify("textDocument/didChange", params.clone());
                report.changes += 1;
                observe(Event::Changed {
                    uri: params["textDocument"]["uri"].as_str().unwrap_or_default(),
                    version: params["textDocument"]["version"].as_i64().unwrap_or_default(),
                    changes: params["contentChanges"].as_array().map(Vec::len).unwrap_or(0),
                });
            }
            Step::Expect { uri, state } => {
                let actual = lsp.document_state(uri).with_context(|| format!("step {index}: documentState"))?;
                if !json_subset(state, &actual) {
                    bail!("step {index}: documentState of {uri} does not match.\nexpected (subset): {state:#}\nactual: {actual:#}");
                }
                report.checks += 1;
                observe(Event::Checked { uri, state: &actual });
            }
            Step::WaitWarm { uri } => {
                let waited = Instant::now();
                let stats = lsp.wait_warm(uri, Duration::from_secs(600)).with_context(|| format!("step {index}"))?;
                observe(Event::Warm { uri, stats: &stats, waited: waited.elapsed() });
            }
            Step::Request { method, params, expect } => {
                let result = lsp.request(method, params.clone()).with_context(|| format!("step {index}: {method}"))?;
                if let Some(expect) = expect {
                    if !json_subset(expect, &result) {
                        bail!("step {index}: {method} result does not match.\nexpected (subset): {expect:#}\nactual: {result:#}");
                    }
                    report.checks += 1;
                }
                observe(Event::Answered { method, result: &result });
            }
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}
