//! The HTTP backends against the recorded response shapes of servers that cannot run here (vLLM, SGLang,
//! Ollama), replayed by an HTTP double on 127.0.0.1: streaming, usage figures, their error bodies, and every way a
//! server can misbehave (absent, silent, stalling, garbage). The real llama-server path is tested against the
//! real server in `tests/tests/backends.rs`.
//!
//! The bodies are the servers' shapes as their sources write them (vLLM `serving_completion.py` /
//! `protocol.py`, SGLang `openai_api/serving_completions.py`, Ollama `api/types.go`), with their field order and
//! the fields pie-ls does not read.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pie_ls::engine::GenerateParams;
use pie_ls::features::chat::{ChatMessage, ChatModel, Role};
use pie_ls::inference::{runtime, BackendConfig, BackendError, BackendKind, CompletionJob, FimParts, HttpBackend};
use pie_ls_harness::http_double::{closed_port, ndjson, sse, HttpDouble, Reply};

const VLLM_MODEL: &str = "Qwen/Qwen2.5-Coder-1.5B";

fn vllm_completion_stream() -> Vec<String> {
    sse(
        &[
            r#"{"id":"cmpl-5b0c2f4e","object":"text_completion","created":1764751200,"model":"Qwen/Qwen2.5-Coder-1.5B","choices":[{"index":0,"text":"return","logprobs":null,"finish_reason":null,"stop_reason":null}],"usage":null}"#,
            r#"{"id":"cmpl-5b0c2f4e","object":"text_completion","created":1764751200,"model":"Qwen/Qwen2.5-Coder-1.5B","choices":[{"index":0,"text":" a + b","logprobs":null,"finish_reason":null,"stop_reason":null}],"usage":null}"#,
            r#"{"id":"cmpl-5b0c2f4e","object":"text_completion","created":1764751200,"model":"Qwen/Qwen2.5-Coder-1.5B","choices":[{"index":0,"text":"","logprobs":null,"finish_reason":"stop","stop_reason":"<|endoftext|>"}],"usage":null}"#,
            r#"{"id":"cmpl-5b0c2f4e","object":"text_completion","created":1764751200,"model":"Qwen/Qwen2.5-Coder-1.5B","choices":[],"usage":{"prompt_tokens":412,"total_tokens":415,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":400}}}"#,
        ],
        true,
    )
}

fn job() -> CompletionJob {
    CompletionJob {
        parts: FimParts {
            extra: vec![("util.py".into(), "def helper(x):\n    return x * 2\n".into())],
            file_name: "add.py".into(),
            prefix: "def add(a, b):\n    ".into(),
            suffix: "\n\nprint(add(1, 2))\n".into(),
        },
        line_before_cursor: "    ".into(),
        after_cursor: String::new(),
        max_tokens: 32,
        multiline: true,
        started: Instant::now(),
        budget: Duration::from_secs(10),
        routing_key: "doc-key".into(),
    }
}

fn backend(kind: BackendKind, url: String, extra: impl FnOnce(&mut BackendConfig)) -> HttpBackend {
    let mut config = BackendConfig { kind, url: Some(url), timeout_ms: 2000, ..Default::default() };
    extra(&mut config);
    HttpBackend::new(config).unwrap()
}

fn complete(backend: &HttpBackend, job: CompletionJob) -> Result<pie_ls::inference::Completed, BackendError> {
    runtime().block_on(backend.complete(job, Arc::new(AtomicBool::new(false))))
}

#[test]
fn vllm_completion_streams_a_fim_prompt_and_reports_cached_tokens() {
    let double = HttpDouble::start(vec![("/v1/completions", Reply::stream("text/event-stream", &vllm_completion_stream(), Duration::from_millis(5)))]);
    std::env::set_var("PIE_LS_TEST_VLLM_KEY", "sk-test-123");
    let b = backend(BackendKind::Openai, format!("{}/v1", double.url()), |c| {
        c.model = Some(VLLM_MODEL.into());
        c.api_key_env = Some("PIE_LS_TEST_VLLM_KEY".into());
        c.routing_header = Some("X-SMG-Routing-Key".into());
    });
    let done = complete(&b, job()).unwrap();
    assert_eq!(done.text, "return a + b");
    assert_eq!((done.usage.prompt_tokens, done.usage.reused_tokens, done.usage.evaluated_tokens), (Some(412), Some(400), Some(12)));
    let requests = double.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.path, "/v1/completions");
    assert_eq!(r.headers.get("authorization").map(String::as_str), Some("Bearer sk-test-123"));
    assert_eq!(r.headers.get("x-smg-routing-key").map(String::as_str), Some("doc-key"));
    assert_eq!(r.body["model"], VLLM_MODEL);
    assert_eq!(r.body["stream_options"]["include_usage"], true);
    let prompt = r.body["prompt"].as_str().unwrap();
    assert_eq!(prompt, "<|file_sep|>util.py\ndef helper(x):\n    return x * 2\n<|file_sep|>add.py\n<|fim_prefix|>def add(a, b):\n    <|fim_suffix|>\n\nprint(add(1, 2))\n<|fim_middle|>");
}

#[test]
fn an_unnamed_model_is_taken_from_v1_models() {
    let models = r#"{"object":"list","data":[{"id":"Qwen/Qwen2.5-Coder-1.5B","object":"model","created":1764751200,"owned_by":"vllm","root":"Qwen/Qwen2.5-Coder-1.5B","parent":null,"max_model_len":32768,"permission":[]}]}"#;
    let double = HttpDouble::start(vec![
        ("/v1/models", Reply::json(200, models)),
        ("/v1/completions", Reply::stream("text/event-stream", &vllm_completion_stream(), Duration::ZERO)),
    ]);
    let b = backend(BackendKind::Openai, double.url(), |_| {});
    assert_eq!(complete(&b, job()).unwrap().text, "return a + b");
    assert_eq!(complete(&b, job()).unwrap().text, "return a + b");
    let paths: Vec<String> = double.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/v1/models", "/v1/completions", "/v1/completions"], "the model list is asked once");
}

#[test]
fn sglang_completion_and_its_error_body() {
    let stream = sse(
        &[
            r#"{"id":"6d1e0c1f","object":"text_completion","created":1764751200,"model":"qwen-coder","choices":[{"index":0,"text":"return a","logprobs":null,"finish_reason":null,"matched_stop":null}],"usage":null}"#,
            r#"{"id":"6d1e0c1f","object":"text_completion","created":1764751200,"model":"qwen-coder","choices":[{"index":0,"text":" + b\n","logprobs":null,"finish_reason":"stop","matched_stop":"<|endoftext|>"}],"usage":null}"#,
            r#"{"id":"6d1e0c1f","object":"text_completion","created":1764751200,"model":"qwen-coder","choices":[],"usage":{"prompt_tokens":398,"total_tokens":402,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":384}}}"#,
        ],
        true,
    );
    let double = HttpDouble::start(vec![("/v1/completions", Reply::stream("text/event-stream", &stream, Duration::ZERO))]);
    let b = backend(BackendKind::Openai, double.url(), |c| c.model = Some("qwen-coder".into()));
    let done = complete(&b, job()).unwrap();
    assert_eq!((done.text.as_str(), done.usage.reused_tokens), ("return a + b", Some(384)));

    double.set(
        "/v1/completions",
        Reply::json(400, r#"{"object":"error","message":"Requested token count exceeds the model's maximum context length of 4096 tokens.","type":"BadRequestError","param":null,"code":400}"#),
    );
    let err = complete(&b, job()).unwrap_err();
    assert!(matches!(err, BackendError::Status { status: 400, .. }), "{err:?}");
    assert!(err.to_string().contains("exceeds the model's maximum context length"), "{err}");
}

#[test]
fn vllm_error_shapes_carry_the_servers_message() {
    let double = HttpDouble::start(vec![(
        "/v1/completions",
        Reply::json(404, r#"{"error":{"message":"The model `qwen` does not exist.","type":"NotFoundError","param":null,"code":404}}"#),
    )]);
    let b = backend(BackendKind::Openai, double.url(), |c| c.model = Some("qwen".into()));
    let err = complete(&b, job()).unwrap_err().to_string();
    assert!(err.contains("404") && err.contains("The model `qwen` does not exist."), "{err}");
    // An error in the middle of a stream (vLLM sends one as a data event).
    double.set(
        "/v1/completions",
        Reply::stream("text/event-stream", &sse(&[r#"{"error":{"object":"error","message":"engine dead","type":"InternalServerError","param":null,"code":500}}"#], false), Duration::ZERO),
    );
    let err = complete(&b, job()).unwrap_err().to_string();
    assert!(err.contains("engine dead"), "{err}");
}

#[test]
fn ollama_generate_is_raw_with_fixed_options_and_its_errors_are_read() {
    let lines = ndjson(&[
        r#"{"model":"qwen2.5-coder:1.5b-base","created_at":"2026-12-03T08:00:00.1Z","response":"return","done":false}"#,
        r#"{"model":"qwen2.5-coder:1.5b-base","created_at":"2026-12-03T08:00:00.2Z","response":" a + b","done":false}"#,
        r#"{"model":"qwen2.5-coder:1.5b-base","created_at":"2026-12-03T08:00:00.3Z","response":"","done":true,"done_reason":"stop","context":[151659,750],"total_duration":412000000,"load_duration":1200000,"prompt_eval_count":38,"prompt_eval_duration":120000000,"eval_count":3,"eval_duration":80000000}"#,
    ]);
    let double = HttpDouble::start(vec![("/api/generate", Reply::stream("application/x-ndjson", &lines, Duration::from_millis(5)))]);
    let b = backend(BackendKind::Ollama, double.url(), |c| c.model = Some("qwen2.5-coder:1.5b-base".into()));
    let done = complete(&b, job()).unwrap();
    assert_eq!(done.text, "return a + b");
    assert_eq!((done.usage.prompt_tokens, done.usage.reused_tokens, done.usage.generated_tokens), (Some(38), None, Some(3)));
    let mut longer = job();
    longer.parts.prefix.push_str("ret");
    complete(&b, longer).unwrap();
    let requests = double.requests();
    assert_eq!(requests[0].body["raw"], true);
    assert!(requests[0].body["prompt"].as_str().unwrap().ends_with("<|fim_middle|>"));
    assert_eq!(requests[0].body["options"], requests[1].body["options"], "identical options: a change reloads the model");
    assert_eq!(requests[0].body["keep_alive"], "30m");

    double.set("/api/generate", Reply::json(404, r#"{"error":"model \"qwen2.5-coder:1.5b-base\" not found, try pulling it first"}"#));
    let err = complete(&b, job()).unwrap_err().to_string();
    assert!(err.contains("not found, try pulling it first"), "{err}");
    let unnamed = backend(BackendKind::Ollama, double.url(), |_| {});
    assert!(complete(&unnamed, job()).unwrap_err().to_string().contains("backend.model is required"));
}

#[test]
fn chats_stream_over_each_protocol_with_the_prefill_continued() {
    let chat_stream = sse(
        &[
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1764751200,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1764751200,"model":"m","choices":[{"index":0,"delta":{"content":" the loop"},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1764751200,"model":"m","choices":[{"index":0,"delta":{"content":" stops early.\n\nMore"},"logprobs":null,"finish_reason":"stop","stop_reason":null}]}"#,
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1764751200,"model":"m","choices":[],"usage":{"prompt_tokens":120,"total_tokens":126,"completion_tokens":6}}"#,
        ],
        true,
    );
    let ollama_chat = ndjson(&[
        r#"{"model":"m","created_at":"2026-12-03T08:00:00Z","message":{"role":"assistant","content":" the loop"},"done":false}"#,
        r#"{"model":"m","created_at":"2026-12-03T08:00:00Z","message":{"role":"assistant","content":" stops early."},"done":false}"#,
        r#"{"model":"m","created_at":"2026-12-03T08:00:00Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","prompt_eval_count":120,"eval_count":6}"#,
    ]);
    let double = HttpDouble::start(vec![
        ("/v1/chat/completions", Reply::stream("text/event-stream", &chat_stream, Duration::ZERO)),
        ("/api/chat", Reply::stream("application/x-ndjson", &ollama_chat, Duration::ZERO)),
    ]);
    let messages = vec![
        ChatMessage { role: Role::System, content: "You fix code.".into() },
        ChatMessage { role: Role::User, content: "Why does test_sum fail?".into() },
    ];
    let params = GenerateParams { max_tokens: 64, stop: vec!["\n\n".into()], ..Default::default() };
    let cancel = Arc::new(AtomicBool::new(false));
    for kind in [BackendKind::Openai, BackendKind::Ollama] {
        let b = backend(kind, double.url(), |c| c.model = Some("m".into()));
        let reply = b.reply(&messages, "The bug:", &params, &cancel).unwrap();
        assert_eq!(reply, " the loop stops early.", "{kind:?}");
    }
    // llama-server continues a final assistant message and sends it whole, prefill first: the prefill (which here
    // contains a stop string) is not part of the reply.
    let echoed = sse(
        &[
            r#"{"choices":[{"finish_reason":null,"index":0,"delta":{"role":"assistant","content":null}}],"created":1764751200,"id":"chatcmpl-x","model":"m","object":"chat.completion.chunk"}"#,
            r#"{"choices":[{"finish_reason":null,"index":0,"delta":{"content":"The fix:\n```python\n"}}],"created":1764751200,"id":"chatcmpl-x","model":"m","object":"chat.completion.chunk"}"#,
            r#"{"choices":[{"finish_reason":null,"index":0,"delta":{"content":"def f():\n    return 1\n"}}],"created":1764751200,"id":"chatcmpl-x","model":"m","object":"chat.completion.chunk"}"#,
            r#"{"choices":[{"finish_reason":"stop","index":0,"delta":{}}],"created":1764751200,"id":"chatcmpl-x","model":"m","object":"chat.completion.chunk","usage":{"completion_tokens":9,"prompt_tokens":120,"total_tokens":129},"timings":{"cache_n":100,"prompt_n":20,"predicted_n":9}}"#,
        ],
        true,
    );
    let llama = HttpDouble::start(vec![("/v1/chat/completions", Reply::stream("text/event-stream", &echoed, Duration::ZERO))]);
    let code = GenerateParams { max_tokens: 64, stop: vec!["```".into()], ..Default::default() };
    let b = backend(BackendKind::LlamaServer, llama.url(), |_| {});
    assert_eq!(b.reply(&messages, "The fix:\n```python\n", &code, &cancel).unwrap(), "def f():\n    return 1\n");

    let requests = double.requests();
    let vllm = &requests[0].body;
    assert_eq!(vllm["messages"][2], serde_json::json!({"role": "assistant", "content": "The bug:"}));
    assert_eq!((vllm["continue_final_message"].as_bool(), vllm["add_generation_prompt"].as_bool()), (Some(true), Some(false)));
    assert_eq!(requests[1].path, "/api/chat");
    assert_eq!(requests[1].body["messages"][2]["role"], "assistant");
}

#[test]
fn auto_detects_each_server_from_what_it_answers() {
    let ollama = HttpDouble::start(vec![("/api/version", Reply::json(200, r#"{"version":"0.33.0"}"#))]);
    let llama = HttpDouble::start(vec![(
        "/props",
        Reply::json(200, r#"{"default_generation_settings":{"n_ctx":8192},"total_slots":1,"model_path":"m.gguf","chat_template":"","build_info":"b11434"}"#),
    )]);
    let vllm = HttpDouble::start(vec![("/v1/models", Reply::json(200, r#"{"object":"list","data":[{"id":"m","object":"model","owned_by":"vllm"}]}"#))]);
    let nothing = HttpDouble::start(vec![]);
    for (double, kind) in [(&ollama, BackendKind::Ollama), (&llama, BackendKind::LlamaServer), (&vllm, BackendKind::Openai)] {
        let b = backend(BackendKind::Auto, double.url(), |_| {});
        assert_eq!(runtime().block_on(b.kind()).unwrap(), kind);
        assert_eq!(runtime().block_on(b.kind()).unwrap(), kind);
    }
    let err = runtime().block_on(backend(BackendKind::Auto, nothing.url(), |_| {}).kind()).unwrap_err().to_string();
    assert!(err.contains("set backend.kind"), "{err}");
    assert_eq!(ollama.requests().len(), 1, "detected once per backend");
}

#[test]
fn an_absent_server_a_silent_one_and_a_stalling_one_fail_fast_and_clearly() {
    let absent = backend(BackendKind::LlamaServer, format!("http://127.0.0.1:{}", closed_port()), |_| {});
    let err = complete(&absent, job()).unwrap_err();
    assert!(matches!(err, BackendError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains("is the server running?"), "{err}");

    // Accepts, reads the request, never answers: backend.timeoutMs (300 ms here).
    let silent = HttpDouble::start(vec![("/infill", Reply { status: 200, content_type: "text/event-stream".into(), chunks: vec![(Duration::from_secs(20), vec![])], hold: Duration::ZERO })]);
    let b = backend(BackendKind::LlamaServer, silent.url(), |c| c.timeout_ms = 300);
    let started = Instant::now();
    let err = complete(&b, job()).unwrap_err();
    assert!(matches!(err, BackendError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());

    // Headers and one event, then nothing.
    let first = sse(&[r#"{"index":0,"content":"return","tokens":[],"stop":false,"id_slot":0,"tokens_predicted":1,"tokens_evaluated":30}"#], false);
    let stalling = HttpDouble::start(vec![("/infill", Reply::stream("text/event-stream", &first, Duration::ZERO).hold(Duration::from_secs(20)))]);
    let b = backend(BackendKind::LlamaServer, stalling.url(), |c| c.timeout_ms = 300);
    let started = Instant::now();
    let err = complete(&b, job()).unwrap_err();
    assert!(err.to_string().contains("stalled"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn garbage_bodies_are_protocol_errors_not_suggestions() {
    let html = HttpDouble::start(vec![("/v1/completions", Reply::text(200, "text/html", "<!doctype html><html><body>Welcome to nginx!</body></html>\n"))]);
    let b = backend(BackendKind::Openai, html.url(), |c| c.model = Some(VLLM_MODEL.into()));
    let err = complete(&b, job()).unwrap_err();
    assert!(matches!(err, BackendError::Protocol(_)) && err.to_string().contains("nginx"), "{err:?}");

    let cut = HttpDouble::start(vec![("/v1/completions", Reply::text(200, "text/event-stream", "data: {\"choices\":[{\"text\":\"ret\"\n"))]);
    let b = backend(BackendKind::Openai, cut.url(), |c| c.model = Some(VLLM_MODEL.into()));
    assert!(matches!(complete(&b, job()).unwrap_err(), BackendError::Protocol(_)));

    let empty = HttpDouble::start(vec![("/v1/completions", Reply::text(200, "text/event-stream", ""))]);
    let b = backend(BackendKind::Openai, empty.url(), |c| c.model = Some(VLLM_MODEL.into()));
    assert!(complete(&b, job()).unwrap_err().to_string().contains("without any event"));
}

#[test]
fn a_cancellation_drops_the_stream_and_the_server_sees_the_connection_close() {
    let many: Vec<String> = (0..200).map(|i| format!("data: {{\"content\":\"x{i} \",\"stop\":false}}\n\n")).collect();
    let double = HttpDouble::start(vec![("/infill", Reply::stream("text/event-stream", &many, Duration::from_millis(20)))]);
    let b = backend(BackendKind::LlamaServer, double.url(), |_| {});
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancel);
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        flag.store(true, Ordering::Relaxed);
    });
    let mut long = job();
    long.max_tokens = 10_000;
    long.line_before_cursor = String::new();
    let started = Instant::now();
    let err = runtime().block_on(b.complete(long, cancel)).unwrap_err();
    assert_eq!(err, BackendError::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    let deadline = Instant::now() + Duration::from_secs(3);
    while double.broken_off() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(double.broken_off(), 1, "the server saw the client go away");
}

#[test]
fn the_end_of_the_block_ends_the_request() {
    // After the block ends (a line less indented than the cursor's), nothing more is read.
    let mut events = vec![r#"{"content":"return a + b\n","stop":false}"#.to_owned(), r#"{"content":"print(1)\n","stop":false}"#.to_owned()];
    events.extend((0..100).map(|i| format!(r##"{{"content":"# {i}\n","stop":false}}"##)));
    let lines: Vec<String> = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    let double = HttpDouble::start(vec![("/infill", Reply::stream("text/event-stream", &lines, Duration::from_millis(10)))]);
    let b = backend(BackendKind::LlamaServer, double.url(), |_| {});
    let started = Instant::now();
    let done = complete(&b, job()).unwrap();
    assert_eq!(done.text, "return a + b");
    assert!(started.elapsed() < Duration::from_millis(800), "{:?}", started.elapsed());
    let deadline = Instant::now() + Duration::from_secs(3);
    while double.broken_off() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(double.broken_off(), 1);
}

#[test]
fn an_api_key_variable_that_is_unset_fails_before_any_request() {
    let double = HttpDouble::start(vec![]);
    let b = backend(BackendKind::Openai, double.url(), |c| {
        c.model = Some(VLLM_MODEL.into());
        c.api_key_env = Some("PIE_LS_TEST_NO_SUCH_KEY".into());
    });
    let err = complete(&b, job()).unwrap_err().to_string();
    assert!(err.contains("PIE_LS_TEST_NO_SUCH_KEY"), "{err}");
    assert!(double.requests().is_empty());
}
