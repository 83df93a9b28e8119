//! One warm document: a token mirror of an arbitrary text plus its llama.cpp KV cache, kept in step by PIE.
//!
//! Layout: sequence 0 of the session's own context holds the prompt, one cell per token, at positions
//! `0..n`. An update plans the token edit (see `pie.rs`), drops the cells of removed tokens, moves each kept run
//! with `seq_add` (llama.cpp applies the RoPE rotation lazily, in the next decode's K-shift: PIE's `R(Δ)`), and
//! encodes only the new tokens. New tokens cannot be decoded into sequence 0 while the moved suffix sits after
//! them (a batch must continue at the sequence's last position), so each edit site is decoded on a scratch
//! sequence that shares the prefix cells (a unified cache relabels, it does not copy) and its cells are then
//! handed to sequence 0. Up to `max_fold_sites` sites share one decode, so the cache is rotated once.
//!
//! Staleness (`stale.rs`): spans of tokens that were not encoded with the current text before them (PIE moved
//! them, or they were encoded next to moved tokens), each with its distance from the change that made it stale.
//! The bounded correction re-encodes the most affected ones with every update (the first tokens after each change
//! and the last tokens of the prompt, which the next prediction reads most); `refresh_stale` re-encodes the rest
//! nearest-first in small, cancellable chunks, up to a budget; `full_recompute` is the reference. The session also implements the peers the benchmark
//! compares against (full recomputation, prefix reuse, llama-server's cache reuse, and the naive no-rotation
//! baseline), on the same context, so every method sees exactly the same tokens.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::{LlamaStateSeqFlags, SeqState};
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;

use super::error::{EngineError, Result};
use super::model::AbortGate;
use super::model::Engine;
use super::pie::{plan, NewRun, Plan, TextEdit, Tok, TokenText};
use super::stale::{StaleSpan, Staleness};
use super::sample::{argmax, Sampler, SamplingParams};

/// Main sequence; scratch sequences are `1..=max_fold_sites`.
const SEQ_MAIN: i32 = 0;
/// Room kept free after the prompt for generation before a context must grow.
pub(crate) const GEN_HEADROOM: usize = 256;

/// Counters a user (and the `pie/cacheStats` request) sees; cumulative since the document was opened.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheStats {
    /// Tokens in the cache now (the prompt's length).
    pub cached_tokens: usize,
    /// Tokens now in the cache that were not encoded against the current text before them.
    pub stale_tokens: usize,
    /// Prompt tokens run through the model (opening, edits, refreshes, recomputations, logits).
    pub encoded_tokens: u64,
    /// Cached tokens moved to new positions by a rotation instead of being recomputed.
    pub shifted_tokens: u64,
    /// Cached tokens kept across updates (moved or not) instead of being recomputed.
    pub reused_tokens: u64,
    /// Updates applied.
    pub updates: u64,
    /// Wall time of the last update, in milliseconds.
    pub last_update_ms: f64,
    /// Full recomputations (explicit, or fallbacks where shifting is impossible or the context had to grow).
    pub full_recomputes: u64,
    /// Runs of stale tokens now (see `stale.rs`).
    pub stale_spans: usize,
    /// Smallest distance of a stale token from the change that made it stale (none when nothing is stale in the
    /// first order).
    pub nearest_stale_distance: Option<usize>,
    /// Cached tokens re-encoded by the bounded correction at update time.
    pub correction_tokens: u64,
    /// Time the correction took: the tail decode, plus the corrected tokens' share (by count) of the site decodes
    /// they joined, in milliseconds.
    pub correction_ms: f64,
    /// Stale tokens re-encoded by the idle refresh.
    pub refreshed_tokens: u64,
    /// Tokens generation drafted from the prompt, and those the model confirmed (each one a decode step saved).
    pub drafted_tokens: u64,
    pub accepted_draft_tokens: u64,
    /// Wall time of the idle refresh, in milliseconds.
    pub refresh_ms: f64,
    /// Bytes of the prompt's window not read yet (a window entered far from the cache is read around the cursor
    /// first, the rest when the user pauses). Set by the warm thread, not the session.
    #[serde(default)]
    pub unread_bytes: usize,
    /// The window is still being read: bytes remain, or what the read left stale is still being settled (which
    /// re-encodes every stale token, an edit's too, outside the refresh budget, so that the read ends exact).
    /// `unreadBytes` reaches 0 before this goes false. Set by the warm thread.
    #[serde(default)]
    pub reading: bool,
}

/// The bounded correction applied with every PIE update (see `docs/engine.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Correction {
    /// Cached tokens re-encoded after each change (edit site or removal), in the site's own decode.
    pub after_edit: usize,
    /// Last tokens of the prompt (before the FIM middle marker, or before the cursor) re-encoded after the
    /// sites, when any of them is stale.
    pub tail: usize,
    /// After a large edit (at least `LARGE_EDIT_MIN_TOKENS` tokens inserted or removed: a paste, a block
    /// deleted, an undo, a cursor jump in a FIM prompt), the window after each change widens to as many tokens as
    /// the edit inserted or removed, at most this many: the idle refresh's first work (nearest first), done at
    /// once, for at most about the edit's own cost again. A stale run that fits is re-encoded whole, which makes
    /// the cache exact. Small edits never pay it.
    pub large_edit: usize,
    /// After a keystroke-sized change (at most `KEYSTROKE_MAX_TOKENS` tokens inserted and removed: a character
    /// typed or deleted, Enter), the window is at most this many tokens instead of `after_edit`. While the user
    /// types at the cursor the token right after the site is the FIM suffix marker, and re-encoding it alone
    /// recovers what plain PIE loses (`bench infill --typed`: 35.4% pass@1 without, 60.4% with one token, 61.6%
    /// with eight, full 59.1%) for ~25 ms a keystroke at 4k tokens on 2 threads instead of ~100.
    pub keystroke: usize,
}

/// The most tokens a change may insert, and remove, to count as a keystroke (typing a character re-tokenizes the
/// word it ends: one or two tokens out, one or two in).
pub const KEYSTROKE_MAX_TOKENS: usize = 2;

/// Tokens an update must insert or remove (the larger of the two) to count as a large edit. A keystroke, a word
/// or a completion accepted in one line stays below it; three pasted lines reach it.
pub const LARGE_EDIT_MIN_TOKENS: usize = 32;

impl Correction {
    pub const OFF: Correction = Correction { after_edit: 0, tail: 0, large_edit: 0, keystroke: 0 };

    /// The window re-encoded after each change of an update that inserted `inserted` and removed `removed`
    /// tokens.
    pub fn after_edit_for(&self, inserted: usize, removed: usize) -> usize {
        let size = inserted.max(removed);
        if self.large_edit > 0 && size >= LARGE_EDIT_MIN_TOKENS {
            self.after_edit.max(self.large_edit.min(size))
        } else if size <= KEYSTROKE_MAX_TOKENS {
            self.after_edit.min(self.keystroke)
        } else {
            self.after_edit
        }
    }
}

/// How an update is applied. `Pie` is the product; the others are references and peers for tests and the
/// benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum UpdateMode {
    /// Keep, rotate and reuse cached tokens; encode only new tokens.
    Pie,
    /// Like PIE but the moved tokens keep the rotation of their old positions (the "conflict" baseline).
    Naive,
    /// Keep the common token prefix, recompute everything after the first change.
    PrefixReuse,
    /// llama-server's `--cache-reuse N`: after the common prefix, move matching runs of at least N cached tokens
    /// left; recompute the rest.
    CacheReuse { min_chunk: usize },
    /// Recompute the whole prompt.
    Full,
}

/// What one update did.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateReport {
    pub encoded_tokens: usize,
    pub shifted_tokens: usize,
    pub reused_tokens: usize,
    pub removed_tokens: usize,
    pub sites: usize,
    pub decodes: usize,
    /// Cached tokens re-encoded by the bounded correction.
    pub correction_tokens: usize,
    pub correction_ms: f64,
    /// True when the update could not be done incrementally (context grew, shifting unsupported, or the session
    /// had to be rebuilt) and the prompt was recomputed.
    pub recomputed: bool,
    /// True when the edits did not reproduce `new_text` and the update was planned from a text diff instead.
    pub resynced: bool,
    pub ms: f64,
}

/// What an idle refresh did.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshReport {
    pub encoded_tokens: usize,
    pub remaining_stale: usize,
    pub ms: f64,
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum StopReason {
    EndOfGeneration,
    StopString,
    MaxTokens,
}

/// Generation settings.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GenerateParams {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Generation stops at the first of these; the returned text excludes it.
    pub stop: Vec<String>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams { max_tokens: 64, sampling: SamplingParams::default(), stop: Vec::new() }
    }
}

/// Result of a generation.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Generation {
    pub text: String,
    pub tokens: usize,
    pub stop_reason: StopReason,
    pub ms: f64,
    /// Decodes run (each verifies the drafted tokens that came with it).
    pub decodes: usize,
    /// Tokens drafted from the prompt, and how many of them the model confirmed.
    pub drafted: usize,
    pub accepted: usize,
}

static SESSION_IDS: AtomicU64 = AtomicU64::new(0);

/// A saved session state (see `KvSession::snapshot`).
pub struct Snapshot {
    state: SeqState,
    doc: TokenText,
    stale: Staleness,
    logits: Option<Vec<f32>>,
    stats: CacheStats,
}

/// A document's warm KV cache. `Send`, not `Sync`: one thread at a time drives it.
pub struct KvSession {
    engine: Engine,
    ctx: LlamaContext<'static>,
    /// Lets the idle refresh's decode be stopped mid-way. Behind an `Arc` so its address, which the context
    /// holds, stays put (and a decode can hold it while `self` is borrowed mutably); declared after `ctx` so that
    /// the context is dropped first.
    gate: std::sync::Arc<AbortGate>,
    n_ctx: usize,
    batch: LlamaBatch<'static>,
    doc: TokenText,
    /// Which cached tokens are stale, as spans with their distance from the change that made them stale.
    stale: Staleness,
    /// Applied with every PIE update.
    correction: Correction,
    /// Next-token logits for the current prompt, when known.
    logits: Option<Vec<f32>>,
    stats: CacheStats,
    /// Set when a KV operation failed half-way: the next update recomputes from scratch.
    broken: bool,
    /// Tokens the context is sized for at least (`set_room`): a prompt read in parts grows to it.
    room: usize,
    /// How long the last generation's decode steps took (a moving average, milliseconds; 0 before the first): a
    /// streaming caller uses it to judge whether waiting one more step keeps it in time.
    step_ms: f64,
    id: u64,
}

fn cache_err(e: impl std::fmt::Display) -> EngineError {
    EngineError::Cache(e.to_string())
}

impl KvSession {
    /// Open a session mirroring `text` and encode it.
    pub fn open(engine: &Engine, text: &str) -> Result<KvSession> {
        Self::open_with_room(engine, text, 0)
    }

    /// `open`, with a context sized for a prompt of `room` tokens when that is more than `text`'s: a prompt read
    /// in parts grows to it without a new context (growing one recomputes the whole prompt). See `set_room`.
    pub fn open_with_room(engine: &Engine, text: &str, room: usize) -> Result<KvSession> {
        let doc = TokenText::new(text, &engine.bos_prefix(), engine);
        // A room past the context limit is not an error: the prompt may never grow to it.
        let room = room.min(engine.config.n_ctx.max(64) - 1);
        let n_ctx = Self::size_for(engine, doc.len().max(room))?;
        let gate = std::sync::Arc::<AbortGate>::default();
        let ctx = engine.new_context(n_ctx, &gate)?;
        let n_batch = engine.config.n_batch.clamp(1, n_ctx);
        let mut s = KvSession {
            engine: engine.clone(),
            ctx,
            gate,
            n_ctx,
            batch: LlamaBatch::new(n_batch, 1),
            stale: Staleness::fresh(doc.len()),
            correction: engine.config.correction,
            doc,
            logits: None,
            stats: CacheStats::default(),
            broken: false,
            room,
            step_ms: 0.0,
            id: SESSION_IDS.fetch_add(1, Ordering::Relaxed),
        };
        s.encode_all()?;
        s.sync_stats();
        Ok(s)
    }

    /// Context size for a prompt of `n` tokens: headroom for growth and generation, in steps of 512, capped by
    /// the configured limit (a tight context keeps the K-shift, which touches every cell, cheap).
    fn size_for(engine: &Engine, n: usize) -> Result<usize> {
        context_size_for(engine.config.n_ctx, n)
    }

    pub fn text(&self) -> &str {
        &self.doc.text
    }

    /// Sizes the context for prompts of at least `tokens` from the next update on. A context that must grow
    /// loses its cache and the update recomputes its prompt: set before an update that makes the prompt small (a
    /// window read around the cursor first), that costs the small prompt, not the whole one it grows to later.
    pub fn set_room(&mut self, tokens: usize) {
        self.room = tokens.min(self.engine.config.n_ctx.max(64) - 1);
    }

    /// About how long one generation step takes here (the recent average; zero before the first generation).
    pub fn step_estimate(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.step_ms / 1e3)
    }

    pub fn tokens(&self) -> &[Tok] {
        &self.doc.tokens
    }

    /// Byte offset where each cached token starts.
    pub fn token_offsets(&self) -> &[usize] {
        &self.doc.offsets
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    pub fn stats(&self) -> CacheStats {
        let mut stats = self.stats.clone();
        stats.cached_tokens = self.doc.len();
        stats.stale_tokens = self.stale.stale_tokens();
        stats.stale_spans = self.stale.spans().len();
        stats.nearest_stale_distance = self.stale.nearest_distance();
        stats
    }

    pub fn stale_tokens(&self) -> usize {
        self.stale.stale_tokens()
    }

    /// The stale spans, each with the origin of its staleness.
    pub fn stale_spans(&self) -> &[StaleSpan] {
        self.stale.spans()
    }

    pub fn correction(&self) -> Correction {
        self.correction
    }

    /// The correction applied with later PIE updates (default: the engine's).
    pub fn set_correction(&mut self, correction: Correction) {
        self.correction = correction;
    }

    /// Bytes of KV cache this session holds (its whole context, used or not).
    pub fn kv_bytes(&self) -> usize {
        self.n_ctx * self.engine.kv_bytes_per_token()
    }

    fn sync_stats(&mut self) {
        self.stats.cached_tokens = self.doc.len();
        self.stats.stale_tokens = self.stale_tokens();
        self.stats.stale_spans = self.stale.spans().len();
        self.stats.nearest_stale_distance = self.stale.nearest_distance();
    }

    // ----- low-level KV helpers -------------------------------------------------------------------------------

    fn seq_rm(&mut self, seq: i32, p0: usize, p1: Option<usize>) -> Result<()> {
        self.ctx.kv_cache_seq_rm(seq, Some(p0 as u32), p1.map(|p| p as u32)).map_err(cache_err)
    }

    fn seq_rm_all(&mut self, seq: i32) {
        let _ = self.ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
    }

    fn seq_add(&mut self, p0: usize, p1: usize, delta: i64) -> Result<()> {
        self.ctx.kv_cache_seq_add(SEQ_MAIN, Some(p0 as u32), Some(p1 as u32), delta as i32).map_err(cache_err)
    }

    fn seq_cp(&mut self, src: i32, dst: i32, p0: usize, p1: usize) -> Result<()> {
        if p1 <= p0 {
            return Ok(());
        }
        self.ctx.kv_cache_seq_cp(src, dst, Some(p0 as u32), Some(p1 as u32)).map_err(cache_err)
    }

    /// Decode `(token, position, sequence)` items (at most `n_batch`), keeping the logits of item `logits_at`.
    fn decode(&mut self, items: &[(Tok, usize, i32)], logits_at: Option<usize>) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        self.batch.clear();
        for (k, &(t, pos, seq)) in items.iter().enumerate() {
            self.batch.add(LlamaToken(t), pos as i32, &[seq], logits_at == Some(k)).map_err(|e| EngineError::Decode(e.to_string()))?;
        }
        self.ctx.decode(&mut self.batch).map_err(|e| match e {
            llama_cpp_2::DecodeError::NoKvCacheSlot => {
                EngineError::ContextOverflow { needed: self.doc.len() + items.len(), limit: self.n_ctx }
            }
            // Only an armed `AbortGate` stops a decode (llama.cpp's status 2).
            llama_cpp_2::DecodeError::Unknown(2) => EngineError::Cancelled,
            other => EngineError::Decode(other.to_string()),
        })?;
        self.stats.encoded_tokens += items.len() as u64;
        Ok(())
    }

    fn n_batch(&self) -> usize {
        self.engine.config.n_batch.clamp(1, self.n_ctx)
    }

    /// Encode `tokens` at positions `start..` on sequence `seq`, in batches; with `want_logits` the last token is
    /// decoded on its own and its logits kept. Logits are always made by such a lone decode of the last prompt
    /// token, however the cache was built: llama.cpp's CPU kernels round a one-token batch differently from a
    /// larger one (~1 logit here), and methods must be compared on equal terms.
    fn decode_run(&mut self, tokens: &[Tok], start: usize, seq: i32, want_logits: bool) -> Result<()> {
        self.decode_run_in(tokens, start, seq, want_logits, self.n_batch())
    }

    /// `decode_run` in batches of at most `nb` tokens.
    fn decode_run_in(&mut self, tokens: &[Tok], start: usize, seq: i32, want_logits: bool, nb: usize) -> Result<()> {
        let nb = nb.clamp(1, self.n_batch());
        let body = if want_logits { tokens.len().saturating_sub(1) } else { tokens.len() };
        let mut at = 0;
        while at < body {
            let end = (at + nb).min(body);
            let items: Vec<(Tok, usize, i32)> = (at..end).map(|i| (tokens[i], start + i, seq)).collect();
            self.decode(&items, None)?;
            at = end;
        }
        if want_logits && !tokens.is_empty() {
            let i = tokens.len() - 1;
            self.decode(&[(tokens[i], start + i, seq)], Some(0))?;
            self.logits = Some(self.ctx.get_logits_ith(0).to_vec());
        }
        Ok(())
    }

    /// Recompute the whole prompt into an empty sequence 0.
    fn encode_all(&mut self) -> Result<()> {
        self.encode_all_in(self.n_batch())
    }

    /// `encode_all` in batches of at most `nb` tokens.
    fn encode_all_in(&mut self, nb: usize) -> Result<()> {
        self.ctx.clear_kv_cache();
        self.logits = None;
        let toks = self.doc.tokens.clone();
        self.decode_run_in(&toks, 0, SEQ_MAIN, true, nb)?;
        self.stale = Staleness::fresh(toks.len());
        self.broken = false;
        Ok(())
    }

    /// Whether a prompt of `n` tokens fits the context as it is (`ensure_capacity` leaves it alone).
    fn fits(&self, n: usize) -> bool {
        n < self.n_ctx && (self.n_ctx == self.engine.config.n_ctx || n + GEN_HEADROOM.min(self.n_ctx / 4) <= self.n_ctx)
    }

    /// Grow the context when the prompt no longer fits. Returns true if the cache was lost (caller recomputes).
    fn ensure_capacity(&mut self, n: usize) -> Result<bool> {
        if self.fits(n) {
            return Ok(false);
        }
        let size = Self::size_for(&self.engine, n)?;
        if size == self.n_ctx {
            return Ok(false);
        }
        tracing::debug!(session = self.id, from = self.n_ctx, to = size, "growing context");
        // Drop the old context first: two at once may not fit in memory.
        let fresh = self.engine.new_context(size, &self.gate)?;
        self.ctx = fresh;
        self.n_ctx = size;
        self.batch = LlamaBatch::new(self.n_batch(), 1);
        Ok(true)
    }

    /// Encode new-token runs of the (already updated) document, each attending to sequence 0's cells before it.
    /// Runs are folded into shared decodes on scratch sequences. Returns the number of decodes.
    fn encode_sites(&mut self, sites: &[NewRun]) -> Result<usize> {
        let nb = self.n_batch();
        let max_fold = self.engine.config.max_fold_sites.max(1);
        let mut decodes = 0;
        let mut i = 0;
        while i < sites.len() {
            let s = sites[i];
            if s.len > nb {
                // Too big for one batch: alone on scratch sequence 1, in chunks.
                self.seq_cp(SEQ_MAIN, 1, 0, s.start)?;
                let toks = self.doc.tokens[s.start..s.start + s.len].to_vec();
                self.decode_run(&toks, s.start, 1, false)?;
                decodes += s.len.div_ceil(nb);
                self.seq_cp(1, SEQ_MAIN, s.start, s.start + s.len)?;
                self.seq_rm_all(1);
                self.stale.encoded(s.start, s.start + s.len, None);
                i += 1;
                continue;
            }
            let mut wave = Vec::new();
            let mut total = 0;
            while i < sites.len() && wave.len() < max_fold && total + sites[i].len <= nb {
                wave.push(sites[i]);
                total += sites[i].len;
                i += 1;
            }
            let mut items = Vec::with_capacity(total);
            for (k, s) in wave.iter().enumerate() {
                let seq = 1 + k as i32;
                self.seq_cp(SEQ_MAIN, seq, 0, s.start)?;
                items.extend((s.start..s.start + s.len).map(|p| (self.doc.tokens[p], p, seq)));
            }
            self.decode(&items, None)?;
            decodes += 1;
            for (k, s) in wave.iter().enumerate() {
                let seq = 1 + k as i32;
                self.seq_cp(seq, SEQ_MAIN, s.start, s.start + s.len)?;
                self.seq_rm_all(seq);
                // A later site of the same decode did not see the earlier sites' new tokens.
                let unseen = (k > 0).then(|| wave[k - 1].start + wave[k - 1].len);
                self.stale.encoded(s.start, s.start + s.len, unseen);
            }
        }
        Ok(decodes)
    }

    /// Decode `tokens` at positions `start..` on scratch sequence 1, over a copy of the main sequence's cells
    /// before `start`, armed to stop when `cancel` is set. The main sequence is not touched; on an error (a stop
    /// included) the scratch sequence is emptied (llama.cpp has already dropped the stopped batch's cells).
    fn decode_on_scratch(&mut self, start: usize, tokens: &[Tok], cancel: &AtomicBool) -> Result<()> {
        self.seq_cp(SEQ_MAIN, 1, 0, start)?;
        let items: Vec<(Tok, usize, i32)> = tokens.iter().enumerate().map(|(k, &t)| (t, start + k, 1)).collect();
        let decoded = {
            let gate = std::sync::Arc::clone(&self.gate);
            let _armed = gate.arm(cancel);
            self.decode(&items, None)
        };
        if decoded.is_err() {
            self.seq_rm_all(1);
        }
        decoded
    }

    /// PIE's move of the kept runs (the pending rotation is applied by the next decode). Right-moving runs go
    /// right to left and left-moving runs left to right, so a run never lands on cells that have yet to move.
    fn move_kept_runs(&mut self, plan: &Plan) -> Result<()> {
        for r in plan.kept.iter().rev().filter(|r| r.delta() > 0) {
            self.seq_add(r.old_start, r.old_start + r.len, r.delta())?;
        }
        for r in plan.kept.iter().filter(|r| r.delta() < 0) {
            self.seq_add(r.old_start, r.old_start + r.len, r.delta())?;
        }
        Ok(())
    }

    // ----- updates --------------------------------------------------------------------------------------------

    /// Apply LSP edits (in order, each in the coordinates left by the previous one) with PIE. `new_text` is the
    /// document store's text after the edits; if the edits do not reproduce it, the update is planned from a
    /// text diff instead (and says so).
    pub fn update(&mut self, new_text: &str, edits: &[TextEdit]) -> Result<UpdateReport> {
        self.update_with(new_text, edits, UpdateMode::Pie)
    }

    /// Replace the whole text (planned from a text diff).
    pub fn set_text(&mut self, new_text: &str) -> Result<UpdateReport> {
        self.update_with(new_text, &[], UpdateMode::Pie)
    }

    /// Apply an update with a chosen method.
    pub fn update_with(&mut self, new_text: &str, edits: &[TextEdit], mode: UpdateMode) -> Result<UpdateReport> {
        let t0 = Instant::now();
        let mut plan = plan(&self.doc, edits, &self.engine)?;
        let mut resynced = false;
        if plan.new.text != new_text {
            let e = diff_edit(&self.doc.text, new_text);
            plan = super::pie::plan(&self.doc, &[e], &self.engine)?;
            resynced = true;
        }
        let n_new = plan.new.len();
        let mut report = UpdateReport { resynced, ..Default::default() };
        let lost = self.ensure_capacity(n_new.max(self.room))?;
        let old_encoded = self.stats.encoded_tokens;
        let result = if lost || self.broken {
            self.doc = plan.new;
            report.recomputed = true;
            self.stats.full_recomputes += 1;
            self.encode_all().map(|_| ())
        } else {
            match mode {
                UpdateMode::Pie | UpdateMode::Naive => {
                    if plan.shifted_tokens() > 0 && !self.engine.info.can_shift {
                        report.recomputed = true;
                        self.stats.full_recomputes += 1;
                        self.apply_prefix_reuse(plan, &mut report)
                    } else {
                        self.apply_pie(plan, mode == UpdateMode::Naive, &mut report)
                    }
                }
                UpdateMode::PrefixReuse => self.apply_prefix_reuse(plan, &mut report),
                UpdateMode::CacheReuse { min_chunk } => self.apply_cache_reuse(plan, min_chunk.max(1), &mut report),
                UpdateMode::Full => {
                    self.doc = plan.new;
                    report.recomputed = true;
                    self.stats.full_recomputes += 1;
                    self.encode_all()
                }
            }
        };
        if let Err(e) = result {
            self.broken = true;
            self.logits = None;
            self.sync_stats();
            return Err(e);
        }
        report.encoded_tokens = (self.stats.encoded_tokens - old_encoded) as usize;
        report.ms = t0.elapsed().as_secs_f64() * 1e3;
        self.count_update(&report);
        Ok(report)
    }

    /// Adds a finished update to the counters `pie/cacheStats` reports.
    fn count_update(&mut self, report: &UpdateReport) {
        self.stats.updates += 1;
        self.stats.last_update_ms = report.ms;
        self.stats.shifted_tokens += report.shifted_tokens as u64;
        self.stats.reused_tokens += report.reused_tokens as u64;
        self.stats.correction_tokens += report.correction_tokens as u64;
        self.stats.correction_ms += report.correction_ms;
        self.sync_stats();
    }

    /// `update` without a correction, in a way `cancel` stops. When the update is one run of new tokens after an
    /// untouched prefix (a window read on in steps, `warm::Warm::read_step`), that run is decoded first, on
    /// scratch sequence 1 next to the old cells, armed to stop when `cancel` is set; only a finished decode drops,
    /// moves and joins cells of the main sequence. A stopped update returns `Cancelled` and leaves the session as
    /// it was, so a keystroke never waits for a read step. Other shapes (several sites, a context to grow, a
    /// broken session) are applied as `update` applies them, to the end.
    pub fn update_interruptible(&mut self, new_text: &str, edits: &[TextEdit], cancel: &AtomicBool) -> Result<UpdateReport> {
        let t0 = Instant::now();
        let mut plan = plan(&self.doc, edits, &self.engine)?;
        let resynced = plan.new.text != new_text;
        if resynced {
            plan = super::pie::plan(&self.doc, &[diff_edit(&self.doc.text, new_text)], &self.engine)?;
        }
        let incremental = !self.broken
            && self.fits(plan.new.len().max(self.room))
            && (plan.shifted_tokens() == 0 || self.engine.info.can_shift);
        // Staleness follows the text's changes; the renewed edge tokens are the same text, re-encoded.
        let changed = plan.origin.clone();
        if incremental {
            self.renew_stale_edges(&mut plan);
        }
        let site = match plan.sites[..] {
            [s] if incremental
                && s.len <= self.n_batch()
                && plan.origin[..s.start].iter().enumerate().all(|(i, o)| *o == Some(i)) =>
            {
                s
            }
            _ => {
                let correction = std::mem::replace(&mut self.correction, Correction::OFF);
                let result = self.update_with(new_text, edits, UpdateMode::Pie);
                self.correction = correction;
                return result;
            }
        };
        // 1. The new run, over a copy of the untouched prefix; the main sequence is not touched yet.
        self.decode_on_scratch(site.start, &plan.new.tokens[site.start..site.start + site.len], cancel)?;
        // 2. Finished: the scratch sequence keeps only the new cells, the main one drops what the plan removes and
        //    moves what comes after the site (only its own cells move), then takes the new cells.
        self.logits = None;
        self.seq_rm(1, 0, Some(site.start))?;
        for &(a, b) in &plan.removed {
            self.seq_rm(SEQ_MAIN, a, Some(b))?;
        }
        self.move_kept_runs(&plan)?;
        self.seq_cp(1, SEQ_MAIN, site.start, site.start + site.len)?;
        self.seq_rm_all(1);
        let report = UpdateReport {
            encoded_tokens: site.len,
            shifted_tokens: plan.shifted_tokens(),
            reused_tokens: plan.reused_tokens(),
            removed_tokens: plan.removed.iter().map(|(a, b)| b - a).sum(),
            sites: 1,
            decodes: 1,
            resynced,
            ms: t0.elapsed().as_secs_f64() * 1e3,
            ..Default::default()
        };
        self.stale.remap(&changed);
        self.doc = plan.new;
        self.stale.encoded(site.start, site.start + site.len, None);
        self.count_update(&report);
        Ok(report)
    }

    /// The few cached tokens right before a site that are the cache's first stale tokens (everything before them
    /// is fresh) are encoded again with the site, so that its new tokens are fresh: otherwise they saw a stale
    /// token and are stale themselves (second order), with everything encoded after them. It happens where the
    /// new text starts with the token that stood there (an indentation, a newline): the plan keeps that token,
    /// and text inserted before a stale run lands after its first token. Reading a window in parts hit it at
    /// every step (`warm::Warm::read_step`).
    fn renew_stale_edges(&self, plan: &mut Plan) {
        const MAX_EDGE: usize = 4;
        let Some(first_stale) = self.stale.first_stale_from(0) else { return };
        let mut renew = Vec::new();
        for site in &plan.sites {
            let mut t = site.start;
            let mut run = Vec::new();
            while t > plan.new.n_fixed && run.len() < MAX_EDGE {
                match plan.origin[t - 1] {
                    Some(o) if o >= first_stale => {
                        run.push(t - 1);
                        if o == first_stale {
                            renew.append(&mut run);
                            break;
                        }
                        t -= 1;
                    }
                    _ => break,
                }
            }
        }
        plan.renew(&renew, self.doc.len());
    }

    fn apply_pie(&mut self, mut plan: Plan, naive: bool, report: &mut UpdateReport) -> Result<()> {
        self.logits = None;
        // The correction is PIE's; the naive baseline stays what it is.
        let correction = if naive { Correction::OFF } else { self.correction };
        // Staleness follows the text's changes; the corrected tokens are the same text, re-encoded.
        let changed = plan.origin.clone();
        // Each change's own size decides its window, before the correction turns cached tokens into new ones.
        let widened = plan.correct_after_changes(|inserted, removed| correction.after_edit_for(inserted, removed), self.doc.len());
        if !naive {
            self.renew_stale_edges(&mut plan);
        }
        // 1. Drop removed cells (old positions; nothing has moved yet).
        for &(a, b) in &plan.removed {
            self.seq_rm(SEQ_MAIN, a, Some(b))?;
        }
        report.removed_tokens = plan.removed.iter().map(|(a, b)| b - a).sum();
        // 2. Move kept runs (the naive baseline relabels them without rotating).
        if naive {
            self.relabel_without_rotation(&plan)?;
        } else {
            self.move_kept_runs(&plan)?;
        }
        report.shifted_tokens = plan.shifted_tokens();
        report.reused_tokens = plan.reused_tokens();
        report.sites = plan.sites.len();
        self.stale.remap(&changed);
        let sites = plan.sites.clone();
        self.doc = plan.new;
        // 3. Encode the new tokens (this decode also applies the pending rotation), the corrected ones with them.
        let t = Instant::now();
        report.decodes = self.encode_sites(&sites)?;
        if widened > 0 {
            let site_tokens: usize = sites.iter().map(|s| s.len).sum();
            report.correction_ms += t.elapsed().as_secs_f64() * 1e3 * widened as f64 / site_tokens.max(1) as f64;
        }
        report.correction_tokens = widened;
        // 4. The tail: the last tokens of the prompt, re-encoded on sequence 0 after the sites so that they see
        //    every new token (a site of the same decode would not), with the next-token logits.
        if correction.tail > 0 {
            let n = self.doc.len();
            let t0 = n.saturating_sub(correction.tail + 1).max(self.doc.n_fixed);
            if let Some(t0) = self.stale.first_stale_from(t0).filter(|&t| t < n) {
                let t = Instant::now();
                self.seq_rm(SEQ_MAIN, t0, None)?;
                let toks = self.doc.tokens[t0..].to_vec();
                self.decode_run(&toks, t0, SEQ_MAIN, true)?;
                self.stale.encoded(t0, n, None);
                report.decodes += 2;
                report.correction_tokens += n - 1 - t0;
                report.correction_ms += t.elapsed().as_secs_f64() * 1e3;
            }
        }
        Ok(())
    }

    fn apply_prefix_reuse(&mut self, plan: Plan, report: &mut UpdateReport) -> Result<()> {
        self.logits = None;
        let old = &self.doc.tokens;
        let cp = old.iter().zip(plan.new.tokens.iter()).take_while(|(a, b)| a == b).count();
        report.removed_tokens = old.len() - cp;
        report.reused_tokens = cp;
        self.seq_rm(SEQ_MAIN, cp, None)?;
        let tail = plan.new.tokens[cp..].to_vec();
        let origin: Vec<Option<usize>> = (0..plan.new.len()).map(|i| (i < cp).then_some(i)).collect();
        self.stale.remap(&origin);
        self.doc = plan.new;
        if tail.is_empty() {
            return Ok(());
        }
        report.decodes = tail.len().div_ceil(self.n_batch());
        self.decode_run(&tail, cp, SEQ_MAIN, true)?;
        self.stale.encoded(cp, self.doc.len(), None);
        Ok(())
    }

    /// llama-server's cache reuse (`server_context::update_slots`, `n_cache_reuse`), transcribed.
    fn apply_cache_reuse(&mut self, plan: Plan, min_chunk: usize, report: &mut UpdateReport) -> Result<()> {
        self.logits = None;
        let mut cache = self.doc.tokens.clone();
        let prompt = &plan.new.tokens;
        let mut n_past = cache.iter().zip(prompt.iter()).take_while(|(a, b)| a == b).count();
        let common = n_past;
        let (mut head_c, mut head_p) = (n_past, n_past);
        let mut origin: Vec<Option<usize>> = (0..prompt.len()).map(|i| (i < common).then_some(i)).collect();
        while head_c < cache.len() && head_p < prompt.len() {
            let mut n_match = 0;
            while head_c + n_match < cache.len() && head_p + n_match < prompt.len() && cache[head_c + n_match] == prompt[head_p + n_match] {
                n_match += 1;
            }
            if n_match >= min_chunk {
                let shift = head_p as i64 - head_c as i64;
                if head_c > head_p {
                    self.seq_rm(SEQ_MAIN, head_p, Some(head_c))?;
                }
                if shift != 0 {
                    self.seq_add(head_c, head_c + n_match, shift)?;
                    report.shifted_tokens += n_match;
                }
                for i in 0..n_match {
                    cache[head_p + i] = cache[head_c + i];
                    origin[head_p + i] = Some(head_c + i);
                }
                report.reused_tokens += n_match;
                n_past += n_match;
                head_c += n_match;
                head_p += n_match;
            } else {
                head_c += 1;
            }
        }
        report.reused_tokens += common;
        self.seq_rm(SEQ_MAIN, n_past, None)?;
        let tail = prompt[n_past..].to_vec();
        self.stale.remap(&origin);
        self.doc = plan.new;
        if !tail.is_empty() {
            report.decodes = tail.len().div_ceil(self.n_batch());
            self.decode_run(&tail, n_past, SEQ_MAIN, true)?;
            self.stale.encoded(n_past, self.doc.len(), None);
        } else if n_past > 0 {
            // Nothing to decode: the moved cells still need their rotation applied before logits are read;
            // `next_token_logits` re-decodes the last token, which does it.
        }
        Ok(())
    }

    /// Naive baseline: give kept runs their new positions *without* rotating their keys. llama.cpp has no call
    /// for that (`seq_add` always rotates), so the sequence is saved, its cell positions are rewritten in the
    /// saved state, and it is loaded back. Test and benchmark use only.
    fn relabel_without_rotation(&mut self, plan: &Plan) -> Result<()> {
        if plan.kept.iter().all(|r| r.delta() == 0) {
            return Ok(());
        }
        let path = std::env::temp_dir().join(format!("pie-ls-naive-{}-{}.state", std::process::id(), self.id));
        let res = (|| {
            self.ctx.state_seq_save_file(&path, SEQ_MAIN, &[]).map_err(cache_err)?;
            let mut bytes = std::fs::read(&path).map_err(|e| EngineError::io(&path, e))?;
            // File: magic, version, n_tokens(=0), then the KV state: n_stream, cell_count, then per cell
            // (pos i32, n_seq_id u32, seq_id i32) for models without extra cell data.
            let rd = |b: &[u8], at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
            if bytes.len() < 20 || rd(&bytes, 8) != 0 || rd(&bytes, 12) != 1 {
                return Err(EngineError::Cache("unexpected sequence state layout (naive baseline)".into()));
            }
            let cells = rd(&bytes, 16) as usize;
            let mut at = 20;
            for _ in 0..cells {
                if at + 12 > bytes.len() || rd(&bytes, at + 4) != 1 {
                    return Err(EngineError::Cache("unexpected cell layout in sequence state (naive baseline)".into()));
                }
                let pos = rd(&bytes, at) as i32 as usize;
                if let Some(r) = plan.kept.iter().find(|r| pos >= r.old_start && pos < r.old_start + r.len) {
                    let np = (pos as i64 + r.delta()) as i32;
                    bytes[at..at + 4].copy_from_slice(&np.to_le_bytes());
                }
                at += 12;
            }
            std::fs::write(&path, &bytes).map_err(|e| EngineError::io(&path, e))?;
            self.ctx.state_seq_load_file(&path, SEQ_MAIN, 0).map_err(cache_err)?;
            Ok(())
        })();
        let _ = std::fs::remove_file(&path);
        res
    }

    // ----- snapshots (benchmark: try several methods from the same cached state) -------------------------------

    /// Copy of the cache and the token mirror, to try several update methods from one starting point.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let state = self.ctx.state_seq_get(SEQ_MAIN, LlamaStateSeqFlags::empty()).map_err(cache_err)?;
        Ok(Snapshot { state, doc: self.doc.clone(), stale: self.stale.clone(), logits: self.logits.clone(), stats: self.stats.clone() })
    }

    /// Return to a snapshot taken from this session (its context size must not have changed since).
    pub fn restore(&mut self, snap: &Snapshot) -> Result<()> {
        self.ctx.clear_kv_cache();
        if let Err(e) = self.ctx.state_seq_set(&snap.state, SEQ_MAIN) {
            self.broken = true;
            return Err(cache_err(e));
        }
        self.doc = snap.doc.clone();
        self.stale = snap.stale.clone();
        self.logits = snap.logits.clone();
        self.stats = snap.stats.clone();
        self.broken = false;
        Ok(())
    }

    // ----- refresh and recomputation --------------------------------------------------------------------------

    /// Re-encode up to `max_tokens` stale tokens, nearest to their change first (see `stale.rs`), in chunks of
    /// `refresh_chunk`, stopping early (with `Cancelled`) when `cancel` is set between chunks. Fresh tokens are
    /// never re-encoded; work done before a cancellation is kept.
    pub fn refresh_stale(&mut self, max_tokens: usize, cancel: &AtomicBool) -> Result<RefreshReport> {
        let t0 = Instant::now();
        let chunk = self.engine.config.refresh_chunk.clamp(1, self.n_batch());
        let mut done = 0;
        if self.broken {
            self.stats.full_recomputes += 1;
            self.encode_all()?;
        }
        let result = loop {
            if done >= max_tokens {
                break Ok(());
            }
            let Some((p, q)) = self.stale.next_chunk(chunk.min(max_tokens - done)) else { break Ok(()) };
            if cancel.load(Ordering::Relaxed) {
                break Err(EngineError::Cancelled);
            }
            self.logits = None;
            match self.refresh_span(p, q, cancel) {
                Ok(()) => done += q - p,
                // Stopped mid-decode by a keystroke: the main sequence was not touched.
                Err(EngineError::Cancelled) => break Err(EngineError::Cancelled),
                Err(e) => {
                    self.broken = true;
                    break Err(e);
                }
            }
        };
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        self.stats.refreshed_tokens += done as u64;
        self.stats.refresh_ms += ms;
        self.sync_stats();
        result?;
        Ok(RefreshReport { encoded_tokens: done, remaining_stale: self.stale_tokens(), ms })
    }

    /// Re-encode the cached tokens `p..q` (at most one batch) so that they see the text before them as it is now.
    /// They are decoded on scratch sequence 1 next to the old cells, with the decode armed to stop when `cancel`
    /// is set; only a finished decode replaces the main sequence's cells, so a stopped one leaves the cache as it
    /// was (llama.cpp has already dropped the scratch cells of the stopped batch; the rest go here).
    fn refresh_span(&mut self, p: usize, q: usize, cancel: &AtomicBool) -> Result<()> {
        let toks = self.doc.tokens[p..q].to_vec();
        self.decode_on_scratch(p, &toks, cancel)?;
        self.seq_rm(SEQ_MAIN, p, Some(q))?;
        self.seq_cp(1, SEQ_MAIN, p, q)?;
        self.seq_rm_all(1);
        self.stale.encoded(p, q, None);
        Ok(())
    }

    /// Recompute the whole cache (the quality reference).
    pub fn full_recompute(&mut self) -> Result<()> {
        self.full_recompute_in_chunks(self.n_batch())
    }

    /// Recompute the whole cache in batches of `chunk` tokens: the same arithmetic as `full_recompute` up to
    /// rounding, with the batch shapes of the idle refresh and the correction windows. The fidelity benchmark uses
    /// it to tell how much of a disagreement with `full` batch shapes alone make (see `docs/benchmarks.md`).
    pub fn full_recompute_in_chunks(&mut self, chunk: usize) -> Result<()> {
        self.stats.full_recomputes += 1;
        let r = self.encode_all_in(chunk);
        if r.is_err() {
            self.broken = true;
        }
        self.sync_stats();
        r
    }

    /// Logits for the token after the prompt. After an incremental update the last prompt token is re-decoded
    /// (its cell removed and encoded again), which costs one token and applies any pending rotation.
    pub fn next_token_logits(&mut self) -> Result<Vec<f32>> {
        if let Some(l) = &self.logits {
            return Ok(l.clone());
        }
        if self.broken {
            self.full_recompute()?;
            if let Some(l) = &self.logits {
                return Ok(l.clone());
            }
        }
        let n = self.doc.len();
        if n == 0 {
            return Err(EngineError::EmptyPrompt);
        }
        let last = self.doc.tokens[n - 1];
        let r = (|| {
            self.seq_rm(SEQ_MAIN, n - 1, None)?;
            self.decode(&[(last, n - 1, SEQ_MAIN)], Some(0))?;
            self.logits = Some(self.ctx.get_logits_ith(0).to_vec());
            self.stale.encoded(n - 1, n, None);
            Ok(())
        })();
        if let Err(e) = r {
            self.broken = true;
            return Err(e);
        }
        Ok(self.logits.clone().unwrap_or_default())
    }

    // ----- generation -----------------------------------------------------------------------------------------

    /// Generate after the prompt. `on_token` receives each new piece of text as it becomes valid UTF-8.
    /// The generated cells are removed afterwards, so the cache again mirrors the prompt.
    ///
    /// Greedy generation drafts tokens from the prompt (`draft_tokens`, see `draft_from`) and decodes them in the
    /// same batch as the token just chosen: a decode on a memory-bound CPU costs about the same for a few tokens
    /// as for one, and every draft token the model's own argmax confirms is a decode step saved. The text is the
    /// model's greedy choice either way (up to the rounding of a larger batch).
    pub fn generate(&mut self, params: &GenerateParams, cancel: &AtomicBool, on_token: impl FnMut(&str)) -> Result<Generation> {
        self.generate_interruptible(params, cancel, None, on_token)
    }

    /// `generate`, where `interrupt` = `(flag, enabled)` also stops a running decode step (not only between
    /// steps) once `flag` is raised while `enabled` is: a suggestion already answered and now being extended
    /// gives way to the next keystroke at once. Such a stop ends in `Err(Cancelled)`, as `cancel` does.
    pub fn generate_interruptible(
        &mut self,
        params: &GenerateParams,
        cancel: &AtomicBool,
        interrupt: Option<(&AtomicBool, &AtomicBool)>,
        mut on_token: impl FnMut(&str),
    ) -> Result<Generation> {
        let t0 = Instant::now();
        let n = self.doc.len();
        if n + params.max_tokens.min(1) > self.n_ctx {
            return Err(EngineError::ContextOverflow { needed: n + 1, limit: self.n_ctx });
        }
        let max_tokens = params.max_tokens.min(self.n_ctx.saturating_sub(n));
        let max_draft = if params.sampling.temperature <= 0.0 { self.engine.config.draft_tokens.min(self.n_batch().saturating_sub(1)) } else { 0 };
        let mut logits = self.next_token_logits()?;
        tracing::trace!(ms = t0.elapsed().as_secs_f64() * 1e3, "generate: logits after the prompt");
        let mut sampler = Sampler::new(&params.sampling);
        let mut bytes: Vec<u8> = Vec::new();
        let mut emitted = 0usize; // bytes of `bytes` already handed to on_token
        let mut generated: Vec<Tok> = Vec::new();
        // Confirmed draft tokens, in order: already in the cache (their cells were decoded with the draft), so
        // they are taken as they are and not decoded again; `logits` then holds the logits after the last one.
        let mut confirmed: std::collections::VecDeque<Tok> = std::collections::VecDeque::new();
        let (mut decodes, mut drafted, mut accepted) = (0usize, 0usize, 0usize);
        let mut backoff = DraftBackoff::default();
        let max_stop = params.stop.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut reason = StopReason::MaxTokens;
        let result = (|| {
            while generated.len() < max_tokens {
                if cancel.load(Ordering::Relaxed) {
                    return Err(EngineError::Cancelled);
                }
                let (tok, in_cache) = match confirmed.pop_front() {
                    Some(t) => (t, true),
                    None => (sampler.sample(&logits), false),
                };
                if self.engine.is_eog(tok) {
                    reason = StopReason::EndOfGeneration;
                    break;
                }
                generated.push(tok);
                bytes.extend(self.engine.token_bytes(tok));
                // Stop strings: search only the tail that could hold a new match.
                if max_stop > 0 {
                    let text = String::from_utf8_lossy(&bytes);
                    if let Some(cut) = params.stop.iter().filter(|s| !s.is_empty()).filter_map(|s| text.find(s.as_str())).min() {
                        let kept = text[..cut].to_string();
                        bytes = kept.into_bytes();
                        reason = StopReason::StopString;
                        break;
                    }
                }
                // Stream what is safe: valid UTF-8 that cannot be the start of a stop string.
                let valid = match std::str::from_utf8(&bytes) {
                    Ok(s) => s.len(),
                    Err(e) => e.valid_up_to(),
                };
                let safe = valid.saturating_sub(max_stop.saturating_sub(1));
                if safe > emitted {
                    let mut end = safe;
                    while end > emitted && std::str::from_utf8(&bytes[emitted..end]).is_err() {
                        end -= 1;
                    }
                    if end > emitted {
                        on_token(std::str::from_utf8(&bytes[emitted..end]).unwrap_or(""));
                        emitted = end;
                    }
                }
                let count = generated.len();
                if count >= max_tokens {
                    break;
                }
                if in_cache {
                    continue;
                }
                // Decode the chosen token at its position, with a draft of what may follow it after it.
                let room = max_draft.min(max_tokens - count);
                let draft = if room > 0 && backoff.may_draft() { draft_from(&self.doc.tokens, &generated, room) } else { Vec::new() };
                let pos = n + count - 1;
                self.batch.clear();
                self.batch.add(LlamaToken(tok), pos as i32, &[SEQ_MAIN], true).map_err(|e| EngineError::Decode(e.to_string()))?;
                for (i, &d) in draft.iter().enumerate() {
                    self.batch.add(LlamaToken(d), (pos + 1 + i) as i32, &[SEQ_MAIN], true).map_err(|e| EngineError::Decode(e.to_string()))?;
                }
                let step_started = Instant::now();
                let decoded = {
                    let gate = std::sync::Arc::clone(&self.gate);
                    let _armed = interrupt.map(|(flag, enabled)| gate.arm_while(flag, enabled));
                    self.ctx.decode(&mut self.batch)
                };
                decoded.map_err(|e| match e {
                    llama_cpp_2::DecodeError::Unknown(2) => EngineError::Cancelled,
                    other => EngineError::Decode(other.to_string()),
                })?;
                let step = step_started.elapsed().as_secs_f64() * 1e3;
                self.step_ms = if self.step_ms > 0.0 { 0.7 * self.step_ms + 0.3 * step } else { step };
                decodes += 1;
                drafted += draft.len();
                // Keep the draft's tokens as long as each is the model's argmax after the one before it.
                let mut k = 0;
                while k < draft.len() && argmax(self.ctx.get_logits_ith(k as i32)) == draft[k] as usize {
                    confirmed.push_back(draft[k]);
                    k += 1;
                }
                accepted += k;
                if !draft.is_empty() {
                    backoff.record(k > 0);
                }
                if k < draft.len() {
                    // The refused part of the draft leaves the cache.
                    self.seq_rm(SEQ_MAIN, pos + 1 + k, None)?;
                }
                logits = self.ctx.get_logits_ith(k as i32).to_vec();
            }
            Ok(())
        })();
        // Remove generated cells whatever happened: the cache must mirror the prompt again.
        if self.seq_rm(SEQ_MAIN, n, None).is_err() {
            self.broken = true;
        }
        result?;
        trim_incomplete_utf8(&mut bytes);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if text.len() > emitted {
            on_token(&text[emitted.min(text.len())..]);
        }
        self.stats.drafted_tokens += drafted as u64;
        self.stats.accepted_draft_tokens += accepted as u64;
        Ok(Generation { text, tokens: generated.len(), stop_reason: reason, ms: t0.elapsed().as_secs_f64() * 1e3, decodes, drafted, accepted })
    }

    /// Greedy next line after the prompt (stops at a newline), as the fidelity benchmark scores it.
    pub fn greedy_line(&mut self, max_tokens: usize) -> Result<String> {
        let p = GenerateParams { max_tokens, sampling: SamplingParams::greedy(), stop: vec!["\n".to_string()] };
        Ok(self.generate(&p, &AtomicBool::new(false), |_| {})?.text)
    }

    /// Where a session writes temporary state (naive baseline); exposed for diagnostics.
    pub fn temp_dir() -> PathBuf {
        std::env::temp_dir()
    }
}

/// Drops a character cut off at the end of `bytes` (a generation that stopped at the token cap between the
/// tokens of one multi-byte character): decoded lossily it would end in U+FFFD, which an editor inserts into the
/// user's file.
fn trim_incomplete_utf8(bytes: &mut Vec<u8>) {
    let n = bytes.len();
    for back in 1..=n.min(4) {
        let b = bytes[n - back];
        if b & 0xC0 == 0x80 {
            continue; // a continuation byte: the character starts further back
        }
        let need = match b {
            0xF0.. => 4,
            0xE0.. => 3,
            0xC0.. => 2,
            _ => 1,
        };
        if need > back {
            bytes.truncate(n - back);
        }
        return;
    }
}

/// When a generation stops drafting for a while: after a draft the model refused from its first token, the next
/// `DRAFT_BACKOFF_MIN_STEPS` steps decode one token each, twice as many after each further refusal (at most
/// `DRAFT_BACKOFF_MAX_STEPS`), and none after a draft it took. A refused draft is a wider batch for nothing (at
/// 4k tokens, 2 threads: ~25% more per step); a generation that copies the document (a suggestion running into
/// the code after the cursor, a repeated call) has most drafts confirmed, and free-running text few.
const DRAFT_BACKOFF_MIN_STEPS: u32 = 2;
const DRAFT_BACKOFF_MAX_STEPS: u32 = 16;

#[derive(Default)]
struct DraftBackoff {
    /// Steps still to run without a draft.
    wait: u32,
    /// The wait the next refusal sets (0: no refusal since the last confirmed draft).
    next: u32,
}

impl DraftBackoff {
    /// Whether this step may carry a draft (counts the step either way).
    fn may_draft(&mut self) -> bool {
        if self.wait > 0 {
            self.wait -= 1;
            return false;
        }
        true
    }

    /// A draft was decoded; `confirmed`: its first token at least was the model's choice.
    fn record(&mut self, confirmed: bool) {
        if confirmed {
            self.next = 0;
        } else {
            self.next = if self.next == 0 { DRAFT_BACKOFF_MIN_STEPS } else { (self.next * 2).min(DRAFT_BACKOFF_MAX_STEPS) };
            self.wait = self.next;
        }
    }
}

/// Longest n-gram looked up, and shortest: one token alone predicts too little to be worth a wider batch.
const DRAFT_NGRAM_MAX: usize = 4;
const DRAFT_NGRAM_MIN: usize = 2;

/// A draft of up to `max` tokens to follow `generated`: where the last few tokens generated (with the prompt
/// before them) occurred last before, what followed them there. Longer matches are tried first. The search reads
/// the prompt and the generation as one sequence; it costs a scan of the prompt, microseconds against a decode.
pub fn draft_from(prompt: &[Tok], generated: &[Tok], max: usize) -> Vec<Tok> {
    let total = prompt.len() + generated.len();
    let at = |i: usize| if i < prompt.len() { prompt[i] } else { generated[i - prompt.len()] };
    for ngram in (DRAFT_NGRAM_MIN..=DRAFT_NGRAM_MAX).rev() {
        if total <= ngram {
            continue;
        }
        let key_start = total - ngram;
        // The latest earlier occurrence: nearby code is the likeliest to be repeated.
        let mut start = key_start;
        while start > 0 {
            start -= 1;
            if (0..ngram).all(|j| at(start + j) == at(key_start + j)) {
                let from = start + ngram;
                let to = (from + max).min(total);
                return (from..to).map(at).collect();
            }
        }
    }
    Vec::new()
}

/// `KvSession::size_for` with the configured limit (`model.contextLength`) given: at least 512 when the limit
/// allows it, never more than the limit (a limit under 512 panicked in `clamp` and took the model thread down).
fn context_size_for(n_ctx: usize, n: usize) -> Result<usize> {
    let limit = n_ctx.max(64);
    let need = n + GEN_HEADROOM.min(limit / 4);
    if n + 1 > limit {
        return Err(EngineError::ContextOverflow { needed: n + 1, limit });
    }
    let want = (need + need / 4 + 255).div_ceil(512) * 512;
    Ok(want.max(512).min(limit).max(need.min(limit)))
}

pub fn diff_edit(old: &str, new: &str) -> TextEdit {
    let ob = old.as_bytes();
    let nb = new.as_bytes();
    let mut p = ob.iter().zip(nb.iter()).take_while(|(a, b)| a == b).count();
    while p > 0 && (!old.is_char_boundary(p) || !new.is_char_boundary(p)) {
        p -= 1;
    }
    let max_s = ob.len().min(nb.len()) - p;
    let mut s = ob.iter().rev().zip(nb.iter().rev()).take(max_s).take_while(|(a, b)| a == b).count();
    while s > 0 && (!old.is_char_boundary(ob.len() - s) || !new.is_char_boundary(nb.len() - s)) {
        s -= 1;
    }
    TextEdit::new(p, ob.len() - s, &new[p..nb.len() - s])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keystroke_gets_its_own_window_a_line_the_after_edit_window_a_block_the_large_one() {
        let c = Correction { after_edit: 8, tail: 0, large_edit: 128, keystroke: 1 };
        assert_eq!(c.after_edit_for(1, 1), 1, "a character typed into a word");
        assert_eq!(c.after_edit_for(2, 0), 1);
        assert_eq!(c.after_edit_for(0, 2), 1, "a backspace that splits a token");
        assert_eq!(c.after_edit_for(3, 0), 8, "a word pasted");
        assert_eq!(c.after_edit_for(0, 12), 8, "a line deleted");
        assert_eq!(c.after_edit_for(40, 0), 40, "a block: as many as it changed");
        assert_eq!(c.after_edit_for(400, 0), 128);
        // The keystroke window never exceeds the after-edit one: `correctionTokens` 0 turns both off.
        assert_eq!(Correction { after_edit: 0, ..c }.after_edit_for(1, 0), 0);
        assert_eq!(Correction { keystroke: 16, ..c }.after_edit_for(1, 0), 8);
        assert_eq!(Correction::OFF.after_edit_for(1, 0), 0);
    }

    #[test]
    fn a_context_limit_under_512_tokens_is_the_context() {
        for limit in [64, 100, 256, 511] {
            for n in [1, 10, limit / 2, limit - 1] {
                let size = context_size_for(limit, n).unwrap();
                assert!(size <= limit && size > n, "limit {limit}, {n} tokens: {size}");
            }
            assert!(context_size_for(limit, limit).is_err());
        }
        // The usual: steps of 512 with headroom, capped by the limit.
        for n in [10, 600, 4_000] {
            let size = context_size_for(32_768, n).unwrap();
            assert!(size % 512 == 0 && size >= n + GEN_HEADROOM, "{n} tokens: {size}");
        }
        assert_eq!(context_size_for(4_096, 4_000).unwrap(), 4_096);
    }

    #[test]
    fn a_refused_draft_pauses_drafting_longer_each_time_and_a_confirmed_one_resumes_it() {
        let mut b = DraftBackoff::default();
        assert!(b.may_draft());
        b.record(false);
        assert_eq!((0..3).map(|_| b.may_draft()).collect::<Vec<_>>(), [false, false, true]);
        b.record(false);
        assert_eq!((0..5).map(|_| b.may_draft()).collect::<Vec<_>>(), [false, false, false, false, true]);
        b.record(true);
        assert!(b.may_draft());
        b.record(false);
        assert_eq!((0..3).map(|_| b.may_draft()).collect::<Vec<_>>(), [false, false, true], "a confirmed draft resets the wait");
        for _ in 0..10 {
            b.record(false);
        }
        assert_eq!((0..17).filter(|_| !b.may_draft()).count(), 16, "the wait is capped");
    }

    #[test]
    fn drafts_continue_the_latest_earlier_occurrence_of_the_last_tokens() {
        // prompt: a b c d e | x b c d f ; generated so far: b c
        let prompt = [1, 2, 3, 4, 5, 9, 2, 3, 4, 6];
        // The longest n-gram that occurred before wins, at its latest occurrence: "b c" last occurred at 6..8,
        // followed by "d f" and then the generation itself.
        assert_eq!(draft_from(&prompt, &[2, 3], 2), vec![4, 6]);
        assert_eq!(draft_from(&prompt, &[2, 3], 8), vec![4, 6, 2, 3]);
        // The last two tokens never occurred before, and one token alone is no key: no draft.
        assert_eq!(draft_from(&prompt, &[7, 8], 4), Vec::<Tok>::new());
        // A match inside the prompt alone (nothing generated yet ending it): the last two prompt tokens "d f".
        assert_eq!(draft_from(&[4, 6, 1, 4, 6], &[], 3), vec![1, 4, 6]);
        assert_eq!(draft_from(&[], &[], 3), Vec::<Tok>::new());
    }

    #[test]
    fn diff_edit_roundtrip() {
        for (a, b) in [("abc", "abXc"), ("héllo", "hallo"), ("", "x"), ("same", "same"), ("aaa", "aa"), ("ab", "")] {
            let e = diff_edit(a, b);
            let mut t = a.to_string();
            t.replace_range(e.start_byte..e.old_end_byte, &e.new_text);
            assert_eq!(t, b);
        }
    }

    #[test]
    fn a_character_cut_at_the_token_cap_is_dropped_not_replaced() {
        let full = "ok ✓ 🦀".as_bytes().to_vec();
        for cut in 0..=full.len() {
            let mut bytes = full[..cut].to_vec();
            trim_incomplete_utf8(&mut bytes);
            let text = std::str::from_utf8(&bytes).expect("valid UTF-8 after trimming");
            assert!(!text.contains('\u{FFFD}'));
            // Only the cut character goes: every complete one stays.
            let complete = (0..=cut).rev().find(|&i| std::str::from_utf8(&full[..i]).is_ok()).unwrap();
            assert_eq!(bytes.len(), complete, "cut at {cut}");
        }
        // Invalid bytes inside the text are not this function's business (they stay for the lossy decode).
        let mut bytes = vec![b'a', 0xFF, b'b'];
        trim_incomplete_utf8(&mut bytes);
        assert_eq!(bytes, vec![b'a', 0xFF, b'b']);
    }
}
