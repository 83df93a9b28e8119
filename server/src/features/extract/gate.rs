//! The gate: what an extraction must pass before it is offered. The result re-parses with no new ERROR/MISSING
//! nodes, every free identifier of the new function is a parameter or was already global at the selection, and,
//! where the user configured one, a check command passes on a scratch copy.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tree_sitter::{Node, Parser};

use super::analysis::{Plan, Receiver};
use super::lang::{table, Role};
use super::scope::Index;
use crate::syntax::count_syntax_errors;

/// Checks `new_text`, the file after the extraction of `plan` under `name`. `old_errors` counts the syntax errors
/// of the original.
pub(crate) fn verify(plan: &Plan, new_text: &str, name: &str, old_errors: usize) -> Result<(), String> {
    let table = table(plan.lang).ok_or("unsupported language")?;
    let mut parser = Parser::new();
    parser.set_language(&plan.lang.grammar()).map_err(|e| e.to_string())?;
    let tree = parser.parse(new_text, None).ok_or("the result did not parse")?;
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

static SCRATCH_SEQ: AtomicU64 = AtomicU64::new(0);

/// Runs `check` on a scratch copy holding `text` under `file_name`. The whole process group is killed on timeout.
pub fn run_check(check: &CheckCommand, file_name: &str, text: &str) -> Result<(), String> {
    let seq = SCRATCH_SEQ.fetch_add(1, Ordering::Relaxed);
    let dir: PathBuf = std::env::temp_dir().join(format!("pie-ls-extract-{}-{seq}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("scratch directory: {e}"))?;
    let file_name = std::path::Path::new(file_name).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| "main.txt".to_owned());
    let path = dir.join(&file_name);
    let result = (|| {
        std::fs::write(&path, text).map_err(|e| format!("scratch copy: {e}"))?;
        let quoted = format!("'{}'", path.display().to_string().replace('\'', "'\\''"));
        let command = if check.command.contains("{file}") {
            check.command.replace("{file}", &quoted)
        } else {
            format!("{} {quoted}", check.command)
        };
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(&command).current_dir(&dir).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        let mut child = cmd.spawn().map_err(|e| format!("check command did not start: {e}"))?;
        let started = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    if status.success() {
                        return Ok(());
                    }
                    let mut err = String::new();
                    if let Some(mut s) = child.stderr.take() {
                        let _ = s.read_to_string(&mut err);
                    }
                    if err.trim().is_empty() {
                        if let Some(mut s) = child.stdout.take() {
                            let _ = s.read_to_string(&mut err);
                        }
                    }
                    let tail: String = err.lines().rev().take(6).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
                    return Err(format!("the check command failed on the result ({status}): {tail}"));
                }
                Ok(None) if started.elapsed() > check.timeout => {
                    let _ = Command::new("kill").arg("-9").arg(format!("-{}", child.id())).status();
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("the check command timed out after {:?}", check.timeout));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(format!("check command: {e}")),
            }
        }
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
