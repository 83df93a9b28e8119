//! A tower layer in front of tower-lsp that reports notifications it would otherwise drop in silence, and keeps a
//! bug in one handler from taking the server down.
//!
//! tower-lsp ignores a notification whose params do not deserialize (it cannot answer a notification). A client
//! whose `didChange` is silently dropped desyncs without knowing why, so this layer checks the params of the
//! notifications that carry state and answers a bad one with a `window/logMessage` error instead.
//!
//! tower-lsp polls every handler's future on the server's own task, so a panic in any handler ended the process:
//! the editor lost completions, actions and every document until it restarted the server (found 2026-12-07: an
//! extract-method selection on a license comment at the top of a JavaScript file). Each handler's future is run
//! under `catch_unwind`; a panic answers its request with an internal error (`-32603`) and a logged message, and
//! the server goes on. The stores it may have been changing recover from poisoned locks, and every mutation of
//! them is atomic.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::FutureExt;

use serde::de::DeserializeOwned;
use tower_lsp::jsonrpc::{Request, Response};
use tower_lsp::lsp_types::{self as lsp, MessageType};
use tower_lsp::{Client, ExitedError};
use tower_service::Service;

pub struct Guard<S> {
    inner: S,
    client: Client,
    shutdown_requested: bool,
}

impl<S> Guard<S> {
    pub fn new(inner: S, client: Client) -> Guard<S> {
        Guard { inner, client, shutdown_requested: false }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> Service<Request> for Guard<S>
where
    S: Service<Request, Response = Option<Response>, Error = ExitedError>,
    S::Future: Send + 'static,
{
    type Response = Option<Response>;
    type Error = ExitedError;
    type Future = BoxFuture<Result<Option<Response>, ExitedError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        match req.method() {
            "shutdown" => self.shutdown_requested = true,
            // tower-lsp only stops reading after `exit` once stdin closes; the spec wants the process to end now,
            // with status 0 after a `shutdown` request and 1 without one.
            "exit" => {
                let code = if self.shutdown_requested { 0 } else { 1 };
                tracing::info!("exit (status {code})");
                return Box::pin(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    std::process::exit(code)
                });
            }
            _ => {}
        }
        if req.method() == "workspace/didChangeConfiguration" && req.params().and_then(|p| p.get("settings")).is_none() {
            // No settings at all: nothing changes (lsp-types would reject the params and log nothing).
            tracing::debug!("workspace/didChangeConfiguration without settings: nothing to change");
            return Box::pin(async { Ok(None) });
        }
        if req.id().is_none() {
            if let Some(problem) = check_notification(req.method(), req.params()) {
                tracing::warn!("{problem}");
                let client = self.client.clone();
                return Box::pin(async move {
                    client.log_message(MessageType::ERROR, format!("pie-ls: {problem}")).await;
                    Ok(None)
                });
            }
        }
        if req.method() == "initialize" {
            // Advertised only to clients that declare LSP 3.18 inline completion (lsp-types 0.94 cannot see it).
            let declared = req
                .params()
                .and_then(|p| p.pointer("/capabilities/textDocument/inlineCompletion"))
                .is_some_and(|c| !c.is_null());
            let response = self.inner.call(req);
            return Box::pin(async move {
                let response = response.await?;
                Ok(if declared { response.map(advertise_inline_completion) } else { response })
            });
        }
        contain_panics(req.method().to_owned(), req.id().cloned(), self.client.clone(), self.inner.call(req))
    }
}

/// Runs a handler's future; a panic in it becomes an internal error for a request and a logged message either way.
fn contain_panics<F>(method: String, id: Option<tower_lsp::jsonrpc::Id>, client: Client, handler: F) -> BoxFuture<Result<Option<Response>, ExitedError>>
where
    F: Future<Output = Result<Option<Response>, ExitedError>> + Send + 'static,
{
    Box::pin(async move {
        match AssertUnwindSafe(handler).catch_unwind().await {
            Ok(result) => result,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                let what: String = what.chars().take(300).collect();
                let message = format!("pie-ls hit a bug handling {method} and recovered (please report it): {what}");
                tracing::error!("{message}");
                client.log_message(MessageType::ERROR, message.clone()).await;
                Ok(id.map(|id| Response::from_error(id, tower_lsp::jsonrpc::Error { code: tower_lsp::jsonrpc::ErrorCode::InternalError, message: message.into(), data: None })))
            }
        }
    })
}

/// Adds `inlineCompletionProvider` (LSP 3.18) to the `initialize` result: tower-lsp 0.20's `ServerCapabilities`
/// has no field for it.
fn advertise_inline_completion(response: Response) -> Response {
    let (id, body) = response.into_parts();
    let body = body.map(|mut result| {
        if let Some(caps) = result.get_mut("capabilities").and_then(|c| c.as_object_mut()) {
            caps.insert("inlineCompletionProvider".into(), serde_json::json!({}));
        }
        result
    });
    Response::from_parts(id, body)
}

/// Returns a description of what is wrong with a notification, or `None` if it is fine to dispatch.
fn check_notification(method: &str, params: Option<&serde_json::Value>) -> Option<String> {
    fn parses<P: DeserializeOwned>(method: &str, params: Option<&serde_json::Value>) -> Option<String> {
        let Some(params) = params else {
            return Some(format!("{method}: missing params; notification ignored"));
        };
        serde_json::from_value::<P>(params.clone())
            .err()
            .map(|err| format!("{method}: invalid params ({err}); notification ignored"))
    }
    match method {
        "textDocument/didOpen" => parses::<lsp::DidOpenTextDocumentParams>(method, params),
        "textDocument/didChange" => parses::<lsp::DidChangeTextDocumentParams>(method, params),
        "textDocument/didClose" => parses::<lsp::DidCloseTextDocumentParams>(method, params),
        "textDocument/didSave" => parses::<lsp::DidSaveTextDocumentParams>(method, params),
        "workspace/didChangeConfiguration" => parses::<lsp::DidChangeConfigurationParams>(method, params),
        "initialized" | "textDocument/willSave" | "workspace/didChangeWatchedFiles"
        | "workspace/didChangeWorkspaceFolders" | "window/workDoneProgress/cancel" => None,
        other if other.starts_with("$/") => None,
        other => Some(format!("unknown notification {other:?} ignored")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bad_and_unknown_notifications_are_described() {
        assert!(check_notification("textDocument/didChange", Some(&json!({"x": 1}))).unwrap().contains("invalid params"));
        assert!(check_notification("textDocument/didOpen", None).unwrap().contains("missing params"));
        assert!(check_notification("foo/bar", None).unwrap().contains("unknown notification"));
        assert_eq!(check_notification("$/cancelRequest", Some(&json!({"id": 1}))), None);
        let ok = json!({"textDocument": {"uri": "file:///a", "version": 2}, "contentChanges": []});
        assert_eq!(check_notification("textDocument/didChange", Some(&ok)), None);
    }
}
