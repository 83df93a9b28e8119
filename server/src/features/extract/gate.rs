//! The gate: what an extraction must pass before it is offered. The result re-parses with no new ERROR/MISSING
//! nodes, every free identifier of the new function is a parameter or was already global at the selection, and,
//! where the user configured one, a check command passes on a scratch copy.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tree_sitter::Node;

use super::analysis::{Plan, Receiver};
use super::lang::{table, Role};
use super::scope::Index;
use crate::runner::{run_shell, shell_quote, Limits, RunStatus, Scratch};
use crate::syntax::count_syntax_errors;

/// Checks `new_text`, the file after the extraction of `plan` under `name`. `old_errors` counts the syntax errors
/// of the original.
pub(crate) fn verify(plan: &Plan, new_text: &str, name: &str, old_errors: usize) -> Result<(), String> {
    let table = table(plan.lang).ok_or("unsupported language")?;
    let tree = crate::features::code::parse(plan.lang, new_text).ok_or("the result did not parse")?;
    let new_errors = count_syntax_errors(&tree);
    if new_errors > old_errors {
        return Err(format!("the result would not parse ({new_errors} syntax errors, {old_errors} before)"));
    }
    let root = tree.root_node();
    let Some(function) = find_function(table.function_kinds, new_text, root, name) else {
        return Err(format!("the new function `{name}` is not in the result"));
    };
    let index = Index::build_focused(table, new_text, root, Some(function));
    let fn_scope = index.scope_at(function.start_byte(), function.end_byte());
    let mut allowed: Vec<&str> = plan.params.iter().map(|p| p.name.as_str()).collect();
    match &plan.receiver {
        Receiver::PySelf(s) | Receiver::PyCls(s) => allowed.push(s),
        Receiver::GoRecv { name, .. } => allowed.push(name),
        _ => {}
    }
    allowed.push(name);
    // What codegen itself writes: the `?` wrappers.
    allowed.extend(["Ok", "Some"]);
    for occ in &index.occs {
        if occ.node.start_byte() < function.start_byte() || occ.node.end_byte() > function.end_byte() {
            continue;
        }
        if !matches!(occ.role, Role::Read | Role::ReadWrite | Role::Write) {
            continue;
        }
        let local = occ.var.is_some_and(|v| index.scope_within(index.vars[v].scope, fn_scope));
        if local {
            continue;
        }
        if allowed.contains(&occ.name.as_str()) || plan.free_ok.contains(&occ.name) || plan.globals.contains(&occ.name) {
            continue;
        }
        return Err(format!("`{}` would be undefined in the new function", occ.name));
    }
    Ok(())
}

fn find_function<'t>(kinds: &[&str], src: &str, root: Node<'t>, name: &str) -> Option<Node<'t>> {
    let mut found = None;
    crate::syntax::for_each_node(root, |node| {
        if found.is_none() && kinds.contains(&node.kind()) && node.child_by_field_name("name").is_some_and(|n| &src[n.byte_range()] == name) {
            found = Some(node);
        }
    });
    found
}

/// A user-configured command that must pass on the result, e.g. `python3 -m py_compile {file}`.
#[derive(Clone, Debug)]
pub struct CheckCommand {
    /// Run by `sh -c`; `{file}` is replaced by the scratch copy's path (appended when absent).
    pub command: String,
    pub timeout: Duration,
}

/// Runs `check` through the runner (scratch directory, timeout, memory cap, process-group kill) on a copy of
/// `text` named `file_name`.
pub fn run_check(check: &CheckCommand, file_name: &str, text: &str) -> Result<(), String> {
    let scratch = Scratch::empty("extract")?;
    let file_name = std::path::Path::new(file_name).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| "main.txt".to_owned());
    scratch.write(file_name.as_ref(), text)?;
    let quoted = shell_quote(&scratch.path().join(&file_name).display().to_string());
    let command = if check.command.contains("{file}") { check.command.replace("{file}", &quoted) } else { format!("{} {quoted}", check.command) };
    let limits = Limits { timeout: check.timeout, ..Limits::default() };
    let out = run_shell(&command, scratch.path(), &[], &limits, &AtomicBool::new(false));
    let status = match &out.status {
        RunStatus::Exited(0) => return Ok(()),
        RunStatus::TimedOut => return Err(format!("the check command timed out after {:?}", check.timeout)),
        RunStatus::FailedToStart(e) => return Err(format!("check command did not start: {e}")),
        RunStatus::Exited(code) => format!("exit status: {code}"),
        RunStatus::Signaled(sig) => format!("signal: {sig}"),
        RunStatus::Cancelled => "cancelled".to_owned(),
    };
    let tail: Vec<&str> = out.output.lines().rev().take(6).collect::<Vec<_>>().into_iter().rev().collect();
    Err(format!("the check command failed on the result ({status}): {}", tail.join("\n")))
}

#[cfg(test)]
mod check_tests {
    use super::*;

    #[test]
    fn check_commands_run_on_a_copy_of_the_result() {
        let check = |command: &str| CheckCommand { command: command.into(), timeout: Duration::from_secs(20) };
        assert_eq!(run_check(&check("grep -q extracted {file}"), "src/a.py", "def extracted(): pass\n"), Ok(()));
        assert_eq!(run_check(&check("grep -q extracted"), "a.py", "def extracted(): pass\n"), Ok(()), "the path is appended");
        let err = run_check(&check("echo nope; exit 3"), "a.py", "").unwrap_err();
        assert!(err.contains("failed on the result (exit status: 3)") && err.contains("nope"), "{err}");
        let slow = CheckCommand { command: "sleep 30 && cat {file}".into(), timeout: Duration::from_millis(300) };
        assert!(run_check(&slow, "a.py", "").unwrap_err().contains("timed out"));
    }
}
