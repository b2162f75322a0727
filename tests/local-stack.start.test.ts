// `npm start` and `npm run status` as a user runs them (scripts/start.ts in its own process, against
// this file's test database instead of PGlite to keep it quick): the summary, the guided demo,
// the KEY=value status lines, and a clean SIGTERM shutdown with no orphan.
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { processAlive } from "../packages/local-stack/state.ts";
import { useTestDatabase, waitFor } from "./helpers/db.ts";

const db = useTestDatabase();
const dataDir = mkdtempSync(join(tmpdir(), "local-stack-start-"));
let child: ChildProcess | null = null;
let output = "";

afterAll(async () => {
  child?.kill("SIGKILL");
  await rm(dataDir, { recursive: true, force: true });
});

async function status(): Promise<{ code: number; vars: Record<string, string>; stderr: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, ["--import", "tsx", "scripts/status.ts"], {
      env: { ...process.env, LOCAL_STACK_DATA_DIR: dataDir },
    });
    const vars = Object.fromEntries(stdout.trim().split("\n").map((l) => {
      const i = l.indexOf("=");
      return [l.slice(0, i), JSON.parse(l.slice(i + 1))];
    }));
    return { code: 0, vars, stderr };
  } catch (e) {
    const err = e as { code: number; stderr: string };
    return { code: err.code, vars: {}, stderr: err.stderr };
  }
}

describe("npm start / npm run status", () => {
  it("starts, prints each part and the providers, runs the guided demo, reports status, stops cleanly on SIGTERM", async () => {
    expect((await status()).stderr).toMatch(/NOT running/);

    const env: Record<string, string | undefined> = { ...process.env, DATABASE_URL: db.url, API_PORT: "0", LOCAL_STACK_DATA_DIR: dataDir,
      LOCAL_STACK_DEMO: "1" };
    delete env.OPENAI_API_KEY;
    delete env.PISTE_CLIENT_ID;
    child = spawn(process.execPath, ["--import", "tsx", "scripts/start.ts"], { env, stdio: ["ignore", "pipe", "pipe"] });
    child.stdout!.on("data", (d) => (output += d));
    child.stderr!.on("data", (d) => (output += d));
    await waitFor("the guided demo to finish", () => Promise.resolve(output.includes("Running. Ctrl-C to stop.")), 90_000, 200);

    expect(output).toMatch(/Local stack ready in [\d.]+ s/);
    expect(output).toContain("offline provider (deterministic, lexical — NOT semantic");
    expect(output).toContain("(NOT the real PISTE API)");
    expect(output).toMatch(/webhook path: queue drained/);
    expect(output).toMatch(/cron path \(webhook paused\): 1 pending job\(s\) drained/);
    expect(output).toContain("select * from embedding_sync_status;");
    expect(output).toMatch(/faq_items\s+\|\s+0\s+\|\s+0\s+\|/); // nothing pending or processing
    expect(output).toMatch(/hybrid_search\('mot de passe oublié'[\s\S]*réinitialiser/);

    const s = await status();
    expect(s.code).toBe(0);
    expect(s.vars).toMatchObject({ DB_URL: db.url, DATABASE: "postgres", KEYS: "local-only", EMBEDDING_PROVIDER: "offline", LEGIFRANCE_PROVIDER: "stand-in" });
    expect(s.vars.API_URL).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(s.vars.ANON_KEY.split(".")).toHaveLength(3);
    expect(s.vars.SERVICE_ROLE_KEY).not.toBe(s.vars.ANON_KEY);
    expect(s.vars.PUBLISHABLE_KEY).toMatch(/^sb_publishable_[A-Za-z0-9_-]{20,}$/);
    expect(s.vars.SECRET_KEY).toMatch(/^sb_secret_[A-Za-z0-9_-]{20,}$/);
    // The secret key from `npm run status` is what a script would use: it reaches a service-only action.
    const cleanup = await fetch(`${s.vars.API_URL}/functions/v1/process-embedding-queue`, {
      method: "POST", headers: { apikey: s.vars.SECRET_KEY, "content-type": "application/json" }, body: '{"action":"cleanup"}',
    });
    expect(cleanup.status).toBe(200);
    const health = await fetch(`${s.vars.API_URL}/health`);
    expect(health.status).toBe(200);
    // The demo rows are in the database the stack serves.
    expect((await db.sql`select count(*)::int as n from public.faq_items`)[0].n).toBe(6);

    const functionsPid = Number(/pid (\d+)\)/.exec(output)![1]);
    expect(processAlive(functionsPid)).toBe(true);
    const exited = new Promise<number | null>((r) => child!.once("exit", (code) => r(code)));
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
    expect(output).toContain("stopped (database, gateway, functions");
    expect(processAlive(functionsPid)).toBe(false);
    const after = await status();
    expect(after.code).toBe(1);
    expect(after.stderr).toMatch(/NOT running/);
  }, 120_000);
});
