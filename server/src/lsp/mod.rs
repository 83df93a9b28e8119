//! The LSP layer: the only code that knows about `tower_lsp`, `lsp_types` and JSON-RPC.
//!
//! Architecture invariants:
//! - Every handler that changes a document does so synchronously, before its first `.await`. tower-lsp polls
//!   handler futures for the first time in arrival order, so edits apply in the order the client sent them
//!   (the random-edit property test in `tests/` is what proves it).
//! - A bad message never takes the server down: requests get a JSON-RPC error, notifications a
//!   `window/logMessage`, and the document state stays as it was.

mod action_model;
mod caps;
mod code_action;
mod completion;
mod convert;
mod ext;
mod guard;
mod server;
mod transport;
mod verified;

pub use ext::{DocumentState, DocumentStateParams, SyntaxTreeResult};
pub use server::SyncPath;
pub use crate::warm::{Command as WarmCommand, WarmHandle, WarmTexts};

use tower_lsp::{LspService, Server};

/// Options from the command line.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Model spec from `--model` (the client's `model.path` wins over it; it wins over `PIE_LS_MODEL`).
    pub model: Option<String>,
}

/// Serves LSP on stdin/stdout until the client sends `exit` or closes the stream.
pub async fn serve_stdio(options: ServeOptions) {
    let mut client_slot = None;
    let (service, socket) = LspService::build(|client| {
        client_slot = Some(client.clone());
        server::Backend::new(client, options)
    })
    .custom_method(ext::DOCUMENT_STATE, server::Backend::document_state)
    .custom_method(ext::SYNTAX_TREE, server::Backend::syntax_tree)
    .custom_method(ext::CACHE_STATS, server::Backend::cache_stats)
    .custom_method(ext::CACHE_CHECK, server::Backend::cache_check)
    .custom_method(completion::INLINE_COMPLETION, server::Backend::inline_completion)
    .custom_method("window/workDoneProgress/cancel", server::Backend::progress_cancel)
    .finish();
    let client = client_slot.expect("LspService::build calls its init closure");
    let service = guard::Guard::new(service, client);
    // The default of 4 in-flight handlers would let slow requests hold up edits; edits are cheap and ordered.
    let (input, output) = transport::validated_stdio(tokio::io::stdin(), tokio::io::stdout());
    Server::new(input, output, socket).concurrency_level(64).serve(service).await;
}
