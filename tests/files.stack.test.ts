// The files pipeline end to end, through the local stack (gateway + Storage + Deno functions) on the
// real PostgreSQL, with the PISTE stand-in and the offline embedding provider:
// upload -> files_queue (same transaction) -> process-files-queue -> legal_documents -> chunks.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SupabaseClient } from "@supabase/supabase-js";
import { createNodeClient } from "../packages/connection/node-client.ts";
import { startTestStack } from "../packages/testkit/stack.ts";
import type { LocalStack } from "../packages/local-stack/index.ts";
import { type PisteStandIn, startPisteStandIn } from "../packages/testkit/legifrance-stand-in.ts";
import { useTestDatabase, waitFor } from "./helpers/db.ts";

const BUCKET = "agentbasic-legifrance-raw";
const db = useTestDatabase();
let stack: LocalStack;
let piste: PisteStandIn;
let admin: SupabaseClient;
let anon: SupabaseClient;

beforeAll(async () => {
  piste = await startPisteStandIn({ generatedPerFond: 3, includeBadIds: true });
  stack = await startTestStack({
    databaseUrl: db.url,
    functionEnv: {
      PISTE_OAUTH_URL: piste.oauthUrl,
      PISTE_API_URL: piste.apiUrl,
      PISTE_CLIENT_ID: piste.clientId,
      PISTE_CLIENT_SECRET: piste.clientSecret,
      EMBEDDING_PROVIDER: "offline",
    },
  });
  admin = createNodeClient(stack.apiUrl, stack.serviceRoleKey);
  anon = createNodeClient(stack.apiUrl, stack.anonKey);
  // The bucket comes from a migration.
  expect((await admin.storage.getBucket(BUCKET)).data).toMatchObject({ id: BUCKET, public: false });
  // The schedules would fire on their own during the test; this file drives every step itself.
  await db.sql`update cron.job set active = false`;
  // So does the files queue's webhook, except in the test of the webhook itself.
  await db.sql`alter table files_queue disable trigger files_queue_webhook`;
}, 90_000);

afterAll(async () => {
  await stack?.stop();
  await piste?.stop();
});

async function invoke(name: string, body: unknown, client = admin) {
  const { data, error } = await client.functions.invoke(name, { body: body as Record<string, unknown> });
  const status = (error as { context?: Response } | null)?.context?.status ?? 200;
  const payload = error ? await (error as { context: Response }).context.json().catch(() => null) : data;
  return { status, body: payload };
}

async function snapshot() {
  const [q] = await db.sql`select count(*)::int as n, coalesce(sum(file_size), 0)::bigint as size from files_queue`;
  const [o] = await db.sql`select count(*)::int as n from storage.objects`;
  const [d] = await db.sql`select count(*)::int as n from legal_documents`;
  return { queue: q.n, queueSize: String(q.size), objects: o.n, docs: d.n };
}

describe("files_queue follows Storage", () => {
  it("an upload through storage-js has its queue row, with the object's size; a delete marks it", async () => {
    const body = JSON.stringify({ hello: "world" });
    const up = await admin.storage.from(BUCKET).upload("manual/one.json", body, { contentType: "application/json" });
    expect(up.error).toBeNull();
    // Same xmin: the queue row was written by the very transaction that wrote the object row.
    const [tx] = await db.sql`select q.xmin::text = o.xmin::text as same_tx from files_queue q
                                join storage.objects o on o.name = q.file_path and o.bucket_id = q.bucket_id
                               where q.file_path = 'manual/one.json'`;
    expect(tx.same_tx).toBe(true);
    const [row] = await db
      .sql`select q.file_path, q.bucket_id, q.file_size, q.status, q.processed, (o.metadata->>'size')::bigint as object_size
                                 from files_queue q join storage.objects o on o.name = q.file_path and o.bucket_id = q.bucket_id
                                where q.file_path = 'manual/one.json'`;
    expect(row).toMatchObject({ bucket_id: BUCKET, status: "pending", processed: false });
    expect(Number(row.file_size)).toBe(Buffer.byteLength(body));
    expect(Number(row.object_size)).toBe(Buffer.byteLength(body));

    expect((await admin.storage.from(BUCKET).remove(["manual/one.json"])).error).toBeNull();
    const [gone] = await db.sql`select status from files_queue where file_path = 'manual/one.json'`;
    expect(gone.status).toBe("deleted");
  });

  it("objects of buckets that are not watched get no row", async () => {
    expect((await admin.storage.createBucket("other-bucket")).error).toBeNull();
    expect((await admin.storage.from("other-bucket").upload("x.json", "{}")).error).toBeNull();
    expect(await db.sql`select 1 from files_queue where bucket_id = 'other-bucket'`).toHaveLength(0);
  });
});

describe("refusals change nothing", () => {
  it("bad bodies, bad buckets, wrong method, missing or weak JWT", async () => {
    const before = await snapshot();
    const cases: [string, unknown, number][] = [
      ["repopulate-files-queue", {}, 400],
      ["repopulate-files-queue", { bucket: "../etc" }, 400],
      ["repopulate-files-queue", { bucket: "a/b" }, 400],
      ["repopulate-files-queue", { bucket: BUCKET, batchSize: 100_001 }, 400],
      ["repopulate-files-queue", { bucket: BUCKET, extra: 1 }, 400],
      ["repopulate-files-queue", { bucket: "no-such-bucket" }, 404],
      ["legifrance-collector", { mode: "everything" }, 400],
      ["legifrance-collector", { mode: "maintenance", pageSize: 10 }, 400],
      ["legifrance-collector", {}, 400],
      ["process-files-queue", { batchSize: 0 }, 400],
    ];
    for (const [name, body, status] of cases) {
      const r = await invoke(name, body);
      expect({ name, body, status: r.status }).toEqual({ name, body, status });
    }
    expect((await invoke("repopulate-files-queue", { bucket: BUCKET }, anon)).status).toBe(403);
    expect((await invoke("legifrance-collector", { mode: "massive" }, anon)).status).toBe(403);
    const get = await fetch(`${stack.apiUrl}/functions/v1/repopulate-files-queue`, {
      headers: { authorization: `Bearer ${stack.serviceRoleKey}` },
    });
    expect(get.status).toBe(405);
    const noJwt = await fetch(`${stack.apiUrl}/functions/v1/process-files-queue`, { method: "POST", body: "{}" });
    expect(noJwt.status).toBe(401);
    expect(await snapshot()).toEqual(before);
    expect(await db.sql`select 1 from legifrance_collector_runs`).toHaveLength(0);
  });
});

describe("collector -> Storage -> worker -> legal_documents -> embeddings", () => {
  it("collects every document of the plan, refuses bad ids, and the worker makes them searchable", async () => {
    const r = await invoke("legifrance-collector", { mode: "massive", continue: false });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ acquired: true, done: true });

    const expected = piste.documentIds();
    const objects = await db.sql<
      { name: string }[]
    >`select name from storage.objects where bucket_id = ${BUCKET} and name like 'legifrance/%'`;
    const ids = objects.map((o) => o.name.replace(/^.*\//, "").replace(/\.json$/, "")).sort();
    expect(ids).toEqual([...expected].sort());
    // Bad ids became failures, never paths.
    const failed = await db.sql<
      { document_id: string }[]
    >`select document_id from legifrance_failed_documents where resolved_at is null`;
    expect(failed.map((f) => f.document_id).sort()).toEqual(
      ["../../etc/passwd", "LEGIARTI00000641929", "legiarti000006419292", "JURITEXT000007022837/../x"].sort(),
    );
    expect(objects.every((o) => /^legifrance\/[a-z]+\/[A-Z]{8}\d{12}\.json$/.test(o.name))).toBe(true);
    const [q] = await db
      .sql`select count(*)::int as n from files_queue where file_path like 'legifrance/%' and status = 'pending'`;
    expect(q.n).toBe(expected.length);

    // A malformed file and an unknown shape, uploaded like any other file, fail alone with a reason.
    await admin.storage.from(BUCKET).upload("legifrance/codes/LEGIARTI999999999991.json", "{not json", {
      contentType: "application/json",
    });
    await admin.storage.from(BUCKET).upload(
      "legifrance/codes/LEGIARTI999999999992.json",
      JSON.stringify({
        format: "legifrance-document/v1",
        id: "LEGIARTI999999999992",
        category: "codes",
        endpoint: "getArticle",
        data: { nope: 1 },
      }),
      { contentType: "application/json" },
    );

    const w = await invoke("process-files-queue", { batchSize: 50 });
    expect(w.status).toBe(200);
    expect(w.body).toMatchObject({ stored: expected.length, failed: 2 });
    const docs = await db
      .sql`select id, title, number, legal_status, start_date::text, end_date::text, parent_id, url, content
                                from legal_documents order by id`;
    expect(docs.map((d) => d.id)).toEqual([...expected].sort());
    expect(docs.find((d) => d.id === "LEGIARTI000032041571")).toMatchObject({
      title: "Code civil - Article 1240",
      number: "1240",
      legal_status: "VIGUEUR",
      start_date: "2016-10-01",
      end_date: null,
      parent_id: "LEGITEXT000006070721",
      url: "https://www.legifrance.gouv.fr/codes/article_lc/LEGIARTI000032041571",
    });
    expect(docs.find((d) => d.id === "LEGIARTI000006419292")).toMatchObject({
      legal_status: "MODIFIE",
      end_date: "2016-10-01",
    });
    const bad = await db
      .sql`select file_path, status, last_error from files_queue where status = 'failed' order by file_path`;
    expect(bad).toHaveLength(2);
    expect(bad[0].last_error).toMatch(/malformed JSON/);
    expect(bad[1].last_error).toMatch(/unknown getArticle shape/);
    const [left] = await db.sql`select count(*)::int as n from files_queue where status in ('pending', 'processing')`;
    expect(left.n).toBe(0);

    // legal_documents is an embedding source: its rows are queued, and the embedding worker makes chunks.
    const e = await invoke("process-embedding-queue", { action: "process", batchSize: 200 });
    expect(e.status).toBe(200);
    await waitFor(
      "every legal document to have chunks",
      async () => {
        const [c] = await db
          .sql`select count(distinct source_id)::int as n from documentation_embeddings where source_table = 'legal_documents'`;
        return c.n === expected.length ||
          (await invoke("process-embedding-queue", { action: "process", batchSize: 200 }), false);
      },
      30_000,
      200,
    );
    const [chunk] = await db
      .sql`select content from documentation_embeddings where source_table = 'legal_documents' and source_id = 'LEGIARTI000032041571'`;
    expect(chunk.content).toContain("Tout fait quelconque de l'homme");

    // Deleting the file removes the document, and then its chunks: nothing deleted stays searchable.
    expect((await admin.storage.from(BUCKET).remove(["legifrance/codes/LEGIARTI000032041571.json"])).error).toBeNull();
    expect(await db.sql`select 1 from legal_documents where id = 'LEGIARTI000032041571'`).toHaveLength(0);
    await waitFor(
      "the deleted document's chunks to go",
      async () => {
        await invoke("process-embedding-queue", { action: "process", batchSize: 50 });
        const rows = await db
          .sql`select 1 from documentation_embeddings where source_table = 'legal_documents' and source_id = 'LEGIARTI000032041571'`;
        return rows.length === 0;
      },
      30_000,
      200,
    );
  });

  it("repopulate through the function restores exactly what a TRUNCATE removed", async () => {
    const [before] = await db.sql`select count(*)::int as n from storage.objects where bucket_id = ${BUCKET}`;
    await db.sql`truncate files_queue`;
    const dry = await invoke("repopulate-files-queue", { bucket: BUCKET, dryRun: true, batchSize: 7 });
    expect(dry.status).toBe(200);
    expect(dry.body).toMatchObject({ missing: before.n, inserted: 0, done: true });
    expect(await db.sql`select 1 from files_queue`).toHaveLength(0);
    const r = await invoke("repopulate-files-queue", { bucket: BUCKET, batchSize: 7 });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ inserted: before.n, scanned: before.n, done: true });
    const [c] = await db.sql`select * from files_queue_coherence where bucket_id = ${BUCKET}`;
    expect(c).toMatchObject({ missing_in_queue: "0", queued_without_object: "0" });
    expect(Number(c.queue_count)).toBe(before.n);
    expect(c.queue_size).toBe(c.storage_size);
  });

  it("repopulate continues itself through pg_net until the bucket is done", async () => {
    await db.sql`truncate files_queue`;
    const r = await invoke("repopulate-files-queue", { bucket: BUCKET, batchSize: 3, budgetMs: 1 });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ done: false, continued: true });
    await waitFor(
      "the continuations to restore the queue",
      async () => {
        const [c] = await db
          .sql`select missing_in_queue::int as m from files_queue_coherence where bucket_id = ${BUCKET}`;
        return c.m === 0;
      },
      30_000,
      100,
    );
    const [n] = await db.sql`select count(*)::int as n, count(distinct file_path)::int as d from files_queue`;
    const [o] = await db.sql`select count(*)::int as n from storage.objects where bucket_id = ${BUCKET}`;
    expect(n).toEqual({ n: o.n, d: o.n });
  });
});

describe("MASSIVE through pg_net", () => {
  it("re-invokes itself with its run id until the plan is done", async () => {
    await db.sql`update legifrance_crawl_plan set page_size = 2`;
    piste.setFaults({ latencyMs: 120 });
    try {
      const r = await invoke("legifrance-collector", { mode: "massive", restart: true, budgetMs: 1000 });
      expect(r.status).toBe(200);
      expect(r.body).toMatchObject({ acquired: true, done: false, continued: true });
      const runId = (r.body as { runId: string }).runId;
      const run = await waitFor(
        "the run to complete",
        async () => {
          const [x] = await db.sql`select status, invocations from legifrance_collector_runs where id = ${runId}`;
          return x.status === "completed" ? x : null;
        },
        60_000,
        200,
      );
      expect(run.invocations).toBeGreaterThan(1);
      const [p] = await db.sql`select bool_and(done) as done from legifrance_crawl_plan`;
      expect(p.done).toBe(true);
      const [again] = await db.sql`select count(*)::int as n from legifrance_collector_runs where mode = 'massive'`;
      expect(again.n).toBe(2); // the first (continue: false) run and this one: continuations reuse the run
    } finally {
      piste.setFaults({ latencyMs: 0 });
    }
  });
});

describe("the files queue's webhook", () => {
  // Cron is off and nothing invokes the worker here: only the insert's webhook can have run it.
  it("an upload is turned into its legal_documents row with no call from anyone: the insert wakes the worker", async () => {
    const path = "legifrance/codes/LEGIARTI000032041571.json";
    const original = await admin.storage.from(BUCKET).download(path).catch(() => null);
    // The first test deleted this document's file; any collected article will do.
    const [row] = await db.sql<{ name: string }[]>`
      select name from storage.objects where bucket_id = ${BUCKET} and name like 'legifrance/codes/LEGIARTI%' order by name limit 1`;
    const target = original?.data ? path : row.name;
    const bytes = original?.data ?? (await admin.storage.from(BUCKET).download(target)).data!;
    const id = target.replace(/^.*\//, "").replace(/\.json$/, "");
    expect((await admin.storage.from(BUCKET).remove([target])).error).toBeNull();
    expect(await db.sql`select 1 from legal_documents where id = ${id}`).toHaveLength(0);

    await db.sql`alter table files_queue enable trigger files_queue_webhook`;
    try {
      expect((await admin.storage.from(BUCKET).upload(target, bytes, { contentType: "application/json" })).error)
        .toBeNull();
      const doc = await waitFor(
        "the worker, woken by the insert, to store the document",
        async () => {
          const [d] = await db.sql`select id from legal_documents where id = ${id}`;
          return d;
        },
        30_000,
        100,
      );
      expect(doc.id).toBe(id);
      const [q] = await db.sql`select status from files_queue where file_path = ${target}`;
      expect(q.status).toBe("completed");
    } finally {
      await db.sql`alter table files_queue disable trigger files_queue_webhook`;
    }
  });

  it("an upload inside the window of an earlier wake makes no call; the woken worker lingers and takes it", async () => {
    const files = await db.sql<{ name: string }[]>`
      select name from storage.objects where bucket_id = ${BUCKET} and name like 'legifrance/codes/LEGIARTI%' order by name limit 2`;
    expect(files).toHaveLength(2);
    const saved = await Promise.all(files.map(async (f) => ({
      path: f.name,
      id: f.name.replace(/^.*\//, "").replace(/\.json$/, ""),
      bytes: (await admin.storage.from(BUCKET).download(f.name)).data!,
    })));
    expect((await admin.storage.from(BUCKET).remove(saved.map((f) => f.path))).error).toBeNull();
    // A window long enough that the second upload surely falls inside the first one's.
    await db.sql`update embedding_sync_settings set wake_window_ms = 8000`;
    await db.sql`update private.files_queue_wake set last_wake_at = '-infinity'`;
    await db.sql`alter table files_queue enable trigger files_queue_webhook`;
    try {
      const stored = (id: string) =>
        waitFor(
          `document ${id} stored`,
          async () => {
            const [d] = await db.sql`select id from legal_documents where id = ${id}`;
            return d;
          },
          30_000,
          100,
        );
      await admin.storage.from(BUCKET).upload(saved[0].path, saved[0].bytes, { contentType: "application/json" });
      await stored(saved[0].id);
      const [{ woken }] = await db.sql`select last_wake_at as woken from private.files_queue_wake`;
      await admin.storage.from(BUCKET).upload(saved[1].path, saved[1].bytes, { contentType: "application/json" });
      await stored(saved[1].id);
      const [{ woken: after }] = await db.sql`select last_wake_at as woken from private.files_queue_wake`;
      expect(after).toEqual(woken); // no second wake: the lingering worker took it
    } finally {
      await db.sql`alter table files_queue disable trigger files_queue_webhook`;
      await db.sql`update embedding_sync_settings set wake_window_ms = 1000`;
    }
  });
});
