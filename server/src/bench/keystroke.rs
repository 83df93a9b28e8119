//! `pie-ls bench keystroke`: the per-keystroke cost of the document store (apply one `didChange` + incremental
//! re-parse) on large files, and the resident memory each open document costs. `PIE_BENCH_DEBUG=1` prints each
//! keystroke slower than 20 ms with its line, to see where tree-sitter's error recovery is expensive.

use std::time::Instant;

use rand::{rngs::StdRng, Rng, SeedableRng};

use super::alloc::live_heap_bytes;
use super::{quantile, resident_bytes, synth};
use crate::document::{ContentChange, Document, DocumentLimits, LineCol, PositionEncoding};

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
    println!("pie-ls bench keystroke: {} lines, {} keystrokes per language, memory over {} copies", args.lines, args.keystrokes, args.copies);
    println!(
        "{:<8} {:>9} {:>10} {:>8} {:>8} {:>12} {:>12} {:>10} {:>16}",
        "lang", "bytes", "median_ms", "p99_ms", "max_ms", "rss_per_doc", "heap_text", "tree_nodes", "heap_text/bytes"
    );
    let files = [
        ("python", "file:///bench.py", synth::python(args.lines)),
        ("rust", "file:///bench.rs", synth::rust(args.lines)),
    ];
    // Memory first, on a heap with nothing freed yet, and kept alive until the end.
    let measured: Vec<_> =
        files.iter().map(|(lang_id, uri, text)| memory_per_document(lang_id, uri, text, args.copies)).collect();
    for ((lang_id, uri, text), memory) in files.iter().zip(&measured) {
        let mut samples = time_keystrokes(lang_id, uri, text, args.keystrokes);
        let median = quantile(&mut samples, 0.5);
        let p99 = quantile(&mut samples, 0.99);
        let max = quantile(&mut samples, 1.0);
        println!(
            "{:<8} {:>9} {:>10.3} {:>8.3} {:>8.3} {:>12} {:>12} {:>10} {:>15.2}x",
            lang_id,
            text.len(),
            median,
            p99,
            max,
            memory.per_document,
            memory.per_text,
            memory.tree_nodes,
            memory.per_text as f64 / text.len() as f64
        );
    }
    println!("targets: median <= 1 ms; rss_per_doc <= 4x the file size plus the tree, i.e. heap_text/bytes <= 4 (heap_text: exact heap bytes of the text store; rss_per_doc - heap_text: the tree)");
    Ok(())
}

/// Simulates typing as an editor sends it: open a new line after a random line (at its indentation), type a
/// statement character by character with auto-closed brackets (`(` inserts `()`, as VS Code and most Neovim
/// setups do), then delete it all with backspaces, pairs together. Each keystroke is one timed `didChange`.
fn time_keystrokes(lang_id: &str, uri: &str, text: &str, keystrokes: usize) -> Vec<f64> {
    let limits = DocumentLimits::default();
    let mut doc = Document::new(uri, lang_id, 0, text, limits);
    let mut rng = StdRng::seed_from_u64(7);
    let mut version = 0;
    let mut samples = Vec::with_capacity(keystrokes);
    let mut timed_change = |doc: &mut Document, start: LineCol, end: LineCol, text: &str, samples: &mut Vec<f64>| {
        version += 1;
        let change = [ContentChange { range: Some((start, end)), text: text.to_owned() }];
        let started = Instant::now();
        doc.apply_changes(version, &change, PositionEncoding::Utf16, limits).expect("valid edit");
        samples.push(started.elapsed().as_secs_f64() * 1e3);
        if std::env::var("PIE_BENCH_DEBUG").is_ok() && *samples.last().unwrap() > 20.0 {
            eprintln!("slow {:.1} ms at {:?} typing {:?}: {:?}", samples.last().unwrap(), start, text, doc.rope().line(start.line as usize).to_string());
        }
    };
    let keys = ["v", "a", "l", "u", "e", " ", "=", " ", "f", "(", "x", ",", " ", "y"];
    while samples.len() < keystrokes {
        let line = rng.gen_range(0..doc.rope().len_lines().saturating_sub(2).max(1));
        let line_text = doc.rope().line(line).to_string();
        let content = line_text.trim_end_matches(['\r', '\n']);
        let indent: String = content.chars().take_while(|c| *c == ' ').collect();
        let eol = LineCol { line: line as u32, character: content.encode_utf16().count() as u32 };
        timed_change(&mut doc, eol, eol, &format!("\n{indent}"), &mut samples);
        let row = line as u32 + 1;
        let mut col = indent.len() as u32;
        for key in keys {
            let at = LineCol { line: row, character: col };
            let typed = if key == "(" { "()" } else { key };
            timed_change(&mut doc, at, at, typed, &mut samples);
            col += 1;
        }
        for key in keys.iter().rev() {
            let width = if *key == "(" { 2 } else { 1 };
            let start = LineCol { line: row, character: col - 1 };
            let end = LineCol { line: row, character: col - 1 + width };
            timed_change(&mut doc, start, end, "", &mut samples);
            col -= 1;
        }
        let line_end = LineCol { line: row, character: col };
        timed_change(&mut doc, eol, line_end, "", &mut samples);
    }
    assert_eq!(doc.rope().to_string(), text, "typing then deleting restores the file");
    samples
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
    let per_document = resident_bytes().saturating_sub(before) / copies;
    let tree_nodes = docs[0].syntax().map(|it| it.tree().root_node().descendant_count()).unwrap_or(0);
    let mut keep = texts;
    keep.extend(docs);
    Memory { per_document, per_text, tree_nodes, _keep_alive: keep }
}
