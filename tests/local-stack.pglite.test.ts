// The embedded default: the stack on PGlite (no DATABASE_URL), as `npm start` runs it. Migrations
// go through the real Supabase CLI over the PGlite server's port; everything else works the same.
import { mkdtempSync, readdirSync } from "node:fs";
import { rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createNodeClient } from "../packages/connection/node-client.ts";
import type { LocalStack } from "../packages/local-stack/index.ts";
import { processAlive, readState } from "../packages/connection/stack-state.ts";
import { FIXTURE_CONFIG, FIXTURE_FUNCTIONS_DIR, startTestStack } from "../packages/testkit/stack.ts";
import { waitFor } from "./helpers/db.ts";

const dataDir = mkdtempSync(join(tmpdir(), "local-stack-pglite-"));
const options = { dataDir, migrate: true, functionsDir: FIXTURE_FUNCTIONS_DIR, configFile: FIXTURE_CONFIG };
let stack: LocalStack;
let sql: postgres.Sql;

beforeAll(async () => {
  stack = await startTestStack(options);
  sql = postgres(stack.dbUrl, { max: 2, onnotice: () => {} });
}, 120_000);
afterAll(async () => {
  await sql?.end({ timeout: 2 });
  await stack?.stop();
  await rm(dataDir, { recursive: true, force: true });
});

describe("local stack on embedded PGlite", () => {
  it("serves PGlite with pgvector, the platform bootstrap and every migration tracked by the CLI", async () => {
    const [{ version }] = await sql`select version()`;
    expect(version).toContain("PGlite");
    expect(await sql`select '[1,2,3]'::extensions.vector(3) <-> '[1,2,4]'::extensions.vector(3) as d`).toEqual([{
      d: 1,
    }]);
    const files = readdirSync("supabase/migrations").filter((f) => f.endsWith(".sql")).sort();
    const tracked = await sql<
      { version: string; name: string }[]
    >`select version, name from supabase_migrations.schema_migrations order by version`;
    expect(tracked.map((r) => `${r.version}_${r.name}.sql`)).toEqual(files);
    expect(stack.cronTicker).toBe(true);
    const { state } = readState(dataDir);
    expect(state).toMatchObject({
      apiUrl: stack.apiUrl,
      dbUrl: stack.dbUrl,
      database: "pglite",
      anonKey: stack.anonKey,
    });
  });

  it("functions.invoke and storage work the same on PGlite", async () => {
    const client = createNodeClient(stack.apiUrl, stack.serviceRoleKey);
    const { data, error } = await client.functions.invoke("echo", { body: { on: "pglite" } });
    expect(error).toBeNull();
    expect(data).toMatchObject({ role: "service_role", body: { on: "pglite" } });
    expect((await client.storage.createBucket("lite")).error).toBeNull();
    expect(
      (await client.storage.from("lite").upload("a/b.json", new Blob(['{"x":1}'], { type: "application/json" }))).error,
    ).toBeNull();
    expect(
      await sql`select name, metadata->>'mimetype' as mimetype, (metadata->>'size')::int as size from storage.objects`,
    )
      .toEqual([{ name: "a/b.json", mimetype: "application/json", size: 7 }]);
  });

  it("a person signs up and signs in with supabase-js on PGlite; the profile is made; the functions see the user", async () => {
    const c = createNodeClient(stack.apiUrl, stack.publishableKey);
    const up = await c.auth.signUp({
      email: "lite@example.com",
      password: "a long password",
      options: { data: { first_name: "Lite" } },
    });
    expect(up.error).toBeNull();
    expect(await sql`select email, first_name from public.users`).toEqual([{
      email: "lite@example.com",
      first_name: "Lite",
    }]);
    const again = createNodeClient(stack.apiUrl, stack.publishableKey);
    expect((await again.auth.signInWithPassword({ email: "lite@example.com", password: "a long password" })).error)
      .toBeNull();
    const { data } = await again.functions.invoke("echo", { body: {} });
    expect(data.role).toBe("authenticated");
    expect((await again.auth.refreshSession()).error).toBeNull();
    expect((await again.auth.signOut()).error).toBeNull();
  });

  it("net.http_post after commit and a '1 seconds' cron job run on PGlite", async () => {
    await sql`create table public.local_stack_calls (id bigserial primary key, body jsonb, role text)`;
    await sql.begin(async (tx) => {
      await tx`select private.invoke_edge_function('record-call', '{"tag":"rolled-back"}'::jsonb)`;
      throw new Error("rollback");
    }).catch(() => {});
    await sql`select private.invoke_edge_function('record-call', '{"tag":"committed"}'::jsonb)`;
    await sql`select cron.schedule('lite-tick', '1 seconds', $$select private.invoke_edge_function('record-call', '{"tag":"cron"}'::jsonb)$$)`;
    await waitFor(
      "two cron-triggered calls",
      async () =>
        (await sql`select count(*)::int as c from public.local_stack_calls where body->>'tag' = 'cron'`)[0].c >= 2,
      15_000,
    );
    await sql`select cron.unschedule('lite-tick')`;
    expect(await sql`select body->>'tag' as tag from public.local_stack_calls where body->>'tag' <> 'cron'`).toEqual([{
      tag: "committed",
    }]);
    expect((await sql`select count(*)::int as c from cron.job_run_details where status = 'succeeded'`)[0].c)
      .toBeGreaterThanOrEqual(2);
  });

  it("persists across restarts, the second start is quick and migrations are a no-op; no orphan Deno", async () => {
    // A job a worker of this stack held when the stack went away: no worker survives the stack on its
    // own database, so the next start ends that lease at once instead of 180 s later.
    await sql`create table held_notes (id int primary key, body text)`;
    await sql`select register_embedding_source('held_notes', array['body'])`;
    await sql`alter table embedding_sync_queue disable trigger embedding_sync_queue_webhook`;
    await sql`insert into held_notes values (1, 'note')`;
    await sql`alter table embedding_sync_queue enable trigger embedding_sync_queue_webhook`;
    await sql`update embedding_sync_queue set status = 'processing', locked_by = 'dead-worker', locked_at = now(),
              lease_until = now() + interval '180 seconds' where source_table = 'held_notes'`;
    const pid = stack.functionsPid;
    await sql.end({ timeout: 2 });
    await stack.stop();
    expect(processAlive(pid)).toBe(false);
    expect(readState(dataDir).state).toBeNull();

    stack = await startTestStack(options);
    sql = postgres(stack.dbUrl, { max: 2, onnotice: () => {} });
    expect(await sql`select name from storage.objects`).toEqual([{ name: "a/b.json" }]);
    const client = createNodeClient(stack.apiUrl, stack.serviceRoleKey);
    expect(await (await client.storage.from("lite").download("a/b.json")).data!.text()).toBe('{"x":1}');
    expect(stack.startupMs).toBeLessThan(15_000);
    const [held] = await sql<{ expired: boolean }[]>`
      select lease_until < now() as expired from embedding_sync_queue where source_table = 'held_notes' and status = 'processing'`;
    expect(held).toEqual({ expired: true });
  });
});
