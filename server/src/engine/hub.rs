//! Downloads from the Hugging Face Hub for `hf:owner/repo/file.gguf` model specs: in process with reqwest,
//! resumable (a `.part` file and a `Range` request), checked against the sha256 the Hub publishes for the file
//! (its LFS object id, `X-Linked-Etag`), with progress reported to the caller (a terminal bar for the CLI,
//! `$/progress` in the LSP). `HF_ENDPOINT` points at a mirror and `HF_TOKEN` opens gated or private repos, as
//! with the Hub's own tools; the token goes only into the `Authorization` header, never into a message.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;

/// What a download reports while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadEvent {
    /// The download starts (or resumes at `resumed_at` bytes); `total` when the Hub said the size.
    Start { url: String, total: Option<u64>, resumed_at: u64 },
    /// Bytes of the file on disk so far.
    Bytes { done: u64, total: Option<u64> },
    /// The whole file is there; its sha256 is being checked.
    Verifying,
}

/// Where to download from and with which credentials. `from_env` reads the Hub's usual variables.
#[derive(Clone)]
pub struct HubSource {
    pub endpoint: String,
    pub token: Option<String>,
}

impl std::fmt::Debug for HubSource {
    // The token never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubSource").field("endpoint", &self.endpoint).field("token", &self.token.as_ref().map(|_| "<set>")).finish()
    }
}

impl HubSource {
    pub fn from_env() -> HubSource {
        let endpoint = std::env::var("HF_ENDPOINT").ok().filter(|s| !s.trim().is_empty()).unwrap_or_else(|| "https://huggingface.co".to_string());
        let token = std::env::var("HF_TOKEN").ok().filter(|s| !s.trim().is_empty());
        HubSource { endpoint: endpoint.trim_end_matches('/').to_string(), token }
    }

    /// `{endpoint}/{owner}/{repo}/resolve/{revision}/{file}`, the Hub's download address.
    pub fn url(&self, owner: &str, repo: &str, revision: &str, file: &str) -> String {
        format!("{}/{owner}/{repo}/resolve/{revision}/{file}", self.endpoint)
    }
}

/// The file's identity as the Hub states it before the download.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Metadata {
    /// The sha256 of the file (LFS files: `X-Linked-Etag`), when the Hub gives one.
    sha256: Option<String>,
    size: Option<u64>,
}

/// Download `url` into `dest` (through `dest` + `.part`, kept between attempts so that a second call resumes),
/// check the sha256 the Hub published, and move it into place. Runs its own small runtime on a thread of its own,
/// so it can be called from any thread, inside a tokio runtime or not; `report` is called on the caller's thread,
/// as the events come.
pub fn download(source: &HubSource, url: &str, dest: &Path, report: &mut dyn FnMut(DownloadEvent)) -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        // `tx` moves into the worker and is dropped when it returns, which ends the loop below.
        let worker = scope.spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("could not start the download runtime: {e}"))?;
            rt.block_on(download_async(source, url, dest, &mut |event| drop(tx.send(event))))
        });
        for event in rx {
            report(event);
        }
        worker.join().unwrap_or_else(|_| Err("the download thread panicked".to_string()))
    })
}

fn part_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

async fn download_async(source: &HubSource, url: &str, dest: &Path, report: &mut (dyn FnMut(DownloadEvent) + Send)) -> Result<(), String> {
    let parent = dest.parent().ok_or("bad destination path")?;
    std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let part = part_path(dest);
    let meta = metadata(source, url).await?;

    let mut have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    if let (Some(size), true) = (meta.size, have > 0) {
        if have > size {
            // Not a prefix of this file (a different revision was downloaded there): start again.
            have = 0;
        }
    }
    if meta.size.is_none_or(|size| have < size) {
        fetch_body(source, url, &part, have, meta.size, report).await?;
    }

    report(DownloadEvent::Verifying);
    let got = super::fetch::sha256_file(&part, |_| {}).map_err(|e| e.to_string())?;
    if let Some(want) = &meta.sha256 {
        if &got != want {
            let _ = std::fs::remove_file(&part);
            return Err(format!("the downloaded file's sha256 is {got}, the Hub says {want}; the partial file was removed, try again"));
        }
    } else {
        tracing::warn!("the Hub gave no sha256 for {url}; the file was checked only for the GGUF header");
    }
    if let Err(e) = super::fetch::check_gguf_magic(&part) {
        let _ = std::fs::remove_file(&part);
        return Err(format!("{e}; is the path in the spec right?"));
    }
    std::fs::rename(&part, dest).map_err(|e| format!("cannot move the download to {}: {e}", dest.display()))?;
    Ok(())
}

fn client(redirects: bool) -> Result<reqwest::Client, String> {
    let policy = if redirects { reqwest::redirect::Policy::limited(10) } else { reqwest::redirect::Policy::none() };
    reqwest::Client::builder()
        .redirect(policy)
        .connect_timeout(Duration::from_secs(20))
        .user_agent(concat!("pie-ls/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("could not build the HTTP client: {e}"))
}

fn with_token(req: reqwest::RequestBuilder, source: &HubSource) -> reqwest::RequestBuilder {
    match &source.token {
        Some(t) => req.bearer_auth(t),
        None => req,
    }
}

/// The Hub answers a HEAD on a LFS file with a redirect to its storage and, on that redirect, the file's sha256
/// (`X-Linked-Etag`) and size (`X-Linked-Size`); the storage's own ETag is not the sha256. So: HEAD without
/// following absolute redirects (relative ones are the Hub's own renames and are followed), as `huggingface_hub`
/// does.
async fn metadata(source: &HubSource, url: &str) -> Result<Metadata, String> {
    let http = client(false)?;
    let mut current = url.to_string();
    for _ in 0..5 {
        let resp = with_token(http.head(&current), source).send().await.map_err(|e| unreachable_hint(url, &e))?;
        let status = resp.status();
        status_error(status, url)?;
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        if status.is_redirection() {
            if let Some(loc) = header("location").filter(|l| l.starts_with('/')) {
                if header("x-linked-etag").is_none() {
                    let base = reqwest::Url::parse(&current).map_err(|e| e.to_string())?;
                    current = base.join(&loc).map_err(|e| e.to_string())?.to_string();
                    continue;
                }
            }
        }
        let etag = header("x-linked-etag").or_else(|| header("etag"));
        let sha256 = etag.map(|e| e.trim_start_matches("W/").trim_matches('"').to_ascii_lowercase()).filter(|e| e.len() == 64 && e.bytes().all(|b| b.is_ascii_hexdigit()));
        let size = header("x-linked-size").or_else(|| if status.is_success() { header("content-length") } else { None }).and_then(|s| s.parse().ok());
        return Ok(Metadata { sha256, size });
    }
    Err(format!("too many redirects for {url}"))
}

fn status_error(status: reqwest::StatusCode, url: &str) -> Result<(), String> {
    match status.as_u16() {
        401 | 403 => Err(format!("{url} answered {status}: the repository is gated or private; set HF_TOKEN to a token that may read it")),
        404 => Err(format!("{url} answered 404: no such repository, revision or file on the Hub")),
        429 => Err(format!("{url} answered 429: rate-limited by the Hub; wait a while or set HF_TOKEN")),
        s if s >= 400 => Err(format!("{url} answered {status}")),
        _ => Ok(()),
    }
}

fn unreachable_hint(url: &str, e: &reqwest::Error) -> String {
    format!("could not reach {url} ({e}); is the Hub reachable from here? Set HF_ENDPOINT for a mirror, or download the file and pass its path")
}

/// GET the rest of the file (from `have` bytes on) and append it to `part`, reporting progress.
async fn fetch_body(source: &HubSource, url: &str, part: &Path, have: u64, total: Option<u64>, report: &mut (dyn FnMut(DownloadEvent) + Send)) -> Result<(), String> {
    let http = client(true)?;
    let mut req = with_token(http.get(url), source);
    if have > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let resp = req.send().await.map_err(|e| unreachable_hint(url, &e))?;
    let status = resp.status();
    status_error(status, url)?;
    let resumed = status == reqwest::StatusCode::PARTIAL_CONTENT;
    let start = if resumed { have } else { 0 };
    let total = total.or_else(|| resp.content_length().map(|n| n + start));
    let mut file = std::fs::OpenOptions::new().create(true).write(true).truncate(!resumed).open(part).map_err(|e| format!("cannot write {}: {e}", part.display()))?;
    file.seek(SeekFrom::Start(start)).map_err(|e| e.to_string())?;
    report(DownloadEvent::Start { url: url.to_string(), total, resumed_at: start });
    let mut done = start;
    let mut body = resp.bytes_stream();
    let mut last_report = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("the download of {url} broke off at {done} bytes ({e}); run again to resume"))?;
        file.write_all(&chunk).map_err(|e| format!("cannot write {}: {e}", part.display()))?;
        done += chunk.len() as u64;
        if done - last_report >= 1 << 20 {
            last_report = done;
            report(DownloadEvent::Bytes { done, total });
        }
    }
    file.flush().map_err(|e| e.to_string())?;
    report(DownloadEvent::Bytes { done, total });
    if let Some(t) = total {
        if done != t {
            return Err(format!("the download of {url} ended at {done} of {t} bytes; run again to resume"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The Hub cannot be reached from here: these tests put a small HTTP server on 127.0.0.1 in its place that
    //! answers the way the Hub does (a HEAD redirect carrying `X-Linked-Etag`/`X-Linked-Size`, then ranged GETs
    //! from the storage address).
    use super::*;
    use crate::runner::Scratch;
    use sha2::{Digest, Sha256};
    use std::io::BufRead;
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    struct FakeHub {
        endpoint: String,
        /// Request lines and the headers of interest, as received.
        seen: Arc<Mutex<Vec<String>>>,
    }

    /// Serves `body` at `/o/r/resolve/main/m.gguf` (HEAD: a redirect with the LFS headers, `etag` given) and at
    /// `/cdn/m.gguf` (GET, honouring `Range`). `require_token`: 401 without `Authorization: Bearer secret`.
    fn fake_hub(body: Vec<u8>, etag: String, require_token: bool) -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let request = line.trim().to_string();
                let (mut range, mut auth) = (None, None);
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    let lower = h.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("range: bytes=") {
                        range = v.trim().trim_end_matches('-').parse::<usize>().ok();
                    }
                    if lower.starts_with("authorization:") {
                        auth = Some(h.trim()["authorization:".len()..].trim().to_string());
                    }
                }
                log.lock().unwrap().push(format!("{request} range={range:?} auth={}", auth.as_deref().unwrap_or("-")));
                let authorised = !require_token || auth.as_deref() == Some("Bearer secret");
                let response: Vec<u8> = if !authorised {
                    b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec()
                } else if request.starts_with("HEAD /o/r/resolve/main/m.gguf") {
                    format!("HTTP/1.1 302 Found\r\nlocation: http://{}/cdn/m.gguf\r\nx-linked-etag: \"{etag}\"\r\nx-linked-size: {}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n", listener_addr(&stream), body.len()).into_bytes()
                } else if request.starts_with("GET /o/r/resolve/main/m.gguf") {
                    format!("HTTP/1.1 302 Found\r\nlocation: /cdn/m.gguf\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").into_bytes()
                } else if request.starts_with("GET /cdn/m.gguf") {
                    let from = range.unwrap_or(0).min(body.len());
                    let status = if range.is_some() { "206 Partial Content" } else { "200 OK" };
                    let mut r = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len() - from).into_bytes();
                    r.extend_from_slice(&body[from..]);
                    r
                } else {
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec()
                };
                let _ = stream.write_all(&response);
            }
        });
        FakeHub { endpoint, seen }
    }

    fn listener_addr(stream: &std::net::TcpStream) -> String {
        stream.local_addr().unwrap().to_string()
    }

    fn model_bytes(n: usize) -> Vec<u8> {
        let mut v = b"GGUF".to_vec();
        v.extend((0..n).map(|i| (i * 31 % 251) as u8));
        v
    }

    fn sha(bytes: &[u8]) -> String {
        Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn downloads_resumes_and_checks_the_published_sha256() {
        let body = model_bytes(3 << 20);
        let hub = fake_hub(body.clone(), sha(&body), true);
        let dir = Scratch::empty("hub-test").unwrap();
        let dest = dir.path().join("sub/m.gguf");
        let source = HubSource { endpoint: hub.endpoint.clone(), token: Some("secret".into()) };
        let url = source.url("o", "r", "main", "m.gguf");

        // A download that broke off: the first megabyte and a bit is already there.
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::write(part_path(&dest), &body[..1_100_000]).unwrap();
        let mut events = Vec::new();
        download(&source, &url, &dest, &mut |e| events.push(e)).unwrap();

        assert_eq!(std::fs::read(&dest).unwrap(), body, "the resumed file is the whole file");
        assert!(!part_path(&dest).exists());
        assert_eq!(events.first(), Some(&DownloadEvent::Start { url: url.clone(), total: Some(body.len() as u64), resumed_at: 1_100_000 }));
        assert!(events.contains(&DownloadEvent::Bytes { done: body.len() as u64, total: Some(body.len() as u64) }));
        assert_eq!(events.last(), Some(&DownloadEvent::Verifying));
        let seen = hub.seen.lock().unwrap().clone();
        assert!(seen.iter().any(|l| l.starts_with("GET /cdn/m.gguf") && l.contains("range=Some(1100000)")), "{seen:?}");
        assert!(seen.iter().all(|l| l.contains("auth=Bearer secret")), "HF_TOKEN goes with every request: {seen:?}");
    }

    #[test]
    fn a_file_that_does_not_match_the_published_sha256_is_refused_and_removed() {
        let body = model_bytes(100_000);
        let hub = fake_hub(body, "ab".repeat(32), false);
        let dir = Scratch::empty("hub-test").unwrap();
        let dest = dir.path().join("m.gguf");
        let source = HubSource { endpoint: hub.endpoint.clone(), token: None };
        let err = download(&source, &source.url("o", "r", "main", "m.gguf"), &dest, &mut |_| {}).unwrap_err();
        assert!(err.contains("sha256") && err.contains(&"ab".repeat(32)), "{err}");
        assert!(!dest.exists() && !part_path(&dest).exists(), "nothing half-checked is left to be loaded");
    }

    #[test]
    fn a_gated_repository_says_to_set_hf_token_without_showing_one() {
        let body = model_bytes(1000);
        let hub = fake_hub(body.clone(), sha(&body), true);
        let dir = Scratch::empty("hub-test").unwrap();
        let source = HubSource { endpoint: hub.endpoint.clone(), token: Some("wrong-token".into()) };
        let err = download(&source, &source.url("o", "r", "main", "m.gguf"), &dir.path().join("m.gguf"), &mut |_| {}).unwrap_err();
        assert!(err.contains("401") && err.contains("HF_TOKEN"), "{err}");
        assert!(!err.contains("wrong-token") && !format!("{source:?}").contains("wrong-token"));

        let missing = HubSource { endpoint: hub.endpoint.clone(), token: Some("secret".into()) };
        let err = download(&missing, &missing.url("o", "r", "main", "nope.gguf"), &dir.path().join("n.gguf"), &mut |_| {}).unwrap_err();
        assert!(err.contains("404"), "{err}");
    }

    #[test]
    fn a_hub_that_is_down_gives_a_clear_error() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let source = HubSource { endpoint: format!("http://127.0.0.1:{port}"), token: None };
        let dir = Scratch::empty("hub-test").unwrap();
        let err = download(&source, &source.url("o", "r", "main", "m.gguf"), &dir.path().join("m.gguf"), &mut |_| {}).unwrap_err();
        assert!(err.contains("could not reach") && err.contains("HF_ENDPOINT"), "{err}");
    }
}
