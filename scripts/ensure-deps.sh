#!/usr/bin/env bash
# Installs node_modules when it is missing or older than package-lock.json, so the README's two
# commands work on a fresh clone with nothing installed by hand. A no-op (milliseconds) otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=node_modules/.deps-stamp
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[deps] installing node_modules" >&2
  # npm install, not npm ci: this npm leaves other platforms' optional binaries (deno) out of the
  # lock file and then npm ci refuses it. --no-save keeps package.json and the lock untouched.
  npm install --no-save --no-audit --no-fund --loglevel=error >&2
  echo "$want" > "$stamp"
fi
