//! Talking to the model as an assistant (self-debug, performance candidates): structured conversations, the
//! `ChatModel` trait the features call so they need not know where the model lives (the warm thread in the
//! server, the caller's hands in benchmarks), and `render`, the one place a local model's chat template is applied.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::engine::GenerateParams;

/// Who speaks a turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

/// Generates the assistant's next turn. Blocking; call it off the async runtime. Implementations render the
/// messages themselves (a local model with its own chat template, an HTTP backend as JSON).
pub trait ChatModel: Send + Sync {
    /// The assistant's next turn after `messages`. A non-empty `prefill` starts that turn (the reply excludes it).
    fn reply(&self, messages: &[ChatMessage], prefill: &str, params: &GenerateParams, cancel: &Arc<AtomicBool>) -> Result<String, String>;
}

/// A conversation as structured turns; rendering to the model's text format is the model's business.
#[derive(Clone, Debug, Default)]
pub struct Conversation {
    messages: Vec<ChatMessage>,
}

impl Conversation {
    pub fn new(system: &str) -> Self {
        let mut c = Conversation::default();
        c.push(Role::System, system);
        c
    }

    fn push(&mut self, role: Role, content: &str) {
        self.messages.push(ChatMessage { role, content: content.trim_end().to_owned() });
    }

    pub fn user(&mut self, content: &str) {
        self.push(Role::User, content);
    }

    pub fn assistant(&mut self, content: &str) {
        self.push(Role::Assistant, content);
    }

    pub fn messages(&self) -> &[ChatMessage] {
        &self.messages
    }
}

/// The text a local model generates from: `messages` in the model's own chat template (from the GGUF, applied by
/// llama.cpp), an open assistant turn, and `prefill`. ChatML when the model has no template or llama.cpp does not
/// know it (ChatML is what Qwen2.5 and SmolLM2 use, and readable to any model).
pub fn render(engine: &crate::engine::Engine, messages: &[ChatMessage], prefill: &str) -> String {
    let turns: Vec<(&str, &str)> = messages.iter().map(|m| (m.role.as_str(), m.content.as_str())).collect();
    match engine.apply_chat_template(&turns) {
        Some(text) => format!("{text}{prefill}"),
        None => chatml(messages, prefill),
    }
}

/// `messages` in ChatML (`<|im_start|>role ... <|im_end|>`) with an open assistant turn started by `prefill`.
pub fn chatml(messages: &[ChatMessage], prefill: &str) -> String {
    let mut text = String::new();
    for m in messages {
        text.push_str(&format!("<|im_start|>{}\n{}<|im_end|>\n", m.role.as_str(), m.content));
    }
    text.push_str(&format!("<|im_start|>assistant\n{prefill}"));
    text
}

/// The first fenced code block of `reply` (```lang ... ```), or an unclosed one running to the end.
pub fn code_block(reply: &str) -> Option<String> {
    let start = reply.find("```")?;
    let after = &reply[start + 3..];
    let body_start = after.find('\n')? + 1;
    let body = &after[body_start..];
    let end = body.find("\n```").map(|e| e + 1).or_else(|| body.strip_suffix("```").map(|b| b.len())).unwrap_or(body.len());
    let code = body[..end].trim_end().to_owned();
    (!code.trim().is_empty()).then_some(code)
}

/// The prose before the first code block, trimmed (the model's explanation).
pub fn prose_before_code(reply: &str) -> String {
    reply.split("```").next().unwrap_or("").trim().to_owned()
}

/// Re-indents `code` (a function written at any indentation) to start at `indent`.
pub fn reindent(code: &str, indent: &str) -> String {
    let min = code
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    code.lines()
        .map(|l| if l.trim().is_empty() { String::new() } else { format!("{indent}{}", &l[min.min(l.len() - l.trim_start().len())..]) })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_blocks_prose_and_indentation() {
        let reply = "The loop stops one short.\n\n```python\ndef f(x):\n    return x + 1\n```\nDone.";
        assert_eq!(code_block(reply).unwrap(), "def f(x):\n    return x + 1");
        assert_eq!(prose_before_code(reply), "The loop stops one short.");
        assert_eq!(code_block("```py\ndef g():\n    pass").unwrap(), "def g():\n    pass");
        assert_eq!(code_block("no code"), None);
        assert_eq!(reindent("  def f():\n      return 1\n\n      # x", "    "), "    def f():\n        return 1\n\n        # x");
        let mut c = Conversation::new("sys");
        c.user("hi  \n");
        assert_eq!(c.messages()[1], ChatMessage { role: Role::User, content: "hi".into() });
        assert_eq!(chatml(c.messages(), "Sure"), "<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nSure");
        assert_eq!(serde_json::to_string(&c.messages()[0]).unwrap(), r#"{"role":"system","content":"sys"}"#);
    }
}

/// A `ChatModel` that answers with prepared replies, in order: hand-written code put through the same pipeline
/// as the model's (`bench perf --source reference`, tests). For `explain_then_code`, each turn takes two replies:
/// the explanation, then the code.
/// It records what it was asked (tests check what each round's prompt says).
pub struct ScriptedChat {
    replies: std::sync::Mutex<std::collections::VecDeque<String>>,
    asked: std::sync::Mutex<Vec<(Vec<ChatMessage>, String)>>,
}

impl ScriptedChat {
    pub fn new(replies: impl IntoIterator<Item = String>) -> Self {
        ScriptedChat { replies: std::sync::Mutex::new(replies.into_iter().collect()), asked: Default::default() }
    }

    /// Every request so far: the messages and the prefill.
    pub fn asked(&self) -> Vec<(Vec<ChatMessage>, String)> {
        self.asked.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// Prepared replies not used yet.
    pub fn remaining(&self) -> usize {
        self.replies.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// One explained-code turn: `explanation`, then `code`.
    pub fn code(explanation: &str, code: String) -> Self {
        ScriptedChat::new([explanation.to_owned(), code])
    }
}

impl ChatModel for ScriptedChat {
    fn reply(&self, messages: &[ChatMessage], prefill: &str, _: &GenerateParams, _: &Arc<AtomicBool>) -> Result<String, String> {
        if let Ok(mut asked) = self.asked.lock() {
            asked.push((messages.to_vec(), prefill.to_owned()));
        }
        self.replies.lock().map_err(|_| "poisoned".to_owned())?.pop_front().ok_or_else(|| "no more prepared replies".to_owned())
    }
}

/// A `ChatModel` over an engine the caller owns (benchmarks, tests): one `ChatSlot`, so successive turns of one
/// conversation reuse the cache.
pub struct LocalChat {
    engine: crate::engine::Engine,
    slot: std::sync::Mutex<crate::engine::ChatSlot>,
}

impl LocalChat {
    pub fn new(engine: crate::engine::Engine) -> Self {
        LocalChat { engine, slot: Default::default() }
    }
}

impl ChatModel for LocalChat {
    fn reply(&self, messages: &[ChatMessage], prefill: &str, params: &GenerateParams, cancel: &Arc<AtomicBool>) -> Result<String, String> {
        let mut slot = self.slot.lock().map_err(|_| "the model lock is poisoned".to_owned())?;
        let text = render(&self.engine, messages, prefill);
        slot.reply(&self.engine, &text, params, cancel).map(|g| g.text).map_err(|e| e.to_string())
    }
}

/// One assistant turn in two steps that a small model cannot skip: a short explanation after `lead` (e.g. "The
/// bug:"), then code after an opened fence. The second step continues the first one's text, so the chat slot
/// encodes only the explanation and the fence in between.
pub struct ExplainedCode {
    pub explanation: String,
    pub code: String,
    /// The whole turn as the model wrote it, to append to the conversation.
    pub turn: String,
}

pub fn explain_then_code(
    model: &dyn ChatModel,
    conversation: &Conversation,
    lead: &str,
    code_intro: &str,
    fence: &str,
    sampling: crate::engine::SamplingParams,
    max_tokens: usize,
    code_head: Option<&str>,
    cancel: &Arc<AtomicBool>,
) -> Result<ExplainedCode, String> {
    let explain = GenerateParams {
        max_tokens: 96,
        sampling: sampling.clone(),
        stop: vec!["\n\n".into(), "```".into(), "<|im_end|>".into(), "<|endoftext|>".into()],
    };
    let lead = format!("{lead} ");
    let explanation = model.reply(conversation.messages(), &lead, &explain, cancel)?.trim().to_owned();
    // `code_head` (e.g. the signature and docstring, which a fix keeps anyway) is written for the model: it costs no
    // generated tokens and cannot be garbled.
    let head = code_head.unwrap_or("");
    let opened = format!("{lead}{explanation}\n\n{code_intro}\n```{fence}\n{head}");
    let code_params = GenerateParams { max_tokens, sampling, stop: vec!["```".into(), "<|im_end|>".into(), "<|endoftext|>".into()] };
    let code = model.reply(conversation.messages(), &opened, &code_params, cancel)?;
    let code = format!("{head}{}", code.trim_end());
    let turn = format!("{opened}{code}\n```");
    Ok(ExplainedCode { explanation, code, turn })
}
