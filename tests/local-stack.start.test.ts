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
import { createNodeClient } from "../packages/connection/node-client.ts";
import { processAlive } from "../packages/connection/stack-state.ts";
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
    const vars = Object.fromEntries(
      stdout.trim().split("\n").map((l) => {
        const i = l.indexOf("=");
        return [l.slice(0, i), JSON.parse(l.slice(i + 1))];
      }),
    );
    return { code: 0, vars, stderr };
  } catch (e) {
    const err = e as { code: number; stderr: string };
    return { code: err.code, vars: {}, stderr: err.stderr };
  }
}

async function token(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [
      "--import",
      "tsx",
      "scripts/token.ts",
      ...args,
    ], {
      env: { ...process.env, LOCAL_STACK_DATA_DIR: dataDir },
    });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

describe("npm start / npm run status", () => {
  it(
    "starts, prints each part and the providers, runs the guided demo, reports status, stops cleanly on SIGTERM",
    async () => {
      expect((await status()).stderr).toMatch(/NOT running/);

      const env: Record<string, string | undefined> = {
        ...process.env,
        DATABASE_URL: db.url,
        API_PORT: "0",
        LOCAL_STACK_DATA_DIR: dataDir,
        LOCAL_STACK_DEMO: "1",
      };
      delete env.OPENAI_API_KEY;
      delete env.PISTE_CLIENT_ID;
      child = spawn(process.execPath, ["--import", "tsx", "scripts/start.ts"], {
        env,
        stdio: ["ignore", "pipe", "pipe"],
      });
      child.stdout!.on("data", (d) => (output += d));
      child.stderr!.on("data", (d) => (output += d));
      await waitFor(
        "the guided demo to finish",
        () => Promise.resolve(output.includes("Running. Ctrl-C to stop.")),
        90_000,
        200,
      );

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
      expect(s.vars).toMatchObject({
        DB_URL: db.url,
        DATABASE: "postgres",
        KEYS: "local-only",
        EMBEDDING_PROVIDER: "offline",
        LEGIFRANCE_PROVIDER: "stand-in",
      });
      expect(s.vars.API_URL).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(s.vars.ANON_KEY.split(".")).toHaveLength(3);
      expect(s.vars.SERVICE_ROLE_KEY).not.toBe(s.vars.ANON_KEY);
      expect(s.vars.PUBLISHABLE_KEY).toMatch(/^sb_publishable_[A-Za-z0-9_-]{20,}$/);
      expect(s.vars.SECRET_KEY).toMatch(/^sb_secret_[A-Za-z0-9_-]{20,}$/);
      // The secret key from `npm run status` is what a script would use: it reaches a service-only action.
      const cleanup = await fetch(`${s.vars.API_URL}/functions/v1/process-embedding-queue`, {
        method: "POST",
        headers: { apikey: s.vars.SECRET_KEY, "content-type": "application/json" },
        body: '{"action":"cleanup"}',
      });
      expect(cleanup.status).toBe(200);
      const health = await fetch(`${s.vars.API_URL}/health`);
      expect(health.status).toBe(200);
      // The demo rows are in the database the stack serves.
      expect((await db.sql`select count(*)::int as n from public.faq_items`)[0].n).toBe(6);

      // A person signs up, signs in and searches with supabase-js and the keys `npm run status` prints
      // (the demo's policy lets signed-in users read its published FAQ).
      const person = createNodeClient(s.vars.API_URL, s.vars.PUBLISHABLE_KEY);
      expect((await person.auth.signUp({ email: "start@example.com", password: "a long password" })).error).toBeNull();
      const signedIn = createNodeClient(s.vars.API_URL, s.vars.PUBLISHABLE_KEY);
      expect(
        (await signedIn.auth.signInWithPassword({ email: "start@example.com", password: "a long password" })).error,
      ).toBeNull();
      const found = await signedIn.functions.invoke("search", { body: { query: "mot de passe oublié", mode: "text" } });
      expect(found.error).toBeNull();
      expect(found.data.results[0].content).toMatch(/réinitialiser/);
      const [logged] = await db
        .sql`select u.email from conversations c join auth.users u on u.id = c.user_id where c.id = ${found.data.logId}`;
      expect(logged.email).toBe("start@example.com");
      // The demo searches as a signed-in user and finds its own question (published rows are readable).
      expect(output).toMatch(
        /search as a signed-in user \(demo@example.com, signed in with supabase-js; or a JWT from: npm run token -- --user [0-9a-f-]{36}\)/,
      );
      expect(output).toMatch(/POST \/functions\/v1\/search .* -> 200\n[\s\S]*faq_items[^\n]*Comment réinitialiser/);
      // `npm run token` prints a user JWT the running stack accepts; the user sees published rows only.
      // The user exists in auth.users (conversations reference it, as on hosted): created with the admin API.
      const adminClient = createNodeClient(s.vars.API_URL, s.vars.SECRET_KEY);
      const created = await adminClient.auth.admin.createUser({
        email: "lea@example.com",
        password: "a long password",
        email_confirm: true,
      });
      expect(created.error).toBeNull();
      const user = created.data.user!.id;
      const tok = await token(["--user", user.toUpperCase(), "--email", "lea@example.com"]);
      expect(tok.code).toBe(0);
      const search = async (query: string) => {
        const r = await fetch(`${s.vars.API_URL}/functions/v1/search`, {
          method: "POST",
          headers: {
            apikey: s.vars.PUBLISHABLE_KEY,
            authorization: `Bearer ${tok.stdout.trim()}`,
            "content-type": "application/json",
          },
          body: JSON.stringify({ query, mode: "text" }),
        });
        expect(r.status).toBe(200);
        return (await r.json()) as { results: { source_id: string }[]; logId: string };
      };
      const byToken = await search("réinitialiser mot de passe");
      expect(byToken.results.length).toBeGreaterThan(0);
      const [loggedByToken] = await db.sql`select user_id::text from conversations where id = ${byToken.logId}`;
      expect(loggedByToken.user_id).toBe(user);
      // Unpublish the row: its chunks go with the publish filter, and the policy hides it anyway.
      const [{ id }] = await db.sql`select id::text from public.faq_items where question like 'Comment réinitialiser%'`;
      expect(byToken.results.map((r) => r.source_id)).toContain(id);
      const visible = await db.sql.begin(async (tx) => {
        await tx`select set_config('request.jwt.claims', ${
          JSON.stringify({ sub: user, role: "authenticated" })
        }, true)`;
        await tx`update public.faq_items set is_published = false where id = ${id}`;
        await tx`set local role authenticated`;
        const rows = await tx`select id from public.faq_items where id = ${id}`;
        throw Object.assign(new Error("rollback"), { rows });
      }).catch((e) => (e as { rows: unknown[] }).rows);
      expect(visible).toEqual([]);
      expect((await token(["--user", "not-a-uuid"])).stderr).toMatch(/--user: Invalid UUID/);

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
    },
    120_000,
  );
});
