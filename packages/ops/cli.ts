// What `npm run doctor` and `npm run dashboard` share: which database an environment name means, and
// the report as a table for a terminal.
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { localDataDir, readState } from "../connection/stack-state.ts";
import type { HealthReport } from "./report.ts";

const repoRoot = fileURLToPath(new URL("../../", import.meta.url));
export const MIGRATIONS_DIR = join(repoRoot, "supabase/migrations");

const ENV_NAME = /^[a-z][a-z0-9_]{0,30}$/;

/**
 * The database URL of an environment: `<NAME>_DB_URL` (e.g. `--env staging` → STAGING_DB_URL), or for
 * `local` the running local stack's database when LOCAL_DB_URL is not set.
 */
export function resolveDbUrl(
  name: string,
  env: Record<string, string | undefined> = process.env,
  dataDir = localDataDir(env),
): string {
  if (!ENV_NAME.test(name)) {
    throw new Error(`invalid environment name "${name}": lower-case letters, digits and _ only`);
  }
  const variable = `${name.toUpperCase()}_DB_URL`;
  const given = env[variable];
  if (given) {
    if (!/^postgres(ql)?:\/\//.test(given)) throw new Error(`${variable} is not a postgres:// URL`);
    return given;
  }
  if (name === "local") {
    const { state, reason } = readState(dataDir);
    if (state) return state.dbUrl;
    throw new Error(`LOCAL_DB_URL is not set and ${reason}`);
  }
  throw new Error(`${variable} is not set: export ${variable}=postgres://… (the project's database URL)`);
}

/** Parses `--env <name> [--json] [--probe-provider] [--port N]` style arguments. */
export function parseArgs(argv: string[]): { env: string; json: boolean; port: number | null } {
  let env = "local", json = false, port: number | null = null;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--env") env = argv[++i] ?? "";
    else if (a.startsWith("--env=")) env = a.slice(6);
    else if (a === "--json") json = true;
    else if (a === "--port") port = Number(argv[++i]);
    else throw new Error(`unknown argument ${a}`);
  }
  if (port !== null && !(Number.isInteger(port) && port >= 0 && port < 65536)) {
    throw new Error("--port must be a port number");
  }
  return { env, json, port };
}

const mark = { ok: "ok  ", warn: "WARN", fail: "FAIL" } as const;

/** The report as a fixed-width table (name, status, detail), with the environment on top. */
export function formatReport(r: HealthReport): string {
  const width = Math.max(...r.checks.map((c) => c.name.length), 5);
  const lines = [
    `environment: ${
      r.environment ?? "(no label)"
    }    status: ${r.status.toUpperCase()}    checked at ${r.checked_at} (${r.duration_ms ?? "?"} ms)`,
    "",
    `${"check".padEnd(width)}  status  detail`,
    `${"-".repeat(width)}  ------  ${"-".repeat(40)}`,
    ...r.checks.map((c) => `${c.name.padEnd(width)}  ${mark[c.status]}    ${c.detail ?? ""}`),
  ];
  return lines.join("\n");
}
