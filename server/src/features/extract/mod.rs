//! Extract method: turns a selection into a new function (or method) and a call, for Python, Rust, JavaScript,
//! TypeScript, Go and Java, over one algorithm and per-language tables.
//!
//! Pipeline: `analysis` (selection, scopes, data flow, control flow, receiver, placement; tree-sitter only) gives
//! a `Plan`; `naming` picks a name (deterministic, or the model's after validation); `codegen` writes the edits;
//! `gate` checks the result re-parses cleanly and that the new function has no free local, and optionally runs a
//! user check command. Only what passed the gate is returned.
//!
//! Architecture invariant: this module knows nothing about LSP. It takes the text, its tree and a byte range, and
//! returns byte edits or a `Refusal` whose reason is shown to the user.

mod analysis;
mod codegen;
mod gate;
mod lang;
mod naming;
mod scope;
mod types;

#[cfg(test)]
mod tests;

use std::ops::Range;

use tree_sitter::Tree;

pub use codegen::{apply, ByteTextEdit};
pub use gate::{default_check, run_check, CheckCommand};

use crate::syntax::{count_syntax_errors, Language};

/// Why a selection cannot be extracted; shown as the code action's `disabled.reason`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Something that proposes a function name for a prompt (the code model). It may block: call it off the async
/// runtime. `None` means no suggestion; the deterministic name is used then.
pub trait NameSuggester: Send + Sync {
    fn suggest_name(&self, prompt: &str) -> Option<String>;
}

/// A verified extraction.
#[derive(Clone, Debug)]
pub struct Extraction {
    pub name: String,
    /// Whether the new function is a method (called through `self`/`this` or in a class).
    pub is_method: bool,
    /// Non-overlapping edits in byte offsets of the original text.
    pub edits: Vec<ByteTextEdit>,
    /// The whole text after the edits.
    pub new_text: String,
    /// Where the name came from: `"model"` or `"deterministic"`.
    pub name_source: &'static str,
}

impl Extraction {
    pub fn title(&self) -> String {
        if self.is_method {
            format!("Extract into method `{}`", self.name)
        } else {
            format!("Extract into function `{}`", self.name)
        }
    }
}

/// Options for `extract`.
#[derive(Default)]
pub struct ExtractOptions<'a> {
    /// Asked for a name (at resolve time); `None` uses the deterministic name.
    pub suggester: Option<&'a dyn NameSuggester>,
    /// A user check command run on a scratch copy of the result, and the file name for that copy.
    pub check: Option<(&'a CheckCommand, &'a str)>,
}

/// Whether extract method supports documents of this language.
pub fn supports(lang: Language) -> bool {
    lang::table(lang).is_some()
}

/// Analyses and builds the extraction of `selection` (a byte range of `src`) with the deterministic name, gated.
/// This is what `textDocument/codeAction` answers with: fast, tree-sitter only.
pub fn extract(src: &str, tree: &Tree, lang: Language, selection: Range<usize>) -> Result<Extraction, Refusal> {
    extract_with(src, tree, lang, selection, &ExtractOptions::default())
}

/// `extract` with a model name (validated, falling back to the deterministic one) and an optional check command.
pub fn extract_with(
    src: &str,
    tree: &Tree,
    lang: Language,
    selection: Range<usize>,
    options: &ExtractOptions,
) -> Result<Extraction, Refusal> {
    let plan = analysis::analyze(src, tree, lang, selection)?;
    let old_errors = count_syntax_errors(tree);
    let fallback = naming::deterministic(&plan);
    let mut candidates = Vec::new();
    if let Some(suggester) = options.suggester {
        if let Some(answer) = suggester.suggest_name(&naming::prompt(&plan)) {
            if let Some(name) = naming::validate(&plan, &answer) {
                candidates.push((name, "model"));
            } else {
                tracing::info!(answer = %answer.chars().take(80).collect::<String>(), "model name rejected");
            }
        }
    }
    candidates.push((fallback, "deterministic"));
    let mut last_err = String::new();
    for (name, source) in candidates {
        let edits = match codegen::build(&plan, src, &name) {
            Ok(edits) => edits,
            Err(why) => return Err(Refusal { reason: format!("cannot extract {why}") }),
        };
        let new_text = apply(src, &edits);
        if let Err(why) = gate::verify(&plan, &new_text, &name, old_errors) {
            last_err = why;
            continue;
        }
        if let Some((check, file_name)) = options.check {
            if let Err(why) = gate::check_result(check, file_name, src, &new_text) {
                last_err = why;
                continue;
            }
        } else if let Some(why) = gate::known_failure(&new_text) {
            // A check at resolve refused this very result: say so at once when the action is asked for again.
            last_err = why;
            continue;
        }
        let is_method = !matches!(plan.receiver, analysis::Receiver::Free);
        return Ok(Extraction { name, is_method, edits, new_text, name_source: source });
    }
    Err(Refusal { reason: format!("the extraction failed verification: {last_err}") })
}

/// The naming prompt for a selection (for logs and tests); `None` when the selection cannot be extracted.
pub fn name_prompt(src: &str, tree: &Tree, lang: Language, selection: Range<usize>) -> Option<String> {
    analysis::analyze(src, tree, lang, selection).ok().map(|plan| naming::prompt(&plan))
}
