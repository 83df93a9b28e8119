//! The edit-aware inference engine: llama.cpp in-process (crate `llama-cpp-2`) with PIE KV-cache surgery.
//!
//! - `fetch`: where models live, the pinned real models, `pie-ls model fetch`, `hf:` specs, model resolution.
//! - `model`: backend init, GGUF validation, model loading, engine settings (`Engine`, `EngineConfig`).
//! - `pie`: token-level edit planning (windowed re-tokenization, token diff, kept runs and their shifts).
//! - `session`: one warm document (`KvSession`): PIE updates, staleness, idle refresh, full recomputation,
//!   logits and generation, plus the peer methods the benchmark compares.
//! - `pool`: which documents keep a warm cache (LRU with a memory limit).
//! - `sample`: greedy / sampled decoding over logits.
//! - `bench`: `pie-ls bench pie` (speed and fidelity).
//!
//! See `docs/engine.md` for the API and `docs/benchmarks.md` for measured figures.

pub mod bench;
pub mod chat;
pub mod error;
pub mod fetch;
pub mod heap;
pub mod hub;
pub mod model;
pub mod openmp;
pub mod pie;
pub mod pool;
pub mod sample;
pub mod session;
pub mod stale;

pub use bench::{run_pie_bench, PieBenchArgs};
pub use chat::ChatSlot;
pub use error::EngineError;
pub use fetch::{cache_root, ACTION_MODEL, default_model_path, models_dir, resolve_model, resolve_model_reporting, HfSpec, DEFAULT_MODEL, MODEL_ENV, TEST_MODEL, TEST_MODEL_ENV};
pub use model::{Engine, EngineConfig, KvType, ModelInfo};
pub use pie::{TextEdit, Tok};
pub use pool::WarmPool;
pub use stale::{StaleSpan, Staleness};
pub use sample::SamplingParams;
pub use session::{CacheStats, Correction, GenerateParams, Generation, KvSession, RefreshReport, StopReason, UpdateMode, UpdateReport};

/// `pie-ls model ...`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ModelCommand {
    /// Download the pinned models into the cache (default model unless --test or --actions; combine the flags
    /// for several), verify their sha256, and print their paths.
    Fetch {
        /// The small test model (SmolLM2-135M-Instruct).
        #[arg(long)]
        test: bool,
        /// The default code model (Qwen2.5-Coder-0.5B-Instruct Q4_K_M).
        #[arg(long)]
        default: bool,
        /// The action model (Qwen2.5-Coder-1.5B-Instruct Q4_K_M, ~1.1 GB) for self-debug and faster versions.
        #[arg(long)]
        actions: bool,
    },
    /// Print where a model spec resolves (a path, `hf:owner/repo/file.gguf`, or nothing for the default model).
    Path {
        /// Model spec; defaults to $PIE_LS_MODEL, then the default model.
        spec: Option<String>,
    },
    /// Load a model and print its metadata as JSON.
    Info {
        /// Model spec; defaults to $PIE_LS_MODEL, then the default model.
        spec: Option<String>,
    },
}

fn spec_or_env(spec: Option<String>) -> Option<String> {
    spec.or_else(|| std::env::var(MODEL_ENV).ok()).filter(|s| !s.trim().is_empty())
}

/// Run a `pie-ls model ...` command. Paths go to stdout (one per line); progress and chatter to stderr.
pub fn run_model_command(cmd: ModelCommand) -> anyhow::Result<()> {
    match cmd {
        ModelCommand::Fetch { test, default, actions } => {
            let mut which = Vec::new();
            if test {
                which.push(&TEST_MODEL);
            }
            if default || !(test || actions) {
                which.push(&DEFAULT_MODEL);
            }
            if actions {
                which.push(&ACTION_MODEL);
            }
            for m in which {
                let p = fetch::fetch_pinned(m)?;
                println!("{}", p.display());
            }
        }
        ModelCommand::Path { spec } => {
            let p = resolve_model(spec_or_env(spec).as_deref())?;
            println!("{}", p.display());
        }
        ModelCommand::Info { spec } => {
            let p = resolve_model(spec_or_env(spec).as_deref())?;
            let e = Engine::load(&p, EngineConfig::default())?;
            println!("{}", serde_json::to_string_pretty(e.info())?);
        }
    }
    Ok(())
}
