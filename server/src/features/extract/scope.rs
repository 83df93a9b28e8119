//! Name resolution over a tree-sitter tree: scopes, variables and the occurrences that resolve to them.
//!
//! This is what a `locals.scm` query gives an editor (`@local.scope`, `@local.definition`, `@local.reference`),
//! plus the language rules that matter for data flow: Python binds a name for the whole function (and skips class
//! scopes when resolving from a method), block-scoped languages see a declaration only after it takes effect
//! (`let x = x + 1` reads the outer `x`), JavaScript `var` and function declarations are hoisted, and Go `:=`
//! re-assigns a name already declared in the same scope.

use std::collections::HashMap;

use tree_sitter::Node;

use super::lang::{classify, Family, Role, Table};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScopeKind {
    Root,
    Function,
    Class,
    Block,
    Comprehension,
}

pub(crate) struct Scope<'t> {
    pub node: Node<'t>,
    pub parent: Option<usize>,
    pub kind: ScopeKind,
    /// Python `global` names declared in this scope.
    pub globals: Vec<String>,
    /// Python `nonlocal` names declared in this scope.
    pub nonlocals: Vec<String>,
}

pub(crate) struct Var<'t> {
    pub name: String,
    pub scope: usize,
    /// The identifier of the first binding.
    pub decl: Node<'t>,
    /// The node that gives the binding its meaning (declaration, assignment, loop, parameter list).
    pub decl_ctx: Option<Node<'t>>,
    /// Where the binding takes effect.
    pub pos: usize,
    pub role: Role,
}

pub(crate) struct Occ<'t> {
    pub node: Node<'t>,
    pub name: String,
    pub role: Role,
    pub ctx: Option<Node<'t>>,
    pub scope: usize,
    pub var: Option<usize>,
    /// Where the occurrence takes effect: its start for a read, the end of the assigned value for a write.
    pub eff: usize,
}

pub(crate) struct Index<'t> {
    pub scopes: Vec<Scope<'t>>,
    pub vars: Vec<Var<'t>>,
    pub occs: Vec<Occ<'t>>,
    by_scope: HashMap<(usize, String), Vec<usize>>,
}

impl<'t> Index<'t> {
    /// Builds the index of the whole tree (`focus: None`), or only of the subtree `focus` under the root scope:
    /// names bound elsewhere then resolve to nothing, as globals do. Keeps a large file cheap.
    pub fn build_focused(table: &Table, src: &'t str, root: Node<'t>, focus: Option<Node<'t>>) -> Index<'t> {
        let mut index = Index { scopes: Vec::new(), vars: Vec::new(), occs: Vec::new(), by_scope: HashMap::new() };
        let mut stack: Vec<usize> = Vec::new();
        let start = match focus {
            Some(f) if f.id() != root.id() => {
                index.enter(table, src, root, &mut stack);
                f
            }
            _ => root,
        };
        let mut cursor = start.walk();
        'walk: loop {
            let node = cursor.node();
            index.enter(table, src, node, &mut stack);
            if cursor.goto_first_child() {
                continue;
            }
            loop {
                let node = cursor.node();
                if stack.last().is_some_and(|top| index.scopes[*top].node.id() == node.id()) {
                    stack.pop();
                }
                if cursor.goto_next_sibling() {
                    continue 'walk;
                }
                if !cursor.goto_parent() {
                    break 'walk;
                }
            }
        }
        index.bind(table);
        index.resolve_all(table);
        index
    }

    fn enter(&mut self, table: &Table, src: &str, node: Node<'t>, stack: &mut Vec<usize>) {
        let kind = node.kind();
        if node.parent().is_none() || table.scope_kinds.contains(&kind) {
            let scope_kind = if node.parent().is_none() {
                ScopeKind::Root
            } else if table.function_kinds.contains(&kind) {
                ScopeKind::Function
            } else if table.class_kinds.contains(&kind) || kind == "class_body" {
                ScopeKind::Class
            } else if kind.ends_with("comprehension") || kind == "generator_expression" {
                ScopeKind::Comprehension
            } else {
                ScopeKind::Block
            };
            self.scopes.push(Scope {
                node,
                parent: stack.last().copied(),
                kind: scope_kind,
                globals: Vec::new(),
                nonlocals: Vec::new(),
            });
            stack.push(self.scopes.len() - 1);
            return;
        }
        let Some(&scope) = stack.last() else { return };
        if table.family == Family::Python && matches!(kind, "global_statement" | "nonlocal_statement") {
            let mut cursor = node.walk();
            let names: Vec<String> = node
                .named_children(&mut cursor)
                .filter(|it| it.kind() == "identifier")
                .map(|it| src[it.byte_range()].to_owned())
                .collect();
            let scope = &mut self.scopes[scope];
            if kind == "global_statement" {
                scope.globals.extend(names);
            } else {
                scope.nonlocals.extend(names);
            }
            return;
        }
        if !table.ident_kinds.contains(&kind) {
            return;
        }
        let name = &src[node.byte_range()];
        if name == "_" || name.is_empty() {
            return;
        }
        let (role, ctx) = classify(table, src, node);
        if role == Role::Skip {
            return;
        }
        let eff = match role {
            Role::Read | Role::ReadWrite | Role::Param | Role::ItemName => node.start_byte(),
            Role::Write | Role::Decl => effect_pos(node, ctx),
            Role::Skip => node.start_byte(),
        };
        self.occs.push(Occ { node, name: name.to_owned(), role, ctx, scope, var: None, eff });
    }

    /// Creates the variables: one per declaration, parameter and item name (Python: one per name and scope).
    fn bind(&mut self, table: &Table) {
        let mut by_scope: HashMap<(usize, String), Vec<usize>> = HashMap::new();
        for occ_idx in 0..self.occs.len() {
            let occ = &self.occs[occ_idx];
            if !matches!(occ.role, Role::Decl | Role::Param | Role::ItemName) {
                continue;
            }
            let mut scope = occ.scope;
            if occ.role == Role::ItemName && self.scopes[scope].node.id() == occ.node.parent().map(|p| p.id()).unwrap_or(usize::MAX) {
                scope = self.scopes[scope].parent.unwrap_or(scope);
            }
            let mut reuse = false;
            match table.family {
                Family::Python => {
                    if occ.role == Role::Decl {
                        // A walrus inside a comprehension binds in the enclosing function.
                        while self.scopes[scope].kind == ScopeKind::Comprehension
                            && occ.ctx.is_some_and(|c| c.kind() == "named_expression")
                        {
                            scope = self.scopes[scope].parent.unwrap_or(scope);
                        }
                        if self.scopes[scope].globals.contains(&occ.name) || self.scopes[scope].nonlocals.contains(&occ.name) {
                            self.occs[occ_idx].role = Role::Write;
                            continue;
                        }
                    }
                    reuse = true;
                }
                Family::Js => {
                    let is_var = occ.ctx.is_some_and(|c| {
                        (c.kind() == "variable_declarator" && c.parent().is_some_and(|p| p.kind() == "variable_declaration"))
                            || (c.kind() == "for_in_statement"
                                && c.child_by_field_name("kind").is_some_and(|k| k.kind() == "var"))
                    });
                    if is_var {
                        while !matches!(self.scopes[scope].kind, ScopeKind::Function | ScopeKind::Root) {
                            scope = self.scopes[scope].parent.unwrap_or(scope);
                            if self.scopes[scope].parent.is_none() {
                                break;
                            }
                        }
                        reuse = true;
                    }
                }
                Family::Go => {
                    // `a, err := f()` re-assigns `err` when it is already declared in this very scope.
                    if occ.role == Role::Decl && occ.ctx.is_some_and(|c| c.kind() == "short_var_declaration") {
                        if by_scope.contains_key(&(scope, occ.name.clone())) {
                            self.occs[occ_idx].role = Role::Write;
                            continue;
                        }
                    }
                }
                Family::Rust | Family::Java => {}
            }
            let key = (scope, occ.name.clone());
            if reuse {
                if let Some(existing) = by_scope.get(&key).and_then(|v| v.first()) {
                    self.occs[occ_idx].var = Some(*existing);
                    continue;
                }
            }
            let occ = &self.occs[occ_idx];
            let pos = match occ.role {
                Role::ItemName => self.scopes[scope].node.start_byte(),
                _ => occ.eff,
            };
            self.vars.push(Var { name: occ.name.clone(), scope, decl: occ.node, decl_ctx: occ.ctx, pos, role: occ.role });
            let var_idx = self.vars.len() - 1;
            by_scope.entry(key).or_default().push(var_idx);
            self.occs[occ_idx].var = Some(var_idx);
        }
        self.by_scope = by_scope;
    }

    fn resolve_all(&mut self, table: &Table) {
        for occ_idx in 0..self.occs.len() {
            if self.occs[occ_idx].var.is_some() {
                continue;
            }
            let occ = &self.occs[occ_idx];
            let var = self.resolve(table, &occ.name, occ.scope, occ.eff);
            self.occs[occ_idx].var = var;
        }
    }

    /// The variable a name at `pos` in `scope` refers to, or `None` for a global, builtin or import.
    pub fn resolve(&self, table: &Table, name: &str, scope: usize, pos: usize) -> Option<usize> {
        let mut current = Some(scope);
        let mut first = true;
        let mut skip_to_function_parent = false;
        while let Some(s) = current {
            let scope_ref = &self.scopes[s];
            let parent = scope_ref.parent;
            if table.family == Family::Python {
                if scope_ref.kind == ScopeKind::Class && !first {
                    current = parent;
                    continue;
                }
                if scope_ref.globals.iter().any(|g| g == name) {
                    let root = self.root_scope(s);
                    return self.by_scope.get(&(root, name.to_owned())).and_then(|v| v.first().copied());
                }
                if scope_ref.nonlocals.iter().any(|g| g == name) {
                    skip_to_function_parent = true;
                    first = false;
                    current = parent;
                    continue;
                }
                if skip_to_function_parent && scope_ref.kind != ScopeKind::Function {
                    current = parent;
                    continue;
                }
                if let Some(vars) = self.by_scope.get(&(s, name.to_owned())) {
                    return vars.first().copied();
                }
            } else if let Some(vars) = self.by_scope.get(&(s, name.to_owned())) {
                let before = vars.iter().rev().find(|v| self.vars[**v].pos <= pos);
                if let Some(v) = before {
                    return Some(*v);
                }
                let hoisted = vars.iter().find(|v| {
                    self.vars[**v].role == Role::ItemName
                        || self.vars[**v].decl_ctx.is_some_and(|c| {
                            c.parent().is_some_and(|p| p.kind() == "variable_declaration")
                        })
                });
                if let Some(v) = hoisted {
                    return Some(*v);
                }
            }
            first = false;
            current = parent;
        }
        None
    }

    fn root_scope(&self, mut s: usize) -> usize {
        while let Some(p) = self.scopes[s].parent {
            s = p;
        }
        s
    }

    /// The innermost scope whose node contains `[start, end)`.
    pub fn scope_at(&self, start: usize, end: usize) -> usize {
        let mut best = 0;
        for (i, scope) in self.scopes.iter().enumerate() {
            if scope.node.start_byte() <= start && end <= scope.node.end_byte() {
                // Scopes are pushed in pre-order, so a later containing scope is a deeper one.
                best = i;
            }
        }
        best
    }

    /// True when scope `inner` is `outer` or nested in it.
    pub fn scope_within(&self, inner: usize, outer: usize) -> bool {
        let mut current = Some(inner);
        while let Some(s) = current {
            if s == outer {
                return true;
            }
            current = self.scopes[s].parent;
        }
        false
    }
}

/// Where a write takes effect: after the value it assigns (`x = x + 1` reads the old `x`).
fn effect_pos(ident: Node, ctx: Option<Node>) -> usize {
    let Some(ctx) = ctx else { return ident.end_byte() };
    match ctx.kind() {
        "match_arm" => ctx.child_by_field_name("pattern").map_or(ident.end_byte(), |p| p.end_byte()),
        "let_declaration" | "short_var_declaration" | "variable_declarator" | "var_spec" | "const_spec" => ctx.end_byte(),
        _ => ctx
            .child_by_field_name("right")
            .or_else(|| ctx.child_by_field_name("value"))
            .map_or(ident.end_byte(), |v| v.end_byte().max(ident.end_byte())),
    }
}
