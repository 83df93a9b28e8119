//! The local engine renders conversations with the model's own chat template (read from the GGUF, applied by
//! llama.cpp), and a `LocalChat` generates from it.

mod engine_common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use pie_ls::engine::{GenerateParams, SamplingParams};
use pie_ls::features::chat::{chatml, render, ChatModel, Conversation, LocalChat};

#[test]
fn the_gguf_template_renders_the_turns_and_the_prefill() {
    let engine = engine_common::engine();
    let mut c = Conversation::new("You are terse.");
    c.user("Say hi.");
    c.assistant("hi");
    c.user("Again.");
    // SmolLM2-135M-Instruct carries a ChatML template in its GGUF: llama.cpp applies it.
    let applied = engine
        .apply_chat_template(&c.messages().iter().map(|m| (m.role.as_str(), m.content.as_str())).collect::<Vec<_>>())
        .expect("the test model has a chat template llama.cpp knows");
    assert!(applied.ends_with("<|im_start|>assistant\n"), "{applied:?}");
    let text = render(&engine, c.messages(), "Sure,");
    assert_eq!(text, format!("{applied}Sure,"));
    assert_eq!(text, chatml(c.messages(), "Sure,"), "for a ChatML model the template and the fallback agree");
    // A longer conversation renders as an extension of the shorter one, so the chat slot re-encodes only the new turn.
    let mut longer = c.clone();
    longer.assistant("hi again");
    assert!(render(&engine, longer.messages(), "").starts_with(&render(&engine, c.messages(), "")));
}

#[test]
fn local_chat_replies_after_the_prefill() {
    let chat = LocalChat::new(engine_common::engine());
    let mut c = Conversation::new("You are a helpful assistant.");
    c.user("Write the number one as a digit.");
    let params = GenerateParams { max_tokens: 8, sampling: SamplingParams::greedy(), stop: vec![] };
    let reply = chat.reply(c.messages(), "The digit is", &params, &Arc::new(AtomicBool::new(false))).expect("a reply");
    assert!(!reply.is_empty());
    assert!(!reply.starts_with("The digit is"), "the reply excludes the prefill: {reply:?}");
}

#[test]
fn the_default_model_template_renders_the_same_turns_as_before() {
    // Qwen2.5-Coder's GGUF carries its own (Jinja) template; llama.cpp recognises it as ChatML, so conversations
    // reach the default model exactly as the hard-coded ChatML did.
    let path = pie_ls::engine::fetch::pinned_path(&pie_ls::engine::DEFAULT_MODEL);
    assert!(path.is_file(), "the default model is needed at {} (`pie-ls model fetch`)", path.display());
    let engine = pie_ls::engine::Engine::load(&path, engine_common::config(pie_ls::engine::KvType::F16)).expect("load the default model");
    let mut c = Conversation::new("You fix bugs.");
    c.user("The test fails.");
    assert!(engine.apply_chat_template(&[("system", "s"), ("user", "u")]).is_some(), "the default model has a template");
    assert_eq!(render(&engine, c.messages(), "The bug:"), chatml(c.messages(), "The bug:"));
}
