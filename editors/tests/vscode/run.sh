#!/usr/bin/env bash
# VS Code end-to-end suite: packages the extension (.vsix), installs it into a fresh code-server profile with the
# real pie-ls binary and the test model in its settings, serves the workbench on 127.0.0.1 and runs e2e.js in
# headless Chromium. Prints `N passed, N failed` last; exits non-zero on failure.
# Env: PIE_LS_BIN, PIE_LS_TEST_MODEL, CODE_SERVER_DIR (install-code-server.sh's DIR), SHOT_DIR (keep the
# screenshots there; by default they stay in the run folder, which is removed when every case passed),
# PIE_LS_E2E_ONLY (run only the cases whose name contains it).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../../.." && pwd)"
: "${PIE_LS_BIN:?PIE_LS_BIN: the pie-ls binary}" "${PIE_LS_TEST_MODEL:?PIE_LS_TEST_MODEL: the test model}"
CS="${CODE_SERVER_DIR:?CODE_SERVER_DIR: where install-code-server.sh put code-server}/node_modules/.bin/code-server"

# npm ci, unless node_modules already matches the lock file (a reinstall costs ~40 s on 2 busy cores)
npm_ci() {
  [ -f node_modules/.package-lock.json ] && [ node_modules/.package-lock.json -nt package-lock.json ] && return 0
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
}
(cd "$REPO/editors/vscode" && npm_ci && npm run --silent package >/dev/null)
(cd "$HERE" && npm_ci)

RUN=$(mktemp -d "${TMPDIR:-/tmp}/pie-ls-vscode-e2e-XXXXXX")
mkdir -p "$RUN"/{ud/User,ext,ws,xdg}
SHOT_DIR=${SHOT_DIR:-$RUN/shots}; mkdir -p "$SHOT_DIR"
# keep code-server and Chromium out of $HOME, except pie-ls's own cache (models), which the fetch command reuses
PIE_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/pie-ls"
export XDG_CONFIG_HOME="$RUN/xdg/config" XDG_DATA_HOME="$RUN/xdg/data" XDG_CACHE_HOME="$RUN/xdg/cache"
mkdir -p "$XDG_CACHE_HOME" && ln -s "$PIE_CACHE" "$XDG_CACHE_HOME/pie-ls"
cp "$HERE/../fixtures/shop.py" "$RUN/ws/shop.py"
cat > "$RUN/ud/User/settings.json" <<JSON
{
  "pie-ls.serverPath": "$PIE_LS_BIN",
  "pie-ls.serverArgs": ["--log-file", "$RUN/server.log"],
  "pie-ls.model.path": "$PIE_LS_TEST_MODEL",
  "pie-ls.model.threads": 2,
  "pie-ls.model.contextLength": 2048,
  "editor.quickSuggestions": { "other": "off", "comments": "off", "strings": "off" },
  "editor.suggestOnTriggerCharacters": false,
  "workbench.startupEditor": "none",
  "workbench.tips.enabled": false,
  "extensions.ignoreRecommendations": true,
  "security.workspace.trust.enabled": false,
  "telemetry.telemetryLevel": "off",
  "files.autoSave": "off"
}
JSON
COMMON=(--config "$RUN/config.yaml" --user-data-dir "$RUN/ud" --extensions-dir "$RUN/ext")
"$CS" "${COMMON[@]}" --install-extension "$REPO/editors/vscode/pie-ls.vsix" >"$RUN/install.log" 2>&1
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# in a session of its own, so that stopping it by its process group also stops its extension host and pie-ls
setsid "$CS" "${COMMON[@]}" --bind-addr "127.0.0.1:$PORT" --auth none --disable-telemetry --disable-update-check \
  --disable-workspace-trust --disable-getting-started-override "$RUN/ws" >"$RUN/code-server.log" 2>&1 &
CS_PID=$!
stop() {
  kill -- "-$CS_PID" 2>/dev/null || kill "$CS_PID" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 -- "-$CS_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$CS_PID" 2>/dev/null || true
  wait "$CS_PID" 2>/dev/null || true
  # a pie-ls that outlived its extension host is ours: its command line names this run's log file
  for pid in $(grep -lsF "$RUN/server.log" /proc/[0-9]*/cmdline | cut -d/ -f3); do kill "$pid" 2>/dev/null || true; done
}
trap stop EXIT
for _ in $(seq 1 150); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/healthz" && break; sleep 0.2; done
rc=0
PIE_CAPS=$(node "$HERE/caps.js" "$PIE_LS_BIN") SERVER_LOG="$RUN/server.log" CS_URL="http://127.0.0.1:$PORT" WS_DIR="$RUN/ws" SHOT_DIR="$SHOT_DIR" \
  node "$HERE/e2e.js" || rc=$?
if [ $rc -ne 0 ]; then
  echo "logs kept in $RUN (server.log, code-server.log, ud/logs/*/exthost*/)"
else
  stop; trap - EXIT; rm -rf "$RUN" 2>/dev/null || true
fi
exit $rc
