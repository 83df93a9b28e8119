//! What each server is sent and what its answers mean: request bodies per backend kind, the parsers of their
//! streamed events, the usage figures (reused and evaluated prompt tokens) each one reports, and detection.
//!
//! Shapes (read from the servers' sources; see `docs/backends.md`):
//! - llama-server `/infill`: SSE `data: {content, stop, timings: {cache_n, prompt_n, predicted_n}}`, no
//!   `[DONE]`; `timings_per_token` puts the timings in every event, so the figures are known even when the
//!   stream is dropped at the end of the block.
//! - OpenAI-compatible `/v1/completions`, `/v1/chat/completions`: SSE `data: {choices: [{text | delta}]}`, a
//!   last chunk with `usage` (`stream_options.include_usage`), `data: [DONE]`. Reuse as
//!   `usage.prompt_tokens_details.cached_tokens` where the server reports it (vLLM with
//!   `--enable-prompt-tokens-details`, SGLang with `--enable-cache-report`); llama-server adds `timings`.
//! - Ollama `/api/generate`, `/api/chat`: NDJSON `{response | message.content, done, prompt_eval_count,
//!   eval_count}`; no reuse figure.

use serde::Serialize;
use serde_json::{json, Value};

use super::fim::FimFormat;
use super::http::{BackendError, Http};
use super::{BackendConfig, BackendKind, CompletionJob};
use crate::engine::GenerateParams;
use crate::features::chat::ChatMessage;

/// How a streamed body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Sse,
    Ndjson,
}

/// One request: where, what, and how to read the answer.
pub struct Request {
    pub path: &'static str,
    pub body: Value,
    pub framing: Framing,
    pub parse: fn(&Value) -> Result<Event, BackendError>,
}

/// One streamed event: a piece of text, the figures it carried, whether it is the last.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Event {
    pub piece: String,
    pub usage: Usage,
    pub done: bool,
}

/// Prompt tokens as the server reported them for one request. `None`: the server does not say.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// The whole prompt.
    pub prompt_tokens: Option<u64>,
    /// Taken from the server's cache (llama-server `timings.cache_n`, OpenAI `cached_tokens`).
    pub reused_tokens: Option<u64>,
    /// Run through the model for this request (llama-server `timings.prompt_n`).
    pub evaluated_tokens: Option<u64>,
    pub generated_tokens: Option<u64>,
}

impl Usage {
    /// Takes every figure `newer` has.
    pub fn merge(&mut self, newer: &Usage) {
        let take = |mine: &mut Option<u64>, theirs: Option<u64>| {
            if theirs.is_some() {
                *mine = theirs;
            }
        };
        take(&mut self.prompt_tokens, newer.prompt_tokens);
        take(&mut self.reused_tokens, newer.reused_tokens);
        take(&mut self.evaluated_tokens, newer.evaluated_tokens);
        take(&mut self.generated_tokens, newer.generated_tokens);
    }

    pub fn describe(&self) -> String {
        let n = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "?".into());
        format!("prompt {} tokens ({} reused, {} evaluated), {} generated", n(self.prompt_tokens), n(self.reused_tokens), n(self.evaluated_tokens), n(self.generated_tokens))
    }

    /// llama-server's `timings` object.
    fn of_timings(timings: &Value) -> Usage {
        let get = |k: &str| timings.get(k).and_then(Value::as_i64).map(|v| v.max(0) as u64);
        let (reused, evaluated) = (get("cache_n"), get("prompt_n"));
        Usage {
            prompt_tokens: reused.zip(evaluated).map(|(r, e)| r + e),
            reused_tokens: reused,
            evaluated_tokens: evaluated,
            generated_tokens: get("predicted_n"),
        }
    }

    /// An OpenAI `usage` object (with llama-server's `timings` beside it when present: those win).
    fn of_openai(chunk: &Value) -> Usage {
        let mut usage = Usage::default();
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            let prompt = u.get("prompt_tokens").and_then(Value::as_u64);
            let cached = u.pointer("/prompt_tokens_details/cached_tokens").and_then(Value::as_u64);
            usage = Usage {
                prompt_tokens: prompt,
                reused_tokens: cached,
                evaluated_tokens: prompt.zip(cached).map(|(p, c)| p.saturating_sub(c)),
                generated_tokens: u.get("completion_tokens").and_then(Value::as_u64),
            };
        }
        if let Some(timings) = chunk.get("timings").filter(|t| t.is_object()) {
            usage.merge(&Usage::of_timings(timings));
        }
        usage
    }
}

fn text_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

fn parse_llama_infill(v: &Value) -> Result<Event, BackendError> {
    if !v.is_object() {
        return Err(BackendError::Protocol(format!("an event is not an object: {v}")));
    }
    let usage = v.get("timings").map(Usage::of_timings).unwrap_or_default();
    Ok(Event { piece: text_at(v, "/content").to_owned(), usage, done: v.get("stop").and_then(Value::as_bool).unwrap_or(false) })
}

fn parse_openai_completion(v: &Value) -> Result<Event, BackendError> {
    if v.get("choices").is_none() && v.get("usage").is_none() {
        return Err(BackendError::Protocol(format!("a completion chunk without choices: {}", super::http::excerpt(v.to_string().as_bytes()))));
    }
    Ok(Event { piece: text_at(v, "/choices/0/text").to_owned(), usage: Usage::of_openai(v), done: false })
}

fn parse_openai_chat(v: &Value) -> Result<Event, BackendError> {
    if v.get("choices").is_none() && v.get("usage").is_none() {
        return Err(BackendError::Protocol(format!("a chat chunk without choices: {}", super::http::excerpt(v.to_string().as_bytes()))));
    }
    Ok(Event { piece: text_at(v, "/choices/0/delta/content").to_owned(), usage: Usage::of_openai(v), done: false })
}

fn ollama_usage(v: &Value) -> Usage {
    // `prompt_eval_count` is the whole prompt whatever Ollama reused, so it is reported as the prompt only.
    Usage { prompt_tokens: v.get("prompt_eval_count").and_then(Value::as_u64), reused_tokens: None, evaluated_tokens: None, generated_tokens: v.get("eval_count").and_then(Value::as_u64) }
}

fn parse_ollama_generate(v: &Value) -> Result<Event, BackendError> {
    let Some(done) = v.get("done").and_then(Value::as_bool) else {
        return Err(BackendError::Protocol(format!("an Ollama line without `done`: {}", super::http::excerpt(v.to_string().as_bytes()))));
    };
    Ok(Event { piece: text_at(v, "/response").to_owned(), usage: ollama_usage(v), done })
}

fn parse_ollama_chat(v: &Value) -> Result<Event, BackendError> {
    let Some(done) = v.get("done").and_then(Value::as_bool) else {
        return Err(BackendError::Protocol(format!("an Ollama line without `done`: {}", super::http::excerpt(v.to_string().as_bytes()))));
    };
    Ok(Event { piece: text_at(v, "/message/content").to_owned(), usage: ollama_usage(v), done })
}

/// How long Ollama keeps the model loaded after a request (its default, 5 minutes, drops the cache in a pause).
const OLLAMA_KEEP_ALIVE: &str = "30m";

/// The completion request for `kind`. The time budget goes to llama-server as `t_max_predict_ms` too.
pub fn completion_request(kind: BackendKind, config: &BackendConfig, model: Option<&str>, job: &CompletionJob) -> Result<Request, BackendError> {
    let remaining_ms = job.budget.saturating_sub(job.started.elapsed()).as_millis() as u64;
    let parts = &job.parts;
    match kind {
        BackendKind::LlamaServer => {
            // Text fields only: llama-server tokenizes `input_prefix`, `input_suffix` and `input_extra` without
            // parsing special tokens, but `prompt` with them, so the cursor's line stays in the prefix (same
            // tokens in the same order as llama.vim's `prompt`, without the special-token hazard).
            let extra: Vec<Value> = parts.extra.iter().map(|(name, text)| json!({"filename": name, "text": text})).collect();
            let mut body = json!({
                "input_extra": extra,
                "input_prefix": parts.prefix,
                "input_suffix": parts.suffix,
                "prompt": "",
                "n_predict": job.max_tokens,
                "temperature": 0.0,
                "cache_prompt": true,
                "n_cache_reuse": 64,
                "t_max_predict_ms": remaining_ms.max(1),
                "stream": true,
                "timings_per_token": true,
            });
            if !job.multiline {
                body["stop"] = json!(["\n"]);
            }
            Ok(Request { path: "/infill", body, framing: Framing::Sse, parse: parse_llama_infill })
        }
        BackendKind::Openai => {
            let format = FimFormat::find(config.fim.as_deref(), model).map_err(BackendError::NoFim)?;
            let mut body = json!({
                "prompt": format.render(parts),
                "max_tokens": job.max_tokens,
                "temperature": 0.0,
                "stream": true,
                "stream_options": {"include_usage": true},
                "stop": format.stop_strings(),
            });
            if let Some(model) = model {
                body["model"] = json!(model);
            }
            Ok(Request { path: "/v1/completions", body, framing: Framing::Sse, parse: parse_openai_completion })
        }
        BackendKind::Ollama => {
            let format = FimFormat::find(config.fim.as_deref(), model).map_err(BackendError::NoFim)?;
            // The same options on every request: a change of runner options reloads the model and drops its cache.
            let body = json!({
                "model": model,
                "prompt": format.render(parts),
                "raw": true,
                "stream": true,
                "keep_alive": OLLAMA_KEEP_ALIVE,
                "options": {"temperature": 0.0, "num_predict": job.max_tokens, "stop": format.stop_strings()},
            });
            Ok(Request { path: "/api/generate", body, framing: Framing::Ndjson, parse: parse_ollama_generate })
        }
        BackendKind::Local | BackendKind::Auto => Err(BackendError::Config(format!("no HTTP completion for backend kind {}", kind.name()))),
    }
}

/// The chat request for `kind`: the messages, and `prefill` as the start of the assistant's turn (continued by
/// llama-server and Ollama on their own; `continue_final_message` for vLLM and SGLang).
pub fn chat_request(kind: BackendKind, model: Option<&str>, messages: &[ChatMessage], prefill: &str, params: &GenerateParams) -> Request {
    let mut turns: Vec<Value> = messages.iter().map(|m| json!({"role": m.role.as_str(), "content": m.content})).collect();
    if !prefill.is_empty() {
        turns.push(json!({"role": "assistant", "content": prefill}));
    }
    let s = &params.sampling;
    let stop: Vec<&String> = params.stop.iter().filter(|s| !s.is_empty()).collect();
    if kind == BackendKind::Ollama {
        let body = json!({
            "model": model,
            "messages": turns,
            "stream": true,
            "keep_alive": OLLAMA_KEEP_ALIVE,
            "options": {"temperature": s.temperature, "top_k": s.top_k, "top_p": s.top_p, "seed": s.seed, "num_predict": params.max_tokens, "stop": stop},
        });
        return Request { path: "/api/chat", body, framing: Framing::Ndjson, parse: parse_ollama_chat };
    }
    let mut body = json!({
        "messages": turns,
        "max_tokens": params.max_tokens,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "seed": s.seed,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if !stop.is_empty() {
        body["stop"] = json!(stop);
    }
    if let Some(model) = model {
        body["model"] = json!(model);
    }
    if kind == BackendKind::LlamaServer {
        body["top_k"] = json!(s.top_k);
        body["cache_prompt"] = json!(true);
    } else if !prefill.is_empty() {
        body["continue_final_message"] = json!(true);
        body["add_generation_prompt"] = json!(false);
    }
    Request { path: "/v1/chat/completions", body, framing: Framing::Sse, parse: parse_openai_chat }
}

/// What kind of server answers at the URL: `/api/version` (Ollama), `/props` with `total_slots`
/// (llama-server), `/v1/models` (OpenAI-compatible).
pub async fn detect(http: &Http<'_>) -> Result<BackendKind, BackendError> {
    match http.get_json("/api/version").await {
        Ok(v) if v.get("version").is_some() => return Ok(BackendKind::Ollama),
        Err(err @ (BackendError::Unreachable { .. } | BackendError::Timeout { .. } | BackendError::Config(_))) => return Err(err),
        _ => {}
    }
    if let Ok(props) = http.get_json("/props").await {
        if props.get("total_slots").is_some() {
            return Ok(BackendKind::LlamaServer);
        }
    }
    match http.get_json("/v1/models").await {
        Ok(models) if models.get("data").is_some_and(Value::is_array) => Ok(BackendKind::Openai),
        Ok(_) | Err(BackendError::Protocol(_) | BackendError::Status { .. }) => Err(BackendError::Config(format!(
            "backend.kind is auto, and {} answers like none of Ollama (/api/version), llama-server (/props) or an OpenAI-compatible server (/v1/models); set backend.kind",
            http.base
        ))),
        Err(err) => Err(err),
    }
}

/// The first model an OpenAI-compatible server serves.
pub async fn first_model(http: &Http<'_>) -> Result<String, BackendError> {
    let models = http.get_json("/v1/models").await?;
    models
        .pointer("/data/0/id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| BackendError::Config(format!("{} lists no model at /v1/models; set backend.model", http.base)))
}

/// What the server says about itself.
pub async fn probe(http: &Http<'_>, kind: BackendKind) -> Result<Value, BackendError> {
    let path = match kind {
        BackendKind::LlamaServer => "/props",
        BackendKind::Ollama => "/api/version",
        _ => "/v1/models",
    };
    Ok(json!({"kind": kind.name(), "url": http.base, "info": http.get_json(path).await?}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::FimParts;

    fn job() -> CompletionJob {
        CompletionJob {
            parts: FimParts { extra: vec![("u.py".into(), "x = 1\n".into())], file_name: "m.py".into(), prefix: "def f():\n    ".into(), suffix: "\n".into() },
            line_before_cursor: "    ".into(),
            after_cursor: String::new(),
            max_tokens: 32,
            multiline: true,
            started: std::time::Instant::now(),
            budget: std::time::Duration::from_secs(2),
            routing_key: "k".into(),
        }
    }

    #[test]
    fn llama_server_gets_text_fields_and_the_cache_options() {
        let r = completion_request(BackendKind::LlamaServer, &BackendConfig::default(), None, &job()).unwrap();
        assert_eq!(r.path, "/infill");
        assert_eq!(r.body["input_prefix"], "def f():\n    ");
        assert_eq!(r.body["prompt"], "", "`prompt` is tokenized with special tokens: nothing of the user's goes there");
        assert_eq!(r.body["input_extra"], json!([{"filename": "u.py", "text": "x = 1\n"}]));
        assert_eq!((r.body["cache_prompt"].as_bool(), r.body["n_cache_reuse"].as_u64(), r.body["timings_per_token"].as_bool()), (Some(true), Some(64), Some(true)));
        assert!(r.body["t_max_predict_ms"].as_u64().unwrap() <= 2000);
    }

    #[test]
    fn openai_and_ollama_get_a_rendered_prompt_and_fixed_options() {
        let config = BackendConfig { kind: BackendKind::Openai, ..Default::default() };
        let r = completion_request(BackendKind::Openai, &config, Some("Qwen/Qwen2.5-Coder-7B"), &job()).unwrap();
        assert_eq!(r.path, "/v1/completions");
        assert!(r.body["prompt"].as_str().unwrap().starts_with("<|file_sep|>u.py\n"));
        assert!(r.body.get("suffix").is_none(), "servers reject or ignore `suffix`");
        assert_eq!(r.body["model"], "Qwen/Qwen2.5-Coder-7B");
        let o1 = completion_request(BackendKind::Ollama, &config, Some("qwen2.5-coder:1.5b-base"), &job()).unwrap();
        let mut later = job();
        later.parts.prefix.push_str("return");
        let o2 = completion_request(BackendKind::Ollama, &config, Some("qwen2.5-coder:1.5b-base"), &later).unwrap();
        assert_eq!((o1.path, o1.body["raw"].as_bool()), ("/api/generate", Some(true)));
        assert_eq!(o1.body["options"], o2.body["options"], "changing options reloads Ollama's model");
        assert_eq!(o1.body["keep_alive"], OLLAMA_KEEP_ALIVE);
        let no_fim = completion_request(BackendKind::Openai, &config, Some("gpt-4o"), &job()).err().unwrap();
        assert!(matches!(no_fim, BackendError::NoFim(_)), "{no_fim}");
    }

    #[test]
    fn usage_figures_are_read_from_each_shape() {
        let llama = parse_llama_infill(&json!({"content": "x", "stop": false, "timings": {"cache_n": 90, "prompt_n": 10, "predicted_n": 1}})).unwrap();
        assert_eq!(llama.usage, Usage { prompt_tokens: Some(100), reused_tokens: Some(90), evaluated_tokens: Some(10), generated_tokens: Some(1) });
        let vllm = parse_openai_completion(&json!({"choices": [], "usage": {"prompt_tokens": 100, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 96}}})).unwrap();
        assert_eq!(vllm.usage, Usage { prompt_tokens: Some(100), reused_tokens: Some(96), evaluated_tokens: Some(4), generated_tokens: Some(5) });
        let no_details = parse_openai_completion(&json!({"choices": [], "usage": {"prompt_tokens": 100, "completion_tokens": 5}})).unwrap();
        assert_eq!((no_details.usage.reused_tokens, no_details.usage.evaluated_tokens), (None, None));
        let ollama = parse_ollama_generate(&json!({"response": "", "done": true, "prompt_eval_count": 80, "eval_count": 7})).unwrap();
        assert_eq!((ollama.usage.prompt_tokens, ollama.usage.reused_tokens, ollama.done), (Some(80), None, true));
        assert!(parse_ollama_generate(&json!({"response": "x"})).is_err());
        assert!(parse_openai_chat(&json!({"id": 1})).is_err());
    }

    #[test]
    fn chat_prefill_is_an_assistant_turn_continued() {
        let messages = vec![ChatMessage { role: crate::features::chat::Role::User, content: "fix it".into() }];
        let params = GenerateParams { max_tokens: 10, stop: vec!["```".into()], ..Default::default() };
        let llama = chat_request(BackendKind::LlamaServer, None, &messages, "The bug:", &params);
        assert_eq!(llama.body["messages"][1], json!({"role": "assistant", "content": "The bug:"}));
        assert!(llama.body.get("continue_final_message").is_none(), "llama-server continues a trailing assistant turn itself");
        let vllm = chat_request(BackendKind::Openai, Some("m"), &messages, "The bug:", &params);
        assert_eq!((vllm.body["continue_final_message"].as_bool(), vllm.body["add_generation_prompt"].as_bool()), (Some(true), Some(false)));
        let ollama = chat_request(BackendKind::Ollama, Some("m"), &messages, "", &params);
        assert_eq!((ollama.path, ollama.body["messages"].as_array().unwrap().len()), ("/api/chat", 1));
    }
}
