//! Per-language tables for extract method: which tree-sitter node kinds are scopes, functions, statement lists,
//! loops and expressions, and how an identifier occurrence is classified (read, write, declaration).
//!
//! These tables play the role of `locals.scm` queries (`@local.scope`, `@local.definition`, `@local.reference`),
//! written as code because the classification depends on the field an identifier sits in, which is awkward to say
//! in a query for six grammars at once.

use tree_sitter::Node;

use crate::syntax::Language;

/// The language families that share code generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    Python,
    Js,
    Rust,
    Go,
    Java,
}

/// How an identifier occurrence touches its variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Read,
    /// Assigns an existing variable.
    Write,
    /// Reads and writes (`x += 1`, `x++`).
    ReadWrite,
    /// Introduces a new binding (`let`, `const`, `:=`, a Python assignment target).
    Decl,
    /// A parameter of a function, lambda or closure.
    Param,
    /// The name of a function or class declared in the enclosing scope.
    ItemName,
    /// Not a variable (a property name, a type, a label, a keyword argument name...).
    Skip,
}

pub(crate) struct Table {
    pub family: Family,
    /// Parameters must carry a type.
    pub typed_params: bool,
    /// The new function must declare its return type.
    pub typed_return: bool,
    pub ident_kinds: &'static [&'static str],
    pub scope_kinds: &'static [&'static str],
    pub function_kinds: &'static [&'static str],
    pub class_kinds: &'static [&'static str],
    pub container_kinds: &'static [&'static str],
    pub loop_kinds: &'static [&'static str],
    pub break_target_kinds: &'static [&'static str],
    pub return_kinds: &'static [&'static str],
    pub break_kinds: &'static [&'static str],
    pub continue_kinds: &'static [&'static str],
    pub await_kinds: &'static [&'static str],
    pub yield_kinds: &'static [&'static str],
    pub comment_kinds: &'static [&'static str],
    pub string_kinds: &'static [&'static str],
    /// Expression kinds beyond the `_expression` / `_literal` suffix rule.
    pub expr_kinds: &'static [&'static str],
    pub keywords: &'static [&'static str],
    /// `snake_case` names (else `camelCase`).
    pub snake: bool,
    pub default_indent: &'static str,
    pub stmt_end: &'static str,
}

pub(crate) fn table(lang: Language) -> Option<&'static Table> {
    match lang {
        Language::Python => Some(&PYTHON),
        Language::JavaScript => Some(&JAVASCRIPT),
        Language::TypeScript | Language::Tsx => Some(&TYPESCRIPT),
        Language::Rust => Some(&RUST),
        Language::Go => Some(&GO),
        Language::Java => Some(&JAVA),
        Language::C | Language::Cpp => None,
    }
}

impl Table {
    pub fn is(&self, kinds: &[&str], node: Node) -> bool {
        kinds.contains(&node.kind())
    }

    pub fn is_expression(&self, node: Node) -> bool {
        let kind = node.kind();
        node.is_named()
            && (self.expr_kinds.contains(&kind)
                || self.ident_kinds.contains(&kind)
                || (kind.ends_with("_expression") && !kind.ends_with("_statement"))
                || kind.ends_with("_literal")
                || (self.family == Family::Python && kind.ends_with("_operator")))
    }

    pub fn is_keyword(&self, name: &str) -> bool {
        self.keywords.contains(&name)
    }
}

const PY_KEYWORDS: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del",
    "elif", "else", "except", "finally", "for", "from", "global", "if", "import", "in", "is", "lambda", "nonlocal",
    "not", "or", "pass", "raise", "return", "try", "while", "with", "yield", "match", "case", "print", "len",
    "range", "list", "dict", "set", "str", "int", "float", "type", "object", "self", "cls", "sum", "min", "max",
];
const JS_KEYWORDS: &[&str] = &[
    "break", "case", "catch", "class", "const", "continue", "debugger", "default", "delete", "do", "else", "export",
    "extends", "finally", "for", "function", "if", "import", "in", "instanceof", "new", "return", "super", "switch",
    "this", "throw", "try", "typeof", "var", "void", "while", "with", "yield", "let", "static", "enum", "await",
    "implements", "package", "protected", "interface", "private", "public", "null", "true", "false", "undefined",
    "arguments", "eval", "async", "of", "type", "constructor", "console", "Object", "Array", "String", "Number",
];
const RUST_KEYWORDS: &[&str] = &[
    "as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn", "for", "if", "impl", "in",
    "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return", "self", "Self", "static", "struct", "super",
    "trait", "true", "type", "unsafe", "use", "where", "while", "async", "await", "dyn", "abstract", "become", "box",
    "do", "final", "macro", "override", "priv", "typeof", "unsized", "virtual", "yield", "try", "main", "union",
];
const GO_KEYWORDS: &[&str] = &[
    "break", "case", "chan", "const", "continue", "default", "defer", "else", "fallthrough", "for", "func", "go",
    "goto", "if", "import", "interface", "map", "package", "range", "return", "select", "struct", "switch", "type",
    "var", "append", "cap", "close", "copy", "delete", "len", "make", "new", "panic", "print", "println", "recover",
    "main", "init", "string", "int", "bool", "byte", "rune", "error", "nil", "true", "false", "iota", "min", "max",
];
const JAVA_KEYWORDS: &[&str] = &[
    "abstract", "assert", "boolean", "break", "byte", "case", "catch", "char", "class", "const", "continue",
    "default", "do", "double", "else", "enum", "extends", "final", "finally", "float", "for", "goto", "if",
    "implements", "import", "instanceof", "int", "interface", "long", "native", "new", "package", "private",
    "protected", "public", "return", "short", "static", "strictfp", "super", "switch", "synchronized", "this",
    "throw", "throws", "transient", "try", "void", "volatile", "while", "var", "record", "yield", "true", "false",
    "null", "main",
];

static PYTHON: Table = Table {
    family: Family::Python,
    typed_params: false,
    typed_return: false,
    ident_kinds: &["identifier"],
    scope_kinds: &[
        "module",
        "function_definition",
        "lambda",
        "class_definition",
        "list_comprehension",
        "set_comprehension",
        "dictionary_comprehension",
        "generator_expression",
    ],
    function_kinds: &["function_definition", "lambda"],
    class_kinds: &["class_definition"],
    container_kinds: &["block", "module"],
    loop_kinds: &["for_statement", "while_statement"],
    break_target_kinds: &["for_statement", "while_statement"],
    return_kinds: &["return_statement"],
    break_kinds: &["break_statement"],
    continue_kinds: &["continue_statement"],
    await_kinds: &["await"],
    yield_kinds: &["yield"],
    comment_kinds: &["comment"],
    string_kinds: &["string", "concatenated_string"],
    expr_kinds: &[
        "call",
        "attribute",
        "subscript",
        "list",
        "tuple",
        "dictionary",
        "set",
        "string",
        "concatenated_string",
        "integer",
        "float",
        "true",
        "false",
        "none",
        "conditional_expression",
        "lambda",
        "list_comprehension",
        "set_comprehension",
        "dictionary_comprehension",
        "generator_expression",
        "parenthesized_expression",
        "await",
        "binary_operator",
        "boolean_operator",
        "comparison_operator",
        "not_operator",
        "unary_operator",
    ],
    keywords: PY_KEYWORDS,
    snake: true,
    default_indent: "    ",
    stmt_end: "",
};

const JS_SCOPES: &[&str] = &[
    "program",
    "function_declaration",
    "function_expression",
    "function",
    "arrow_function",
    "method_definition",
    "generator_function_declaration",
    "generator_function",
    "statement_block",
    "for_statement",
    "for_in_statement",
    "catch_clause",
    "class_body",
    "switch_body",
];
const JS_FUNCTIONS: &[&str] = &[
    "function_declaration",
    "function_expression",
    "function",
    "arrow_function",
    "method_definition",
    "generator_function_declaration",
    "generator_function",
];
const JS_EXPRS: &[&str] = &[
    "number",
    "string",
    "template_string",
    "array",
    "object",
    "true",
    "false",
    "null",
    "undefined",
    "arrow_function",
    "function_expression",
    "regex",
    "this",
];

static JAVASCRIPT: Table = Table {
    family: Family::Js,
    typed_params: false,
    typed_return: false,
    ident_kinds: &["identifier", "shorthand_property_identifier", "shorthand_property_identifier_pattern"],
    scope_kinds: JS_SCOPES,
    function_kinds: JS_FUNCTIONS,
    class_kinds: &["class_declaration", "class"],
    container_kinds: &["statement_block", "program", "switch_case", "switch_default"],
    loop_kinds: &["for_statement", "for_in_statement", "while_statement", "do_statement"],
    break_target_kinds: &["for_statement", "for_in_statement", "while_statement", "do_statement", "switch_statement"],
    return_kinds: &["return_statement"],
    break_kinds: &["break_statement"],
    continue_kinds: &["continue_statement"],
    await_kinds: &["await_expression"],
    yield_kinds: &["yield_expression"],
    comment_kinds: &["comment", "html_comment"],
    string_kinds: &["string", "template_string"],
    expr_kinds: JS_EXPRS,
    keywords: JS_KEYWORDS,
    snake: false,
    default_indent: "  ",
    stmt_end: ";",
};

static TYPESCRIPT: Table = Table {
    family: Family::Js,
    typed_params: true,
    typed_return: false,
    ident_kinds: &["identifier", "shorthand_property_identifier", "shorthand_property_identifier_pattern"],
    scope_kinds: JS_SCOPES,
    function_kinds: JS_FUNCTIONS,
    class_kinds: &["class_declaration", "class", "abstract_class_declaration"],
    container_kinds: &["statement_block", "program", "switch_case", "switch_default"],
    loop_kinds: &["for_statement", "for_in_statement", "while_statement", "do_statement"],
    break_target_kinds: &["for_statement", "for_in_statement", "while_statement", "do_statement", "switch_statement"],
    return_kinds: &["return_statement"],
    break_kinds: &["break_statement"],
    continue_kinds: &["continue_statement"],
    await_kinds: &["await_expression"],
    yield_kinds: &["yield_expression"],
    comment_kinds: &["comment", "html_comment"],
    string_kinds: &["string", "template_string"],
    expr_kinds: JS_EXPRS,
    keywords: JS_KEYWORDS,
    snake: false,
    default_indent: "  ",
    stmt_end: ";",
};

static RUST: Table = Table {
    family: Family::Rust,
    typed_params: true,
    typed_return: true,
    ident_kinds: &["identifier"],
    scope_kinds: &[
        "source_file",
        "function_item",
        "closure_expression",
        "block",
        "for_expression",
        "match_arm",
        "if_expression",
        "while_expression",
    ],
    function_kinds: &["function_item", "closure_expression"],
    class_kinds: &["impl_item", "trait_item"],
    container_kinds: &["block", "source_file"],
    loop_kinds: &["for_expression", "while_expression", "loop_expression"],
    break_target_kinds: &["for_expression", "while_expression", "loop_expression"],
    return_kinds: &["return_expression"],
    break_kinds: &["break_expression"],
    continue_kinds: &["continue_expression"],
    await_kinds: &["await_expression"],
    yield_kinds: &["yield_expression"],
    comment_kinds: &["line_comment", "block_comment"],
    string_kinds: &["string_literal", "raw_string_literal"],
    expr_kinds: &["macro_invocation", "scoped_identifier", "self", "unit_expression"],
    keywords: RUST_KEYWORDS,
    snake: true,
    default_indent: "    ",
    stmt_end: ";",
};

static GO: Table = Table {
    family: Family::Go,
    typed_params: true,
    typed_return: true,
    ident_kinds: &["identifier"],
    scope_kinds: &[
        "source_file",
        "function_declaration",
        "method_declaration",
        "func_literal",
        "block",
        "for_statement",
        "if_statement",
        "expression_case",
        "default_case",
        "type_case",
        "communication_case",
        "expression_switch_statement",
        "type_switch_statement",
    ],
    function_kinds: &["function_declaration", "method_declaration", "func_literal"],
    class_kinds: &[],
    container_kinds: &["statement_list", "source_file"],
    loop_kinds: &["for_statement"],
    break_target_kinds: &["for_statement", "expression_switch_statement", "type_switch_statement", "select_statement"],
    return_kinds: &["return_statement"],
    break_kinds: &["break_statement"],
    continue_kinds: &["continue_statement"],
    await_kinds: &[],
    yield_kinds: &[],
    comment_kinds: &["comment"],
    string_kinds: &["interpreted_string_literal", "raw_string_literal"],
    expr_kinds: &["true", "false", "nil", "iota", "func_literal", "composite_literal"],
    keywords: GO_KEYWORDS,
    snake: false,
    default_indent: "\t",
    stmt_end: "",
};

static JAVA: Table = Table {
    family: Family::Java,
    typed_params: true,
    typed_return: true,
    ident_kinds: &["identifier"],
    scope_kinds: &[
        "program",
        "class_body",
        "method_declaration",
        "constructor_declaration",
        "lambda_expression",
        "block",
        "for_statement",
        "enhanced_for_statement",
        "catch_clause",
        "try_with_resources_statement",
        "switch_block_statement_group",
    ],
    function_kinds: &["method_declaration", "constructor_declaration", "lambda_expression"],
    class_kinds: &["class_declaration", "enum_declaration", "record_declaration"],
    container_kinds: &["block", "constructor_body", "switch_block_statement_group"],
    loop_kinds: &["for_statement", "enhanced_for_statement", "while_statement", "do_statement"],
    break_target_kinds: &[
        "for_statement",
        "enhanced_for_statement",
        "while_statement",
        "do_statement",
        "switch_expression",
        "switch_statement",
    ],
    return_kinds: &["return_statement"],
    break_kinds: &["break_statement"],
    continue_kinds: &["continue_statement"],
    await_kinds: &[],
    yield_kinds: &["yield_statement"],
    comment_kinds: &["line_comment", "block_comment"],
    string_kinds: &["string_literal", "text_block"],
    expr_kinds: &[
        "method_invocation",
        "field_access",
        "array_access",
        "true",
        "false",
        "null_literal",
        "this",
        "string_literal",
        "character_literal",
        "decimal_integer_literal",
        "decimal_floating_point_literal",
    ],
    keywords: JAVA_KEYWORDS,
    snake: false,
    default_indent: "    ",
    stmt_end: ";",
};

/// True when `child` is the node in `parent`'s field `field`.
pub(crate) fn in_field(parent: Node, field: &str, child: Node) -> bool {
    let mut cursor = parent.walk();
    let found = parent.children_by_field_name(field, &mut cursor).any(|it| it.id() == child.id());
    found
}

/// Node kinds that only wrap a binding pattern: an identifier inside them binds what the outer context binds.
fn is_pattern_wrapper(family: Family, kind: &str) -> bool {
    match family {
        Family::Python => matches!(
            kind,
            "pattern_list"
                | "tuple_pattern"
                | "list_pattern"
                | "list_splat_pattern"
                | "dictionary_splat_pattern"
                | "as_pattern_target"
                | "parenthesized_expression"
        ),
        Family::Js => matches!(
            kind,
            "object_pattern"
                | "array_pattern"
                | "pair_pattern"
                | "assignment_pattern"
                | "object_assignment_pattern"
                | "rest_pattern"
                | "parenthesized_expression"
        ),
        Family::Rust => matches!(
            kind,
            "tuple_pattern"
                | "tuple_struct_pattern"
                | "struct_pattern"
                | "field_pattern"
                | "ref_pattern"
                | "mut_pattern"
                | "reference_pattern"
                | "or_pattern"
                | "slice_pattern"
                | "captured_pattern"
                | "match_pattern"
        ),
        Family::Go => matches!(kind, "expression_list"),
        Family::Java => matches!(kind, "inferred_parameters"),
    }
}

/// Classifies an identifier occurrence. Returns the role and the node that gives the binding its meaning (the
/// assignment, declaration or loop), used to find where the binding takes effect.
pub(crate) fn classify<'t>(table: &Table, src: &str, ident: Node<'t>) -> (Role, Option<Node<'t>>) {
    let family = table.family;
    let Some(first_parent) = ident.parent() else { return (Role::Read, None) };
    // Names that are never variables, whatever the context.
    match ident.kind() {
        "shorthand_property_identifier" => return (Role::Read, None),
        "shorthand_property_identifier_pattern" => {}
        _ => {}
    }
    if let Some(role) = skip_context(family, first_parent, ident) {
        return (role, Some(first_parent));
    }
    let mut child = ident;
    let mut parent = first_parent;
    while is_pattern_wrapper(family, parent.kind()) {
        // The key of `{ key: value }` patterns and the type of `Some(x)` patterns are not bindings.
        if parent.kind() == "pair_pattern" && in_field(parent, "key", child) {
            return (Role::Skip, None);
        }
        if parent.kind() == "field_pattern" && in_field(parent, "name", child) && parent.child_by_field_name("pattern").is_some() {
            return (Role::Skip, None);
        }
        if matches!(parent.kind(), "tuple_struct_pattern" | "struct_pattern") && in_field(parent, "type", child) {
            return (Role::Skip, None);
        }
        if matches!(parent.kind(), "assignment_pattern" | "object_assignment_pattern") && in_field(parent, "right", child) {
            return (Role::Read, None);
        }
        child = parent;
        match parent.parent() {
            Some(next) => parent = next,
            None => return (Role::Read, None),
        }
    }
    let wrapped = child.id() != ident.id();
    let role = match family {
        Family::Python => python_context(parent, child),
        Family::Js => js_context(parent, child),
        Family::Rust => rust_context(src, parent, child, ident, wrapped),
        Family::Go => go_context(parent, child),
        Family::Java => java_context(parent, child),
    };
    match role {
        Some(role) => (role, Some(parent)),
        None => (Role::Read, None),
    }
}

fn skip_context(family: Family, parent: Node, ident: Node) -> Option<Role> {
    let kind = parent.kind();
    match family {
        Family::Python => {
            if (kind == "attribute" && in_field(parent, "attribute", ident))
                || (kind == "keyword_argument" && in_field(parent, "name", ident))
                || kind == "global_statement"
                || kind == "nonlocal_statement"
                || kind == "dotted_name"
                || kind == "import_statement"
                || kind == "import_from_statement"
                || (kind == "aliased_import" && in_field(parent, "name", ident))
            {
                return Some(Role::Skip);
            }
            if kind == "aliased_import" {
                return Some(Role::Decl);
            }
            if matches!(kind, "function_definition" | "class_definition") && in_field(parent, "name", ident) {
                return Some(Role::ItemName);
            }
            if matches!(kind, "parameters" | "lambda_parameters") {
                return Some(Role::Param);
            }
            if matches!(kind, "default_parameter" | "typed_default_parameter") {
                return Some(if in_field(parent, "name", ident) { Role::Param } else { Role::Read });
            }
            if kind == "typed_parameter" {
                return Some(Role::Param);
            }
            if matches!(kind, "list_splat_pattern" | "dictionary_splat_pattern")
                && parent.parent().is_some_and(|p| matches!(p.kind(), "parameters" | "lambda_parameters" | "typed_parameter"))
            {
                return Some(Role::Param);
            }
            if kind == "type" {
                return Some(Role::Read);
            }
        }
        Family::Js => {
            if matches!(kind, "function_declaration" | "class_declaration" | "generator_function_declaration")
                && in_field(parent, "name", ident)
            {
                return Some(Role::ItemName);
            }
            if matches!(kind, "function_expression" | "class" | "generator_function") && in_field(parent, "name", ident) {
                return Some(Role::Skip);
            }
            if matches!(kind, "formal_parameters") {
                return Some(Role::Param);
            }
            if kind == "arrow_function" && in_field(parent, "parameter", ident) {
                return Some(Role::Param);
            }
            if matches!(kind, "required_parameter" | "optional_parameter") && in_field(parent, "pattern", ident) {
                return Some(Role::Param);
            }
            if matches!(kind, "import_specifier" | "import_clause" | "namespace_import" | "export_specifier")
                || kind == "labeled_statement"
                || kind == "break_statement"
                || kind == "continue_statement"
            {
                return Some(Role::Skip);
            }
        }
        Family::Rust => {
            if kind == "function_item" && in_field(parent, "name", ident) {
                return Some(Role::ItemName);
            }
            if matches!(kind, "scoped_identifier" | "scoped_type_identifier" | "use_declaration" | "use_list" | "use_as_clause")
                || (kind == "macro_invocation" && in_field(parent, "macro", ident))
                || matches!(kind, "const_item" | "static_item" | "struct_item" | "enum_item" | "mod_item" | "enum_variant")
                || kind == "meta_item"
                || kind == "attribute"
                || kind == "lifetime"
                || kind == "label"
            {
                return Some(Role::Skip);
            }
            if kind == "parameter" && in_field(parent, "pattern", ident) {
                return Some(Role::Param);
            }
            if kind == "closure_parameters" {
                return Some(Role::Param);
            }
        }
        Family::Go => {
            if matches!(kind, "function_declaration" | "method_declaration") && in_field(parent, "name", ident) {
                return Some(Role::Skip);
            }
            if matches!(kind, "parameter_declaration" | "variadic_parameter_declaration") && in_field(parent, "name", ident) {
                return Some(Role::Param);
            }
            if matches!(kind, "labeled_statement" | "break_statement" | "continue_statement" | "goto_statement" | "package_clause" | "import_spec") {
                return Some(Role::Skip);
            }
            if matches!(kind, "const_spec") {
                return Some(Role::Decl);
            }
        }
        Family::Java => {
            if matches!(kind, "method_declaration" | "constructor_declaration" | "class_declaration" | "interface_declaration" | "enum_declaration")
                && in_field(parent, "name", ident)
            {
                return Some(Role::Skip);
            }
            if (kind == "method_invocation" && in_field(parent, "name", ident))
                || (kind == "field_access" && in_field(parent, "field", ident))
                || matches!(kind, "scoped_identifier" | "package_declaration" | "import_declaration" | "labeled_statement" | "break_statement" | "continue_statement" | "marker_annotation" | "annotation")
            {
                return Some(Role::Skip);
            }
            if matches!(kind, "formal_parameter" | "catch_formal_parameter" | "spread_parameter") && in_field(parent, "name", ident) {
                return Some(Role::Param);
            }
            if kind == "lambda_expression" && in_field(parent, "parameters", ident) {
                return Some(Role::Param);
            }
            if kind == "inferred_parameters" {
                return Some(Role::Param);
            }
            if kind == "variable_declarator"
                && in_field(parent, "name", ident)
                && parent.parent().is_some_and(|p| p.kind() == "field_declaration")
            {
                return Some(Role::Skip);
            }
        }
    }
    None
}

fn python_context(parent: Node, child: Node) -> Option<Role> {
    match parent.kind() {
        "assignment" if in_field(parent, "left", child) => Some(Role::Decl),
        "augmented_assignment" if in_field(parent, "left", child) => Some(Role::ReadWrite),
        "for_statement" | "for_in_clause" if in_field(parent, "left", child) => Some(Role::Decl),
        "named_expression" if in_field(parent, "name", child) => Some(Role::Decl),
        "as_pattern" if in_field(parent, "alias", child) => Some(Role::Decl),
        "except_clause" if in_field(parent, "alias", child) => Some(Role::Decl),
        "parameters" | "lambda_parameters" => Some(Role::Param),
        "typed_parameter" => Some(Role::Param),
        "default_parameter" | "typed_default_parameter" if in_field(parent, "name", child) => Some(Role::Param),
        _ => None,
    }
}

fn js_context(parent: Node, child: Node) -> Option<Role> {
    match parent.kind() {
        "variable_declarator" if in_field(parent, "name", child) => Some(Role::Decl),
        "assignment_expression" if in_field(parent, "left", child) => Some(Role::Write),
        "augmented_assignment_expression" if in_field(parent, "left", child) => Some(Role::ReadWrite),
        "update_expression" => Some(Role::ReadWrite),
        "for_in_statement" if in_field(parent, "left", child) => {
            Some(if parent.child_by_field_name("kind").is_some() { Role::Decl } else { Role::Write })
        }
        "formal_parameters" => Some(Role::Param),
        "required_parameter" | "optional_parameter" if in_field(parent, "pattern", child) => Some(Role::Param),
        "arrow_function" if in_field(parent, "parameter", child) => Some(Role::Param),
        "catch_clause" if in_field(parent, "parameter", child) => Some(Role::Decl),
        _ => None,
    }
}

fn rust_context(src: &str, parent: Node, child: Node, ident: Node, wrapped: bool) -> Option<Role> {
    let binding = |role| {
        // `None` or `MAX` in a pattern is a constant or an enum variant, not a new binding.
        if src[ident.byte_range()].starts_with(|c: char| c.is_ascii_uppercase()) {
            return Some(Role::Skip);
        }
        Some(role)
    };
    match parent.kind() {
        "let_declaration" if in_field(parent, "pattern", child) => binding(Role::Decl),
        "parameter" if in_field(parent, "pattern", child) => binding(Role::Param),
        "closure_parameters" => binding(Role::Param),
        "for_expression" if in_field(parent, "pattern", child) => binding(Role::Decl),
        "let_condition" if in_field(parent, "pattern", child) => binding(Role::Decl),
        "match_arm" if in_field(parent, "pattern", child) => binding(Role::Decl),
        "assignment_expression" if in_field(parent, "left", child) && !wrapped => Some(Role::Write),
        "compound_assignment_expr" if in_field(parent, "left", child) && !wrapped => Some(Role::ReadWrite),
        _ => None,
    }
}

fn go_context(parent: Node, child: Node) -> Option<Role> {
    match parent.kind() {
        "short_var_declaration" if in_field(parent, "left", child) => Some(Role::Decl),
        "var_spec" if in_field(parent, "name", child) => Some(Role::Decl),
        "const_spec" if in_field(parent, "name", child) => Some(Role::Decl),
        "range_clause" if in_field(parent, "left", child) => {
            let text_has_define = parent.child_by_field_name("left").is_some_and(|left| {
                left.next_sibling().is_some_and(|op| op.kind() == ":=")
            });
            Some(if text_has_define { Role::Decl } else { Role::Write })
        }
        "assignment_statement" if in_field(parent, "left", child) => {
            let compound = parent.child_by_field_name("operator").is_some_and(|op| op.kind() != "=");
            Some(if compound { Role::ReadWrite } else { Role::Write })
        }
        "inc_statement" | "dec_statement" => Some(Role::ReadWrite),
        "parameter_declaration" | "variadic_parameter_declaration" if in_field(parent, "name", child) => Some(Role::Param),
        // `c.hits++`, `c.names = ...`: a struct is a value in Go, so a field write changes the variable itself
        // (passed by value into a new function, the change would be lost unless it is returned).
        "selector_expression" if in_field(parent, "operand", child) => {
            let mut top = parent;
            while let Some(up) = top.parent() {
                let operand = (up.kind() == "selector_expression" && in_field(up, "operand", top)) || (up.kind() == "index_expression" && in_field(up, "operand", top) && top.kind() != "selector_expression");
                if !operand {
                    break;
                }
                top = up;
            }
            let up = top.parent()?;
            let written = match up.kind() {
                "inc_statement" | "dec_statement" => true,
                "expression_list" => up.parent().is_some_and(|a| a.kind() == "assignment_statement" && in_field(a, "left", up)),
                "assignment_statement" => in_field(up, "left", top),
                _ => false,
            };
            written.then_some(Role::ReadWrite)
        }
        _ => None,
    }
}

fn java_context(parent: Node, child: Node) -> Option<Role> {
    match parent.kind() {
        "variable_declarator" if in_field(parent, "name", child) => Some(Role::Decl),
        "assignment_expression" if in_field(parent, "left", child) => {
            let compound = parent.child_by_field_name("operator").is_some_and(|op| op.kind() != "=");
            Some(if compound { Role::ReadWrite } else { Role::Write })
        }
        "update_expression" => Some(Role::ReadWrite),
        "enhanced_for_statement" if in_field(parent, "name", child) => Some(Role::Decl),
        "formal_parameter" | "catch_formal_parameter" | "spread_parameter" if in_field(parent, "name", child) => {
            Some(Role::Param)
        }
        "resource" if in_field(parent, "name", child) => Some(Role::Decl),
        "lambda_expression" if in_field(parent, "parameters", child) => Some(Role::Param),
        "inferred_parameters" => Some(Role::Param),
        _ => None,
    }
}
