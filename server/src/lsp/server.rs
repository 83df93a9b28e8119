//! The `LanguageServer` implementation: capability negotiation, document sync and the `pie/*` requests.
//!
//! Handlers are thin: convert from LSP, call the document store, convert back. State lives in `ServerState`
//! behind a std `Mutex` that is never held across an `.await`.

use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use tower_lsp::jsonrpc::{Error, ErrorCode, Result};
use tower_lsp::lsp_types::*;
use tower_lsp::{Client, LanguageServer};

use super::convert;
use super::ext::{DocumentState, DocumentStateParams, SyntaxTreeResult};
use crate::config::Config;
use crate::document::{DocumentStore, PositionEncoding, StoreError};
use crate::syntax::count_syntax_errors;

pub struct Backend {
    client: Client,
    state: Arc<ServerState>,
}

#[derive(Default)]
struct ServerState {
    docs: Mutex<DocumentStore>,
    config: RwLock<Config>,
    encoding: RwLock<PositionEncoding>,
}

impl Backend {
    pub fn new(client: Client) -> Backend {
        Backend { client, state: Arc::new(ServerState::default()) }
    }

    fn docs(&self) -> MutexGuard<'_, DocumentStore> {
        // A handler that panicked while holding the lock left a consistent store: every mutation is atomic.
        self.state.docs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn config(&self) -> Config {
        self.state.config.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn encoding(&self) -> PositionEncoding {
        *self.state.encoding.read().unwrap_or_else(|p| p.into_inner())
    }

    async fn report(&self, typ: MessageType, message: String) {
        match typ {
            MessageType::ERROR => tracing::error!("{message}"),
            MessageType::WARNING => tracing::warn!("{message}"),
            _ => tracing::info!("{message}"),
        }
        self.client.log_message(typ, format!("pie-ls: {message}")).await;
    }

    /// `pie/documentState`: what the server believes the document is.
    pub async fn document_state(&self, params: DocumentStateParams) -> Result<DocumentState> {
        let uri = params.text_document.uri.to_string();
        let docs = self.docs();
        let doc = docs.get(&uri).map_err(invalid_params)?;
        let syntax = doc.syntax();
        Ok(DocumentState {
            uri,
            version: doc.version(),
            text: doc.rope().to_string(),
            line_count: doc.rope().len_lines(),
            language_id: doc.language_id().to_owned(),
            syntax_errors: syntax.map(|it| count_syntax_errors(it.tree())),
            parse_ms: syntax.map(|it| it.last_parse_ms()),
            syntax_language: syntax.map(|it| it.language().id().to_owned()),
            binary: doc.is_binary(),
        })
    }

    /// `pie/syntaxTree`: the tree as an S-expression.
    pub async fn syntax_tree(&self, params: DocumentStateParams) -> Result<SyntaxTreeResult> {
        let uri = params.text_document.uri.to_string();
        let docs = self.docs();
        let doc = docs.get(&uri).map_err(invalid_params)?;
        let sexp = doc.syntax().map(|it| it.tree().root_node().to_sexp());
        Ok(SyntaxTreeResult { uri, version: doc.version(), sexp })
    }
}

fn invalid_params(err: StoreError) -> Error {
    Error { code: ErrorCode::InvalidParams, message: err.to_string().into(), data: None }
}

#[tower_lsp::async_trait]
impl LanguageServer for Backend {
    async fn initialize(&self, params: InitializeParams) -> Result<InitializeResult> {
        let offered = params
            .capabilities
            .general
            .as_ref()
            .and_then(|general| general.position_encodings.as_ref())
            .map(|kinds| kinds.iter().map(|kind| kind.as_str().to_owned()).collect::<Vec<_>>())
            .unwrap_or_default();
        let encoding = PositionEncoding::negotiate(offered.iter().map(String::as_str));
        *self.state.encoding.write().unwrap_or_else(|p| p.into_inner()) = encoding;

        if let Some(options) = &params.initialization_options {
            match Config::from_client_value(options) {
                Ok(config) => *self.state.config.write().unwrap_or_else(|p| p.into_inner()) = config,
                Err(err) => {
                    return Err(Error {
                        code: ErrorCode::InvalidParams,
                        message: format!("invalid initializationOptions: {err}").into(),
                        data: None,
                    })
                }
            }
        }
        tracing::info!(encoding = encoding.as_lsp_str(), "initialized");

        Ok(InitializeResult {
            server_info: Some(ServerInfo { name: "pie-ls".into(), version: Some(env!("CARGO_PKG_VERSION").into()) }),
            capabilities: ServerCapabilities {
                position_encoding: Some(PositionEncodingKind::from(encoding.as_lsp_str().to_owned())),
                text_document_sync: Some(TextDocumentSyncCapability::Options(TextDocumentSyncOptions {
                    open_close: Some(true),
                    change: Some(TextDocumentSyncKind::INCREMENTAL),
                    save: Some(TextDocumentSyncSaveOptions::Supported(true)),
                    ..Default::default()
                })),
                code_action_provider: Some(CodeActionProviderCapability::Options(CodeActionOptions {
                    code_action_kinds: Some(vec![CodeActionKind::new(super::code_action::EXTRACT_FUNCTION_KIND)]),
                    resolve_provider: Some(true),
                    work_done_progress_options: Default::default(),
                })),
                experimental: Some(serde_json::json!({ "pieDocumentState": true })),
                ..Default::default()
            },
        })
    }

    async fn code_action(&self, params: CodeActionParams) -> Result<Option<CodeActionResponse>> {
        let snapshot = super::code_action::snapshot(&self.docs(), &params.text_document.uri, self.encoding())?;
        super::code_action::code_actions(&snapshot, &params)
    }

    async fn code_action_resolve(&self, action: CodeAction) -> Result<CodeAction> {
        let uri = super::code_action::resolve_uri(&action)?;
        let snapshot = super::code_action::snapshot(&self.docs(), &uri, self.encoding())?;
        // No model yet: the deterministic name. Wire a `features::extract::NameSuggester` here (it blocks).
        super::code_action::resolve(action, &snapshot, None, None)
    }

    async fn shutdown(&self) -> Result<()> {
        tracing::info!("shutdown requested");
        Ok(())
    }

    async fn did_open(&self, params: DidOpenTextDocumentParams) {
        let item = params.text_document;
        let uri = item.uri.to_string();
        let limits = self.config().document_limits();
        // Synchronous, before the first `.await`: see the module invariants in `lsp/mod.rs`.
        let (replaced, note) = {
            let mut docs = self.docs();
            let replaced = docs.open(&uri, &item.language_id, item.version, &item.text, limits);
            let note = docs.get(&uri).ok().and_then(|doc| {
                if doc.is_binary() {
                    Some(format!("{uri} holds binary content (NUL bytes): stored, but not parsed nor sent to a model"))
                } else if doc.language().is_some() && doc.syntax().is_none() {
                    Some(format!(
                        "{uri} is {} bytes, over documents.maxParseBytes ({}): no syntax tree",
                        doc.rope().len_bytes(),
                        limits.max_parse_bytes
                    ))
                } else {
                    None
                }
            });
            (replaced, note)
        };
        if replaced {
            self.report(MessageType::WARNING, format!("{uri} was opened twice; the new text replaces the old")).await;
        }
        if let Some(note) = note {
            self.report(MessageType::INFO, note).await;
        }
    }

    async fn did_change(&self, params: DidChangeTextDocumentParams) {
        let uri = params.text_document.uri.to_string();
        let version = params.text_document.version;
        let changes: Vec<_> = params.content_changes.into_iter().map(convert::content_change).collect();
        let limits = self.config().document_limits();
        let encoding = self.encoding();
        // Synchronous, before the first `.await`: see the module invariants in `lsp/mod.rs`.
        let result = self.docs().change(&uri, version, &changes, encoding, limits);
        if let Err(err) = result {
            self.report(MessageType::ERROR, format!("didChange rejected: {err}")).await;
        }
    }

    async fn did_close(&self, params: DidCloseTextDocumentParams) {
        let uri = params.text_document.uri.to_string();
        let result = self.docs().close(&uri);
        if let Err(err) = result {
            self.report(MessageType::WARNING, format!("didClose: {err}")).await;
        }
    }

    async fn did_change_configuration(&self, params: DidChangeConfigurationParams) {
        match Config::from_client_value(&params.settings) {
            Ok(config) => {
                *self.state.config.write().unwrap_or_else(|p| p.into_inner()) = config;
                tracing::info!("configuration updated");
            }
            Err(err) => {
                self.report(MessageType::ERROR, format!("settings not applied, keeping the previous ones: {err}"))
                    .await
            }
        }
    }
}
