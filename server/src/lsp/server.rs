//! The `LanguageServer` implementation: capability negotiation, document sync and the `pie/*` requests.
//!
//! Handlers are thin: convert from LSP, call the document store, convert back. State lives in `ServerState`
//! behind a std `Mutex` that is never held across an `.await`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};

use tower_lsp::jsonrpc::{Error, ErrorCode, Result};
use tower_lsp::lsp_types::*;
use tower_lsp::{Client, LanguageServer};

use super::completion;
use super::convert;
use super::ext::{DocumentState, DocumentStateParams, SyntaxTreeResult};
use crate::warm::{self, Command, Notice, WarmHandle};
use super::ServeOptions;
use crate::engine::{CacheStats, TextEdit};
use crate::config::Config;
use crate::document::{DocumentStore, PositionEncoding, StoreError};
use crate::syntax::count_syntax_errors;

pub struct Backend {
    client: Client,
    state: Arc<ServerState>,
    options: ServeOptions,
}

#[derive(Default)]
struct ServerState {
    docs: Mutex<DocumentStore>,
    config: RwLock<Config>,
    encoding: RwLock<PositionEncoding>,
    /// The warm-document thread, once `initialized` started it (never when `model.enabled` is false).
    warm: OnceLock<WarmHandle>,
    /// The action model (`actions.model`), made on the first action that needs it and loaded by that action.
    action_model: Mutex<Option<Arc<super::action_model::ActionModel>>>,
    /// The client accepts `window/workDoneProgress/create`.
    work_done_progress: AtomicBool,
    /// Cancellation flags of the completions being generated, by document: a keystroke raises them.
    in_flight: Mutex<std::collections::HashMap<String, Arc<AtomicBool>>>,
    /// The last suggestion per document, to serve "typing along the suggestion" without generating again.
    last_suggestion: Mutex<std::collections::HashMap<String, completion::Shown>>,
    /// Verified faster versions by document URI, with the version they were measured on: offered again, edit and
    /// measured title included, while the document stays at that version.
    verified_faster: Mutex<std::collections::HashMap<String, (i32, CodeAction)>>,
    /// Workspace folders from `initialize`: scratch copies for running tests are made of these.
    roots: RwLock<Vec<std::path::PathBuf>>,
    /// Cancellation flags of long actions, by their `$/progress` token (`window/workDoneProgress/cancel`).
    progress_cancels: Mutex<std::collections::HashMap<String, Arc<AtomicBool>>>,
    progress_seq: std::sync::atomic::AtomicU64,
    /// What the client declared in `initialize`: responses are shaped to it (see `caps.rs`).
    caps: RwLock<super::caps::ClientCaps>,
    /// Documents the warm thread holds a copy of (sent `Open`, not `Close` since): only these get `Edit`s. Locked
    /// only while `docs` is held, so it changes in store order.
    warm_docs: Mutex<std::collections::HashSet<String>>,
    /// The HTTP backends of completions and actions (`backend.*`), kept while their settings stay the same.
    completion_backend: crate::inference::BackendSlot,
    actions_backend: crate::inference::BackendSlot,
    /// Where each document was last edited (byte offset), most recent last: other files' code around their last
    /// edit goes first in an HTTP backend's prompt. O(1) per keystroke; the text is read at request time.
    recent_edits: Mutex<std::collections::VecDeque<(String, usize)>>,
    /// What the HTTP backend reported for each document's completions (`pie/cacheStats`).
    backend_stats: Mutex<std::collections::HashMap<String, BackendStats>>,
}

/// `pie/cacheStats` of a document whose completions run on an HTTP backend: prompt tokens as the server
/// reported them, for the last request and summed over all.
#[derive(Clone, Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendStats {
    pub backend: String,
    pub url: String,
    pub requests: u64,
    pub last_request: crate::inference::Usage,
    /// Sums over the requests whose figure the server reported.
    pub prompt_tokens: u64,
    pub reused_tokens: u64,
    pub evaluated_tokens: u64,
    pub generated_tokens: u64,
}

impl BackendStats {
    fn add(&mut self, usage: &crate::inference::Usage) {
        self.requests += 1;
        self.last_request = usage.clone();
        self.prompt_tokens += usage.prompt_tokens.unwrap_or(0);
        self.reused_tokens += usage.reused_tokens.unwrap_or(0);
        self.evaluated_tokens += usage.evaluated_tokens.unwrap_or(0);
        self.generated_tokens += usage.generated_tokens.unwrap_or(0);
    }
}

/// Other documents whose code goes first in an HTTP prompt, and the lines around each one's last edit.
const CONTEXT_DOCS: usize = 2;
const CONTEXT_LINES_BEFORE: usize = 24;
const CONTEXT_LINES_AFTER: usize = 8;

impl Backend {
    pub fn new(client: Client, options: ServeOptions) -> Backend {
        Backend { client, state: Arc::new(ServerState::default()), options }
    }

    /// Starts the warm thread, and a task that turns its notices into log messages and `$/progress`.
    fn start_warm(&self, config: &Config) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Notice>();
        let spec = config.model.path.clone().or_else(|| self.options.model.clone());
        let handle = warm::start(spec, config.engine_config(), config.completion.clone(), move |notice| {
            let _ = tx.send(notice);
        });
        if self.state.warm.set(handle).is_err() {
            return;
        }
        let client = self.client.clone();
        let state = Arc::clone(&self.state);
        tokio::spawn(async move {
            while let Some(notice) = rx.recv().await {
                let progress = state.work_done_progress.load(Ordering::Relaxed);
                match notice {
                    Notice::Log { error, message } => {
                        let typ = if error { MessageType::ERROR } else { MessageType::INFO };
                        if error {
                            tracing::error!("{message}");
                            client.show_message(typ, format!("pie-ls: {message}")).await;
                        } else {
                            tracing::info!("{message}");
                        }
                        client.log_message(typ, format!("pie-ls: {message}")).await;
                    }
                    Notice::ProgressBegin { token, title, message } if progress => {
                        let token = NumberOrString::String(token);
                        let created = client
                            .send_request::<request::WorkDoneProgressCreate>(WorkDoneProgressCreateParams { token: token.clone() })
                            .await;
                        if created.is_ok() {
                            let begin = WorkDoneProgressBegin { title, message: Some(message), ..Default::default() };
                            client
                                .send_notification::<notification::Progress>(ProgressParams {
                                    token,
                                    value: ProgressParamsValue::WorkDone(WorkDoneProgress::Begin(begin)),
                                })
                                .await;
                        }
                    }
                    Notice::ProgressEnd { token, message } if progress => {
                        let end = WorkDoneProgressEnd { message: Some(message) };
                        client
                            .send_notification::<notification::Progress>(ProgressParams {
                                token: NumberOrString::String(token),
                                value: ProgressParamsValue::WorkDone(WorkDoneProgress::End(end)),
                            })
                            .await;
                    }
                    Notice::ProgressReport { token, message, percentage } if progress => {
                        let report = WorkDoneProgressReport { message: Some(message), percentage, ..Default::default() };
                        client
                            .send_notification::<notification::Progress>(ProgressParams {
                                token: NumberOrString::String(token),
                                value: ProgressParamsValue::WorkDone(WorkDoneProgress::Report(report)),
                            })
                            .await;
                    }
                    Notice::ProgressBegin { .. } | Notice::ProgressReport { .. } | Notice::ProgressEnd { .. } => {}
                    Notice::Restarted { first, message } => {
                        // The restarted thread has no documents: give it every warm one again, in store order.
                        state.resync_warm();
                        if first {
                            client.show_message(MessageType::ERROR, format!("pie-ls: {message}")).await;
                        }
                        client.log_message(MessageType::ERROR, format!("pie-ls: {message}")).await;
                    }
                }
            }
        });
    }

    fn warm(&self) -> Option<&WarmHandle> {
        self.state.warm.get()
    }

    fn docs(&self) -> MutexGuard<'_, DocumentStore> {
        self.state.docs()
    }

    fn config(&self) -> Config {
        self.state.config.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn caps(&self) -> super::caps::ClientCaps {
        self.state.caps.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn encoding(&self) -> PositionEncoding {
        *self.state.encoding.read().unwrap_or_else(|p| p.into_inner())
    }

    async fn report(&self, typ: MessageType, message: String) {
        match typ {
            MessageType::ERROR => tracing::error!("{message}"),
            MessageType::WARNING => tracing::warn!("{message}"),
            _ => tracing::info!("{message}"),
        }
        self.client.log_message(typ, format!("pie-ls: {message}")).await;
    }

    /// `pie/documentState`: what the server believes the document is. The syntax fields are those of the tree
    /// of this very version (waited for, off the runtime, when it is still parsing).
    pub async fn document_state(&self, params: DocumentStateParams) -> Result<DocumentState> {
        let uri = params.text_document.uri.to_string();
        let (mut state, rope, request) = {
            let docs = self.docs();
            let doc = docs.get(&uri).map_err(invalid_params)?;
            let state = DocumentState {
                uri,
                version: doc.version(),
                text: String::new(),
                line_count: doc.rope().len_lines(),
                language_id: doc.language_id().to_owned(),
                syntax_errors: None,
                parse_ms: None,
                syntax_language: doc.syntax_language().map(|it| it.id().to_owned()),
                binary: doc.is_binary(),
            };
            (state, doc.rope().clone(), doc.tree_request())
        };
        // Built outside the lock: the rope is a snapshot of this version.
        state.text = rope.to_string();
        if let Some(parsed) = wait_tree(request).await? {
            state.syntax_errors = Some(count_syntax_errors(&parsed.tree));
            state.parse_ms = Some(parsed.parse_ms);
        }
        Ok(state)
    }

    /// A code-action snapshot of `uri` at its current version, with that version's tree.
    async fn snapshot(&self, uri: &Url) -> Result<super::code_action::Snapshot> {
        let pending = super::code_action::snapshot(&self.docs(), uri, self.encoding())?;
        tokio::task::spawn_blocking(move || pending.ready()).await.map_err(|e| server_error(format!("reading the syntax tree failed: {e}")))
    }

    /// `textDocument/inlineCompletion` (LSP 3.18; tower-lsp 0.20 predates it, so it is routed as a custom method).
    pub async fn inline_completion(&self, params: completion::InlineCompletionParams) -> Result<completion::InlineCompletionList> {
        let uri = params.text_document.uri.to_string();
        let Some(suggestion) = self.suggest(&uri, params.position).await? else {
            return Ok(completion::InlineCompletionList { items: Vec::new() });
        };
        Ok(completion::inline_list(&suggestion))
    }

    /// The suggestion at `position`, from the cache of shown suggestions or from the model. `None` when the
    /// document moved on while generating (a stale result is never shown) or the model had nothing to add.
    async fn suggest(&self, uri: &str, position: Position) -> Result<Option<completion::Suggestion>> {
        let config = self.config();
        if !config.completion.enabled {
            return Ok(None);
        }
        let over_http = !config.completion_backend().is_local();
        if !over_http && self.warm().is_none() {
            return Ok(None);
        }
        let started = std::time::Instant::now();
        let (version, text, cursor) = {
            let docs = self.docs();
            let doc = docs.get(uri).map_err(invalid_params)?;
            if !warm_eligible(doc, &config) {
                return Ok(None);
            }
            let pos = convert::line_col(position);
            let char_idx = crate::document::to_char_idx(doc.rope(), pos, self.encoding())
                .map_err(|e| Error::invalid_params(e.to_string()))?;
            (doc.version(), doc.rope().to_string(), doc.rope().char_to_byte(char_idx))
        };
        let continued = {
            let shown = self.state.last_suggestion.lock().unwrap_or_else(|p| p.into_inner());
            shown.get(uri).and_then(|shown| shown.continue_with(&text, cursor))
        };
        if let Some(rest) = continued {
            let suggestion = completion::Suggestion { text: rest, position };
            self.send_status(uri, 0, 0, started.elapsed().as_secs_f64() * 1e3, None, 0).await;
            return Ok(Some(suggestion));
        }
        if over_http {
            return self.suggest_http(uri, position, version, text, cursor, &config, started).await;
        }
        let Some(warm) = self.warm() else { return Ok(None) };
        // `cancel` is raised by a keystroke (and ends the suggestion's extension too); `abandoned` when this
        // handler is dropped ($/cancelRequest) or done, which only matters until the answer.
        let cancel = Arc::new(AtomicBool::new(false));
        let abandoned = Arc::new(AtomicBool::new(false));
        self.state.in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(uri.to_owned(), Arc::clone(&cancel));
        let _cancel_on_drop = completion::CancelOnDrop(Arc::clone(&abandoned));
        let growing = warm::Growing::default();
        let (reply, answer) = tokio::sync::oneshot::channel();
        warm.send(Command::Complete(warm::CompleteRequest {
            uri: uri.to_owned(),
            version,
            text: text.clone(),
            cursor,
            config: config.completion.clone(),
            received: started,
            cancel: Arc::clone(&cancel),
            abandoned,
            growing: growing.clone(),
            reply,
        }));
        let outcome = match answer.await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(reason)) if reason == "cancelled" => return Ok(None),
            Ok(Err(reason)) => return Err(server_error(reason)),
            Err(_) => return Err(server_error("the warm-document thread stopped".into())),
        };
        self.send_status(uri, outcome.encoded_tokens, outcome.reused_tokens, outcome.latency_ms, outcome.first_token_ms, outcome.generated_tokens).await;
        let current = self.docs().get(uri).map(|d| d.version()).ok();
        if current != Some(outcome.version) || outcome.text.is_empty() {
            return Ok(None);
        }
        // Shown, and extended in the background: typing along or asking again is served from here.
        self.state.last_suggestion.lock().unwrap_or_else(|p| p.into_inner()).insert(uri.to_owned(), completion::Shown::new(&text, cursor, growing));
        Ok(Some(completion::Suggestion { text: outcome.text, position }))
    }

    /// A suggestion from the HTTP backend of completions: the prompt's parts (other files, the file from an
    /// anchored start line, the text after the cursor), streamed, cut at the end of the block; a keystroke in the
    /// document or `$/cancelRequest` drops the request.
    #[allow(clippy::too_many_arguments)]
    async fn suggest_http(
        &self,
        uri: &str,
        position: Position,
        version: i32,
        text: String,
        cursor: usize,
        config: &Config,
        started: std::time::Instant,
    ) -> Result<Option<completion::Suggestion>> {
        let backend_config = config.completion_backend();
        let backend = self.state.completion_backend.get(&backend_config).map_err(|e| server_error(format!("completion backend: {e}")))?;
        let job = self.completion_job(uri, &text, cursor, config, started);
        let cancel = Arc::new(AtomicBool::new(false));
        self.state.in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(uri.to_owned(), Arc::clone(&cancel));
        // Dropping this future ($/cancelRequest) aborts the request on the HTTP runtime, closing the connection.
        let done = match backend.complete_detached(job, cancel).await {
            Ok(done) => done,
            Err(crate::inference::BackendError::Cancelled) => return Ok(None),
            Err(err) => {
                let message = format!("{}: {err}", backend.describe());
                tracing::warn!("completion failed: {message}");
                return Err(server_error(message));
            }
        };
        {
            let mut stats = self.state.backend_stats.lock().unwrap_or_else(|p| p.into_inner());
            let entry = stats.entry(uri.to_owned()).or_default();
            entry.backend = backend_config.kind.name().to_owned();
            entry.url = backend_config.base_url();
            entry.add(&done.usage);
        }
        tracing::debug!("completion over {}: {}", backend.describe(), done.usage.describe());
        self.send_status_json(serde_json::json!({
            "uri": uri,
            "backend": backend_config.kind.name(),
            "encodedTokens": done.usage.evaluated_tokens,
            "reusedTokens": done.usage.reused_tokens,
            "promptTokens": done.usage.prompt_tokens,
            "latencyMs": done.latency_ms,
            "firstTokenMs": done.first_token_ms,
            "generatedTokens": done.usage.generated_tokens.unwrap_or(done.pieces as u64),
        }))
        .await;
        let current = self.docs().get(uri).map(|d| d.version()).ok();
        if current != Some(version) || done.text.is_empty() {
            return Ok(None);
        }
        let growing = warm::Growing::default();
        growing.set(&done.text);
        self.state.last_suggestion.lock().unwrap_or_else(|p| p.into_inner()).insert(uri.to_owned(), completion::Shown::new(&text, cursor, growing));
        Ok(Some(completion::Suggestion { text: done.text, position }))
    }

    /// The request to an HTTP backend: stable parts first (other documents' code around their last edit, then
    /// this file from a start line rounded to 64 lines), the text after the cursor to an end line rounded alike.
    fn completion_job(&self, uri: &str, text: &str, cursor: usize, config: &Config, started: std::time::Instant) -> crate::inference::CompletionJob {
        let markers = crate::features::completion::Markers { prefix: String::new(), suffix: String::new(), middle: String::new() };
        let window = crate::features::completion::PromptBuilder::new(Some(markers), config.completion.prefix_bytes, config.completion.suffix_bytes).build(text, cursor);
        let cursor = cursor.clamp(window.window_start, window.window_end);
        let line_start = text[..cursor].rfind('\n').map(|i| i + 1).unwrap_or(0);
        let name = |u: &str| u.rsplit('/').next().unwrap_or(u).to_owned();
        let others: Vec<(String, usize)> = {
            let recent = self.state.recent_edits.lock().unwrap_or_else(|p| p.into_inner());
            let mut others: Vec<(String, usize)> = recent.iter().rev().filter(|(u, _)| u != uri).take(CONTEXT_DOCS).cloned().collect();
            others.reverse();
            others
        };
        let extra = {
            let docs = self.docs();
            others
                .into_iter()
                .filter_map(|(other, at)| {
                    let doc = docs.get(&other).ok().filter(|d| !d.is_binary())?;
                    let rope = doc.rope();
                    let line = rope.byte_to_line(at.min(rope.len_bytes()));
                    let first = line.saturating_sub(CONTEXT_LINES_BEFORE);
                    let last = (line + CONTEXT_LINES_AFTER).min(rope.len_lines());
                    let chunk = rope.slice(rope.line_to_char(first)..rope.line_to_char(last)).to_string();
                    Some((name(&other), chunk))
                })
                .collect()
        };
        crate::inference::CompletionJob {
            parts: crate::inference::FimParts { extra, file_name: name(uri), prefix: text[window.window_start..cursor].to_owned(), suffix: text[cursor..window.window_end].to_owned() },
            line_before_cursor: text[line_start..cursor].to_owned(),
            after_cursor: crate::features::completion::text_after_cursor(&text, cursor).to_owned(),
            max_tokens: config.completion.max_tokens.max(1),
            multiline: config.completion.multiline,
            started,
            budget: std::time::Duration::from_millis(config.completion.time_budget_ms.max(1)),
            routing_key: crate::inference::routing_key(uri),
        }
    }

    async fn send_status_json(&self, status: serde_json::Value) {
        if self.caps().status_notification {
            self.client.send_notification::<completion::StatusNotification>(status).await;
        }
    }

    async fn send_status(&self, uri: &str, encoded: u64, reused: u64, latency_ms: f64, first_token_ms: Option<f64>, generated: usize) {
        // A custom notification only for clients that asked for it (as rust-analyzer's `experimental/serverStatus`).
        if !self.caps().status_notification {
            return;
        }
        let status = serde_json::json!({
            "uri": uri,
            "encodedTokens": encoded,
            "reusedTokens": reused,
            "latencyMs": latency_ms,
            "firstTokenMs": first_token_ms,
            "generatedTokens": generated,
        });
        self.client.send_notification::<completion::StatusNotification>(status).await;
    }

    /// `pie/cacheStats`: what PIE did for the document's warm KV cache.
    /// With an HTTP backend for completions: the prompt tokens the server reported it reused and evaluated
    /// (`BackendStats`).
    pub async fn cache_stats(&self, params: DocumentStateParams) -> Result<serde_json::Value> {
        let uri = params.text_document.uri.to_string();
        let backend = self.config().completion_backend();
        if !backend.is_local() {
            self.docs().get(&uri).map_err(invalid_params)?;
            let stats = self.state.backend_stats.lock().unwrap_or_else(|p| p.into_inner()).get(&uri).cloned();
            let stats = stats.unwrap_or_else(|| BackendStats { backend: backend.kind.name().to_owned(), url: backend.base_url(), ..Default::default() });
            return serde_json::to_value(stats).map_err(|e| server_error(e.to_string()));
        }
        let Some(warm) = self.warm() else {
            return Err(server_error("no model: the server runs with model.enabled = false".into()));
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        warm.send(Command::Stats { uri, reply });
        match answer.await {
            Ok(Ok(stats)) => serde_json::to_value::<CacheStats>(stats).map_err(|e| server_error(e.to_string())),
            Ok(Err(reason)) => Err(server_error(reason)),
            Err(_) => Err(server_error("the warm-document thread stopped".into())),
        }
    }

    /// `pie/cacheCheck`: whether the warm cache mirrors its prompt and the document (soaks, debugging).
    pub async fn cache_check(&self, params: DocumentStateParams) -> Result<super::ext::CacheCheck> {
        let uri = params.text_document.uri.to_string();
        let Some(warm) = self.warm() else {
            return Err(server_error("no model: the server runs with model.enabled = false".into()));
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        warm.send(Command::Check { uri: uri.clone(), reply });
        let check = match answer.await {
            Ok(Ok(check)) => check,
            Ok(Err(reason)) => return Err(server_error(reason)),
            Err(_) => return Err(server_error("the warm-document thread stopped".into())),
        };
        let text_matches_document = {
            let docs = self.docs();
            docs.get(&uri).is_ok_and(|doc| doc.version() == check.version && doc.rope() == check.text.as_str())
        };
        Ok(super::ext::CacheCheck {
            uri,
            version: check.version,
            cached_tokens: check.cached_tokens,
            fresh_tokens: check.fresh_tokens,
            tokens_match: check.first_mismatch.is_none(),
            first_mismatch: check.first_mismatch,
            prompt_matches: check.prompt_matches,
            text_matches_document,
        })
    }

    /// `pie/syntaxTree`: the tree of the document's current version as an S-expression.
    pub async fn syntax_tree(&self, params: DocumentStateParams) -> Result<SyntaxTreeResult> {
        let uri = params.text_document.uri.to_string();
        let (version, request) = {
            let docs = self.docs();
            let doc = docs.get(&uri).map_err(invalid_params)?;
            (doc.version(), doc.tree_request())
        };
        let sexp = wait_tree(request).await?.map(|parsed| parsed.tree.root_node().to_sexp());
        Ok(SyntaxTreeResult { uri, version, sexp })
    }
}

/// The tree a request asks for, waited for on a blocking thread (the parse may still be running).
async fn wait_tree(request: Option<crate::syntax::TreeRequest>) -> Result<Option<Arc<crate::syntax::Parsed>>> {
    let Some(request) = request else { return Ok(None) };
    let parsed = tokio::task::spawn_blocking(move || request.wait()).await.map_err(|e| server_error(format!("reading the syntax tree failed: {e}")))?;
    Ok(Some(parsed))
}

/// Only text documents that could fit a context get a warm cache.
fn warm_eligible(doc: &crate::document::Document, config: &Config) -> bool {
    warm_eligible_within(doc, config.documents.max_warm_bytes)
}

fn warm_eligible_within(doc: &crate::document::Document, max_warm_bytes: usize) -> bool {
    !doc.is_binary() && doc.rope().len_bytes() <= max_warm_bytes
}

/// Why a text document gets no suggestions from the in-process model: it is over `documents.maxWarmBytes`.
fn over_warm_limit_note(uri: &str, doc: &crate::document::Document, max_warm_bytes: usize) -> String {
    format!(
        "{uri} is {} bytes, over documents.maxWarmBytes ({max_warm_bytes}): no warm cache, so no suggestions for it (raise the setting to serve it)",
        doc.rope().len_bytes()
    )
}

impl ServerState {
    fn docs(&self) -> MutexGuard<'_, DocumentStore> {
        // A handler that panicked while holding the lock left a consistent store: every mutation is atomic.
        self.docs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The synchronous part of `didChange`: apply the changes to the store (the tree gets `InputEdit`s, its
    /// re-parse is queued) and send the byte edits to the warm thread, all under the store lock so the warm
    /// thread sees edits in store order. O(edit) for a warm document that stays warm.
    /// Returns a note for the user when the change took the document over the warm limit or back under it.
    fn apply_change(&self, uri: &str, version: i32, changes: &[crate::document::ContentChange]) -> std::result::Result<Option<String>, StoreError> {
        let (limits, max_warm_bytes) = {
            let config = self.config.read().unwrap_or_else(|p| p.into_inner());
            (config.document_limits(), config.documents.max_warm_bytes)
        };
        let encoding = *self.encoding.read().unwrap_or_else(|p| p.into_inner());
        let mut docs = self.docs();
        let edits = docs.change(uri, version, changes, encoding, limits)?;
        // A keystroke makes any suggestion in flight for this document outdated: latest wins.
        if let Some(flag) = self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(uri) {
            flag.store(true, Ordering::Relaxed);
        }
        if let Some(last) = edits.last() {
            let mut recent = self.recent_edits.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(i) = recent.iter().position(|(u, _)| u == uri) {
                recent.remove(i);
            }
            recent.push_back((uri.to_owned(), last.start_byte + last.new_text.len()));
            if recent.len() > CONTEXT_DOCS + 1 {
                recent.pop_front();
            }
        }
        let (Some(warm), Ok(doc)) = (self.warm.get(), docs.get(uri)) else { return Ok(None) };
        let eligible = warm_eligible_within(doc, max_warm_bytes);
        let mut tracked = self.warm_docs.lock().unwrap_or_else(|p| p.into_inner());
        match (eligible, tracked.contains(uri)) {
            (true, true) => {
                let edits = edits.into_iter().map(|e| TextEdit::new(e.start_byte, e.old_end_byte, e.new_text)).collect();
                warm.send(Command::Edit { uri: uri.to_owned(), version, edits });
            }
            // Newly eligible (shrunk below the warm limit, lost its NUL bytes): the warm thread needs the text once.
            (true, false) => {
                warm.send(Command::Open { uri: uri.to_owned(), version, text: doc.rope().to_string() });
                tracked.insert(uri.to_owned());
                let size = doc.rope().len_bytes();
                return Ok(Some(format!("{uri} ({size} bytes) gets a warm cache again: suggestions resume")));
            }
            (false, true) => {
                warm.send(Command::Close { uri: uri.to_owned() });
                tracked.remove(uri);
                if !doc.is_binary() {
                    return Ok(Some(over_warm_limit_note(uri, doc, max_warm_bytes)));
                }
            }
            (false, false) => {}
        }
        Ok(None)
    }

    /// Sends every warm-eligible document's text to the warm thread again (after it restarted and lost its copies).
    fn resync_warm(&self) {
        let max_warm_bytes = self.config.read().unwrap_or_else(|p| p.into_inner()).documents.max_warm_bytes;
        let docs = self.docs();
        let Some(warm) = self.warm.get() else { return };
        let mut tracked = self.warm_docs.lock().unwrap_or_else(|p| p.into_inner());
        tracked.clear();
        for (uri, doc) in docs.iter() {
            if warm_eligible_within(doc, max_warm_bytes) {
                warm.send(Command::Open { uri: uri.to_owned(), version: doc.version(), text: doc.rope().to_string() });
                tracked.insert(uri.to_owned());
            }
        }
    }
}

/// The synchronous document path of the server (`didOpen`, `didChange`), as its handlers run it, for
/// `pie-ls bench keystroke`.
pub struct SyncPath(ServerState);

impl SyncPath {
    /// A server state without a client; `warm` stands for the warm thread's channel.
    pub fn new(warm: Option<WarmHandle>) -> SyncPath {
        let state = ServerState::default();
        if let Some(warm) = warm {
            let _ = state.warm.set(warm);
        }
        SyncPath(state)
    }

    pub fn open(&self, uri: &str, language_id: &str, version: i32, text: &str) {
        let limits = self.0.config.read().unwrap_or_else(|p| p.into_inner()).document_limits();
        let mut docs = self.0.docs();
        docs.open(uri, language_id, version, text, limits);
        if let Some(warm) = self.0.warm.get() {
            warm.send(Command::Open { uri: uri.to_owned(), version, text: text.to_owned() });
            self.0.warm_docs.lock().unwrap_or_else(|p| p.into_inner()).insert(uri.to_owned());
        }
    }

    pub fn change(&self, uri: &str, version: i32, changes: &[crate::document::ContentChange]) -> std::result::Result<(), StoreError> {
        self.0.apply_change(uri, version, changes).map(|_| ())
    }

    /// The request for the tree of the document's current version.
    pub fn tree_request(&self, uri: &str) -> Option<crate::syntax::TreeRequest> {
        self.0.docs().get(uri).ok().and_then(|doc| doc.tree_request())
    }

    pub fn text(&self, uri: &str) -> Option<String> {
        self.0.docs().get(uri).ok().map(|doc| doc.rope().to_string())
    }
}

fn server_error(message: String) -> Error {
    Error { code: ErrorCode::ServerError(-32001), message: message.into(), data: None }
}

fn invalid_params(err: StoreError) -> Error {
    Error { code: ErrorCode::InvalidParams, message: err.to_string().into(), data: None }
}

/// The actions that run the user's code (see `verified.rs`).
impl Backend {
    /// Starts a cancellable `$/progress` for a long action; returns its token and cancellation flag.
    async fn begin_progress(&self, title: &str) -> (Option<NumberOrString>, Arc<AtomicBool>) {
        let cancel = Arc::new(AtomicBool::new(false));
        if !self.state.work_done_progress.load(Ordering::Relaxed) {
            return (None, cancel);
        }
        let n = self.state.progress_seq.fetch_add(1, Ordering::Relaxed);
        let name = format!("pie-ls/action/{n}");
        let token = NumberOrString::String(name.clone());
        if self.client.send_request::<request::WorkDoneProgressCreate>(WorkDoneProgressCreateParams { token: token.clone() }).await.is_err() {
            return (None, cancel);
        }
        self.state.progress_cancels.lock().unwrap_or_else(|p| p.into_inner()).insert(name, cancel.clone());
        let begin = WorkDoneProgressBegin { title: title.to_owned(), cancellable: Some(true), percentage: Some(0), ..Default::default() };
        self.client
            .send_notification::<notification::Progress>(ProgressParams { token: token.clone(), value: ProgressParamsValue::WorkDone(WorkDoneProgress::Begin(begin)) })
            .await;
        (Some(token), cancel)
    }

    async fn end_progress(&self, token: Option<NumberOrString>, message: String) {
        let Some(token) = token else { return };
        if let NumberOrString::String(name) = &token {
            self.state.progress_cancels.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
        }
        let end = WorkDoneProgressEnd { message: Some(message) };
        self.client.send_notification::<notification::Progress>(ProgressParams { token, value: ProgressParamsValue::WorkDone(WorkDoneProgress::End(end)) }).await;
    }

    /// Ends the progress, tells the user why nothing is offered, and returns the action disabled with the reason.
    async fn refuse(&self, token: Option<NumberOrString>, action: CodeAction, data: &super::verified::ActionData, reason: &str, result: serde_json::Value) -> CodeAction {
        self.end_progress(token, reason.to_owned()).await;
        let typ = if reason == "cancelled" { MessageType::INFO } else { MessageType::WARNING };
        self.client.show_message(typ, format!("pie-ls: {reason}")).await;
        super::verified::refused(action, data, reason, result)
    }

    /// `window/workDoneProgress/cancel`: stops the action behind the token.
    pub async fn progress_cancel(&self, params: WorkDoneProgressCancelParams) {
        if let NumberOrString::String(name) = &params.token {
            if let Some(flag) = self.state.progress_cancels.lock().unwrap_or_else(|p| p.into_inner()).get(name) {
                flag.store(true, Ordering::Relaxed);
                tracing::info!("progress {name} cancelled by the client");
            }
        }
    }

    /// Runs `work` off the runtime while forwarding its progress messages to the client's progress bar.
    async fn run_with_progress<T: Send + 'static>(
        &self,
        token: Option<NumberOrString>,
        work: impl FnOnce(&mut dyn FnMut(&str, u32)) -> T + Send + 'static,
    ) -> Result<T> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, u32)>();
        let task = tokio::task::spawn_blocking(move || {
            let mut report = |message: &str, pct: u32| {
                let _ = tx.send((message.to_owned(), pct));
            };
            work(&mut report)
        });
        while let Some((message, pct)) = rx.recv().await {
            tracing::info!("{message}");
            if let Some(token) = &token {
                let report = WorkDoneProgressReport { message: Some(message), percentage: Some(pct.min(100)), cancellable: Some(true) };
                self.client
                    .send_notification::<notification::Progress>(ProgressParams { token: token.clone(), value: ProgressParamsValue::WorkDone(WorkDoneProgress::Report(report)) })
                    .await;
            }
        }
        task.await.map_err(|e| server_error(format!("the action failed: {e}")))
    }

    /// What a verified action needs about its document: root, path in it, overlays of open documents.
    fn action_context(&self, data: &super::verified::ActionData) -> Result<(std::path::PathBuf, std::path::PathBuf, Vec<(std::path::PathBuf, String)>, String)> {
        let roots = self.state.roots.read().unwrap_or_else(|p| p.into_inner()).clone();
        let (root, rel) = super::verified::locate(&data.uri, &roots)?;
        let (open, text) = {
            let docs = self.docs();
            let doc = docs.get(data.uri.as_str()).map_err(invalid_params)?;
            if doc.version() != data.version {
                return Err(super::verified::content_modified(format!(
                    "the document changed (version {} -> {}) since the action was offered; ask for code actions again",
                    data.version,
                    doc.version()
                )));
            }
            let text = doc.rope().to_string();
            let open: Vec<(Url, String)> = docs.texts().into_iter().filter_map(|(u, t)| Some((Url::parse(&u).ok()?, t))).collect();
            (open, text)
        };
        Ok((root.clone(), rel, super::verified::overlays(&open, &root), text))
    }

    /// The edit of a verified result, if the file it edits has not changed while the action ran.
    fn checked_edit(&self, root: &std::path::Path, rel: &std::path::Path, original: &str, edits: &[(std::ops::Range<usize>, String)]) -> Result<WorkspaceEdit> {
        let (uri, edit) = super::verified::file_edit(root, rel, original, edits, self.encoding())?;
        if let Ok(doc) = self.docs().get(uri.as_str()) {
            if doc.rope() != original {
                return Err(super::verified::content_modified(format!("{uri} changed while the action ran; run it again")));
            }
        }
        Ok(edit)
    }

    /// The HTTP backend of the actions, when `actions.backend` (or `backend`) is not local.
    fn actions_http(&self, config: &Config) -> Result<Option<crate::inference::HttpBackend>> {
        let backend = config.actions_backend();
        if backend.is_local() {
            return Ok(None);
        }
        self.state.actions_backend.get(&backend).map(Some).map_err(|e| server_error(format!("actions backend: {e}")))
    }

    /// The action model the settings name (the same one while the setting stays the same), if any.
    fn action_model(&self, config: &Config) -> Option<Arc<super::action_model::ActionModel>> {
        let spec = config.actions.model.clone().filter(|s| !s.trim().is_empty())?;
        let mut slot = self.state.action_model.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_none_or(|m| m.spec() != spec) {
            *slot = Some(Arc::new(super::action_model::ActionModel::new(spec, config.engine_config())));
        }
        slot.clone()
    }

    async fn resolve_self_debug(&self, action: CodeAction, data: super::verified::ActionData) -> Result<CodeAction> {
        let config = self.config();
        let http = self.actions_http(&config)?;
        let action_model = if http.is_some() { None } else { self.action_model(&config) };
        let warm = if http.is_some() { None } else { self.warm().cloned() };
        if warm.is_none() && action_model.is_none() && http.is_none() {
            return Err(server_error("self-debug needs the model, and none is running".into()));
        }
        let (root, rel, overlays, text) = self.action_context(&data)?;
        let lang = self.docs().get(data.uri.as_str()).ok().and_then(|d| d.language()).ok_or_else(|| server_error("unsupported language".into()))?;
        let tree = crate::features::code::parse(lang, &text).ok_or_else(|| server_error("the test file did not parse".into()))?;
        let test = crate::features::code::functions(lang, &text, &tree)
            .into_iter()
            .find(|f| f.name == data.name && f.class == data.class)
            .map(|f| (f.range, f.class))
            .or_else(|| {
                // JavaScript tests are calls, not functions: find the call again by its name.
                let at = text.find(&data.name)?;
                crate::features::code::test_at(lang, &text, &tree, at).map(|t| (t.range, t.class))
            })
            .ok_or_else(|| super::verified::content_modified(format!("the test {} is no longer in the file", data.name)))?;
        let job = crate::features::selfdebug::Job {
            language: lang,
            root: root.clone(),
            overlays,
            test: crate::runner::TestTarget { file: rel, name: data.name.clone(), class: test.1 },
            test_range: test.0,
            rounds: config.self_debug.rounds.clamp(1, 10),
            candidates: config.self_debug.candidates.clamp(1, 8),
            commands: config.tests.clone(),
            max_tokens: config.self_debug.max_tokens.clamp(64, 4096),
            confirm: config.self_debug.confirm.min(8),
        };
        let (token, cancel) = self.begin_progress(&format!("pie-ls: fixing so that {} passes", data.name)).await;
        let _guard = super::verified::CancelOnDrop(cancel.clone());
        let chat = warm.map(warm::WarmChat::new);
        let flag = cancel.clone();
        let also = config.actions.also_completion_model;
        let outcome = self
            .run_with_progress(token.clone(), move |progress| {
                if let Some(model) = &action_model {
                    progress("loading the action model (first use only)", 1);
                    model.get().map_err(|e| crate::features::selfdebug::NoFix { reason: format!("the action model could not be loaded: {e}"), rounds: Vec::new() })?;
                }
                let label = http.as_ref().map(|b| b.describe()).unwrap_or_default();
                let sources = match &http {
                    Some(backend) => vec![(label.as_str(), backend as &dyn crate::features::chat::ChatModel)],
                    None => super::action_model::sources(action_model.as_deref(), chat.as_ref(), also),
                };
                crate::features::selfdebug::self_debug_with(&job, &sources, &flag, progress)
            })
            .await?;
        let rounds_json = |rounds: &[crate::features::selfdebug::Round]| {
            serde_json::Value::Array(rounds.iter().map(|r| serde_json::json!({"round": r.round, "source": r.source, "verdict": r.verdict, "explanation": r.explanation, "code": r.candidate})).collect())
        };
        match outcome {
            Ok(fix) => {
                let edit = self.checked_edit(&root, &fix.file, &fix.original_text, &[(fix.range.clone(), fix.new_function.clone())])?;
                let round = fix.round();
                // A partial fix (other tests of the function still fail) says so first, in the message and the status.
                let caveat = if !fix.still_failing.is_empty() {
                    format!(" Not a full fix: {} still fail.", crate::features::selfdebug::short_names(&fix.still_failing))
                } else if let Some(d) = &fix.disputed {
                    format!(" Not confirmed: {d}; a test for that input would decide.")
                } else {
                    String::new()
                };
                let message = format!(
                    "{} passes after fixing `{}` (round {round}).{caveat} {} Evidence: {}",
                    data.name,
                    fix.function,
                    fix.explanation,
                    fix.evidence.join("; ")
                );
                let label = if fix.is_full() { String::new() } else { format!("; {} fix", fix.status()) };
                self.end_progress(token, format!("{} passes (round {round}){label}", data.name)).await;
                self.client.show_message(if caveat.is_empty() { MessageType::INFO } else { MessageType::WARNING }, format!("pie-ls: {message}")).await;
                let result = serde_json::json!({
                    "status": fix.status(), "function": fix.function, "file": fix.file,
                    "explanation": fix.explanation, "evidence": fix.evidence, "rounds": rounds_json(&fix.rounds),
                    "stillFailing": fix.still_failing, "disputed": fix.disputed,
                });
                Ok(super::verified::accepted(action, data, edit, result))
            }
            Err(no) => {
                let result = serde_json::json!({"status": "noFix", "reason": no.reason, "rounds": rounds_json(&no.rounds)});
                Ok(self.refuse(token, action, &data, &no.reason, result).await)
            }
        }
    }

    async fn resolve_faster(&self, action: CodeAction, data: super::verified::ActionData) -> Result<CodeAction> {
        let config = self.config();
        let http = self.actions_http(&config)?;
        let action_model = if http.is_some() { None } else { self.action_model(&config) };
        let warm = if http.is_some() { None } else { self.warm().cloned() };
        if warm.is_none() && action_model.is_none() && http.is_none() {
            return Err(server_error("finding a faster version needs the model, and none is running".into()));
        }
        let (root, rel, overlays, _text) = self.action_context(&data)?;
        let job = crate::features::perf::Job {
            root: root.clone(),
            overlays,
            file: rel,
            function: data.name.clone(),
            candidates: config.perf.candidates.clamp(1, 8),
            runs: config.perf.runs.clamp(5, 200),
            max_tokens: config.perf.max_tokens.clamp(64, 4096),
            budget_s: config.perf.budget_s.clamp(5, 600),
            commands: config.tests.clone(),
        };
        let (token, cancel) = self.begin_progress(&format!("pie-ls: looking for a faster `{}`", data.name)).await;
        let _guard = super::verified::CancelOnDrop(cancel.clone());
        let chat = warm.map(warm::WarmChat::new);
        let flag = cancel.clone();
        let also = config.actions.also_completion_model;
        let outcome = self
            .run_with_progress(token.clone(), move |progress| {
                if let Some(model) = &action_model {
                    progress("loading the action model (first use only)", 1);
                    model.get().map_err(|e| crate::features::perf::NoFaster { reason: format!("the action model could not be loaded: {e}"), candidates: Vec::new() })?;
                }
                let label = http.as_ref().map(|b| b.describe()).unwrap_or_default();
                let sources = match &http {
                    Some(backend) => vec![(label.as_str(), backend as &dyn crate::features::chat::ChatModel)],
                    None => super::action_model::sources(action_model.as_deref(), chat.as_ref(), also),
                };
                crate::features::perf::find_faster_with(&job, &sources, &flag, progress)
            })
            .await?;
        match outcome {
            Ok(faster) => {
                let edit = self.checked_edit(&root, &faster.file, &faster.original_text, &faster.edits)?;
                let title = faster.title();
                self.end_progress(token, title.clone()).await;
                self.client.show_message(MessageType::INFO, format!("pie-ls: {title}. {} Evidence: {}", faster.explanation, faster.evidence.join("; "))).await;
                let result = serde_json::json!({
                    "status": "faster", "title": title, "measurement": faster.measurement, "explanation": faster.explanation,
                    "evidence": faster.evidence, "candidates": faster.candidates,
                });
                let uri = data.uri.to_string();
                let version = data.version;
                let resolved = super::verified::accepted(CodeAction { title, ..action }, data, edit, result);
                self.state.verified_faster.lock().unwrap_or_else(|p| p.into_inner()).insert(uri, (version, resolved.clone()));
                Ok(resolved)
            }
            Err(no) => {
                let result = serde_json::json!({"status": "noFaster", "reason": no.reason, "candidates": no.candidates});
                Ok(self.refuse(token, action, &data, &no.reason, result).await)
            }
        }
    }
}

/// `codeAction/resolve` and `pie-ls.runCodeAction` share this.
impl Backend {
    async fn resolve_action(&self, action: CodeAction) -> Result<CodeAction> {
        if let Some(data) = super::verified::ActionData::of(&action) {
            return match data.action.as_str() {
                "selfDebug" => self.resolve_self_debug(action, data).await,
                _ => self.resolve_faster(action, data).await,
            };
        }
        let uri = super::code_action::resolve_uri(&action)?;
        let snapshot = self.snapshot(&uri).await?;
        // The model names the function through the warm thread (blocking, so off the async runtime); without a
        // model the deterministic name is used.
        let namer = self.warm().cloned().map(warm::Namer::new);
        let config = self.config();
        let language_id = self.docs().get(uri.as_str()).map(|d| d.language_id().to_owned()).unwrap_or_default();
        let timeout = std::time::Duration::from_millis(config.extract.check_timeout_ms);
        let language = crate::syntax::Language::detect(&language_id, uri.path());
        let check = match config.extract.check_commands.get(&language_id) {
            Some(command) => Some(crate::features::extract::CheckCommand { command: command.clone(), timeout, only_if_original_passes: false }),
            None if config.extract.default_checks => language.and_then(|l| crate::features::extract::default_check(l, timeout)),
            None => None,
        };
        tokio::task::spawn_blocking(move || {
            let suggester = namer.as_ref().map(|n| n as &dyn crate::features::extract::NameSuggester);
            super::code_action::resolve(action, &snapshot, suggester, check.as_ref())
        })
        .await
        .map_err(|err| server_error(format!("extract method failed: {err}")))?
    }
}

#[tower_lsp::async_trait]
impl LanguageServer for Backend {
    async fn initialize(&self, params: InitializeParams) -> Result<InitializeResult> {
        let offered = params
            .capabilities
            .general
            .as_ref()
            .and_then(|general| general.position_encodings.as_ref())
            .map(|kinds| kinds.iter().map(|kind| kind.as_str().to_owned()).collect::<Vec<_>>())
            .unwrap_or_default();
        let encoding = PositionEncoding::negotiate(offered.iter().map(String::as_str));
        let progress = params.capabilities.window.as_ref().and_then(|w| w.work_done_progress).unwrap_or(false);
        #[allow(deprecated)]
        let mut roots: Vec<std::path::PathBuf> =
            params.workspace_folders.iter().flatten().filter_map(|f| f.uri.to_file_path().ok()).collect();
        #[allow(deprecated)]
        if let Some(root) = params.root_uri.as_ref().and_then(|u| u.to_file_path().ok()) {
            roots.push(root);
        }
        *self.state.roots.write().unwrap_or_else(|p| p.into_inner()) = roots;
        self.state.work_done_progress.store(progress, Ordering::Relaxed);
        *self.state.encoding.write().unwrap_or_else(|p| p.into_inner()) = encoding;
        let caps = super::caps::ClientCaps::from_lsp(&params.capabilities);
        *self.state.caps.write().unwrap_or_else(|p| p.into_inner()) = caps.clone();

        if let Some(options) = &params.initialization_options {
            match Config::from_client_value(options) {
                Ok(config) => *self.state.config.write().unwrap_or_else(|p| p.into_inner()) = config,
                Err(err) => {
                    return Err(Error {
                        code: ErrorCode::InvalidParams,
                        message: format!("invalid initializationOptions: {err}").into(),
                        data: None,
                    })
                }
            }
        }
        tracing::info!(encoding = encoding.as_lsp_str(), "initialized");

        Ok(InitializeResult {
            server_info: Some(ServerInfo { name: "pie-ls".into(), version: Some(env!("CARGO_PKG_VERSION").into()) }),
            capabilities: ServerCapabilities {
                position_encoding: Some(PositionEncodingKind::from(encoding.as_lsp_str().to_owned())),
                text_document_sync: Some(TextDocumentSyncCapability::Options(TextDocumentSyncOptions {
                    open_close: Some(true),
                    change: Some(TextDocumentSyncKind::INCREMENTAL),
                    save: Some(TextDocumentSyncSaveOptions::Supported(true)),
                    ..Default::default()
                })),
                completion_provider: Some(CompletionOptions {
                    resolve_provider: Some(false),
                    trigger_characters: Some(vec![".".into(), "(".into(), " ".into()]),
                    ..Default::default()
                }),
                // Options (kinds, resolve) only for clients with code action literals, as the spec says.
                code_action_provider: Some(if caps.code_action_literals {
                    CodeActionProviderCapability::Options(CodeActionOptions {
                        code_action_kinds: Some(vec![
                            CodeActionKind::new(super::code_action::EXTRACT_FUNCTION_KIND),
                            CodeActionKind::QUICKFIX,
                            CodeActionKind::new(super::verified::FASTER_KIND),
                        ]),
                        resolve_provider: Some(caps.code_action_resolve),
                        work_done_progress_options: Default::default(),
                    })
                } else {
                    CodeActionProviderCapability::Simple(true)
                }),
                // Only where needed: vscode-languageclient registers the command globally, once per server.
                execute_command_provider: caps.needs_run_command().then(|| ExecuteCommandOptions {
                    commands: vec![super::caps::RUN_ACTION.to_owned()],
                    work_done_progress_options: Default::default(),
                }),
                experimental: Some(serde_json::json!({ "pieDocumentState": true, "pieCacheStats": true })),
                ..Default::default()
            },
        })
    }

    async fn initialized(&self, _: InitializedParams) {
        let config = self.config();
        // Only when something runs on the in-process model: a user with only a remote server needs no GGUF.
        if config.needs_local_model() {
            self.start_warm(&config);
        }
    }

    async fn completion(&self, params: CompletionParams) -> Result<Option<CompletionResponse>> {
        let uri = params.text_document_position.text_document.uri.to_string();
        let position = params.text_document_position.position;
        let Some(suggestion) = self.suggest(&uri, position).await? else { return Ok(None) };
        let word_start = {
            let docs = self.docs();
            let doc = docs.get(&uri).map_err(invalid_params)?;
            completion::word_start(doc.rope(), position, self.encoding())
        };
        Ok(Some(CompletionResponse::List(CompletionList {
            is_incomplete: true,
            items: vec![completion::completion_item(&suggestion, word_start, &self.caps())],
        })))
    }

    async fn code_action(&self, params: CodeActionParams) -> Result<Option<CodeActionResponse>> {
        let snapshot = self.snapshot(&params.text_document.uri).await?;
        crate::warm::test_panic("codeAction");
        let mut actions = super::code_action::code_actions(&snapshot, &params)?.unwrap_or_default();
        let model = match (self.warm(), self.config().actions_backend().is_local()) {
            (_, false) | (Some(_), true) => Ok(()),
            (None, true) => Err("the model is disabled (model.enabled = false) or not started".to_owned()),
        };
        let mut offers = super::verified::offers(&snapshot, &params, model);
        // A faster version already verified for this function at this version is offered as measured.
        if let Some((version, done)) = self.state.verified_faster.lock().unwrap_or_else(|p| p.into_inner()).get(snapshot.uri.as_str()) {
            let name = super::verified::ActionData::of(done).map(|d| d.name);
            if *version == snapshot.version {
                for offer in offers.iter_mut() {
                    if let CodeActionOrCommand::CodeAction(a) = offer {
                        if super::verified::ActionData::of(a).is_some_and(|d| d.action == "faster" && Some(&d.name) == name.as_ref()) {
                            *a = done.clone();
                        }
                    }
                }
            }
        }
        actions.extend(offers);
        Ok(Some(super::caps::conform_actions(actions, &self.caps())))
    }

    async fn code_action_resolve(&self, action: CodeAction) -> Result<CodeAction> {
        let mut resolved = self.resolve_action(action).await?;
        if !self.caps().code_action_disabled {
            // The client would show a disabled action as one that does nothing: tell the user why instead.
            if let Some(disabled) = resolved.disabled.take() {
                if super::verified::ActionData::of(&resolved).is_none() {
                    self.client.show_message(MessageType::WARNING, format!("pie-ls: {}", disabled.reason)).await;
                }
            }
        }
        Ok(resolved)
    }

    /// `workspace/executeCommand`: `RUN_ACTION` resolves the action in its argument and applies the result, for
    /// clients that cannot resolve code actions themselves.
    async fn execute_command(&self, params: ExecuteCommandParams) -> Result<Option<serde_json::Value>> {
        if params.command != super::caps::RUN_ACTION {
            return Err(Error::invalid_params(format!("unknown command {:?}", params.command)));
        }
        let action: CodeAction = params
            .arguments
            .into_iter()
            .next()
            .and_then(|arg| serde_json::from_value(arg).ok())
            .ok_or_else(|| Error::invalid_params(format!("{} takes the code action as its argument", super::caps::RUN_ACTION)))?;
        let resolved = self.resolve_action(action).await?;
        if let Some(edit) = resolved.edit {
            let applied = self.client.apply_edit(edit).await;
            if !applied.as_ref().is_ok_and(|r| r.applied) {
                let why = match applied {
                    Ok(r) => r.failure_reason.unwrap_or_else(|| "no reason given".into()),
                    Err(err) => err.to_string(),
                };
                self.report(MessageType::WARNING, format!("{}: the editor did not apply the edit ({why})", resolved.title)).await;
            }
        } else if let Some(disabled) = resolved.disabled {
            if super::verified::ActionData::of(&CodeAction { data: resolved.data.clone(), ..Default::default() }).is_none() {
                self.client.show_message(MessageType::WARNING, format!("pie-ls: {}", disabled.reason)).await;
            }
        }
        Ok(None)
    }

    async fn shutdown(&self) -> Result<()> {
        tracing::info!("shutdown requested");
        Ok(())
    }

    async fn did_open(&self, params: DidOpenTextDocumentParams) {
        let item = params.text_document;
        let uri = item.uri.to_string();
        let config = self.config();
        let limits = config.document_limits();
        // Synchronous, before the first `.await`: see the module invariants in `lsp/mod.rs`.
        let (replaced, note) = {
            let mut docs = self.docs();
            let replaced = docs.open(&uri, &item.language_id, item.version, &item.text, limits);
            if let (Some(warm), Ok(doc)) = (self.warm(), docs.get(&uri)) {
                let mut tracked = self.state.warm_docs.lock().unwrap_or_else(|p| p.into_inner());
                if warm_eligible(doc, &config) {
                    warm.send(Command::Open { uri: uri.clone(), version: item.version, text: item.text.clone() });
                    tracked.insert(uri.clone());
                } else if tracked.remove(&uri) {
                    warm.send(Command::Close { uri: uri.clone() });
                }
            }
            let note = docs.get(&uri).ok().and_then(|doc| {
                if doc.is_binary() {
                    return Some(format!("{uri} holds binary content (NUL bytes): stored, but not parsed nor sent to a model"));
                }
                let mut notes = Vec::new();
                if self.warm().is_some() && !warm_eligible(doc, &config) {
                    notes.push(over_warm_limit_note(&uri, doc, config.documents.max_warm_bytes));
                }
                if doc.language().is_some() && doc.syntax_language().is_none() {
                    notes.push(format!("{uri} is {} bytes, over documents.maxParseBytes ({}): no syntax tree", doc.rope().len_bytes(), limits.max_parse_bytes));
                }
                (!notes.is_empty()).then(|| notes.join("; "))
            });
            (replaced, note)
        };
        if replaced {
            self.report(MessageType::WARNING, format!("{uri} was opened twice; the new text replaces the old")).await;
        }
        if let Some(note) = note {
            self.report(MessageType::INFO, note).await;
        }
    }

    async fn did_change(&self, params: DidChangeTextDocumentParams) {
        let uri = params.text_document.uri.to_string();
        let version = params.text_document.version;
        tracing::trace!(version, "didChange");
        let changes: Vec<_> = params.content_changes.into_iter().map(convert::content_change).collect();
        // Synchronous, before the first `.await`: see the module invariants in `lsp/mod.rs`.
        let result = self.state.apply_change(&uri, version, &changes);
        match result {
            Ok(Some(note)) => self.report(MessageType::INFO, note).await,
            Ok(None) => {}
            Err(err) => self.report(MessageType::ERROR, format!("didChange rejected: {err}")).await,
        }
    }

    async fn did_save(&self, params: DidSaveTextDocumentParams) {
        // The text already arrived through didChange; saving changes nothing the server tracks.
        tracing::debug!("saved {}", params.text_document.uri);
    }

    async fn did_close(&self, params: DidCloseTextDocumentParams) {
        let uri = params.text_document.uri.to_string();
        let result = {
            let mut docs = self.docs();
            let result = docs.close(&uri);
            if let Some(warm) = self.warm() {
                warm.send(Command::Close { uri: uri.clone() });
                self.state.warm_docs.lock().unwrap_or_else(|p| p.into_inner()).remove(&uri);
            }
            self.state.recent_edits.lock().unwrap_or_else(|p| p.into_inner()).retain(|(u, _)| *u != uri);
            self.state.backend_stats.lock().unwrap_or_else(|p| p.into_inner()).remove(&uri);
            result
        };
        if let Err(err) = result {
            self.report(MessageType::WARNING, format!("didClose: {err}")).await;
        }
    }

    async fn did_change_configuration(&self, params: DidChangeConfigurationParams) {
        // Merged over what is in force (initializationOptions included): an empty section changes nothing.
        let merged = {
            let mut current = self.state.config.write().unwrap_or_else(|p| p.into_inner());
            current.merged_with(&params.settings).map(|config| {
                let changed = *current != config;
                *current = config;
                changed
            })
        };
        match merged {
            Ok(changed) => {
                if changed {
                    tracing::info!("configuration updated");
                    // A backend switched to local starts the in-process model now.
                    let config = self.config();
                    if config.needs_local_model() && self.warm().is_none() {
                        self.start_warm(&config);
                        self.state.resync_warm();
                    }
                }
            }
            Err(err) => {
                self.report(MessageType::ERROR, format!("settings not applied, keeping the previous ones: {err}"))
                    .await
            }
        }
    }
}
