//! The loaded model: llama.cpp backend initialisation (once per process), GGUF validation before llama.cpp sees
//! a file, model loading with progress, and the engine-wide settings every KV session is created from.
//!
//! The model is leaked to `'static`: it lives for the whole process, and sessions (each owning a llama.cpp
//! context that borrows the model) can then move freely between threads.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use llama_cpp_2::context::params::{KvCacheType, LlamaContextParams};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::gguf::GgufContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaModel, RopeType};
use llama_cpp_2::token::LlamaToken;

use super::error::{EngineError, Result};
use super::fetch::check_gguf_magic;
use super::pie::{Tok, Tokenizer};

/// Element type of the KV cache. `F16` is the product default; `F32` makes PIE's rotation exact enough for
/// bit-level comparisons in tests (f16 rounding of re-rotated keys is ~1e-2 in the logits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum KvType {
    #[default]
    F16,
    F32,
}

/// Engine-wide settings.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EngineConfig {
    /// CPU threads for decoding (0 = all available cores).
    pub threads: usize,
    /// Largest context (tokens) a session may grow to; a document needing more is a `ContextOverflow`.
    pub n_ctx: usize,
    /// Tokens per llama.cpp batch.
    pub n_batch: usize,
    /// Documents that keep a warm KV cache at most (LRU beyond that).
    pub max_warm_documents: usize,
    /// Memory budget for all warm KV caches together, in MiB (LRU beyond that).
    pub max_cache_mib: usize,
    /// KV cache element type.
    pub kv_type: KvType,
    /// Tokens re-encoded per idle-refresh chunk. A keystroke stops a chunk between two graph nodes, and the
    /// longest node (attention over the whole cache) grows with the chunk: at 2.8k tokens on 2 cores a 64-token
    /// chunk kept a keystroke waiting 20-85 ms, a 16-token one 1-22 ms, at about the same tokens per second.
    pub refresh_chunk: usize,
    /// Stale tokens the idle refresh re-encodes after each pause in typing at most, nearest to their edit first
    /// (0: no idle refresh).
    pub refresh_tokens_per_pause: usize,
    /// CPU time the idle refresh may use in any minute, in seconds (all threads counted).
    pub refresh_cpu_seconds_per_minute: f64,
    /// After a large removal from the text (a block deleted: `warm::CATCH_UP_MIN_BYTES`), the idle refresh may
    /// re-encode up to this many stale tokens at the next pauses, outside the two budgets above (0: off).
    pub refresh_large_edit_tokens: usize,
    /// The bounded correction applied with every PIE update.
    pub correction: super::session::Correction,
    /// Edit sites encoded together in one decode.
    pub max_fold_sites: usize,
    /// Greedy generation drafts up to this many tokens per step from the prompt itself (prompt lookup: code
    /// repeats its own identifiers and lines) and verifies them in the same decode as the last token; 0: off.
    pub draft_tokens: usize,
    /// GPU layers to offload (only meaningful in GPU builds).
    pub gpu_layers: u32,
    /// Flash attention (`model.flashAttention`): `None` (`auto`) is off when nothing is offloaded to a GPU and
    /// llama.cpp's own choice otherwise (`flash_attention_policy`). Off, the CPU decodes and updates for
    /// keystrokes 1.1-2.3x faster and the attention numerics do not depend on the batch size (exactness
    /// tests), but large batches (a paste, a whole read) are slower (`docs/engine.md`, "Flash attention").
    pub flash_attention: Option<bool>,
    /// Map the model file instead of reading it into memory. Off by default: a mapped file that is truncated
    /// while the server runs (a re-download, a full disk) kills the process with SIGBUS on the next access to
    /// the lost pages, while a model read into memory keeps working whatever happens to the file.
    pub use_mmap: bool,
}

/// Defaults of the correction and the idle refresh (see `docs/engine.md` for the measurements behind them).
/// 8 tokens after each edit are re-encoded with every update (since 2026-12-07): on HumanEval infilling (164
/// problems, answered at once after the masked line's deletion) single-line pass@1 goes from 48.8% to 54.3% (full
/// re-read 59.1%; 6 tokens: 52.4%, 4: 50.0%) and multi-line from 29.9% to full's 31.7%, for ~100 ms more to such an
/// update at 4k tokens on 2 threads. 16 + 16 comes within 1.2 points but makes the first token ~300 ms. A
/// keystroke-sized change re-encodes 1 token instead (see `Correction::keystroke`: typed a keystroke at a time, 1
/// token is at full's pass@1, for ~25 ms a keystroke). Later tokens are the idle refresh's first work, nearest
/// first, once the user pauses. A large edit (a paste, a block deleted) re-encodes up to 128 tokens after it at
/// once: on 20 block edits at 1k tokens agreement with a full re-read went from 50% to 75% (256: 80%, 512: 85%)
/// for ~0.6 s more per such edit (256: ~1.3 s).
pub const DEFAULT_CORRECTION: super::session::Correction = super::session::Correction { after_edit: 8, tail: 0, large_edit: 128, keystroke: 1 };
// From `bench typing` (docs/benchmarks.md): with 256 tokens and 6 CPU-s per minute the refresh kept the server
// busy for seconds after each pause (it re-encodes ~50 tokens/s on 2 cores); 32 per pause are the tokens right
// after the edit, the ones that miss most (EPIC recomputes <= 32 per reused chunk), and cost well under a second.
pub const DEFAULT_REFRESH_TOKENS_PER_PAUSE: usize = 32;
pub const DEFAULT_REFRESH_CPU_SECONDS_PER_MINUTE: f64 = 3.0;
/// The catch-up after a deleted block. At 4k tokens (`bench pie --part fidelity`, 262 cases) a deleted block agreed
/// with a full re-read in 43 of 69 cases at once and 59 after the complete refresh; at 32 tokens a pause the
/// refresh takes dozens of pauses to get there. 512 tokens cover the whole stale prompt in 39 of the 69 (where the
/// complete refresh agrees 34 times and the default at once 26): at least 51 of 69 once done. 1,024 would cover
/// 48 (at least 54 of 69) for twice the CPU: at ~3.3k tokens on 2 cores the refresh re-encodes ~70 tokens/s, so
/// 512 are ~7 s of both cores per deleted block, spread over pauses and stopped by any keystroke.
pub const DEFAULT_REFRESH_LARGE_EDIT_TOKENS: usize = 512;
/// Prompt-lookup draft length (see `docs/engine.md`, "Drafts from the document"). 2, with a backoff after a
/// refused draft (`session::DraftBackoff`): in suggestions the model often copies the document (the code after
/// the cursor, a repeated call), and on `bench backends`' typing trace 76% of drafted tokens were confirmed and a
/// 24-token suggestion took 650 against 924 ms (p50, 4k tokens, 2 threads, flash attention off); in free-running
/// text (`bench decode`, 25% confirmed) it costs 2.5% (65.0 against 63.1 ms a token). Longer drafts confirm less
/// (4: 63%, 713 ms); without the backoff, drafts of 2 cost 17% in free-running text.
pub const DEFAULT_DRAFT_TOKENS: usize = 2;

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            threads: 0,
            n_ctx: 16384,
            n_batch: 512,
            max_warm_documents: 8,
            max_cache_mib: 1024,
            kv_type: KvType::F16,
            refresh_chunk: 16,
            refresh_tokens_per_pause: DEFAULT_REFRESH_TOKENS_PER_PAUSE,
            refresh_cpu_seconds_per_minute: DEFAULT_REFRESH_CPU_SECONDS_PER_MINUTE,
            refresh_large_edit_tokens: DEFAULT_REFRESH_LARGE_EDIT_TOKENS,
            correction: DEFAULT_CORRECTION,
            max_fold_sites: 4,
            draft_tokens: DEFAULT_DRAFT_TOKENS,
            gpu_layers: 0,
            flash_attention: None,
            use_mmap: false,
        }
    }
}

impl EngineConfig {
    pub fn effective_threads(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        }
    }
}

/// Facts about the loaded model, for logs, `model info` and the benchmark.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelInfo {
    pub path: PathBuf,
    pub name: String,
    pub architecture: String,
    pub file_bytes: u64,
    pub n_params: u64,
    pub n_layer: u32,
    pub n_embd: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
    pub n_vocab: u32,
    pub n_ctx_train: u32,
    pub can_shift: bool,
    pub has_fim: bool,
    pub add_bos: bool,
}

static BACKEND: OnceLock<LlamaBackend> = OnceLock::new();
/// llama.cpp's context creation mutates the model; never run two at once.
pub(crate) static CONTEXT_LOCK: Mutex<()> = Mutex::new(());

pub(crate) fn backend() -> Result<&'static LlamaBackend> {
    if let Some(b) = BACKEND.get() {
        return Ok(b);
    }
    // `LlamaBackend::init` raises its "initialised" flag before it returns, so two threads racing here (the warm
    // thread and an action model loading on an action's thread) would see one succeed and the other fail with
    // `BackendAlreadyInitialized` before the winner stored it. Serialise the first initialisation.
    static INIT: Mutex<()> = Mutex::new(());
    let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = BACKEND.get() {
        return Ok(b);
    }
    // Route llama.cpp's chatter into `tracing` (stdout belongs to the LSP protocol), less the lines a decode we
    // stopped ourselves makes (see `AbortGate`).
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
    quiet_stopped_decodes();
    let b = LlamaBackend::init()
        .map_err(|e| EngineError::Context { reason: format!("llama.cpp backend init failed: {e}") })?;
    Ok(BACKEND.get_or_init(|| b))
}

/// A loaded model plus the settings sessions are made with. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Engine {
    pub(crate) model: &'static LlamaModel,
    pub(crate) config: EngineConfig,
    pub(crate) info: Arc<ModelInfo>,
    /// Byte length of every token's text, so token offsets are arithmetic (no FFI per token).
    pub(crate) piece_lens: Arc<Vec<u32>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("info", &self.info).field("config", &self.config).finish()
    }
}

/// Check that a file is a GGUF llama.cpp can parse, without loading tensors.
pub fn validate_gguf(path: &Path) -> Result<()> {
    if !path.is_file() {
        return Err(EngineError::ModelNotFound { path: path.to_path_buf() });
    }
    check_gguf_magic(path)?;
    backend()?;
    if GgufContext::from_file(path).is_none() {
        return Err(EngineError::CorruptModel {
            path: path.to_path_buf(),
            reason: "the GGUF header or metadata is truncated or malformed".into(),
        });
    }
    Ok(())
}

impl Engine {
    /// Load a GGUF model.
    pub fn load(path: &Path, config: EngineConfig) -> Result<Engine> {
        Self::load_with_progress(path, config, |_| {})
    }

    /// Load a GGUF model, reporting load progress in `0.0..=1.0`.
    pub fn load_with_progress(path: &Path, config: EngineConfig, mut progress: impl FnMut(f32) + Send + 'static) -> Result<Engine> {
        validate_gguf(path)?;
        let backend = backend()?;
        let params = LlamaModelParams::default().with_n_gpu_layers(config.gpu_layers).with_use_mmap(config.use_mmap).with_progress_callback(move |p| {
            progress(p);
            true
        });
        let model = LlamaModel::load_from_file(backend, path, &params).map_err(|e| EngineError::CorruptModel {
            path: path.to_path_buf(),
            reason: format!("llama.cpp could not load it ({e}); the file may be truncated, corrupt, or of an unsupported architecture"),
        })?;
        let model: &'static LlamaModel = Box::leak(Box::new(model));
        let vocab = model.vocab();
        let n_vocab = model.n_vocab().max(0) as u32;
        let piece_lens: Vec<u32> = (0..n_vocab as i32).map(|t| vocab.token_to_piece(LlamaToken(t), true, None).len() as u32).collect();
        let architecture = model.meta_val_str("general.architecture").unwrap_or_default();
        let name = model.meta_val_str("general.name").unwrap_or_else(|_| path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        let info = ModelInfo {
            path: path.to_path_buf(),
            name,
            can_shift: can_shift(model, &architecture),
            architecture,
            file_bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
            n_params: model.n_params(),
            n_layer: model.n_layer(),
            n_embd: model.n_embd().max(0) as u32,
            n_head: model.n_head(),
            n_head_kv: model.n_head_kv(),
            n_vocab,
            n_ctx_train: model.n_ctx_train(),
            has_fim: vocab.fim_pre().0 >= 0 && vocab.fim_suf().0 >= 0 && vocab.fim_mid().0 >= 0,
            add_bos: vocab.should_add_bos(),
        };
        Ok(Engine { model, config, info: Arc::new(info), piece_lens: Arc::new(piece_lens) })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The same model with other settings (e.g. an f32 KV cache for a test).
    pub fn with_config(&self, config: EngineConfig) -> Engine {
        Engine { config, ..self.clone() }
    }

    /// Tokenize text as the session does (BOS added when the model wants one; special-token text parsed).
    pub fn tokenize(&self, text: &str, add_bos: bool) -> Vec<Tok> {
        let mut out: Vec<Tok> = self.bos_prefix().to_vec().into_iter().filter(|_| add_bos).collect();
        out.extend(self.tokenize_raw(text));
        out
    }

    pub(crate) fn tokenize_raw(&self, text: &str) -> Vec<Tok> {
        self.model.vocab().tokenize(text.as_bytes(), false, true).into_iter().map(|t| t.0).collect()
    }

    pub(crate) fn bos_prefix(&self) -> Vec<Tok> {
        let v = self.model.vocab();
        if v.should_add_bos() && v.bos().0 >= 0 {
            vec![v.bos().0]
        } else {
            Vec::new()
        }
    }

    /// Text of a token (lossy UTF-8 is the caller's business: bytes are returned).
    pub fn token_bytes(&self, t: Tok) -> Vec<u8> {
        self.model.vocab().token_to_piece(LlamaToken(t), true, None)
    }

    pub fn is_eog(&self, t: Tok) -> bool {
        self.model.vocab().is_eog(LlamaToken(t))
    }

    /// FIM special tokens `(prefix, suffix, middle)` when the model has them.
    pub fn fim_tokens(&self) -> Option<(Tok, Tok, Tok)> {
        let v = self.model.vocab();
        let (p, s, m) = (v.fim_pre().0, v.fim_suf().0, v.fim_mid().0);
        (p >= 0 && s >= 0 && m >= 0).then_some((p, s, m))
    }

    /// `turns` (role, content) in the model's own chat template, ending with an open assistant turn. `None` when
    /// the GGUF has no template or llama.cpp does not recognise it (the caller falls back to ChatML).
    pub fn apply_chat_template(&self, turns: &[(&str, &str)]) -> Option<String> {
        let template = self.model.chat_template(None).ok()?;
        let messages: Vec<LlamaChatMessage> =
            turns.iter().map(|(role, content)| LlamaChatMessage::new(role.to_string(), content.to_string())).collect::<std::result::Result<_, _>>().ok()?;
        match self.model.apply_chat_template(&template, &messages, true) {
            Ok(text) => Some(text),
            Err(err) => {
                tracing::debug!("the model's chat template could not be applied ({err}); using ChatML");
                None
            }
        }
    }

    /// Bytes of KV cache per token of context for this model and cache type.
    pub fn kv_bytes_per_token(&self) -> usize {
        let i = &self.info;
        let head_dim = if i.n_head > 0 { i.n_embd / i.n_head } else { 0 } as usize;
        let elem = match self.config.kv_type {
            KvType::F16 => 2,
            KvType::F32 => 4,
        };
        i.n_layer as usize * i.n_head_kv as usize * head_dim * 2 * elem
    }

    /// Create a llama.cpp context of `n_ctx` cells for one session (a unified cache with room for scratch
    /// sequences, which PIE's encode step needs). `gate` lets a decode of this context be stopped while it runs;
    /// it must outlive the context.
    pub(crate) fn new_context(&self, n_ctx: usize, gate: &AbortGate) -> Result<LlamaContext<'static>> {
        let backend = backend()?;
        let threads = self.config.effective_threads() as i32;
        let kv = match self.config.kv_type {
            KvType::F16 => KvCacheType::F16,
            KvType::F32 => KvCacheType::F32,
        };
        let n_seq_max = 1 + self.config.max_fold_sites.max(1);
        // llama.cpp reserves an output row per sequence and asserts (aborting the process) when that is more
        // than the batch: `model.batchSize` under the sequences is raised to them. Sessions still decode at most
        // their own (smaller) batch at a time.
        let n_batch = self.config.n_batch.max(n_seq_max).clamp(1, n_ctx.max(1)) as u32;
        let flash_policy = flash_attention_policy(self.config.flash_attention, self.config.gpu_layers);
        let n_ubatch = micro_batch(n_batch, flash_policy == 0, n_seq_max as u32);
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx as u32))
            .with_n_batch(n_batch)
            .with_n_ubatch(n_ubatch)
            .with_n_seq_max(n_seq_max as u32)
            .with_kv_unified(true)
            .with_n_threads(threads)
            .with_n_threads_batch(threads)
            .with_type_k(kv)
            .with_type_v(kv)
            .with_swa_full(true)
            .with_flash_attention_policy(flash_attention_policy(self.config.flash_attention, self.config.gpu_layers));
        let params = gate.install(params);
        let _guard = CONTEXT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        self.model.new_context(backend, params).map_err(|e| EngineError::Context { reason: format!("{e} (n_ctx {n_ctx}; out of memory?)") })
    }
}

impl Tokenizer for Engine {
    fn tokenize(&self, text: &str) -> Vec<Tok> {
        self.tokenize_raw(text)
    }
    fn piece_len(&self, tok: Tok) -> usize {
        self.piece_lens.get(tok as usize).copied().unwrap_or(0) as usize
    }
}

/// Whether llama.cpp can apply a K-shift (`seq_add`) for this model. Mirrors `llama_memory_can_shift`, which the
/// Rust crate does not expose: recurrent/hybrid memories and multi-axis RoPE cannot shift (llama.cpp aborts the
/// process if one tries), sliding-window caches can because contexts are made with `swa_full`.
fn can_shift(model: &LlamaModel, arch: &str) -> bool {
    if model.is_recurrent() || model.is_hybrid() {
        return false;
    }
    if matches!(model.rope_type(), Some(RopeType::MRope) | Some(RopeType::IMRope) | Some(RopeType::Vision)) {
        return false;
    }
    !arch.eq_ignore_ascii_case("step35")
}

/// Stops a running decode between two nodes of its graph (llama.cpp's abort callback), so that a keystroke does
/// not wait for a whole idle-refresh chunk or a suggestion's extension step. Armed with a flag only around decodes
/// that may be dropped (the refresh, the extension of a suggestion already answered); every other decode runs to
/// its end whatever the flag says. llama.cpp answers an aborted decode with status 2 after removing that batch's
/// cells from the sequences it touched.
#[derive(Default)]
pub(crate) struct AbortGate {
    armed: AtomicPtr<AtomicBool>,
    /// When set (non-null), the armed flag counts only while this one is raised too.
    only_while: AtomicPtr<AtomicBool>,
}

/// Disarms the gate when dropped.
pub(crate) struct Armed<'a>(&'a AbortGate);

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        STOPPING.store(false, Ordering::Relaxed);
        self.0.armed.store(std::ptr::null_mut(), Ordering::Release);
        self.0.only_while.store(std::ptr::null_mut(), Ordering::Release);
    }
}

impl AbortGate {
    /// Until the returned guard is dropped, a decode stops as soon as `flag` is set. The borrow keeps `flag`
    /// alive for as long as the gate may read it.
    pub(crate) fn arm<'a>(&'a self, flag: &'a AtomicBool) -> Armed<'a> {
        self.only_while.store(std::ptr::null_mut(), Ordering::Release);
        self.armed.store(flag as *const AtomicBool as *mut AtomicBool, Ordering::Release);
        Armed(self)
    }

    /// As `arm`, but `flag` stops a decode only while `enabled` is raised (a generation whose first part has not
    /// been answered yet must finish its step whatever arrives).
    pub(crate) fn arm_while<'a>(&'a self, flag: &'a AtomicBool, enabled: &'a AtomicBool) -> Armed<'a> {
        self.only_while.store(enabled as *const AtomicBool as *mut AtomicBool, Ordering::Release);
        self.armed.store(flag as *const AtomicBool as *mut AtomicBool, Ordering::Release);
        Armed(self)
    }

    fn install(&self, params: LlamaContextParams) -> LlamaContextParams {
        // llama-cpp-2 keeps the raw parameters as its only field and offers no setter for the callback; the
        // transmute is checked for size at compile time.
        // SAFETY: `LlamaContextParams` is a single-field wrapper of `llama_context_params`, so both have one layout.
        let mut raw: llama_cpp_sys_2::llama_context_params = unsafe { std::mem::transmute(params) };
        raw.abort_callback = Some(abort_if_armed);
        raw.abort_callback_data = self as *const AbortGate as *mut std::ffi::c_void;
        // SAFETY: as above.
        unsafe { std::mem::transmute(raw) }
    }
}

/// Raised by `abort_if_armed` when it stops a decode, lowered when the gate is disarmed: while it is up, the
/// error lines llama.cpp logs for that decode ("failed to decode, ret = 2", ...) are expected and dropped.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// The log callback `send_logs_to_tracing` installed, which `drop_stopped_decode_lines` forwards to.
static FORWARD: std::sync::OnceLock<(llama_cpp_sys_2::ggml_log_callback, usize)> = std::sync::OnceLock::new();

fn quiet_stopped_decodes() {
    let mut callback: llama_cpp_sys_2::ggml_log_callback = None;
    let mut data: *mut std::ffi::c_void = std::ptr::null_mut();
    // SAFETY: plain reads of llama.cpp's logger, then a callback that forwards to it with its own data.
    unsafe { llama_cpp_sys_2::llama_log_get(&mut callback, &mut data) };
    if callback.is_none() || FORWARD.set((callback, data as usize)).is_err() {
        return;
    }
    unsafe { llama_cpp_sys_2::llama_log_set(Some(drop_stopped_decode_lines), std::ptr::null_mut()) };
}

unsafe extern "C" fn drop_stopped_decode_lines(
    level: llama_cpp_sys_2::ggml_log_level,
    text: *const std::ffi::c_char,
    _: *mut std::ffi::c_void,
) {
    if STOPPING.load(Ordering::Relaxed) && !text.is_null() {
        // SAFETY: llama.cpp passes a NUL-terminated string.
        let line = unsafe { std::ffi::CStr::from_ptr(text) }.to_string_lossy();
        const EXPECTED: [&str; 4] =
            ["failed to decode, ret = 2", "failed with error 1", "compute status: 1", "removing memory module entries"];
        if EXPECTED.iter().any(|e| line.contains(e)) {
            return;
        }
    }
    if let Some((Some(forward), data)) = FORWARD.get() {
        unsafe { forward(level, text, *data as *mut std::ffi::c_void) };
    }
}

unsafe extern "C" fn abort_if_armed(data: *mut std::ffi::c_void) -> bool {
    // SAFETY: `data` is the `AbortGate` the context was made with, which outlives it (`KvSession` drops its
    // context first); an armed pointer is valid until the guard that armed it is dropped, after the decode.
    let gate = unsafe { &*(data as *const AbortGate) };
    let flag = gate.armed.load(Ordering::Acquire);
    let enabled = gate.only_while.load(Ordering::Acquire);
    let stop = !flag.is_null()
        && unsafe { (*flag).load(Ordering::Relaxed) }
        && (enabled.is_null() || unsafe { (*enabled).load(Ordering::Relaxed) });
    if stop {
        STOPPING.store(true, Ordering::Relaxed);
    }
    stop
}

/// llama.cpp's flash-attention policy (-1 auto, 0 disabled, 1 enabled) for the `model.flashAttention` setting:
/// `auto` is off on the CPU. llama.cpp's own auto turns it on for CPUs too, where its kernel is the slower one
/// for the small batches a language server decodes all the time: at 4k tokens on 2 cores, a keystroke's update
/// took 182 against 86 ms and generation ran at 10.2 against 23.1 tokens/s on an Intel Xeon (AVX-512), 105
/// against 97 ms and 20.3 against 24.7 tokens/s on an AMD EPYC; through the server, `bench typing` went from
/// 0.71 to 0.54 cores busy (`docs/engine.md`, "Flash attention"). With layers on a GPU, llama.cpp decides.
pub(crate) fn flash_attention_policy(setting: Option<bool>, gpu_layers: u32) -> i32 {
    match setting {
        Some(true) => 1,
        Some(false) => 0,
        None if gpu_layers > 0 => -1,
        None => 0,
    }
}

/// Tokens per micro-batch without flash attention, which keeps a micro-batch's attention scores (tokens x
/// cells x heads, f32) in each context's compute buffer: 512 tokens over a 4k window's 6,144 cells added 137
/// MiB per warm document, 128 add 8 MiB (RSS 121 against 113 MiB with flash attention), and read as fast.
const MICRO_BATCH_WITHOUT_FLASH_ATTENTION: u32 = 128;

/// The micro-batch (`n_ubatch`) of a context whose batch is `n_batch`: smaller without flash attention, never
/// under the sequences' output rows (llama.cpp asserts on that).
fn micro_batch(n_batch: u32, flash_off: bool, n_seq_max: u32) -> u32 {
    if flash_off {
        n_batch.min(MICRO_BATCH_WITHOUT_FLASH_ATTENTION.max(n_seq_max))
    } else {
        n_batch
    }
}

#[cfg(test)]
mod flash_attention_tests {
    #[test]
    fn auto_flash_attention_is_off_on_the_cpu_and_shrinks_the_micro_batch() {
        assert_eq!(super::flash_attention_policy(None, 0), 0);
        assert_eq!(super::flash_attention_policy(None, 99), -1, "with a GPU llama.cpp decides");
        assert_eq!(super::flash_attention_policy(Some(true), 0), 1);
        assert_eq!(super::flash_attention_policy(Some(false), 99), 0);
        assert_eq!(super::micro_batch(512, true, 9), 128);
        assert_eq!(super::micro_batch(512, false, 9), 512);
        assert_eq!(super::micro_batch(64, true, 9), 64);
        assert_eq!(super::micro_batch(2, true, 9), 2, "never more than the batch");
    }
}
