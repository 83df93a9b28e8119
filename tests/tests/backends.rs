//! pie-ls on a real llama-server (llama.cpp's own server, built by `scripts/llama-server`, run on 127.0.0.1 as an
//! external program), through pie-ls's LSP interface: inline completion and completion over `/infill`, the
//! reuse figures pie-ls reports against the server's own `/slots`, cancellation freeing the server's slot, a
//! model without FIM, the server absent, restarted mid-session, and self-debug over `/v1/chat/completions`.
//!
//! The binary comes from `$PIE_LS_LLAMA_SERVER` (set by `scripts/test`) or the cache `scripts/llama-server`
//! builds into; without it these tests fail and say how to build it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pie_ls_harness::http_double::closed_port;
use pie_ls_harness::{default_model, range_change, test_model, LspClient};
use serde_json::{json, Value};

fn llama_server_binary() -> PathBuf {
    if let Ok(path) = std::env::var("PIE_LS_LLAMA_SERVER") {
        return PathBuf::from(path);
    }
    let cache = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache"));
    let path = cache.join("pie-ls/llama-server/11434.0.0/build/bin/llama-server");
    assert!(path.exists(), "{} is missing: run `scripts/llama-server` (or set PIE_LS_LLAMA_SERVER)", path.display());
    path
}

/// A llama-server process on 127.0.0.1, stopped (by its pid) on drop.
struct LlamaServer {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl LlamaServer {
    fn start(model: &str, port: u16) -> LlamaServer {
        let log = std::env::temp_dir().join(format!("pie-ls-llama-server-{}-{port}.log", std::process::id()));
        let child = Command::new(llama_server_binary())
            .args(["-m", model, "-t", "2", "-c", "4096", "-np", "1", "--cache-reuse", "256", "--host", "127.0.0.1", "--no-webui"])
            .args(["--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting llama-server");
        let mut server = LlamaServer { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if get(port, "/health").is_some_and(|(status, _)| status == 200) {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("llama-server exited ({status}) while loading: {}", server.log_text());
            }
            assert!(Instant::now() < deadline, "llama-server did not become healthy: {}", server.log_text());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The one slot, as `/slots` shows it.
    fn slot(&self) -> Value {
        let (status, slots) = get(self.port, "/slots").expect("/slots");
        assert_eq!(status, 200, "{slots}");
        slots[0].clone()
    }

    /// Watches `/slots` while `work` runs and returns the prompt figures of the last task it saw generating
    /// (`n_prompt_tokens_cache`, `n_prompt_tokens_processed`): the server's own account of that request, which
    /// `/slots` shows only while the slot is busy.
    fn figures_during<T>(&self, work: impl FnOnce() -> T) -> (T, Option<(u64, u64)>) {
        let port = self.port;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let watcher = std::thread::spawn(move || {
            let mut seen: Option<(i64, u64, u64)> = None;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some((200, slots)) = get(port, "/slots") {
                    let slot = &slots[0];
                    let generating = slot["is_processing"] == true && slot["next_token"][0]["n_decoded"].as_u64().unwrap_or(0) >= 1;
                    if generating {
                        let task = slot["id_task"].as_i64().unwrap_or(-1);
                        let figures = (slot["n_prompt_tokens_cache"].as_u64().unwrap_or(0), slot["n_prompt_tokens_processed"].as_u64().unwrap_or(0));
                        if seen.is_none_or(|(t, _, _)| task >= t) {
                            seen = Some((task, figures.0, figures.1));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            seen.map(|(_, reused, evaluated)| (reused, evaluated))
        });
        let out = work();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (out, watcher.join().unwrap())
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A plain HTTP GET on 127.0.0.1 (status and JSON body), `None` when nothing answers.
fn get(port: u16, path: &str) -> Option<(u16, Value)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_owned() };
    Some((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

const URI: &str = "file:///w/stats.py";
const SOURCE: &str = "import math\n\n\ndef mean(xs):\n    return sum(xs) / len(xs)\n\n\ndef variance(xs):\n    m = mean(xs)\n    return sum((x - m) ** 2 for x in xs) / len(xs)\n\n\ndef stddev(xs):\n\n";

fn pie_ls(url: &str, extra: Value) -> LspClient {
    let mut options = json!({
        "backend": { "kind": "llama-server", "url": url, "timeoutMs": 5000 },
        "completion": { "maxTokens": 32, "firstSuggestionMs": 0, "timeBudgetMs": 30000 },
    });
    pie_ls_harness::merge(&mut options, extra);
    LspClient::builder().init_options(options).capabilities(json!({"experimental": {"pieStatusNotification": true}})).spawn().unwrap()
}

fn inline(lsp: &mut LspClient, uri: &str, line: u32, character: u32) -> Result<Value, pie_ls_harness::RpcError> {
    lsp.request(
        "textDocument/inlineCompletion",
        json!({ "textDocument": { "uri": uri }, "position": { "line": line, "character": character }, "context": { "triggerKind": 1 } }),
    )
}

fn last_line() -> u32 {
    SOURCE.lines().count() as u32
}

#[test]
fn completions_over_llama_server_report_the_servers_own_reuse_figures() {
    let server = LlamaServer::start(&default_model(), closed_port());
    let mut lsp = pie_ls(&server.url(), json!({}));
    lsp.open(URI, "python", SOURCE);
    // No local model: nothing uses it.
    assert!(lsp.cache_stats(URI).unwrap()["requests"] == 0, "{}", lsp.stderr());
    let line = last_line() - 1;
    lsp.edit(URI, vec![range_change((line, 0), (line, 0), "    ")]);
    let (first, server_says) = server.figures_during(|| inline(&mut lsp, URI, line, 4).unwrap());
    let text = first["items"][0]["insertText"].as_str().unwrap_or_default().to_owned();
    eprintln!("suggestion: {text:?}");
    assert!(!text.trim().is_empty(), "{first}");
    let stats = lsp.cache_stats(URI).unwrap();
    eprintln!("pie/cacheStats: {stats}\n/slots while generating (reused, evaluated): {server_says:?}");
    assert_eq!(stats["backend"], "llama-server");
    assert_eq!(stats["requests"], 1);
    let figures = |stats: &Value| (stats["lastRequest"]["reusedTokens"].as_u64().unwrap(), stats["lastRequest"]["evaluatedTokens"].as_u64().unwrap());
    assert_eq!(Some(figures(&stats)), server_says, "pie-ls reports what the server did");
    let prompt = stats["lastRequest"]["promptTokens"].as_u64().unwrap();
    assert!(prompt > 60, "{stats}");
    let first_reused = stats["lastRequest"]["reusedTokens"].as_u64().unwrap();

    // One more keystroke (not the start of the suggestion, which would be served from the one shown): the server
    // reuses the prompt before it and evaluates a few tokens.
    assert!(!text.starts_with('s'), "{text}");
    lsp.edit(URI, vec![range_change((line, 4), (line, 4), "s")]);
    let (second, server_says) = server.figures_during(|| {
        lsp.request("textDocument/completion", json!({ "textDocument": { "uri": URI }, "position": { "line": line, "character": 5 } })).unwrap()
    });
    eprintln!("completion: {second}");
    let stats = lsp.cache_stats(URI).unwrap();
    eprintln!("pie/cacheStats: {stats}\n/slots while generating (reused, evaluated): {server_says:?}");
    assert_eq!(stats["requests"], 2);
    let (reused, evaluated) = figures(&stats);
    assert_eq!(Some((reused, evaluated)), server_says, "pie-ls reports what the server did");
    assert!(reused * 2 > prompt && evaluated < 40, "a keystroke reuses the prefix: {stats}");
    assert_eq!(stats["reusedTokens"].as_u64().unwrap(), reused + first_reused, "sums over the requests");
    let status = lsp.take_notifications("pie/status");
    assert!(status.iter().any(|s| s["backend"] == "llama-server" && s["reusedTokens"] == reused), "{status:?}");
    lsp.shutdown().unwrap();
}

#[test]
fn a_cancelled_completion_frees_the_servers_slot() {
    let server = LlamaServer::start(&default_model(), closed_port());
    // A pattern that goes on at the top level: no line can be less indented than the cursor's, and no blank
    // lines come, so only the token cap or a cancellation ends the suggestion.
    let squares: String = (1..=30).map(|i| format!("SQUARE_{i} = {i} * {i}\n")).collect();
    let mut lsp = pie_ls(&server.url(), json!({"completion": {"maxTokens": 1000, "timeBudgetMs": 120000}}));
    let uri = "file:///w/squares.py";
    lsp.open(uri, "python", &squares);
    let id = lsp.send_request(
        "textDocument/inlineCompletion",
        json!({ "textDocument": { "uri": uri }, "position": { "line": 30, "character": 0 }, "context": { "triggerKind": 1 } }),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.slot()["is_processing"] != true {
        assert!(Instant::now() < deadline, "the slot never started: {}", server.slot());
        std::thread::sleep(Duration::from_millis(20));
    }
    // Generating for a while (1000 tokens would take many seconds on 2 cores).
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(server.slot()["is_processing"], true, "finished before the cancellation: {}", server.slot());
    lsp.cancel(id);
    let answer = lsp.wait_response(id, Duration::from_secs(10));
    eprintln!("cancelled request answered: {answer:?}");
    let cancelled_at = Instant::now();
    while server.slot()["is_processing"] == true {
        // llama-server notices a closed connection within about a second, and cancels between decode steps.
        assert!(cancelled_at.elapsed() < Duration::from_secs(20), "the slot is still busy after the cancellation: {}", server.slot());
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("slot freed {:.2} s after the cancellation (1000 tokens asked for)", cancelled_at.elapsed().as_secs_f64());
    assert!(lsp.is_alive());
    lsp.shutdown().unwrap();
}

#[test]
fn a_model_without_fim_is_a_clear_error_and_the_server_goes_on() {
    let server = LlamaServer::start(&test_model(), closed_port());
    let mut lsp = pie_ls(&server.url(), json!({}));
    lsp.open(URI, "python", SOURCE);
    let err = inline(&mut lsp, URI, last_line() - 1, 0).unwrap_err();
    eprintln!("{err}");
    assert!(err.message.contains("cannot fill in the middle") && err.message.contains("Infill is not supported"), "{err}");
    assert_eq!(lsp.document_state(URI).unwrap()["text"], SOURCE);
    lsp.shutdown().unwrap();
}

#[test]
fn the_server_absent_then_started_then_restarted_mid_session() {
    let port = closed_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut lsp = pie_ls(&url, json!({}));
    lsp.open(URI, "python", SOURCE);
    let line = last_line() - 1;
    let started = Instant::now();
    let err = inline(&mut lsp, URI, line, 0).unwrap_err();
    assert!(err.message.contains("cannot reach") && err.message.contains(&url), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(lsp.is_alive());

    let server = LlamaServer::start(&default_model(), port);
    lsp.edit(URI, vec![range_change((line, 0), (line, 0), "    ")]);
    let ok = inline(&mut lsp, URI, line, 4).unwrap();
    assert!(ok["items"].as_array().is_some(), "{ok}");
    server.stop();
    // Not the start of the shown suggestion (typing along one is served without a request).
    lsp.edit(URI, vec![range_change((line, 4), (line, 4), "z")]);
    let err = inline(&mut lsp, URI, line, 5).unwrap_err();
    assert!(err.message.contains("cannot reach") || err.message.contains("broke off"), "{err}");

    let server = LlamaServer::start(&default_model(), port);
    lsp.edit(URI, vec![range_change((line, 5), (line, 5), "q")]);
    let (again, server_says) = server.figures_during(|| inline(&mut lsp, URI, line, 6).unwrap());
    assert!(again["items"].as_array().is_some(), "{again}");
    let stats = lsp.cache_stats(URI).unwrap();
    assert_eq!(stats["requests"], 2, "{stats}");
    let reported = (stats["lastRequest"]["reusedTokens"].as_u64().unwrap(), stats["lastRequest"]["evaluatedTokens"].as_u64().unwrap());
    assert_eq!(Some(reported), server_says, "{stats}");
    assert_eq!(reported.0, 0, "a restarted server has nothing cached: {stats}");
    lsp.shutdown().unwrap();
}

const BANK: &str = "def below_zero(operations):\n    \"\"\"Whether the balance, starting at zero, ever falls below zero.\"\"\"\n    balance = 0\n    for op in operations:\n        balance += op\n        if balance < -1:\n            return True\n    return False\n\n\ndef total(operations):\n    return sum(operations)\n";
const BANK_TESTS: &str = "from bank import below_zero, total\n\n\ndef test_dips_below_zero():\n    assert below_zero([1, 2, -4, 5]) == True\n\n\ndef test_stays_positive():\n    assert below_zero([1, 2, 3]) == False\n\n\ndef test_total():\n    assert total([1, 2, 3]) == 6\n";

#[test]
fn self_debug_runs_over_chat_completions_on_llama_server() {
    let server = LlamaServer::start(&default_model(), closed_port());
    let dir = std::env::temp_dir().join(format!("pie-ls-backends-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("bank.py"), BANK).unwrap();
    std::fs::write(dir.join("test_bank.py"), BANK_TESTS).unwrap();
    // Completions stay local (and off here); only the actions go to the server: no local model is loaded.
    let options = json!({
        "actions": { "backend": { "kind": "llama-server", "url": server.url(), "timeoutMs": 30000 } },
        "model": { "enabled": true, "path": "/nonexistent/model.gguf" },
        "completion": { "enabled": false },
    });
    let mut lsp = LspClient::builder().init_options(options).root(&dir).spawn().unwrap();
    let (bank, tests) = (format!("file://{}/bank.py", dir.display()), format!("file://{}/test_bank.py", dir.display()));
    lsp.open(&bank, "python", BANK);
    lsp.open(&tests, "python", BANK_TESTS);
    let offered = lsp
        .request(
            "textDocument/codeAction",
            json!({
                "textDocument": { "uri": tests },
                "range": { "start": { "line": 4, "character": 8 }, "end": { "line": 4, "character": 8 } },
                "context": { "diagnostics": [], "only": ["quickfix"] }
            }),
        )
        .unwrap();
    let action = offered.as_array().unwrap().iter().find(|a| a["kind"] == "quickfix").cloned().expect("a self-debug action");
    assert!(action["disabled"].is_null(), "offered as available with the HTTP actions backend: {action}");
    let id = lsp.send_request("codeAction/resolve", action);
    let resolved = lsp.wait_response(id, Duration::from_secs(600)).unwrap();
    let result = &resolved["data"]["result"];
    eprintln!("self-debug over llama-server: {}", serde_json::to_string_pretty(result).unwrap());
    let rounds = result["rounds"].as_array().expect("rounds");
    assert!(!rounds.is_empty(), "{result}");
    for round in rounds {
        assert!(round["source"].as_str().unwrap().contains("llama-server backend at"), "{round}");
    }
    // The model's code reached the fix loop (llama-server repeats the prefill, which holds the opening fence and
    // the given signature and docstring: a client that kept it would stop at once and never see code). The body
    // after the docstring is the model's.
    let docstring_end = BANK.find("zero.\"\"\"\n").unwrap() + "zero.\"\"\"\n".len();
    let head = &BANK[..docstring_end];
    assert!(
        rounds.iter().any(|r| r["code"].as_str().is_some_and(|c| c.starts_with(head) && c[head.len()..].contains("return"))),
        "{result}"
    );
    let tasks = server.log_text().matches("processing task").count();
    assert!(tasks >= 2, "an explanation and a fix per candidate went to the server: {tasks} tasks");
    if result["status"] == "fixed" {
        let changes = resolved["edit"]["changes"].as_object().unwrap();
        assert_eq!(changes.keys().collect::<Vec<_>>(), vec![&bank]);
    } else {
        assert_eq!(result["status"], "noFix", "{result}");
        assert!(!result["reason"].as_str().unwrap_or_default().contains("cannot reach"), "{result}");
    }
    // The local model was never looked for (its path does not exist, and nothing complained).
    assert!(!lsp.stderr().contains("no model loaded"), "{}", lsp.stderr());
    lsp.shutdown().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn marker_text_in_user_code_stays_text_on_llama_server() {
    // Two documents that differ only by the text `<|fim_middle|>` on the cursor's line, before the cursor (the part
    // llama.vim sends as `prompt`, which llama-server tokenizes with special tokens). Sent as a special token it
    // would add one prompt token (and end the prefix for the model); as text it adds several.
    let server = LlamaServer::start(&default_model(), closed_port());
    let mut lsp = pie_ls(&server.url(), json!({}));
    let marker = "<|fim_middle|>";
    let plain = "def shout(text):\n    label = \"".to_owned();
    let with_marker = format!("{plain}{marker}");
    let mut prompt_tokens = Vec::new();
    for (i, text) in [plain, with_marker].iter().enumerate() {
        let uri = format!("file:///w/marker{i}.py");
        lsp.open(&uri, "python", text);
        let character = text.lines().nth(1).unwrap().len() as u32;
        let answer = inline(&mut lsp, &uri, 1, character).unwrap();
        eprintln!("{text:?} -> {answer}");
        let stats = lsp.cache_stats(&uri).unwrap();
        prompt_tokens.push(stats["lastRequest"]["promptTokens"].as_u64().unwrap());
    }
    let added = prompt_tokens[1] - prompt_tokens[0];
    eprintln!("prompt tokens {prompt_tokens:?}: the marker text added {added}");
    assert!(added >= 3, "`{marker}` in the code reached the model as a special token: {prompt_tokens:?}");
    lsp.shutdown().unwrap();
}

/// vLLM's streamed `/v1/completions` (recorded shape), replayed by the HTTP double: vLLM cannot run here.
fn vllm_stream() -> Vec<String> {
    pie_ls_harness::http_double::sse(
        &[
            r#"{"id":"cmpl-1","object":"text_completion","created":1764751200,"model":"Qwen/Qwen2.5-Coder-1.5B","choices":[{"index":0,"text":"return math.sqrt","logprobs":null,"finish_reason":null,"stop_reason":null}],"usage":null}"#,
            r#"{"id":"cmpl-1","object":"text_completion","created":1764751200,"model":"Qwen/Qwen2.5-Coder-1.5B","choices":[{"index":0,"text":"(variance(xs))\n","logprobs":null,"finish_reason":"stop","stop_reason":"<|endoftext|>"}],"usage":null}"#,
            r#"{"id":"cmpl-1","object":"text_completion","created":1764751200,"model":"Qwen/Qwen2.5-Coder-1.5B","choices":[],"usage":{"prompt_tokens":96,"total_tokens":101,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":80}}}"#,
        ],
        true,
    )
}

#[test]
fn a_vllm_shaped_server_through_lsp_with_key_and_routing_header() {
    use pie_ls_harness::http_double::{HttpDouble, Reply};
    let double = HttpDouble::start(vec![("/v1/completions", Reply::stream("text/event-stream", &vllm_stream(), Duration::from_millis(5)))]);
    let secret = "sk-pie-ls-test-4f1c9e";
    let options = json!({
        "backend": { "kind": "openai", "url": format!("{}/v1", double.url()), "model": "Qwen/Qwen2.5-Coder-1.5B",
                     "apiKeyEnv": "PIE_LS_TEAM_KEY", "routingHeader": "X-SMG-Routing-Key" },
        "completion": { "firstSuggestionMs": 0 },
    });
    let mut lsp = LspClient::builder().init_options(options).env("PIE_LS_TEAM_KEY", secret).arg("--log-level").arg("trace").spawn().unwrap();
    lsp.open(URI, "python", SOURCE);
    let line = last_line() - 1;
    lsp.edit(URI, vec![range_change((line, 0), (line, 0), "    ")]);
    let answer = inline(&mut lsp, URI, line, 4).unwrap();
    assert_eq!(answer["items"][0]["insertText"], "return math.sqrt(variance(xs))", "{answer}");
    let stats = lsp.cache_stats(URI).unwrap();
    assert_eq!(stats["lastRequest"], json!({"promptTokens": 96, "reusedTokens": 80, "evaluatedTokens": 16, "generatedTokens": 5}), "{stats}");
    let status = lsp.wait_notification("pie/status", Duration::from_secs(5)).unwrap();
    assert_eq!((status["backend"].as_str(), status["reusedTokens"].as_u64(), status["encodedTokens"].as_u64()), (Some("openai"), Some(80), Some(16)));
    lsp.edit(URI, vec![range_change((line, 4), (line, 4), "x")]);
    inline(&mut lsp, URI, line, 5).unwrap();
    let requests = double.requests();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert_eq!(r.headers.get("authorization").map(String::as_str), Some(format!("Bearer {secret}").as_str()));
        let prompt = r.body["prompt"].as_str().unwrap();
        assert!(prompt.starts_with("<|fim_prefix|>import math") && prompt.ends_with("<|fim_middle|>"), "{prompt}");
    }
    let key = requests[0].headers.get("x-smg-routing-key").cloned().unwrap_or_default();
    assert!(key.len() >= 16 && !key.contains("stats"), "a hash, not the URI: {key}");
    assert_eq!(requests[1].headers.get("x-smg-routing-key"), Some(&key), "stable per document");
    let log = lsp.stderr();
    assert!(log.len() > 1000 && !log.contains(secret), "the key must never be logged");
    lsp.shutdown().unwrap();
}

#[test]
fn a_silent_or_garbage_sending_server_is_a_clear_error_and_the_server_goes_on() {
    use pie_ls_harness::http_double::{HttpDouble, Reply};
    let silent = HttpDouble::start(vec![("/infill", Reply { status: 200, content_type: "text/event-stream".into(), chunks: vec![(Duration::from_secs(30), vec![])], hold: Duration::ZERO })]);
    let mut lsp = pie_ls(&silent.url(), json!({ "backend": { "timeoutMs": 500 } }));
    lsp.open(URI, "python", SOURCE);
    let started = Instant::now();
    let err = inline(&mut lsp, URI, last_line() - 1, 0).unwrap_err();
    assert!(err.message.contains("backend.timeoutMs"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // Settings change at run time: now a server that answers HTML.
    let html = HttpDouble::start(vec![("/infill", Reply::text(200, "text/html", "<html><body>login required</body></html>\n"))]);
    lsp.notify("workspace/didChangeConfiguration", json!({ "settings": { "backend": { "url": html.url() } } }));
    let err = inline(&mut lsp, URI, last_line() - 1, 0).unwrap_err();
    assert!(err.message.contains("unexpected answer") && err.message.contains("login required"), "{err}");
    assert_eq!(lsp.document_state(URI).unwrap()["text"], SOURCE);
    assert!(lsp.is_alive());
    lsp.shutdown().unwrap();
}
