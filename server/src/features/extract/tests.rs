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
    assert!(out.contains("v: &Vec<i32>"), "{out}");
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
