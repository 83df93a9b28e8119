//! Server settings, from `initializationOptions` and `workspace/didChangeConfiguration`.
//!
//! Every field has a default, unknown fields are ignored (editors send their whole settings section), and a
//! setting of the wrong type is reported and leaves the previous configuration in force.

use serde::{Deserialize, Serialize};

use crate::document::DocumentLimits;
use crate::engine::EngineConfig;
use crate::features::completion::CompletionConfig;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Config {
    pub model: ModelConfig,
    pub documents: DocumentConfig,
    pub completion: CompletionConfig,
    pub extract: ExtractConfig,
    /// How tests run (commands per language, timeout, memory cap, network).
    pub tests: crate::runner::TestCommands,
    pub self_debug: SelfDebugConfig,
    pub perf: PerfConfig,
    pub actions: ActionsConfig,
    /// Where the model runs: in process (`local`, the default) or on an HTTP server.
    pub backend: crate::inference::BackendConfig,
}

/// The model behind the verified actions (`actions.*`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ActionsConfig {
    /// A GGUF path or `hf:` spec for self-debug and faster versions, loaded on first use; unset, the actions use
    /// the completion model.
    pub model: Option<String>,
    /// With an action model: also take candidates from the completion model (every other candidate).
    pub also_completion_model: bool,
    /// The backend of the actions, over `backend` (e.g. completions local with PIE, actions on a team server).
    pub backend: Option<crate::inference::BackendOverride>,
}

impl Default for ActionsConfig {
    fn default() -> Self {
        ActionsConfig { model: None, also_completion_model: true, backend: None }
    }
}

/// Self-debug settings (`selfDebug.*`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SelfDebugConfig {
    /// Rounds of fix, re-run and feedback before giving up.
    pub rounds: usize,
    /// Candidates per round (each round is a fresh prompt; candidates are sampled from it and never repeat).
    pub candidates: usize,
    /// Tokens the model may write per candidate.
    pub max_tokens: usize,
    /// Python: once a fix passes, candidates drawn (at most) for a second fix that passes too and returns the same
    /// near the tests' inputs; a fix whose tests do not decide between it and another is offered as disputed. 0: off.
    pub confirm: usize,
}

impl Default for SelfDebugConfig {
    fn default() -> Self {
        SelfDebugConfig { rounds: 3, candidates: 2, max_tokens: 384, confirm: 2 }
    }
}

/// Performance-edit settings (`perf.*`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PerfConfig {
    /// Candidates asked of the model (2-4 is sensible).
    pub candidates: usize,
    /// Alternated A/B benchmark pairs per candidate.
    pub runs: usize,
    /// Tokens per candidate.
    pub max_tokens: usize,
    /// Time budget of the equivalence check and benchmark of one candidate, seconds.
    pub budget_s: u64,
}

impl Default for PerfConfig {
    fn default() -> Self {
        PerfConfig { candidates: 3, runs: 20, max_tokens: 384, budget_s: 60 }
    }
}

/// Extract-method settings (`extract.*`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExtractConfig {
    /// A command per `languageId` run on a scratch copy of the result before the action is offered, e.g.
    /// `{"python": "python3 -m py_compile {file}"}`; it replaces the default check of that language.
    pub check_commands: std::collections::HashMap<String, String>,
    /// Where no command is configured, check the result with the language's compiler when it is installed
    /// (`rustc`, `go vet`, `javac`, `tsc`), on the file alone, when the original file passes it.
    pub default_checks: bool,
    /// Wall-clock limit of a check command; the whole process group is killed after it.
    pub check_timeout_ms: u64,
}

impl Default for ExtractConfig {
    fn default() -> Self {
        ExtractConfig { check_commands: Default::default(), default_checks: true, check_timeout_ms: 20_000 }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ModelConfig {
    /// Load a model at all (default true). Off, the server still tracks documents and offers what needs no model.
    pub enabled: Option<bool>,
    /// A GGUF path or `hf:owner/repo/file.gguf`. Falls back to `PIE_LS_MODEL`, then the default model.
    pub path: Option<String>,
    /// CPU threads for inference (default: all cores).
    pub threads: Option<usize>,
    /// KV-cache size per warm document, in tokens.
    pub context_length: Option<u32>,
    /// Tokens per decode batch.
    pub batch_size: Option<u32>,
    /// How many documents keep a warm KV cache (least recently used ones are dropped first).
    pub max_warm_documents: Option<usize>,
    /// Bounded correction: cached tokens re-encoded right after each edit site with every update (0: off).
    pub correction_tokens: Option<usize>,
    /// Bounded correction: last prompt tokens (before the cursor marker) re-encoded with every update (0: off).
    pub correction_tail_tokens: Option<usize>,
    /// Bounded correction after a large edit (32+ tokens inserted or removed: a paste, a block deleted): the tokens
    /// after each change re-encoded at once, as many as the edit changed and at most this many (0: off).
    pub correction_large_edit_tokens: Option<usize>,
    /// Bounded correction after a keystroke-sized change (1-2 tokens: a character typed or deleted): the tokens
    /// after it re-encoded, at most `correctionTokens` (0: none; typing then loses much of a suggestion's quality).
    pub correction_keystroke_tokens: Option<usize>,
    /// Idle refresh: stale tokens re-encoded per pause in typing at most (0: no idle refresh).
    pub refresh_tokens_per_pause: Option<usize>,
    /// Idle refresh: CPU seconds it may use in any minute (all threads counted).
    pub refresh_cpu_seconds_per_minute: Option<f64>,
    /// Idle refresh after a large removal (400+ bytes: a block deleted): stale tokens it may re-encode at the next
    /// pauses beyond the per-pause and per-minute budgets, until nothing is stale (0: off).
    pub refresh_large_edit_tokens: Option<usize>,
    /// Greedy generation: tokens drafted from the prompt per decode and verified in it (0: off).
    pub draft_tokens: Option<usize>,
    /// llama.cpp's flash-attention kernels: `auto` (the default: off on the CPU, llama.cpp decides with layers on a GPU), `on` or `off`.
    pub flash_attention: Option<FlashAttention>,
}

/// The `model.flashAttention` setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlashAttention {
    Auto,
    On,
    Off,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DocumentConfig {
    /// Documents larger than this keep their text but get no syntax tree.
    pub max_parse_bytes: usize,
    /// Documents larger than this never get a warm KV cache (they could not fit a context anyway).
    pub max_warm_bytes: usize,
}

impl Default for DocumentConfig {
    fn default() -> Self {
        DocumentConfig { max_parse_bytes: DocumentLimits::default().max_parse_bytes, max_warm_bytes: 1 << 20 }
    }
}

impl Config {
    /// Reads settings sent by a client over the defaults (see `merged_with`).
    pub fn from_client_value(value: &serde_json::Value) -> Result<Config, serde_json::Error> {
        Config::default().merged_with(value)
    }

    /// These settings with the ones a client sent applied over them. Accepts the settings object itself or one
    /// nested under `pie-ls` / `pieLs` (what VS Code sends for a `pie-ls.*` settings section). Only the settings
    /// present change: eglot sends `{}` right after `initialized`, and that must not undo `initializationOptions`.
    /// A `null` value puts that setting (or section) back to its default.
    pub fn merged_with(&self, value: &serde_json::Value) -> Result<Config, serde_json::Error> {
        let section = ["pie-ls", "pieLs", "pie_ls"].iter().find_map(|key| value.get(key)).unwrap_or(value);
        if !section.is_object() {
            if section.is_null() {
                return Ok(self.clone());
            }
            return Err(serde::de::Error::custom(format!("settings must be an object, not {section}")));
        }
        let mut base = serde_json::to_value(self)?;
        merge_settings(&mut base, section);
        serde_json::from_value(base)
    }

    /// The engine settings these settings imply (unset fields keep the engine's defaults).
    pub fn engine_config(&self) -> EngineConfig {
        let mut config = EngineConfig::default();
        if let Some(threads) = self.model.threads {
            config.threads = threads;
        }
        if let Some(n_ctx) = self.model.context_length {
            config.n_ctx = n_ctx as usize;
        }
        if let Some(n_batch) = self.model.batch_size {
            config.n_batch = n_batch as usize;
        }
        if let Some(max) = self.model.max_warm_documents {
            config.max_warm_documents = max;
        }
        if let Some(k) = self.model.correction_tokens {
            config.correction.after_edit = k;
        }
        if let Some(k) = self.model.correction_tail_tokens {
            config.correction.tail = k;
        }
        if let Some(k) = self.model.correction_large_edit_tokens {
            config.correction.large_edit = k;
        }
        if let Some(k) = self.model.correction_keystroke_tokens {
            config.correction.keystroke = k;
        }
        if let Some(n) = self.model.refresh_tokens_per_pause {
            config.refresh_tokens_per_pause = n;
        }
        if let Some(cpu) = self.model.refresh_cpu_seconds_per_minute {
            config.refresh_cpu_seconds_per_minute = cpu.max(0.0);
        }
        if let Some(n) = self.model.refresh_large_edit_tokens {
            config.refresh_large_edit_tokens = n;
        }
        if let Some(n) = self.model.draft_tokens {
            config.draft_tokens = n;
        }
        if let Some(fa) = self.model.flash_attention {
            config.flash_attention = match fa {
                FlashAttention::Auto => None,
                FlashAttention::On => Some(true),
                FlashAttention::Off => Some(false),
            };
        }
        config
    }

    /// The backend completions use: `backend` with `completion.backend` over it.
    pub fn completion_backend(&self) -> crate::inference::BackendConfig {
        self.backend.with_override(self.completion.backend.as_ref())
    }

    /// The backend the verified actions use: `backend` with `actions.backend` over it.
    pub fn actions_backend(&self) -> crate::inference::BackendConfig {
        self.backend.with_override(self.actions.backend.as_ref())
    }

    /// Whether anything runs on the in-process model: only then is a local model loaded (a user with only a
    /// remote server needs no GGUF on disk).
    pub fn needs_local_model(&self) -> bool {
        let completions = self.completion.enabled && self.completion_backend().is_local();
        self.model.enabled != Some(false) && (completions || self.actions_backend().is_local())
    }

    pub fn document_limits(&self) -> DocumentLimits {
        DocumentLimits { max_parse_bytes: self.documents.max_parse_bytes }
    }
}

/// Deep merge of client settings into `base`; `null` removes the key, so that serde's default fills it.
fn merge_settings(base: &mut serde_json::Value, extra: &serde_json::Value) {
    match (base, extra) {
        (serde_json::Value::Object(base), serde_json::Value::Object(extra)) => {
            for (key, value) in extra {
                if value.is_null() {
                    base.remove(key);
                } else if let Some(existing) = base.get_mut(key) {
                    merge_settings(existing, value);
                } else {
                    base.insert(key.clone(), value.clone());
                }
            }
        }
        (base, extra) => *base = extra.clone(),
    }
}

#[cfg(test)]
#[path = "config_docs_check.rs"]
mod docs_check;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_and_flat_settings_are_read_and_unknown_keys_ignored() {
        let flat = Config::from_client_value(&json!({"model": {"threads": 3}, "other": 1})).unwrap();
        assert_eq!(flat.model.threads, Some(3));
        let nested = Config::from_client_value(&json!({"pie-ls": {"documents": {"maxParseBytes": 7}}})).unwrap();
        assert_eq!(nested.documents.max_parse_bytes, 7);
        assert_eq!(Config::from_client_value(&serde_json::Value::Null).unwrap(), Config::default());
        assert!(Config::from_client_value(&json!({"model": {"threads": "many"}})).is_err());
        let actions = Config::from_client_value(&json!({"actions": {"model": "hf:o/r/f.gguf"}})).unwrap();
        assert_eq!(actions.actions.model.as_deref(), Some("hf:o/r/f.gguf"));
        assert!(actions.actions.also_completion_model);
    }

    #[test]
    fn client_settings_merge_over_the_ones_in_force() {
        let initial = Config::from_client_value(&json!({"completion": {"maxTokens": 8}, "model": {"threads": 2}})).unwrap();
        // eglot's `{"settings": {}}`, a null section, another server's section: nothing changes.
        for nothing in [json!({}), serde_json::Value::Null, json!({"pie-ls": {}}), json!({"pie-ls": null}), json!({"python": {"x": 1}})] {
            assert_eq!(initial.merged_with(&nothing).unwrap(), initial, "{nothing}");
        }
        let changed = initial.merged_with(&json!({"pie-ls": {"completion": {"multiline": false}}})).unwrap();
        assert_eq!((changed.completion.max_tokens, changed.completion.multiline, changed.model.threads), (8, false, Some(2)));
        let reset = changed.merged_with(&json!({"completion": {"maxTokens": null}, "model": null})).unwrap();
        assert_eq!((reset.completion.max_tokens, reset.completion.multiline, reset.model.threads), (64, false, None));
        assert!(initial.merged_with(&json!({"pie-ls": 3})).is_err());
    }

    #[test]
    fn completions_and_actions_may_use_different_backends() {
        use crate::inference::BackendKind;
        assert!(Config::default().needs_local_model());
        let remote = Config::from_client_value(&json!({"backend": {"kind": "llama-server", "url": "http://gpu:8080"}})).unwrap();
        assert_eq!(remote.completion_backend().kind, BackendKind::LlamaServer);
        assert!(!remote.needs_local_model(), "nothing local: no model is loaded");
        let split = Config::from_client_value(&json!({
            "backend": {"kind": "openai", "url": "http://team:8000/v1", "apiKeyEnv": "TEAM_KEY"},
            "completion": {"backend": {"kind": "local"}},
        }))
        .unwrap();
        assert!(split.completion_backend().is_local() && split.needs_local_model());
        assert_eq!(split.actions_backend().base_url(), "http://team:8000");
        let actions_only = Config::from_client_value(&json!({"actions": {"backend": {"kind": "ollama", "model": "qwen2.5-coder:7b"}}})).unwrap();
        assert_eq!((actions_only.actions_backend().kind, actions_only.completion_backend().kind), (BackendKind::Ollama, BackendKind::Local));
        let off = Config::from_client_value(&json!({"model": {"enabled": false}})).unwrap();
        assert!(!off.needs_local_model());
        assert!(Config::from_client_value(&json!({"backend": {"kind": "tgi"}})).is_err());
    }

    #[test]
    fn correction_and_refresh_budget_reach_the_engine() {
        let defaults = Config::default().engine_config();
        assert_eq!(defaults.correction, crate::engine::model::DEFAULT_CORRECTION);
        let config = Config::from_client_value(&json!({"model": {
            "correctionTokens": 0, "correctionTailTokens": 24, "correctionLargeEditTokens": 300, "correctionKeystrokeTokens": 4, "refreshTokensPerPause": 0, "refreshCpuSecondsPerMinute": 1.5,
            "refreshLargeEditTokens": 200
        }}))
        .unwrap()
        .engine_config();
        assert_eq!(config.correction, crate::engine::Correction { after_edit: 0, tail: 24, large_edit: 300, keystroke: 4 });
        assert_eq!(config.refresh_tokens_per_pause, 0);
        assert_eq!(config.refresh_cpu_seconds_per_minute, 1.5);
        assert_eq!(config.refresh_large_edit_tokens, 200);
        assert_eq!(defaults.refresh_large_edit_tokens, crate::engine::model::DEFAULT_REFRESH_LARGE_EDIT_TOKENS);
    }

    #[test]
    fn flash_attention_is_auto_unless_set() {
        let fa = |v: serde_json::Value| Config::from_client_value(&json!({"model": {"flashAttention": v}})).map(|c| c.engine_config().flash_attention);
        assert_eq!(Config::default().engine_config().flash_attention, None);
        assert_eq!(fa(json!("off")).unwrap(), Some(false));
        assert_eq!(fa(json!("on")).unwrap(), Some(true));
        assert_eq!(fa(json!("auto")).unwrap(), None);
        assert_eq!(fa(json!(null)).unwrap(), None, "null puts the default back");
        let err = fa(json!("fast")).unwrap_err().to_string();
        assert!(err.contains("unknown variant") && err.contains("off"), "{err}");
    }
}
