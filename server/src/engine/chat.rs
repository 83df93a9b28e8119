//! Multi-turn generation over one KV session. Each turn's conversation text extends the previous one, so the PIE
//! update encodes only what is new (the model's last answer and the next message) and the earlier turns stay
//! cached: round 2 of self-debug costs the feedback, not a re-read of the whole prompt.

use std::sync::atomic::AtomicBool;

use super::session::diff_edit;
use super::error::Result;
use super::{Engine, GenerateParams, Generation, KvSession};

#[derive(Default)]
pub struct ChatSlot {
    session: Option<KvSession>,
}

impl ChatSlot {
    pub fn new() -> Self {
        ChatSlot::default()
    }

    /// Generates the next turn after `conversation`, reusing the cached prefix it shares with the last call.
    pub fn reply(&mut self, engine: &Engine, conversation: &str, params: &GenerateParams, cancel: &AtomicBool) -> Result<Generation> {
        let reused = match &mut self.session {
            Some(session) => {
                let edit = diff_edit(session.text(), conversation);
                session.update(conversation, &[edit]).is_ok()
            }
            None => false,
        };
        if !reused {
            self.session = None;
            self.session = Some(KvSession::open(engine, conversation)?);
        }
        let session = self.session.as_mut().expect("opened above");
        let result = session.generate(params, cancel, |_| {});
        if result.is_err() {
            self.session = None;
        }
        result
    }

    /// Tokens encoded so far by this slot's session (to report what the reuse saved).
    pub fn encoded_tokens(&self) -> u64 {
        self.session.as_ref().map(|s| s.stats().encoded_tokens).unwrap_or(0)
    }
}
