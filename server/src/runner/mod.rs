//! The runner: the only place that executes code the user did not write (their tests, their functions), and only
//! when the user invoked an action.
//!
//! Invariants:
//! - Everything runs in a scratch copy (`Scratch`), never in the user's workspace.
//! - Every run has a wall-clock timeout and a memory cap (`RLIMIT_DATA`, which counts heap and private mappings
//!   but not address space merely reserved, so Node and Go still start), runs in its own process group, and the
//!   whole group is killed when the run ends, times out, or is cancelled (also when the caller's future is dropped:
//!   the cancel flag is polled).
//! - Captured output is bounded (head and tail kept).
//! - The network is cut with an unshared network namespace where the platform permits it (`unshare -n`, or
//!   `unshare -rn` as an unprivileged user); elsewhere it stays reachable and `RunOutput::network_isolated` says so.
//! - The filesystem is confined with Landlock where the kernel offers it (`confine.rs`): writes only inside the
//!   working directory (the scratch copy), a private `TMPDIR` and the build caches named in the environment; reads
//!   only system directories, the toolchains of the command and those places. Elsewhere `RunOutput::confined` is
//!   false and the evidence says "not confined on this platform".

mod confine;
mod outcome;
mod scratch;
mod templates;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use confine::kernel_abi as landlock_abi;
pub use outcome::{parse_outcomes, TestOutcome, TestStatus};
pub use scratch::Scratch;
pub use templates::{python_fallback_runner, shell_quote, TestCommands, TestTarget, PY_RUNNER_FILE};

/// Limits of one run.
#[derive(Clone, Debug)]
pub struct Limits {
    pub timeout: Duration,
    /// Cap on the data segment and private memory of every process of the run, in MiB (0: none).
    pub memory_mb: u64,
    /// Bytes of stdout+stderr kept (half from the start, half from the end).
    pub output_bytes: usize,
    /// Cut the network where the platform allows it.
    pub isolate_network: bool,
    /// Confine the filesystem (Landlock) where the platform allows it.
    pub confine: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { timeout: Duration::from_secs(60), memory_mb: 4096, output_bytes: 64 * 1024, isolate_network: true, confine: true }
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunStatus {
    Exited(i32),
    /// Killed by a signal it did not get from us (a crash, the OOM killer).
    Signaled(i32),
    TimedOut,
    Cancelled,
    /// The shell could not be started at all.
    FailedToStart(String),
}

/// The result of one command.
#[derive(Clone, Debug)]
pub struct RunOutput {
    pub command: String,
    pub status: RunStatus,
    /// stdout and stderr in the order they were written (one pipe), bounded by `Limits::output_bytes`.
    pub output: String,
    pub duration: Duration,
    pub network_isolated: bool,
    /// Whether the filesystem was confined (Landlock) during the run.
    pub confined: bool,
}

impl RunOutput {
    pub fn success(&self) -> bool {
        self.status == RunStatus::Exited(0)
    }

    /// One line for the user: what ran and how it ended.
    pub fn summary(&self) -> String {
        let how = match &self.status {
            RunStatus::Exited(0) => "passed".to_owned(),
            RunStatus::Exited(code) => format!("failed (exit {code})"),
            RunStatus::Signaled(sig) => format!("crashed (signal {sig})"),
            RunStatus::TimedOut => format!("timed out after {:.0} s", self.duration.as_secs_f64()),
            RunStatus::Cancelled => "cancelled".to_owned(),
            RunStatus::FailedToStart(e) => format!("could not start: {e}"),
        };
        format!("`{}` {how}", self.command)
    }

    /// The output with a message added where the shell said the command does not exist (exit 127), or where a
    /// confined run was denied a file outside its scratch copy.
    pub fn explained_output(&self) -> String {
        if self.status == RunStatus::Exited(127) {
            return format!("{}\n(the command was not found: check the test command settings)", self.output.trim_end());
        }
        if let Some(note) = self.confinement_note() {
            return format!("{}\n({note})", self.output.trim_end());
        }
        self.output.clone()
    }

    /// Why a confined run that failed with "Permission denied" failed, for the user; `None` otherwise.
    pub fn confinement_note(&self) -> Option<&'static str> {
        let denied = self.output.contains("Permission denied") || self.output.contains("PermissionError") || self.output.contains("EACCES");
        (self.confined && !self.success() && denied)
            .then_some("the run was confined: it may write only inside the scratch copy and its temporary directory, and read only the system, its toolchain and the scratch copy")
    }

    /// How the run was isolated, for evidence shown to users.
    pub fn isolation(&self) -> String {
        let net = if self.network_isolated { "no network" } else { "network not isolated on this platform" };
        let fs = if self.confined { "files confined to the scratch copy" } else { "files not confined on this platform" };
        format!("{net}, {fs}")
    }
}

/// Runs `command` with `sh -c` in `cwd` under `limits`. Never panics; every failure is a `RunStatus`.
pub fn run_shell(command: &str, cwd: &Path, env: &[(String, String)], limits: &Limits, cancel: &AtomicBool) -> RunOutput {
    let started = Instant::now();
    let isolate = if limits.isolate_network { network_isolation() } else { None };
    let failed = |e: String| RunOutput {
        command: command.to_owned(),
        status: RunStatus::FailedToStart(e),
        output: String::new(),
        duration: started.elapsed(),
        network_isolated: false,
        confined: false,
    };
    let mut env: Vec<(String, String)> = env.to_vec();
    let confinement = if limits.confine {
        // Go's build cache moves out of the user's home into pie-ls's own (model-written code could poison it).
        if !env.iter().any(|(k, _)| k == "GOCACHE") && command.split(|c: char| !c.is_ascii_alphanumeric()).any(|w| w == "go") {
            env.push(("GOCACHE".into(), crate::engine::fetch::cache_root().join("runs").join("go-build").display().to_string()));
        }
        let writable: Vec<PathBuf> = env.iter().filter(|(k, _)| CACHE_VARS.contains(&k.as_str())).map(|(_, v)| PathBuf::from(v)).collect();
        let unprivileged_ns = isolate.is_some_and(|p| p.contains(&"-rn"));
        match confine::prepare(command, cwd, &env, &writable, unprivileged_ns) {
            Ok(c) => {
                let tmp = c.tmp().display().to_string();
                for var in ["TMPDIR", "TMP", "TEMP"] {
                    env.push((var.into(), tmp.clone()));
                }
                Some(c)
            }
            Err(e) => return failed(e),
        }
    } else {
        None
    };
    let ruleset_fd = confinement.as_ref().and_then(|c| c.raw_fd());
    let mut cmd = match isolate {
        Some(prefix) => {
            let mut c = Command::new(prefix[0]);
            c.args(&prefix[1..]).arg("--").arg("sh").arg("-c").arg(command);
            c
        }
        None => {
            let mut c = Command::new("sh");
            c.arg("-c").arg(command);
            c
        }
    };
    // stdout and stderr share one pipe, as `2>&1` would: two pipes read by two threads interleave their chunks in
    // whatever order the threads are scheduled, so a traceback could land in the middle of a line of stdout.
    let (mut output_reader, output_writer) = match merged_output_pipe() {
        Ok(pipe) => pipe,
        Err(e) => return failed(format!("cannot create the output pipe: {e}")),
    };
    let stderr_writer = match output_writer.try_clone() {
        Ok(w) => w,
        Err(e) => return failed(format!("cannot create the output pipe: {e}")),
    };
    cmd.current_dir(cwd).stdin(Stdio::null()).stdout(Stdio::from(output_writer)).stderr(Stdio::from(stderr_writer));
    cmd.env("PYTHONDONTWRITEBYTECODE", "1").env("PYTHONUNBUFFERED", "1").env("NO_COLOR", "1").env("CI", "1");
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let memory_bytes = limits.memory_mb.saturating_mul(1024 * 1024);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // If the server dies mid-run, its shell dies too (the group kill cannot run then).
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if memory_bytes > 0 {
                    let lim = libc::rlimit { rlim_cur: memory_bytes as libc::rlim_t, rlim_max: memory_bytes as libc::rlim_t };
                    if libc::setrlimit(libc::RLIMIT_DATA, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if let Some(fd) = ruleset_fd {
                    confine::enforce(fd)?;
                }
                Ok(())
            });
        }
    }
    let spawned = cmd.spawn();
    // The command holds this process's copies of the pipe's write end: drop it, or the reader never sees EOF.
    drop(cmd);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return failed(e.to_string()),
    };
    let pgid = child.id() as i32;
    // Kill the group however this function is left (including a panic in a reader).
    let _group = GroupGuard(pgid);
    let buffer = Arc::new(Mutex::new(Bounded::new(limits.output_bytes)));
    let reader = {
        let buffer = buffer.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n) = output_reader.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buffer.lock().unwrap().push(&chunk[..n]);
            }
        })
    };
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                use std::os::unix::process::ExitStatusExt;
                break match (status.code(), status.signal()) {
                    (Some(code), _) => RunStatus::Exited(code),
                    (None, Some(sig)) => RunStatus::Signaled(sig),
                    _ => RunStatus::Exited(-1),
                };
            }
            Ok(None) if cancel.load(Ordering::Relaxed) => break RunStatus::Cancelled,
            Ok(None) if started.elapsed() > limits.timeout => break RunStatus::TimedOut,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => break RunStatus::FailedToStart(e.to_string()),
        }
    };
    kill_group(pgid);
    let _ = child.kill();
    let _ = child.wait();
    // Grandchildren that escaped the group could hold the pipes open: do not wait on the readers for ever.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let output = buffer.lock().unwrap().text();
    RunOutput { command: command.to_owned(), status, output, duration: started.elapsed(), network_isolated: isolate.is_some(), confined: ruleset_fd.is_some() }
}

/// One pipe (read end, write end), both close-on-exec: the child gets the write end as its stdout and stderr.
fn merged_output_pipe() -> std::io::Result<(std::fs::File, std::fs::File)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nothing else.
    Ok(unsafe { (std::fs::File::from_raw_fd(fds[0]), std::fs::File::from_raw_fd(fds[1])) })
}

/// Environment variables naming build caches a confined run may write.
const CACHE_VARS: &[&str] = &["CARGO_TARGET_DIR", "GOCACHE"];

struct GroupGuard(i32);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        kill_group(self.0);
    }
}

fn kill_group(pgid: i32) {
    if pgid > 0 {
        // SAFETY: plain syscall; a negative pid addresses the process group we created.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

/// The prefix that runs a command in a fresh network namespace, probed once.
fn network_isolation() -> Option<&'static [&'static str]> {
    static PROBE: OnceLock<Option<&'static [&'static str]>> = OnceLock::new();
    *PROBE.get_or_init(|| {
        const CANDIDATES: [&[&str]; 2] = [&["unshare", "-n"], &["unshare", "-rn"]];
        CANDIDATES.into_iter().find(|prefix| {
            Command::new(prefix[0])
                .args(&prefix[1..])
                .arg("true")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    })
}

/// Whether runs can be cut off the network here (for the docs and the evidence shown to users).
pub fn network_isolation_available() -> bool {
    network_isolation().is_some()
}

/// Keeps the first and last `cap/2` bytes of a stream.
struct Bounded {
    cap: usize,
    head: Vec<u8>,
    tail: std::collections::VecDeque<u8>,
    dropped: usize,
}

impl Bounded {
    fn new(cap: usize) -> Self {
        Bounded { cap: cap.max(2), head: Vec::new(), tail: Default::default(), dropped: 0 }
    }

    fn push(&mut self, bytes: &[u8]) {
        let half = self.cap / 2;
        let mut rest = bytes;
        if self.head.len() < half {
            let n = (half - self.head.len()).min(rest.len());
            self.head.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
        for &b in rest {
            if self.tail.len() == half {
                self.tail.pop_front();
                self.dropped += 1;
            }
            self.tail.push_back(b);
        }
    }

    fn text(&self) -> String {
        let mut out = String::from_utf8_lossy(&self.head).into_owned();
        if self.dropped > 0 {
            out.push_str(&format!("\n[... {} bytes of output left out ...]\n", self.dropped));
        }
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        out.push_str(&String::from_utf8_lossy(&tail));
        out
    }
}

/// Trims text to its first `head` and last `tail` lines, saying how many were left out.
pub fn trim_lines(text: &str, head: usize, tail: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= head + tail {
        return lines.join("\n");
    }
    let mut out = lines[..head].join("\n");
    out.push_str(&format!("\n[... {} lines left out ...]\n", lines.len() - head - tail));
    out.push_str(&lines[lines.len() - tail..].join("\n"));
    out
}

/// A per-workspace directory that survives scratch copies, e.g. for `CARGO_TARGET_DIR`, so a Rust test run does not
/// rebuild every dependency each time.
pub fn persistent_cache_dir(root: &Path, what: &str) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    root.hash(&mut h);
    crate::engine::fetch::cache_root().join("runs").join(format!("{what}-{:016x}", h.finish()))
}

#[cfg(test)]
mod tests;
