#!/usr/bin/env bash
# Installs code-server (the VS Code workbench served on localhost, with a Node extension host) into DIR, using
# only the npm registry and Debian's apt: code-server's own install scripts download from GitHub, which these
# machines cannot reach, so they are skipped and their work is done here. Also installs Chromium (for
# playwright-core). Cold install ~75 s and ~300 MB; a second run with everything present returns at once.
# Usage: install-code-server.sh DIR      (CS_VERSION overrides the version)
set -euo pipefail
DEST=${1:?usage: install-code-server.sh DIR}
CS_VERSION=${CS_VERSION:-4.100.3}   # the last line whose engines.node is 20 (4.103+ want 22, 4.139 wants 24)
if [ -x "$DEST/node_modules/.bin/code-server" ] && [ -f "$DEST/.installed-$CS_VERSION" ] && command -v chromium >/dev/null; then
  exit 0
fi
need=()
for pkg in chromium ripgrep build-essential pkg-config python3 libx11-dev libxkbfile-dev libsecret-1-dev libkrb5-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} (apt)" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
export npm_config_nodedir=/usr      # node headers from the nodejs .deb; node-gyp must not download them
export npm_config_yes=true          # node-pty's install script runs `npx node-gyp`
mkdir -p "$DEST" && cd "$DEST"
[ -f package.json ] || npm init -y >/dev/null
npm install --no-audit --no-fund --ignore-scripts "code-server@$CS_VERSION"
npm rebuild argon2                  # code-server's own native dependency (node-pre-gyp falls back to building)
cd node_modules/code-server/lib/vscode
npm install --no-audit --no-fund --omit=dev --ignore-scripts
# @vscode/ripgrep's postinstall downloads rg from GitHub: seed bin/ with Debian's rg so that it exits early
mkdir -p node_modules/@vscode/ripgrep/bin && cp /usr/bin/rg node_modules/@vscode/ripgrep/bin/rg
npm rebuild                         # node-pty, spdlog, kerberos, native-watchdog, ...
# the rest of code-server's postinstall.sh
ln -sfn node_modules node_modules.asar
(cd bin/remote-cli && ln -sfn code-linux.sh code-server)
(cd bin/helpers && ln -sfn browser-linux.sh browser.sh)
(cd extensions && npm install --no-audit --no-fund --omit=dev)
touch "$DEST/.installed-$CS_VERSION"
echo "code-server installed: $DEST/node_modules/.bin/code-server" >&2
