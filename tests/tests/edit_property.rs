//! Property test: random edit sequences through the real server, in each position encoding. After every
//! `didChange` the server's text must equal a reference model, and its incrementally re-parsed tree must equal a
//! fresh parse of that text.
//!
//! `PIE_PROPTEST_CASES` (sequences per encoding, default 1000) and `PIE_PROPTEST_SEED` reproduce a failure.

use pie_ls_harness::{full_change, range_change, LspClient};
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Enc {
    Utf8,
    Utf16,
    Utf32,
}

impl Enc {
    fn name(self) -> &'static str {
        match self {
            Enc::Utf8 => "utf-8",
            Enc::Utf16 => "utf-16",
            Enc::Utf32 => "utf-32",
        }
    }
    fn units(self, c: char) -> usize {
        match self {
            Enc::Utf8 => c.len_utf8(),
            Enc::Utf16 => c.len_utf16(),
            Enc::Utf32 => 1,
        }
    }
}

/// Lines as LSP defines them: `(start, content_end, next_start)` byte offsets; `\r\n`, `\n`, `\r` end a line.
fn lines(text: &str) -> Vec<(usize, usize, usize)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                out.push((start, i, i + 1));
                start = i + 1;
            }
            b'\r' => {
                let next = if bytes.get(i + 1) == Some(&b'\n') { i + 2 } else { i + 1 };
                out.push((start, i, next));
                start = next;
                i = next - 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push((start, bytes.len(), bytes.len()));
    out
}

/// The reference conversion: walk the line's characters; past the end clamps to the content end, a column inside
/// a character snaps back to its start.
fn to_byte(text: &str, line: usize, character: usize, enc: Enc) -> usize {
    let (start, end, _) = lines(text)[line];
    let mut acc = 0;
    for (offset, c) in text[start..end].char_indices() {
        if acc + enc.units(c) > character {
            return start + offset;
        }
        acc += enc.units(c);
    }
    end
}

const PIECES: &[&str] = &[
    "a", "x", "foo", "é", "ß", "😀", "🦀🦀", "中文", "\n", "\r\n", "\r", " ", "\t", "    ", "(", ")", "{", "}", "[", "]",
    "\"", "'", "#", "//", "/*", "*/", ":", ";", ",", "def f(x):\n    return x\n", "fn main() {\n}\n", "if a:\n  b\n",
    "let s = \"😀\";\r\n", "x = {'k': [1, 2]}\n", "}\n", "class A:\n    pass\n", "function g() { return 1 }\n",
];

const SEEDS: &[(&str, &str, &str)] = &[
    ("python", "py", "import os\n\ndef main(argv):\n    for a in argv:\n        print(a, '😀')\n    return 0\n"),
    ("rust", "rs", "fn main() {\r\n    let x = vec![1, 2];\r\n    println!(\"{x:?} é\");\r\n}\r\n"),
    ("javascript", "js", "function f(a, b) {\n  return a + b; // 中文\n}\nconsole.log(f(1, 2));"),
    ("plaintext", "txt", "one\rtwo\r\nthree\n\nfour 🦀"),
];

fn random_text(rng: &mut StdRng) -> String {
    let n = rng.gen_range(0..4);
    (0..n).map(|_| *PIECES.choose(rng).unwrap()).collect()
}

/// A random position `(line, character)` in the encoding's units, sometimes past the line end or inside a char.
fn random_position(rng: &mut StdRng, text: &str, enc: Enc) -> (usize, usize) {
    let ls = lines(text);
    let line = if rng.gen_bool(0.15) { ls.len() - 1 } else { rng.gen_range(0..ls.len()) };
    let (start, end, _) = ls[line];
    let width: usize = text[start..end].chars().map(|c| enc.units(c)).sum();
    let character = match rng.gen_range(0..10) {
        0 => width + rng.gen_range(1..5), // past the end of the line: clamps
        1 => width,                       // exactly at the end of the line
        _ => rng.gen_range(0..=width),    // anywhere, including inside a multi-unit char
    };
    (line, character)
}

fn grammar(language_id: &str) -> Option<tree_sitter::Language> {
    match language_id {
        "python" => Some(tree_sitter_python::LANGUAGE.into()),
        "rust" => Some(tree_sitter_rust::LANGUAGE.into()),
        "javascript" => Some(tree_sitter_javascript::LANGUAGE.into()),
        _ => None,
    }
}

/// The test's own incremental parse, computed from the reference model with plain string arithmetic: an
/// independent implementation of `InputEdit` bookkeeping to compare the server's against.
struct ReferenceTree {
    parser: tree_sitter::Parser,
    tree: tree_sitter::Tree,
}

fn point_after(text: &str) -> tree_sitter::Point {
    match text.rfind('\n') {
        Some(last) => tree_sitter::Point { row: text.matches('\n').count(), column: text.len() - last - 1 },
        None => tree_sitter::Point { row: 0, column: text.len() },
    }
}

impl ReferenceTree {
    fn new(language_id: &str, text: &str) -> Option<ReferenceTree> {
        let mut parser = tree_sitter::Parser::new();
        parser.set_language(&grammar(language_id)?).unwrap();
        let tree = parser.parse(text, None).unwrap();
        Some(ReferenceTree { parser, tree })
    }
    /// Records `text[start..end] = new_text` on the tree (call before changing `text`).
    fn edit(&mut self, text: &str, start: usize, end: usize, new_text: &str) {
        let start_position = point_after(&text[..start]);
        let advance = |p: tree_sitter::Point, s: &str| {
            let d = point_after(s);
            if d.row == 0 {
                tree_sitter::Point { row: p.row, column: p.column + d.column }
            } else {
                tree_sitter::Point { row: p.row + d.row, column: d.column }
            }
        };
        self.tree.edit(&tree_sitter::InputEdit {
            start_byte: start,
            old_end_byte: end,
            new_end_byte: start + new_text.len(),
            start_position,
            old_end_position: advance(start_position, &text[start..end]),
            new_end_position: advance(start_position, new_text),
        });
    }
    fn replace(&mut self, text: &str) {
        self.tree = self.parser.parse(text, None).unwrap();
    }
    fn reparse(&mut self, text: &str) -> String {
        self.tree = self.parser.parse(text, Some(&self.tree)).unwrap();
        self.tree.root_node().to_sexp()
    }
}

fn fresh_parse(language_id: &str, text: &str) -> Option<tree_sitter::Tree> {
    let mut parser = tree_sitter::Parser::new();
    parser.set_language(&grammar(language_id)?).unwrap();
    parser.parse(text, None)
}

fn run_encoding(enc: Enc, cases: usize, seed: u64, fresh_compared: &mut usize, recovered: &mut usize) -> (usize, usize) {
    let mut lsp = LspClient::builder().without_model().encoding(enc.name()).spawn().expect("server starts");
    assert_eq!(lsp.initialize_result()["capabilities"]["positionEncoding"], enc.name());
    let mut rng = StdRng::seed_from_u64(seed);
    let mut notifications = 0;
    for case in 0..cases {
        let (language_id, ext, seed_text) = SEEDS[case % SEEDS.len()];
        let uri = format!("file:///prop/{}/case{case}.{ext}", enc.name());
        let mut model = seed_text.to_owned();
        lsp.open(&uri, language_id, &model);
        let mut history: Vec<Value> = Vec::new();
        let mut reference_tree = ReferenceTree::new(language_id, &model);
        let steps = rng.gen_range(5..20);
        for step in 0..steps {
            let batch = if rng.gen_bool(0.2) { rng.gen_range(2..4) } else { 1 };
            let mut changes = Vec::new();
            for _ in 0..batch {
                if rng.gen_bool(0.01) {
                    model = random_text(&mut rng);
                    if let Some(reference) = reference_tree.as_mut() {
                        reference.replace(&model);
                    }
                    changes.push(full_change(&model));
                    continue;
                }
                let a = random_position(&mut rng, &model, enc);
                let b = if rng.gen_bool(0.5) { a } else { random_position(&mut rng, &model, enc) };
                let (start, end) = if a <= b { (a, b) } else { (b, a) };
                let new_text = random_text(&mut rng);
                let start_byte = to_byte(&model, start.0, start.1, enc);
                let end_byte = to_byte(&model, end.0, end.1, enc).max(start_byte);
                if let Some(reference) = reference_tree.as_mut() {
                    reference.edit(&model, start_byte, end_byte, &new_text);
                }
                model.replace_range(start_byte..end_byte, &new_text);
                changes.push(range_change((start.0 as u32, start.1 as u32), (end.0 as u32, end.1 as u32), &new_text));
            }
            history.extend(changes.iter().cloned());
            let version = lsp.edit(&uri, changes);
            notifications += 1;
            let state = lsp.document_state(&uri).expect("documentState");
            let context = || {
                format!(
                    "encoding {}, seed {seed}, case {case}, step {step}\nedits so far: {}\nexpected: {model:?}",
                    enc.name(),
                    serde_json::to_string(&history).unwrap()
                )
            };
            assert_eq!(state["text"].as_str().unwrap(), model, "text differs; {}", context());
            assert_eq!(state["version"], version, "version differs; {}", context());
            if let Some(reference) = reference_tree.as_mut() {
                let tree = lsp.request("pie/syntaxTree", serde_json::json!({"textDocument": {"uri": uri}})).unwrap();
                let server_sexp = tree["sexp"].as_str().expect("a tree for a known language");
                // The server's incremental tree equals an incremental parse driven by independent arithmetic...
                let incremental = reference.reparse(&model);
                assert_eq!(server_sexp, incremental, "incremental tree differs from the reference; {}", context());
                // ...and a fresh parse whenever the text is valid. (With syntax errors, tree-sitter's error
                // recovery may legitimately settle on a different tree incrementally than from scratch.)
                let fresh = fresh_parse(language_id, &model).unwrap();
                if !fresh.root_node().has_error() {
                    assert_eq!(server_sexp, fresh.root_node().to_sexp(), "tree differs from a fresh parse; {}", context());
                    *fresh_compared += 1;
                } else {
                    *recovered += 1;
                }
            }
        }
        lsp.close(&uri);
    }
    let errors: Vec<_> = lsp
        .take_notifications("window/logMessage")
        .into_iter()
        .filter(|m| m["type"] == 1)
        .collect();
    assert!(errors.is_empty(), "valid edits were rejected: {errors:?}");
    (cases, notifications)
}

#[test]
fn random_edits_keep_text_and_tree_exact_in_every_encoding() {
    let cases: usize = std::env::var("PIE_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let seed: u64 = std::env::var("PIE_PROPTEST_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(20261126);
    let mut total_cases = 0;
    let mut total_notifications = 0;
    let (mut fresh_compared, mut recovered) = (0, 0);
    for (i, enc) in [Enc::Utf8, Enc::Utf16, Enc::Utf32].into_iter().enumerate() {
        let (c, n) = run_encoding(enc, cases, seed + i as u64, &mut fresh_compared, &mut recovered);
        total_cases += c;
        total_notifications += n;
    }
    println!(
        "property test: {total_cases} edit sequences, {total_notifications} didChange notifications, text exact after each; \
         trees equal to the independent incremental parse every time, and to a fresh parse in all {fresh_compared} \
         error-free states ({recovered} states with syntax errors compared incrementally only)"
    );
    assert!(fresh_compared > 100, "too few error-free states to mean anything: {fresh_compared}");
}

#[test]
fn reference_model_splits_lines_like_lsp() {
    assert_eq!(lines("a\r\nb\rc\n"), vec![(0, 1, 3), (3, 4, 5), (5, 6, 7), (7, 7, 7)]);
    assert_eq!(to_byte("a😀b", 0, 2, Enc::Utf16), 1, "inside the surrogate pair snaps back");
    assert_eq!(to_byte("a😀b", 0, 3, Enc::Utf16), 5);
    assert_eq!(to_byte("ab\r\n", 0, 9, Enc::Utf8), 2, "past the end clamps before the terminator");
}
