#!/usr/bin/env bash
# Screenshots of the Neovim plugin for docs/editors.md: a real Neovim in tmux with the plugin, the real server and
# the test model; each pane is captured with its colours and rendered to PNG by headless Chromium (ansi2png.js).
# Usage: editors/tests/neovim/screenshot.sh OUT_DIR     env: PIE_LS_BIN, PIE_LS_TEST_MODEL, NVIM (nvim 0.12)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../../.." && pwd)"
OUT="$(mkdir -p "${1:?usage: screenshot.sh OUT_DIR}" && cd "$1" && pwd)"
NVIM=${NVIM:-${XDG_CACHE_HOME:-$HOME/.cache}/pie-ls/nvim-venv/bin/nvim}
: "${PIE_LS_BIN:?}" "${PIE_LS_TEST_MODEL:?}"
[ -d "$REPO/editors/tests/vscode/node_modules/playwright-core" ] || (cd "$REPO/editors/tests/vscode" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
RUN=$(mktemp -d "${TMPDIR:-/tmp}/pie-ls-nvim-shot-XXXXXX")
mkdir -p "$RUN/ws" "$RUN/xdg"
cp "$REPO/editors/tests/fixtures/shop.py" "$RUN/ws/shop.py"
touch "$RUN/ws/.git"
SOCK=pie-ls-shot-$$
T=(tmux -L "$SOCK")
trap '"${T[@]}" kill-server 2>/dev/null || true; rm -rf "$RUN"' EXIT
"${T[@]}" -f /dev/null new-session -d -s shot -x 100 -y 22 \
  "cd '$RUN/ws' && env COLORTERM=truecolor PIE_LS_REPO='$REPO' PIE_LS_BIN='$PIE_LS_BIN' \
   PIE_LS_TEST_MODEL='$PIE_LS_TEST_MODEL' PIE_LS_SERVER_LOG='$RUN/server.log' XDG_CONFIG_HOME='$RUN/xdg' \
   XDG_DATA_HOME='$RUN/xdg' XDG_STATE_HOME='$RUN/xdg' '$NVIM' -u '$HERE/init.lua' -i NONE shop.py"
"${T[@]}" set -g default-terminal tmux-256color
keys() { "${T[@]}" send-keys -t shot "$@"; }
pane() { "${T[@]}" capture-pane -p -t shot "$@"; }
shot() { pane -e > "$RUN/$1.ansi"; node "$REPO/editors/tests/vscode/ansi2png.js" "$RUN/$1.ansi" "$OUT/$1.png" 100; echo "$OUT/$1.png"; }
wait_pane() {   # seconds, grep -E pattern
  for _ in $(seq 1 $(($1 * 5))); do pane | grep -qE "$2" && return 0; sleep 0.2; done
  echo "timed out waiting for /$2/ in the pane:" >&2; pane >&2; return 1
}
wait_pane 20 'pie-ls'                                   # the statusline shows pie-ls once attached
sleep 2
# ghost text: a new function, the model proposes its body
keys G o Enter; keys -l 'def shipping_cost(weight):'; keys Enter
wait_pane 60 '^ *[0-9]+ +[^ ].*' >/dev/null
for _ in $(seq 1 300); do
  pane | grep -A1 'def shipping_cost' | tail -1 | grep -qE '^ *[0-9]+ +\S' && break; sleep 0.2
done
shot nvim-ghost-text
keys Escape; keys -l 'u'; sleep 0.5; keys -l ':e!'; keys Enter; sleep 0.5
# the extract-method code action on the loop (gra: vim.lsp.buf.code_action)
keys -l '2GVjj'; keys -l 'gra'
wait_pane 30 'Extract'
shot nvim-code-action
keys Escape; sleep 0.3; keys Escape; sleep 2   # the prompt, then visual mode
keys -l ':PieStatus'; keys Enter
wait_pane 10 'KV cache'
shot nvim-pie-status
keys Enter; keys -l ':qa!'; keys Enter
