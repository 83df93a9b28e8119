//! Failure paths with the real test model: cancellation (refresh and generation), a missing model, corrupt and
//! truncated GGUF files, context overflow, bad edits. Each is a clear error; nothing crashes, and the session
//! stays usable afterwards. Also: generation (greedy, sampled, stop strings) leaves the cache mirroring the prompt.

mod engine_common;

use std::sync::atomic::AtomicBool;

use engine_common::*;
use pie_ls::engine::{Engine, EngineConfig, EngineError, GenerateParams, KvSession, KvType, SamplingParams, StopReason, TextEdit};

fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("pie-ls-test-{}-{name}", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn missing_model_is_a_clear_error() {
    let e = Engine::load(std::path::Path::new("/nonexistent/dir/model.gguf"), EngineConfig::default()).unwrap_err();
    assert!(matches!(e, EngineError::ModelNotFound { .. }), "{e}");
    assert!(e.to_string().contains("/nonexistent/dir/model.gguf"), "{e}");
}

#[test]
fn corrupt_and_truncated_gguf_are_clear_errors() {
    // Not a GGUF at all.
    let p = temp_file("garbage.gguf", b"this is not a model file at all");
    let e = Engine::load(&p, EngineConfig::default()).unwrap_err();
    assert!(matches!(e, EngineError::CorruptModel { .. }), "{e}");
    assert!(e.to_string().contains("GGUF magic"), "{e}");
    let _ = std::fs::remove_file(&p);

    // GGUF magic followed by garbage: the header parse fails.
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(std::iter::repeat(0xAB).take(4096));
    let p = temp_file("badheader.gguf", &bytes);
    let e = Engine::load(&p, EngineConfig::default()).unwrap_err();
    assert!(matches!(e, EngineError::CorruptModel { .. }), "{e}");
    let _ = std::fs::remove_file(&p);

    // The real model cut short: metadata parses, tensor data is missing.
    let real = std::fs::read(test_model_path()).unwrap();
    let p = temp_file("truncated.gguf", &real[..real.len() / 3]);
    let e = Engine::load(&p, EngineConfig::default()).unwrap_err();
    assert!(matches!(e, EngineError::CorruptModel { .. }), "{e}");
    assert!(e.to_string().contains("not a usable GGUF model"), "{e}");
    let _ = std::fs::remove_file(&p);
}

#[test]
fn context_overflow_is_a_clear_error_and_the_session_survives() {
    let small = engine().with_config(EngineConfig { n_ctx: 512, ..config(KvType::F32) });
    let long: String = SOURCE.repeat(2);
    match KvSession::open(&small, &long) {
        Err(EngineError::ContextOverflow { needed, limit }) => {
            assert!(needed > limit && limit == 512, "{needed} {limit}");
        }
        other => panic!("expected a context overflow, got {:?}", other.map(|_| ())),
    }
    // An update that would overflow is refused and leaves the session as it was.
    let short = &SOURCE[..line_offset(SOURCE, 20)];
    let mut s = KvSession::open(&small, short).unwrap();
    let before = s.tokens().to_vec();
    let grown = format!("{short}{SOURCE}");
    let e = s.update(&grown, &[TextEdit::new(short.len(), short.len(), SOURCE)]).unwrap_err();
    assert!(matches!(e, EngineError::ContextOverflow { .. }), "{e}");
    assert!(e.to_string().contains("context overflow"), "{e}");
    assert_eq!(s.tokens(), &before[..]);
    let more = format!("{short}x = 1\n");
    s.update(&more, &[TextEdit::new(short.len(), short.len(), "x = 1\n")]).unwrap();
    assert!(s.next_token_logits().is_ok());
}

#[test]
fn bad_edits_are_errors_not_panics() {
    let mut s = KvSession::open(&engine(), "x = 'é'\n").unwrap();
    let e = s.update("x", &[TextEdit::new(6, 6, "y")]).unwrap_err();
    assert!(matches!(e, EngineError::InvalidEdit(_)), "{e}");
    let e = s.update("x", &[TextEdit::new(3, 400, "")]).unwrap_err();
    assert!(matches!(e, EngineError::InvalidEdit(_)), "{e}");
    // The session is untouched and still works.
    assert_eq!(s.text(), "x = 'é'\n");
    s.update("x = 'é'\ny = 2\n", &[TextEdit::new(9, 9, "y = 2\n")]).unwrap();
    // An empty document has nothing to predict from (SmolLM2 adds no BOS).
    let mut empty = KvSession::open(&engine(), "").unwrap();
    if empty.tokens().is_empty() {
        assert!(matches!(empty.next_token_logits(), Err(EngineError::EmptyPrompt)));
    }
}

#[test]
fn cancellation_is_reported_and_keeps_the_session_consistent() {
    let e = engine();
    let mut s = KvSession::open(&e, SOURCE).unwrap();
    let at = line_offset(SOURCE, 10);
    let text = format!("{}# moved\n{}", &SOURCE[..at], &SOURCE[at..]);
    s.update(&text, &[TextEdit::new(at, at, "# moved\n")]).unwrap();
    let stale = s.stats().stale_tokens;
    assert!(stale > 0);
    let cancel = AtomicBool::new(true);
    assert!(matches!(s.refresh_stale(usize::MAX, &cancel), Err(EngineError::Cancelled)));
    assert_eq!(s.stats().stale_tokens, stale, "a cancelled refresh before its first chunk changes nothing");
    let gen = s.generate(&GenerateParams::default(), &cancel, |_| {});
    assert!(matches!(gen, Err(EngineError::Cancelled)), "{:?}", gen.map(|g| g.text));
    assert_eq!(EngineError::Cancelled.to_string(), "cancelled");
    // Still usable: refresh runs to the end now.
    let go = AtomicBool::new(false);
    s.refresh_stale(usize::MAX, &go).unwrap();
    assert_eq!(s.stats().stale_tokens, 0);
}

#[test]
fn drafts_from_the_prompt_give_the_same_text_and_leave_the_cache_as_the_prompt() {
    // Drafts of 8 against none (the default is 2, with a backoff after a refused draft: docs/engine.md).
    let plain = engine();
    let drafting = plain.with_config(EngineConfig { draft_tokens: 8, ..plain.config().clone() });
    let plain = plain.with_config(EngineConfig { draft_tokens: 0, ..plain.config().clone() });
    // Text that repeats itself, so the lookup finds drafts whatever the small model continues with.
    let prompt = "colors = [red, green, blue, yellow, red, green, blue, yellow, red, green, blue, yellow, red, green,";
    let go = AtomicBool::new(false);
    let params = GenerateParams { max_tokens: 24, ..Default::default() };
    let mut a = KvSession::open(&plain, prompt).unwrap();
    let mut b = KvSession::open(&drafting, prompt).unwrap();
    let before = b.next_token_logits().unwrap();
    let ga = a.generate(&params, &go, |_| {}).unwrap();
    let gb = b.generate(&params, &go, |_| {}).unwrap();
    assert!(b.stats().drafted_tokens > 0, "no draft was tried: {:?}", gb.text);
    assert_eq!(a.stats().drafted_tokens, 0);
    // Greedy text up to the rounding of a wider batch: the same at least as far as the drafts' first line.
    let first_line = |t: &str| t.lines().next().unwrap_or("").to_owned();
    assert_eq!(first_line(&ga.text), first_line(&gb.text), "{:?} vs {:?}", ga.text, gb.text);
    assert_eq!(b.stats().cached_tokens, drafting.tokenize(prompt, true).len());
    assert!(max_abs_diff(&before, &b.next_token_logits().unwrap()) < 1e-3);
}

#[test]
fn generation_leaves_the_cache_mirroring_the_prompt() {
    let e = engine();
    let prompt = "def add(a, b):\n    \"\"\"Return the sum of a and b.\"\"\"\n";
    let mut s = KvSession::open(&e, prompt).unwrap();
    let before = s.next_token_logits().unwrap();
    let go = AtomicBool::new(false);
    let mut streamed = String::new();
    let g = s.generate(&GenerateParams { max_tokens: 24, ..Default::default() }, &go, |t| streamed.push_str(t)).unwrap();
    assert_eq!(streamed, g.text);
    assert!(g.tokens > 0 && g.tokens <= 24);
    // Greedy generation is deterministic, and the cache is back to the prompt (same logits, nothing stale).
    let g2 = s.generate(&GenerateParams { max_tokens: 24, ..Default::default() }, &go, |_| {}).unwrap();
    assert_eq!(g.text, g2.text);
    assert_eq!(max_abs_diff(&before, &s.next_token_logits().unwrap()), 0.0);
    assert_eq!(s.stats().cached_tokens, e.tokenize(prompt, true).len());
    // Stop strings cut the text before the stop string.
    let line = s.greedy_line(32).unwrap();
    assert!(!line.contains('\n'));
    let stop = GenerateParams { max_tokens: 32, stop: vec!["\n".into()], ..Default::default() };
    let g3 = s.generate(&stop, &go, |_| {}).unwrap();
    assert_eq!(g3.text, line);
    if g3.tokens < 32 {
        assert!(matches!(g3.stop_reason, StopReason::StopString | StopReason::EndOfGeneration));
    }
    // Sampled generation is reproducible for a seed.
    let sampled = GenerateParams { max_tokens: 16, sampling: SamplingParams { temperature: 0.8, top_k: 40, top_p: 0.95, seed: 7 }, stop: vec![] };
    let a = s.generate(&sampled, &go, |_| {}).unwrap();
    let b = s.generate(&sampled, &go, |_| {}).unwrap();
    assert_eq!(a.text, b.text);
    // And an edit after generation still works incrementally.
    let more = format!("{prompt}    return a + b\n");
    let r = s.update(&more, &[TextEdit::new(prompt.len(), prompt.len(), "    return a + b\n")]).unwrap();
    assert!(!r.recomputed);
    assert_eq!(s.tokens(), &e.tokenize(&more, true)[..]);
}
