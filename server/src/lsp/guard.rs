//! A tower layer in front of tower-lsp that reports notifications it would otherwise drop in silence.
//!
//! tower-lsp ignores a notification whose params do not deserialize (it cannot answer a notification). A client
//! whose `didChange` is silently dropped desyncs without knowing why, so this layer checks the params of the
//! notifications that carry state and answers a bad one with a `window/logMessage` error instead.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

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
        Box::pin(self.inner.call(req))
    }
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
