//! Filesystem confinement of a run with Landlock (Linux 5.13+, no root needed): the run may write only inside its
//! working directory (the scratch copy), a private temporary directory and the build caches its caller names, and
//! may read only system directories, the toolchains of the commands it runs (found on `PATH`) and those places.
//!
//! The ruleset is built in the parent (it allocates and opens files) and only enforced in the child between fork
//! and exec, with two plain syscalls (`prctl(PR_SET_NO_NEW_PRIVS)` and `landlock_restrict_self`), which is what
//! may safely run there in a multi-threaded server.
//!
//! Best effort: where the kernel has no Landlock the run goes ahead unconfined and says so
//! (`RunOutput::confined`), as the network isolation does.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use landlock::{path_beneath_rules, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreatedAttr, ABI};

/// The newest Landlock ABI this code asks for; older kernels enforce what they know (best effort).
const TARGET_ABI: ABI = ABI::V7;

/// System directories a run may read (and execute from).
const SYSTEM_READ: &[&str] = &["/bin", "/sbin", "/usr", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/proc", "/sys", "/dev", "/nix/store"];

/// Device files a run may also write (and a shell may open for `2>/dev/null`).
const DEVICE_WRITE: &[&str] = &["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/ptmx", "/dev/pts", "/dev/shm"];

/// Programs whose installation is readable when a command names them.
const TOOLCHAIN_HINTS: &[&str] = &["sh", "cargo", "rustc", "rustup", "go", "node", "npm", "npx", "python3", "python", "pytest", "tsc", "javac", "java"];

/// The Landlock ABI version the kernel offers (0: none).
pub fn kernel_abi() -> i64 {
    // SAFETY: the version query takes no pointer (NULL, size 0) and has no side effect.
    let v = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, std::ptr::null::<u8>(), 0usize, 1u32) };
    v.max(0)
}

/// A prepared confinement: the ruleset to enforce in the child and the private temporary directory (removed on
/// drop).
pub struct Confinement {
    ruleset: Option<OwnedFd>,
    tmp: PathBuf,
}

impl Confinement {
    /// The ruleset's descriptor for `enforce`, or `None` where Landlock is unavailable.
    pub fn raw_fd(&self) -> Option<i32> {
        self.ruleset.as_ref().map(|fd| fd.as_raw_fd())
    }

    pub fn tmp(&self) -> &Path {
        &self.tmp
    }
}

impl Drop for Confinement {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Builds the confinement of `command` run in `cwd`. `writable` are extra directories the run may write (build
/// caches); `env` is the run's extra environment (absolute paths in it become readable). `proc_write` allows
/// writes under `/proc` (`unshare -r` writes its uid map there).
pub fn prepare(command: &str, cwd: &Path, env: &[(String, String)], writable: &[PathBuf], proc_write: bool) -> Result<Confinement, String> {
    let tmp = std::env::temp_dir().join(format!("pie-ls-run-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("cannot create a private temporary directory: {e}"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o700));
    }
    let mut conf = Confinement { ruleset: None, tmp };
    if kernel_abi() == 0 {
        return Ok(conf);
    }
    let mut read: Vec<PathBuf> = SYSTEM_READ.iter().map(PathBuf::from).collect();
    read.extend(toolchain_dirs(command));
    read.extend(absolute_paths(command));
    for (_, value) in env {
        read.extend(value.split(':').filter(|p| p.starts_with('/')).map(PathBuf::from));
    }
    let mut write: Vec<PathBuf> = vec![cwd.to_path_buf(), conf.tmp.clone()];
    write.extend(writable.iter().cloned());
    for dir in writable {
        let _ = std::fs::create_dir_all(dir);
    }
    let mut devices: Vec<PathBuf> = DEVICE_WRITE.iter().map(PathBuf::from).collect();
    if proc_write {
        devices.push(PathBuf::from("/proc"));
    }
    let keep = |paths: Vec<PathBuf>| -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = paths.into_iter().filter(|p| p.exists() && p != Path::new("/")).collect();
        out.sort();
        out.dedup();
        out
    };
    let all = AccessFs::from_all(TARGET_ABI);
    let created = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(all)
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules(keep(read), AccessFs::from_read(TARGET_ABI))))
        .and_then(|r| r.add_rules(path_beneath_rules(keep(write), all)))
        .and_then(|r| r.add_rules(path_beneath_rules(keep(devices), all)))
        .map_err(|e| format!("cannot build the Landlock ruleset: {e}"))?;
    conf.ruleset = created.into();
    Ok(conf)
}

/// Enforces the ruleset `fd` on the calling process. Called between fork and exec: only async-signal-safe
/// syscalls.
///
/// # Safety
/// `fd` must be a Landlock ruleset descriptor that stays open until this returns.
pub unsafe fn enforce(fd: i32) -> std::io::Result<()> {
    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The installation directories of the programs `command` may run: every word of it (and the usual toolchain
/// drivers) found on `PATH`, taken to its prefix (`<prefix>/bin/<program>`), symlinks followed, plus the homes that
/// rustup, cargo, Go and Python keep outside the prefix.
fn toolchain_dirs(command: &str) -> Vec<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let words: Vec<&str> =
        command.split(|c: char| !(c.is_ascii_alphanumeric() || "._+-".contains(c))).filter(|w| !w.is_empty()).chain(TOOLCHAIN_HINTS.iter().copied()).collect();
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for word in words {
        if !seen.insert(word) {
            continue;
        }
        let Some(found) = which(word) else { continue };
        for path in [found.clone(), std::fs::canonicalize(&found).unwrap_or(found)] {
            if let Some(prefix) = prefix_of(&path) {
                // A program straight in the home folder must not open all of it.
                if home.as_deref() == Some(prefix.as_path()) {
                    out.extend(path.parent().map(Path::to_path_buf));
                } else {
                    out.push(prefix);
                }
            }
        }
        let env_or_home = |var: &str, rel: &str| std::env::var_os(var).map(PathBuf::from).or_else(|| home.as_ref().map(|h| h.join(rel)));
        match word {
            "cargo" | "rustc" | "rustup" => {
                out.extend(env_or_home("RUSTUP_HOME", ".rustup"));
                out.extend(env_or_home("CARGO_HOME", ".cargo"));
            }
            "go" => {
                out.extend(env_or_home("GOPATH", "go"));
                out.extend(std::env::var_os("GOROOT").map(PathBuf::from));
            }
            "python3" | "python" | "pytest" => {
                // `pip install --user` packages.
                out.extend(home.as_ref().map(|h| h.join(".local/lib")));
            }
            _ => {}
        }
    }
    out
}

fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return None;
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| p.is_file())
}

/// `/x/y/bin/tool` -> `/x/y`; `/x/y/tool` -> `/x/y`. System prefixes come out as they are (`/usr`).
fn prefix_of(program: &Path) -> Option<PathBuf> {
    let dir = program.parent()?;
    let prefix = if matches!(dir.file_name().and_then(|n| n.to_str()), Some("bin" | "shims" | "sbin")) { dir.parent()? } else { dir };
    (prefix != Path::new("/")).then(|| prefix.to_path_buf())
}

/// Absolute paths written in a command (`PYTHONPATH=/x`, `/opt/tool/bin/run`): the user configured them.
fn absolute_paths(command: &str) -> Vec<PathBuf> {
    command
        .split(|c: char| c.is_whitespace() || "=:;&|()'\"".contains(c))
        .filter(|w| w.starts_with('/') && w.len() > 1)
        .map(PathBuf::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_paths() {
        assert_eq!(prefix_of(Path::new("/opt/node/bin/node")), Some(PathBuf::from("/opt/node")));
        assert_eq!(prefix_of(Path::new("/usr/lib/go-1.19/bin/go")), Some(PathBuf::from("/usr/lib/go-1.19")));
        assert_eq!(prefix_of(Path::new("/bin/sh")), None);
        assert_eq!(absolute_paths("PYTHONPATH=/a/b python3 -m x '/c d'"), vec![PathBuf::from("/a/b"), PathBuf::from("/c")]);
    }
}
