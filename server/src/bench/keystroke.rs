//! `pie-ls bench keystroke`: the per-keystroke cost of the document path on large files, and the resident memory
//! each open document costs. Three figures per keystroke:
//! - `store`: `Document::apply_changes` alone (text and tree edits; the re-parse is queued, not waited for);
//! - `handler`: the synchronous part of `didChange` as the server runs it (`lsp::SyncPath`: configuration, store
//!   lock, changes, byte edits sent to the warm thread's channel, whose other end applies them to its copy of the
//!   text like the warm thread does);
//! - `tree_ready`: from the start of the keystroke until a reader holds the tree of that version (what a code
//!   action right after the keystroke waits for).
//!
//! `PIE_BENCH_DEBUG=1` prints each keystroke whose tree took longer than 20 ms, with its line, to see where
//! tree-sitter's error recovery is expensive.

use std::time::Instant;

use rand::{rngs::StdRng, Rng, SeedableRng};

use super::alloc::live_heap_bytes;
use super::{quantile, resident_bytes, synth};
use crate::document::{ContentChange, Document, DocumentLimits, LineCol, PositionEncoding};
use crate::lsp::{SyncPath, WarmCommand, WarmHandle, WarmTexts};

#[derive(Debug, clap::Args)]
pub struct KeystrokeArgs {
    /// Lines in each synthetic file.
    #[arg(long, default_value_t = 10_000)]
    pub lines: usize,
    /// Keystrokes to time per language.
    #[arg(long, default_value_t = 2_000)]
    pub keystrokes: usize,
    /// Copies of each document opened to measure memory per document.
    #[arg(long, default_value_t = 20)]
    pub copies: usize,
}

pub fn run(args: KeystrokeArgs) -> anyhow::Result<()> {
    println!("pie-ls bench keystroke: {} lines, {} keystrokes per language, memory over {} copies (times in ms)", args.lines, args.keystrokes, args.copies);
    println!(
        "{:<8} {:>9} {:>15} {:>15} {:>15} {:>12} {:>12} {:>10} {:>9}",
        "lang", "bytes", "store p50/p99", "handler p50/p99/max", "tree_ready p50/p99", "rss_per_doc", "heap_text", "tree_nodes", "heap/bytes"
    );
    let files = [
        ("python", "file:///bench.py", synth::python(args.lines)),
        ("rust", "file:///bench.rs", synth::rust(args.lines)),
    ];
    // Memory first, on a heap with nothing freed yet, and kept alive until the end.
    let measured: Vec<_> =
        files.iter().map(|(lang_id, uri, text)| memory_per_document(lang_id, uri, text, args.copies)).collect();
    for ((lang_id, uri, text), memory) in files.iter().zip(&measured) {
        let script = typing_script(text, args.keystrokes);
        let mut store = time_store(lang_id, uri, text, &script);
        let mut handler = time_handler(lang_id, uri, text, &script)?;
        let mut tree = time_tree_ready(lang_id, uri, text, &script)?;
        println!(
            "{:<8} {:>9} {:>7.3}/{:<7.3} {:>6.3}/{:.3}/{:<6.3} {:>7.2}/{:<7.2} {:>12} {:>12} {:>10} {:>8.2}x",
            lang_id,
            text.len(),
            quantile(&mut store, 0.5),
            quantile(&mut store, 0.99),
            quantile(&mut handler, 0.5),
            quantile(&mut handler, 0.99),
            quantile(&mut handler, 1.0),
            quantile(&mut tree, 0.5),
            quantile(&mut tree, 0.99),
            memory.per_document,
            memory.per_text,
            memory.tree_nodes,
            memory.per_text as f64 / text.len() as f64
        );
    }
    println!("targets: handler p99 <= 2 ms; rss_per_doc <= 4x the file size plus the tree, i.e. heap/bytes <= 4 (heap_text: exact heap bytes of the text store; rss_per_doc - heap_text: the tree)");
    Ok(())
}

/// One keystroke: a version and its single content change.
type Keystroke = (i32, ContentChange);

/// Simulates typing as an editor sends it: open a new line after a random line (at its indentation), type a
/// statement character by character with auto-closed brackets (`(` inserts `()`, as VS Code and most Neovim
/// setups do), then delete it all with backspaces, pairs together. Each keystroke is one `didChange`. The script is
/// made once on a plain-text document, so every mode replays the same keystrokes.
fn typing_script(text: &str, keystrokes: usize) -> Vec<Keystroke> {
    let limits = DocumentLimits::default();
    let mut doc = Document::new("file:///script.txt", "plaintext", 0, text, limits);
    let mut rng = StdRng::seed_from_u64(7);
    let mut script = Vec::with_capacity(keystrokes);
    let push = |doc: &mut Document, start: LineCol, end: LineCol, text: &str, script: &mut Vec<Keystroke>| {
        let version = script.len() as i32 + 1;
        let change = ContentChange { range: Some((start, end)), text: text.to_owned() };
        doc.apply_changes(version, std::slice::from_ref(&change), PositionEncoding::Utf16, limits).expect("valid edit");
        script.push((version, change));
    };
    let keys = ["v", "a", "l", "u", "e", " ", "=", " ", "f", "(", "x", ",", " ", "y"];
    while script.len() < keystrokes {
        let line = rng.gen_range(0..doc.rope().len_lines().saturating_sub(2).max(1));
        let line_text = doc.rope().line(line).to_string();
        let content = line_text.trim_end_matches(['\r', '\n']);
        let indent: String = content.chars().take_while(|c| *c == ' ').collect();
        let eol = LineCol { line: line as u32, character: content.encode_utf16().count() as u32 };
        push(&mut doc, eol, eol, &format!("\n{indent}"), &mut script);
        let row = line as u32 + 1;
        let mut col = indent.len() as u32;
        for key in keys {
            let at = LineCol { line: row, character: col };
            let typed = if key == "(" { "()" } else { key };
            push(&mut doc, at, at, typed, &mut script);
            col += 1;
        }
        for key in keys.iter().rev() {
            let width = if *key == "(" { 2 } else { 1 };
            let start = LineCol { line: row, character: col - 1 };
            let end = LineCol { line: row, character: col - 1 + width };
            push(&mut doc, start, end, "", &mut script);
            col -= 1;
        }
        let line_end = LineCol { line: row, character: col };
        push(&mut doc, eol, line_end, "", &mut script);
    }
    assert_eq!(doc.rope().to_string(), text, "typing then deleting restores the file");
    script
}

fn ms_since(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1e3
}

/// `Document::apply_changes` per keystroke.
fn time_store(lang_id: &str, uri: &str, text: &str, script: &[Keystroke]) -> Vec<f64> {
    let limits = DocumentLimits::default();
    let mut doc = Document::new(uri, lang_id, 0, text, limits);
    let mut samples = Vec::with_capacity(script.len());
    for (version, change) in script {
        let started = Instant::now();
        doc.apply_changes(*version, std::slice::from_ref(change), PositionEncoding::Utf16, limits).expect("valid edit");
        samples.push(ms_since(started));
    }
    assert_eq!(doc.rope().to_string(), text);
    samples
}

/// The synchronous `didChange` path per keystroke, keystrokes back to back (the parse thread falls behind and
/// catches up with the newest version), with a thread standing in for the warm thread's text bookkeeping.
fn time_handler(lang_id: &str, uri: &str, text: &str, script: &[Keystroke]) -> anyhow::Result<Vec<f64>> {
    let (warm, commands) = WarmHandle::channel();
    let drain = std::thread::spawn(move || {
        let mut texts = WarmTexts::default();
        for command in commands {
            match command {
                WarmCommand::Open { uri, version, text } => texts.open(&uri, version, &text),
                WarmCommand::Edit { uri, version, edits } => {
                    texts.apply(&uri, version, &edits).expect("edits fit the warm copy");
                }
                WarmCommand::Close { uri } => texts.close(&uri),
                _ => {}
            }
        }
        texts
    });
    let path = SyncPath::new(Some(warm));
    path.open(uri, lang_id, 0, text);
    let mut samples = Vec::with_capacity(script.len());
    for (version, change) in script {
        let started = Instant::now();
        path.change(uri, *version, std::slice::from_ref(change))?;
        samples.push(ms_since(started));
    }
    let store_text = path.text(uri).unwrap_or_default();
    drop(path);
    let texts = drain.join().map_err(|_| anyhow::anyhow!("the warm stand-in panicked"))?;
    anyhow::ensure!(texts.get(uri).map(|(_, t)| t) == Some(store_text.as_str()), "the warm copy of the text differs from the store's");
    Ok(samples)
}

/// From each keystroke to the tree of its version, as a reader right after the keystroke gets it.
fn time_tree_ready(lang_id: &str, uri: &str, text: &str, script: &[Keystroke]) -> anyhow::Result<Vec<f64>> {
    let path = SyncPath::new(None);
    path.open(uri, lang_id, 0, text);
    if let Some(request) = path.tree_request(uri) {
        request.wait();
    }
    let mut samples = Vec::with_capacity(script.len());
    for (version, change) in script {
        let started = Instant::now();
        path.change(uri, *version, std::slice::from_ref(change))?;
        let request = path.tree_request(uri).ok_or_else(|| anyhow::anyhow!("{uri} has no tree"))?;
        let parsed = request.wait();
        anyhow::ensure!(parsed.version == *version, "a reader of version {version} got version {}", parsed.version);
        samples.push(ms_since(started));
        if std::env::var("PIE_BENCH_DEBUG").is_ok() && *samples.last().unwrap() > 20.0 {
            let line = change.range.map(|r| r.0.line).unwrap_or(0);
            eprintln!("slow tree {:.1} ms at line {line} typing {:?}", samples.last().unwrap(), change.text);
        }
    }
    Ok(samples)
}

/// Resident bytes per open document (text + tree), per text store alone, and the tree's share, averaged over
/// `copies` documents. Nothing is freed between the two measurements, so the allocator cannot hand freed pages of
/// one to the other.
struct Memory {
    per_document: usize,
    per_text: usize,
    tree_nodes: usize,
    _keep_alive: Vec<Document>,
}

fn memory_per_document(lang_id: &str, uri: &str, text: &str, copies: usize) -> Memory {
    let copies = copies.max(1);
    let before = live_heap_bytes();
    let texts: Vec<Document> =
        (0..copies).map(|i| Document::new(&format!("{uri}{i}.txt"), "plaintext", 0, text, DocumentLimits::default())).collect();
    let per_text = live_heap_bytes().saturating_sub(before) / copies;
    let before = resident_bytes();
    let docs: Vec<Document> = (0..copies)
        .map(|i| Document::new(&format!("{uri}{i}"), lang_id, 0, text, DocumentLimits::default()))
        .collect();
    // The trees are parsed on the parse thread: wait for them before measuring.
    for doc in &docs {
        if let Some(request) = doc.tree_request() {
            request.wait();
        }
    }
    let per_document = resident_bytes().saturating_sub(before) / copies;
    let tree_nodes = docs[0].tree_request().map(|it| it.wait().tree.root_node().descendant_count()).unwrap_or(0);
    let mut keep = texts;
    keep.extend(docs);
    Memory { per_document, per_text, tree_nodes, _keep_alive: keep }
}
