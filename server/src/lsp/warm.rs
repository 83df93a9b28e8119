//! Warm documents: the thread that owns the model and one PIE KV session per warm document, fed by the LSP
//! handlers through a channel.
//!
//! Why a thread and a channel: llama.cpp work is long, blocking CPU work, and edits must reach each session in
//! the order they were applied to the document store. The handlers send commands synchronously, right after
//! mutating the store (before their first `.await`), so the channel order is the edit order; this thread applies
//! them one by one. Consecutive edits of one document that queued up while the thread was busy are folded into
//! one update (one decode, one K-shift). When no command is waiting, stale tokens are re-encoded in small chunks,
//! nearest to their edit first, within a budget (tokens per pause, CPU seconds per minute) so that the server
//! goes quiet soon after the user does; any new command cancels that at the next chunk boundary.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::engine::{self, CacheStats, Engine, EngineConfig, GenerateParams, KvSession, SamplingParams, TextEdit, WarmPool};
use crate::features::chat::{render, ChatMessage};
use crate::features::completion::{generate_suggestion, prompt_edits, CompletionConfig, CrossFileContext, Markers, Prompt, PromptBuilder};

/// How long the document must be idle before stale tokens are refreshed.
const IDLE_BEFORE_REFRESH: Duration = Duration::from_millis(400);

/// Something the warm thread reports to the user (turned into `window/logMessage` / `$/progress` by the caller).
#[derive(Debug, Clone)]
pub enum Notice {
    ProgressBegin { token: String, title: String, message: String },
    ProgressEnd { token: String, message: String },
    Log { error: bool, message: String },
}

pub enum Command {
    Open { uri: String, version: i32, text: String },
    /// `edits` are the document's edits in the order applied; the cursor is assumed at the end of the last one.
    Edit { uri: String, version: i32, text: String, edits: Vec<TextEdit> },
    Close { uri: String },
    Stats { uri: String, reply: oneshot::Sender<Result<CacheStats, String>> },
    Complete(CompleteRequest),
    /// A one-off greedy generation from `prompt` in a scratch session (naming an extracted function).
    Generate { prompt: String, max_tokens: usize, stop: Vec<String>, reply: mpsc::Sender<Result<String, String>> },
    /// The next assistant turn of a conversation (self-debug, performance candidates), rendered with the model's
    /// chat template into the chat slot: a conversation that extends the slot's last one re-encodes only what is new.
    Chat { messages: Vec<ChatMessage>, prefill: String, params: GenerateParams, cancel: Arc<AtomicBool>, reply: mpsc::Sender<Result<String, String>> },
}

/// The model as a `ChatModel`, through the warm thread. Blocking: call it off the async runtime.
#[derive(Clone)]
pub struct WarmChat {
    handle: WarmHandle,
}

impl WarmChat {
    pub fn new(handle: WarmHandle) -> WarmChat {
        WarmChat { handle }
    }
}

impl crate::features::chat::ChatModel for WarmChat {
    fn reply(&self, messages: &[ChatMessage], prefill: &str, params: &GenerateParams, cancel: &Arc<AtomicBool>) -> Result<String, String> {
        let (reply, answer) = mpsc::channel();
        let (messages, prefill) = (messages.to_vec(), prefill.to_owned());
        self.handle.send(Command::Chat { messages, prefill, params: params.clone(), cancel: cancel.clone(), reply });
        loop {
            match answer.recv_timeout(Duration::from_millis(200)) {
                Ok(result) => return result,
                Err(mpsc::RecvTimeoutError::Timeout) if cancel.load(Ordering::Relaxed) => return Err("cancelled".into()),
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err("the model thread is gone".into()),
            }
        }
    }
}

/// Names extracted functions with the model, through the warm thread. Blocking: call it off the async runtime.
pub struct Namer {
    handle: WarmHandle,
}

impl Namer {
    pub fn new(handle: WarmHandle) -> Namer {
        Namer { handle }
    }
}

impl crate::features::extract::NameSuggester for Namer {
    fn suggest_name(&self, prompt: &str) -> Option<String> {
        let (reply, answer) = mpsc::channel();
        self.handle.send(Command::Generate { prompt: prompt.to_owned(), max_tokens: 12, stop: vec!["\n".into()], reply });
        // A busy warm thread (reading a large file) must not hold the action up for long: fall back to the
        // deterministic name.
        match answer.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(name)) => Some(name),
            Ok(Err(err)) => {
                tracing::info!("no model name: {err}");
                None
            }
            Err(_) => None,
        }
    }
}

/// A suggestion at `cursor` (a byte offset into `text`, the document at `version`).
pub struct CompleteRequest {
    pub uri: String,
    pub version: i32,
    pub text: String,
    pub cursor: usize,
    pub config: CompletionConfig,
    /// Raised by a newer keystroke or `$/cancelRequest`: stop generating and answer `Err("cancelled")`.
    pub cancel: Arc<AtomicBool>,
    pub reply: oneshot::Sender<Result<CompletionOutcome, String>>,
}

/// What a completion produced and what it cost, for the suggestion and the `pie/status` notification.
#[derive(Debug, Clone)]
pub struct CompletionOutcome {
    pub version: i32,
    pub text: String,
    pub encoded_tokens: u64,
    pub reused_tokens: u64,
    pub latency_ms: f64,
    pub first_token_ms: Option<f64>,
    pub generated_tokens: usize,
}

/// The LSP side's handle. Cloning is cheap; sending never blocks.
#[derive(Clone)]
pub struct WarmHandle {
    tx: Sender<Command>,
    /// Raised on every send so the thread abandons an idle refresh as soon as real work arrives.
    interrupt: Arc<AtomicBool>,
}

impl WarmHandle {
    pub fn send(&self, cmd: Command) {
        // A stats query is answered between refresh chunks; only text changes are worth abandoning a chunk for.
        if !matches!(cmd, Command::Stats { .. }) {
            self.interrupt.store(true, Ordering::Relaxed);
        }
        // The thread only ends with the process; a failed send means it panicked, which `Stats` reports.
        let _ = self.tx.send(cmd);
    }
}

/// Starts the warm thread. `model_spec` is a path or `hf:` spec (`None`: `PIE_LS_MODEL`, then the default model).
pub fn start(
    model_spec: Option<String>,
    config: EngineConfig,
    completion: CompletionConfig,
    notify: impl Fn(Notice) + Send + 'static,
) -> WarmHandle {
    let (tx, rx) = mpsc::channel();
    let interrupt = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&interrupt);
    std::thread::Builder::new()
        .name("pie-warm".into())
        .spawn(move || {
            let engine = load(model_spec, config, &notify);
            let markers = engine.as_ref().ok().and_then(Markers::of_model);
            let prompts = PromptBuilder::new(markers, completion.prefix_bytes, completion.suffix_bytes);
            let context = engine.as_ref().ok().and_then(CrossFileContext::of_model);
            Warm {
                engine,
                prompts,
                context,
                sessions: HashMap::new(),
                pool: None,
                notify: Box::new(notify),
                interrupt: flag,
                queue: VecDeque::new(),
                chat: engine::ChatSlot::new(),
                refresh_budget: RefreshBudget::default(),
            }
            .run(rx)
        })
        .expect("spawning the warm thread");
    WarmHandle { tx, interrupt }
}

fn load(model_spec: Option<String>, config: EngineConfig, notify: &impl Fn(Notice)) -> Result<Engine, String> {
    let spec = model_spec.or_else(|| std::env::var(engine::MODEL_ENV).ok()).filter(|s| !s.trim().is_empty());
    let path = engine::resolve_model(spec.as_deref()).map_err(|e| e.to_string());
    let path = match path {
        Ok(path) => path,
        Err(err) => {
            notify(Notice::Log { error: true, message: format!("no model loaded, completions and naming are off: {err}") });
            return Err(err);
        }
    };
    let token = "pie-ls/load-model".to_owned();
    notify(Notice::ProgressBegin { token: token.clone(), title: "pie-ls: loading model".into(), message: path.display().to_string() });
    let result = Engine::load(&path, config).map_err(|e| e.to_string());
    match &result {
        Ok(engine) => {
            let info = engine.info();
            let message = format!("loaded {} ({} layers, FIM: {}, PIE shift: {})", info.name, info.n_layer, info.has_fim, info.can_shift);
            notify(Notice::ProgressEnd { token, message: message.clone() });
            notify(Notice::Log { error: false, message });
        }
        Err(err) => {
            notify(Notice::ProgressEnd { token, message: "failed".into() });
            notify(Notice::Log { error: true, message: format!("could not load the model: {err}") });
        }
    }
    result
}

/// One warm document: its KV session mirrors `prompt`, built from `text` with the cursor at `cursor`.
struct WarmDoc {
    session: KvSession,
    version: i32,
    text: String,
    cursor: usize,
    prompt: Prompt,
}

struct Warm {
    engine: Result<Engine, String>,
    prompts: PromptBuilder,
    /// Other documents' recently edited code, placed before each prompt (models with a file separator only).
    context: Option<CrossFileContext>,
    sessions: HashMap<String, Result<WarmDoc, String>>,
    pool: Option<WarmPool<String>>,
    notify: Box<dyn Fn(Notice) + Send>,
    interrupt: Arc<AtomicBool>,
    queue: VecDeque<Command>,
    /// The one conversation kept warm (the last self-debug or performance request).
    chat: engine::ChatSlot,
    refresh_budget: RefreshBudget,
}

impl Warm {
    fn run(mut self, rx: Receiver<Command>) {
        if let Ok(engine) = &self.engine {
            self.pool = Some(WarmPool::from_config(engine.config()));
        }
        let mut last_edited: Option<String> = None;
        let mut last_edit_at = Instant::now();
        loop {
            if self.queue.is_empty() {
                // Idle time counts from the last edit: queries (cacheStats) do not postpone the refresh.
                let next = if last_edited.is_some() {
                    rx.recv_timeout(IDLE_BEFORE_REFRESH.saturating_sub(last_edit_at.elapsed()))
                } else {
                    rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
                };
                match next {
                    Ok(cmd) => self.queue.push_back(cmd),
                    Err(RecvTimeoutError::Timeout) => {
                        if let Some(uri) = &last_edited {
                            if !self.refresh(uri, last_edit_at) {
                                last_edited = None;
                            }
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            // Take everything already waiting, so consecutive edits can be folded.
            self.queue.extend(rx.try_iter());
            let Some(cmd) = self.queue.pop_front() else { continue };
            match cmd {
                Command::Open { uri, version, text } => {
                    let cursor = text.len();
                    self.open(uri, version, text, cursor);
                }
                Command::Edit { uri, mut version, mut text, mut edits } => {
                    while let Some(Command::Edit { uri: next_uri, .. }) = self.queue.front() {
                        if *next_uri != uri {
                            break;
                        }
                        let Some(Command::Edit { version: v, text: next_text, edits: next_edits, .. }) = self.queue.pop_front() else { break };
                        version = v;
                        text = next_text;
                        edits.extend(next_edits);
                    }
                    self.edit(&uri, version, text, &edits);
                    last_edited = Some(uri);
                    last_edit_at = Instant::now();
                }
                Command::Close { uri } => {
                    self.sessions.remove(&uri);
                    if let Some(context) = self.context.as_mut() {
                        context.forget(&uri);
                    }
                    if let Some(pool) = self.pool.as_mut() {
                        pool.remove(&uri);
                    }
                    if last_edited.as_deref() == Some(uri.as_str()) {
                        last_edited = None;
                    }
                }
                Command::Stats { uri, reply } => {
                    let stats = match (&self.engine, self.sessions.get(&uri)) {
                        (Err(err), _) => Err(format!("no model loaded: {err}")),
                        (Ok(_), Some(Ok(doc))) => Ok(doc.session.stats()),
                        (Ok(_), Some(Err(err))) => Err(format!("{uri} has no warm cache: {err}")),
                        (Ok(_), None) => Err(format!("{uri} has no warm cache (not open, closed, or evicted by the warm-document limit)")),
                    };
                    let _ = reply.send(stats);
                }
                Command::Generate { prompt, max_tokens, stop, reply } => {
                    let _ = reply.send(self.generate_once(&prompt, max_tokens, stop));
                }
                Command::Chat { messages, prefill, params, cancel, reply } => {
                    let result = match &self.engine {
                        Ok(engine) => self.chat.reply(engine, &render(engine, &messages, &prefill), &params, &cancel).map(|g| g.text).map_err(|e| e.to_string()),
                        Err(err) => Err(format!("no model loaded: {err}")),
                    };
                    let _ = reply.send(result);
                }
                Command::Complete(request) => {
                    let uri = request.uri.clone();
                    let outcome = self.complete(request);
                    if let Some((reply, outcome)) = outcome {
                        let _ = reply.send(outcome);
                    }
                    last_edited = Some(uri);
                    last_edit_at = Instant::now();
                }
            }
        }
    }

    fn open(&mut self, uri: String, version: i32, text: String, cursor: usize) {
        let Ok(engine) = &self.engine else { return };
        let token = format!("pie-ls/warm/{uri}");
        (self.notify)(Notice::ProgressBegin { token: token.clone(), title: "pie-ls: reading file into the model".into(), message: uri.clone() });
        let prompt = self.prompts.build_with_context(&text, cursor, &self.context_for(&uri));
        let session = KvSession::open(engine, &prompt.text).map_err(|e| e.to_string());
        let message = match &session {
            Ok(s) => format!("{} tokens cached", s.stats().cached_tokens),
            Err(err) => {
                (self.notify)(Notice::Log { error: false, message: format!("{uri} stays cold: {err}") });
                "not cached".into()
            }
        };
        (self.notify)(Notice::ProgressEnd { token, message });
        let bytes = session.as_ref().map(|s| s.kv_bytes()).unwrap_or(0);
        let doc = session.map(|session| WarmDoc { session, version, text, cursor, prompt });
        self.sessions.insert(uri.clone(), doc);
        self.touch(&uri, bytes);
    }

    fn context_for(&self, uri: &str) -> String {
        self.context.as_ref().map(|c| c.for_document(uri)).unwrap_or_default()
    }

    fn edit(&mut self, uri: &str, version: i32, text: String, edits: &[TextEdit]) {
        let cursor = edits.last().map(|e| e.start_byte + e.new_text.len()).unwrap_or(0).min(text.len());
        if let Some(context) = self.context.as_mut() {
            context.note_edit(uri, &text, cursor);
        }
        if !matches!(self.sessions.get(uri), Some(Ok(_))) {
            // Evicted or failed earlier: a new edit is a reason to try warming it again.
            if self.engine.is_ok() {
                self.open(uri.to_owned(), version, text, cursor);
            }
            return;
        }
        if let Err(err) = self.move_to(uri, version, text, cursor) {
            (self.notify)(Notice::Log { error: true, message: format!("{uri}: cache update failed, dropping the warm cache: {err}") });
            self.sessions.insert(uri.to_owned(), Err(err));
        }
    }

    /// Brings a warm document's prompt to `text` with the cursor at `cursor`: a few edit sites, applied by PIE.
    fn move_to(&mut self, uri: &str, version: i32, text: String, cursor: usize) -> Result<(), String> {
        let context = self.context_for(uri);
        let Some(Ok(doc)) = self.sessions.get_mut(uri) else { return Err(format!("{uri} is not warm")) };
        let prompt = self.prompts.build_with_context(&text, cursor, &context);
        if prompt.text != doc.prompt.text {
            let edits = prompt_edits(&doc.prompt.text, &prompt.text);
            doc.session.update(&prompt.text, &edits).map_err(|e| e.to_string())?;
        }
        doc.version = version;
        doc.text = text;
        doc.cursor = cursor;
        doc.prompt = prompt;
        let bytes = doc.session.kv_bytes();
        self.touch(uri, bytes);
        Ok(())
    }

    /// Serves one completion: move the cached prompt to the request's cursor, generate until the block ends, the
    /// token cap, the time budget, or a cancellation. Returns the reply channel with the answer.
    #[allow(clippy::type_complexity)]
    fn complete(
        &mut self,
        request: CompleteRequest,
    ) -> Option<(oneshot::Sender<Result<CompletionOutcome, String>>, Result<CompletionOutcome, String>)> {
        let started = Instant::now();
        let CompleteRequest { uri, version, text, cursor, config, cancel, reply } = request;
        if let Err(err) = &self.engine {
            return Some((reply, Err(format!("no model loaded: {err}"))));
        }
        if cancel.load(Ordering::Relaxed) {
            return Some((reply, Err("cancelled".into())));
        }
        let before = match self.sessions.get(uri.as_str()) {
            Some(Ok(doc)) => doc.session.stats(),
            _ => {
                self.open(uri.clone(), version, text.clone(), cursor);
                match self.sessions.get(uri.as_str()) {
                    Some(Ok(_)) => CacheStats::default(),
                    Some(Err(err)) => return Some((reply, Err(err.clone()))),
                    None => return Some((reply, Err("could not warm the document".into()))),
                }
            }
        };
        if let Err(err) = self.move_to(&uri, version, text, cursor) {
            self.sessions.insert(uri.clone(), Err(err.clone()));
            return Some((reply, Err(err)));
        }
        let Some(Ok(doc)) = self.sessions.get_mut(uri.as_str()) else { return Some((reply, Err("not warm".into()))) };
        let line_start = doc.text[..doc.cursor].rfind('\n').map(|i| i + 1).unwrap_or(0);
        let line_end = doc.text[doc.cursor..].find('\n').map(|i| doc.cursor + i).unwrap_or(doc.text.len());
        let rest_of_line = &doc.text[doc.cursor..line_end];
        let generated = match generate_suggestion(&mut doc.session, &doc.text[line_start..doc.cursor], rest_of_line, &config, &cancel, started) {
            Ok(generated) => generated,
            Err(engine::EngineError::Cancelled) => return Some((reply, Err("cancelled".into()))),
            Err(err) => return Some((reply, Err(err.to_string()))),
        };
        let after = doc.session.stats();
        let outcome = CompletionOutcome {
            version: doc.version,
            text: generated.text,
            encoded_tokens: after.encoded_tokens.saturating_sub(before.encoded_tokens),
            // Cached prompt tokens this request did not have to encode.
            reused_tokens: (after.cached_tokens as u64).saturating_sub(after.encoded_tokens.saturating_sub(before.encoded_tokens)),
            latency_ms: started.elapsed().as_secs_f64() * 1e3,
            first_token_ms: generated.first_token_ms,
            generated_tokens: generated.tokens,
        };
        Some((reply, Ok(outcome)))
    }

    fn generate_once(&self, prompt: &str, max_tokens: usize, stop: Vec<String>) -> Result<String, String> {
        let engine = self.engine.as_ref().map_err(|e| format!("no model loaded: {e}"))?;
        let mut session = KvSession::open(engine, prompt).map_err(|e| e.to_string())?;
        let params = GenerateParams { max_tokens, sampling: SamplingParams::greedy(), stop };
        let generation = session.generate(&params, &AtomicBool::new(false), |_| {}).map_err(|e| e.to_string())?;
        Ok(generation.text)
    }

    fn touch(&mut self, uri: &str, bytes: usize) {
        let Some(pool) = self.pool.as_mut() else { return };
        for evicted in pool.touch(&uri.to_owned(), bytes) {
            tracing::info!("evicting the warm cache of {evicted} (warm-document limit)");
            self.sessions.remove(&evicted);
        }
    }

    /// Re-encodes one chunk of stale tokens, nearest to their edit first, if the budget allows; returns whether
    /// to go on (more remain and the budget is not spent). `pause` is when the edit this pause follows was made.
    fn refresh(&mut self, uri: &str, pause: Instant) -> bool {
        let Some(Ok(doc)) = self.sessions.get_mut(uri) else { return false };
        let session = &mut doc.session;
        if session.stale_tokens() == 0 {
            return false;
        }
        let config = session.engine().config().clone();
        let Some(allowed) = self.refresh_budget.allows(&config, pause) else { return false };
        let chunk = config.refresh_chunk.max(1).min(allowed);
        let (cpu0, done0) = (process_cpu_seconds(), session.stats().refreshed_tokens);
        // A command sent after this point cancels the chunk; one sent just before waits for at most one chunk.
        self.interrupt.store(false, Ordering::Relaxed);
        let more = match session.refresh_stale(chunk, &self.interrupt) {
            Ok(report) => report.remaining_stale > 0,
            Err(engine::EngineError::Cancelled) => true,
            Err(err) => {
                tracing::warn!("{uri}: idle refresh failed: {err}");
                false
            }
        };
        let done = session.stats().refreshed_tokens.saturating_sub(done0) as usize;
        self.refresh_budget.spend(done, process_cpu_seconds() - cpu0);
        more
    }
}

/// What the idle refresh may still do: an allowance of tokens per pause in typing (granted again after each
/// edit), and CPU seconds in any minute. When either is spent the warm thread sleeps until the next command.
#[derive(Default)]
struct RefreshBudget {
    /// The pause the allowance below belongs to (when the edit it follows was made).
    pause: Option<Instant>,
    left_this_pause: usize,
    /// CPU seconds of recent refresh chunks, with when each ended.
    recent: VecDeque<(Instant, f64)>,
}

impl RefreshBudget {
    /// Tokens the refresh may re-encode now, or `None` when the budget is spent.
    fn allows(&mut self, config: &EngineConfig, pause: Instant) -> Option<usize> {
        if self.pause != Some(pause) {
            self.pause = Some(pause);
            self.left_this_pause = config.refresh_tokens_per_pause;
        }
        let now = Instant::now();
        while self.recent.front().is_some_and(|(at, _)| now.duration_since(*at) > Duration::from_secs(60)) {
            self.recent.pop_front();
        }
        let spent: f64 = self.recent.iter().map(|(_, cpu)| cpu).sum();
        (self.left_this_pause > 0 && spent < config.refresh_cpu_seconds_per_minute).then_some(self.left_this_pause)
    }

    fn spend(&mut self, tokens: usize, cpu_seconds: f64) {
        self.left_this_pause = self.left_this_pause.saturating_sub(tokens);
        self.recent.push_back((Instant::now(), cpu_seconds.max(0.0)));
    }
}

/// CPU time of the whole process so far (user + system, all threads: llama.cpp's workers included).
fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return 0.0;
        }
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}
