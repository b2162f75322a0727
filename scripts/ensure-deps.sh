#!/usr/bin/env bash
# Installs node_modules when it is missing or was installed from another package-lock.json, so the
# README's two commands work on a fresh clone with nothing installed by hand. A no-op (milliseconds)
# otherwise. The stamp is also written by the postinstall script, so a plain `npm ci` or `npm install`
# counts as installed and is not repeated here.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=node_modules/.deps-stamp
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[deps] installing node_modules" >&2
  npm ci --no-audit --no-fund --loglevel=error >&2
  echo "$want" > "$stamp"
fi
