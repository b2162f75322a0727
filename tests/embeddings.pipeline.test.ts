// The process pipeline against the real PostgreSQL and the fake OpenAI server (real openai SDK).
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { vectorLiteral } from "../packages/embeddings/hash.ts";
import { offlineEmbedding } from "../packages/embeddings/offline.ts";
import { OpenAIEmbeddingProvider } from "../packages/embeddings/openai.ts";
import { processEmbeddingQueue, type ProcessOptions } from "../packages/embeddings/pipeline.ts";
import { type FakeOpenAI, startFakeOpenAI } from "../packages/testkit/fake-openai.ts";
import { useTestDatabase, waitFor } from "./helpers/db.ts";

const db = useTestDatabase();
let fake: FakeOpenAI;
let provider: OpenAIEmbeddingProvider;

beforeAll(async () => {
  fake = await startFakeOpenAI();
  provider = new OpenAIEmbeddingProvider({
    apiKey: fake.apiKey,
    baseURL: fake.url,
    model: "text-embedding-3-small",
    dimensions: 1536,
    timeoutMs: 10_000,
  });
});
afterAll(async () => {
  await fake?.stop();
});

// Jobs left behind by an earlier test (e.g. backing off) must not be claimed by the next one.
beforeEach(async () => {
  if (db.sql) await db.sql`delete from embedding_sync_queue where status <> 'completed'`;
  fake?.setFaults({ rateLimit: { count: 0, retryAfterSeconds: 0 }, serverErrors: { count: 0 }, poison: [] });
});

let workers = 0;
function run(extra: Partial<ProcessOptions> = {}) {
  return processEmbeddingQueue(db.sql, provider, {
    workerId: `test-${++workers}`,
    batchSize: 50,
    budgetMs: 30_000,
    leaseSeconds: 30,
    concurrency: 2,
    maxAttempts: 4,
    retryBaseMs: 20,
    retryMaxMs: 200,
    ...extra,
  });
}

async function makeTable(name: string, opts: { chunkTokens?: number; overlap?: number } = {}) {
  await db.sql.unsafe(
    `create table ${name} (id int primary key, title text, body text, is_published boolean not null default true)`,
  );
  await db.sql`select register_embedding_source(${name}::regclass, publish_filter => 'is_published',
    chunk_tokens => ${opts.chunkTokens ?? 512}, chunk_overlap_tokens => ${opts.overlap ?? 64})`;
}

async function chunks(table: string, id?: string) {
  return await db.sql<{ source_id: string; chunk_index: number; content: string; token_count: number }[]>`
    select source_id, chunk_index, content, token_count from documentation_embeddings
    where source_table = ${table} and (${id ?? null}::text is null or source_id = ${id ?? null})
    order by source_id::int, chunk_index`;
}

async function queueStatus(table: string) {
  return await db.sql<{ status: string; n: number }[]>`
    select status, count(*)::int as n from embedding_sync_queue where source_table = ${table} group by status order by status`;
}

describe("process pipeline", () => {
  it("embeds inserts, follows updates and unpublishing, removes deletes; unchanged updates cost nothing", async () => {
    await makeTable("basic_items");
    await db
      .sql`insert into basic_items (id, title, body) select g, 'Titre ' || g, 'Corps numéro ' || g from generate_series(1, 20) g`;
    fake.resetStats();
    const r1 = await run();
    expect(r1).toMatchObject({ claimed: 20, embedded: 20, dead: 0, retried: 0 });
    expect(fake.stats.ok).toBe(1); // 20 inputs packed into one request
    const c = await chunks("basic_items", "3");
    expect(c).toEqual([{
      source_id: "3",
      chunk_index: 0,
      content: "title: Titre 3\nbody: Corps numéro 3",
      token_count: expect.any(Number),
    }]);

    // An UPDATE that leaves the embedded text as it was enqueues nothing.
    await db.sql`update basic_items set is_published = true where id = 3`;
    expect(await db.sql`select 1 from embedding_sync_queue where source_table = 'basic_items' and status = 'pending'`)
      .toHaveLength(0);

    await db.sql`update basic_items set body = 'Nouveau corps' where id = 3`;
    await db.sql`update basic_items set is_published = false where id = 4`;
    await db.sql`delete from basic_items where id = 5`;
    const r2 = await run();
    expect(r2).toMatchObject({ claimed: 3, embedded: 1, deleted: 2 });
    expect((await chunks("basic_items", "3"))[0].content).toBe("title: Titre 3\nbody: Nouveau corps");
    expect(await chunks("basic_items", "4")).toHaveLength(0);
    expect(await chunks("basic_items", "5")).toHaveLength(0);
    expect(await chunks("basic_items")).toHaveLength(18);
    expect(await queueStatus("basic_items")).toEqual([{ status: "completed", n: 23 }]);
  });

  it("rides out a 429 storm, waiting as long as Retry-After says", async () => {
    await makeTable("storm_items");
    await db.sql`insert into storm_items (id, title) select g, 'tempête ' || g from generate_series(1, 30) g`;
    fake.resetStats();
    fake.setFaults({ rateLimit: { count: 3, retryAfterSeconds: 1 } });
    const t0 = Date.now();
    const r = await run({ batchSize: 100 });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(2_900);
    expect(fake.stats.byStatus[429]).toBe(3);
    expect(r).toMatchObject({ claimed: 30, embedded: 30, retried: 0, dead: 0 });
    expect(await chunks("storm_items")).toHaveLength(30);
  });

  it("gives jobs back with backoff when the 429s outlast its retries, and finishes them later", async () => {
    await makeTable("long_storm");
    await db.sql`insert into long_storm (id, title) select g, 'orage ' || g from generate_series(1, 5) g`;
    fake.setFaults({ rateLimit: { count: 2, retryAfterSeconds: 2 } });
    const r = await run({ maxAttempts: 2 });
    expect(r).toMatchObject({ claimed: 5, embedded: 0, retried: 5 });
    const rows = await db.sql<{ status: string; retry_count: number; wait: number; last_error: string }[]>`
      select status, retry_count, extract(epoch from run_at - now())::float8 as wait, last_error
      from embedding_sync_queue where source_table = 'long_storm'`;
    for (const row of rows) {
      expect(row).toMatchObject({ status: "pending", retry_count: 1 });
      expect(row.wait).toBeGreaterThan(1); // not sooner than Retry-After
      expect(row.last_error).toMatch(/429/);
    }
    await db.sql`update embedding_sync_queue set run_at = now() where source_table = 'long_storm'`;
    expect(await run()).toMatchObject({ claimed: 5, embedded: 5 });
    expect(await queueStatus("long_storm")).toEqual([{ status: "completed", n: 5 }]);
  });

  it("retries 500s and succeeds", async () => {
    await makeTable("flaky_items");
    await db.sql`insert into flaky_items (id, title) select g, 'panne ' || g from generate_series(1, 10) g`;
    fake.resetStats();
    fake.setFaults({ serverErrors: { count: 2, status: 500 } });
    const r = await run();
    expect(fake.stats.byStatus[500]).toBe(2);
    expect(r).toMatchObject({ claimed: 10, embedded: 10, dead: 0 });
    // A 503 storm past the attempts: back to the queue, not lost.
    await db.sql`insert into flaky_items (id, title) values (11, 'encore')`;
    fake.setFaults({ serverErrors: { count: 10, status: 503 } });
    expect(await run({ maxAttempts: 3 })).toMatchObject({ claimed: 1, retried: 1 });
    fake.setFaults({ serverErrors: { count: 0 } });
  });

  it("a slow provider times out: the jobs go back to the queue, none is left processing", async () => {
    await makeTable("slow_items");
    await db.sql`insert into slow_items (id, title) select g, 'lent ' || g from generate_series(1, 5) g`;
    const impatient = new OpenAIEmbeddingProvider({
      apiKey: fake.apiKey,
      baseURL: fake.url,
      model: "text-embedding-3-small",
      dimensions: 1536,
      timeoutMs: 300,
    });
    fake.setFaults({ latencyMs: 2_000 });
    try {
      const r = await processEmbeddingQueue(db.sql, impatient, {
        workerId: "impatient",
        batchSize: 10,
        budgetMs: 10_000,
        leaseSeconds: 30,
        concurrency: 1,
        maxAttempts: 2,
        retryBaseMs: 10,
        retryMaxMs: 50,
      });
      expect(r).toMatchObject({ claimed: 5, embedded: 0, retried: 5 });
    } finally {
      fake.setFaults({ latencyMs: 0 });
    }
    expect(await queueStatus("slow_items")).toEqual([{ status: "pending", n: 5 }]);
  });

  it("an invocation whose budget ends mid-batch gives the batch back at once, untried, instead of holding it", async () => {
    await makeTable("late_items");
    await db.sql`insert into late_items (id, title) select g, 'tardif ' || g from generate_series(1, 5) g`;
    // The provider answers after 8 s; the invocation has 3.5 s (enough to claim one batch) and the
    // lease is a minute: a batch held to the end would only come back after that minute.
    fake.setFaults({ latencyMs: 8_000 });
    try {
      const r = await run({ workerId: "late", budgetMs: 3_500, leaseSeconds: 60 });
      expect(r).toMatchObject({ claimed: 5, embedded: 0, deferred: 5, retried: 0, dead: 0, outOfBudget: true });
      expect(r.ms).toBeLessThan(3_500 + 1_500);
    } finally {
      fake.setFaults({ latencyMs: 0 });
    }
    // Pending, due now, no attempt counted, no lease: the next invocation takes them straight away.
    expect(
      await db.sql`
      select status, retry_count, locked_by, lease_until, run_at <= now() as due
      from embedding_sync_queue where source_table = 'late_items' group by 1, 2, 3, 4, 5`,
    )
      .toEqual([{ status: "pending", retry_count: 0, locked_by: null, lease_until: null, due: true }]);
    expect(await run()).toMatchObject({ claimed: 5, embedded: 5 });
  });

  it("a live edit claimed with bulk work is written first, in a write of its own", async () => {
    await makeTable("mixed_items");
    await db.sql.begin(async (tx) => {
      await tx.unsafe(`set local embedding_sync.lane = 'bulk'`);
      await tx`insert into mixed_items (id, title) select g, 'lot ' || g from generate_series(1, 30) g`;
    });
    await db.sql`insert into mixed_items (id, title) values (31, 'modification en direct')`;
    const [live] = await db.sql<{ id: string }[]>`
      select id::text from embedding_sync_queue where source_table = 'mixed_items' and lane = 'live'`;
    // Each write's jobs, and what the queue and the index held when it began.
    const writes: { ids: string[]; queue: readonly object[]; liveSearchable: boolean }[] = [];
    const r = await run({
      batchSize: 50,
      maxBatches: 1,
      beforeWrite: async (ids) => {
        writes.push({
          ids,
          queue: await db.sql`select lane, status, count(*)::int as n from embedding_sync_queue
            where source_table = 'mixed_items' group by 1, 2 order by 1, 2`,
          liveSearchable: (await chunks("mixed_items", "31")).length === 1,
        });
      },
    });
    // One claim without a lane took both lanes: the live job went first, alone.
    expect(r).toMatchObject({ claimed: 31, embedded: 31, batches: 1 });
    expect(writes.map((w) => w.ids.length)).toEqual([1, 30]);
    expect(writes[0].ids).toEqual([live.id]);
    expect(writes[0].liveSearchable).toBe(false);
    // When the bulk write began, the live edit was already completed and searchable.
    expect(writes[1].queue).toEqual([
      { lane: "bulk", status: "processing", n: 30 },
      { lane: "live", status: "completed", n: 1 },
    ]);
    expect(writes[1].liveSearchable).toBe(true);
    expect(await queueStatus("mixed_items")).toEqual([{ status: "completed", n: 31 }]);
    expect((await chunks("mixed_items")).length).toBe(31);
  });

  it("one live worker polls at a time: it lingers after its own wake and stops at a later one", async () => {
    await makeTable("live_notes");
    // The wake that starts the worker, and a window that coalesces every wake after it (no bump).
    await db.sql`update private.embedding_sync_live_wake set last_wake_at = clock_timestamp()`;
    await db.sql`update embedding_sync_settings set wake_window_ms = 3600000`;
    try {
      const worker = run({
        workerId: "live-a",
        lane: "live",
        lingerAfterWake: true,
        liveLingerMs: 60_000,
        budgetMs: 30_000,
      });
      // An edit whose wake was coalesced into the worker's own: claimed by the lingering worker.
      await db.sql`insert into live_notes (id, title) values (1, 'modifiée pendant l''attente')`;
      await waitFor("the coalesced edit embedded", async () => (await chunks("live_notes", "1")).length === 1, 20_000);
      // A later wake started another worker: this one stops polling, long before its linger or budget.
      await db.sql`update private.embedding_sync_live_wake set last_wake_at = clock_timestamp()`;
      const r = await Promise.race([
        worker,
        new Promise<null>((resolve) => setTimeout(() => resolve(null), 10_000)),
      ]);
      expect(r, "the worker still polled 10 s after a later wake").not.toBeNull();
      expect(r).toMatchObject({ claimed: 1, embedded: 1, outOfBudget: false });
    } finally {
      await db.sql`update embedding_sync_settings set wake_window_ms = 1000`;
    }
  });

  it("a revoked key (401) stops the run after one batch; its jobs wait in the queue", async () => {
    await makeTable("auth_items");
    await db.sql`insert into auth_items (id, title) select g, 'clé ' || g from generate_series(1, 30) g`;
    fake.setFaults({ unauthorized: true });
    try {
      const r = await run({ batchSize: 10 });
      expect(r).toMatchObject({ claimed: 10, batches: 1, retried: 10, dead: 0 });
      expect(r.fatalError).toMatch(/401/);
    } finally {
      fake.setFaults({ unauthorized: false });
    }
    expect(await queueStatus("auth_items")).toEqual([{ status: "pending", n: 30 }]);
  });

  it("search: match_documents and hybrid_search find the current content, for authenticated callers", async () => {
    await makeTable("search_items");
    await db.sql`insert into search_items (id, title, body) values
      (1, 'Congés payés', 'Le salarié a droit à des congés payés chaque année.'),
      (2, 'Bail commercial', 'Le locataire commercial peut demander le renouvellement du bail.'),
      (3, 'Permis de construire', 'La demande de permis est déposée en mairie.')`;
    await run();
    const q = vectorLiteral(offlineEmbedding("renouvellement du bail commercial", 1536));
    const hits = await db.sql.begin(async (tx) => {
      await tx`set local role authenticated`;
      return await tx`select source_id, similarity from match_documents(${q}::vector, 2, '{"source_table": "search_items"}')`;
    });
    expect(hits[0].source_id).toBe("2");
    const hybrid = await db.sql.begin(async (tx) => {
      await tx`set local role authenticated`;
      return await tx`select source_id from hybrid_search('congés payés', ${q}::vector, 3, '{"source_table": "search_items"}')`;
    });
    expect(hybrid.map((h) => h.source_id)).toContain("1");
    expect(hybrid.map((h) => h.source_id)).toContain("2");
    await expect(db.sql.begin(async (tx) => {
      await tx`set local role anon`;
      return await tx`select * from match_documents(${q}::vector, 2)`;
    })).rejects.toThrow(/permission denied/);
  });

  it("fails only the job of a poisoned input; the rest of the batch is written", async () => {
    await makeTable("poison_items");
    await db
      .sql`insert into poison_items (id, title) select g, case when g = 7 then 'POISONED text' else 'sain ' || g end
                 from generate_series(1, 16) g`;
    fake.setFaults({ poison: ["POISONED"] });
    const r = await run();
    fake.setFaults({ poison: [] });
    expect(r).toMatchObject({ claimed: 16, embedded: 15, dead: 1 });
    expect((await chunks("poison_items")).map((c) => c.source_id)).not.toContain("7");
    expect(await chunks("poison_items")).toHaveLength(15);
    const [dead] = await db
      .sql`select status, last_error from embedding_sync_queue where source_table = 'poison_items' and source_id = '7'`;
    expect(dead.status).toBe("failed");
    expect(dead.last_error).toMatch(/refused the input/);
  });

  it("a worker that dies mid-batch: its jobs come back after the lease; nothing lost, nothing written twice", async () => {
    await makeTable("crash_items");
    await db.sql`insert into crash_items (id, title) select g, 'crash ' || g from generate_series(1, 40) g`;
    await expect(run({
      leaseSeconds: 600,
      beforeWrite: () => {
        throw new Error("killed");
      },
    })).rejects.toThrow("killed");
    expect(await queueStatus("crash_items")).toEqual([{ status: "processing", n: 40 }]);
    // Before the lease ends nobody else can take them.
    expect(await run()).toMatchObject({ claimed: 0 });
    // The lease ends (set in SQL, not waited for: no clock decides the test).
    await db.sql`update embedding_sync_queue set lease_until = now() - interval '1 second'
                 where source_table = 'crash_items' and status = 'processing'`;
    const r = await run();
    // The dead worker's provider call is lost with it, so these are embedded again -- but written once.
    expect(r).toMatchObject({ claimed: 40, embedded: 40 });
    const c = await chunks("crash_items");
    expect(c).toHaveLength(40);
    expect(new Set(c.map((x) => x.source_id)).size).toBe(40);
    const rows = await db.sql`select status, retry_count from embedding_sync_queue where source_table = 'crash_items'`;
    expect(rows.every((x) => x.status === "completed" && x.retry_count === 1)).toBe(true);
  });

  it("update during processing: the slower, older job cannot overwrite the newer content", async () => {
    await makeTable("race_items");
    await db.sql`insert into race_items (id, title) values (1, 'version un'), (2, 'autre')`;
    const r = await run({
      beforeWrite: async () => {
        await db.sql`update race_items set title = 'version deux' where id = 1`;
        // Another worker processes the newer version completely before this one writes.
        const inner = await run();
        expect(inner).toMatchObject({ claimed: 1, embedded: 1 });
      },
    });
    expect(r.superseded).toBe(1);
    expect((await chunks("race_items", "1"))[0].content).toBe("title: version deux");
    // A change arriving while its row is processed becomes a new pending job, processed next.
    await db.sql`update race_items set title = 'version trois' where id = 1`;
    await run({
      maxBatches: 1,
      beforeWrite: async () => {
        await db.sql`update race_items set title = 'version quatre' where id = 1`;
      },
    });
    const pendingNow = await db
      .sql`select content from embedding_sync_queue where source_table = 'race_items' and status = 'pending'`;
    expect(pendingNow.map((x) => x.content)).toEqual(["title: version quatre"]);
    expect((await chunks("race_items", "1"))[0].content).toBe("title: version trois");
    await db.sql`update race_items set title = 'version cinq' where id = 2`;
    await run();
    expect((await chunks("race_items", "1"))[0].content).toBe("title: version quatre");
    expect((await chunks("race_items", "2"))[0].content).toBe("title: version cinq");
  });

  it("delete during processing leaves no orphan chunk", async () => {
    await makeTable("gone_items");
    await db.sql`insert into gone_items (id, title) values (1, 'bientôt supprimé'), (2, 'reste')`;
    await run({
      beforeWrite: async () => {
        await db.sql`delete from gone_items where id = 1`;
        await run(); // the DELETE job completes first
      },
    });
    expect(await chunks("gone_items", "1")).toHaveLength(0);
    expect(await chunks("gone_items", "2")).toHaveLength(1);
    // Same race with the delete processed after the stale write.
    await db.sql`insert into gone_items (id, title) values (3, 'trois')`;
    await run({
      beforeWrite: async () => {
        await db.sql`delete from gone_items where id = 3`;
      },
    });
    await run();
    expect(await chunks("gone_items", "3")).toHaveLength(0);
    const [cov] = await db.sql`select * from embedding_sync_coverage where source_table = 'gone_items'`;
    expect(cov).toMatchObject({ rows: "1", rows_with_embeddings: "1", rows_missing: "0", orphan_embeddings: "0" });
  });

  it("a 50,000-character row becomes several chunks, none over the limit", async () => {
    await makeTable("big_items", { chunkTokens: 512, overlap: 64 });
    await makeTable("huge_items", { chunkTokens: 8191, overlap: 200 });
    const words = Array.from({ length: 9000 }, (_, i) => `mot${i % 997} ${i % 13 === 0 ? "éléphant" : "loi"}`).join(
      " ",
    );
    const text = words.slice(0, 50_000);
    await db.sql`insert into big_items (id, body) values (1, ${text})`;
    await db.sql`insert into huge_items (id, body) values (1, ${text + " " + text})`;
    fake.resetStats();
    await run();
    const big = await chunks("big_items");
    expect(big.length).toBeGreaterThan(10);
    expect(Math.max(...big.map((c) => c.token_count))).toBeLessThanOrEqual(512);
    const huge = await chunks("huge_items");
    expect(huge.length).toBeGreaterThan(2);
    expect(Math.max(...huge.map((c) => c.token_count))).toBeLessThanOrEqual(8191);
    expect(fake.stats.maxInputTokens).toBeLessThanOrEqual(8191);
    expect(fake.stats[`byStatus`][400]).toBeUndefined();
  });

  it("resync of unchanged data enqueues nothing; a forced resync makes 0 provider calls", async () => {
    await makeTable("stable_items");
    await db.sql`insert into stable_items (id, title) select g, 'stable ' || g from generate_series(1, 200) g`;
    await run({ batchSize: 500 });
    fake.resetStats();
    for (let i = 0; i < 2; i++) {
      expect(await db.sql`select * from resync_embedding_sources('stable_items')`)
        .toEqual([{ source_table: "stable_items", enqueued: "0", deletes: "0" }]);
    }
    // Changes the triggers never saw (disabled): resync finds exactly them, set-based.
    await db.sql`alter table stable_items disable trigger user`;
    await db.sql`update stable_items set title = 'changed ' || id where id <= 3`;
    await db.sql`delete from stable_items where id = 200`;
    await db.sql`alter table stable_items enable trigger user`;
    expect(await db.sql`select * from resync_embedding_sources('stable_items')`)
      .toEqual([{ source_table: "stable_items", enqueued: "3", deletes: "1" }]);
    expect(await run({ batchSize: 500 })).toMatchObject({ claimed: 4, embedded: 3, deleted: 1 });
    expect(await db.sql`select * from resync_embedding_sources('stable_items')`)
      .toEqual([{ source_table: "stable_items", enqueued: "0", deletes: "0" }]);
    await db.sql`insert into stable_items (id, title) values (200, 'stable 200')`;
    await run({ batchSize: 500 });
    fake.resetStats();
    // force: true keeps the old behaviour (a model change): every row again, no provider call.
    const resync = await db.sql`select * from resync_embedding_sources('stable_items', true)`;
    expect(resync).toEqual([{ source_table: "stable_items", enqueued: "200", deletes: "0" }]);
    const r = await run({ batchSize: 500 });
    expect(r).toMatchObject({ claimed: 200, embedded: 0, unchanged: 200, providerCalls: 0 });
    expect(fake.stats.requests).toBe(0);
    expect(await chunks("stable_items")).toHaveLength(200);
  });

  it("8 concurrent workers drain 2,000 rows: every job completed once, every row embedded once", async () => {
    await makeTable("many_items");
    await db
      .sql`insert into many_items (id, title, body) select g, 'ligne ' || g, md5(g::text) from generate_series(1, 2000) g`;
    fake.resetStats();
    // A request cut by its client timeout is retried, and the provider may have served it: on a
    // loaded machine that is a second embedding of the same inputs, which is not what this test is
    // about. No timeout or lease can end within this test, so any duplicate is a double claim.
    const patient = new OpenAIEmbeddingProvider({
      apiKey: fake.apiKey,
      baseURL: fake.url,
      model: "text-embedding-3-small",
      dimensions: 1536,
      timeoutMs: 600_000,
    });
    const results = await Promise.all(
      Array.from({ length: 8 }, () =>
        processEmbeddingQueue(db.sql, patient, {
          workerId: `test-${++workers}`,
          batchSize: 100,
          budgetMs: 600_000,
          leaseSeconds: 900,
          concurrency: 2,
          maxAttempts: 4,
        })),
    );
    expect(results.reduce((n, r) => n + r.providerCalls, 0)).toBe(fake.stats.requests);
    expect(results.reduce((n, r) => n + r.claimed, 0)).toBe(2000);
    expect(await queueStatus("many_items")).toEqual([{ status: "completed", n: 2000 }]);
    expect(await chunks("many_items")).toHaveLength(2000);
    expect(fake.stats.inputs).toBe(2000);
    expect([...fake.stats.inputCounts.values()].every((n) => n === 1)).toBe(true);
  });
});
