//! Warm documents: the thread that owns the model and one PIE KV session per warm document, fed by the LSP
//! handlers through a channel.
//!
//! Why a thread and a channel: llama.cpp work is long, blocking CPU work, and edits must reach each session in
//! the order they were applied to the document store. The handlers send commands synchronously, right after
//! mutating the store (before their first `.await`), so the channel order is the edit order; this thread applies
//! them one by one. Consecutive edits of one document that queued up while the thread was busy are folded into
//! one update (one decode, one K-shift). When no command is waiting, stale tokens are re-encoded in small chunks,
//! nearest to their edit first, within a budget (tokens per pause, CPU seconds per minute) so that the server
//! goes quiet soon after the user does; any new command stops that, inside the running decode.
//!
//! Not LSP code: it knows documents by URI string and edits by byte offsets; `lsp/` turns LSP messages into its
//! commands and its notices into LSP notifications. The HTTP backends (`inference/`) are the other side of the
//! same seam: the LSP layer sends a completion either here or to a backend.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::engine::{self, CacheStats, Engine, EngineConfig, GenerateParams, KvSession, SamplingParams, TextEdit, WarmPool};
use crate::features::chat::{render, ChatMessage};
use crate::features::completion::{carry_unread, carry_window, generate_streaming, prompt_edits, text_after_cursor, CompletionConfig, CrossFileContext, Markers, Prompt, PromptBuilder, Streaming};

/// How long the warm thread waits for the next keystroke before it applies an edit to the cache, so that a burst
/// of typing is one PIE update rather than one per key. Any other command (a completion, a query) applies the
/// waiting edits at once, so no answer waits for this. `pie-ls bench typing` (4k tokens, 2 cores) measured one
/// update per keystroke at about 0.1 s of both cores each: a third of the session's CPU.
const EDIT_DEBOUNCE: Duration = Duration::from_millis(200);
/// The longest a burst of edits is held back (continuous typing still reaches the cache this often).
const EDIT_DEBOUNCE_MAX: Duration = Duration::from_millis(1500);

/// How long the document must be idle before stale tokens are refreshed.
const IDLE_BEFORE_REFRESH: Duration = Duration::from_millis(400);

/// Bytes one step of reading a window that was read around the cursor first adds to the prompt: ~110 tokens of
/// code, under a second at 4k tokens on 2 cores. Any command stops a step inside its decode, which leaves the
/// session as it was (`KvSession::update_interruptible`), so a stopped step's work is lost: steps stay small.
const READ_STEP_BYTES: usize = 384;

/// How long the user must pause before the window of the document in use is read on. Longer than the refresh's
/// wait: a step that a keystroke stops is work thrown away, and short pauses between bursts of typing (0.3-0.8 s
/// in `bench typing`) would stop most of them.
const READ_AFTER_IDLE: Duration = Duration::from_millis(1000);

/// Stale tokens re-encoded at a time while settling a window read in parts (the refresh's chunks, which a command
/// stops half-way; larger than the idle refresh's, which is bounded per pause).
const SETTLE_CHUNK_TOKENS: usize = 128;

/// Something the warm thread reports to the user (turned into `window/logMessage` / `$/progress` by the caller).
#[derive(Debug, Clone)]
pub enum Notice {
    ProgressBegin { token: String, title: String, message: String },
    /// A step of a long task already begun; `percentage` when its size is known.
    ProgressReport { token: String, message: String, percentage: Option<u32> },
    ProgressEnd { token: String, message: String },
    Log { error: bool, message: String },
    /// The warm thread panicked and started again without its documents: send every warm document's text again.
    /// `first`: the first time in this process (the one to show the user); `message` says what happened and what
    /// the thread runs with now.
    Restarted { first: bool, message: String },
}

pub enum Command {
    Open { uri: String, version: i32, text: String },
    /// `edits` are the document's edits in the order applied; the cursor is assumed at the end of the last one.
    /// The warm thread applies them to its own copy of the text (`WarmTexts`), sent once with `Open`.
    Edit { uri: String, version: i32, edits: Vec<TextEdit> },
    Close { uri: String },
    Stats { uri: String, reply: oneshot::Sender<Result<CacheStats, String>> },
    /// `pie/cacheCheck`: the warm copy (version, text) and whether its cache mirrors its prompt.
    Check { uri: String, reply: oneshot::Sender<Result<WarmCheck, String>> },
    Complete(CompleteRequest),
    /// A one-off greedy generation from `prompt` in a scratch session (naming an extracted function).
    Generate { prompt: String, max_tokens: usize, stop: Vec<String>, reply: mpsc::Sender<Result<String, String>> },
    /// The next assistant turn of a conversation (self-debug, performance candidates), rendered with the model's
    /// chat template into the chat slot: a conversation that extends the slot's last one re-encodes only what is new.
    Chat { messages: Vec<ChatMessage>, prefill: String, params: GenerateParams, cancel: Arc<AtomicBool>, reply: mpsc::Sender<Result<String, String>> },
}

impl Command {
    /// The command's name, for logs and the test hook.
    fn kind(&self) -> &'static str {
        match self {
            Command::Open { .. } => "open",
            Command::Edit { .. } => "edit",
            Command::Close { .. } => "close",
            Command::Stats { .. } => "stats",
            Command::Check { .. } => "check",
            Command::Complete(_) => "complete",
            Command::Generate { .. } => "generate",
            Command::Chat { .. } => "chat",
        }
    }
}

/// The warm thread's copy of each warm document's text, kept by applying the byte edits in order: the handlers
/// send the text once (`Open`) and then only edits, so a keystroke costs O(edit) on the message path.
#[derive(Default)]
pub struct WarmTexts {
    docs: HashMap<String, (i32, String)>,
}

impl WarmTexts {
    pub fn open(&mut self, uri: &str, version: i32, text: &str) {
        self.docs.insert(uri.to_owned(), (version, text.to_owned()));
    }

    pub fn close(&mut self, uri: &str) {
        self.docs.remove(uri);
    }

    pub fn get(&self, uri: &str) -> Option<(i32, &str)> {
        self.docs.get(uri).map(|(v, t)| (*v, t.as_str()))
    }

    /// Applies `edits` (each in the coordinates after the previous one) and returns the new text. An edit that
    /// does not fit the copy (out of range, inside a character) drops the copy: it cannot be trusted any more.
    pub fn apply(&mut self, uri: &str, version: i32, edits: &[TextEdit]) -> Result<&str, String> {
        let Some((current, text)) = self.docs.get_mut(uri) else {
            return Err(format!("{uri}: edits for a document the warm thread has no text of (ignored)"));
        };
        for edit in edits {
            let fits = edit.start_byte <= edit.old_end_byte
                && edit.old_end_byte <= text.len()
                && text.is_char_boundary(edit.start_byte)
                && text.is_char_boundary(edit.old_end_byte);
            if !fits {
                self.docs.remove(uri);
                return Err(format!("{uri}: an edit does not fit the warm copy of the text; the copy is dropped"));
            }
            text.replace_range(edit.start_byte..edit.old_end_byte, &edit.new_text);
        }
        *current = version;
        Ok(self.docs.get(uri).map(|(_, t)| t.as_str()).unwrap_or_default())
    }

    /// `Some(message)` when the copy at `version` differs from `text`, the store's text of that version.
    pub fn check(&self, uri: &str, version: i32, text: &str) -> Option<String> {
        let (v, copy) = self.get(uri)?;
        (v == version && copy != text).then(|| {
            format!("{uri}: the warm thread's copy of version {version} differed from the document ({} vs {} bytes); resynchronised", copy.len(), text.len())
        })
    }
}

/// How often the warm thread looks at the model file.
const MODEL_CHECK_EVERY: Duration = Duration::from_secs(2);

/// What identifies the model file's contents on disk.
#[derive(Clone, Debug, PartialEq)]
struct FileId {
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
}

fn file_id(path: &std::path::Path) -> Option<FileId> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(FileId { len: meta.len(), modified: meta.modified().ok(), inode })
}

/// The loaded model's file, watched so that its removal or truncation is reported once. The model was read into
/// memory (not mapped), so nothing that happens to the file can crash the server or change the loaded model.
struct ModelFile {
    path: std::path::PathBuf,
    loaded: Option<FileId>,
    checked_at: Instant,
    reported: bool,
}

impl ModelFile {
    fn of(path: &std::path::Path) -> ModelFile {
        ModelFile { path: path.to_path_buf(), loaded: file_id(path), checked_at: Instant::now(), reported: false }
    }

    /// What happened to the file since it was loaded, the first time it is noticed.
    fn problem(&mut self) -> Option<String> {
        if self.reported || self.checked_at.elapsed() < MODEL_CHECK_EVERY {
            return None;
        }
        self.checked_at = Instant::now();
        let path = self.path.display();
        let what = match (&self.loaded, file_id(&self.path)) {
            (_, None) => format!("the model file {path} was removed"),
            (Some(loaded), Some(now)) if now.len < loaded.len => format!("the model file {path} was truncated ({} -> {} bytes)", loaded.len, now.len),
            (Some(loaded), Some(now)) if now != *loaded => format!("the model file {path} changed on disk"),
            _ => return None,
        };
        self.reported = true;
        Some(format!("{what} while the server runs; the model was read into memory when it loaded, so completions keep working with that copy (restart the server to load the file again)"))
    }
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
    /// When the request arrived: the first-suggestion time and the budget count from here.
    pub received: Instant,
    /// Raised by a keystroke in the document: stop generating (before the answer: answer `Err("cancelled")`;
    /// after it: end the extension).
    pub cancel: Arc<AtomicBool>,
    /// Raised when the request is over for its caller (`$/cancelRequest`, or answered): before the answer it
    /// cancels like `cancel`; it does not end the extension.
    pub abandoned: Arc<AtomicBool>,
    /// Set to the answered suggestion, then to each extension of it.
    pub growing: Growing,
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

/// What `Command::Check` found.
pub struct WarmCheck {
    pub version: i32,
    /// The warm thread's copy of the document.
    pub text: String,
    pub cached_tokens: usize,
    pub fresh_tokens: usize,
    pub first_mismatch: Option<usize>,
    pub prompt_matches: bool,
}

/// The LSP side's handle. Cloning is cheap; sending never blocks.
#[derive(Clone)]
pub struct WarmHandle {
    tx: Sender<Command>,
    /// Raised on every send so the thread abandons an idle refresh as soon as real work arrives.
    interrupt: Arc<AtomicBool>,
}

impl WarmHandle {
    /// A handle and the receiving end of its channel, without a thread (benchmarks drain it themselves).
    pub fn channel() -> (WarmHandle, Receiver<Command>) {
        let (tx, rx) = mpsc::channel();
        (WarmHandle { tx, interrupt: Arc::new(AtomicBool::new(false)) }, rx)
    }

    pub fn send(&self, cmd: Command) {
        // A stats query is answered between refresh chunks; only text changes are worth abandoning a chunk for.
        if !matches!(cmd, Command::Stats { .. } | Command::Check { .. }) {
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
        .spawn(move || supervise(rx, model_spec, config, completion, flag, std::rc::Rc::new(notify)))
        .expect("spawning the warm thread");
    WarmHandle { tx, interrupt }
}

/// Warm-thread panics tolerated before it runs without a model (each restart re-reads every warm document).
const MAX_RESTARTS: usize = 3;

/// Runs the warm thread and starts it again when it panics: the same channel (the handlers keep their handle),
/// the same loaded model (its weights are read-only and were read into memory, not mapped: see
/// `EngineConfig::use_mmap`), new sessions. Documents come back through `Notice::Restarted`.
fn supervise(
    rx: Receiver<Command>,
    model_spec: Option<String>,
    config: EngineConfig,
    completion: CompletionConfig,
    interrupt: Arc<AtomicBool>,
    notify: std::rc::Rc<dyn Fn(Notice)>,
) {
    let mut engine: Option<Result<Engine, String>> = None;
    let mut restarts = 0;
    loop {
        let loaded = engine.get_or_insert_with(|| load(model_spec.clone(), config.clone(), &*notify)).clone();
        let warm = Warm::new(loaded, &completion, Arc::clone(&interrupt), std::rc::Rc::clone(&notify));
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| warm.run(&rx)));
        let Err(panic) = outcome else { return };
        let what = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("unknown panic")
            .to_owned();
        restarts += 1;
        let message = if restarts > MAX_RESTARTS {
            engine = Some(Err(format!("the model thread crashed {restarts} times (last: {what})")));
            format!("the model thread crashed again ({what}); it now runs without a model: documents are still served, completions and model actions are off until the server restarts")
        } else {
            format!("the model thread crashed ({what}) and was restarted with the loaded model; warm caches are rebuilt")
        };
        tracing::error!("{message}");
        notify(Notice::Restarted { first: restarts == 1 || restarts == MAX_RESTARTS + 1, message });
    }
}

/// The test hook of the fault-path tests: `PIE_LS_TEST_PANIC=<command>` (`open`, `edit`, `complete`, `stats`,
/// ...) makes the warm thread panic on the first such command, `<command>:always` on every one; `codeAction`
/// makes that LSP handler panic (`lsp/guard.rs` contains it). Ignored unless set.
pub(crate) fn test_panic(kind: &str) {
    static FIRED: AtomicBool = AtomicBool::new(false);
    let Ok(hook) = std::env::var("PIE_LS_TEST_PANIC") else { return };
    let (name, always) = match hook.split_once(':') {
        Some((name, mode)) => (name.to_owned(), mode == "always"),
        None => (hook, false),
    };
    if name == kind && (always || !FIRED.swap(true, Ordering::Relaxed)) {
        panic!("PIE_LS_TEST_PANIC on {kind}");
    }
}

/// Resolve the model spec; an `hf:` download shows as `$/progress` (begin, a report per percent, end).
fn resolve_reporting(spec: Option<&str>, notify: &dyn Fn(Notice)) -> Result<std::path::PathBuf, String> {
    use engine::hub::DownloadEvent;
    let token = "pie-ls/download-model".to_owned();
    let (mut begun, mut last_pct) = (false, None);
    let result = engine::resolve_model_reporting(spec, &mut |event| match event {
        DownloadEvent::Start { url, total, resumed_at } => {
            let size = total.map(|t| format!(" ({} MB)", t >> 20)).unwrap_or_default();
            let what = if resumed_at > 0 { format!("resuming {url}{size} at {} MB", resumed_at >> 20) } else { format!("{url}{size}") };
            if !begun {
                notify(Notice::ProgressBegin { token: token.clone(), title: "pie-ls: downloading model".into(), message: what });
                begun = true;
            }
        }
        DownloadEvent::Bytes { done, total } => {
            let pct = total.filter(|t| *t > 0).map(|t| (done.saturating_mul(100) / t).min(100) as u32);
            if begun && (pct != last_pct || pct.is_none()) {
                last_pct = pct;
                notify(Notice::ProgressReport { token: token.clone(), message: format!("{} MB", done >> 20), percentage: pct });
            }
        }
        DownloadEvent::Verifying => {
            if begun {
                notify(Notice::ProgressReport { token: token.clone(), message: "checking sha256".into(), percentage: Some(100) });
            }
        }
    })
    .map_err(|e| e.to_string());
    if begun {
        let message = match &result {
            Ok(_) => "downloaded".to_string(),
            Err(e) => format!("failed: {e}"),
        };
        notify(Notice::ProgressEnd { token, message });
    }
    result
}

fn load(model_spec: Option<String>, config: EngineConfig, notify: &dyn Fn(Notice)) -> Result<Engine, String> {
    let spec = model_spec.or_else(|| std::env::var(engine::MODEL_ENV).ok()).filter(|s| !s.trim().is_empty());
    let path = resolve_reporting(spec.as_deref(), notify);
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

/// The `$/progress` token of reading `uri` into the model (the open, and a window read around the cursor first).
fn reading_token(uri: &str) -> String {
    format!("pie-ls/warm/{uri}")
}

/// Whether `edits` (one update's, folded) look like typing: each inserts and removes at most
/// `TYPING_EDIT_BYTES`, all within `TYPING_SPAN_BYTES` of each other (a rename's edits all over the file are not).
fn is_typing(edits: &[TextEdit]) -> bool {
    let small = edits.iter().all(|e| e.new_text.len() <= TYPING_EDIT_BYTES && e.old_end_byte.saturating_sub(e.start_byte) <= TYPING_EDIT_BYTES);
    let (lo, hi) = edits.iter().fold((usize::MAX, 0), |(lo, hi), e| (lo.min(e.start_byte), hi.max(e.start_byte)));
    small && !edits.is_empty() && hi - lo <= TYPING_SPAN_BYTES
}

const TYPING_EDIT_BYTES: usize = 32;
const TYPING_SPAN_BYTES: usize = 2048;

/// One warm document: its KV session mirrors `prompt`, built from `text` with the cursor at `cursor`.
struct WarmDoc {
    session: KvSession,
    version: i32,
    text: String,
    cursor: usize,
    prompt: Prompt,
    /// While the window is being read (see `Warm::read_step`): how many bytes were unread when it began, for the
    /// progress shown. Stays set after the last bytes are read until what the reading left stale is re-encoded.
    reading: Option<usize>,
    /// Whether the reading's `$/progress` is open (it ends while the user works in another document).
    progress_shown: bool,
}

struct Warm {
    engine: Result<Engine, String>,
    prompts: PromptBuilder,
    /// Other documents' recently edited code, placed before each prompt (models with a file separator only).
    context: Option<CrossFileContext>,
    sessions: HashMap<String, Result<WarmDoc, String>>,
    pool: Option<WarmPool<String>>,
    /// The text of every warm-eligible document, kept by applying the edits: sessions come and go (eviction,
    /// failures), the text stays.
    texts: WarmTexts,
    /// Size, modification time and inode of the model file when it was loaded, and when it was last checked.
    model_file: Option<ModelFile>,
    notify: std::rc::Rc<dyn Fn(Notice)>,
    interrupt: Arc<AtomicBool>,
    queue: VecDeque<Command>,
    /// The one conversation kept warm (the last self-debug or performance request).
    chat: engine::ChatSlot,
    refresh_budget: RefreshBudget,
}

impl Warm {
    fn new(engine: Result<Engine, String>, completion: &CompletionConfig, interrupt: Arc<AtomicBool>, notify: std::rc::Rc<dyn Fn(Notice)>) -> Warm {
        let markers = engine.as_ref().ok().and_then(Markers::of_model);
        let context = engine.as_ref().ok().and_then(CrossFileContext::of_model);
        let n_ctx = engine.as_ref().map_or(usize::MAX, |e| e.config().n_ctx);
        let (prefix_bytes, suffix_bytes) = window_bytes_for_context(completion.prefix_bytes, completion.suffix_bytes, n_ctx, context.is_some());
        if (prefix_bytes, suffix_bytes) != (completion.prefix_bytes, completion.suffix_bytes) {
            tracing::info!(prefix_bytes, suffix_bytes, n_ctx, "the prompt window is narrowed to fit model.contextLength");
        }
        let prompts = PromptBuilder::new(markers, prefix_bytes, suffix_bytes).with_first_read(completion.first_read_bytes);
        let model_file = engine.as_ref().ok().map(|e| ModelFile::of(&e.info().path));
        Warm {
            engine,
            prompts,
            context,
            sessions: HashMap::new(),
            pool: None,
            texts: WarmTexts::default(),
            model_file,
            notify,
            interrupt,
            queue: VecDeque::new(),
            chat: engine::ChatSlot::new(),
            refresh_budget: RefreshBudget::default(),
        }
    }

    fn run(mut self, rx: &Receiver<Command>) {
        if let Ok(engine) = &self.engine {
            self.pool = Some(WarmPool::from_config(engine.config()));
        }
        let mut last_edited: Option<String> = None;
        // The document the user works in (opened, edited or asked in last): the only one whose window is read in
        // idle time. A document opened and left is not read on, so browsing files does not set the cores to work.
        let mut focus: Option<String> = None;
        let mut last_edit_at = Instant::now();
        loop {
            self.watch_model();
            if self.queue.is_empty() {
                // Idle time counts from the last edit: queries (cacheStats) do not postpone the refresh.
                let reading = focus.as_deref().is_some_and(|u| self.is_reading(u));
                let next = if last_edited.is_some() || reading {
                    let idle = if reading { READ_AFTER_IDLE } else { IDLE_BEFORE_REFRESH };
                    rx.recv_timeout(idle.saturating_sub(last_edit_at.elapsed()))
                } else {
                    // Wakes up now and then to look at the model file.
                    rx.recv_timeout(MODEL_CHECK_EVERY)
                };
                match next {
                    Ok(cmd) => self.queue.push_back(cmd),
                    Err(RecvTimeoutError::Timeout) => {
                        // A window read around the cursor first is read on before anything is refreshed.
                        if reading && focus.as_deref().is_some_and(|u| self.read_step(u)) {
                            continue;
                        }
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
            tracing::trace!(kind = cmd.kind(), "warm: command");
            test_panic(cmd.kind());
            if let Command::Open { uri, .. } | Command::Edit { uri, .. } | Command::Complete(CompleteRequest { uri, .. }) = &cmd {
                if focus.as_deref() != Some(uri.as_str()) {
                    if let Some(left) = focus.replace(uri.clone()) {
                        self.pause_reading(&left);
                    }
                }
            }
            match cmd {
                Command::Open { uri, version, text } => {
                    let cursor = text.len();
                    self.texts.open(&uri, version, &text);
                    self.open(uri, version, text, cursor, false);
                }
                Command::Edit { uri, mut version, mut edits } => {
                    let held_since = Instant::now();
                    loop {
                        while let Some(Command::Edit { uri: next_uri, .. }) = self.queue.front() {
                            if *next_uri != uri {
                                break;
                            }
                            let Some(Command::Edit { version: v, edits: next_edits, .. }) = self.queue.pop_front() else { break };
                            version = v;
                            edits.extend(next_edits);
                        }
                        // Something else is waiting (a completion, a query, another document): apply now.
                        if !self.queue.is_empty() || held_since.elapsed() >= EDIT_DEBOUNCE_MAX {
                            break;
                        }
                        match rx.recv_timeout(EDIT_DEBOUNCE) {
                            Ok(cmd) => self.queue.push_back(cmd),
                            Err(_) => break,
                        }
                    }
                    let text = match self.texts.apply(&uri, version, &edits) {
                        Ok(text) => text.to_owned(),
                        Err(err) => {
                            // Unknown documents are normal right after a restart (their `Open` follows); a bad edit
                            // is not, and the copy is dropped rather than trusted.
                            tracing::debug!("{err}");
                            self.sessions.remove(&uri);
                            continue;
                        }
                    };
                    let t = Instant::now();
                    self.edit(&uri, version, text, &edits);
                    tracing::debug!(version, edits = edits.len(), ms = t.elapsed().as_secs_f64() * 1e3, "warm: edit applied");
                    last_edited = Some(uri);
                    last_edit_at = Instant::now();
                }
                Command::Close { uri } => {
                    self.texts.close(&uri);
                    if let Some(Ok(doc)) = self.sessions.remove(&uri) {
                        self.end_reading(&uri, &doc, "closed");
                    }
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
                        (Ok(_), Some(Ok(doc))) => Ok(CacheStats { unread_bytes: doc.prompt.unread_bytes(), reading: doc.reading.is_some(), ..doc.session.stats() }),
                        (Ok(_), Some(Err(err))) => Err(format!("{uri} has no warm cache: {err}")),
                        (Ok(_), None) => Err(format!("{uri} has no warm cache (not open, closed, or evicted by the warm-document limit)")),
                    };
                    let _ = reply.send(stats);
                }
                Command::Check { uri, reply } => {
                    let _ = reply.send(self.check(&uri));
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
                    // The request carries the store's text: the warm copy of the same version must equal it.
                    if let Some(diverged) = self.texts.check(&request.uri, request.version, &request.text) {
                        (self.notify)(Notice::Log { error: true, message: diverged });
                        self.texts.open(&request.uri, request.version, &request.text);
                    }
                    let uri = request.uri.clone();
                    // Any command sent from here on ends the extension of this suggestion; one already waiting
                    // means there is none.
                    self.interrupt.store(false, Ordering::Relaxed);
                    self.queue.extend(rx.try_iter());
                    let may_extend = self.queue.is_empty();
                    let outcome = self.complete(request, may_extend);
                    if let Some((reply, outcome)) = outcome {
                        let _ = reply.send(outcome);
                    }
                    last_edited = Some(uri);
                    last_edit_at = Instant::now();
                }
            }
        }
    }

    /// Opens a warm session for `uri`. A window too large to read at once (`PromptBuilder::read_first`) is read
    /// around the cursor first when `cursor_known` (an edit or a request brought it), and not at all otherwise
    /// (`didOpen` says nothing of the cursor): the first edit or request reads around its cursor, idle time the rest.
    fn open(&mut self, uri: String, version: i32, text: String, cursor: usize, cursor_known: bool) {
        if self.engine.is_err() {
            return;
        }
        if let Some(Ok(old)) = self.sessions.remove(&uri) {
            self.end_reading(&uri, &old, "reopened");
        }
        self.make_room(&uri);
        let Ok(engine) = &self.engine else { return };
        let token = reading_token(&uri);
        (self.notify)(Notice::ProgressBegin { token: token.clone(), title: "pie-ls: reading file into the model".into(), message: uri.clone() });
        let context = self.context_for(&uri);
        let whole = self.prompts.build_with_context(&text, cursor, &context);
        let prompt = match self.prompts.read_first(&text, cursor, &context, &whole, None) {
            Some(first) if cursor_known => first,
            _ => self.prompts.build_unread(&text, cursor, &context, whole.clone()),
        };
        // A prompt read in parts gets a context sized for the whole window, which it grows to.
        let room = if prompt.unread.is_some() { engine.tokenize(&whole.text, true).len() } else { 0 };
        let session = KvSession::open_with_room(engine, &prompt.text, room).map_err(|e| e.to_string());
        let reading = (prompt.unread.is_some()).then(|| prompt.unread_bytes());
        match &session {
            Ok(_) if reading.is_some() => {
                let message = "read around the cursor at the first edit or request, the rest when idle".to_owned();
                (self.notify)(Notice::ProgressReport { token, message, percentage: Some(0) });
            }
            Ok(s) => (self.notify)(Notice::ProgressEnd { token, message: format!("{} tokens cached", s.stats().cached_tokens) }),
            Err(err) => {
                (self.notify)(Notice::Log { error: false, message: format!("{uri} stays cold: {err}") });
                (self.notify)(Notice::ProgressEnd { token, message: "not cached".into() });
            }
        }
        let bytes = session.as_ref().map(|s| s.kv_bytes()).unwrap_or(0);
        let progress_shown = reading.is_some();
        let doc = session.map(|session| WarmDoc { session, version, text, cursor, prompt, reading, progress_shown });
        self.sessions.insert(uri.clone(), doc);
        self.touch(&uri, bytes);
    }

    /// Ends the reading progress of `doc`, if it was being read (closed, dropped, or read to the end).
    fn end_reading(&self, uri: &str, doc: &WarmDoc, message: &str) {
        if doc.reading.is_some() && doc.progress_shown {
            (self.notify)(Notice::ProgressEnd { token: reading_token(uri), message: message.to_owned() });
        }
    }

    /// Whether `uri`'s window is still being read.
    fn is_reading(&self, uri: &str) -> bool {
        matches!(self.sessions.get(uri), Some(Ok(d)) if d.reading.is_some())
    }

    /// The user left `uri` for another document: its reading waits until it is used again, and its progress ends
    /// until then.
    fn pause_reading(&mut self, uri: &str) {
        if let Some(Ok(doc)) = self.sessions.get_mut(uri) {
            if doc.reading.is_some() && doc.progress_shown {
                doc.progress_shown = false;
                let message = format!("paused with {} bytes to read: goes on when the document is used again", doc.prompt.unread_bytes());
                (self.notify)(Notice::ProgressEnd { token: reading_token(uri), message });
            }
        }
    }

    /// One step of reading `uri`'s window, which was read around the cursor first (`PromptBuilder::read_first`)
    /// or not at all (opened): the next bytes of the prefix gap;
    /// once the gap is read, a chunk of the tokens the steps left stale (the part around the cursor, which did not
    /// see the text before it); then the suffix's next bytes. The end is a cache as exact as a full read. Returns
    /// whether a step ran. Not budgeted like the refresh: it is the read an open did at once before (~30 s of
    /// both cores for a 16 kB window), moved after the first suggestion, and every command stops it.
    fn read_step(&mut self, uri: &str) -> bool {
        let uri = uri.to_owned();
        if !self.is_reading(&uri) {
            return false;
        }
        let context = self.context_for(&uri);
        let Some(Ok(doc)) = self.sessions.get_mut(&uri) else { return false };
        if !doc.progress_shown {
            doc.progress_shown = true;
            let message = format!("{} bytes to read", doc.prompt.unread_bytes());
            (self.notify)(Notice::ProgressBegin { token: reading_token(&uri), title: "pie-ls: reading the window into the model".into(), message });
        }
        let total = doc.reading.unwrap_or(0).max(1);
        let t = Instant::now();
        // Any command from here on stops the step (or the settling) between two graph nodes.
        self.interrupt.store(false, Ordering::Relaxed);
        let next = self.prompts.read_more(&doc.text, doc.cursor, &context, &doc.prompt, READ_STEP_BYTES, true);
        let result = if let Some(next) = next {
            Self::apply_read(doc, next, &self.interrupt)
        } else if doc.session.stale_tokens() > 0 {
            match doc.session.refresh_stale(SETTLE_CHUNK_TOKENS, &self.interrupt) {
                Ok(report) if report.encoded_tokens == 0 => {
                    // Not expected (stale tokens are what the refresh finds); stop reading rather than loop. The
                    // prompt stays consistent, with its unread part unread.
                    tracing::warn!(uri, stale = doc.session.stale_tokens(), "settling a window read in parts made no progress; reading stops");
                    doc.reading = None;
                    doc.progress_shown = false;
                    (self.notify)(Notice::ProgressEnd { token: reading_token(&uri), message: "stopped".into() });
                    return true;
                }
                Ok(_) | Err(engine::EngineError::Cancelled) => Ok(()),
                Err(err) => Err(err.to_string()),
            }
        } else if let Some(next) = self.prompts.read_more(&doc.text, doc.cursor, &context, &doc.prompt, READ_STEP_BYTES, false) {
            Self::apply_read(doc, next, &self.interrupt)
        } else {
            let message = format!("{} tokens cached", doc.session.stats().cached_tokens);
            tracing::debug!(uri, "warm: window read");
            doc.reading = None;
            doc.progress_shown = false;
            (self.notify)(Notice::ProgressEnd { token: reading_token(&uri), message });
            return true;
        };
        let Some(Ok(doc)) = self.sessions.get_mut(&uri) else { return false };
        let unread = doc.prompt.unread_bytes();
        tracing::debug!(unread, stale = doc.session.stale_tokens(), ms = t.elapsed().as_secs_f64() * 1e3, spans = ?doc.session.stale_spans().iter().take(4).map(|s| (s.start, s.end, s.origin)).collect::<Vec<_>>(), n = doc.session.tokens().len(), "warm: read step");
        match result {
            Ok(()) => {
                let percentage = Some(((total - unread.min(total)) * 100 / total) as u32);
                let message = format!("{} tokens cached, {unread} bytes to read", doc.session.stats().cached_tokens);
                (self.notify)(Notice::ProgressReport { token: reading_token(&uri), message, percentage });
                let bytes = doc.session.kv_bytes();
                self.touch(&uri, bytes);
            }
            Err(err) => {
                (self.notify)(Notice::Log { error: true, message: format!("{uri}: reading the window failed, dropping the warm cache: {err}") });
                if let Some(Ok(doc)) = self.sessions.insert(uri.clone(), Err(err)) {
                    self.end_reading(&uri, &doc, "failed");
                }
            }
        }
        true
    }

    /// Applies one read step's prompt: the new bytes are encoded after what comes before them, and nothing else
    /// is re-encoded (the settling does that: a correction window would spend its tokens at every step). A
    /// command arriving meanwhile stops the step's decode (`KvSession::update_interruptible`): the session and the
    /// prompt stay as they were, and the step is taken again at the next pause.
    fn apply_read(doc: &mut WarmDoc, (next, edit): (Prompt, TextEdit), interrupt: &AtomicBool) -> Result<(), String> {
        match doc.session.update_interruptible(&next.text, &[edit], interrupt) {
            Ok(_) => {
                doc.prompt = next;
                Ok(())
            }
            Err(engine::EngineError::Cancelled) => {
                tracing::debug!("warm: read step stopped by a command");
                Ok(())
            }
            Err(err) => Err(err.to_string()),
        }
    }

    /// Reports, once, that the loaded model's file was removed or changed.
    fn watch_model(&mut self) {
        if let Some(problem) = self.model_file.as_mut().and_then(ModelFile::problem) {
            tracing::warn!("{problem}");
            (self.notify)(Notice::Log { error: true, message: problem });
        }
    }

    fn context_for(&self, uri: &str) -> String {
        self.context.as_ref().map(|c| c.for_document(uri)).unwrap_or_default()
    }

    fn edit(&mut self, uri: &str, version: i32, text: String, edits: &[TextEdit]) {
        let cursor = edits.last().map(|e| e.start_byte + e.new_text.len()).unwrap_or(0).min(text.len());
        if let Some(context) = self.context.as_mut() {
            context.note_edit(uri, &text, cursor);
        }
        // Judged against the text before the edit, while the session still holds it.
        let large = match self.sessions.get(uri) {
            Some(Ok(doc)) => is_large_removal(edits, &doc.text, &text),
            _ => false,
        };
        if !matches!(self.sessions.get(uri), Some(Ok(_))) {
            // Evicted or failed earlier: a new edit is a reason to try warming it again.
            if self.engine.is_ok() {
                self.open(uri.to_owned(), version, text, cursor, true);
            }
            return;
        }
        // The prompt follows typing anywhere (the user is working there: moving the window now, in the background,
        // means the request that follows finds it in place), but a larger edit only when the window may stay for
        // it: a block pasted or deleted far away would move the window there and back.
        let cursor = match self.sessions.get(uri) {
            Some(Ok(doc)) if !is_typing(edits) => self.prompts.cursor_after_edit(&doc.text, &text, doc.cursor, &doc.prompt, cursor),
            _ => cursor,
        };
        if let Err(err) = self.move_to(uri, version, text, cursor) {
            (self.notify)(Notice::Log { error: true, message: format!("{uri}: cache update failed, dropping the warm cache: {err}") });
            if let Some(Ok(doc)) = self.sessions.insert(uri.to_owned(), Err(err)) {
                self.end_reading(uri, &doc, "failed");
            }
        } else if large {
            self.grant_catch_up(uri);
        }
    }

    /// Brings a warm document's prompt to `text` with the cursor at `cursor`: a few edit sites, applied by PIE.
    fn move_to(&mut self, uri: &str, version: i32, text: String, cursor: usize) -> Result<(), String> {
        let context = self.context_for(uri);
        let Some(Ok(doc)) = self.sessions.get_mut(uri) else { return Err(format!("{uri} is not warm")) };
        let kept = carry_window(&doc.text, &text, (doc.prompt.window_start, doc.prompt.window_end));
        let unread = doc.prompt.unread.map(|u| carry_unread(&doc.text, &text, u));
        let prompt = self.prompts.build_keeping(&text, cursor, &context, kept, unread);
        // What the cache holds, in `text`'s bytes: a window that enters far from it is read around the cursor first.
        let held = Prompt { text: String::new(), window_start: kept.0, window_end: kept.1, unread };
        let prompt = match self.prompts.read_first(&text, cursor, &context, &prompt, Some(&held)) {
            Some(first) => {
                // Sized for the whole window now, while the prompt is small.
                doc.session.set_room(self.engine.as_ref().map_or(0, |e| e.tokenize(&prompt.text, true).len()));
                first
            }
            None => prompt,
        };
        if (prompt.window_start, prompt.window_end) != kept {
            tracing::debug!(from = ?kept, to = ?(prompt.window_start, prompt.window_end), len = text.len(), unread = prompt.unread_bytes(), "warm: prompt window moved");
        }
        if prompt.unread.is_some() && doc.reading.is_none() {
            doc.reading = Some(prompt.unread_bytes());
        } else if let (Some(total), Some(_)) = (doc.reading, prompt.unread) {
            doc.reading = Some(total.max(prompt.unread_bytes()));
        }
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

    /// After a large edit of `uri`'s text: the catch-up allowance for the stale tokens it left (see
    /// `RefreshBudget`).
    fn grant_catch_up(&mut self, uri: &str) {
        let Some(Ok(doc)) = self.sessions.get(uri) else { return };
        // The whole allowance, not the stale count: re-encoding a run can leave a few tokens after it stale in the
        // second order. What is not needed lapses once nothing is stale.
        let (stale, grant) = (doc.session.stale_tokens(), doc.session.engine().config().refresh_large_edit_tokens);
        tracing::debug!(stale, grant, "warm: large edit, catch-up granted");
        if stale > 0 {
            self.refresh_budget.grant_catch_up(uri, grant);
        }
    }

    /// Serves one completion: move the cached prompt to the request's cursor, generate until the block ends, the
    /// token cap, the time budget, or a cancellation. With a first-suggestion time the answer goes out (through
    /// the reply channel) when that time has passed, and generation goes on to extend `growing` until the block
    /// ends, a keystroke, or another command (`may_extend` false: one is already waiting, so the answer is not
    /// extended). Returns the reply channel with the answer when it was not sent yet.
    #[allow(clippy::type_complexity)]
    fn complete(
        &mut self,
        request: CompleteRequest,
        may_extend: bool,
    ) -> Option<(oneshot::Sender<Result<CompletionOutcome, String>>, Result<CompletionOutcome, String>)> {
        let CompleteRequest { uri, version, text, cursor, config, received: started, cancel, abandoned, growing, reply } = request;
        if let Err(err) = &self.engine {
            return Some((reply, Err(format!("no model loaded: {err}"))));
        }
        let cancelled = || cancel.load(Ordering::Relaxed) || abandoned.load(Ordering::Relaxed);
        if cancelled() {
            return Some((reply, Err("cancelled".into())));
        }
        let before = match self.sessions.get(uri.as_str()) {
            Some(Ok(doc)) => doc.session.stats(),
            _ => {
                self.open(uri.clone(), version, text.clone(), cursor, true);
                match self.sessions.get(uri.as_str()) {
                    Some(Ok(_)) => CacheStats::default(),
                    Some(Err(err)) => return Some((reply, Err(err.clone()))),
                    None => return Some((reply, Err("could not warm the document".into()))),
                }
            }
        };
        let waited_ms = started.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        if let Err(err) = self.move_to(&uri, version, text, cursor) {
            self.sessions.insert(uri.clone(), Err(err.clone()));
            return Some((reply, Err(err)));
        }
        tracing::debug!(version, waited_ms, move_ms = t.elapsed().as_secs_f64() * 1e3, "warm: completion starts");
        let interrupt = Arc::clone(&self.interrupt);
        let Some(Ok(doc)) = self.sessions.get_mut(uri.as_str()) else { return Some((reply, Err("not warm".into()))) };
        let line_start = doc.text[..doc.cursor].rfind('\n').map(|i| i + 1).unwrap_or(0);
        let after = doc.session.stats();
        let doc_version = doc.version;
        let outcome = |generated: &crate::features::completion::Generated| CompletionOutcome {
            version: doc_version,
            text: generated.text.clone(),
            encoded_tokens: after.encoded_tokens.saturating_sub(before.encoded_tokens),
            // Cached prompt tokens this request did not have to encode.
            reused_tokens: (after.cached_tokens as u64).saturating_sub(after.encoded_tokens.saturating_sub(before.encoded_tokens)),
            latency_ms: started.elapsed().as_secs_f64() * 1e3,
            first_token_ms: generated.first_token_ms,
            generated_tokens: generated.tokens,
        };
        let mut reply = Some(reply);
        let first_after = config.first_suggestion_after();
        let stop_extension = || !may_extend || cancel.load(Ordering::Relaxed) || interrupt.load(Ordering::Relaxed);
        let mut on_first = |generated: &crate::features::completion::Generated| {
            tracing::debug!(
                first_token_ms = generated.first_token_ms,
                answered_ms = started.elapsed().as_secs_f64() * 1e3,
                tokens = generated.tokens,
                "warm: first answer"
            );
            growing.set(&generated.text);
            if let Some(reply) = reply.take() {
                let _ = reply.send(Ok(outcome(generated)));
            }
        };
        let mut on_extended = |text: &str| growing.set(text);
        let mut streaming = Streaming { first_after, stop_extension: &stop_extension, interrupt: Some(&*interrupt), on_first: &mut on_first, on_extended: &mut on_extended };
        let result = generate_streaming(&mut doc.session, &doc.text[line_start..doc.cursor], text_after_cursor(&doc.text, doc.cursor), &config, &cancelled, started, &mut streaming);
        let reply = reply?;
        match result {
            Ok(_) => None,
            Err(engine::EngineError::Cancelled) => Some((reply, Err("cancelled".into()))),
            Err(err) => Some((reply, Err(err.to_string()))),
        }
    }

    fn check(&self, uri: &str) -> Result<WarmCheck, String> {
        let engine = self.engine.as_ref().map_err(|e| format!("no model loaded: {e}"))?;
        let doc = match self.sessions.get(uri) {
            Some(Ok(doc)) => doc,
            Some(Err(err)) => return Err(format!("{uri} has no warm cache: {err}")),
            None => return Err(format!("{uri} has no warm cache (not open, closed, or evicted by the warm-document limit)")),
        };
        let cached = doc.session.tokens();
        let fresh = engine.tokenize(doc.session.text(), true);
        let first_mismatch = cached.iter().zip(fresh.iter()).position(|(a, b)| a != b).or((cached.len() != fresh.len()).then(|| cached.len().min(fresh.len())));
        Ok(WarmCheck {
            version: doc.version,
            text: doc.text.clone(),
            cached_tokens: cached.len(),
            fresh_tokens: fresh.len(),
            first_mismatch,
            prompt_matches: doc.session.text() == doc.prompt.text,
        })
    }

    fn generate_once(&self, prompt: &str, max_tokens: usize, stop: Vec<String>) -> Result<String, String> {
        let engine = self.engine.as_ref().map_err(|e| format!("no model loaded: {e}"))?;
        let mut session = KvSession::open(engine, prompt).map_err(|e| e.to_string())?;
        let params = GenerateParams { max_tokens, sampling: SamplingParams::greedy(), stop };
        let generation = session.generate(&params, &AtomicBool::new(false), |_| {}).map_err(|e| e.to_string())?;
        Ok(generation.text)
    }

    /// Evicts before a new session for `uri` is built, so that the warm caches never number more than the limit,
    /// not even while one is built.
    fn make_room(&mut self, uri: &str) {
        let Some(pool) = self.pool.as_mut() else { return };
        for evicted in pool.make_room(&uri.to_owned()) {
            self.evict(&evicted);
        }
    }

    fn evict(&mut self, evicted: &str) {
        tracing::info!("evicting the warm cache of {evicted} (warm-document limit)");
        if let Some(Ok(doc)) = self.sessions.remove(evicted) {
            self.end_reading(evicted, &doc, "evicted (warm-document limit)");
        }
    }

    fn touch(&mut self, uri: &str, bytes: usize) {
        let Some(pool) = self.pool.as_mut() else { return };
        for evicted in pool.touch(&uri.to_owned(), bytes) {
            self.evict(&evicted);
        }
    }

    /// Re-encodes one chunk of stale tokens, nearest to their edit first, if the budget allows; returns whether
    /// to go on (more remain and the budget is not spent). `pause` is when the edit this pause follows was made.
    fn refresh(&mut self, uri: &str, pause: Instant) -> bool {
        let Some(Ok(doc)) = self.sessions.get_mut(uri) else { return false };
        let session = &mut doc.session;
        if session.stale_tokens() == 0 {
            self.refresh_budget.caught_up(uri);
            return false;
        }
        let config = session.engine().config().clone();
        let Some(allowed) = self.refresh_budget.allows(&config, uri, pause) else { return false };
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
        let cpu = process_cpu_seconds() - cpu0;
        tracing::debug!(tokens = done, cpu_s = cpu, more, "warm: refresh chunk");
        self.refresh_budget.spend(uri, done, cpu);
        if !more {
            self.refresh_budget.caught_up(uri);
        }
        more
    }
}

/// The prompt window's byte budgets (`completion.prefixBytes` / `suffixBytes`) narrowed, in proportion, to what a
/// context of `n_ctx` tokens holds: with `model.contextLength` 2048 the default 16 kB window (~4,000 tokens) was
/// read into a context that could not hold it, and the document's warm cache was dropped with an overflow error.
/// Counted at ~3 bytes a token (code tokenizes at 3-4), less a quarter that a kept window may grow past its
/// budgets, after the generation headroom and a quarter of the context for other documents' preamble.
fn window_bytes_for_context(prefix: usize, suffix: usize, n_ctx: usize, cross_file: bool) -> (usize, usize) {
    let reserve = engine::session::GEN_HEADROOM.min(n_ctx / 4) + if cross_file { n_ctx / 4 } else { 0 };
    let max_window = n_ctx.saturating_sub(reserve).saturating_mul(12) / 5;
    let total = prefix.saturating_add(suffix);
    if total <= max_window {
        return (prefix, suffix);
    }
    let prefix_share = (prefix as f64 / total as f64 * max_window as f64) as usize;
    (prefix_share, max_window - prefix_share)
}

/// Text removed by one update's edits, in bytes, from which it earns the refresh a catch-up: about 120 tokens of
/// code, a block of ten lines. Removals only: at 4k tokens a pasted block already agrees with a full re-read as
/// often as the noise floor with the correction's window (57 of 62 cases, and so does the complete refresh),
/// while a deleted block agrees in 43 of 69 and after the complete refresh in 59 (`bench pie --part fidelity`).
/// And the text's own edits, not the prompt's, so a cursor jump (which reorders a FIM prompt) does not count.
const CATCH_UP_MIN_BYTES: usize = 400;

/// Whether `edits`, which took the text from `old` to `new`, removed `CATCH_UP_MIN_BYTES`. Both measures must say
/// so: the edits' own sizes (keystrokes at several places span much text between them), and the one span where
/// `old` and `new` differ (a client that sends the whole text with each keystroke replaces the file each time).
/// The second is only computed when the first holds.
fn is_large_removal(edits: &[TextEdit], old: &str, new: &str) -> bool {
    let removed: usize = edits.iter().map(|e| e.old_end_byte.saturating_sub(e.start_byte)).sum();
    if removed < CATCH_UP_MIN_BYTES {
        return false;
    }
    let span = engine::session::diff_edit(old, new);
    span.old_end_byte - span.start_byte >= CATCH_UP_MIN_BYTES
}

/// What the idle refresh may still do: an allowance of tokens per pause in typing (granted again after each
/// edit), and CPU seconds in any minute. When either is spent the warm thread sleeps until the next command.
/// A deleted block (`CATCH_UP_MIN_BYTES`) adds a catch-up: `refresh_large_edit_tokens` more for its document,
/// spent first at the next pauses and outside both limits, because the run it leaves is hundreds of tokens that
/// 32 a pause would take minutes to cover while suggestions miss. Its CPU time still counts in the minute, so
/// the ordinary refresh rests after it.
#[derive(Default)]
struct RefreshBudget {
    /// The pause the allowance below belongs to (when the edit it follows was made).
    pause: Option<Instant>,
    left_this_pause: usize,
    /// The document a large edit was made in, and the catch-up tokens it has left.
    catch_up: Option<(String, usize)>,
    /// CPU seconds of recent refresh chunks, with when each ended.
    recent: VecDeque<(Instant, f64)>,
}

impl RefreshBudget {
    /// Tokens the refresh may re-encode now in `uri`, or `None` when the budget is spent.
    fn allows(&mut self, config: &EngineConfig, uri: &str, pause: Instant) -> Option<usize> {
        if config.refresh_tokens_per_pause == 0 {
            // The refresh is off, the catch-up with it.
            return None;
        }
        if self.pause != Some(pause) {
            self.pause = Some(pause);
            self.left_this_pause = config.refresh_tokens_per_pause;
        }
        if let Some(left) = self.catch_up_left(uri) {
            return Some(left);
        }
        let now = Instant::now();
        while self.recent.front().is_some_and(|(at, _)| now.duration_since(*at) > Duration::from_secs(60)) {
            self.recent.pop_front();
        }
        let spent: f64 = self.recent.iter().map(|(_, cpu)| cpu).sum();
        (self.left_this_pause > 0 && spent < config.refresh_cpu_seconds_per_minute).then_some(self.left_this_pause)
    }

    /// Records a refresh chunk in `uri`: from the catch-up while it lasts, else from this pause's allowance.
    fn spend(&mut self, uri: &str, tokens: usize, cpu_seconds: f64) {
        match &mut self.catch_up {
            Some((doc, left)) if doc == uri && *left > 0 => *left = left.saturating_sub(tokens),
            _ => self.left_this_pause = self.left_this_pause.saturating_sub(tokens),
        }
        self.recent.push_back((Instant::now(), cpu_seconds.max(0.0)));
    }

    /// After a large edit in `uri` that left stale tokens: `tokens` more for it. A second large edit renews the
    /// allowance rather than adding to it, so pasting over and over cannot pile up work; another document's
    /// edit takes the catch-up over (the refresh follows the document edited last).
    fn grant_catch_up(&mut self, uri: &str, tokens: usize) {
        let kept = self.catch_up_left(uri).unwrap_or(0);
        self.catch_up = (tokens.max(kept) > 0).then(|| (uri.to_owned(), tokens.max(kept)));
    }

    /// Nothing is stale in `uri` any more (or the refresh failed there): what was left of its catch-up lapses.
    fn caught_up(&mut self, uri: &str) {
        if self.catch_up_left(uri).is_some() {
            self.catch_up = None;
        }
    }

    fn catch_up_left(&self, uri: &str) -> Option<usize> {
        match &self.catch_up {
            Some((doc, left)) if doc == uri && *left > 0 => Some(*left),
            _ => None,
        }
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

/// A suggestion that may still grow: the warm thread extends it after its first part was answered.
#[derive(Clone, Default, Debug)]
pub struct Growing(Arc<std::sync::Mutex<String>>);

impl Growing {
    pub fn set(&self, text: &str) {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        held.clear();
        held.push_str(text);
    }

    pub fn get(&self) -> String {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_fits_the_context_and_keeps_its_shape() {
        // The default context (16,384) holds the default window (12,000 + 4,000) as it is.
        assert_eq!(window_bytes_for_context(12_000, 4_000, 16_384, true), (12_000, 4_000));
        assert_eq!(window_bytes_for_context(12_000, 4_000, usize::MAX, true), (12_000, 4_000));
        // 2,048 tokens: narrowed, three quarters before the cursor as set, under ~3 bytes a token of what is left.
        for (n_ctx, cross_file) in [(2_048, true), (2_048, false), (1_024, false), (600, true), (64, false)] {
            let (p, s) = window_bytes_for_context(12_000, 4_000, n_ctx, cross_file);
            assert!(p + s < 12_000 + 4_000, "{n_ctx}");
            assert!((p + s) / 3 * 5 / 4 <= n_ctx - 256.min(n_ctx / 4), "{n_ctx}: {p} + {s}");
            assert!(p >= 2 * s && p <= 4 * s, "{n_ctx}: {p} / {s}");
        }
    }

    fn config(per_pause: usize, cpu_per_minute: f64, large_edit: usize) -> EngineConfig {
        EngineConfig {
            refresh_tokens_per_pause: per_pause,
            refresh_cpu_seconds_per_minute: cpu_per_minute,
            refresh_large_edit_tokens: large_edit,
            ..EngineConfig::default()
        }
    }

    #[test]
    fn typing_is_small_edits_close_together() {
        assert!(is_typing(&[TextEdit::new(500, 500, "x")]));
        // A burst folded into one update, Enter and an auto-indent included.
        assert!(is_typing(&[TextEdit::new(500, 500, "a"), TextEdit::new(501, 501, "\n    "), TextEdit::new(506, 507, "")]));
        assert!(!is_typing(&[TextEdit::new(500, 500, "line\n".repeat(20))]), "a paste");
        assert!(!is_typing(&[TextEdit::new(500, 1500, "")]), "a block deleted");
        assert!(!is_typing(&[TextEdit::new(100, 103, "new"), TextEdit::new(9000, 9003, "new")]), "a rename across the file");
        assert!(!is_typing(&[]));
    }

    #[test]
    fn each_pause_gets_its_allowance_until_the_minute_is_spent() {
        let config = config(32, 3.0, 1024);
        let mut budget = RefreshBudget::default();
        let first = Instant::now();
        assert_eq!(budget.allows(&config, "a", first), Some(32));
        budget.spend("a", 16, 0.5);
        assert_eq!(budget.allows(&config, "a", first), Some(16));
        budget.spend("a", 16, 0.5);
        assert_eq!(budget.allows(&config, "a", first), None, "this pause's tokens are spent");
        let second = first + Duration::from_millis(700);
        assert_eq!(budget.allows(&config, "a", second), Some(32), "a new edit, a new pause");
        budget.spend("a", 16, 2.5);
        assert_eq!(budget.allows(&config, "a", second), None, "3.5 CPU-s of 3 in this minute");
    }

    #[test]
    fn a_large_edit_is_caught_up_outside_both_limits_once() {
        let config = config(32, 3.0, 1024);
        let mut budget = RefreshBudget::default();
        let pause = Instant::now();
        budget.spend("a", 0, 10.0);
        assert_eq!(budget.allows(&config, "a", pause), None, "the minute's CPU is spent");
        budget.grant_catch_up("a", 400);
        assert_eq!(budget.allows(&config, "b", pause), None, "the catch-up belongs to the document edited");
        assert_eq!(budget.allows(&config, "a", pause), Some(400));
        budget.spend("a", 100, 5.0);
        assert_eq!(budget.allows(&config, "a", pause), Some(300), "spent from the catch-up, not the pause");
        // A second large edit renews the allowance; it does not add to it.
        budget.grant_catch_up("a", 200);
        assert_eq!(budget.allows(&config, "a", pause), Some(300));
        budget.grant_catch_up("a", 500);
        assert_eq!(budget.allows(&config, "a", pause), Some(500));
        budget.spend("a", 500, 5.0);
        assert_eq!(budget.allows(&config, "a", pause), None, "spent: back to the ordinary limits, whose CPU is spent");
        // Caught up early: what is left lapses instead of serving later small edits.
        budget.grant_catch_up("a", 300);
        budget.caught_up("a");
        assert_eq!(budget.allows(&config, "a", pause), None);
        // Another document's large edit takes the catch-up over.
        budget.grant_catch_up("a", 300);
        budget.grant_catch_up("b", 50);
        assert_eq!(budget.allows(&config, "a", pause), None);
        assert_eq!(budget.allows(&config, "b", pause), Some(50));
    }

    #[test]
    fn deleted_blocks_are_large_removals_keystrokes_and_pastes_are_not() {
        let file = "import math\n\n".to_owned() + &"def f(values):\n    return sum(values)\n\n".repeat(100);
        let at = 13;
        let with = |inserted: &str| format!("{}{inserted}{}", &file[..at], &file[at..]);
        // Folded keystrokes, in one place or in several (multi-cursor).
        let typed = with("total = 0");
        let keystrokes: Vec<TextEdit> = (0..9).map(|i| TextEdit::new(at + i, at + i, &typed[at + i..at + i + 1])).collect();
        assert!(!is_large_removal(&keystrokes, &file, &typed));
        let suggestion = "    total = sum(v * scale for v in values)\n    return total / max(len(values), 1)\n".repeat(2);
        assert!(!is_large_removal(&[TextEdit::new(at, at, &suggestion)], &file, &with(&suggestion)), "an accepted suggestion");
        let block = suggestion.repeat(3);
        assert!(!is_large_removal(&[TextEdit::new(at, at, &block)], &file, &with(&block)), "a pasted block");
        let deleted = format!("{}{}", &file[..at], &file[at + block.len()..]);
        assert!(is_large_removal(&[TextEdit::new(at, at + block.len(), "")], &file, &deleted), "a deleted block");
        // A client that sends the whole text with each change: a keystroke is still a keystroke.
        assert!(!is_large_removal(&[TextEdit::new(0, file.len(), typed.clone())], &file, &typed));
        assert!(is_large_removal(&[TextEdit::new(0, file.len(), deleted.clone())], &file, &deleted));
    }

    #[test]
    fn no_refresh_means_no_catch_up() {
        let mut budget = RefreshBudget::default();
        budget.grant_catch_up("a", 400);
        assert_eq!(budget.allows(&config(0, 3.0, 1024), "a", Instant::now()), None);
    }
}
