//! What the client declared in `initialize`, and the shaping of responses to it.
//!
//! Absent means "no": a client that does not list markdown gets plain text, one that cannot resolve code actions
//! gets the edit or a command inline, one without `disabledSupport` never sees a disabled action (eglot shows
//! them as entries that do nothing), and custom notifications go only to clients that asked for them.

use tower_lsp::lsp_types::{ClientCapabilities, CodeAction, CodeActionOrCommand, Command, MarkupKind};

/// The command that runs a code action for clients that cannot resolve one (`workspace/executeCommand`): the
/// server resolves it and applies the result with `workspace/applyEdit`.
pub const RUN_ACTION: &str = "pie-ls.runCodeAction";

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientCaps {
    /// `completionItem.documentationFormat` lists markdown.
    pub markdown_documentation: bool,
    /// `completionItem.preselectSupport`.
    pub preselect: bool,
    /// `codeAction.codeActionLiteralSupport`: `CodeAction` objects; without it, only `Command`s.
    pub code_action_literals: bool,
    /// `codeAction.resolveSupport` lists `edit` and `dataSupport` keeps our `data` until the resolve.
    pub code_action_resolve: bool,
    /// `codeAction.disabledSupport`.
    pub code_action_disabled: bool,
    /// `workspace.applyEdit`: the server may ask the client to apply an edit.
    pub apply_edit: bool,
    /// `window.workDoneProgress`.
    pub work_done_progress: bool,
    /// `experimental.pieStatusNotification: true`: the client wants `pie/status`.
    pub status_notification: bool,
}

impl ClientCaps {
    pub fn from_lsp(caps: &ClientCapabilities) -> ClientCaps {
        let text = caps.text_document.as_ref();
        let item = text.and_then(|t| t.completion.as_ref()).and_then(|c| c.completion_item.as_ref());
        let action = text.and_then(|t| t.code_action.as_ref());
        let resolve_edit = action
            .and_then(|a| a.resolve_support.as_ref())
            .is_some_and(|r| r.properties.iter().any(|p| p == "edit"));
        ClientCaps {
            markdown_documentation: item
                .and_then(|i| i.documentation_format.as_ref())
                .is_some_and(|formats| formats.contains(&MarkupKind::Markdown)),
            preselect: item.and_then(|i| i.preselect_support).unwrap_or(false),
            code_action_literals: action.is_some_and(|a| a.code_action_literal_support.is_some()),
            code_action_resolve: resolve_edit && action.and_then(|a| a.data_support).unwrap_or(false),
            code_action_disabled: action.and_then(|a| a.disabled_support).unwrap_or(false),
            apply_edit: caps.workspace.as_ref().and_then(|w| w.apply_edit).unwrap_or(false),
            work_done_progress: caps.window.as_ref().and_then(|w| w.work_done_progress).unwrap_or(false),
            status_notification: caps
                .experimental
                .as_ref()
                .and_then(|e| e.get("pieStatusNotification"))
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
        }
    }

    /// The client needs `RUN_ACTION` for actions whose work happens at resolve time.
    pub fn needs_run_command(&self) -> bool {
        !(self.code_action_literals && self.code_action_resolve)
    }
}

/// Shapes code actions to what the client can take: disabled ones only with `disabledSupport`; an action that
/// would need `codeAction/resolve` carries `RUN_ACTION` instead for a client that cannot resolve (or is left
/// out when it cannot apply edits either); a client without literal support gets `Command`s.
pub fn conform_actions(actions: Vec<CodeActionOrCommand>, caps: &ClientCaps) -> Vec<CodeActionOrCommand> {
    actions
        .into_iter()
        .filter_map(|item| {
            let CodeActionOrCommand::CodeAction(mut action) = item else { return Some(item) };
            if action.disabled.is_some() && !(caps.code_action_disabled && caps.code_action_literals) {
                return None;
            }
            let needs_resolve = action.edit.is_none() && action.command.is_none() && action.data.is_some();
            if !caps.code_action_literals {
                // The command runs the action (resolving it) and applies the result.
                return caps.apply_edit.then(|| CodeActionOrCommand::Command(run_command(&action)));
            }
            if needs_resolve && !caps.code_action_resolve {
                if !caps.apply_edit {
                    return None;
                }
                action.command = Some(run_command(&action));
            }
            if !caps.code_action_resolve {
                // `data` only serves the resolve; a client without `dataSupport` would not send it back.
                action.data = None;
            }
            Some(CodeActionOrCommand::CodeAction(action))
        })
        .collect()
}

fn run_command(action: &CodeAction) -> Command {
    let mut inner = action.clone();
    inner.command = None;
    Command {
        title: action.title.clone(),
        command: RUN_ACTION.to_owned(),
        arguments: Some(vec![serde_json::to_value(inner).expect("a code action serializes")]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tower_lsp::lsp_types::{CodeActionDisabled, WorkspaceEdit};

    fn caps(value: serde_json::Value) -> ClientCaps {
        ClientCaps::from_lsp(&serde_json::from_value(value).unwrap())
    }

    fn actions() -> Vec<CodeActionOrCommand> {
        let with_edit = CodeAction { title: "extract".into(), edit: Some(WorkspaceEdit::default()), data: Some(json!({"k": 1})), ..Default::default() };
        let to_resolve = CodeAction { title: "faster".into(), data: Some(json!({"k": 2})), ..Default::default() };
        let disabled = CodeAction { title: "no".into(), disabled: Some(CodeActionDisabled { reason: "why".into() }), ..Default::default() };
        [with_edit, to_resolve, disabled].into_iter().map(CodeActionOrCommand::CodeAction).collect()
    }

    #[test]
    fn absent_capabilities_mean_no() {
        assert_eq!(caps(json!({})), ClientCaps::default());
        let declared = caps(json!({
            "textDocument": {
                "completion": {"completionItem": {"documentationFormat": ["plaintext", "markdown"], "preselectSupport": true}},
                "codeAction": {"codeActionLiteralSupport": {"codeActionKind": {"valueSet": []}}, "dataSupport": true,
                               "resolveSupport": {"properties": ["edit"]}, "disabledSupport": true}
            },
            "workspace": {"applyEdit": true}, "window": {"workDoneProgress": true},
            "experimental": {"pieStatusNotification": true}
        }));
        assert!(declared.markdown_documentation && declared.preselect && declared.code_action_literals);
        assert!(declared.code_action_resolve && declared.code_action_disabled && declared.apply_edit);
        assert!(declared.work_done_progress && declared.status_notification && !declared.needs_run_command());
        // Resolving `command` only, or without dataSupport, is no resolve of the edit.
        let partial = caps(json!({"textDocument": {"codeAction": {"resolveSupport": {"properties": ["command"]}, "dataSupport": true}}}));
        assert!(!partial.code_action_resolve);
    }

    #[test]
    fn actions_are_shaped_to_the_client() {
        let full = ClientCaps { code_action_literals: true, code_action_resolve: true, code_action_disabled: true, apply_edit: true, ..Default::default() };
        assert_eq!(conform_actions(actions(), &full), actions());

        // eglot: literals, no resolve, no disabledSupport.
        let eglot = ClientCaps { code_action_literals: true, apply_edit: true, ..Default::default() };
        let shaped = conform_actions(actions(), &eglot);
        assert_eq!(shaped.len(), 2, "{shaped:?}");
        let CodeActionOrCommand::CodeAction(extract) = &shaped[0] else { panic!() };
        assert!(extract.edit.is_some() && extract.command.is_none() && extract.data.is_none());
        let CodeActionOrCommand::CodeAction(faster) = &shaped[1] else { panic!() };
        let command = faster.command.as_ref().unwrap();
        assert_eq!(command.command, RUN_ACTION);
        assert_eq!(command.arguments.as_ref().unwrap()[0]["data"], json!({"k": 2}));

        // LSP 3.0-style client: commands only, and none when it cannot apply edits.
        let bare = ClientCaps { apply_edit: true, ..Default::default() };
        let shaped = conform_actions(actions(), &bare);
        assert!(shaped.len() == 2 && shaped.iter().all(|a| matches!(a, CodeActionOrCommand::Command(c) if c.command == RUN_ACTION)));
        assert!(conform_actions(actions(), &ClientCaps::default()).is_empty());
    }
}
