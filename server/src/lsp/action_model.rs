//! The action model: a second, stronger model for the verified actions (self-debug, faster versions), named by
//! `actions.model`. It is loaded on first use, on the blocking thread of the action that needs it (never at
//! startup: a user who never picks an action never pays its memory), and then kept for the life of the server.
//! It has its own chat session on its own thread's time, so completions on the warm thread keep being served
//! while it generates.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::engine::{self, Engine, EngineConfig, GenerateParams};
use crate::features::chat::{ChatMessage, ChatModel, LocalChat};
use crate::features::selfdebug::Source;

use crate::warm::WarmChat;

/// Chat prompts of the actions are a few thousand tokens; a smaller context than a warm document's keeps the
/// action model's KV cache small (28 KiB per token for the 1.5B model at f16).
const ACTION_CONTEXT: usize = 8192;

pub struct ActionModel {
    spec: String,
    config: EngineConfig,
    chat: Mutex<Option<Arc<LocalChat>>>,
}

impl ActionModel {
    pub fn new(spec: String, config: EngineConfig) -> ActionModel {
        let config = EngineConfig { n_ctx: config.n_ctx.min(ACTION_CONTEXT), ..config };
        ActionModel { spec, config, chat: Mutex::new(None) }
    }

    pub fn spec(&self) -> &str {
        &self.spec
    }

    /// The loaded model, loading it now if this is its first use. A failed load is not remembered: the next
    /// action tries again (the user may have fetched the file in between).
    pub fn get(&self) -> Result<Arc<LocalChat>, String> {
        let mut slot = self.chat.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(chat) = slot.as_ref() {
            return Ok(Arc::clone(chat));
        }
        let path = engine::resolve_model(Some(&self.spec)).map_err(|e| e.to_string())?;
        let started = Instant::now();
        let engine = Engine::load(&path, self.config.clone()).map_err(|e| e.to_string())?;
        tracing::info!("loaded the action model {} in {:.1} s", engine.info().name, started.elapsed().as_secs_f64());
        let chat = Arc::new(LocalChat::new(engine));
        *slot = Some(Arc::clone(&chat));
        Ok(chat)
    }
}

impl ChatModel for ActionModel {
    fn reply(&self, messages: &[ChatMessage], prefill: &str, params: &GenerateParams, cancel: &Arc<AtomicBool>) -> Result<String, String> {
        self.get()?.reply(messages, prefill, params, cancel)
    }
}

/// The candidate sources of one action: the action model when one is configured (and, if asked, the completion
/// model too, for diversity), else the completion model through the warm thread.
pub fn sources<'a>(action: Option<&'a ActionModel>, warm: Option<&'a WarmChat>, also_completion_model: bool) -> Vec<Source<'a>> {
    let mut out: Vec<Source<'a>> = Vec::new();
    if let Some(a) = action {
        out.push(("action model", a as &dyn ChatModel));
    }
    if let Some(w) = warm {
        if action.is_none() || also_completion_model {
            out.push(("completion model", w as &dyn ChatModel));
        }
    }
    out
}
