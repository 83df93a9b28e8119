//! Unit tests of the algorithm: `«` and `»` mark the selection in each fixture.

use super::*;
use crate::syntax::SyntaxTree;

fn run(lang: Language, marked: &str) -> Result<String, Refusal> {
    let start = marked.find('«').expect("start marker");
    let without_start = marked.replacen('«', "", 1);
    let end = without_start.find('»').expect("end marker");
    let src = without_start.replacen('»', "", 1);
    let syntax = SyntaxTree::new(lang, &ropey::Rope::from_str(&src));
    extract(&src, syntax.tree(), lang, start..end).map(|it| it.new_text)
}

fn refused(lang: Language, marked: &str) -> String {
    match run(lang, marked) {
        Ok(text) => panic!("expected a refusal, got:\n{text}"),
        Err(r) => r.reason,
    }
}

#[test]
fn python_params_and_return() {
    let out = run(
        Language::Python,
        "def f(a, b):\n    «c = a + b\n    d = c * 2»\n    return d\n",
    )
    .unwrap();
    assert_eq!(
        out,
        "def f(a, b):\n    d = compute_d(a, b)\n    return d\n\n\ndef compute_d(a, b):\n    c = a + b\n    d = c * 2\n    return d\n"
    );
}

#[test]
fn python_expression() {
    let out = run(Language::Python, "def f(a):\n    return «a * 2» + 1\n").unwrap();
    assert_eq!(out, "def f(a):\n    return extracted_value(a) + 1\n\n\ndef extracted_value(a):\n    return a * 2\n");
}

#[test]
fn refusals() {
    assert!(refused(Language::Python, "def f():\n    x = 1«»\n").contains("empty"));
    assert!(refused(Language::Python, "def f():\n    # «a comment»\n    x = 1\n").contains("comment"));
    assert!(refused(Language::Rust, "fn f() «{»\n    let x = 1;\n}\n").contains("brace"));
    let r = refused(Language::Python, "def f(xs):\n    for x in xs:\n        «if x:\n            break»\n");
    assert!(r.contains("break"), "{r}");
}

#[test]
fn rust_mutation_and_types() {
    let out = run(
        Language::Rust,
        "fn main() {\n    let mut total: i64 = 0;\n    let v = vec![1, 2];\n    «total += 5;\n    let n = v.len();»\n    println!(\"{} {} {:?}\", total, n, v);\n}\n",
    )
    .unwrap();
    assert!(out.contains("fn compute") || out.contains("fn extracted"), "{out}");
    assert!(out.contains("mut total: i64"), "{out}");
    // Only read, through a method slices have too: taken as a slice (rust-analyzer, clippy `ptr_arg`).
    assert!(out.contains("v: &[i32]"), "{out}");
    // Passed on by reference: the callee may want the `Vec`, and `&v` is `v` now.
    let out = run(
        Language::Rust,
        "fn g(v: &Vec<i32>) -> usize { v.len() }\nfn main() {\n    let v = vec![1, 2];\n    «let n = g(&v);»\n    println!(\"{} {:?}\", n, v);\n}\n",
    )
    .unwrap();
    assert!(out.contains("v: &Vec<i32>") && out.contains("let n = g(v);"), "{out}");
    // Mutated: `&mut v` is a reborrow of the `&mut` parameter.
    let out = run(
        Language::Rust,
        "fn main() {\n    let mut v = vec![1, 2];\n    «for x in &mut v {\n        *x += 1;\n    }»\n    println!(\"{:?}\", v);\n}\n",
    )
    .unwrap();
    assert!(out.contains("v: &mut Vec<i32>") && out.contains("for x in &mut *v {"), "{out}");
}

#[test]
fn js_method_with_this() {
    let out = run(
        Language::JavaScript,
        "class A {\n  f(x) {\n    «const y = this.k + x;»\n    return y;\n  }\n}\n",
    )
    .unwrap();
    assert!(out.contains("const y = this.computeY(x);"), "{out}");
    assert!(out.contains("  computeY(x) {\n    const y = this.k + x;\n    return y;\n  }"), "{out}");
}

struct Fixed(&'static str);

impl NameSuggester for Fixed {
    fn suggest_name(&self, _prompt: &str) -> Option<String> {
        Some(self.0.to_owned())
    }
}

fn named(lang: Language, marked: &str, answer: &'static str) -> (String, &'static str) {
    let start = marked.find('«').unwrap();
    let without_start = marked.replacen('«', "", 1);
    let end = without_start.find('»').unwrap();
    let src = without_start.replacen('»', "", 1);
    let syntax = SyntaxTree::new(lang, &ropey::Rope::from_str(&src));
    let suggester = Fixed(answer);
    let options = ExtractOptions { suggester: Some(&suggester), check: None };
    let ex = extract_with(&src, syntax.tree(), lang, start..end, &options).unwrap();
    (ex.name, ex.name_source)
}

#[test]
fn model_names_are_validated_converted_or_replaced() {
    let py = "def f(a):\n    «b = a + 1»\n    return b\n\n\ndef taken():\n    pass\n";
    assert_eq!(named(Language::Python, py, "increment"), ("increment".to_owned(), "model"));
    assert_eq!(named(Language::Python, py, "`addOne`"), ("add_one".to_owned(), "model"));
    assert_eq!(named(Language::Python, py, "Name: plus_one()"), ("plus_one".to_owned(), "model"));
    // A keyword, a collision, garbage: the deterministic name.
    assert_eq!(named(Language::Python, py, "lambda").1, "deterministic");
    assert_eq!(named(Language::Python, py, "taken").1, "deterministic");
    assert_eq!(named(Language::Python, py, "42 is the answer").1, "deterministic");
    let js = "function f(a) {\n  «const b = a + 1;»\n  return b;\n}\n";
    assert_eq!(named(Language::JavaScript, js, "add_one"), ("addOne".to_owned(), "model"));
}

#[test]
fn prompt_names_the_code_and_the_convention() {
    let src = "def f(a):\n    b = a + 1\n    return b\n";
    let syntax = SyntaxTree::new(Language::Python, &ropey::Rope::from_str(src));
    let prompt = name_prompt(src, syntax.tree(), Language::Python, 14..23).unwrap();
    assert!(prompt.contains("b = a + 1") && prompt.contains("snake_case") && prompt.contains("`f`"), "{prompt}");
}

#[test]
fn garbage_ranges_never_panic() {
    let srcs = [
        (Language::Python, "def f(a):\n    b = a + 1\n    return b\n"),
        (Language::Rust, "fn f(a: i32) -> i32 {\n    let b = a + 1;\n    b\n}\n"),
        (Language::Go, "package main\n\nfunc f(a int) int {\n\tb := a + 1\n\treturn b\n}\n"),
        (Language::Java, "class A {\n    int f(int a) {\n        int b = a + 1;\n        return b;\n    }\n}\n"),
        (Language::TypeScript, "function f(a: number) {\n  const b = a + 1;\n  return b;\n}\n"),
        (Language::JavaScript, "function f(a) {\n  const b = a + 1;\n  return b;\n}\n"),
        // Module-level code after a leading comment: the comment moves with the statements, so the selection
        // starts before the statement the new function goes before (a license header in tslib.js crashed the
        // server with a slice from 887 to 0).
        (Language::JavaScript, "/* License\n   text */\n\nvar a = 1;\nvar b = a + 2;\nconsole.log(b);\n"),
        (Language::Python, "# License\n# text\n\na = 1\nb = a + 2\nprint(b)\n"),
        (Language::TypeScript, "// header\nconst a: number = 1;\nconst b = a + 2;\nconsole.log(b);\n"),
    ];
    for (lang, src) in srcs {
        let syntax = SyntaxTree::new(lang, &ropey::Rope::from_str(src));
        let n = src.len();
        for start in 0..=n {
            for end in (start..=n + 3).step_by(3) {
                let _ = extract(src, syntax.tree(), lang, start..end);
            }
        }
    }
}

#[test]
fn module_level_statements_after_a_leading_comment_take_the_comment_along() {
    let out = run(Language::JavaScript, "«/* License */\nvar a = 1;\nvar b = a + 2;»\nconsole.log(b);\n").unwrap();
    assert_eq!(out, "function computeB() {\n  /* License */\n  var a = 1;\n  var b = a + 2;\n  return b;\n}\n\nvar b = computeB();\nconsole.log(b);\n");
}
