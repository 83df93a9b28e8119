# Shared setup for scripts/demo and scripts/test (sourced, not run). Idempotent: a machine that already has
# everything spends a few seconds here.
#  - installs the C/C++ toolchain llama.cpp needs (cmake, clang/libclang for bindgen) when missing;
#  - builds in a target directory outside the clone (CARGO_TARGET_DIR, default ~/.cache/pie-ls/target) so that a
#    fresh clone on a machine that built before reuses the ~13-minute llama.cpp build.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pie-ls/target}"
export PIE_LS_BIN="$CARGO_TARGET_DIR/release/pie-ls"
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

need_apt=()
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
command -v clang >/dev/null 2>&1 || need_apt+=(clang)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || need_apt+=(libclang-dev)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
# Go runs the Go extract-method fixtures before and after (they are checked as text only without it).
command -v go >/dev/null 2>&1 || need_apt+=(golang-go)
# The verified-action tests look for leftover test processes with pgrep/ps.
command -v pgrep >/dev/null 2>&1 || need_apt+=(procps)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]} (apt)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust (https://rustup.rs) first" >&2; exit 1; }

build_release() {
  log "building pie-ls (release; target dir $CARGO_TARGET_DIR; the first build compiles llama.cpp, ~15 min on 2 cores)"
  (cd "$ROOT" && cargo build --release --workspace --bins)
}

fetch_models() {
  log "fetching models ($*) into ${XDG_CACHE_HOME:-$HOME/.cache}/pie-ls/models"
  "$PIE_LS_BIN" model fetch "$@"
}

# pytest, installed aside (not into the system Python) so that the tests exercise both the pytest path and the
# built-in fallback runner of self-debug. PIE_LS_PYTEST_PATH points at it.
ensure_pytest() {
  local dir="${XDG_CACHE_HOME:-$HOME/.cache}/pie-ls/pytest"
  if [ ! -d "$dir/_pytest" ]; then
    log "installing pytest into $dir"
    python3 -m pip install -q --disable-pip-version-check --target "$dir" pytest 2>&1 | grep -v "as the 'root' user" || true
  fi
  [ -d "$dir/_pytest" ] && export PIE_LS_PYTEST_PATH="$dir"
  return 0
}
