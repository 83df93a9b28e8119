//! Finding functions and tests in a syntax tree, shared by self-debug and performance edits.

use std::ops::Range;

use tree_sitter::{Node, Parser, Tree};

use crate::syntax::Language;

/// A function definition found in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionSpan {
    pub name: String,
    /// Byte range of the whole definition, Python decorators included (Rust attributes excluded).
    pub range: Range<usize>,
    /// The whitespace before the definition on its first line.
    pub indent: String,
    /// The enclosing class, for a method.
    pub class: Option<String>,
}

impl FunctionSpan {
    pub fn text<'a>(&self, source: &'a str) -> &'a str {
        &source[self.range.clone()]
    }
}

/// The languageId the runner's templates use for `lang`.
pub fn language_id(lang: Language) -> &'static str {
    match lang {
        Language::Python => "python",
        Language::Rust => "rust",
        Language::JavaScript => "javascript",
        Language::TypeScript | Language::Tsx => "typescript",
        Language::Go => "go",
        Language::Java => "java",
        Language::C => "c",
        Language::Cpp => "cpp",
    }
}

fn function_kinds(lang: Language) -> &'static [&'static str] {
    match lang {
        Language::Python => &["function_definition"],
        Language::Rust => &["function_item"],
        Language::Go => &["function_declaration", "method_declaration"],
        Language::JavaScript | Language::TypeScript | Language::Tsx => &["function_declaration", "method_definition", "generator_function_declaration"],
        Language::Java => &["method_declaration"],
        Language::C | Language::Cpp => &["function_definition"],
    }
}

fn class_kinds(lang: Language) -> &'static [&'static str] {
    match lang {
        Language::Python => &["class_definition"],
        Language::Rust => &["impl_item", "mod_item"],
        Language::JavaScript | Language::TypeScript | Language::Tsx => &["class_declaration"],
        Language::Java => &["class_declaration"],
        _ => &[],
    }
}

pub fn parse(lang: Language, text: &str) -> Option<Tree> {
    let mut parser = Parser::new();
    parser.set_language(&lang.grammar()).ok()?;
    parser.parse(text, None)
}

fn name_of(lang: Language, node: Node, src: &str) -> Option<String> {
    let name = node.child_by_field_name("name").or_else(|| {
        // C/C++: the name sits inside the declarator.
        let mut d = node.child_by_field_name("declarator")?;
        while let Some(inner) = d.child_by_field_name("declarator") {
            d = inner;
        }
        Some(d)
    })?;
    let _ = lang;
    Some(src[name.byte_range()].to_owned())
}

fn span(lang: Language, node: Node, src: &str) -> Option<FunctionSpan> {
    let name = name_of(lang, node, src)?;
    // Python decorators belong to the function: a rewrite may add or drop `@lru_cache`.
    let node = match node.parent() {
        Some(p) if p.kind() == "decorated_definition" => p,
        _ => node,
    };
    let line_start = src[..node.start_byte()].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let before = &src[line_start..node.start_byte()];
    let indent = if before.trim().is_empty() { before.to_owned() } else { String::new() };
    let mut class = None;
    let mut p = node.parent();
    while let Some(n) = p {
        if class_kinds(lang).contains(&n.kind()) {
            class = n
                .child_by_field_name("name")
                .or_else(|| n.child_by_field_name("type"))
                .map(|c| src[c.byte_range()].to_owned());
            break;
        }
        p = n.parent();
    }
    Some(FunctionSpan { name, range: node.byte_range(), indent, class })
}

/// Every function definition, outermost first.
pub fn functions(lang: Language, src: &str, tree: &Tree) -> Vec<FunctionSpan> {
    let kinds = function_kinds(lang);
    let mut out = Vec::new();
    crate::syntax::for_each_node(tree.root_node(), |node| {
        if kinds.contains(&node.kind()) {
            if let Some(s) = span(lang, node, src) {
                out.push(s);
            }
        }
    });
    out
}

/// The innermost function containing `byte`.
pub fn function_at(lang: Language, src: &str, tree: &Tree, byte: usize) -> Option<FunctionSpan> {
    functions(lang, src, tree).into_iter().filter(|f| f.range.start <= byte && byte <= f.range.end).min_by_key(|f| f.range.len())
}

/// The first function named `name` (preferring one outside classes).
pub fn find_function(lang: Language, src: &str, tree: &Tree, name: &str) -> Option<FunctionSpan> {
    let all: Vec<FunctionSpan> = functions(lang, src, tree).into_iter().filter(|f| f.name == name).collect();
    all.iter().find(|f| f.class.is_none()).or(all.first()).cloned()
}

/// A test case found at a position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestAt {
    pub name: String,
    pub class: Option<String>,
    /// Byte range of the test's source.
    pub range: Range<usize>,
}

/// Whether a function of this name, in a file of this name, is a test by the language's convention.
pub fn is_test_function(lang: Language, src: &str, tree: &Tree, f: &FunctionSpan) -> bool {
    match lang {
        Language::Python => f.name.starts_with("test"),
        Language::Go => f.name.starts_with("Test") || f.name.starts_with("Benchmark"),
        Language::Rust => has_test_attribute(src, tree, f),
        _ => false,
    }
}

fn has_test_attribute(src: &str, tree: &Tree, f: &FunctionSpan) -> bool {
    let Some(node) = tree.root_node().descendant_for_byte_range(f.range.start, f.range.start) else { return false };
    let mut item = node;
    while item.kind() != "function_item" {
        match item.parent() {
            Some(p) => item = p,
            None => return false,
        }
    }
    let mut prev = item.prev_sibling();
    while let Some(p) = prev {
        if p.kind() != "attribute_item" {
            break;
        }
        let attr = &src[p.byte_range()];
        if attr.contains("test") {
            return true;
        }
        prev = p.prev_sibling();
    }
    false
}

/// The test at `byte`: a Python `test*` function or method, a Go `TestX`, a Rust `#[test]` function, or a
/// JavaScript `test("name", ...)` / `it("name", ...)` call.
pub fn test_at(lang: Language, src: &str, tree: &Tree, byte: usize) -> Option<TestAt> {
    if matches!(lang, Language::JavaScript | Language::TypeScript | Language::Tsx) {
        return js_test_at(src, tree, byte);
    }
    let mut candidates: Vec<FunctionSpan> = functions(lang, src, tree).into_iter().filter(|f| f.range.start <= byte && byte <= f.range.end).collect();
    candidates.sort_by_key(|f| f.range.len());
    let f = candidates.into_iter().find(|f| is_test_function(lang, src, tree, f))?;
    Some(TestAt { name: f.name, class: if lang == Language::Python { f.class } else { None }, range: f.range })
}

fn js_test_at(src: &str, tree: &Tree, byte: usize) -> Option<TestAt> {
    let mut node = tree.root_node().descendant_for_byte_range(byte, byte)?;
    loop {
        if node.kind() == "call_expression" {
            let callee = node.child_by_field_name("function").map(|f| &src[f.byte_range()]);
            if matches!(callee, Some("test" | "it")) {
                let args = node.child_by_field_name("arguments")?;
                let first = args.named_child(0)?;
                if first.kind() == "string" || first.kind() == "template_string" {
                    let name = src[first.byte_range()].trim_matches(|c| c == '"' || c == '\'' || c == '`').to_owned();
                    return Some(TestAt { name, class: None, range: node.byte_range() });
                }
            }
        }
        node = node.parent()?;
    }
}

/// Names of the functions called inside `range`, in order of first appearance.
pub fn called_names(lang: Language, src: &str, tree: &Tree, range: Range<usize>) -> Vec<String> {
    let call_kinds: &[&str] = match lang {
        Language::Python => &["call"],
        _ => &["call_expression", "method_invocation"],
    };
    let mut out: Vec<String> = Vec::new();
    let Some(root) = tree.root_node().descendant_for_byte_range(range.start, range.end) else { return out };
    let mut stack = vec![root];
    let mut found: Vec<(usize, String)> = Vec::new();
    while let Some(node) = stack.pop() {
        if call_kinds.contains(&node.kind()) {
            let callee = node.child_by_field_name("function").or_else(|| node.child_by_field_name("name"));
            if let Some(mut c) = callee {
                // `a.b(...)`, `pkg.F(...)`, `x.y::z(...)`: the last name is the function.
                for field in ["attribute", "property", "field", "name"] {
                    if let Some(inner) = c.child_by_field_name(field) {
                        c = inner;
                        break;
                    }
                }
                let name = &src[c.byte_range()];
                if name.chars().all(|ch| ch.is_alphanumeric() || ch == '_') && !name.is_empty() {
                    found.push((c.start_byte(), name.to_owned()));
                }
            }
        }
        for i in (0..node.child_count()).rev() {
            if let Some(child) = node.child(i) {
                if child.end_byte() > range.start && child.start_byte() < range.end {
                    stack.push(child);
                }
            }
        }
    }
    found.sort();
    for (_, name) in found {
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}
