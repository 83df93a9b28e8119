//! A scratch copy of the user's workspace: files on disk, then the editor's unsaved buffers on top. Removed when
//! dropped. Build outputs, virtual environments and VCS data are not copied (they are large and tests do not
//! need them); a workspace over the size cap is refused with a message rather than copied half.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Folders never copied.
const SKIPPED_DIRS: &[&str] =
    &[".git", ".hg", ".svn", "target", "node_modules", "__pycache__", ".venv", "venv", ".mypy_cache", ".pytest_cache", ".tox", "dist", "build"];

/// Caps on what is copied.
#[derive(Clone, Copy, Debug)]
pub struct CopyLimits {
    pub max_files: usize,
    pub max_bytes: u64,
}

impl Default for CopyLimits {
    fn default() -> Self {
        CopyLimits { max_files: 20_000, max_bytes: 256 << 20 }
    }
}

pub struct Scratch {
    dir: PathBuf,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

impl Scratch {
    /// An empty scratch directory.
    pub fn empty(purpose: &str) -> Result<Scratch, String> {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("pie-ls-{purpose}-{}-{seq}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create a scratch directory {}: {e}", dir.display()))?;
        Ok(Scratch { dir })
    }

    /// Copies `root` (without build outputs and VCS data), then writes `overlays` (paths relative to `root`, e.g.
    /// unsaved editor buffers) over it.
    pub fn copy_of(root: &Path, overlays: &[(PathBuf, String)], purpose: &str, limits: CopyLimits) -> Result<Scratch, String> {
        let scratch = Scratch::empty(purpose)?;
        let mut files = 0usize;
        let mut bytes = 0u64;
        copy_dir(root, &scratch.dir, &mut files, &mut bytes, &limits)?;
        for (rel, text) in overlays {
            scratch.write(rel, text)?;
        }
        Ok(scratch)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes `text` at `rel` inside the copy (creating folders). Refuses paths that leave the copy.
    pub fn write(&self, rel: &Path, text: &str) -> Result<(), String> {
        let path = self.resolve(rel)?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("scratch copy: {e}"))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("scratch copy of {}: {e}", rel.display()))
    }

    pub fn read(&self, rel: &Path) -> Result<String, String> {
        std::fs::read_to_string(self.resolve(rel)?).map_err(|e| format!("scratch copy of {}: {e}", rel.display()))
    }

    /// `rel` inside the copy; absolute paths and `..` are refused.
    pub fn resolve(&self, rel: &Path) -> Result<PathBuf, String> {
        if rel.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
            return Err(format!("{} is not a path inside the workspace", rel.display()));
        }
        Ok(self.dir.join(rel))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn copy_dir(from: &Path, to: &Path, files: &mut usize, bytes: &mut u64, limits: &CopyLimits) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("scratch copy: {e}"))?;
    let entries = std::fs::read_dir(from).map_err(|e| format!("cannot read {}: {e}", from.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Ok(kind) = entry.file_type() else { continue };
        let src = entry.path();
        let dst = to.join(&name);
        if kind.is_dir() {
            if SKIPPED_DIRS.contains(&name.to_string_lossy().as_ref()) {
                continue;
            }
            copy_dir(&src, &dst, files, bytes, limits)?;
        } else if kind.is_file() {
            let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
            *files += 1;
            *bytes += len;
            if *files > limits.max_files || *bytes > limits.max_bytes {
                return Err(format!(
                    "the workspace is too large for a scratch copy (over {} files or {} MiB); open a smaller folder",
                    limits.max_files,
                    limits.max_bytes >> 20
                ));
            }
            std::fs::copy(&src, &dst).map_err(|e| format!("scratch copy of {}: {e}", src.display()))?;
        }
        // Symlinks are not followed: they could point anywhere, including back into the tree.
    }
    Ok(())
}
