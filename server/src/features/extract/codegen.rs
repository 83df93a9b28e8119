//! Turns a `Plan` and a name into text edits: the new function (placed, indented, typed) and the call that
//! replaces the selection.

use std::ops::Range;

use super::analysis::{Pass, Plan, Receiver, Tail};
use super::lang::Family;

/// One replacement in byte offsets of the original text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ByteTextEdit {
    pub range: Range<usize>,
    pub new_text: String,
}

pub(crate) fn build(plan: &Plan, src: &str, name: &str) -> Result<Vec<ByteTextEdit>, String> {
    let function = function_text(plan, name)?;
    let call = call_site(plan, name);
    let table = plan.table();
    let top_level = plan.member_indent.is_empty() && matches!(plan.receiver, Receiver::Free);
    let blank = if plan.family == Family::Python && top_level { "\n\n\n" } else { "\n\n" };
    let _ = table;
    let mut edits = Vec::new();
    if plan.insert_before {
        // Keep the blank lines a top-level definition wants before it, too.
        let newlines_before = src[..plan.insert_at].chars().rev().take_while(|c| *c == '\n' || *c == '\r').filter(|c| *c == '\n').count();
        let wanted = blank.len();
        let mut text = if plan.insert_at > 0 && newlines_before < wanted { "\n".repeat(wanted - newlines_before) } else { String::new() };
        text.push_str(&function);
        text.push_str(blank);
        text.push_str(&src[plan.insert_at..plan.replace.start]);
        text.push_str(&call);
        edits.push(ByteTextEdit { range: plan.insert_at..plan.replace.end, new_text: text });
    } else if plan.insert_at == plan.replace.end {
        edits.push(ByteTextEdit { range: plan.replace.clone(), new_text: format!("{call}{blank}{function}") });
    } else {
        edits.push(ByteTextEdit { range: plan.replace.clone(), new_text: call });
        edits.push(ByteTextEdit { range: plan.insert_at..plan.insert_at, new_text: format!("{blank}{function}") });
    }
    Ok(edits)
}

/// Applies non-overlapping edits to `src`.
pub fn apply(src: &str, edits: &[ByteTextEdit]) -> String {
    let mut sorted: Vec<&ByteTextEdit> = edits.iter().collect();
    sorted.sort_by_key(|e| (e.range.start, e.range.end));
    let mut out = String::with_capacity(src.len() + 256);
    let mut pos = 0;
    for e in sorted {
        let start = e.range.start.clamp(pos, src.len());
        out.push_str(&src[pos..start]);
        out.push_str(&e.new_text);
        pos = e.range.end.clamp(start, src.len());
    }
    out.push_str(&src[pos..]);
    out
}

fn end(plan: &Plan) -> &'static str {
    plan.table().stmt_end
}

fn args(plan: &Plan) -> String {
    plan.params
        .iter()
        .map(|p| match p.pass {
            Pass::Ref => format!("&{}", p.name),
            Pass::RefMut => format!("&mut {}", p.name),
            Pass::Value | Pass::MutValue => p.name.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn call_expr(plan: &Plan, name: &str) -> String {
    let args = args(plan);
    let base = match &plan.receiver {
        Receiver::Free | Receiver::JavaMember { .. } => format!("{name}({args})"),
        Receiver::PySelf(s) | Receiver::PyCls(s) => format!("{s}.{name}({args})"),
        Receiver::JsThis { .. } => format!("this.{name}({args})"),
        Receiver::RustSelf(_) => format!("self.{name}({args})"),
        Receiver::RustAssoc => format!("Self::{name}({args})"),
        Receiver::GoRecv { name: recv, .. } => format!("{recv}.{name}({args})"),
    };
    let mut call = base;
    if plan.is_async {
        call = match plan.family {
            Family::Rust => format!("{call}.await"),
            _ => format!("await {call}"),
        };
    }
    if plan.try_wrap.is_some() && !matches!(plan.tail, Tail::ReturnsFromFn { .. }) {
        call.push('?');
    }
    call
}

fn call_site(plan: &Plan, name: &str) -> String {
    let call = call_expr(plan, name);
    if plan.expr_mode {
        return if plan.is_argument_list { format!("({call})") } else { call };
    }
    let end = end(plan);
    match &plan.tail {
        Tail::ReturnsFromFn { .. } => return format!("return {call}{end}"),
        Tail::Value { .. } => return call,
        Tail::None => {}
    }
    let rets = &plan.rets;
    if rets.is_empty() {
        return format!("{call}{end}");
    }
    let sep = format!("\n{}", plan.call_indent);
    let all_inside = rets.iter().all(|r| r.declared_inside);
    let none_inside = rets.iter().all(|r| !r.declared_inside);
    if rets.len() == 1 {
        let r = &rets[0];
        return match plan.family {
            Family::Python => format!("{} = {call}", r.name),
            Family::Js if r.declared_inside => format!("{} {} = {call};", r.decl_kw, r.name),
            Family::Rust if r.declared_inside => {
                format!("let {}{} = {call};", if r.decl_kw == "mut" { "mut " } else { "" }, r.name)
            }
            Family::Go if r.declared_inside => format!("{} := {call}", r.name),
            Family::Java if r.declared_inside => format!("{} {} = {call};", r.decl_kw, r.name),
            _ => format!("{} = {call}{end}", r.name),
        };
    }
    let names: Vec<&str> = rets.iter().map(|r| r.name.as_str()).collect();
    match plan.family {
        Family::Python => format!("{} = {call}", names.join(", ")),
        Family::Js => {
            if all_inside {
                let kw = if rets.iter().all(|r| r.decl_kw == "const") { "const" } else { "let" };
                format!("{kw} [{}] = {call};", names.join(", "))
            } else if none_inside {
                format!("[{}] = {call};", names.join(", "))
            } else {
                let decls: Vec<String> = rets.iter().filter(|r| r.declared_inside).map(|r| format!("let {};", r.name)).collect();
                format!("{}{sep}[{}] = {call};", decls.join(&sep), names.join(", "))
            }
        }
        Family::Rust => {
            if all_inside {
                let pats: Vec<String> =
                    rets.iter().map(|r| format!("{}{}", if r.decl_kw == "mut" { "mut " } else { "" }, r.name)).collect();
                format!("let ({}) = {call};", pats.join(", "))
            } else if none_inside {
                format!("({}) = {call};", names.join(", "))
            } else {
                let decls: Vec<String> = rets
                    .iter()
                    .filter(|r| r.declared_inside)
                    .map(|r| format!("let {}{};", if r.decl_kw == "mut" { "mut " } else { "" }, r.name))
                    .collect();
                format!("{}{sep}({}) = {call};", decls.join(&sep), names.join(", "))
            }
        }
        Family::Go => {
            if all_inside {
                format!("{} := {call}", names.join(", "))
            } else if none_inside {
                format!("{} = {call}", names.join(", "))
            } else {
                let decls: Vec<String> = rets
                    .iter()
                    .filter(|r| r.declared_inside)
                    .map(|r| format!("var {} {}", r.name, r.ty.clone().unwrap_or_default()))
                    .collect();
                format!("{}{sep}{} = {call}", decls.join(&sep), names.join(", "))
            }
        }
        Family::Java => format!("{} = {call};", names.join(", ")),
    }
}

fn param_list(plan: &Plan) -> String {
    let mut parts = Vec::new();
    match &plan.receiver {
        Receiver::PySelf(s) | Receiver::PyCls(s) => parts.push(s.clone()),
        Receiver::RustSelf(text) => parts.push(text.clone()),
        _ => {}
    }
    for p in &plan.params {
        let ty = p.ty.clone().unwrap_or_default();
        let part = match plan.family {
            Family::Python => p.name.clone(),
            Family::Js => {
                if plan.table().typed_params && !ty.is_empty() {
                    format!("{}: {ty}", p.name)
                } else {
                    p.name.clone()
                }
            }
            Family::Rust => {
                format!("{}{}: {ty}", if p.pass == Pass::MutValue { "mut " } else { "" }, p.name)
            }
            Family::Go => format!("{} {ty}", p.name),
            Family::Java => format!("{ty} {}", p.name),
        };
        parts.push(part);
    }
    parts.join(", ")
}

/// The value type the new function produces (before any `Result`/`Option` wrapping), `None` for nothing.
fn value_type(plan: &Plan) -> Option<String> {
    match &plan.tail {
        Tail::Value { ty } => ty.clone().or(Some(String::new())),
        Tail::ReturnsFromFn { ty } => ty.clone(),
        Tail::None => match plan.rets.len() {
            0 => None,
            1 => plan.rets[0].ty.clone().or(Some(String::new())),
            _ => {
                let tys: Vec<String> = plan.rets.iter().map(|r| r.ty.clone().unwrap_or_default()).collect();
                Some(match plan.family {
                    Family::Go => format!("({})", tys.join(", ")),
                    _ => format!("({})", tys.join(", ")),
                })
            }
        },
    }
}

/// Replaces the success type of `Result<T, E>` / `Option<T>` / `io::Result<T>` by `inner`.
fn rewrap(outer: &str, inner: &str) -> String {
    let Some(open) = outer.find('<') else { return format!("{outer}<{inner}>") };
    let head = &outer[..=open];
    let rest = &outer[open + 1..];
    let mut depth = 0;
    for (i, c) in rest.char_indices() {
        match c {
            '<' | '(' | '[' => depth += 1,
            '>' | ')' | ']' if depth > 0 => depth -= 1,
            ',' if depth == 0 => return format!("{head}{inner}{}", &rest[i..]),
            '>' if depth == 0 => return format!("{head}{inner}{}", &rest[i..]),
            _ => {}
        }
    }
    format!("{outer}")
}

fn function_text(plan: &Plan, name: &str) -> Result<String, String> {
    let table = plan.table();
    let unit = &plan.indent_unit;
    let params = param_list(plan);
    let mut lines: Vec<String> = Vec::new();
    let value_ty = value_type(plan);
    let is_returns_from_fn = matches!(plan.tail, Tail::ReturnsFromFn { .. });
    let header = match plan.family {
        Family::Python => {
            let mut h = String::new();
            if matches!(plan.receiver, Receiver::PyCls(_)) {
                lines.push("@classmethod".to_owned());
            }
            if plan.is_async {
                h.push_str("async ");
            }
            h.push_str(&format!("def {name}({params}):"));
            h
        }
        Family::Js => {
            let asyncs = if plan.is_async { "async " } else { "" };
            // TypeScript infers the rest; a selection that returns for its caller returns the caller's type
            // (a tuple literal would otherwise widen to an array).
            let ret = match &plan.tail {
                Tail::ReturnsFromFn { ty: Some(t) } if table.typed_params => format!(": {t}"),
                _ => String::new(),
            };
            match plan.receiver {
                Receiver::JsThis { is_static } => {
                    format!("{}{asyncs}{name}({params}){ret} {{", if is_static { "static " } else { "" })
                }
                _ => format!("{asyncs}function {name}{}({params}){ret} {{", plan.generics),
            }
        }
        Family::Rust => {
            let asyncs = if plan.is_async { "async " } else { "" };
            let ret = match (&plan.try_wrap, &value_ty) {
                (Some((_, outer)), _) if is_returns_from_fn => format!(" -> {outer}"),
                (Some((_, outer)), Some(t)) if !t.is_empty() => format!(" -> {}", rewrap(outer, t)),
                (Some((_, outer)), _) => format!(" -> {}", rewrap(outer, "()")),
                (None, Some(t)) if t.is_empty() || t == "()" => String::new(),
                (None, Some(t)) => format!(" -> {t}"),
                (None, None) => String::new(),
            };
            format!("{asyncs}fn {name}{}({params}){ret}{} {{", plan.generics, plan.where_clause)
        }
        Family::Go => {
            let recv = match &plan.receiver {
                Receiver::GoRecv { text, .. } => format!("{text} "),
                _ => String::new(),
            };
            let ret = match &value_ty {
                Some(t) if !t.is_empty() => format!(" {t}"),
                _ => String::new(),
            };
            format!("func {recv}{name}{}({params}){ret} {{", plan.generics)
        }
        Family::Java => {
            let is_static = matches!(plan.receiver, Receiver::JavaMember { is_static: true });
            let ret = match &value_ty {
                Some(t) if !t.is_empty() => t.clone(),
                _ => "void".to_owned(),
            };
            let generics = if plan.generics.is_empty() { String::new() } else { format!("{} ", plan.generics) };
            format!("private {}{generics}{ret} {name}({params}) {{", if is_static { "static " } else { "" })
        }
    };
    lines.push(header);
    let body_indent = unit.clone();
    if plan.family == Family::Python && !plan.globals.is_empty() {
        lines.push(format!("{body_indent}global {}", plan.globals.join(", ")));
    }
    for d in &plan.local_decls {
        let line = match plan.family {
            Family::Python => continue,
            Family::Js => match (&d.ty, table.typed_params) {
                (Some(t), true) => format!("let {}: {t};", d.name),
                _ => format!("let {};", d.name),
            },
            Family::Rust => format!("let {}{};", if d.mutable { "mut " } else { "" }, d.name),
            Family::Go => format!("var {} {}", d.name, d.ty.clone().unwrap_or_default()),
            Family::Java => format!("{} {};", d.ty.clone().unwrap_or_default(), d.name),
        };
        lines.push(format!("{body_indent}{line}"));
    }
    let wrap_ok = |value: &str| -> String {
        match &plan.try_wrap {
            Some((ok, _)) if !is_returns_from_fn => format!("{ok}({value})"),
            _ => value.to_owned(),
        }
    };
    if plan.expr_mode {
        let mut body: Vec<String> = plan.body_lines.clone();
        let first = body.first().cloned().unwrap_or_default();
        match plan.family {
            Family::Rust => {
                if plan.try_wrap.is_some() {
                    body[0] = format!("{}(", plan.try_wrap.as_ref().map(|t| t.0.as_str()).unwrap_or("Ok"));
                    body.insert(1, format!("{unit}{first}"));
                    let n = body.len();
                    for line in body.iter_mut().skip(2).take(n.saturating_sub(2)) {
                        if !line.is_empty() {
                            *line = format!("{unit}{line}");
                        }
                    }
                    body.push(")".to_owned());
                }
            }
            Family::Python | Family::Go => body[0] = format!("return {first}"),
            Family::Js | Family::Java => {
                body[0] = format!("return {first}");
                let last = body.len() - 1;
                body[last].push(';');
            }
        }
        push_body(&mut lines, &body, &body_indent);
    } else {
        if plan.try_wrap.is_some() && matches!(plan.tail, Tail::Value { .. }) {
            return Err("a trailing expression together with `?`".to_owned());
        }
        push_body(&mut lines, &plan.body_lines, &body_indent);
        if matches!(plan.tail, Tail::None) {
            let names: Vec<&str> = plan.rets.iter().map(|r| r.name.as_str()).collect();
            let value = match names.len() {
                0 => None,
                1 => Some(names[0].to_owned()),
                _ => Some(match plan.family {
                    Family::Python | Family::Go => names.join(", "),
                    // `as const` keeps a TypeScript tuple a tuple (not an array of the union).
                    Family::Js if plan.table().typed_params => format!("[{}] as const", names.join(", ")),
                    Family::Js => format!("[{}]", names.join(", ")),
                    _ => format!("({})", names.join(", ")),
                }),
            };
            match (plan.family, value) {
                (Family::Rust, Some(v)) => lines.push(format!("{body_indent}{}", wrap_ok(&v))),
                (Family::Rust, None) if plan.try_wrap.is_some() => lines.push(format!("{body_indent}{}", wrap_ok("()"))),
                (_, Some(v)) => lines.push(format!("{body_indent}return {v}{}", end(plan))),
                (_, None) => {}
            }
        }
    }
    if plan.family != Family::Python {
        lines.push("}".to_owned());
    }
    let member = &plan.member_indent;
    let text = lines
        .iter()
        .map(|l| {
            if let Some(raw) = l.strip_prefix('\u{0}') {
                raw.to_owned()
            } else if l.is_empty() {
                String::new()
            } else {
                format!("{member}{l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    Ok(text)
}

fn push_body(lines: &mut Vec<String>, body: &[String], indent: &str) {
    for line in body {
        if line.starts_with('\u{0}') || line.is_empty() {
            lines.push(line.clone());
        } else {
            lines.push(format!("{indent}{line}"));
        }
    }
}
