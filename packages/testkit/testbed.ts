// The test bed's PostgreSQL: found or provisioned, then one migrated template that every test file
// clones, so files never share rows and can run in parallel.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import { migrate } from "../local-stack/migrate.ts";

// TEST_TEMPLATE_DB lets two checkouts (or two developers) share one server without rebuilding each other's template.
export const TEMPLATE_DB = process.env.TEST_TEMPLATE_DB?.match(/^[a-z_][a-z0-9_]{0,40}$/)?.[0] ?? "vsync_test_template";
const LOCAL_URL = "postgres://postgres:postgres@127.0.0.1:5432/postgres"; // local-only test bed
const provisionScript = fileURLToPath(new URL("../../scripts/provision-postgres.sh", import.meta.url));

export interface TestServerCheck {
  ok: boolean;
  missing: string[];
}

/** Does this server have pgvector >= 0.8, pg_cron and pgTAP available? */
export async function checkServer(url: string): Promise<TestServerCheck> {
  const sql = postgres(url, { max: 1, connect_timeout: 3, onnotice: () => {} });
  try {
    const rows = await sql<{ name: string; default_version: string }[]>`
      select name, default_version from pg_available_extensions where name in ('vector', 'pg_cron', 'pgtap')`;
    const have = new Map(rows.map((r) => [r.name, r.default_version]));
    const missing: string[] = [];
    const v = have.get("vector");
    if (!v || compareVersions(v, "0.8.0") < 0) missing.push(`pgvector >= 0.8 (found ${v ?? "none"})`);
    if (!have.has("pg_cron")) missing.push("pg_cron");
    if (!have.has("pgtap")) missing.push("pgtap");
    return { ok: missing.length === 0, missing };
  } finally {
    await sql.end({ timeout: 1 });
  }
}

async function reachable(url: string): Promise<TestServerCheck | null> {
  try {
    return await checkServer(url);
  } catch {
    return null;
  }
}

/**
 * TEST_DATABASE_URL or DATABASE_URL if given; else a server on 127.0.0.1:5432 with the extensions;
 * else, as root on Debian, provision one (scripts/provision-postgres.sh); else a clear error.
 * Returns an admin URL (a superuser, database "postgres").
 */
export async function ensureTestServer(log: (m: string) => void = () => {}): Promise<string> {
  const given = process.env.TEST_DATABASE_URL || process.env.DATABASE_URL;
  if (given) {
    const check = await reachable(given);
    if (!check) throw new Error(`Cannot connect to the given TEST_DATABASE_URL/DATABASE_URL.`);
    if (!check.ok) throw new Error(`The given database lacks: ${check.missing.join(", ")}.`);
    return given;
  }
  const local = await reachable(LOCAL_URL);
  if (local?.ok) return LOCAL_URL;

  const isRoot = process.getuid?.() === 0;
  if (isRoot && existsSync("/etc/debian_version")) {
    log("provisioning PostgreSQL 15 + pgvector + pg_cron + pgTAP (first run only)");
    // Its output goes to our stderr: `npm test` reads the admin URL from scripts/testbed.ts's stdout.
    execFileSync("bash", [provisionScript], { stdio: ["ignore", 2, 2] });
    const after = await reachable(LOCAL_URL);
    if (after?.ok) return LOCAL_URL;
    throw new Error(
      `Provisioning finished but 127.0.0.1:5432 still lacks: ${after?.missing.join(", ") ?? "a reachable server"}`,
    );
  }
  throw new Error(
    [
      "No PostgreSQL for the tests.",
      local
        ? `127.0.0.1:5432 lacks: ${local.missing.join(", ")}.`
        : "Nothing answers on 127.0.0.1:5432 (user postgres, password postgres).",
      "Either run `npm test` as root on Debian (it provisions PostgreSQL 15 with pgvector, pg_cron and pgTAP),",
      "or give a superuser URL to a PostgreSQL 15+ server with pgvector >= 0.8, pg_cron and pgtap available:",
      "  TEST_DATABASE_URL=postgres://user:pass@host:5432/postgres npm test",
    ].join("\n"),
  );
}

export function databaseUrl(adminUrl: string, database: string): string {
  const u = new URL(adminUrl);
  u.pathname = `/${database}`;
  return u.toString();
}

/** Drops and rebuilds the migrated template (platform bootstrap + supabase db push). */
export async function prepareTemplate(adminUrl: string): Promise<void> {
  const sql = postgres(adminUrl, { max: 1, onnotice: () => {} });
  try {
    await sql.unsafe(`drop database if exists ${TEMPLATE_DB} with (force)`);
    await sql.unsafe(`create database ${TEMPLATE_DB}`);
  } finally {
    await sql.end();
  }
  await migrate(databaseUrl(adminUrl, TEMPLATE_DB));
}

/** A fresh database cloned from the migrated template. */
export async function cloneTemplate(
  adminUrl: string,
  prefix = "t",
): Promise<{ url: string; name: string; drop: () => Promise<void> }> {
  const name = `${prefix}_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`;
  const sql = postgres(adminUrl, { max: 1, onnotice: () => {} });
  try {
    // CREATE DATABASE ... TEMPLATE needs the template to have no other sessions; retry briefly.
    for (let attempt = 0;; attempt++) {
      try {
        await sql.unsafe(`create database ${name} template ${TEMPLATE_DB}`);
        break;
      } catch (e) {
        if (attempt > 50 || !/being accessed by other users/.test(String(e))) throw e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    // Per-database settings are not copied from a template; restore the bootstrap's search_path.
    await sql.unsafe(`alter database ${name} set search_path = "$user", public, extensions`);
  } finally {
    await sql.end();
  }
  return {
    name,
    url: databaseUrl(adminUrl, name),
    drop: async () => {
      const s = postgres(adminUrl, { max: 1, onnotice: () => {} });
      try {
        await s.unsafe(`drop database if exists ${name} with (force)`);
      } finally {
        await s.end();
      }
    },
  };
}

function compareVersions(a: string, b: string): number {
  const pa = a.split(".").map(Number);
  const pb = b.split(".").map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d) return d;
  }
  return 0;
}
