//! An HTTP server on 127.0.0.1 that replays recorded response bodies, for the protocols of servers that cannot run
//! on these machines (vLLM, SGLang, Ollama). The real llama-server is tested against itself; this is only for
//! the others' shapes: streamed bodies chunk by chunk with delays, error statuses, garbage, silence.
//!
//! Every request is recorded (method, path, headers, JSON body), and so is every reply the client broke off
//! (the connection closed while chunks were still to be written): that is how a test sees that dropping a stream
//! reaches the server.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// What the double answers on one path.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    /// Written one after the other, each after its delay.
    pub chunks: Vec<(Duration, Vec<u8>)>,
    /// After the chunks, keep the connection open without writing (for stall and timeout tests), this long.
    pub hold: Duration,
}

impl Reply {
    pub fn json(status: u16, body: &str) -> Reply {
        Reply { status, content_type: "application/json".into(), chunks: vec![(Duration::ZERO, body.as_bytes().to_vec())], hold: Duration::ZERO }
    }

    pub fn text(status: u16, content_type: &str, body: &str) -> Reply {
        Reply { status, content_type: content_type.into(), chunks: vec![(Duration::ZERO, body.as_bytes().to_vec())], hold: Duration::ZERO }
    }

    /// A streamed body: each line of `lines` (framing included, e.g. `data: {...}\n\n`) as its own chunk, `gap`
    /// apart.
    pub fn stream(content_type: &str, lines: &[String], gap: Duration) -> Reply {
        Reply {
            status: 200,
            content_type: content_type.into(),
            chunks: lines.iter().map(|l| (gap, l.as_bytes().to_vec())).collect(),
            hold: Duration::ZERO,
        }
    }

    pub fn hold(mut self, hold: Duration) -> Reply {
        self.hold = hold;
        self
    }
}

/// One request the double received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: Value,
}

pub struct HttpDouble {
    port: u16,
    routes: Arc<Mutex<HashMap<String, Reply>>>,
    requests: Arc<Mutex<Vec<Recorded>>>,
    broken_off: Arc<AtomicUsize>,
}

impl HttpDouble {
    /// Starts serving `routes` (path -> reply; unknown paths get 404) on a free port.
    pub fn start(routes: Vec<(&str, Reply)>) -> HttpDouble {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1");
        let port = listener.local_addr().unwrap().port();
        let routes = Arc::new(Mutex::new(routes.into_iter().map(|(p, r)| (p.to_owned(), r)).collect::<HashMap<_, _>>()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let broken_off = Arc::new(AtomicUsize::new(0));
        let (r, q, b) = (Arc::clone(&routes), Arc::clone(&requests), Arc::clone(&broken_off));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (r, q, b) = (Arc::clone(&r), Arc::clone(&q), Arc::clone(&b));
                std::thread::spawn(move || serve(stream, &r, &q, &b));
            }
        });
        HttpDouble { port, routes, requests, broken_off }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Replaces (or adds) the reply of one path.
    pub fn set(&self, path: &str, reply: Reply) {
        self.routes.lock().unwrap().insert(path.to_owned(), reply);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// Replies the client broke off by closing the connection before the last chunk.
    pub fn broken_off(&self) -> usize {
        self.broken_off.load(Ordering::Relaxed)
    }
}

/// A port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn serve(stream: TcpStream, routes: &Mutex<HashMap<String, Reply>>, requests: &Mutex<Vec<Recorded>>, broken_off: &AtomicUsize) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().split('?').next().unwrap_or_default().to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let length: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    requests.lock().unwrap().push(Recorded { method, path: path.clone(), headers, body });
    let reply = routes.lock().unwrap().get(&path).cloned().unwrap_or_else(|| Reply::json(404, r#"{"error":"not found"}"#));
    let mut out = stream;
    let head = format!("HTTP/1.1 {} X\r\nContent-Type: {}\r\nConnection: close\r\n\r\n", reply.status, reply.content_type);
    if out.write_all(head.as_bytes()).is_err() {
        return;
    }
    let total = reply.chunks.len();
    for (i, (delay, chunk)) in reply.chunks.iter().enumerate() {
        std::thread::sleep(*delay);
        // A closed connection shows on the write after the close (or the one after).
        if out.write_all(chunk).and_then(|_| out.flush()).is_err() {
            if i < total {
                broken_off.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
    }
    std::thread::sleep(reply.hold);
}

/// `data: <json>\n\n` for each of `events`, then `data: [DONE]\n\n` when `done`.
pub fn sse(events: &[&str], done: bool) -> Vec<String> {
    let mut out: Vec<String> = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    if done {
        out.push("data: [DONE]\n\n".into());
    }
    out
}

/// One line per object.
pub fn ndjson(lines: &[&str]) -> Vec<String> {
    lines.iter().map(|l| format!("{l}\n")).collect()
}
