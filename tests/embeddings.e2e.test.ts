// Embedding sync end to end through the local stack (gateway + pg_net stand-in + Deno functions) on
// the real PostgreSQL, with the fake OpenAI server behind the real openai SDK. Triggers on a demo
// table, then each wake-up path on its own drains the queue: the database webhook, the cron job's
// command, and supabase-js functions.invoke.
import type { SupabaseClient } from "@supabase/supabase-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createProcessEmbeddingQueueHandler } from "../packages/embeddings/handler.ts";
import { createNodeClient } from "../packages/connection/node-client.ts";
import { signUserJwt } from "../packages/local-stack/keys.ts";
import type { LocalStack } from "../packages/local-stack/index.ts";
import { startTestStack } from "../packages/testkit/stack.ts";
import { type FakeOpenAI, startFakeOpenAI } from "../packages/testkit/fake-openai.ts";
import { useTestDatabase, waitFor } from "./helpers/db.ts";

const db = useTestDatabase();
let fake: FakeOpenAI;
let stack: LocalStack;
let admin: SupabaseClient;
let anon: SupabaseClient;
let user: SupabaseClient;
const FN = "process-embedding-queue";

beforeAll(async () => {
  fake = await startFakeOpenAI({ latencyMs: 20 });
  stack = await startTestStack({
    databaseUrl: db.url,
    functionEnv: { EMBEDDING_PROVIDER: "openai", OPENAI_API_KEY: fake.apiKey, OPENAI_BASE_URL: fake.url },
  });
  // The 2026 scheme: a secret key for the service, a publishable key (+ a user's ES256 JWT) for clients.
  admin = createNodeClient(stack.apiUrl, stack.secretKey);
  anon = createNodeClient(stack.apiUrl, stack.publishableKey);
  user = createNodeClient(stack.apiUrl, stack.publishableKey, {
    accessToken: await signUserJwt(stack.keys, crypto.randomUUID()),
  });
  // The 5-minute schedule would fire on its own; here each path is driven explicitly.
  await db.sql`update cron.job set active = false`;
  await db.sql`create table faq_items (id bigint primary key, question text not null, answer text not null,
                                       is_published boolean not null default true)`;
  await db.sql.unsafe(`CREATE TRIGGER sync_faq_embeddings AFTER INSERT OR UPDATE OR DELETE ON faq_items
                       FOR EACH ROW EXECUTE FUNCTION add_to_embedding_queue()`);
}, 90_000);

afterAll(async () => {
  await stack?.stop();
  await fake?.stop();
});

async function invoke(body: unknown, client = admin) {
  const { data, error } = await client.functions.invoke(FN, { body: body as Record<string, unknown> });
  const status = (error as { context?: Response } | null)?.context?.status ?? 200;
  const payload = error ? await (error as { context: Response }).context.json().catch(() => null) : data;
  return { status, body: payload };
}

async function embeddedIds(): Promise<string[]> {
  const rows = await db.sql<{ source_id: string }[]>`
    select distinct source_id from documentation_embeddings where source_table = 'faq_items' order by 1`;
  return rows.map((r) => r.source_id);
}

async function pendingJobs(): Promise<number> {
  const [r] = await db.sql<
    { n: number }[]
  >`select count(*)::int as n from embedding_sync_queue where status in ('pending', 'processing')`;
  return r.n;
}

// A woken function keeps polling for a short while after the last wake-up (see the schedule
// migration); a test that counts what its own call claims waits until no such poller is left.
async function quiet() {
  await waitFor("woken workers to stop polling", async () => {
    // Both wakes: bulk fan-outs linger a window after theirs, live workers about 3 s after theirs.
    const [r] = await db.sql`select clock_timestamp() > greatest(embedding_last_wake(), embedding_last_live_wake())
                               + make_interval(secs => (wake_window_ms + 3000) / 1000.0) as quiet from embedding_sync_settings`;
    return r.quiet;
  }, 15_000);
}

describe("process-embedding-queue through the local stack", () => {
  it("Vault holds only the 2026 scheme's secret key: no legacy service_role JWT for the paths below", async () => {
    const rows = await db.sql`select name from vault.decrypted_secrets order by name`;
    expect(rows.map((r) => r.name)).toEqual(["project_url", "secret_key"]);
  });

  it("the webhook path: an insert wakes the function, which drains the queue", async () => {
    await db
      .sql`insert into faq_items (id, question, answer) select g, 'Question ' || g, 'Réponse ' || g from generate_series(1, 30) g`;
    await waitFor(
      "webhook drained 30 rows",
      async () => (await embeddedIds()).length === 30 && (await pendingJobs()) === 0,
      30_000,
    );
    const [c] = await db.sql`select content, model from documentation_embeddings where source_id = '7'`;
    expect(c).toEqual({ content: "question: Question 7\nanswer: Réponse 7", model: "text-embedding-3-small" });
    // Coalesced: one insert statement, one wake-up.
    const calls = await db.sql`select count(*)::int as n from net.http_request_queue where url like ${
      "%/functions/v1/" + FN
    }`;
    expect(calls[0].n).toBeLessThanOrEqual(2);
  });

  it("the cron path: the scheduled command alone drains the queue", async () => {
    await quiet(); // no worker woken by the previous test may help
    await db.sql`alter table embedding_sync_queue disable trigger embedding_sync_queue_webhook`;
    try {
      await db.sql`update faq_items set answer = answer || ' (cron)' where id <= 10`;
      expect(await pendingJobs()).toBe(10);
      const [job] = await db.sql<{ command: string }[]>`select command from cron.job where jobname = ${FN}`;
      await db.sql.unsafe(job.command);
      await waitFor("cron drained the queue", async () => (await pendingJobs()) === 0, 30_000);
      const [c] = await db.sql`select content from documentation_embeddings where source_id = '3'`;
      expect(c.content).toBe("question: Question 3\nanswer: Réponse 3 (cron)");
    } finally {
      await db.sql`alter table embedding_sync_queue enable trigger embedding_sync_queue_webhook`;
    }
  });

  it("functions.invoke: process, status, resync (0 provider calls), cleanup", async () => {
    await db.sql`alter table embedding_sync_queue disable trigger embedding_sync_queue_webhook`;
    try {
      await quiet();
      await db.sql`delete from faq_items where id > 25`;
      await db.sql`update faq_items set question = 'Changée' where id = 1`;
      const r = await invoke({ action: "process", batchSize: 500 });
      expect(r.status).toBe(200);
      expect(r.body).toMatchObject({ claimed: 6, embedded: 1, deleted: 5, dead: 0 });
      expect(await embeddedIds()).toHaveLength(25);

      expect((await invoke({ action: "status" }, anon)).status).toBe(403); // reads need a signed-in user
      const status = await invoke({ action: "status" }, user);
      expect(status.status).toBe(200);
      expect(status.body.queue).toEqual([
        expect.objectContaining({ source_table: "faq_items", pending: 0, processing: 0, failed: 0 }),
      ]);

      fake.resetStats();
      // Nothing changed since the last embedding: a resync enqueues nothing.
      const resync = await invoke({ action: "resync", forceResync: "faq_items" });
      expect(resync.body).toMatchObject({ enqueued: 0, deletes: 0 });
      // force (a model change) enqueues every row; the unchanged hashes still cost no provider call.
      const forced = await invoke({ action: "resync", forceResync: "faq_items", force: true });
      expect(forced.body).toMatchObject({ enqueued: 25, deletes: 0 });
      const again = await invoke({ action: "process", batchSize: 500 });
      expect(again.body).toMatchObject({ claimed: 25, embedded: 0, unchanged: 25 });
      expect(fake.stats.requests).toBe(0);

      const cleanup = await invoke({ action: "cleanup" });
      expect(cleanup).toMatchObject({ status: 200, body: { recovered: 0, deleted: 0 } });
    } finally {
      await db.sql`alter table embedding_sync_queue enable trigger embedding_sync_queue_webhook`;
    }
  });

  it("refuses what it must: 405, 401, 400 with the issues, 403 for non-service callers", async () => {
    const url = `${stack.apiUrl}/functions/v1/${FN}`;
    const get = await fetch(url, { headers: { authorization: `Bearer ${stack.serviceRoleKey}` } });
    expect(get.status).toBe(405);
    const noJwt = await fetch(url, { method: "POST", body: JSON.stringify({ action: "status" }) });
    expect(noJwt.status).toBe(401);
    const bad = await invoke({ action: "process", batchSize: 501 });
    expect(bad.status).toBe(400);
    expect(JSON.stringify(bad.body)).toMatch(/batchSize/);
    for (const body of [{ action: "process" }, { action: "resync" }, { action: "cleanup" }]) {
      expect((await invoke(body, anon)).status).toBe(403);
    }
    const unknownTable = await invoke({ action: "resync", forceResync: "no_such_table" });
    expect(unknownTable.status).toBe(400);
  });

  it("{ action: 'resync' } keeps working after a source table is dropped (even with no event trigger to clean up)", async () => {
    await db.sql`create table dropped_notes (id int primary key, body text)`;
    await db.sql`select register_embedding_source('dropped_notes')`;
    await db.sql`alter event trigger embedding_sync_forget_dropped disable`;
    try {
      await db.sql`drop table dropped_notes`;
    } finally {
      await db.sql`alter event trigger embedding_sync_forget_dropped enable`;
    }
    const r = await invoke({ action: "resync" });
    expect(r.status).toBe(200);
    expect(r.body.tables).toEqual(expect.arrayContaining([
      { source_table: "dropped_notes", enqueued: 0, deletes: 0 },
      expect.objectContaining({ source_table: "faq_items" }),
    ]));
    await db.sql`select unregister_embedding_source('dropped_notes')`;
  });

  it("refuses to run when EMBEDDING_DIMENSIONS does not match the table", async () => {
    const handle = createProcessEmbeddingQueueHandler({
      SUPABASE_URL: stack.apiUrl,
      SUPABASE_DB_URL: db.url,
      SUPABASE_ANON_KEY: stack.anonKey,
      SUPABASE_SERVICE_ROLE_KEY: stack.serviceRoleKey,
      EMBEDDING_PROVIDER: "offline",
      EMBEDDING_DIMENSIONS: "768",
    });
    const res = await handle(
      new Request("http://local/fn", {
        method: "POST",
        headers: { authorization: `Bearer ${stack.serviceRoleKey}` },
        body: JSON.stringify({ action: "process" }),
      }),
    );
    expect(res.status).toBe(500);
    expect((await res.json()).error).toMatch(
      /EMBEDDING_DIMENSIONS=768 but documentation_embeddings.embedding is vector\(1536\)/,
    );
  });

  it("a stack started again on a backlog (its workers died with the last one) drains it, without webhook or cron", async () => {
    await quiet();
    await stack.stop();
    await db.sql`alter table embedding_sync_queue disable trigger embedding_sync_queue_webhook`;
    try {
      await db
        .sql`insert into faq_items (id, question, answer) select g, 'Question ' || g, 'Réponse ' || g || ' (restart)'
                   from generate_series(101, 110) g`;
      expect(await pendingJobs()).toBe(10);
      stack = await startTestStack({
        databaseUrl: db.url,
        functionEnv: { EMBEDDING_PROVIDER: "openai", OPENAI_API_KEY: fake.apiKey, OPENAI_BASE_URL: fake.url },
      });
      admin = createNodeClient(stack.apiUrl, stack.secretKey);
      anon = createNodeClient(stack.apiUrl, stack.publishableKey);
      user = createNodeClient(stack.apiUrl, stack.publishableKey, {
        accessToken: await signUserJwt(stack.keys, crypto.randomUUID()),
      });
      await waitFor("the backlog drained after the start", async () => (await pendingJobs()) === 0, 30_000);
      const [c] = await db.sql`select content from documentation_embeddings where source_id = '105'`;
      expect(c.content).toBe("question: Question 105\nanswer: Réponse 105 (restart)");
    } finally {
      await db.sql`alter table embedding_sync_queue enable trigger embedding_sync_queue_webhook`;
    }
  });
});
