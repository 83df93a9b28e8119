//! How long llama.cpp's CPU threads spin before they sleep.
//!
//! llama.cpp's CPU backend runs every graph on an OpenMP team (libgomp) and meets at an OpenMP barrier after
//! nearly every node: hundreds of barriers a decode (the default model's 24 layers of some 20-30 nodes; an
//! estimate). A thread that reaches a barrier first spins `GOMP_SPINCOUNT` times before it sleeps, 300,000 by
//! default, which on an Intel core (a `pause` is ~140 cycles) is ~15 ms by estimate. On a quiet machine the
//! partner arrives well within that. When something else wants the cores (a build, a browser, a second
//! pie-ls), the partner may be waiting for the very core the spinner holds, and each barrier can cost a whole
//! scheduler slice: a 16-token idle-refresh chunk that takes 0.17 s alone took ~8 s on a CI machine running two
//! servers on 2 cores.
//!
//! libgomp reads its settings once, when it is loaded, before `main`; so the process runs itself again with
//! `GOMP_SPINCOUNT=1000` (libgomp's own count when it knows it has more threads than cores). On a 2-core Xeon,
//! `pie-ls bench decode --sizes 1500 --variants flash-off` decoded 25.4-25.9 tokens/s alone against 24.5 with the
//! default, 11.3-14.2 against 6.7-7.4 each with two running at once, and 11.0 against 9.0 beside a busy loop
//! (`docs/engine.md`, "CPU threads under load"). A user's own `GOMP_SPINCOUNT` or `OMP_WAIT_POLICY` is kept.

use std::ffi::OsString;

/// The spin count set when the user set none.
pub const SPIN_COUNT: &str = "1000";

/// Set on the second run, so it neither runs itself again nor passes the setting on.
const RERUN_MARK: &str = "PIE_LS_OPENMP_RERUN";

/// What `ensure_short_spin` found or did, for the log once logging is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpinSetting {
    /// This run was started with `GOMP_SPINCOUNT=SPIN_COUNT`.
    Short,
    /// The user's environment already chose (`GOMP_SPINCOUNT` or `OMP_WAIT_POLICY`).
    Users(String),
    /// Running again failed; libgomp's default stays.
    RerunFailed(String),
}

/// Call first in `main`, while the process has one thread. Unless the user chose a spin count or wait policy,
/// runs this binary again (same pid, arguments and stdio: `exec`) with `GOMP_SPINCOUNT=SPIN_COUNT`; returns
/// only in the run that keeps going. That run takes the variable back out of its environment, so the commands it
/// starts (test runners, llama-server in benchmarks) see the user's environment unchanged.
pub fn ensure_short_spin() -> SpinSetting {
    if std::env::var_os(RERUN_MARK).is_some() {
        // libgomp has read it at load; nothing reads the environment again.
        std::env::remove_var(RERUN_MARK);
        std::env::remove_var("GOMP_SPINCOUNT");
        return SpinSetting::Short;
    }
    if let Some(chosen) = users_choice(|k| std::env::var_os(k)) {
        return SpinSetting::Users(chosen);
    }
    SpinSetting::RerunFailed(rerun().to_string())
}

/// `GOMP_SPINCOUNT` or `OMP_WAIT_POLICY` as the user set them, if either is.
fn users_choice(var: impl Fn(&str) -> Option<OsString>) -> Option<String> {
    ["GOMP_SPINCOUNT", "OMP_WAIT_POLICY"]
        .iter()
        .find_map(|k| var(k).map(|v| format!("{k}={}", v.to_string_lossy())))
}

#[cfg(unix)]
fn rerun() -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return e,
    };
    let mut args = std::env::args_os();
    let mut cmd = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        cmd.arg0(arg0);
    }
    // `exec` returns only on failure.
    cmd.args(args).env("GOMP_SPINCOUNT", SPIN_COUNT).env(RERUN_MARK, "1").exec()
}

#[cfg(not(unix))]
fn rerun() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::Unsupported, "not on this platform")
}

impl SpinSetting {
    /// One line for the log.
    pub fn describe(&self) -> String {
        match self {
            SpinSetting::Short => format!("OpenMP threads spin {SPIN_COUNT} times at a barrier before they sleep (GOMP_SPINCOUNT)"),
            SpinSetting::Users(chosen) => format!("OpenMP threads as the environment says ({chosen})"),
            SpinSetting::RerunFailed(e) => format!("OpenMP threads keep libgomp's default spin (could not run again with GOMP_SPINCOUNT: {e})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_users_spin_count_or_wait_policy_is_kept() {
        let env = |pairs: &'static [(&'static str, &'static str)]| move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| OsString::from(*v));
        assert_eq!(users_choice(env(&[])), None);
        assert_eq!(users_choice(env(&[("GOMP_SPINCOUNT", "300000")])), Some("GOMP_SPINCOUNT=300000".into()));
        assert_eq!(users_choice(env(&[("OMP_WAIT_POLICY", "passive")])), Some("OMP_WAIT_POLICY=passive".into()));
        assert_eq!(users_choice(env(&[("OMP_NUM_THREADS", "4")])), None, "other OpenMP settings do not count");
    }
}
