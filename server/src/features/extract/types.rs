//! A small, conservative type inference for the typed languages (Rust, Go, Java, TypeScript): the new function's
//! parameters and results need written types, and tree-sitter knows none.
//!
//! Sources, in order: a written annotation, the initializer (literals, constructors, calls of functions declared
//! in the same file, arithmetic and comparisons over known types), the collection a loop iterates. Anything else is
//! `None`, and the caller refuses the extraction rather than guessing a type that may not compile.

use std::cell::Cell;

use tree_sitter::Node;

use super::lang::{Family, Table};
use super::scope::Index;

pub(crate) struct TypeCx<'a, 't> {
    table: &'a Table,
    src: &'t str,
    root: Node<'t>,
    index: &'a Index<'t>,
    depth: Cell<u32>,
}

impl<'a, 't> TypeCx<'a, 't> {
    pub fn new(table: &'a Table, src: &'t str, root: Node<'t>, index: &'a Index<'t>) -> Self {
        TypeCx { table, src, root, index, depth: Cell::new(0) }
    }

    fn text(&self, n: Node) -> String {
        self.src[n.byte_range()].trim().to_owned()
    }

    /// The type of a variable, from its declaration.
    pub fn var_type(&self, var: usize) -> Option<String> {
        if self.depth.get() > 16 {
            return None;
        }
        self.depth.set(self.depth.get() + 1);
        let res = self.var_type_inner(var);
        self.depth.set(self.depth.get() - 1);
        res
    }

    fn var_type_inner(&self, var: usize) -> Option<String> {
        let v = &self.index.vars[var];
        let decl = v.decl;
        let ctx = v.decl_ctx?;
        match self.table.family {
            Family::Rust => self.rust_var(decl, ctx),
            Family::Go => self.go_var(decl, ctx),
            Family::Java => self.java_var(ctx),
            Family::Js => self.ts_var(decl, ctx),
            Family::Python => None,
        }
    }

    fn rust_var(&self, decl: Node, ctx: Node) -> Option<String> {
        // Only a plain `x` or `mut x` binding has the whole declared type.
        let pattern = ctx.child_by_field_name("pattern");
        let plain = pattern.is_some_and(|p| p.id() == decl.id() || (p.kind() == "mut_pattern" && p.named_child(0).is_some_and(|c| c.id() == decl.id())));
        if ctx.kind() == "let_declaration" && pattern.is_some_and(|p| p.kind() == "tuple_pattern") {
            // `let (a, b) = f();`: the matching element of the tuple type.
            let pattern = pattern?;
            let mut c = pattern.walk();
            let elems: Vec<Node> = pattern.named_children(&mut c).collect();
            let pos = elems.iter().position(|e| e.id() == decl.id() || (e.kind() == "mut_pattern" && e.named_child(0).is_some_and(|i| i.id() == decl.id())))?;
            let tuple = ctx
                .child_by_field_name("type")
                .map(|t| self.text(t))
                .or_else(|| ctx.child_by_field_name("value").and_then(|v| self.expr_type(v)))?;
            let parts = split_top_level(tuple.trim().strip_prefix('(')?.strip_suffix(')')?);
            return (parts.len() == elems.len()).then(|| parts[pos].clone());
        }
        match ctx.kind() {
            "let_declaration" if plain => ctx
                .child_by_field_name("type")
                .map(|t| self.text(t))
                .or_else(|| ctx.child_by_field_name("value").and_then(|v| self.expr_type(v))),
            "parameter" if plain => ctx.child_by_field_name("type").map(|t| self.text(t)),
            "for_expression" if plain => {
                let value = ctx.child_by_field_name("value")?;
                self.rust_item_type(value)
            }
            _ => None,
        }
    }

    /// The item type of what a Rust `for` loop iterates.
    fn rust_item_type(&self, value: Node) -> Option<String> {
        match value.kind() {
            "range_expression" => {
                let mut c = value.walk();
                let parts: Vec<Node> = value.named_children(&mut c).collect();
                let typed = parts.iter().filter_map(|p| self.expr_type(*p)).find(|t| t != "i32");
                typed.or_else(|| parts.first().and_then(|p| self.expr_type(*p)))
            }
            "reference_expression" => {
                let inner = value.child_by_field_name("value")?;
                let coll = self.expr_type(inner)?;
                let mutable = self.text(value).starts_with("&mut");
                element_of(&coll).map(|e| format!("{}{e}", if mutable { "&mut " } else { "&" }))
            }
            "call_expression" => {
                let f = value.child_by_field_name("function")?;
                if f.kind() == "field_expression" {
                    let method = f.child_by_field_name("field").map(|n| self.text(n))?;
                    let recv = f.child_by_field_name("value")?;
                    let coll = self.expr_type(recv)?;
                    match method.as_str() {
                        "iter" => element_of(&coll).map(|e| format!("&{e}")),
                        "iter_mut" => element_of(&coll).map(|e| format!("&mut {e}")),
                        "into_iter" => element_of(&coll),
                        "chars" => Some("char".to_owned()),
                        "bytes" => Some("u8".to_owned()),
                        _ => None,
                    }
                } else {
                    None
                }
            }
            _ => {
                let coll = self.expr_type(value)?;
                if let Some(inner) = coll.strip_prefix('&') {
                    let inner = inner.trim_start_matches("mut ");
                    element_of(inner).map(|e| format!("&{e}"))
                } else {
                    element_of(&coll)
                }
            }
        }
    }

    fn go_var(&self, decl: Node, ctx: Node) -> Option<String> {
        match ctx.kind() {
            "var_spec" | "const_spec" => ctx.child_by_field_name("type").map(|t| self.text(t)).or_else(|| {
                let names = fields(ctx, "name");
                let pos = names.iter().position(|n| n.id() == decl.id())?;
                let value = ctx.child_by_field_name("value")?;
                let mut c = value.walk();
                let values: Vec<Node> = value.named_children(&mut c).collect();
                values.get(pos).and_then(|v| self.expr_type(*v))
            }),
            "parameter_declaration" => ctx.child_by_field_name("type").map(|t| self.text(t)),
            "variadic_parameter_declaration" => ctx.child_by_field_name("type").map(|t| format!("[]{}", self.text(t))),
            "short_var_declaration" => {
                let left = ctx.child_by_field_name("left")?;
                let right = ctx.child_by_field_name("right")?;
                let mut c = left.walk();
                let lefts: Vec<Node> = left.named_children(&mut c).collect();
                let pos = lefts.iter().position(|n| n.id() == decl.id())?;
                let mut c = right.walk();
                let rights: Vec<Node> = right.named_children(&mut c).collect();
                if rights.len() == lefts.len() {
                    self.expr_type(rights[pos])
                } else if rights.len() == 1 && rights[0].kind() == "call_expression" {
                    // `a, b := f()`: the results of a function declared in the file.
                    let f = rights[0].child_by_field_name("function")?;
                    let name = match f.kind() {
                        "selector_expression" => self.text(f.child_by_field_name("field")?),
                        _ => self.text(f),
                    };
                    let raw = self.declared_fn_result_raw(&name)?;
                    let parts = split_top_level(raw.trim().strip_prefix('(')?.strip_suffix(')')?);
                    (parts.len() == lefts.len()).then(|| parts[pos].clone()).filter(|t| !t.contains(' '))
                } else {
                    None
                }
            }
            "range_clause" => {
                let left = ctx.child_by_field_name("left")?;
                let mut c = left.walk();
                let lefts: Vec<Node> = left.named_children(&mut c).collect();
                let pos = lefts.iter().position(|n| n.id() == decl.id())?;
                let right = ctx.child_by_field_name("right")?;
                let coll = self.expr_type(right)?;
                if let Some(rest) = coll.strip_prefix("map[") {
                    let close = matching_bracket(rest)?;
                    return Some(if pos == 0 { rest[..close].to_owned() } else { rest[close + 1..].to_owned() });
                }
                if pos == 0 {
                    return Some("int".to_owned());
                }
                if coll == "string" {
                    return Some("rune".to_owned());
                }
                go_element(&coll)
            }
            _ => None,
        }
    }

    fn java_var(&self, ctx: Node) -> Option<String> {
        match ctx.kind() {
            "variable_declarator" => {
                let decl = ctx.parent()?;
                let ty = decl.child_by_field_name("type").map(|t| self.text(t))?;
                if ty == "var" {
                    ctx.child_by_field_name("value").and_then(|v| self.expr_type(v))
                } else {
                    Some(ty + &ctx.child_by_field_name("dimensions").map(|d| self.text(d)).unwrap_or_default())
                }
            }
            "formal_parameter" | "enhanced_for_statement" => {
                let ty = ctx.child_by_field_name("type").map(|t| self.text(t))?;
                if ty == "var" {
                    return None;
                }
                Some(ty + &ctx.child_by_field_name("dimensions").map(|d| self.text(d)).unwrap_or_default())
            }
            "spread_parameter" => {
                let mut c = ctx.walk();
                let ty = ctx.named_children(&mut c).find(|n| n.kind() != "modifiers" && n.kind() != "variable_declarator")?;
                Some(format!("{}[]", self.text(ty)))
            }
            "catch_formal_parameter" => {
                let mut c = ctx.walk();
                let ty = ctx.named_children(&mut c).find(|n| n.kind() == "catch_type")?;
                let t = self.text(ty);
                if t.contains('|') {
                    Some("Exception".to_owned())
                } else {
                    Some(t)
                }
            }
            _ => None,
        }
    }

    fn ts_var(&self, decl: Node, ctx: Node) -> Option<String> {
        let annotation = |n: Node| n.child_by_field_name("type").map(|t| self.text(t).trim_start_matches(':').trim().to_owned());
        match ctx.kind() {
            "variable_declarator" if ctx.child_by_field_name("name").is_some_and(|n| n.id() == decl.id()) => {
                annotation(ctx).or_else(|| ctx.child_by_field_name("value").and_then(|v| self.expr_type(v)).map(|t| widen_ts(&t)))
            }
            "required_parameter" => annotation(ctx),
            "optional_parameter" => annotation(ctx).map(|t| format!("{t} | undefined")),
            "for_in_statement" => {
                let right = ctx.child_by_field_name("right")?;
                let is_of = ctx.child_by_field_name("operator").is_some_and(|o| self.text(o) == "of");
                if !is_of {
                    return Some("string".to_owned());
                }
                let coll = self.expr_type(right)?;
                coll.strip_suffix("[]").map(|s| s.to_owned()).or_else(|| {
                    coll.strip_prefix("Array<").and_then(|s| s.strip_suffix('>')).map(|s| s.to_owned())
                })
            }
            _ => None,
        }
    }

    /// The type of an expression, when it is evident from the expression alone.
    pub fn expr_type(&self, e: Node) -> Option<String> {
        if self.depth.get() > 16 {
            return None;
        }
        self.depth.set(self.depth.get() + 1);
        let res = match self.table.family {
            Family::Rust => self.rust_expr(e),
            Family::Go => self.go_expr(e),
            Family::Java => self.java_expr(e),
            Family::Js => self.ts_expr(e),
            Family::Python => None,
        };
        self.depth.set(self.depth.get() - 1);
        res
    }

    fn ident_type(&self, e: Node) -> Option<String> {
        let occ = self.index.occs.iter().find(|o| o.node.id() == e.id())?;
        self.var_type(occ.var?)
    }

    fn rust_expr(&self, e: Node) -> Option<String> {
        let t = self.text(e);
        match e.kind() {
            "integer_literal" => Some(literal_suffix(&t, &["i8", "i16", "i32", "i64", "i128", "isize", "u8", "u16", "u32", "u64", "u128", "usize"]).unwrap_or("i32").to_owned()),
            "float_literal" => Some(literal_suffix(&t, &["f32", "f64"]).unwrap_or("f64").to_owned()),
            "string_literal" | "raw_string_literal" => Some("&'static str".to_owned()),
            "boolean_literal" => Some("bool".to_owned()),
            "char_literal" => Some("char".to_owned()),
            "identifier" => self.ident_type(e),
            "parenthesized_expression" => e.named_child(0).and_then(|c| self.expr_type(c)),
            "type_cast_expression" => e.child_by_field_name("type").map(|n| self.text(n)),
            "unary_expression" => {
                let inner = e.named_child(0)?;
                let ty = self.expr_type(inner)?;
                if t.starts_with('!') || t.starts_with('-') {
                    Some(ty)
                } else if t.starts_with('*') {
                    ty.strip_prefix("&mut ").or_else(|| ty.strip_prefix('&')).map(|s| s.to_owned())
                } else {
                    None
                }
            }
            "reference_expression" => {
                let inner = e.child_by_field_name("value")?;
                let ty = self.expr_type(inner)?;
                Some(if t.starts_with("&mut") { format!("&mut {ty}") } else { format!("&{ty}") })
            }
            "binary_expression" => {
                let op = e.child_by_field_name("operator").map(|o| self.text(o)).unwrap_or_default();
                if matches!(op.as_str(), "==" | "!=" | "<" | ">" | "<=" | ">=" | "&&" | "||") {
                    return Some("bool".to_owned());
                }
                let l = e.child_by_field_name("left").and_then(|n| self.expr_type(n));
                let r = e.child_by_field_name("right").and_then(|n| self.expr_type(n));
                let strip = |t: String| t.trim_start_matches('&').to_owned();
                match (l, r) {
                    (Some(l), _) if l == "String" => Some(l),
                    (Some(l), Some(r)) if strip(l.clone()) == strip(r.clone()) => Some(strip(l)),
                    (Some(l), Some(r)) if r == "i32" && is_rust_number(&strip(l.clone())) && matches!(op.as_str(), "+" | "-" | "*" | "/" | "%") => Some(strip(l)),
                    (Some(l), Some(r)) if l == "i32" && is_rust_number(&strip(r.clone())) => Some(strip(r)),
                    (Some(l), None) if matches!(op.as_str(), "<<" | ">>") => Some(strip(l)),
                    _ => None,
                }
            }
            "macro_invocation" => {
                let name = e.child_by_field_name("macro").map(|n| self.text(n)).unwrap_or_default();
                match name.as_str() {
                    "format" => Some("String".to_owned()),
                    "vec" => {
                        let tt = e.named_children(&mut e.walk()).find(|n| n.kind() == "token_tree")?;
                        let first = tt.named_child(0)?;
                        let elem = self.expr_type(first)?;
                        Some(format!("Vec<{elem}>"))
                    }
                    _ => None,
                }
            }
            "struct_expression" => e.child_by_field_name("name").map(|n| self.text(n)).filter(|n| !n.contains('<')),
            "array_expression" => {
                let mut c = e.walk();
                let items: Vec<Node> = e.named_children(&mut c).collect();
                let elem = self.expr_type(*items.first()?)?;
                Some(format!("[{elem}; {}]", items.len()))
            }
            "tuple_expression" => {
                let mut c = e.walk();
                let items: Vec<Node> = e.named_children(&mut c).collect();
                let tys: Option<Vec<String>> = items.iter().map(|i| self.expr_type(*i)).collect();
                Some(format!("({})", tys?.join(", ")))
            }
            "index_expression" => {
                let coll = self.expr_type(e.named_child(0)?)?;
                element_of(coll.trim_start_matches('&').trim_start_matches("mut "))
            }
            "call_expression" => {
                let f = e.child_by_field_name("function")?;
                match f.kind() {
                    "identifier" => self.declared_fn_return(&self.text(f)),
                    "scoped_identifier" => {
                        let path = self.text(f);
                        if path == "String::from" || path == "String::new" || path == "String::with_capacity" {
                            return Some("String".to_owned());
                        }
                        let (ty, func) = path.rsplit_once("::")?;
                        if self.is_plain_struct(ty) && (func == "new" || func.starts_with("from") || func == "default") {
                            return Some(ty.to_owned());
                        }
                        None
                    }
                    "field_expression" => {
                        let method = f.child_by_field_name("field").map(|n| self.text(n))?;
                        let recv = f.child_by_field_name("value")?;
                        match method.as_str() {
                            "len" | "count" => Some("usize".to_owned()),
                            "to_string" | "to_owned" | "to_uppercase" | "to_lowercase" | "repeat" | "join" if method != "to_owned" || self.expr_type(recv).as_deref() == Some("&str") || self.expr_type(recv).as_deref() == Some("String") => {
                                Some("String".to_owned())
                            }
                            "clone" => self.expr_type(recv).map(|t| t.trim_start_matches('&').to_owned()),
                            "is_empty" | "contains" | "starts_with" | "ends_with" | "is_some" | "is_none" | "is_ok" | "is_err" | "any" | "all" => Some("bool".to_owned()),
                            "abs" | "pow" | "min" | "max" | "sqrt" | "powi" | "powf" | "wrapping_add" | "saturating_sub" => self.expr_type(recv).map(|t| t.trim_start_matches('&').to_owned()),
                            // A method declared in the file (first match by name).
                            _ => self.declared_fn_return(&method),
                        }
                    }
                    "generic_function" => {
                        // `iter().sum::<i64>()`, `collect::<Vec<_>>()`.
                        let args = f.child_by_field_name("type_arguments")?;
                        let t = self.text(args);
                        let inner = t.strip_prefix('<')?.strip_suffix('>')?.to_owned();
                        if inner.contains('_') {
                            None
                        } else {
                            Some(inner)
                        }
                    }
                    _ => None,
                }
            }
            "match_expression" => {
                // The type of the first arm that says it.
                let body = e.child_by_field_name("body")?;
                let mut c = body.walk();
                let arms: Vec<Node> = body.named_children(&mut c).filter(|a| a.kind() == "match_arm").collect();
                arms.iter().find_map(|a| a.child_by_field_name("value").and_then(|v| self.expr_type(v)))
            }
            "block" => {
                let mut c = e.walk();
                let last = e.named_children(&mut c).last()?;
                if last.kind().ends_with("_statement") || last.kind() == "let_declaration" {
                    return None;
                }
                self.expr_type(last)
            }
            "await_expression" => e.named_child(0).and_then(|c| self.expr_type(c)),
            "field_expression" => {
                let value = e.child_by_field_name("value")?;
                let field = e.child_by_field_name("field").map(|f| self.text(f))?;
                let owner = if value.kind() == "self" {
                    let imp = std::iter::successors(Some(e), |n| n.parent()).find(|n| n.kind() == "impl_item")?;
                    imp.child_by_field_name("type").map(|t| self.text(t))?
                } else {
                    self.expr_type(value)?.trim_start_matches('&').trim_start_matches("mut ").to_owned()
                };
                self.struct_field_type(&owner, &field)
            }
            "if_expression" => {
                let cons = e.child_by_field_name("consequence")?;
                let last = cons.named_children(&mut cons.walk()).last()?;
                self.expr_type(last)
            }
            _ => None,
        }
    }

    /// The declared type of a named field of a struct defined at the top of the file.
    fn struct_field_type(&self, owner: &str, field: &str) -> Option<String> {
        let mut c = self.root.walk();
        let item = self.root.named_children(&mut c).find(|n| {
            n.kind() == "struct_item"
                && n.child_by_field_name("name").is_some_and(|nm| self.text(nm) == owner)
                && n.child_by_field_name("type_parameters").is_none()
        })?;
        let body = item.child_by_field_name("body")?;
        let mut c = body.walk();
        let found = body
            .named_children(&mut c)
            .filter(|f| f.kind() == "field_declaration")
            .find(|f| f.child_by_field_name("name").is_some_and(|n| self.text(n) == field))
            .and_then(|f| f.child_by_field_name("type"))
            .map(|t| self.text(t));
        found
    }

    /// The declared type of a field of a Go struct type declared in the file.
    fn go_field_type(&self, owner: &str, field: &str) -> Option<String> {
        let mut c = self.root.walk();
        for decl in self.root.named_children(&mut c).filter(|n| n.kind() == "type_declaration") {
            let mut dc = decl.walk();
            for spec in decl.named_children(&mut dc).filter(|n| n.kind() == "type_spec") {
                if spec.child_by_field_name("name").is_none_or(|n| self.text(n) != owner) {
                    continue;
                }
                let ty = spec.child_by_field_name("type")?;
                let list = ty.named_children(&mut ty.walk()).find(|n| n.kind() == "field_declaration_list")?;
                let mut lc = list.walk();
                for fd in list.named_children(&mut lc).filter(|n| n.kind() == "field_declaration") {
                    let mut fc = fd.walk();
                    if fd.children_by_field_name("name", &mut fc).any(|n| self.text(n) == field) {
                        return fd.child_by_field_name("type").map(|t| self.text(t));
                    }
                }
            }
        }
        None
    }

    fn is_plain_struct(&self, name: &str) -> bool {
        let mut c = self.root.walk();
        let found = self.root.named_children(&mut c).any(|n| {
            matches!(n.kind(), "struct_item" | "enum_item")
                && n.child_by_field_name("name").is_some_and(|nm| self.text(nm) == name)
                && n.child_by_field_name("type_parameters").is_none()
        });
        found
    }

    /// The result text of a function or method declared in the file, whatever its shape.
    fn declared_fn_result_raw(&self, name: &str) -> Option<String> {
        let mut stack = vec![self.root];
        while let Some(n) = stack.pop() {
            let mut c = n.walk();
            for ch in n.named_children(&mut c) {
                if matches!(ch.kind(), "function_item" | "function_declaration" | "method_declaration")
                    && ch.child_by_field_name("name").is_some_and(|nm| self.text(nm) == name)
                    && ch.child_by_field_name("type_parameters").is_none()
                {
                    let field = if self.table.family == Family::Go { "result" } else { "return_type" };
                    return ch.child_by_field_name(field).map(|t| self.text(t));
                }
                if matches!(ch.kind(), "declaration_list" | "impl_item") {
                    stack.push(ch);
                }
            }
        }
        None
    }

    /// The return type of a function of that name declared at the top of the file (no generics).
    fn declared_fn_return(&self, name: &str) -> Option<String> {
        let mut stack = vec![self.root];
        while let Some(n) = stack.pop() {
            let mut c = n.walk();
            for ch in n.named_children(&mut c) {
                let is_fn = matches!(ch.kind(), "function_item" | "function_declaration" | "method_declaration");
                if is_fn && ch.child_by_field_name("name").is_some_and(|nm| self.text(nm) == name) {
                    if ch.child_by_field_name("type_parameters").is_some() {
                        return None;
                    }
                    let field = match self.table.family {
                        Family::Rust | Family::Js => "return_type",
                        Family::Go => "result",
                        Family::Java => "type",
                        Family::Python => "return_type",
                    };
                    let ret = ch.child_by_field_name(field).map(|t| self.text(t).trim_start_matches(':').trim().to_owned());
                    if self.table.family == Family::Go && ret.as_deref().is_some_and(|r| r.starts_with('(')) {
                        return None;
                    }
                    return ret;
                }
                if matches!(ch.kind(), "class_declaration" | "class_body" | "declaration_list" | "impl_item" | "program" | "export_statement") {
                    stack.push(ch);
                }
            }
        }
        None
    }

    fn go_expr(&self, e: Node) -> Option<String> {
        let t = self.text(e);
        match e.kind() {
            "int_literal" => Some("int".to_owned()),
            "float_literal" => Some("float64".to_owned()),
            "interpreted_string_literal" | "raw_string_literal" => Some("string".to_owned()),
            "rune_literal" => Some("rune".to_owned()),
            "true" | "false" => Some("bool".to_owned()),
            "identifier" => self.ident_type(e),
            "parenthesized_expression" => e.named_child(0).and_then(|c| self.expr_type(c)),
            "composite_literal" => e.child_by_field_name("type").map(|n| self.text(n)),
            "unary_expression" => {
                let op = e.child_by_field_name("operator").map(|o| self.text(o)).unwrap_or_default();
                let inner = e.child_by_field_name("operand")?;
                match op.as_str() {
                    "&" => self.expr_type(inner).map(|t| format!("*{t}")),
                    "!" => Some("bool".to_owned()),
                    "-" | "+" | "^" => self.expr_type(inner),
                    _ => None,
                }
            }
            "binary_expression" => {
                let op = e.child_by_field_name("operator").map(|o| self.text(o)).unwrap_or_default();
                if matches!(op.as_str(), "==" | "!=" | "<" | ">" | "<=" | ">=" | "&&" | "||") {
                    return Some("bool".to_owned());
                }
                let l = e.child_by_field_name("left").and_then(|n| self.expr_type(n));
                let r = e.child_by_field_name("right").and_then(|n| self.expr_type(n));
                match (l, r) {
                    (Some(l), Some(r)) if l == r => Some(l),
                    (Some(l), Some(r)) if r == "int" && e.child_by_field_name("right").is_some_and(|n| n.kind() == "int_literal") => Some(l),
                    (Some(l), Some(r)) if l == "int" && e.child_by_field_name("left").is_some_and(|n| n.kind() == "int_literal") => Some(r),
                    (Some(l), None) if matches!(op.as_str(), "<<" | ">>") => Some(l),
                    _ => None,
                }
            }
            "index_expression" => {
                let coll = self.expr_type(e.child_by_field_name("operand")?)?;
                if let Some(rest) = coll.strip_prefix("map[") {
                    let close = matching_bracket(rest)?;
                    return Some(rest[close + 1..].to_owned());
                }
                if coll == "string" {
                    return Some("byte".to_owned());
                }
                go_element(&coll)
            }
            "slice_expression" => self.expr_type(e.child_by_field_name("operand")?),
            "selector_expression" => {
                let owner = self.expr_type(e.child_by_field_name("operand")?)?;
                let field = e.child_by_field_name("field").map(|f| self.text(f))?;
                self.go_field_type(owner.trim_start_matches('*'), &field)
            }
            "call_expression" => {
                let f = e.child_by_field_name("function")?;
                let fname = self.text(f);
                let args = e.child_by_field_name("arguments");
                let first_arg = args.and_then(|a| a.named_child(0));
                match fname.as_str() {
                    "len" | "cap" => Some("int".to_owned()),
                    "make" | "new" => {
                        let ty = first_arg.map(|a| self.text(a))?;
                        Some(if fname == "new" { format!("*{ty}") } else { ty })
                    }
                    "append" => first_arg.and_then(|a| self.expr_type(a)),
                    "fmt.Sprintf" | "fmt.Sprint" | "fmt.Sprintln" | "strconv.Itoa" | "strings.Join" | "strings.Repeat"
                    | "strings.ToUpper" | "strings.ToLower" | "strings.TrimSpace" | "strings.Title" | "strings.ReplaceAll" => Some("string".to_owned()),
                    "strings.Contains" | "strings.HasPrefix" | "strings.HasSuffix" => Some("bool".to_owned()),
                    "strings.Split" | "strings.Fields" => Some("[]string".to_owned()),
                    "int" | "int64" | "int32" | "float64" | "float32" | "string" | "byte" | "rune" | "uint" | "uint64" | "bool" => Some(fname),
                    _ if f.kind() == "identifier" => self.declared_fn_return(&fname),
                    _ if f.kind() == "selector_expression" && self.expr_type(f.child_by_field_name("operand")?).is_some() => {
                        self.declared_fn_return(&self.text(f.child_by_field_name("field")?))
                    }
                    _ => None,
                }
            }
            _ => {
                let _ = t;
                None
            }
        }
    }

    fn java_expr(&self, e: Node) -> Option<String> {
        let t = self.text(e);
        match e.kind() {
            "decimal_integer_literal" | "hex_integer_literal" | "octal_integer_literal" | "binary_integer_literal" => {
                Some(if t.ends_with('L') || t.ends_with('l') { "long" } else { "int" }.to_owned())
            }
            "decimal_floating_point_literal" => Some(if t.ends_with('f') || t.ends_with('F') { "float" } else { "double" }.to_owned()),
            "string_literal" | "text_block" => Some("String".to_owned()),
            "character_literal" => Some("char".to_owned()),
            "true" | "false" => Some("boolean".to_owned()),
            "identifier" => self.ident_type(e),
            "parenthesized_expression" => e.named_child(0).and_then(|c| self.expr_type(c)),
            "object_creation_expression" => {
                let ty = e.child_by_field_name("type").map(|n| self.text(n))?;
                if ty.ends_with("<>") {
                    None
                } else {
                    Some(ty)
                }
            }
            "cast_expression" => e.child_by_field_name("type").map(|n| self.text(n)),
            "ternary_expression" => e.child_by_field_name("consequence").and_then(|c| self.expr_type(c)),
            "unary_expression" => {
                let op = e.child_by_field_name("operator").map(|o| self.text(o)).unwrap_or_default();
                if op == "!" {
                    Some("boolean".to_owned())
                } else {
                    e.child_by_field_name("operand").and_then(|o| self.expr_type(o))
                }
            }
            "binary_expression" => {
                let op = e.child_by_field_name("operator").map(|o| self.text(o)).unwrap_or_default();
                if matches!(op.as_str(), "==" | "!=" | "<" | ">" | "<=" | ">=" | "&&" | "||" | "instanceof") {
                    return Some("boolean".to_owned());
                }
                let l = e.child_by_field_name("left").and_then(|n| self.expr_type(n));
                let r = e.child_by_field_name("right").and_then(|n| self.expr_type(n));
                if op == "+" && (l.as_deref() == Some("String") || r.as_deref() == Some("String")) {
                    return Some("String".to_owned());
                }
                let rank = |t: &str| ["byte", "short", "char", "int", "long", "float", "double"].iter().position(|x| *x == t);
                if op != "+" && (l.as_deref() == Some("double") || r.as_deref() == Some("double")) {
                    return Some("double".to_owned());
                }
                match (l, r) {
                    (Some(l), Some(r)) => {
                        let (rl, rr) = (rank(&l)?, rank(&r)?);
                        let top = rl.max(rr).max(3);
                        Some(["byte", "short", "char", "int", "long", "float", "double"][top].to_owned())
                    }
                    _ => None,
                }
            }
            "method_invocation" => {
                let name = e.child_by_field_name("name").map(|n| self.text(n)).unwrap_or_default();
                let object = e.child_by_field_name("object").map(|o| self.text(o));
                match (object.as_deref(), name.as_str()) {
                    (Some("String"), "valueOf" | "format" | "join") => Some("String".to_owned()),
                    (Some("Math"), "sqrt" | "pow" | "random") => Some("double".to_owned()),
                    (Some("Integer"), "parseInt") => Some("int".to_owned()),
                    (_, "length" | "size" | "indexOf") => Some("int".to_owned()),
                    (_, "toString" | "toUpperCase" | "toLowerCase" | "trim" | "substring") => Some("String".to_owned()),
                    (_, "isEmpty" | "contains" | "equals" | "startsWith" | "endsWith") => Some("boolean".to_owned()),
                    _ => self.declared_fn_return(&name).filter(|t| t != "void"),
                }
            }
            "array_access" => {
                let coll = self.expr_type(e.child_by_field_name("array")?)?;
                coll.strip_suffix("[]").map(|s| s.to_owned())
            }
            "array_creation_expression" => {
                let ty = e.child_by_field_name("type").map(|n| self.text(n))?;
                let dims = e.children_by_field_name("dimensions", &mut e.walk()).count().max(1);
                Some(format!("{ty}{}", "[]".repeat(dims)))
            }
            "field_access" => {
                let field = e.child_by_field_name("field").map(|n| self.text(n))?;
                let object = e.child_by_field_name("object").map(|o| self.text(o)).unwrap_or_default();
                if object == "Math" && (field == "PI" || field == "E") {
                    Some("double".to_owned())
                } else if field == "length" {
                    Some("int".to_owned())
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    fn ts_expr(&self, e: Node) -> Option<String> {
        if !self.table.typed_params {
            return None;
        }
        match e.kind() {
            "number" => Some("number".to_owned()),
            "string" | "template_string" => Some("string".to_owned()),
            "true" | "false" => Some("boolean".to_owned()),
            "identifier" => self.ident_type(e),
            "parenthesized_expression" => e.named_child(0).and_then(|c| self.expr_type(c)),
            "as_expression" | "satisfies_expression" => e.named_child(1).map(|n| self.text(n)),
            "new_expression" => {
                let ctor = e.child_by_field_name("constructor").map(|n| self.text(n))?;
                if e.child_by_field_name("type_arguments").is_some() || matches!(ctor.as_str(), "Map" | "Set" | "Array" | "Promise") {
                    return None;
                }
                Some(ctor)
            }
            "unary_expression" => {
                let op = e.child_by_field_name("operator").map(|o| self.text(o)).unwrap_or_default();
                match op.as_str() {
                    "!" => Some("boolean".to_owned()),
                    "-" | "+" | "~" => Some("number".to_owned()),
                    "typeof" => Some("string".to_owned()),
                    _ => None,
                }
            }
            "binary_expression" => {
                let op = e.child_by_field_name("operator").map(|o| self.text(o)).unwrap_or_default();
                if matches!(op.as_str(), "==" | "!=" | "===" | "!==" | "<" | ">" | "<=" | ">=" | "instanceof" | "in") {
                    return Some("boolean".to_owned());
                }
                let l = e.child_by_field_name("left").and_then(|n| self.expr_type(n));
                let r = e.child_by_field_name("right").and_then(|n| self.expr_type(n));
                if op == "+" {
                    if l.as_deref() == Some("string") || r.as_deref() == Some("string") {
                        return Some("string".to_owned());
                    }
                    if l.as_deref() == Some("number") && r.as_deref() == Some("number") {
                        return Some("number".to_owned());
                    }
                    return None;
                }
                if matches!(op.as_str(), "-" | "*" | "/" | "%" | "**" | "<<" | ">>" | "&" | "|" | "^") {
                    return Some("number".to_owned());
                }
                if matches!(op.as_str(), "&&" | "||") && l.is_some() && l == r {
                    return l;
                }
                None
            }
            "array" => {
                let first = e.named_child(0)?;
                let elem = self.expr_type(first)?;
                Some(format!("{elem}[]"))
            }
            "member_expression" => {
                let prop = e.child_by_field_name("property").map(|n| self.text(n))?;
                if prop == "length" {
                    Some("number".to_owned())
                } else {
                    None
                }
            }
            "call_expression" => {
                let f = e.child_by_field_name("function")?;
                if f.kind() == "identifier" {
                    let name = self.text(f);
                    return match name.as_str() {
                        "String" => Some("string".to_owned()),
                        "Number" | "parseInt" | "parseFloat" => Some("number".to_owned()),
                        "Boolean" => Some("boolean".to_owned()),
                        _ => self.declared_fn_return(&name),
                    };
                }
                if f.kind() == "member_expression" {
                    let prop = f.child_by_field_name("property").map(|n| self.text(n)).unwrap_or_default();
                    let obj = f.child_by_field_name("object").map(|n| self.text(n)).unwrap_or_default();
                    return match (obj.as_str(), prop.as_str()) {
                        ("Math", _) => Some("number".to_owned()),
                        ("JSON", "stringify") => Some("string".to_owned()),
                        (_, "toString" | "toFixed" | "join" | "toUpperCase" | "toLowerCase" | "trim" | "slice" | "substring") if prop != "slice" => Some("string".to_owned()),
                        (_, "indexOf" | "charCodeAt") => Some("number".to_owned()),
                        (_, "includes" | "startsWith" | "endsWith" | "some" | "every") => Some("boolean".to_owned()),
                        _ => None,
                    };
                }
                None
            }
            _ => None,
        }
    }
}

fn fields<'t>(node: Node<'t>, field: &str) -> Vec<Node<'t>> {
    let mut c = node.walk();
    node.children_by_field_name(field, &mut c).collect()
}

fn literal_suffix<'s>(text: &str, suffixes: &[&'s str]) -> Option<&'s str> {
    suffixes.iter().find(|s| text.ends_with(*s) && !text.starts_with("0x")).copied()
}

fn is_rust_number(t: &str) -> bool {
    matches!(t, "i8" | "i16" | "i32" | "i64" | "i128" | "isize" | "u8" | "u16" | "u32" | "u64" | "u128" | "usize" | "f32" | "f64")
}

/// The element type of a Rust collection type: `Vec<T>`, `[T; N]`, `[T]`, `VecDeque<T>`.
fn element_of(coll: &str) -> Option<String> {
    let coll = coll.trim();
    for prefix in ["Vec<", "VecDeque<", "HashSet<", "BTreeSet<", "Option<"] {
        if let Some(rest) = coll.strip_prefix(prefix) {
            return rest.strip_suffix('>').map(|s| s.trim().to_owned());
        }
    }
    if let Some(rest) = coll.strip_prefix('[') {
        let inner = rest.strip_suffix(']')?;
        let elem = match inner.rfind(';') {
            Some(i) => &inner[..i],
            None => inner,
        };
        return Some(elem.trim().to_owned());
    }
    None
}

fn go_element(coll: &str) -> Option<String> {
    if let Some(rest) = coll.strip_prefix("[]") {
        return Some(rest.to_owned());
    }
    if let Some(rest) = coll.strip_prefix('[') {
        let close = rest.find(']')?;
        return Some(rest[close + 1..].to_owned());
    }
    None
}

/// The index of the `]` that closes a `[` already consumed.
fn matching_bracket(s: &str) -> Option<usize> {
    let mut depth = 1;
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// `const x = 5` has type `5` in TypeScript's eyes only for `const`; a parameter wants the widened `number`.
fn widen_ts(t: &str) -> String {
    t.to_owned()
}

/// Splits `A, B<C, D>, (E, F)` at its top-level commas.
fn split_top_level(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut current = String::new();
    for c in s.chars() {
        match c {
            '<' | '(' | '[' | '{' => depth += 1,
            '>' | ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(current.trim().to_owned());
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.trim().is_empty() {
        parts.push(current.trim().to_owned());
    }
    parts
}
