//! Framing in front of tower-lsp: every message is validated before tower-lsp sees it.
//!
//! Why: tower-lsp 0.20 reads stdin through a tokio-util `FramedRead`, which ends the stream for good after its
//! first decode error, so one malformed message would silently end the session. Here a reader task splits
//! stdin into frames, forwards the well-formed ones to tower-lsp through an in-memory pipe, and answers the
//! others itself (`-32700` parse error / `-32600` invalid request), resynchronising on the next
//! `Content-Length` header. A writer task owns stdout and writes whole frames only, so tower-lsp's messages and
//! these error responses never interleave.

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream};
use tokio::sync::mpsc;

/// Larger bodies are refused (and skipped) rather than buffered.
const MAX_BODY_BYTES: usize = 256 << 20;
const PIPE_BYTES: usize = 1 << 20;

/// Returns the streams tower-lsp should serve on, and starts the tasks that pump stdin/stdout through them.
pub fn validated_stdio(
    stdin: impl AsyncRead + Unpin + Send + 'static,
    stdout: impl AsyncWrite + Unpin + Send + 'static,
) -> (DuplexStream, DuplexStream) {
    let (lsp_in, mut to_lsp) = tokio::io::duplex(PIPE_BYTES);
    let (from_lsp, lsp_out) = tokio::io::duplex(PIPE_BYTES);
    let (errors_tx, errors_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stdin);
        loop {
            match read_frame(&mut reader).await {
                Frame::Eof => break,
                Frame::Body(body) => match check_message(&body) {
                    Ok(rewritten) => {
                        if write_frame(&mut to_lsp, rewritten.as_deref().unwrap_or(&body)).await.is_err() {
                            break;
                        }
                    }
                    Err(error) => {
                        tracing::warn!("rejected message: {}", error["error"]["message"]);
                        let _ = errors_tx.send(serde_json::to_vec(&error).expect("serializable"));
                    }
                },
                Frame::Bad(reason) => {
                    tracing::warn!("rejected frame: {reason}");
                    let error = error_response(Value::Null, -32700, &reason);
                    let _ = errors_tx.send(serde_json::to_vec(&error).expect("serializable"));
                }
            }
        }
        // Closing tower-lsp's input ends the session, as the real stdin closing would.
        let _ = to_lsp.shutdown().await;
    });
    tokio::spawn(forward_output(from_lsp, errors_rx, stdout));
    (lsp_in, lsp_out)
}

enum Frame {
    Body(Vec<u8>),
    Bad(String),
    Eof,
}

async fn read_frame(reader: &mut (impl AsyncBufReadExt + Unpin)) -> Frame {
    let mut content_length: Option<usize> = None;
    let mut saw_header = false;
    loop {
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return Frame::Eof,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&line);
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            if !saw_header {
                continue; // Stray blank line between frames.
            }
            break;
        }
        saw_header = true;
        match line.split_once(':') {
            Some((name, value)) if name.trim().eq_ignore_ascii_case("content-length") => {
                match value.trim().parse::<usize>() {
                    Ok(n) => content_length = Some(n),
                    Err(_) => return Frame::Bad(format!("invalid Content-Length header {value:?}")),
                }
            }
            Some((name, _)) if name.trim().eq_ignore_ascii_case("content-type") => {}
            _ => return Frame::Bad(format!("not an LSP header line: {:?}", truncate(line, 80))),
        }
    }
    let Some(len) = content_length else { return Frame::Bad("message without a Content-Length header".into()) };
    if len > MAX_BODY_BYTES {
        // Skip the body so the stream stays in sync.
        let skipped = tokio::io::copy(&mut reader.take(len as u64), &mut tokio::io::sink()).await;
        return match skipped {
            Ok(n) if n as usize == len => Frame::Bad(format!("message of {len} bytes exceeds {MAX_BODY_BYTES}")),
            _ => Frame::Eof,
        };
    }
    let mut body = vec![0; len];
    match reader.read_exact(&mut body).await {
        Ok(_) => Frame::Body(body),
        Err(_) => Frame::Eof,
    }
}

/// Methods that take no params: tower-lsp answers `"params": null` on them with -32602 "Unexpected params", but
/// JSON-RPC allows it and eglot sends `shutdown` that way (then never sends `exit`).
const NO_PARAMS: &[&str] = &["shutdown", "exit"];

/// Accepts exactly what tower-lsp can decode; returns the error response for anything else. `Ok(Some(body))` is
/// the message rewritten into the form tower-lsp accepts.
fn check_message(body: &[u8]) -> Result<Option<Vec<u8>>, Value> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|err| error_response(Value::Null, -32700, &format!("parse error: {err}")))?;
    let Value::Object(obj) = &value else {
        return Err(error_response(Value::Null, -32600, "invalid request: a message must be a JSON object (batches are not part of LSP)"));
    };
    let id = obj.get("id").cloned().unwrap_or(Value::Null);
    let id_ok = matches!(id, Value::Null | Value::Number(_) | Value::String(_));
    let reply_id = if id_ok { id.clone() } else { Value::Null };
    if obj.get("jsonrpc") != Some(&json!("2.0")) {
        return Err(error_response(reply_id, -32600, "invalid request: \"jsonrpc\" must be \"2.0\""));
    }
    if !id_ok {
        return Err(error_response(Value::Null, -32600, "invalid request: \"id\" must be a number or a string"));
    }
    match obj.get("method") {
        Some(Value::String(method)) => match obj.get("params") {
            Some(Value::Null) if NO_PARAMS.contains(&method.as_str()) => {
                let mut obj = obj.clone();
                obj.remove("params");
                Ok(Some(serde_json::to_vec(&obj).expect("serializable")))
            }
            None | Some(Value::Object(_)) | Some(Value::Array(_)) | Some(Value::Null) => Ok(None),
            Some(_) => Err(error_response(reply_id, -32600, "invalid request: \"params\" must be an object or an array")),
        },
        Some(_) => Err(error_response(reply_id, -32600, "invalid request: \"method\" must be a string")),
        None if obj.contains_key("result") || obj.contains_key("error") => Ok(None),
        None => Err(error_response(reply_id, -32600, "invalid request: no \"method\"")),
    }
}

fn error_response(id: Value, code: i64, message: &str) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } })
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((idx, _)) => &s[..idx],
        None => s,
    }
}

async fn write_frame(out: &mut (impl AsyncWrite + Unpin), body: &[u8]) -> std::io::Result<()> {
    out.write_all(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes()).await?;
    out.write_all(body).await?;
    out.flush().await
}

/// Copies tower-lsp's frames and our error frames to stdout, one whole frame at a time.
async fn forward_output(
    from_lsp: DuplexStream,
    mut errors: mpsc::UnboundedReceiver<Vec<u8>>,
    mut stdout: impl AsyncWrite + Unpin,
) {
    let mut from_lsp = BufReader::new(from_lsp);
    let mut lsp_open = true;
    loop {
        tokio::select! {
            frame = read_frame(&mut from_lsp), if lsp_open => match frame {
                Frame::Body(body) => {
                    if write_frame(&mut stdout, &body).await.is_err() {
                        return;
                    }
                }
                Frame::Bad(reason) => tracing::error!("tower-lsp wrote an invalid frame: {reason}"),
                Frame::Eof => lsp_open = false,
            },
            Some(body) = errors.recv() => {
                if write_frame(&mut stdout, &body).await.is_err() {
                    return;
                }
            }
            else => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_tower_lsp_cannot_decode_are_answered_here() {
        assert!(check_message(br#"{"jsonrpc":"2.0","id":1,"method":"x","params":{}}"#).is_ok());
        assert!(check_message(br#"{"jsonrpc":"2.0","id":1,"result":null}"#).is_ok());
        assert_eq!(check_message(b"{").unwrap_err()["error"]["code"], -32700);
        assert_eq!(check_message(b"[1]").unwrap_err()["error"]["code"], -32600);
        let wrong_version = check_message(br#"{"jsonrpc":"1.0","id":7,"method":"x"}"#).unwrap_err();
        assert_eq!(wrong_version["id"], 7);
        assert_eq!(check_message(br#"{"jsonrpc":"2.0","id":{},"method":"x"}"#).unwrap_err()["id"], Value::Null);
        assert!(check_message(br#"{"jsonrpc":"2.0","method":"x","params":3}"#).is_err());
        let shutdown: Value = serde_json::from_slice(&check_message(br#"{"jsonrpc":"2.0","id":3,"method":"shutdown","params":null}"#).unwrap().unwrap()).unwrap();
        assert_eq!(shutdown, json!({"jsonrpc": "2.0", "id": 3, "method": "shutdown"}));
    }
}
