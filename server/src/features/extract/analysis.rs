//! The analysis behind extract method: selection, parameters, returned values, control flow, receiver and
//! placement. Tree-sitter only: no model, no compiler, so it answers within a code-action request.
//!
//! The output is a `Plan`, plain data that `codegen` turns into text once a name is chosen.

use std::collections::{BTreeSet, HashSet};
use std::ops::Range;

use tree_sitter::{Node, Tree};

use super::lang::{in_field, table, Family, Role, Table};
use super::scope::{Index, ScopeKind};
use super::types::TypeCx;
use super::Refusal;
use crate::syntax::Language;

/// How an argument is passed (only Rust distinguishes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pass {
    Value,
    /// By value into a `mut` parameter: the body assigns it.
    MutValue,
    Ref,
    RefMut,
}

#[derive(Clone, Debug)]
pub(crate) struct Param {
    pub name: String,
    pub ty: Option<String>,
    pub pass: Pass,
}

#[derive(Clone, Debug)]
pub(crate) struct Ret {
    pub name: String,
    pub ty: Option<String>,
    /// Declared inside the selection: the call site must declare it.
    pub declared_inside: bool,
    /// How the original declared it: `const`/`let`/`var` (JS), `mut` (Rust), the type (Java).
    pub decl_kw: String,
}

#[derive(Clone, Debug)]
pub(crate) struct LocalDecl {
    pub name: String,
    pub ty: Option<String>,
    pub mutable: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Tail {
    /// Statements; values leave through `rets`.
    None,
    /// The selection is a value: an expression, or a Rust block's trailing expression.
    Value { ty: Option<String> },
    /// The selection ends in `return`: the call becomes `return f(...)`.
    ReturnsFromFn { ty: Option<String> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Receiver {
    Free,
    /// Python method: `self` (or whatever the first parameter is called).
    PySelf(String),
    /// Python `@classmethod`: `cls`.
    PyCls(String),
    JsThis { is_static: bool },
    /// Rust method: the self parameter text (`&self`, `&mut self`).
    RustSelf(String),
    /// Rust associated function (the body names `Self`).
    RustAssoc,
    /// Go method: receiver name and the receiver text `(s *T)`.
    GoRecv { name: String, text: String },
    JavaMember { is_static: bool },
}

#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub lang: Language,
    pub family: Family,
    /// The original text replaced by the call.
    pub replace: Range<usize>,
    /// The body, one entry per line, with the original base indentation removed.
    pub body_lines: Vec<String>,
    pub expr_mode: bool,
    pub params: Vec<Param>,
    pub rets: Vec<Ret>,
    pub local_decls: Vec<LocalDecl>,
    pub tail: Tail,
    pub is_async: bool,
    /// Rust `?` in the body: the wrapper (`Ok`/`Some`) and the enclosing function's return type.
    pub try_wrap: Option<(String, String)>,
    pub receiver: Receiver,
    /// Where the new function goes, and whether it goes before that point (Python/JS module-level code).
    pub insert_at: usize,
    pub insert_before: bool,
    pub member_indent: String,
    pub indent_unit: String,
    pub call_indent: String,
    /// Rust/Go/Java/TS generics copied from the enclosing function (only those used).
    pub generics: String,
    pub where_clause: String,
    /// Python `global` names the body assigns.
    pub globals: Vec<String>,
    /// Names that may stay free in the new function (globals, imports, builtins, fields).
    pub free_ok: HashSet<String>,
    /// Every identifier in the file: a new name must differ from all of them.
    /// The whole original text: a new name must not occur in it as a word.
    pub source: String,
    pub enclosing_name: String,
    pub body_text: String,
    pub context_text: String,
    /// The expression is a call's whole argument list (`sum(x for x in xs)`): the call keeps its parentheses.
    pub is_argument_list: bool,
}

impl Plan {
    pub fn table(&self) -> &'static Table {
        table(self.lang).expect("plans exist only for supported languages")
    }
}

fn refuse<T>(reason: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal { reason: reason.into() })
}

struct Selected<'t> {
    /// Statement nodes (comments excluded) or the one expression.
    nodes: Vec<Node<'t>>,
    replace: Range<usize>,
    expr_mode: bool,
    /// Rust: the last statement is the block's trailing expression.
    rust_tail: bool,
}

/// Analyses a selection. `sel` is a byte range into `src`, which `tree` describes.
pub(crate) fn analyze(src: &str, tree: &Tree, lang: Language, sel: Range<usize>) -> Result<Plan, Refusal> {
    let Some(table) = table(lang) else {
        return refuse(format!("extract method does not support {lang}"));
    };
    let root = tree.root_node();
    let selected = select(table, src, root, sel)?;
    let first = selected.nodes[0];
    let replace = selected.replace.clone();

    // The innermost function around the selection: the one whose locals become parameters.
    let func = ancestors(first).find(|n| table.is(table.function_kinds, *n));
    if func.is_none() && matches!(table.family, Family::Rust | Family::Go | Family::Java) {
        return refuse("select code inside a function body");
    }
    if let Some(f) = func {
        if table.family == Family::Python && f.kind() == "lambda" && !selected.expr_mode {
            return refuse("a lambda body is one expression: select all of it or a part that is an expression");
        }
    }

    // Only the top-level item around the selection matters, except for module-level code.
    let focus = if func.is_some() { Some(top_level_item(root, first, table)) } else { None };
    let index = Index::build_focused(table, src, root, focus);
    let types = TypeCx::new(table, src, root, &index);

    // Control flow that leaves the selection, and the modifiers the body brings along.
    let flow = scan_flow(table, src, &selected, &replace)?;

    let func_scope = func.map(|f| index.scope_at(f.start_byte(), f.end_byte()));
    let module_level = func.is_none();

    // Loops around the selection inside the function: a value written in the selection and read earlier in the
    // same loop is live after the selection.
    let loops: Vec<Node> = ancestors(first)
        .skip(1)
        .take_while(|n| func.is_none_or(|f| n.id() != f.id()))
        .filter(|n| table.is(table.loop_kinds, *n))
        .collect();

    let inside = |n: Node| n.start_byte() >= replace.start && n.end_byte() <= replace.end;

    // Which variables the selection touches, and how.
    #[derive(Default, Clone)]
    struct Use {
        read: bool,
        written: bool,
        first_is_plain_write: Option<bool>,
        read_after: bool,
        declared_inside: bool,
        n_writes: usize,
    }
    let mut uses: Vec<Option<Use>> = vec![None; index.vars.len()];
    let mut free_ok = HashSet::new();
    let mut globals_written = BTreeSet::new();
    let py_globals: Vec<String> = func_scope.map(|s| index.scopes[s].globals.clone()).unwrap_or_default();

    let relevant = |var: usize| -> bool {
        let v = &index.vars[var];
        let scope = &index.scopes[v.scope];
        let contains = scope.node.start_byte() <= replace.start && replace.end <= scope.node.end_byte();
        if !contains {
            return false;
        }
        match scope.kind {
            // Module-level functions and classes stay visible from the new function.
            ScopeKind::Root => module_level && v.role != Role::ItemName,
            ScopeKind::Class => false,
            _ => true,
        }
    };

    let mut occs_inside: Vec<usize> = (0..index.occs.len()).filter(|i| inside(index.occs[*i].node)).collect();
    occs_inside.sort_by_key(|i| (index.occs[*i].eff, index.occs[*i].node.start_byte()));
    for &i in &occs_inside {
        let occ = &index.occs[i];
        let Some(var) = occ.var else {
            if matches!(occ.role, Role::Read | Role::ReadWrite) {
                free_ok.insert(occ.name.clone());
            }
            if matches!(occ.role, Role::Write | Role::ReadWrite) && py_globals.contains(&occ.name) {
                globals_written.insert(occ.name.clone());
            }
            continue;
        };
        if !relevant(var) {
            if matches!(occ.role, Role::Read | Role::ReadWrite | Role::Write) {
                free_ok.insert(occ.name.clone());
            }
            if table.family == Family::Python && matches!(occ.role, Role::Write | Role::ReadWrite | Role::Decl) && py_globals.contains(&occ.name) {
                globals_written.insert(occ.name.clone());
            }
            continue;
        }
        let decl_inside = inside(index.vars[var].decl);
        let entry = uses[var].get_or_insert_with(Use::default);
        entry.declared_inside = decl_inside;
        let is_write = matches!(occ.role, Role::Write | Role::Decl);
        let is_read = matches!(occ.role, Role::Read | Role::ReadWrite);
        if entry.first_is_plain_write.is_none() {
            entry.first_is_plain_write = Some(is_write && !is_conditional(table, occ.node, &selected));
        }
        if is_read {
            entry.read = true;
        }
        if matches!(occ.role, Role::Write | Role::Decl | Role::ReadWrite) {
            entry.written = true;
            entry.n_writes += 1;
        }
    }
    // Reads after the selection (or earlier in an enclosing loop).
    for occ in &index.occs {
        let Some(var) = occ.var else { continue };
        let Some(entry) = uses[var].as_mut() else { continue };
        if !matches!(occ.role, Role::Read | Role::ReadWrite) || inside(occ.node) {
            continue;
        }
        let scope_node = index.scopes[index.vars[var].scope].node;
        let after = occ.node.start_byte() >= replace.end && occ.node.end_byte() <= scope_node.end_byte();
        let in_loop_before = entry.written
            && loops.iter().any(|l| occ.node.start_byte() >= l.start_byte() && occ.node.start_byte() < replace.start);
        if after || in_loop_before {
            entry.read_after = true;
        }
    }

    // The receiver: methods keep `self`/`this`.
    let mut receiver = Receiver::Free;
    let mut receiver_var = None;
    let mut member_anchor: Option<Node> = None;
    match table.family {
        Family::Python => {
            if let Some(f) = ancestors(first).find(|n| n.kind() == "function_definition") {
                if let Some(method) = python_method(src, f) {
                    let params = f.child_by_field_name("parameters");
                    let first_param = params.and_then(|p| {
                        let mut c = p.walk();
                        let it = p.named_children(&mut c).next();
                        it
                    });
                    let decorators = method.decorators;
                    if let Some(fp) = first_param.filter(|p| p.kind() == "identifier") {
                        let name = &src[fp.byte_range()];
                        let var = index.vars.iter().position(|v| v.decl.id() == fp.id());
                        if let Some(var) = var {
                            if uses[var].is_some() && !decorators.contains("staticmethod") {
                                if uses[var].as_ref().is_some_and(|u| u.written) {
                                    return refuse(format!("the selection assigns `{name}`"));
                                }
                                receiver = if decorators.contains("classmethod") {
                                    Receiver::PyCls(name.to_owned())
                                } else {
                                    Receiver::PySelf(name.to_owned())
                                };
                                receiver_var = Some(var);
                                member_anchor = Some(method.anchor);
                            }
                        }
                    }
                }
            }
        }
        Family::Js => {
            if flow.uses_this {
                let method = ancestors(first).find(|n| table.is(table.function_kinds, *n) && n.kind() != "arrow_function");
                match method {
                    Some(m) if m.kind() == "method_definition" => {
                        let mut c = m.walk();
                        let is_static = m.children(&mut c).any(|ch| ch.kind() == "static");
                        receiver = Receiver::JsThis { is_static };
                        member_anchor = Some(m);
                    }
                    _ => return refuse("the selection uses `this` outside a class method"),
                }
            }
        }
        Family::Rust => {
            let f = ancestors(first).find(|n| n.kind() == "function_item");
            let in_impl = f.and_then(|f| f.parent()).is_some_and(|p| {
                p.kind() == "declaration_list" && p.parent().is_some_and(|pp| pp.kind() == "impl_item")
            });
            if flow.uses_self {
                let self_param = f.and_then(|f| f.child_by_field_name("parameters")).and_then(|p| {
                    let mut c = p.walk();
                    let it = p.named_children(&mut c).find(|ch| ch.kind() == "self_parameter");
                    it
                });
                match (self_param, in_impl) {
                    (Some(sp), true) => {
                        let text = src[sp.byte_range()].to_owned();
                        let text = if text.contains('&') { text } else { "&self".to_owned() };
                        receiver = Receiver::RustSelf(text);
                        member_anchor = f;
                    }
                    _ => return refuse("the selection uses `self` outside a method"),
                }
            } else if flow.uses_big_self {
                if !in_impl {
                    return refuse("the selection names `Self` outside an impl block");
                }
                receiver = Receiver::RustAssoc;
                member_anchor = f;
            }
        }
        Family::Go => {
            if let Some(m) = ancestors(first).find(|n| matches!(n.kind(), "method_declaration" | "function_declaration")) {
                if m.kind() == "method_declaration" {
                    if let Some(recv) = m.child_by_field_name("receiver") {
                        let recv_ident = first_named_descendant(recv, "identifier");
                        if let Some(ri) = recv_ident {
                            if let Some(var) = index.vars.iter().position(|v| v.decl.id() == ri.id()) {
                                if uses[var].is_some() {
                                    receiver = Receiver::GoRecv {
                                        name: src[ri.byte_range()].to_owned(),
                                        text: src[recv.byte_range()].to_owned(),
                                    };
                                    receiver_var = Some(var);
                                }
                            }
                        }
                    }
                }
            }
        }
        Family::Java => {
            let m = ancestors(first)
                .find(|n| matches!(n.kind(), "method_declaration" | "constructor_declaration") && n.parent().is_some_and(|p| p.kind() == "class_body" || p.kind() == "enum_body_declarations"));
            let Some(m) = m else { return refuse("select code inside a method") };
            let is_static = m.child(0).is_some_and(|c| c.kind() == "modifiers" && src[c.byte_range()].split_whitespace().any(|w| w == "static"));
            receiver = Receiver::JavaMember { is_static };
            member_anchor = Some(m);
        }
    }

    // Parameters, returned values and locals the new function must declare.
    let mut params = Vec::new();
    let mut rets = Vec::new();
    let mut local_decls = Vec::new();
    let mut order: Vec<usize> = (0..uses.len()).filter(|v| uses[*v].is_some()).collect();
    order.sort_by_key(|v| (index.vars[*v].pos, index.vars[*v].decl.start_byte()));
    for var in order {
        if Some(var) == receiver_var {
            continue;
        }
        let u = uses[var].clone().expect("filtered");
        let v = &index.vars[var];
        let name = v.name.clone();
        if u.declared_inside {
            if u.read_after {
                rets.push((var, true));
            }
            continue;
        }
        let plain_write_first = u.first_is_plain_write == Some(true);
        if plain_write_first {
            if table.family != Family::Python {
                local_decls.push(LocalDecl { name: name.clone(), ty: types.var_type(var), mutable: u.n_writes > 1 });
            }
        } else {
            params.push(var);
        }
        if u.written && u.read_after {
            rets.push((var, false));
        }
    }

    let tail;
    let mut body_is_value = selected.expr_mode || selected.rust_tail;
    if flow.has_return {
        if !flow.ends_with_return || selected.expr_mode {
            return refuse("the selection returns on some paths only: the new function could not tell the caller to return");
        }
        if flow.escapes.is_some() {
            return refuse("the selection mixes `return` with a `break`/`continue` that leaves it");
        }
        rets.clear();
        body_is_value = false;
        let ty = func.and_then(|f| function_return_type(table, src, f));
        tail = Tail::ReturnsFromFn { ty };
    } else if let Some(kw) = &flow.escapes {
        return refuse(format!("`{kw}` leaves the selection: the new function could not continue or break the caller's loop"));
    } else if body_is_value {
        if !rets.is_empty() {
            let names: Vec<&str> = rets.iter().map(|(v, _)| index.vars[*v].name.as_str()).collect();
            return refuse(format!("the selection is a value and also assigns {} used later", quote_list(&names)));
        }
        let value_node = *selected.nodes.last().expect("non-empty");
        let mut ty = types.expr_type(value_node);
        if ty.is_none() && selected.rust_tail {
            // The trailing expression of a function body has the function's return type.
            if let (Some(f), Some(block)) = (func, value_node.parent()) {
                if f.child_by_field_name("body").is_some_and(|b| b.id() == block.id()) {
                    ty = function_return_type(table, src, f).or(Some("()".to_owned()));
                }
            }
        }
        tail = Tail::Value { ty };
    } else {
        tail = Tail::None;
    }
    if selected.expr_mode {
        if let Some((var, _)) = uses.iter().enumerate().find_map(|(i, u)| u.as_ref().filter(|u| u.written && !u.declared_inside).map(|u| (i, u))) {
            return refuse(format!("the expression assigns `{}`", index.vars[var].name));
        }
    }
    if flow.has_yield {
        return refuse("the selection contains `yield`: a generator cannot be split into two functions");
    }
    if let Some(what) = &flow.forbidden {
        return refuse(what.clone());
    }
    let try_wrap = if flow.has_try {
        let ret_ty = func.and_then(|f| function_return_type(table, src, f)).unwrap_or_default();
        if ret_ty.starts_with("Result<") || ret_ty.starts_with("io::Result<") || ret_ty.starts_with("anyhow::Result<") || ret_ty == "Result" {
            Some(("Ok".to_owned(), ret_ty))
        } else if ret_ty.starts_with("Option<") {
            Some(("Some".to_owned(), ret_ty))
        } else {
            return refuse("`?` in the selection needs the enclosing function to return a `Result` or an `Option` with a written type");
        }
    } else {
        None
    };

    // Types, where the language needs them.
    let mut param_list = Vec::new();
    // Edits of the body text where a variable became a reference parameter (`&v` -> `v`).
    let mut rewrites: Vec<(Range<usize>, String)> = Vec::new();
    for var in params {
        let v = &index.vars[var];
        let u = uses[var].as_ref().expect("used");
        let mut ty = types.var_type(var);
        if table.typed_params && ty.is_none() {
            return refuse(format!("cannot tell the type of `{}`: add a type annotation to its declaration", v.name));
        }
        let mut pass = Pass::Value;
        if table.family == Family::Rust {
            let t = ty.clone().unwrap_or_default();
            let mut_binding = rust_is_mut_binding(src, v.decl);
            if u.written {
                pass = Pass::MutValue;
            } else if u.read_after && !rust_is_copy(&t) {
                pass = if mut_binding { Pass::RefMut } else { Pass::Ref };
                ty = Some(format!("{}{}", if pass == Pass::RefMut { "&mut " } else { "&" }, t));
            } else if mut_binding && !t.starts_with('&') {
                // Moved in and possibly mutated through methods (`v.sort()`): the parameter keeps `mut`.
                pass = Pass::MutValue;
            }
            if matches!(pass, Pass::Ref | Pass::RefMut) {
                let nodes: Vec<Node> = occs_inside.iter().map(|&i| &index.occs[i]).filter(|o| o.var == Some(var)).map(|o| o.node).collect();
                let (edits, slice_ok) = rust_reference_rewrites(src, &v.name, pass, &nodes);
                rewrites.extend(edits);
                if pass == Pass::Ref && slice_ok {
                    // Like rust-analyzer and clippy's `ptr_arg`: a read-only `Vec<T>`/`String` is taken as a slice.
                    if let Some(elem) = t.strip_prefix("Vec<").and_then(|r| r.strip_suffix('>')) {
                        ty = Some(format!("&[{elem}]"));
                    } else if t == "String" {
                        ty = Some("&str".to_owned());
                    }
                }
            }
        }
        param_list.push(Param { name: v.name.clone(), ty, pass });
    }
    let mut ret_list = Vec::new();
    for (var, declared_inside) in rets {
        let v = &index.vars[var];
        let ty = types.var_type(var);
        if table.typed_return && ty.is_none() {
            return refuse(format!("cannot tell the type of `{}`: add a type annotation to its declaration", v.name));
        }
        ret_list.push(Ret { name: v.name.clone(), ty, declared_inside, decl_kw: decl_keyword(table, src, v.decl, v.decl_ctx) });
    }
    if table.family == Family::Rust {
        // A result that borrows needs its lifetime tied to exactly one borrowed parameter (elision).
        let borrows = |t: &str| t.contains('&') && !t.contains("&'static");
        let result_borrows = ret_list.iter().any(|r| r.ty.as_deref().is_some_and(borrows))
            || matches!(&tail, Tail::Value { ty: Some(t) } if borrows(t));
        // Tying it to a parameter by elision is only right when the borrow comes from that parameter, which
        // tree-sitter cannot tell: refuse rather than offer code that may not compile.
        if result_borrows {
            return refuse("the result holds a borrow, and its lifetime cannot be checked here: extract the owner too");
        }
    }
    if table.family == Family::Java && ret_list.len() > 1 {
        let names: Vec<&str> = ret_list.iter().map(|r| r.name.as_str()).collect();
        return refuse(format!("Java methods return one value, and the selection assigns {} used later", quote_list(&names)));
    }
    for decl in &local_decls {
        if matches!(table.family, Family::Go | Family::Java) && decl.ty.is_none() {
            return refuse(format!("cannot tell the type of `{}`: add a type annotation to its declaration", decl.name));
        }
    }
    match &tail {
        Tail::Value { ty: None } if table.typed_return => {
            return refuse("cannot tell the type of the selected expression: extract it into a typed variable first");
        }
        Tail::ReturnsFromFn { ty: None } if table.typed_return && !matches!(table.family, Family::Rust) => {
            // Go and Java functions without a result type return nothing: the new one returns nothing too.
        }
        _ => {}
    }

    // Placement.
    let indent_unit = detect_indent(src, table);
    let (insert_at, insert_before, member_indent) = if let Some(anchor) = member_anchor {
        let anchor = python_decorated(anchor);
        (anchor.end_byte(), false, line_indent(src, anchor.start_byte()))
    } else {
        let top = top_level_item(root, first, table);
        if module_level {
            // Before the statement, or before the comments that move with the selection when it starts on them.
            (line_start(src, top.start_byte().min(replace.start)), true, String::new())
        } else {
            (top.end_byte(), false, line_indent(src, top.start_byte()))
        }
    };

    // Body lines.
    let body_lines = reindent(src, table, root, replace.clone(), &rewrites);

    // Generics the types use.
    let (generics, where_clause) = copy_generics(table, src, func, &param_list, &ret_list, &tail, &src[replace.clone()]);

    let enclosing_name = func
        .and_then(|f| f.child_by_field_name("name"))
        .map(|n| src[n.byte_range()].to_owned())
        .unwrap_or_default();
    let context_node = func.unwrap_or(root);
    let context_text = truncate(&src[context_node.byte_range()], 3000);

    let _ = body_is_value;
    Ok(Plan {
        lang,
        family: table.family,
        replace: replace.clone(),
        body_lines,
        expr_mode: selected.expr_mode,
        params: param_list,
        rets: ret_list,
        local_decls,
        tail,
        is_async: flow.has_await,
        try_wrap,
        receiver,
        insert_at,
        insert_before,
        member_indent,
        indent_unit,
        call_indent: line_indent(src, replace.start),
        generics,
        where_clause,
        globals: globals_written.into_iter().collect(),
        free_ok,
        source: src.to_owned(),
        enclosing_name,
        body_text: src[replace.clone()].to_owned(),
        context_text,
        is_argument_list: selected.expr_mode
            && first.parent().is_some_and(|p| in_field(p, "arguments", first) && first.kind() == "generator_expression"),
    })
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n...", &s[..end])
}

fn quote_list(names: &[&str]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

pub(crate) fn ancestors(node: Node) -> impl Iterator<Item = Node> {
    std::iter::successors(Some(node), |n| n.parent())
}

fn first_named_descendant<'t>(node: Node<'t>, kind: &str) -> Option<Node<'t>> {
    let mut cursor = node.walk();
    let mut stack = vec![node];
    while let Some(n) = stack.pop() {
        if n.kind() == kind {
            return Some(n);
        }
        let children: Vec<Node> = n.named_children(&mut cursor).collect();
        stack.extend(children.into_iter().rev());
    }
    None
}

struct PyMethod<'t> {
    anchor: Node<'t>,
    decorators: String,
}

/// A Python function defined directly in a class body, with its decorators' text.
fn python_method<'t>(src: &str, f: Node<'t>) -> Option<PyMethod<'t>> {
    let anchor = match f.parent() {
        Some(p) if p.kind() == "decorated_definition" => p,
        _ => f,
    };
    let block = anchor.parent()?;
    if block.kind() != "block" || block.parent().is_none_or(|c| c.kind() != "class_definition") {
        return None;
    }
    let mut text = String::new();
    if anchor.kind() == "decorated_definition" {
        let mut c = anchor.walk();
        for d in anchor.named_children(&mut c).filter(|d| d.kind() == "decorator") {
            text.push_str(&src[d.byte_range()]);
            text.push(' ');
        }
    }
    Some(PyMethod { anchor: f, decorators: text })
}

fn python_decorated(node: Node) -> Node {
    match node.parent() {
        Some(p) if p.kind() == "decorated_definition" => p,
        _ => node,
    }
}

/// The item the new function goes after: the innermost ancestor that sits at module level.
fn top_level_item<'t>(root: Node<'t>, node: Node<'t>, table: &Table) -> Node<'t> {
    let mut best = node;
    for a in ancestors(node) {
        let Some(parent) = a.parent() else { break };
        let at_top = parent.id() == root.id()
            || (table.family == Family::Rust
                && parent.kind() == "declaration_list"
                && parent.parent().is_some_and(|pp| pp.kind() == "mod_item"));
        if at_top {
            best = a;
            break;
        }
    }
    best
}

/// Line start of the line holding `byte`.
pub(crate) fn line_start(src: &str, byte: usize) -> usize {
    src[..byte].rfind('\n').map_or(0, |i| i + 1)
}

/// The leading whitespace of the line holding `byte`.
pub(crate) fn line_indent(src: &str, byte: usize) -> String {
    let start = line_start(src, byte);
    src[start..].chars().take_while(|c| *c == ' ' || *c == '\t').collect()
}

fn detect_indent(src: &str, table: &Table) -> String {
    if table.family == Family::Go {
        return "\t".to_owned();
    }
    let mut min_spaces = usize::MAX;
    let mut tabs = 0;
    let mut spaces = 0;
    for line in src.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if line.starts_with('\t') {
            tabs += 1;
        } else if line.starts_with(' ') {
            spaces += 1;
            let n = line.chars().take_while(|c| *c == ' ').count();
            if n >= 2 {
                min_spaces = min_spaces.min(n);
            }
        }
    }
    if tabs > spaces {
        "\t".to_owned()
    } else if min_spaces <= 8 {
        " ".repeat(min_spaces)
    } else {
        table.default_indent.to_owned()
    }
}

/// The lines of `range`, with the indentation of its first line removed from every line. Lines that start inside
/// a multi-line string keep their text as is.
/// `rewrites` (byte ranges of `src` inside one line each, with their replacements) are applied first.
fn reindent(src: &str, table: &Table, root: Node, range: Range<usize>, rewrites: &[(Range<usize>, String)]) -> Vec<String> {
    let base = line_indent(src, range.start);
    let text = &src[range.clone()];
    let mut out = Vec::new();
    let mut offset = range.start;
    for (i, line) in text.split('\n').enumerate() {
        let line_begin = offset;
        offset += line.len() + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        let mut edited = rewrites.iter().filter(|(r, _)| r.start >= line_begin && r.end <= line_begin + line.len()).collect::<Vec<_>>();
        edited.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
        let mut owned = line.to_owned();
        for (r, with) in edited {
            owned.replace_range(r.start - line_begin..r.end - line_begin, with);
        }
        let line = owned.as_str();
        if i == 0 {
            out.push(line.to_owned());
            continue;
        }
        if in_multiline_string(table, root, line_begin) {
            out.push(format!("\u{0}{line}"));
            continue;
        }
        if line.trim().is_empty() {
            out.push(String::new());
            continue;
        }
        let stripped = if let Some(rest) = line.strip_prefix(base.as_str()) {
            rest.to_owned()
        } else {
            line.trim_start_matches([' ', '\t']).to_owned()
        };
        out.push(stripped);
    }
    out
}

fn in_multiline_string(table: &Table, root: Node, byte: usize) -> bool {
    let Some(node) = root.descendant_for_byte_range(byte, byte) else { return false };
    ancestors(node).any(|n| {
        (table.is(table.string_kinds, n) || n.kind() == "string_content" || n.kind() == "template_string")
            && n.start_byte() < byte
            && n.end_byte() > byte
    })
}


/// True when the write at `node` might not run every time the selection runs.
fn is_conditional(table: &Table, node: Node, selected: &Selected) -> bool {
    const BRANCHING: &[&str] = &[
        "if", "for", "while", "loop", "try", "match", "switch", "case", "catch", "except", "conditional", "ternary",
        "lambda", "closure", "function", "comprehension", "generator", "boolean", "else", "elif", "with", "select",
    ];
    for a in ancestors(node).skip(1) {
        let k = a.kind();
        if k.split('_').any(|part| BRANCHING.contains(&part))
            || (k == "binary_expression" && a.child_by_field_name("operator").is_some_and(|op| matches!(op.kind(), "&&" | "||" | "??")))
            || table.is(table.function_kinds, a)
        {
            return true;
        }
        if selected.nodes.iter().any(|s| s.id() == a.id()) || a.start_byte() < selected.replace.start {
            return false;
        }
    }
    false
}

/// The declared return type of a function node, as written.
pub(crate) fn function_return_type(table: &Table, src: &str, f: Node) -> Option<String> {
    let text = |n: Node| src[n.byte_range()].trim().to_owned();
    match table.family {
        Family::Rust => f.child_by_field_name("return_type").map(text),
        Family::Go => f.child_by_field_name("result").map(text),
        Family::Java => f.child_by_field_name("type").map(text),
        Family::Js => f.child_by_field_name("return_type").map(|n| text(n).trim_start_matches(':').trim().to_owned()),
        Family::Python => f.child_by_field_name("return_type").map(text),
    }
}

/// Methods of `Vec<T>` and `String` that `[T]` and `str` have too, with the same result.
const SLICE_METHODS: &[&str] = &[
    "len", "is_empty", "iter", "into_iter", "first", "last", "get", "contains", "starts_with", "ends_with", "windows",
    "chunks", "to_vec", "to_owned", "to_string", "binary_search", "split_at", "split_first", "split_last", "concat",
    "join", "chars", "bytes", "lines", "split", "split_whitespace", "trim", "trim_start", "trim_end", "find", "rfind",
    "replace", "to_uppercase", "to_lowercase", "parse", "char_indices", "as_bytes", "repeat", "eq_ignore_ascii_case",
];

/// How the uses (`nodes`) of `name` change when it becomes a reference parameter: `&v` is `v` now (or `&*v`
/// for a `&mut`), `&mut v` is `&mut *v`, and a comparison compares `*v`. Also whether every use works on a
/// slice (`&[T]` for `Vec<T>`, `&str` for `String`).
fn rust_reference_rewrites(src: &str, name: &str, pass: Pass, nodes: &[Node]) -> (Vec<(Range<usize>, String)>, bool) {
    let mut edits = Vec::new();
    let mut slice_ok = true;
    for &node in nodes {
        let Some(parent) = node.parent() else { continue };
        let is = |field: &str| parent.child_by_field_name(field) == Some(node);
        match parent.kind() {
            "reference_expression" if is("value") => {
                if pass == Pass::Ref {
                    edits.push((parent.byte_range(), name.to_owned()));
                    // `for x in &v` iterates `&T` over a slice too; elsewhere the callee may want the `Vec`.
                    let in_for = parent.parent().is_some_and(|g| g.kind() == "for_expression" && g.child_by_field_name("value") == Some(parent));
                    slice_ok &= in_for;
                } else {
                    edits.push((node.byte_range(), format!("*{name}")));
                }
            }
            "binary_expression"
                if parent.child_by_field_name("operator").is_some_and(|op| matches!(&src[op.byte_range()], "==" | "!=" | "<" | ">" | "<=" | ">=")) =>
            {
                edits.push((node.byte_range(), format!("*{name}")));
            }
            "field_expression" if is("value") => {
                let method = parent.child_by_field_name("field").map(|f| &src[f.byte_range()]).unwrap_or("");
                let called = parent.parent().is_some_and(|g| g.kind() == "call_expression" && g.child_by_field_name("function") == Some(parent));
                slice_ok &= called && SLICE_METHODS.contains(&method);
            }
            "index_expression" if parent.named_child(0) == Some(node) => {}
            // Macro arguments are tokens: formatting prints a `&[T]`/`&str` as it printed the owner.
            "token_tree" => {}
            _ => slice_ok = false,
        }
    }
    (edits, slice_ok)
}

fn rust_is_copy(ty: &str) -> bool {
    let ty = ty.trim();
    matches!(
        ty,
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" | "u8" | "u16" | "u32" | "u64" | "u128" | "usize" | "f32" | "f64"
            | "bool" | "char" | "()"
    ) || (ty.starts_with('&') && !ty.starts_with("&mut"))
}

fn rust_is_mut_binding(src: &str, decl: Node) -> bool {
    if decl.parent().is_some_and(|p| p.kind() == "mut_pattern") {
        return true;
    }
    if let Some(prev) = decl.prev_sibling() {
        if prev.kind() == "mutable_specifier" {
            return true;
        }
    }
    decl.parent().is_some_and(|p| {
        matches!(p.kind(), "let_declaration" | "parameter") && {
            let mut c = p.walk();
            let has_mut = p.children(&mut c).any(|ch| ch.kind() == "mutable_specifier");
            has_mut
        }
    }) || src[line_start(src, decl.start_byte())..decl.start_byte()].ends_with("mut ")
}

/// How the original code declared a variable that the call site now declares.
fn decl_keyword(table: &Table, src: &str, decl: Node, ctx: Option<Node>) -> String {
    match table.family {
        Family::Js => {
            let decl_node = ctx.and_then(|c| c.parent()).filter(|p| matches!(p.kind(), "lexical_declaration" | "variable_declaration"));
            match decl_node {
                Some(d) if d.kind() == "variable_declaration" => "var".to_owned(),
                Some(d) => d.child_by_field_name("kind").map_or("let".to_owned(), |k| src[k.byte_range()].to_owned()),
                None => "let".to_owned(),
            }
        }
        Family::Rust => {
            if rust_is_mut_binding(src, decl) {
                "mut".to_owned()
            } else {
                String::new()
            }
        }
        Family::Java => ctx
            .and_then(|c| c.parent())
            .filter(|p| p.kind() == "local_variable_declaration")
            .and_then(|p| p.child_by_field_name("type"))
            .map(|t| src[t.byte_range()].to_owned())
            .unwrap_or_default(),
        _ => String::new(),
    }
}

#[derive(Default)]
struct Flow {
    has_return: bool,
    ends_with_return: bool,
    escapes: Option<String>,
    has_await: bool,
    has_yield: bool,
    has_try: bool,
    uses_this: bool,
    uses_self: bool,
    uses_big_self: bool,
    forbidden: Option<String>,
}

fn scan_flow(table: &Table, src: &str, selected: &Selected, replace: &Range<usize>) -> Result<Flow, Refusal> {
    let mut flow = Flow::default();
    let in_sel = |n: Node| n.start_byte() >= replace.start && n.end_byte() <= replace.end;
    for &top in &selected.nodes {
        let mut stack = vec![(top, false)];
        while let Some((node, in_nested_fn)) = stack.pop() {
            let kind = node.kind();
            let is_fn = table.is(table.function_kinds, node);
            let nested_fn = in_nested_fn || is_fn || kind == "async_block";
            if !in_nested_fn {
                if table.is(table.return_kinds, node) {
                    flow.has_return = true;
                }
                if table.is(table.await_kinds, node) {
                    flow.has_await = true;
                }
                if table.family == Family::Python && matches!(kind, "for_statement" | "with_statement") && node.child(0).is_some_and(|c| c.kind() == "async") {
                    flow.has_await = true;
                }
                if table.family == Family::Js && kind == "for_in_statement" && node.child(1).is_some_and(|c| c.kind() == "await") {
                    flow.has_await = true;
                }
                if table.is(table.yield_kinds, node) {
                    flow.has_yield = true;
                }
                if kind == "try_expression" {
                    flow.has_try = true;
                }
                if table.is(table.break_kinds, node) || table.is(table.continue_kinds, node) {
                    let is_continue = table.is(table.continue_kinds, node);
                    let target = break_target(table, src, node, is_continue);
                    if target.is_none_or(|t| !in_sel(t)) {
                        flow.escapes = Some(if is_continue { "continue" } else { "break" }.to_owned());
                    }
                }
                match (table.family, kind) {
                    (Family::Python, "global_statement" | "nonlocal_statement") => {
                        flow.forbidden = Some(format!("the selection contains a `{}` statement", kind.trim_end_matches("_statement")));
                    }
                    (Family::Go, "defer_statement") => {
                        flow.forbidden = Some("the selection contains `defer`: it would run when the new function returns".to_owned());
                    }
                    (Family::Go, "goto_statement") | (Family::Go, "fallthrough_statement") => {
                        flow.forbidden = Some(format!("the selection contains `{}`", &src[node.byte_range()]));
                    }
                    (Family::Js, "identifier") if &src[node.byte_range()] == "arguments" => {
                        flow.forbidden = Some("the selection uses `arguments`".to_owned());
                    }
                    (Family::Js, "labeled_statement") | (Family::Java, "labeled_statement") | (Family::Go, "labeled_statement") => {}
                    (Family::Rust, "token_tree") => {
                        // A macro's tokens are not parsed as code: `return` and `?` inside one would go unseen.
                        let mut cursor = node.walk();
                        let mut hidden = false;
                        'tokens: loop {
                            let t = cursor.node();
                            if matches!(t.kind(), "?" | "return" | "break" | "continue") || (t.kind() == "identifier" && &src[t.byte_range()] == "return") {
                                hidden = true;
                                break;
                            }
                            if t.kind() != "string_literal" && cursor.goto_first_child() {
                                continue;
                            }
                            loop {
                                if cursor.node().id() == node.id() {
                                    break 'tokens;
                                }
                                if cursor.goto_next_sibling() {
                                    continue 'tokens;
                                }
                                if !cursor.goto_parent() {
                                    break 'tokens;
                                }
                            }
                        }
                        if hidden {
                            flow.forbidden = Some("a macro call in the selection contains `return`, `?`, `break` or `continue`".to_owned());
                        }
                    }
                    _ => {}
                }
            }
            // `this` inside an arrow function is the method's `this`.
            let this_visible = !in_nested_fn || (table.family == Family::Js && !ancestors(node).take_while(|a| a.id() != top.id()).any(|a| table.is(table.function_kinds, a) && a.kind() != "arrow_function"));
            if this_visible {
                match (table.family, kind) {
                    (Family::Js, "this" | "super") => flow.uses_this = true,
                    (Family::Rust, "self") => flow.uses_self = true,
                    _ => {}
                }
            }
            if table.family == Family::Rust && (kind == "type_identifier" || kind == "identifier") && &src[node.byte_range()] == "Self" {
                flow.uses_big_self = true;
            }
            if table.family == Family::Java && matches!(kind, "this" | "super") {
                flow.uses_this = true;
            }
            let mut cursor = node.walk();
            let children: Vec<Node> = node.children(&mut cursor).collect();
            for child in children.into_iter().rev() {
                stack.push((child, nested_fn));
            }
        }
    }
    // Does every path end in `return`? Only when the last statement is one.
    if let Some(last) = selected.nodes.last() {
        let last = *last;
        let is_return = table.is(table.return_kinds, last)
            || (last.kind() == "expression_statement" && last.named_child(0).is_some_and(|c| table.is(table.return_kinds, c)));
        flow.ends_with_return = is_return;
    }
    Ok(flow)
}

/// The loop (or switch) a `break`/`continue` jumps out of, `None` when it leaves the function.
fn break_target<'t>(table: &Table, src: &str, node: Node<'t>, is_continue: bool) -> Option<Node<'t>> {
    let label = {
        let mut c = node.walk();
        let found = node
            .named_children(&mut c)
            .find(|ch| matches!(ch.kind(), "statement_identifier" | "label" | "label_name" | "identifier" | "lifetime"))
            .map(|l| src[l.byte_range()].trim_start_matches('\'').to_owned());
        found
    };
    for a in ancestors(node).skip(1) {
        if table.is(table.function_kinds, a) {
            return None;
        }
        if let Some(label) = &label {
            if a.kind() == "labeled_statement" {
                let lab = a.child(0).map(|l| src[l.byte_range()].to_owned()).unwrap_or_default();
                if &lab == label {
                    return Some(a);
                }
            }
            let mut c = a.walk();
            let has = a.children(&mut c).any(|ch| ch.kind() == "label" && src[ch.byte_range()].trim_start_matches('\'').trim_end_matches(':') == label);
            if has {
                return Some(a);
            }
            continue;
        }
        let kinds = if is_continue { table.loop_kinds } else { table.break_target_kinds };
        if table.is(kinds, a) {
            return Some(a);
        }
    }
    None
}

/// Normalises the selection: trims it, refuses what cannot be extracted, and widens a partial selection of
/// several statements to the statements it touches.
fn select<'t>(table: &Table, src: &str, root: Node<'t>, sel: Range<usize>) -> Result<Selected<'t>, Refusal> {
    let len = src.len();
    let mut s = sel.start.min(len);
    while s > 0 && !src.is_char_boundary(s) {
        s -= 1;
    }
    let mut e = sel.end.min(len).max(s);
    while e < len && !src.is_char_boundary(e) {
        e += 1;
    }
    while s < e && src.as_bytes()[s].is_ascii_whitespace() {
        s += 1;
    }
    while e > s && src.as_bytes()[e - 1].is_ascii_whitespace() {
        e -= 1;
    }
    if s >= e {
        return refuse("the selection is empty: select the statements or the expression to extract");
    }
    let Some(node) = root.descendant_for_byte_range(s, e) else {
        return refuse("the selection is outside the code");
    };
    if ancestors(node).any(|n| table.is(table.comment_kinds, n)) {
        return refuse("the selection is inside a comment");
    }
    // A macro's arguments are tokens, not code the data flow can read, even when they are a whole token tree.
    if table.family == Family::Rust && ancestors(node).any(|n| n.kind() == "token_tree") {
        return refuse("the selection is inside a macro call: select the whole macro call");
    }
    if node.has_error() || ancestors(node).any(|n| n.is_error() || n.is_missing()) {
        return refuse("the code around the selection has syntax errors");
    }
    if let Some(string) = ancestors(node).find(|n| table.is(table.string_kinds, *n) || n.kind() == "string_content") {
        if string.start_byte() != s || string.end_byte() != e {
            if !(string.start_byte() >= s && string.end_byte() <= e) {
                return refuse("the selection is inside a string literal");
            }
        }
    }
    if !node.is_named() && node.start_byte() == s && node.end_byte() == e {
        let text = &src[s..e];
        if text.chars().all(|c| "{}()[];,:".contains(c)) {
            return refuse("the selection is on a brace or a punctuation mark, not on code");
        }
    }

    // An exact expression or an exact statement.
    let mut chain = Vec::new();
    for a in ancestors(node) {
        if a.start_byte() == s && a.end_byte() == e {
            chain.push(a);
        } else if a.start_byte() <= s && a.end_byte() >= e && !chain.is_empty() {
            break;
        }
    }
    // `x = f()` selected without its `;` is that statement.
    if let Some(stmt) = ancestors(node).find(|a| a.parent().is_some_and(|p| table.is(table.container_kinds, p))) {
        let rest = src[e..stmt.end_byte().min(len)].trim();
        if stmt.start_byte() == s && (rest == ";" || rest.is_empty()) && stmt.end_byte() >= e {
            return statements(table, src, stmt.parent().expect("has a container"), s, stmt.end_byte());
        }
    }
    if let Some(stmt) = chain.iter().find(|a| a.parent().is_some_and(|p| table.is(table.container_kinds, p))) {
        let container = stmt.parent().expect("checked");
        return statements(table, src, container, s, e);
    }
    if let Some(expr) = chain.iter().rev().find(|a| table.is_expression(**a)).copied() {
        check_expression_position(table, src, expr)?;
        return Ok(Selected { nodes: vec![expr], replace: s..e, expr_mode: true, rust_tail: false });
    }
    // Statements: the nearest statement list around the selection.
    let Some(container) = ancestors(node).find(|n| table.is(table.container_kinds, *n)) else {
        return refuse("select whole statements or one whole expression");
    };
    statements(table, src, container, s, e)
}

fn check_expression_position(table: &Table, src: &str, expr: Node) -> Result<(), Refusal> {
    let Some(parent) = expr.parent() else { return Ok(()) };
    if table.ident_kinds.contains(&expr.kind()) {
        let (role, _) = super::lang::classify(table, src, expr);
        if !matches!(role, Role::Read) {
            return refuse("the selection is a name being defined or assigned, not a value");
        }
    }
    // Defaults, decorators and annotations run when the function is defined, before the new one exists.
    for a in ancestors(expr).skip(1) {
        if table.is(table.function_kinds, a) || table.is(table.container_kinds, a) {
            break;
        }
        if matches!(a.kind(), "parameters" | "formal_parameters" | "lambda_parameters" | "decorator" | "type_annotation" | "parameter_list" | "type_parameters") {
            return refuse("the selection runs when the function is defined (a default, decorator or annotation), before the new function would exist");
        }
    }
    let pk = parent.kind();
    let is_callee = (matches!(pk, "call" | "call_expression" | "method_invocation") && in_field(parent, "function", expr))
        || (pk == "new_expression" && in_field(parent, "constructor", expr));
    if is_callee {
        return refuse("the selection is the function of a call: select the whole call");
    }
    let lhs = matches!(
        pk,
        "assignment" | "augmented_assignment" | "assignment_expression" | "augmented_assignment_expression" | "compound_assignment_expr" | "assignment_statement"
    ) && in_field(parent, "left", expr);
    if lhs || matches!(pk, "update_expression" | "inc_statement" | "dec_statement") || pk.ends_with("pattern") {
        return refuse("the selection is the target of an assignment, not a value");
    }
    if pk == "expression_list" && parent.parent().is_some_and(|pp| in_field(pp, "left", parent)) {
        return refuse("the selection is the target of an assignment, not a value");
    }
    if pk.contains("type") || pk == "decorator" || pk == "keyword_argument" && in_field(parent, "name", expr) {
        return refuse("the selection is not a value");
    }
    if table.family == Family::Rust && (pk == "token_tree" || ancestors(expr).any(|a| a.kind() == "token_tree")) {
        return refuse("the selection is inside a macro call: select the whole macro call");
    }
    Ok(())
}

fn statements<'t>(table: &Table, src: &str, container: Node<'t>, s: usize, e: usize) -> Result<Selected<'t>, Refusal> {
    let mut cursor = container.walk();
    let children: Vec<Node> = container
        .named_children(&mut cursor)
        .filter(|c| !matches!(c.kind(), "label" | "switch_label"))
        .filter(|c| c.end_byte() > s && c.start_byte() < e)
        .collect();
    if children.is_empty() {
        return refuse("the selection is on a brace or on blank space, not on code");
    }
    let code: Vec<Node> = children.iter().copied().filter(|c| !table.is(table.comment_kinds, *c)).collect();
    if code.is_empty() {
        return refuse("the selection is inside a comment");
    }
    let first = children[0];
    let last = *children.last().expect("non-empty");
    // A selection that starts or ends inside a nested block is a partial block.
    for (edge, node) in [(s, first), (e, last)] {
        if edge > node.start_byte() && edge < node.end_byte() {
            let inner = node.descendant_for_byte_range(edge, edge);
            if let Some(inner) = inner {
                let inside_block = ancestors(inner).take_while(|a| a.id() != node.id()).any(|a| {
                    table.is(table.container_kinds, a)
                        && (if edge == s { a.start_byte() <= edge && edge < a.end_byte() } else { a.start_byte() < edge && edge <= a.end_byte() })
                });
                if inside_block {
                    let shown = if node.kind() == "expression_statement" { node.named_child(0).unwrap_or(node) } else { node };
                    let what = shown.kind().trim_end_matches("_statement").trim_end_matches("_expression").trim_end_matches("_definition").trim_end_matches("_declaration").replace('_', " ");
                    return refuse(format!("the selection starts or ends inside the body of a `{what}`: select whole statements"));
                }
            }
        }
    }
    if children.len() == 1 && s > first.start_byte() {
        return refuse("the selection covers part of a statement: select a whole expression or whole statements");
    }
    for c in &code {
        let k = c.kind();
        if table.is(table.function_kinds, *c)
            || table.is(table.class_kinds, *c)
            || matches!(
                k,
                "decorated_definition" | "class_definition" | "import_statement" | "import_from_statement" | "use_declaration"
                    | "struct_item" | "enum_item" | "impl_item" | "trait_item" | "mod_item" | "import_declaration"
                    | "package_clause" | "type_declaration" | "export_statement" | "interface_declaration" | "function_signature"
                    | "const_item" | "static_item" | "macro_definition" | "type_alias_declaration" | "type_item"
            )
        {
            return refuse("the selection contains a function, class or import definition: select statements inside a body");
        }
        if matches!(k, "else_clause" | "elif_clause" | "except_clause" | "finally_clause" | "case_clause") {
            return refuse("select whole statements");
        }
    }
    let rust_tail = table.family == Family::Rust && container.kind() == "block" && {
        let last_code = *code.last().expect("non-empty");
        let is_last_child = {
            let mut c = container.walk();
            let last_named = container.named_children(&mut c).filter(|n| !table.is(table.comment_kinds, *n)).last();
            last_named.is_some_and(|n| n.id() == last_code.id())
        };
        is_last_child && !matches!(last_code.kind(), "expression_statement" | "let_declaration" | "empty_statement")
            && !src[last_code.end_byte()..].trim_start().starts_with(';')
    };
    Ok(Selected { nodes: code, replace: first.start_byte()..last.end_byte(), expr_mode: false, rust_tail })
}

/// Copies the generic parameters (and `where` predicates) of the enclosing function that the new one uses.
fn copy_generics(
    table: &Table,
    src: &str,
    func: Option<Node>,
    params: &[Param],
    rets: &[Ret],
    tail: &Tail,
    body: &str,
) -> (String, String) {
    let Some(f) = func else { return (String::new(), String::new()) };
    let Some(tp) = f.child_by_field_name("type_parameters") else { return (String::new(), String::new()) };
    let mut used_text = String::new();
    for p in params {
        used_text.push_str(p.ty.as_deref().unwrap_or(""));
        used_text.push(' ');
    }
    for r in rets {
        used_text.push_str(r.ty.as_deref().unwrap_or(""));
        used_text.push(' ');
    }
    if let Tail::Value { ty: Some(t) } | Tail::ReturnsFromFn { ty: Some(t) } = tail {
        used_text.push_str(t);
    }
    used_text.push_str(body);
    let words: HashSet<&str> = used_text
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '\''))
        .filter(|w| !w.is_empty())
        .collect();
    let mut cursor = tp.walk();
    let mut kept = Vec::new();
    let mut kept_names = Vec::new();
    for p in tp.named_children(&mut cursor) {
        let text = src[p.byte_range()].trim();
        let name = text
            .trim_start_matches("const ")
            .split(|c: char| c == ':' || c == ' ' || c == '=' || c == ',')
            .next()
            .unwrap_or("")
            .trim();
        if !name.is_empty() && words.contains(name) {
            kept.push(text.to_owned());
            kept_names.push(name.to_owned());
        }
    }
    if kept.is_empty() {
        return (String::new(), String::new());
    }
    let (open, close) = if table.family == Family::Go { ("[", "]") } else { ("<", ">") };
    let generics = format!("{open}{}{close}", kept.join(", "));
    let mut where_clause = String::new();
    if table.family == Family::Rust {
        let mut c = f.walk();
        let where_node = f.children(&mut c).find(|n| n.kind() == "where_clause");
        if let Some(w) = where_node {
            let mut wc = w.walk();
            let preds: Vec<String> = w
                .named_children(&mut wc)
                .filter(|p| p.kind() == "where_predicate")
                .filter(|p| {
                    p.child_by_field_name("left")
                        .is_some_and(|l| kept_names.iter().any(|k| k == src[l.byte_range()].trim()))
                })
                .map(|p| src[p.byte_range()].to_owned())
                .collect();
            if !preds.is_empty() {
                where_clause = format!(" where {}", preds.join(", "));
            }
        }
    }
    (generics, where_clause)
}
