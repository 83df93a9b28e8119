//! The HTTP side: requests with the API key and routing header, timeouts, streamed bodies split into events
//! (SSE or NDJSON), and every way a server can fail turned into a `BackendError` that says what happened.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;

use super::protocol::{Event, Framing, Request, Usage};
use super::BackendConfig;

/// Why a backend request failed. The messages are shown to the user as they are.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendError {
    /// A setting is wrong (URL, API key variable, routing header name, no FIM format for the model).
    Config(String),
    /// Nothing answered at the URL.
    Unreachable { url: String, detail: String },
    /// No answer, or a pause in a streamed answer, longer than the limit.
    Timeout { url: String, what: String },
    /// The server answered with an error status; `message` is the server's own message.
    Status { url: String, status: u16, message: String },
    /// The model cannot fill in the middle.
    NoFim(String),
    /// The server answered something that is not what its protocol says (HTML, cut JSON, ...).
    Protocol(String),
    Cancelled,
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendError::Config(m) => write!(f, "{m}"),
            BackendError::Unreachable { url, detail } => write!(f, "cannot reach {url} ({detail}); is the server running?"),
            BackendError::Timeout { url, what } => write!(f, "{url}: {what}"),
            BackendError::Status { url, status, message } => write!(f, "{url} answered {status}: {message}"),
            BackendError::NoFim(m) => write!(f, "the model cannot fill in the middle: {m}"),
            BackendError::Protocol(m) => write!(f, "unexpected answer: {m}"),
            BackendError::Cancelled => write!(f, "cancelled"),
        }
    }
}

impl std::error::Error for BackendError {}

/// Longest error body read, and longest line of a streamed body.
const MAX_ERROR_BODY: usize = 64 << 10;
const MAX_LINE: usize = 4 << 20;

pub struct Http<'a> {
    pub client: &'a reqwest::Client,
    pub config: &'a BackendConfig,
    pub base: String,
}

impl Http<'_> {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn request(&self, method: reqwest::Method, path: &str, routing_key: &str) -> Result<reqwest::RequestBuilder, BackendError> {
        let mut builder = self.client.request(method, self.url(path));
        if let Some(key) = self.config.api_key()? {
            builder = builder.bearer_auth(key);
        }
        if let Some(name) = self.config.routing_header.as_deref().map(str::trim).filter(|h| !h.is_empty()) {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| BackendError::Config(format!("backend.routingHeader {name:?} is not a valid header name")))?;
            builder = builder.header(name, routing_key);
        }
        Ok(builder)
    }

    fn send_error(&self, path: &str, err: reqwest::Error) -> BackendError {
        let url = self.url(path);
        if err.is_timeout() {
            return BackendError::Timeout { url, what: format!("no answer within backend.timeoutMs ({} ms)", self.config.timeout().as_millis()) };
        }
        if err.is_connect() {
            return BackendError::Unreachable { url, detail: root_cause(&err) };
        }
        BackendError::Unreachable { url, detail: root_cause(&err) }
    }

    /// Sends and waits for the response headers; an error status becomes `Status` with the server's message.
    async fn send(&self, builder: reqwest::RequestBuilder, path: &str) -> Result<reqwest::Response, BackendError> {
        let timeout = self.config.timeout();
        let retry = builder.try_clone();
        let mut sent = tokio::time::timeout(timeout, builder.send()).await;
        // A pooled connection the server closed while idle fails before the server saw the request: once more on
        // a fresh connection (not after a refused connection or a timeout).
        if let (Ok(Err(err)), Some(retry)) = (&sent, retry) {
            if !err.is_connect() && !err.is_timeout() && !err.is_status() {
                tracing::debug!("retrying {} once on a fresh connection: {}", self.url(path), root_cause(err));
                sent = tokio::time::timeout(timeout, retry.send()).await;
            }
        }
        let response = match sent {
            Err(_) => {
                return Err(BackendError::Timeout { url: self.url(path), what: format!("no answer within backend.timeoutMs ({} ms)", timeout.as_millis()) })
            }
            Ok(Err(err)) => return Err(self.send_error(path, err)),
            Ok(Ok(response)) => response,
        };
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let body = tokio::time::timeout(timeout, read_limited(response, MAX_ERROR_BODY)).await.unwrap_or_default();
        Err(BackendError::Status { url: self.url(path), status, message: error_message(&body) })
    }

    /// `GET path` as JSON (probes: `/props`, `/v1/models`, `/api/version`).
    pub async fn get_json(&self, path: &str) -> Result<Value, BackendError> {
        let response = self.send(self.request(reqwest::Method::GET, path, "")?, path).await?;
        let body = tokio::time::timeout(self.config.timeout(), read_limited(response, MAX_LINE))
            .await
            .map_err(|_| BackendError::Timeout { url: self.url(path), what: "the body did not arrive within backend.timeoutMs".into() })?;
        serde_json::from_slice(&body).map_err(|_| BackendError::Protocol(format!("{} is not JSON: {}", self.url(path), excerpt(&body))))
    }

    /// Posts `request` and reads its streamed answer, handing each text piece to `on_piece` until it returns
    /// false, the server says it is done, `cancel` is raised (`Cancelled`) or `deadline` passes (`Timeout` when
    /// nothing came yet, else the pieces so far). Dropping the body closes the connection, which servers take as
    /// the end of the request. Returns the last usage figures the server sent.
    pub async fn stream(
        &self,
        request: Request,
        routing_key: &str,
        deadline: Instant,
        cancel: &AtomicBool,
        on_piece: &mut (dyn FnMut(&str) -> bool + Send),
    ) -> Result<Usage, BackendError> {
        let path = request.path;
        let builder = self.request(reqwest::Method::POST, path, routing_key)?.json(&request.body);
        let url = self.url(path);
        let budget_spent = || BackendError::Timeout { url: url.clone(), what: "no suggestion within completion.timeBudgetMs".into() };
        let response = tokio::select! {
            r = self.send(builder, path) => r?,
            _ = until_raised(cancel) => return Err(BackendError::Cancelled),
            _ = tokio::time::sleep_until(deadline.into()) => return Err(budget_spent()),
        };
        let idle = self.config.timeout();
        let mut body = response.bytes_stream();
        let mut buffer: Vec<u8> = Vec::new();
        let mut usage = Usage::default();
        let mut events = 0usize;
        let mut pieces = 0usize;
        loop {
            // Complete lines first.
            while let Some(newline) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=newline).collect();
                match handle_line(&url, &line, request.framing, request.parse, &mut usage)? {
                    LineOutcome::Skip => {}
                    LineOutcome::Done => return Ok(usage),
                    LineOutcome::Event(event) => {
                        events += 1;
                        let go_on = event.piece.is_empty() || {
                            pieces += 1;
                            on_piece(&event.piece)
                        };
                        if event.done || !go_on {
                            return Ok(usage);
                        }
                    }
                }
            }
            if buffer.len() > MAX_LINE {
                return Err(BackendError::Protocol(format!("{url} sent a line longer than {} MiB", MAX_LINE >> 20)));
            }
            let next = tokio::select! {
                next = tokio::time::timeout(idle, body.next()) => next,
                _ = until_raised(cancel) => return Err(BackendError::Cancelled),
                _ = tokio::time::sleep_until(deadline.into()) => {
                    return if pieces > 0 { Ok(usage) } else { Err(budget_spent()) };
                }
            };
            match next {
                Err(_) => return Err(BackendError::Timeout { url, what: format!("the answer stalled for backend.timeoutMs ({} ms)", idle.as_millis()) }),
                Ok(Some(Ok(bytes))) => buffer.extend_from_slice(&bytes),
                Ok(Some(Err(err))) => return Err(BackendError::Protocol(format!("{url}: the answer broke off ({})", root_cause(&err)))),
                Ok(None) => {
                    // The end of the body: a last line without a newline, then done.
                    if !buffer.is_empty() {
                        buffer.push(b'\n');
                        continue;
                    }
                    if events == 0 {
                        return Err(BackendError::Protocol(format!("{url} ended its answer without any event")));
                    }
                    return Ok(usage);
                }
            }
        }
    }
}

enum LineOutcome {
    Skip,
    Done,
    Event(Event),
}

fn handle_line(url: &str, line: &[u8], framing: Framing, parse: fn(&Value) -> Result<Event, BackendError>, usage: &mut Usage) -> Result<LineOutcome, BackendError> {
    let line = std::str::from_utf8(line).map_err(|_| BackendError::Protocol("a streamed line is not UTF-8".into()))?;
    let line = line.trim_end_matches(['\n', '\r']);
    let payload = match framing {
        Framing::Sse => {
            if line.is_empty() || line.starts_with(':') || line.starts_with("event:") || line.starts_with("id:") || line.starts_with("retry:") {
                return Ok(LineOutcome::Skip);
            }
            if let Some(error) = line.strip_prefix("error:") {
                return Err(BackendError::Status { url: url.to_owned(), status: 500, message: error_message(error.trim().as_bytes()) });
            }
            let Some(data) = line.strip_prefix("data:") else {
                return Err(BackendError::Protocol(format!("not a server-sent event: {}", excerpt(line.as_bytes()))));
            };
            let data = data.strip_prefix(' ').unwrap_or(data);
            if data.trim() == "[DONE]" {
                return Ok(LineOutcome::Done);
            }
            data
        }
        Framing::Ndjson => {
            if line.trim().is_empty() {
                return Ok(LineOutcome::Skip);
            }
            line
        }
    };
    let value: Value = serde_json::from_str(payload).map_err(|_| BackendError::Protocol(format!("not JSON: {}", excerpt(payload.as_bytes()))))?;
    if let Some(error) = value.get("error").filter(|e| !e.is_null()) {
        let status = error.get("code").and_then(Value::as_u64).filter(|c| (400..600).contains(c)).unwrap_or(500) as u16;
        return Err(BackendError::Status { url: url.to_owned(), status, message: error_message(payload.as_bytes()) });
    }
    let event = parse(&value)?;
    usage.merge(&event.usage);
    Ok(LineOutcome::Event(event))
}

/// The server's own message from an error body: `{"error": {"message"}}` (OpenAI, llama-server, vLLM),
/// `{"error": "..."}` (Ollama), `{"message"}` (vLLM/SGLang `object: error`), `{"detail"}` (FastAPI), else the
/// text itself, shortened.
pub fn error_message(body: &[u8]) -> String {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        let text = excerpt(body);
        return if text.is_empty() { "(no message)".into() } else { text };
    };
    let from = |v: &Value| -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Object(_) => v.get("message").and_then(Value::as_str).map(str::to_owned),
            Value::Array(items) => items.first().and_then(|i| i.get("msg").or(i.get("message"))).and_then(Value::as_str).map(str::to_owned),
            _ => None,
        }
    };
    value
        .get("error")
        .and_then(from)
        .or_else(|| value.get("message").and_then(from))
        .or_else(|| value.get("detail").and_then(from))
        .unwrap_or_else(|| excerpt(body))
}

/// The first 300 characters of a body, on one line.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.char_indices().nth(300) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

async fn read_limited(response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut body = response.bytes_stream();
    while let Some(Ok(chunk)) = body.next().await {
        out.extend_from_slice(&chunk);
        if out.len() > limit {
            out.truncate(limit);
            break;
        }
    }
    out
}

async fn until_raised(flag: &AtomicBool) {
    while !super::raised(flag) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The innermost cause of an error ("Connection refused (os error 111)"), which is what a user can act on.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &(dyn std::error::Error + 'static) = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_messages_are_found_in_each_error_shape() {
        assert_eq!(error_message(br#"{"error":{"code":501,"message":"Infill is not supported by this model","type":"not_supported_error"}}"#), "Infill is not supported by this model");
        assert_eq!(error_message(br#"{"error":"model 'qwen' not found"}"#), "model 'qwen' not found");
        assert_eq!(error_message(br#"{"object":"error","message":"The model `x` does not exist.","type":"NotFoundError","param":null,"code":404}"#), "The model `x` does not exist.");
        assert_eq!(error_message(br#"{"detail":[{"loc":["body","prompt"],"msg":"field required"}]}"#), "field required");
        assert_eq!(error_message(b"<html><body>502 Bad Gateway</body></html>"), "<html><body>502 Bad Gateway</body></html>");
        assert_eq!(error_message(b""), "(no message)");
        assert!(excerpt(&vec![b'x'; 1000]).ends_with('…'));
    }
}
