//! The headless harness: spawns the real `pie-ls` binary and speaks JSON-RPC over its stdio.
//!
//! ```no_run
//! use pie_ls_harness::{LspClient, range_change};
//! let mut lsp = LspClient::builder().encoding("utf-8").spawn().unwrap();
//! lsp.open("file:///a.py", "python", "x = 1\n");
//! lsp.change("file:///a.py", 2, vec![range_change((0, 0), (0, 1), "y")]);
//! assert_eq!(lsp.document_state("file:///a.py").unwrap()["text"], "y = 1\n");
//! ```
//!
//! Server-to-client requests (`window/workDoneProgress/create`, `workspace/configuration`, ...) are answered
//! automatically and recorded; notifications are queued until a test takes them. Every wait has a timeout, so a
//! hung server fails the test instead of hanging it.

pub mod headline;
pub mod http_double;
pub mod trace;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

/// The default time a request may take before the harness gives up on it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// A JSON-RPC error response.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JSON-RPC error {}: {}", self.code, self.message)
    }
}
impl std::error::Error for RpcError {}

/// Path of the `pie-ls` binary: `$PIE_LS_BIN`, else next to the running test executable's `deps/` folder.
pub fn server_binary() -> Result<PathBuf> {
    if let Ok(path) = std::env::var("PIE_LS_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("test executable has no parent dir")?.to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let candidate = dir.join(format!("pie-ls{}", std::env::consts::EXE_SUFFIX));
    if candidate.exists() {
        Ok(candidate)
    } else {
        bail!("{} not found: build it first (`cargo build --release -p pie-ls`) or set PIE_LS_BIN", candidate.display())
    }
}

/// The `tests/` folder of the checkout the tests run from. Cargo sets `CARGO_MANIFEST_DIR` when it runs a test,
/// and that is read first: the compile-time value is the checkout the binary was *built* in, and a build directory
/// shared by two checkouts (`~/.cache/pie-ls/target`) reuses a test binary built in the other one, whose fixtures
/// may be gone.
pub fn tests_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The small test model (SmolLM2-135M-Instruct): `$PIE_LS_TEST_MODEL`, else the pie-ls model cache. Panics with
/// the command to run when it is missing: a test that needs a model must not pass without one.
pub fn test_model() -> String {
    cached_model("PIE_LS_TEST_MODEL", "SmolLM2-135M-Instruct.Q4_1.gguf", "pie-ls model fetch --test")
}

/// The default code model (Qwen2.5-Coder-0.5B-Instruct Q4_K_M).
pub fn default_model() -> String {
    cached_model("PIE_LS_DEFAULT_MODEL", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "pie-ls model fetch --default")
}

fn cached_model(env: &str, file: &str, fetch: &str) -> String {
    if let Ok(path) = std::env::var(env) {
        return path;
    }
    let cache = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache"));
    let path = cache.join("pie-ls/models").join(file);
    assert!(path.exists(), "{} is missing: run `{fetch}` (or set {env})", path.display());
    path.display().to_string()
}

pub struct LspBuilder {
    binary: Option<PathBuf>,
    encodings: Vec<String>,
    init_options: Option<Value>,
    env: Vec<(String, String)>,
    args: Vec<String>,
    capabilities: Value,
    initialize: bool,
    root: Option<PathBuf>,
    exact_capabilities: Option<Value>,
    record: bool,
}

impl LspBuilder {
    /// The workspace folder (`rootUri` and `workspaceFolders`); none by default.
    pub fn root(mut self, dir: &std::path::Path) -> Self {
        self.root = Some(dir.to_owned());
        self
    }
    /// Offer one position encoding (call several times to offer several, in order of preference).
    pub fn encoding(mut self, name: &str) -> Self {
        self.encodings.push(name.to_owned());
        self
    }
    /// `initializationOptions`, merged into what is already set.
    pub fn init_options(mut self, options: Value) -> Self {
        match self.init_options.as_mut() {
            Some(existing) => merge(existing, options),
            None => self.init_options = Some(options),
        }
        self
    }
    /// Runs the server without a model (`model.enabled = false`): for tests of the document machinery, which
    /// would otherwise load the default model in every server they start.
    pub fn without_model(self) -> Self {
        self.init_options(json!({ "model": { "enabled": false } }))
    }
    /// Uses this GGUF file (`initializationOptions.model.path`).
    pub fn model(self, path: &str) -> Self {
        self.init_options(json!({ "model": { "path": path } }))
    }
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }
    /// Extra client capabilities, merged into the defaults.
    pub fn capabilities(mut self, caps: Value) -> Self {
        merge(&mut self.capabilities, caps);
        self
    }
    /// These client capabilities and nothing else (no defaults, no encodings): a recorded editor's set.
    pub fn exact_capabilities(mut self, caps: Value) -> Self {
        self.exact_capabilities = Some(caps);
        self
    }
    /// Keeps every message the server sends (see `LspClient::received`).
    pub fn record_messages(mut self) -> Self {
        self.record = true;
        self
    }
    /// Runs this server binary instead of `server_binary()` (a benchmark driving the binary it is part of).
    pub fn binary(mut self, path: &std::path::Path) -> Self {
        self.binary = Some(path.to_owned());
        self
    }
    /// Spawn without sending `initialize` (for tests of the handshake itself).
    pub fn uninitialized(mut self) -> Self {
        self.initialize = false;
        self
    }

    pub fn spawn(self) -> Result<LspClient> {
        let bin = match self.binary.clone() {
            Some(bin) => bin,
            None => server_binary()?,
        };
        let mut cmd = Command::new(&bin);
        cmd.args(&self.args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        let mut child = cmd.spawn().with_context(|| format!("spawning {}", bin.display()))?;
        let stdin = Arc::new(Mutex::new(child.stdin.take().context("no stdin")?));
        let stdout = child.stdout.take().context("no stdout")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let stderr_log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let received = self.record.then(|| Arc::new(Mutex::new(Vec::new())));
        {
            let stdin = Arc::clone(&stdin);
            let server_requests = Arc::new(Mutex::new(Vec::new()));
            let recorded = Arc::clone(&server_requests);
            let received = received.clone();
            thread::spawn(move || read_messages(stdout, stdin, tx, recorded, received));
        }
        {
            let log = Arc::clone(&stderr_log);
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let mut client = LspClient {
            child,
            stdin,
            incoming: rx,
            next_id: 1,
            notifications: Vec::new(),
            stderr_log,
            versions: Default::default(),
            initialize_result: Value::Null,
            received,
        };
        if self.initialize {
            // A client that declares what the server can use (as VS Code with the pie-ls extension does); tests
            // of other clients pass `exact_capabilities`.
            let mut caps = json!({
                "general": { "positionEncodings": if self.encodings.is_empty() { vec!["utf-16".to_owned()] } else { self.encodings.clone() } },
                "window": { "workDoneProgress": true },
                "workspace": { "applyEdit": true, "executeCommand": {} },
                "textDocument": {
                    "synchronization": { "didSave": true },
                    "completion": { "completionItem": { "documentationFormat": ["markdown", "plaintext"], "preselectSupport": true } },
                    "codeAction": {
                        "codeActionLiteralSupport": { "codeActionKind": { "valueSet": ["quickfix", "refactor", "refactor.extract", "refactor.rewrite"] } },
                        "dataSupport": true,
                        "disabledSupport": true,
                        "resolveSupport": { "properties": ["edit"] }
                    },
                    "inlineCompletion": {}
                },
                "experimental": { "pieStatusNotification": true }
            });
            merge(&mut caps, self.capabilities);
            if let Some(exact) = self.exact_capabilities {
                caps = exact;
            }
            let root_uri = self.root.as_ref().map(|r| format!("file://{}", r.display()));
            let mut params = json!({ "processId": std::process::id(), "rootUri": root_uri, "capabilities": caps });
            if let Some(uri) = &root_uri {
                params["workspaceFolders"] = json!([{ "uri": uri, "name": "workspace" }]);
            }
            if let Some(options) = self.init_options {
                params["initializationOptions"] = options;
            }
            client.initialize_result = client.request("initialize", params).map_err(|e| anyhow!("initialize: {e}"))?;
            client.notify("initialized", json!({}));
        }
        Ok(client)
    }
}

/// Merges `extra` into `base` (objects key by key, anything else replaced): client settings and capabilities.
pub fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(base), Value::Object(extra)) => {
            for (key, value) in extra {
                merge(base.entry(key).or_insert(Value::Null), value);
            }
        }
        (base, extra) => *base = extra,
    }
}

/// A running server and the client side of its connection.
pub struct LspClient {
    child: Child,
    stdin: Arc<Mutex<ChildStdin>>,
    incoming: Receiver<Value>,
    next_id: i64,
    notifications: Vec<Value>,
    stderr_log: Arc<Mutex<String>>,
    versions: std::collections::HashMap<String, i32>,
    initialize_result: Value,
    received: Option<Arc<Mutex<Vec<Value>>>>,
}

impl LspClient {
    pub fn builder() -> LspBuilder {
        LspBuilder {
            binary: None,
            encodings: Vec::new(),
            init_options: None,
            env: Vec::new(),
            args: Vec::new(),
            capabilities: json!({}),
            initialize: true,
            root: None,
            exact_capabilities: None,
            record: false,
        }
    }

    /// Spawns and initializes a server with default settings (UTF-16, no model).
    pub fn start() -> Result<LspClient> {
        Self::builder().without_model().spawn()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `textDocument/inlineCompletion` at `(line, character)`, invoked (trigger kind 1), as an editor asks when the
    /// user pauses or presses the key for it.
    pub fn inline_completion(&mut self, uri: &str, (line, character): (u32, u32)) -> std::result::Result<Value, RpcError> {
        self.request(
            "textDocument/inlineCompletion",
            json!({ "textDocument": { "uri": uri }, "position": { "line": line, "character": character }, "context": { "triggerKind": 1 } }),
        )
    }

    /// `pie/cacheCheck`: the warm cache's consistency with the document.
    pub fn cache_check(&mut self, uri: &str) -> std::result::Result<Value, RpcError> {
        self.request("pie/cacheCheck", json!({ "textDocument": { "uri": uri } }))
    }

    /// `pie/cacheStats`.
    pub fn cache_stats(&mut self, uri: &str) -> std::result::Result<Value, RpcError> {
        self.request("pie/cacheStats", json!({ "textDocument": { "uri": uri } }))
    }

    /// Polls `pie/cacheStats` until the document's cache holds its whole prompt window (a large file is read
    /// around the cursor first and the rest in the background: `unreadBytes` counts what is left); returns those
    /// stats. Fails at once when the server has no model, and after `timeout` otherwise.
    pub fn wait_warm(&mut self, uri: &str, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.cache_stats(uri) {
                Ok(stats) if is_read(&stats) => return Ok(stats),
                Err(err) if err.message.contains("no model") => bail!("{uri} cannot warm: {err}"),
                _ if Instant::now() > deadline => bail!("{uri} was not warm after {} s", timeout.as_secs()),
                _ => thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// The result of `initialize` (capabilities, negotiated encoding).
    pub fn initialize_result(&self) -> &Value {
        &self.initialize_result
    }

    /// Sends a request and waits for its response; notifications that arrive meanwhile are queued.
    pub fn request(&mut self, method: &str, params: Value) -> std::result::Result<Value, RpcError> {
        self.request_with_timeout(method, params, DEFAULT_TIMEOUT)
    }

    pub fn request_with_timeout(
        &mut self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> std::result::Result<Value, RpcError> {
        let id = self.send_request(method, params);
        self.wait_response(id, timeout)
    }

    /// Sends a request without waiting; returns its id (pair with `wait_response` or `cancel`).
    pub fn send_request(&mut self, method: &str, params: Value) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({ "jsonrpc": "2.0", "id": id, "method": method });
        if !params.is_null() {
            msg["params"] = params;
        }
        self.send(&msg);
        id
    }

    /// Sends `$/cancelRequest` for `id`.
    pub fn cancel(&mut self, id: i64) {
        self.notify("$/cancelRequest", json!({ "id": id }));
    }

    pub fn wait_response(&mut self, id: i64, timeout: Duration) -> std::result::Result<Value, RpcError> {
        let deadline = Instant::now() + timeout;
        loop {
            let msg = self.next_message(deadline).map_err(|e| RpcError {
                code: -1,
                message: format!("no response to request {id}: {e}; server stderr:\n{}", self.stderr_tail()),
                data: None,
            })?;
            if msg.get("method").is_none() && msg.get("id") == Some(&json!(id)) {
                if let Some(err) = msg.get("error") {
                    return Err(RpcError {
                        code: err["code"].as_i64().unwrap_or(0),
                        message: err["message"].as_str().unwrap_or_default().to_owned(),
                        data: err.get("data").cloned(),
                    });
                }
                return Ok(msg.get("result").cloned().unwrap_or(Value::Null));
            }
            self.stash(msg);
        }
    }

    /// Waits for any response (e.g. to a raw malformed message whose id is null).
    pub fn wait_any_response(&mut self, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let msg = self.next_message(deadline)?;
            if msg.get("method").is_none() {
                return Ok(msg);
            }
            self.stash(msg);
        }
    }

    pub fn notify(&mut self, method: &str, params: Value) {
        let mut msg = json!({ "jsonrpc": "2.0", "method": method });
        if !params.is_null() {
            msg["params"] = params;
        }
        self.send(&msg);
    }

    /// Writes a framed message as is.
    pub fn send(&mut self, msg: &Value) {
        let body = serde_json::to_vec(msg).expect("serializable");
        self.send_raw_body(&body);
    }

    /// Frames and writes arbitrary bytes as a message body (for malformed-input tests).
    pub fn send_raw_body(&mut self, body: &[u8]) {
        let mut frame = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
        frame.extend_from_slice(body);
        self.send_raw(&frame);
    }

    /// Writes bytes to the server's stdin with no framing at all.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let mut stdin = self.stdin.lock().unwrap();
        // A write error means the server died; the next wait reports it with the server's stderr.
        let _ = stdin.write_all(bytes).and_then(|_| stdin.flush());
    }

    /// Opens a document at version 1.
    pub fn open(&mut self, uri: &str, language_id: &str, text: &str) {
        self.open_version(uri, language_id, 1, text);
    }

    pub fn open_version(&mut self, uri: &str, language_id: &str, version: i32, text: &str) {
        self.versions.insert(uri.to_owned(), version);
        self.notify(
            "textDocument/didOpen",
            json!({ "textDocument": { "uri": uri, "languageId": language_id, "version": version, "text": text } }),
        );
    }

    /// Sends `didChange` with an explicit version.
    pub fn change(&mut self, uri: &str, version: i32, changes: Vec<Value>) {
        self.versions.insert(uri.to_owned(), version);
        self.notify(
            "textDocument/didChange",
            json!({ "textDocument": { "uri": uri, "version": version }, "contentChanges": changes }),
        );
    }

    /// Sends `didChange` with the next version after the last one this client sent; returns that version.
    pub fn edit(&mut self, uri: &str, changes: Vec<Value>) -> i32 {
        let version = self.versions.get(uri).copied().unwrap_or(0) + 1;
        self.change(uri, version, changes);
        version
    }

    pub fn close(&mut self, uri: &str) {
        self.notify("textDocument/didClose", json!({ "textDocument": { "uri": uri } }));
    }

    /// `pie/documentState`.
    pub fn document_state(&mut self, uri: &str) -> std::result::Result<Value, RpcError> {
        self.request("pie/documentState", json!({ "textDocument": { "uri": uri } }))
    }

    /// The text the server holds for `uri`.
    pub fn text(&mut self, uri: &str) -> Result<String> {
        let state = self.document_state(uri)?;
        state["text"].as_str().map(str::to_owned).context("documentState without text")
    }

    /// Waits for a notification with this method (including ones already queued) and removes it from the queue.
    pub fn wait_notification(&mut self, method: &str, timeout: Duration) -> Result<Value> {
        if let Some(idx) = self.notifications.iter().position(|n| n["method"] == method) {
            return Ok(self.notifications.remove(idx)["params"].clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let msg = self.next_message(deadline).with_context(|| format!("waiting for {method}"))?;
            if msg["method"] == method && msg.get("id").is_none() {
                return Ok(msg["params"].clone());
            }
            self.stash(msg);
        }
    }

    /// Waits until a `window/logMessage` containing `needle` arrives and returns its text.
    pub fn wait_log_containing(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(idx) = self.notifications.iter().position(|n| {
                n["method"] == "window/logMessage" && n["params"]["message"].as_str().is_some_and(|m| m.contains(needle))
            }) {
                let msg = self.notifications.remove(idx);
                return Ok(msg["params"]["message"].as_str().unwrap_or_default().to_owned());
            }
            let msg = self.next_message(deadline).with_context(|| format!("waiting for a log message with {needle:?}"))?;
            self.stash(msg);
        }
    }

    /// Takes every queued notification with this method.
    pub fn take_notifications(&mut self, method: &str) -> Vec<Value> {
        let (taken, kept) = std::mem::take(&mut self.notifications).into_iter().partition(|n| n["method"] == method);
        self.notifications = kept;
        taken.into_iter().map(|n| n["params"].clone()).collect()
    }

    /// Drains what the server has sent so far without blocking.
    pub fn pump(&mut self) {
        while let Ok(msg) = self.incoming.try_recv() {
            self.stash(msg);
        }
    }

    /// Every message the server sent so far, in order (only with `record_messages`).
    pub fn received(&self) -> Vec<Value> {
        self.received.as_ref().map(|r| r.lock().unwrap().clone()).unwrap_or_default()
    }

    /// The server's stderr so far (its logs).
    pub fn stderr(&self) -> String {
        self.stderr_log.lock().unwrap().clone()
    }

    fn stderr_tail(&self) -> String {
        let log = self.stderr();
        let start = log.len().saturating_sub(4000);
        let start = (start..log.len()).find(|i| log.is_char_boundary(*i)).unwrap_or(log.len());
        log[start..].to_owned()
    }

    /// The server's process id (for its resident memory in `/proc`).

    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `shutdown` then `exit`; returns the exit status (the server must exit within 10 s).
    pub fn shutdown(mut self) -> Result<ExitStatus> {
        self.request_with_timeout("shutdown", Value::Null, Duration::from_secs(30)).map_err(|e| anyhow!("{e}"))?;
        self.notify("exit", Value::Null);
        self.wait_exit(Duration::from_secs(10))
    }

    /// Waits for the server process to end (after an `exit` sent by hand); returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        bail!("server did not exit within {timeout:?}")
    }

    fn stash(&mut self, msg: Value) {
        if msg.get("method").is_some() && msg.get("id").is_none() {
            self.notifications.push(msg);
        }
    }

    fn next_message(&mut self, deadline: Instant) -> Result<Value> {
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.incoming.recv_timeout(wait) {
            Ok(msg) => Ok(msg),
            Err(RecvTimeoutError::Timeout) => bail!("timed out"),
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.try_wait().ok().flatten();
                bail!("server closed its stdout (exit status {status:?}); stderr:\n{}", self.stderr_tail())
            }
        }
    }
}

impl Drop for LspClient {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads framed messages; answers server-to-client requests so the server never waits on us.
fn read_messages(
    stdout: impl Read,
    stdin: Arc<Mutex<ChildStdin>>,
    tx: mpsc::Sender<Value>,
    server_requests: Arc<Mutex<Vec<Value>>>,
    received: Option<Arc<Mutex<Vec<Value>>>>,
) {
    let mut reader = BufReader::new(stdout);
    loop {
        let mut content_length = None;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some(len) = line.strip_prefix("Content-Length:") {
                content_length = len.trim().parse::<usize>().ok();
            }
        }
        let Some(len) = content_length else { return };
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let Ok(msg) = serde_json::from_slice::<Value>(&body) else { continue };
        if let Some(received) = &received {
            received.lock().unwrap().push(msg.clone());
        }
        if let (Some(id), Some(method)) = (msg.get("id"), msg.get("method").and_then(Value::as_str)) {
            let result = match method {
                // The harness applies nothing, but says it did, so the server goes on as with an editor.
                "workspace/applyEdit" => json!({ "applied": true }),
                "workspace/configuration" => {
                    let items = msg["params"]["items"].as_array().map(Vec::len).unwrap_or(0);
                    Value::Array(vec![Value::Null; items])
                }
                _ => Value::Null,
            };
            let reply = serde_json::to_vec(&json!({ "jsonrpc": "2.0", "id": id, "result": result })).unwrap();
            let mut stdin = stdin.lock().unwrap();
            let _ = write!(stdin, "Content-Length: {}\r\n\r\n", reply.len());
            let _ = stdin.write_all(&reply);
            let _ = stdin.flush();
            server_requests.lock().unwrap().push(msg.clone());
        }
        if tx.send(msg).is_err() {
            return;
        }
    }
}

/// A ranged content change, positions as `(line, character)`.
pub fn range_change(start: (u32, u32), end: (u32, u32), text: &str) -> Value {
    json!({
        "range": {
            "start": { "line": start.0, "character": start.1 },
            "end": { "line": end.0, "character": end.1 }
        },
        "text": text
    })
}

/// A whole-document content change.
pub fn full_change(text: &str) -> Value {
    json!({ "text": text })
}

/// True when every key of `expected` is in `actual` with an equal (recursively subset-matching) value.
pub fn json_subset(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e.iter().all(|(k, v)| a.get(k).is_some_and(|av| json_subset(v, av))),
        (e, a) => e == a,
    }
}

/// Whether `pie/cacheStats` says the document's cache holds its whole prompt window: tokens cached and no window
/// bytes left to read.
pub fn is_read(stats: &Value) -> bool {
    // `unreadBytes` reaches 0 before the read ends: what it left stale is settled after, outside the refresh budget.
    stats["cachedTokens"].as_u64().unwrap_or(0) > 0 && stats["unreadBytes"].as_u64().unwrap_or(0) == 0 && !stats["reading"].as_bool().unwrap_or(false)
}
