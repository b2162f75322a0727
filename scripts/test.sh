#!/usr/bin/env bash
# npm test: every check, failing on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
export PATH="$PWD/node_modules/.bin:$PATH"
step() { echo; echo "== $*"; }

step "typecheck (tsc --noEmit)"
tsc --noEmit -p .
step "deno check (edge functions)"
deno check supabase/functions/*/index.ts
step "lint (deno lint)"
deno lint --quiet
step "format (deno fmt --check: TypeScript and JavaScript, 120 columns)"
deno fmt --check --quiet

step "test bed (PostgreSQL + migrated template)"
TEST_DATABASE_URL=$(tsx scripts/testbed.ts)
[[ "$TEST_DATABASE_URL" =~ ^postgres://[^[:space:]]+$ ]] || { echo "test bed printed no single admin URL: $TEST_DATABASE_URL" >&2; exit 1; }
export TEST_DATABASE_URL TEST_TEMPLATE_READY=1

step "vitest"
vitest run
step "pgTAP (pg_prove)"
tsx scripts/pgtap.ts
