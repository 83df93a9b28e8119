//! Inference over HTTP: the backends that run the model in another process (llama.cpp's `llama-server`, an
//! OpenAI-compatible server such as vLLM or SGLang, Ollama), beside the in-process engine (`backend.kind =
//! "local"`, the warm thread in `warm/`).
//!
//! The features call two things: a fill-in-the-middle completion (`HttpBackend::complete`, streamed and cut at
//! the end of the block like the local path) and a chat turn (`HttpBackend` implements `ChatModel`). Everything
//! here runs on one small tokio runtime of its own (`runtime()`), so the LSP server's runtime never waits on a
//! socket; the LSP handlers await a `JoinHandle` of it, the blocking action threads block on one.
//!
//! No server can rotate cached keys through its API, and none reuses anything after the first changed token, so
//! the prompt keeps its stable parts first: other files' code, then the file from a start line rounded to 64
//! lines, then the text up to the cursor and after it (see `FimParts`). What the server reports it reused and
//! evaluated is returned with every completion (`Usage`).

pub mod fim;
mod http;
mod protocol;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use http::BackendError;
pub use protocol::Usage;

use crate::engine::GenerateParams;
use crate::features::chat::{ChatMessage, ChatModel};
use crate::features::completion::{finish_suggestion, BlockStop};

/// Which server runs the model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// In-process llama.cpp with PIE (the warm thread).
    #[default]
    Local,
    /// llama.cpp's `llama-server`: `/infill` for completions, `/v1/chat/completions` for actions.
    LlamaServer,
    /// An OpenAI-compatible server (vLLM, SGLang, llama-server's `/v1`, ...): `/v1/completions` with the FIM
    /// prompt rendered here, `/v1/chat/completions`.
    Openai,
    /// Ollama: `/api/generate` with `raw: true`, `/api/chat`.
    Ollama,
    /// Asks the URL what it is (`/api/version`: Ollama; `/props` with `total_slots`: llama-server; `/v1/models`:
    /// OpenAI-compatible), once per URL.
    Auto,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Local => "local",
            BackendKind::LlamaServer => "llama-server",
            BackendKind::Openai => "openai",
            BackendKind::Ollama => "ollama",
            BackendKind::Auto => "auto",
        }
    }

    fn default_url(self) -> &'static str {
        match self {
            BackendKind::Openai => "http://127.0.0.1:8000",
            BackendKind::Ollama => "http://127.0.0.1:11434",
            _ => "http://127.0.0.1:8080",
        }
    }
}

/// `backend.*`: where the model runs, for completions and actions unless `completion.backend` /
/// `actions.backend` override it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BackendConfig {
    pub kind: BackendKind,
    /// The server's base URL (`http://host:port`; a trailing `/v1` is accepted). Unset: the kind's usual local
    /// port (llama-server 8080, OpenAI-compatible 8000, Ollama 11434).
    pub url: Option<String>,
    /// The model name the server knows (required by Ollama; OpenAI-compatible servers: the first of
    /// `/v1/models` when unset).
    pub model: Option<String>,
    /// The name of the environment variable holding the API key, sent as `Authorization: Bearer`. The key itself
    /// is never a setting and never logged.
    pub api_key_env: Option<String>,
    /// Connecting, waiting for the response headers, and any pause in a streamed response longer than this fail
    /// the request.
    pub timeout_ms: u64,
    /// A header carrying a stable per-document key (a hash of the document URI), so that a router (SGLang's
    /// `X-SMG-Routing-Key`, vLLM production stack's session header) keeps a document on one replica. Unset: none.
    pub routing_header: Option<String>,
    /// The model's fill-in-the-middle format where the prompt is rendered here (`openai`, `ollama`): `qwen`,
    /// `starcoder`, `deepseek`, `codellama`, `codestral`. Unset: guessed from the model name.
    pub fim: Option<String>,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            kind: BackendKind::Local,
            url: None,
            model: None,
            api_key_env: None,
            timeout_ms: 10_000,
            routing_header: None,
            fim: None,
        }
    }
}

/// `completion.backend` / `actions.backend`: the same settings as `backend`, each one unset taking the value of
/// `backend`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BackendOverride {
    pub kind: Option<BackendKind>,
    pub url: Option<String>,
    pub model: Option<String>,
    pub api_key_env: Option<String>,
    pub timeout_ms: Option<u64>,
    pub routing_header: Option<String>,
    pub fim: Option<String>,
}

impl BackendConfig {
    /// These settings with `over`'s set fields applied. A different kind does not inherit the URL or model of
    /// another kind (a local llama-server's URL means nothing to Ollama).
    pub fn with_override(&self, over: Option<&BackendOverride>) -> BackendConfig {
        let Some(over) = over else { return self.clone() };
        let kind_changed = over.kind.is_some_and(|k| k != self.kind);
        let inherit = |mine: &Option<String>| if kind_changed { None } else { mine.clone() };
        BackendConfig {
            kind: over.kind.unwrap_or(self.kind),
            url: over.url.clone().or_else(|| inherit(&self.url)),
            model: over.model.clone().or_else(|| inherit(&self.model)),
            api_key_env: over.api_key_env.clone().or_else(|| self.api_key_env.clone()),
            timeout_ms: over.timeout_ms.unwrap_or(self.timeout_ms),
            routing_header: over.routing_header.clone().or_else(|| self.routing_header.clone()),
            fim: over.fim.clone().or_else(|| inherit(&self.fim)),
        }
    }

    pub fn is_local(&self) -> bool {
        self.kind == BackendKind::Local
    }

    /// The base URL without a trailing `/` or `/v1`.
    pub fn base_url(&self) -> String {
        let url = self.url.as_deref().map(str::trim).filter(|u| !u.is_empty()).unwrap_or(self.kind.default_url());
        let url = url.trim_end_matches('/');
        url.strip_suffix("/v1").unwrap_or(url).to_owned()
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.clamp(100, 600_000))
    }

    /// The API key from the environment variable the settings name; an error when it names one that is unset.
    /// The error names the variable, never a value.
    fn api_key(&self) -> Result<Option<String>, BackendError> {
        let Some(var) = self.api_key_env.as_deref().map(str::trim).filter(|v| !v.is_empty()) else { return Ok(None) };
        match std::env::var(var) {
            Ok(key) if !key.trim().is_empty() => Ok(Some(key.trim().to_owned())),
            _ => Err(BackendError::Config(format!(
                "backend.apiKeyEnv names the environment variable {var}, which is not set in the server's environment"
            ))),
        }
    }
}

/// The runtime every HTTP request runs on: one worker thread, started on first use. The LSP runtime awaits its
/// tasks' handles; blocking callers block on them.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pie-http")
            .enable_all()
            .build()
            .expect("starting the HTTP runtime")
    })
}

/// A stable routing key for a document: a short hash of its URI (the URI itself is not sent).
pub fn routing_key(uri: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(uri.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// One completion's prompt in its parts, stable first: `extra` (other files' code, `(file name, text)`, changed
/// only by edits in those files), then `prefix` (the file from a start line rounded to 64 lines, up to the
/// cursor), then `suffix` (after the cursor, to an end line rounded the same way).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FimParts {
    pub extra: Vec<(String, String)>,
    pub file_name: String,
    pub prefix: String,
    pub suffix: String,
}

/// One completion request to a backend.
#[derive(Clone, Debug)]
pub struct CompletionJob {
    pub parts: FimParts,
    /// The cursor's line up to the cursor, and the text after the cursor (`text_after_cursor`: the rest of its
    /// line and the lines below), for the end of the block and the post-processing.
    pub line_before_cursor: String,
    pub after_cursor: String,
    pub max_tokens: usize,
    pub multiline: bool,
    /// When the request arrived, and how long the whole suggestion may take from then.
    pub started: Instant,
    pub budget: Duration,
    pub routing_key: String,
}

/// What a completion produced and what the server says it cost.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Completed {
    pub text: String,
    pub usage: Usage,
    pub first_token_ms: Option<f64>,
    pub pieces: usize,
    pub latency_ms: f64,
}

/// Raises a flag and aborts a task when dropped: an LSP handler dropped by `$/cancelRequest` stops its request
/// (the connection is closed, which makes the server stop generating).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A backend at one URL with one configuration. Cheap to clone; the connection pool is shared.
#[derive(Clone)]
pub struct HttpBackend {
    inner: Arc<Inner>,
}

struct Inner {
    config: BackendConfig,
    client: reqwest::Client,
    /// What `auto` found, and the model name a server reported, once.
    detected: Mutex<Option<BackendKind>>,
    served_model: Mutex<Option<String>>,
}

impl HttpBackend {
    pub fn new(config: BackendConfig) -> Result<HttpBackend, BackendError> {
        if config.is_local() {
            return Err(BackendError::Config("backend.kind is \"local\": no HTTP backend".into()));
        }
        let base = config.base_url();
        let parsed = reqwest::Url::parse(&base).map_err(|e| BackendError::Config(format!("backend.url {base:?} is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(BackendError::Config(format!("backend.url {base:?} must be http:// or https://")));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(config.timeout().min(Duration::from_secs(10)))
            // llama-server (cpp-httplib) closes an idle keep-alive connection after 5 s.
            .pool_idle_timeout(Duration::from_secs(4))
            .build()
            .map_err(|e| BackendError::Config(format!("could not make an HTTP client: {e}")))?;
        Ok(HttpBackend { inner: Arc::new(Inner { config, client, detected: Mutex::new(None), served_model: Mutex::new(None) }) })
    }

    pub fn config(&self) -> &BackendConfig {
        &self.inner.config
    }

    /// "llama-server at http://127.0.0.1:8080", for messages.
    pub fn describe(&self) -> String {
        format!("{} backend at {}", self.inner.config.kind.name(), self.inner.config.base_url())
    }

    fn http(&self) -> http::Http<'_> {
        http::Http { client: &self.inner.client, config: &self.inner.config, base: self.inner.config.base_url() }
    }

    /// The kind of server, asking it when the settings say `auto`.
    pub async fn kind(&self) -> Result<BackendKind, BackendError> {
        if self.inner.config.kind != BackendKind::Auto {
            return Ok(self.inner.config.kind);
        }
        if let Some(kind) = *self.inner.detected.lock().unwrap_or_else(|p| p.into_inner()) {
            return Ok(kind);
        }
        let kind = protocol::detect(&self.http()).await?;
        tracing::info!("{} is {}", self.inner.config.base_url(), kind.name());
        *self.inner.detected.lock().unwrap_or_else(|p| p.into_inner()) = Some(kind);
        Ok(kind)
    }

    /// The model name to send: the setting, else (OpenAI-compatible) the first model the server lists.
    async fn model(&self, kind: BackendKind) -> Result<Option<String>, BackendError> {
        if let Some(model) = self.inner.config.model.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
            return Ok(Some(model.to_owned()));
        }
        match kind {
            BackendKind::Ollama => Err(BackendError::Config("backend.model is required for Ollama (e.g. \"qwen2.5-coder:1.5b-base\")".into())),
            BackendKind::Openai => {
                if let Some(model) = self.inner.served_model.lock().unwrap_or_else(|p| p.into_inner()).clone() {
                    return Ok(Some(model));
                }
                let model = protocol::first_model(&self.http()).await?;
                *self.inner.served_model.lock().unwrap_or_else(|p| p.into_inner()) = Some(model.clone());
                Ok(Some(model))
            }
            _ => Ok(None),
        }
    }

    /// A fill-in-the-middle suggestion, streamed and cut at the end of the block, the token cap or the time
    /// budget. A raised `cancel` drops the stream (the server stops generating) and answers `Cancelled`.
    pub async fn complete(&self, job: CompletionJob, cancel: Arc<AtomicBool>) -> Result<Completed, BackendError> {
        let kind = self.kind().await?;
        let model = self.model(kind).await?;
        let request = protocol::completion_request(kind, &self.inner.config, model.as_deref(), &job)?;
        let block = BlockStop::new(&job.line_before_cursor, job.multiline).following(&job.after_cursor);
        let mut generated = String::new();
        let mut first_token_ms = None;
        let mut pieces = 0;
        let deadline = job.started + job.budget;
        let usage = self
            .http()
            .stream(request, &job.routing_key, deadline, &cancel, &mut |piece| {
                if !piece.is_empty() {
                    first_token_ms.get_or_insert_with(|| job.started.elapsed().as_secs_f64() * 1e3);
                    generated.push_str(piece);
                    pieces += 1;
                }
                // Stop reading (and so generating) at the end of the block or the token cap.
                block.cut(&generated).is_none() && pieces < job.max_tokens
            })
            .await
            .map_err(|err| match err {
                BackendError::Status { message, .. } if message.contains("Infill is not supported") => BackendError::NoFim(message),
                err => err,
            })?;
        Ok(Completed {
            text: finish_suggestion(&generated, &block, job.after_cursor.split('\n').next().unwrap_or("")),
            usage,
            first_token_ms,
            pieces,
            latency_ms: job.started.elapsed().as_secs_f64() * 1e3,
        })
    }

    /// `complete` on the HTTP runtime, for the LSP runtime to await: dropping the returned future (the handler
    /// was cancelled) aborts the request.
    pub async fn complete_detached(&self, job: CompletionJob, cancel: Arc<AtomicBool>) -> Result<Completed, BackendError> {
        let backend = self.clone();
        let task = runtime().spawn(async move { backend.complete(job, cancel).await });
        let _abort = AbortOnDrop(task.abort_handle());
        task.await.map_err(|e| if e.is_cancelled() { BackendError::Cancelled } else { BackendError::Protocol(format!("the request task failed: {e}")) })?
    }

    /// The next assistant turn, streamed (so that a cancellation stops the server's generation).
    pub async fn chat(&self, messages: &[ChatMessage], prefill: &str, params: &GenerateParams, cancel: Arc<AtomicBool>, routing_key: &str) -> Result<(String, Usage), BackendError> {
        let kind = self.kind().await?;
        let model = self.model(kind).await?;
        let request = protocol::chat_request(kind, model.as_deref(), messages, prefill, params);
        let mut raw = String::new();
        let deadline = Instant::now() + Duration::from_secs(3600);
        let usage = self
            .http()
            .stream(request, routing_key, deadline, &cancel, &mut |piece| {
                raw.push_str(piece);
                let reply = without_echo(&raw, prefill);
                !params.stop.iter().any(|s| !s.is_empty() && reply.contains(s.as_str()))
            })
            .await?;
        let mut text = without_echo(&raw, prefill).to_owned();
        if let Some(at) = params.stop.iter().filter(|s| !s.is_empty()).filter_map(|s| text.find(s.as_str())).min() {
            text.truncate(at);
        }
        Ok((text, usage))
    }

    /// Lists what the server says about itself (`pie/status`-style diagnostics and the tests): the kind and, for
    /// llama-server, `/props`.
    pub async fn probe(&self) -> Result<serde_json::Value, BackendError> {
        let kind = self.kind().await?;
        protocol::probe(&self.http(), kind).await
    }
}

impl ChatModel for HttpBackend {
    fn reply(&self, messages: &[ChatMessage], prefill: &str, params: &GenerateParams, cancel: &Arc<AtomicBool>) -> Result<String, String> {
        let backend = self.clone();
        let (messages, prefill, params, flag) = (messages.to_vec(), prefill.to_owned(), params.clone(), Arc::clone(cancel));
        let task = runtime().spawn(async move {
            let key = routing_key(&format!("chat:{}", messages.first().map(|m| m.content.as_str()).unwrap_or_default()));
            backend.chat(&messages, &prefill, &params, flag, &key).await
        });
        let _abort = AbortOnDrop(task.abort_handle());
        let result = futures::executor::block_on(task).map_err(|e| format!("the request task failed: {e}"))?;
        match result {
            Ok((text, usage)) => {
                tracing::info!("chat over {}: {}", self.describe(), usage.describe());
                Ok(text)
            }
            Err(BackendError::Cancelled) => Err("cancelled".into()),
            Err(err) => Err(format!("{}: {err}", self.describe())),
        }
    }
}

/// The backend for a configuration, made once and kept while the configuration stays the same (the connection
/// pool and what `auto` found survive between requests).
#[derive(Default)]
pub struct BackendSlot(Mutex<Option<HttpBackend>>);

impl BackendSlot {
    pub fn get(&self, config: &BackendConfig) -> Result<HttpBackend, BackendError> {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(backend) = slot.as_ref().filter(|b| b.config() == config) {
            return Ok(backend.clone());
        }
        let backend = HttpBackend::new(config.clone())?;
        *slot = Some(backend.clone());
        Ok(backend)
    }
}

/// The reply without the prefill when the server repeats it (llama-server's continuation of a final assistant
/// message returns the whole message; vLLM and Ollama return only what follows). While the echo is still
/// arriving, nothing.
fn without_echo<'a>(raw: &'a str, prefill: &str) -> &'a str {
    if prefill.is_empty() {
        return raw;
    }
    if let Some(rest) = raw.strip_prefix(prefill) {
        return rest;
    }
    if prefill.starts_with(raw) {
        return "";
    }
    raw
}

/// Whether a cancellation flag is up.
pub(crate) fn raised(flag: &AtomicBool) -> bool {
    flag.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_take_the_set_fields_and_a_new_kind_drops_the_url() {
        let base = BackendConfig { kind: BackendKind::LlamaServer, url: Some("http://gpu:8080/".into()), model: Some("m".into()), api_key_env: Some("K".into()), ..Default::default() };
        assert_eq!(base.with_override(None), base);
        let same = base.with_override(Some(&BackendOverride { timeout_ms: Some(5), ..Default::default() }));
        assert_eq!((same.base_url().as_str(), same.timeout_ms, same.model.as_deref()), ("http://gpu:8080", 5, Some("m")));
        let local = base.with_override(Some(&BackendOverride { kind: Some(BackendKind::Local), ..Default::default() }));
        assert!(local.is_local());
        let ollama = base.with_override(Some(&BackendOverride { kind: Some(BackendKind::Ollama), ..Default::default() }));
        assert_eq!((ollama.base_url().as_str(), ollama.model.as_deref(), ollama.api_key_env.as_deref()), ("http://127.0.0.1:11434", None, Some("K")));
        let v1 = BackendConfig { kind: BackendKind::Openai, url: Some("https://team.example/v1".into()), ..Default::default() };
        assert_eq!(v1.base_url(), "https://team.example");
    }

    #[test]
    fn settings_parse_with_kebab_case_kinds() {
        let config: BackendConfig = serde_json::from_value(serde_json::json!({"kind": "llama-server", "url": "http://x:1", "apiKeyEnv": "T"})).unwrap();
        assert_eq!((config.kind, config.api_key_env.as_deref(), config.timeout_ms), (BackendKind::LlamaServer, Some("T"), 10_000));
        assert!(serde_json::from_value::<BackendConfig>(serde_json::json!({"kind": "vllm"})).is_err());
    }

    #[test]
    fn an_api_key_comes_from_the_named_variable_and_errors_name_the_variable_only() {
        std::env::set_var("PIE_LS_TEST_KEY_SET", "sk-secret");
        let set = BackendConfig { kind: BackendKind::Openai, api_key_env: Some("PIE_LS_TEST_KEY_SET".into()), ..Default::default() };
        assert_eq!(set.api_key().unwrap().as_deref(), Some("sk-secret"));
        let unset = BackendConfig { api_key_env: Some("PIE_LS_TEST_KEY_UNSET".into()), ..set.clone() };
        let err = unset.api_key().unwrap_err().to_string();
        assert!(err.contains("PIE_LS_TEST_KEY_UNSET") && !err.contains("sk-"), "{err}");
        assert_eq!(BackendConfig::default().api_key().unwrap(), None);
    }

    #[test]
    fn a_repeated_prefill_is_not_part_of_the_reply() {
        assert_eq!(without_echo("The bug: x\n```python\ndef f", "The bug: x\n```python\n"), "def f");
        assert_eq!(without_echo("The bug: x\n``", "The bug: x\n```python\n"), "", "the echo still arriving");
        assert_eq!(without_echo("def f", "The bug: x\n```python\n"), "def f", "servers that do not repeat it");
        assert_eq!(without_echo("abc", ""), "abc");
    }

    #[test]
    fn bad_urls_are_refused_with_the_setting_named() {
        let err = HttpBackend::new(BackendConfig { kind: BackendKind::LlamaServer, url: Some("not a url".into()), ..Default::default() }).err().unwrap();
        assert!(err.to_string().contains("backend.url"), "{err}");
        let err = HttpBackend::new(BackendConfig { kind: BackendKind::LlamaServer, url: Some("ftp://x".into()), ..Default::default() }).err().unwrap();
        assert!(err.to_string().contains("http://"), "{err}");
        assert_eq!(routing_key("file:///a.py"), routing_key("file:///a.py"));
        assert_ne!(routing_key("file:///a.py"), routing_key("file:///b.py"));
    }
}
