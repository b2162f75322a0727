// The collector's MASSIVE and MAINTENANCE modes on the real PostgreSQL, uploading through the local
// stack's Storage (supabase-js), against the PISTE stand-in with injected failures.
import postgres from "postgres";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createNodeClient } from "../packages/connection/node-client.ts";
import { FIXTURE_CONFIG, FIXTURE_FUNCTIONS_DIR, startTestStack } from "../packages/testkit/stack.ts";
import type { LocalStack } from "../packages/local-stack/index.ts";
import { type PisteStandIn, startPisteStandIn } from "../packages/testkit/legifrance-stand-in.ts";
import { PisteClient } from "../packages/legifrance/client.ts";
import {
  collectMaintenance,
  collectMassive,
  type CollectorDeps,
  stopMassive,
} from "../packages/legifrance/collector.ts";
import { type ObjectStore, supabaseObjectStore } from "../packages/storage/object-store.ts";
import { processFilesQueue } from "../packages/files-queue/worker.ts";
import { useTestDatabase, waitFor } from "./helpers/db.ts";

const BUCKET = "agentbasic-legifrance-raw";
const db = useTestDatabase();
let stack: LocalStack;
let piste: PisteStandIn;
let store: ObjectStore;

beforeAll(async () => {
  piste = await startPisteStandIn({ generatedPerFond: 12, latencyMs: 5 });
  stack = await startTestStack({
    databaseUrl: db.url,
    functionsDir: FIXTURE_FUNCTIONS_DIR,
    configFile: FIXTURE_CONFIG,
  });
  const admin = createNodeClient(stack.apiUrl, stack.serviceRoleKey);
  store = supabaseObjectStore(admin);
}, 90_000);

afterAll(async () => {
  await stack?.stop();
  await piste?.stop();
});

beforeEach(async () => {
  piste.setFaults({
    tokenTtlMs: undefined,
    tokenUses: undefined,
    rate429: 0,
    rate500: 0,
    burst429: 0,
    burst500: 0,
    failIds: [],
    quotaRps: undefined,
    latencyMs: 5,
  });
  await db.sql`delete from storage.objects`;
  await db.sql`truncate files_queue, legifrance_collector_runs, legifrance_failed_documents`;
  await db
    .sql`update legifrance_crawl_plan set next_page = 1, done = false, total_results = null, docs_collected = 0, maintenance_docs_collected = 0, page_size = 10`;
});

function deps(over: Partial<CollectorDeps> = {}, rps = 200): CollectorDeps {
  const api = new PisteClient({
    oauthUrl: piste.oauthUrl,
    apiUrl: piste.apiUrl,
    clientId: piste.clientId,
    clientSecret: piste.clientSecret,
    rps,
    backoffBaseMs: 20,
    maxRetries: 8,
  });
  return { sql: db.sql, api, store, bucket: BUCKET, concurrency: 6, ...over };
}

async function storedIds(): Promise<string[]> {
  const rows = await db.sql<
    { name: string }[]
  >`select name from storage.objects where bucket_id = ${BUCKET} order by name`;
  return rows.map((r) => r.name.replace(/^.*\//, "").replace(/\.json$/, "")).sort();
}

async function expectEverythingCollectedOnce() {
  const expected = [...piste.documentIds()].sort();
  expect(await storedIds()).toEqual(expected);
  const [q] = await db.sql`select count(*)::int as n, count(distinct file_path)::int as d from files_queue`;
  expect(q).toEqual({ n: expected.length, d: expected.length });
  const [p] = await db.sql`select sum(docs_collected)::int as n, bool_and(done) as done from legifrance_crawl_plan`;
  expect(p).toEqual({ n: expected.length, done: true });
}

describe("MASSIVE", () => {
  it("a collector killed mid-run resumes from its persisted cursor without losing a document", async () => {
    const ctl = new AbortController();
    const first = collectMassive(deps({}, 40), { budgetMs: 60_000, signal: ctl.signal, leaseSeconds: 60 });
    await waitFor("some documents stored", async () => (await storedIds()).length >= 25, 20_000, 20);
    ctl.abort(new Error("killed"));
    await expect(first).rejects.toThrow();
    const [run] = await db.sql`select id, status from legifrance_collector_runs`;
    expect(run.status).toBe("running");
    const [mid] = await db.sql`select sum(next_page - 1)::int as pages from legifrance_crawl_plan`;
    expect(mid.pages).toBeGreaterThan(0);

    // Another start while the dead run's lease is valid gets nothing to do...
    const blocked = await collectMassive(deps(), { budgetMs: 60_000 });
    expect(blocked).toMatchObject({ acquired: false, runId: run.id, collected: 0 });
    // ...and the continuation (same run id) resumes where it stopped.
    const resumed = await collectMassive(deps(), { runId: run.id, budgetMs: 60_000 });
    expect(resumed).toMatchObject({ acquired: true, done: true, failed: 0 });
    await expectEverythingCollectedOnce();
    const [done] = await db.sql`select status, invocations from legifrance_collector_runs where id = ${run.id}`;
    expect(done).toEqual({ status: "completed", invocations: 2 });
  });

  it("its connections killed mid-page (a database restart): the invocation waits, replays the page and finishes the plan", async () => {
    const app = `collector-${Date.now()}`;
    const own = postgres(db.url, { max: 4, onnotice: () => {}, connection: { application_name: app } });
    const holder = await db.sql.reserve();
    try {
      const running = collectMassive(deps({ sql: own }, 60), { budgetMs: 60_000 });
      await waitFor("some documents stored", async () => (await storedIds()).length >= 15, 20_000, 20);
      // The cursor's update waits behind this lock, so the kill lands on a statement in flight.
      await holder`begin`;
      await holder`lock table legifrance_crawl_plan in exclusive mode`;
      await waitFor(
        "the collector waiting to advance its cursor",
        async () =>
          (await db.sql`
        select 1 from pg_stat_activity where application_name = ${app} and wait_event_type = 'Lock'`).length > 0,
        20_000,
        20,
      );
      // Down for 1.5 s: every connection it opens meanwhile is killed too, once it has made it past
      // postgres.js's own type lookup on connect (killed there, the library rejects outside any call:
      // an unhandled rejection, not the collector's to catch). A backend that has run nothing yet
      // shows an empty query and is about to run that lookup, so it is spared too.
      for (const end = Date.now() + 1500; Date.now() < end;) {
        await db.sql`select pg_terminate_backend(pid) from pg_stat_activity
                     where application_name = ${app} and query <> '' and query not like '%b.typarray%'`;
        await new Promise((r) => setTimeout(r, 20));
      }
      await holder`commit`;
      const r = await running;
      expect(r.error).toBeUndefined();
      expect(r).toMatchObject({ acquired: true, done: true, failed: 0 });
      await expectEverythingCollectedOnce();
    } finally {
      holder.release();
      await own.end({ timeout: 1 });
    }
  });

  it("stops at its budget with the cursor saved, and the next invocation finishes the plan", async () => {
    const a = await collectMassive(deps({}, 60), { budgetMs: 400 });
    expect(a).toMatchObject({ acquired: true, done: false });
    expect(a.pages).toBeGreaterThan(0);
    let r = a;
    for (let i = 0; i < 50 && !r.done; i++) r = await collectMassive(deps(), { runId: a.runId, budgetMs: 60_000 });
    expect(r.done).toBe(true);
    await expectEverythingCollectedOnce();
  });

  it("two MASSIVE starts at once: one runs, the other does nothing", async () => {
    const [x, y] = await Promise.all([
      collectMassive(deps(), { budgetMs: 60_000 }),
      collectMassive(deps(), { budgetMs: 60_000 }),
    ]);
    expect([x.acquired, y.acquired].sort()).toEqual([false, true]);
    expect(x.collected + y.collected).toBe(piste.documentIds().length);
    await expectEverythingCollectedOnce();
    const [n] = await db.sql`select count(*)::int as n from legifrance_collector_runs`;
    expect(n.n).toBe(1);
  });

  it("a stop request ends the run before its next page", async () => {
    const ctl = collectMassive(deps({}, 30), { budgetMs: 60_000 });
    await waitFor("a first page", async () => (await storedIds()).length >= 10, 20_000, 20);
    expect(await stopMassive(db.sql)).toBe(1);
    const r = await ctl;
    expect(r.stopped).toBe(true);
    expect((await storedIds()).length).toBeLessThan(piste.documentIds().length);
  });

  it("token expiry mid-run is survived", async () => {
    // Each token dies after 25 requests: well over the 8 in flight, so a replay always leaves with a
    // live token, and the run needs at least three.
    piste.setFaults({ tokenUses: 25, latencyMs: 10 });
    const r = await collectMassive(deps({}, 60), { budgetMs: 60_000 });
    expect(r).toMatchObject({ done: true, failed: 0 });
    expect(piste.stats().tokensIssued).toBeGreaterThan(2);
    await expectEverythingCollectedOnce();
    expect(await db.sql`select 1 from legifrance_failed_documents`).toHaveLength(0);
  });

  it("a 429 storm (Retry-After) and 500s end with zero failed documents", async () => {
    piste.setFaults({ rate429: 0.4, retryAfterS: 0, rate500: 0.1 });
    const before = piste.stats().status[429] ?? 0;
    const r = await collectMassive(deps(), { budgetMs: 60_000 });
    expect(r).toMatchObject({ done: true, failed: 0 });
    expect((piste.stats().status[429] ?? 0) - before).toBeGreaterThan(10);
    await expectEverythingCollectedOnce();
    expect(await db.sql`select 1 from legifrance_failed_documents`).toHaveLength(0);
  });

  it("Storage answering 5xx while its database restarts: each upload is sent again, no document recorded failed", async () => {
    // The stack's real Storage, its inserts refused for a while with the error a starting server gives.
    await db.sql`create sequence upload_faults`;
    await db.sql.unsafe(`create function public.refuse_uploads() returns trigger language plpgsql as $$
      begin
        if nextval('upload_faults') <= 12 then
          raise exception 'the database system is starting up' using errcode = '57P03';
        end if;
        return new;
      end $$`);
    await db.sql`create trigger refuse_uploads before insert on storage.objects
                 for each row execute function public.refuse_uploads()`;
    try {
      const r = await collectMassive(deps(), { budgetMs: 60_000 });
      const [{ refused }] = await db.sql`select least(last_value, 12)::int as refused from upload_faults`;
      expect(refused).toBe(12);
      expect(r).toMatchObject({ done: true, failed: 0 });
      expect(await db.sql`select document_id from legifrance_failed_documents`).toEqual([]);
      await expectEverythingCollectedOnce();
    } finally {
      await db.sql`drop trigger refuse_uploads on storage.objects`;
      await db.sql`drop function public.refuse_uploads()`;
      await db.sql`drop sequence upload_faults`;
    }
  });

  it("a document that keeps failing is recorded with its error, and collection goes on; a later success resolves it", async () => {
    piste.setFaults({ failIds: ["JURITEXT000007022837"] });
    const limited = new PisteClient({
      oauthUrl: piste.oauthUrl,
      apiUrl: piste.apiUrl,
      clientId: piste.clientId,
      clientSecret: piste.clientSecret,
      rps: 200,
      backoffBaseMs: 5,
      maxRetries: 2,
    });
    const r = await collectMassive(deps({ api: limited }), { budgetMs: 60_000 });
    expect(r).toMatchObject({ done: true, failed: 1, collected: piste.documentIds().length - 1 });
    const [f] = await db.sql`select category, document_id, error, resolved_at from legifrance_failed_documents`;
    expect(f).toMatchObject({ category: "jurisprudence", document_id: "JURITEXT000007022837", resolved_at: null });
    expect(f.error).toMatch(/500/);
    expect(await storedIds()).not.toContain("JURITEXT000007022837");

    piste.setFaults({ failIds: [] });
    const m = await collectMaintenance(deps(), { pageSize: 100 });
    expect(m.failed).toBe(0);
    const [after] = await db.sql`select resolved_at is not null as resolved from legifrance_failed_documents`;
    expect(after.resolved).toBe(true);
  });
});

describe("MASSIVE when PISTE stays down", () => {
  it("keeps the run and its cursor, counts the failing invocations, and resumes once PISTE is back", async () => {
    const flaky = () =>
      new PisteClient({
        oauthUrl: piste.oauthUrl,
        apiUrl: piste.apiUrl,
        clientId: piste.clientId,
        clientSecret: piste.clientSecret,
        rps: 200,
        backoffBaseMs: 5,
        maxRetries: 1,
      });
    const first = await collectMassive(deps({}, 100), { budgetMs: 300 });
    expect(first.pages).toBeGreaterThan(0);
    const [cursor] = await db.sql`select sum(next_page)::int as p from legifrance_crawl_plan`;

    piste.setFaults({ rate500: 1 });
    const down1 = await collectMassive(deps({ api: flaky() }), { runId: first.runId, budgetMs: 60_000 });
    const down2 = await collectMassive(deps({ api: flaky() }), { runId: first.runId, budgetMs: 60_000 });
    expect(down1).toMatchObject({
      acquired: true,
      done: false,
      consecutiveErrors: 1,
      error: expect.stringMatching(/500/),
    });
    expect(down2.consecutiveErrors).toBe(2);
    const [run] = await db
      .sql`select status, consecutive_errors, last_error from legifrance_collector_runs where id = ${first.runId}`;
    expect(run).toMatchObject({ status: "running", consecutive_errors: 2 });
    expect((await db.sql`select sum(next_page)::int as p from legifrance_crawl_plan`)[0].p).toBe(cursor.p);

    piste.setFaults({ rate500: 0 });
    const back = await collectMassive(deps(), { runId: first.runId, budgetMs: 60_000 });
    expect(back).toMatchObject({ done: true, failed: 0 });
    expect(back.error).toBeUndefined();
    await expectEverythingCollectedOnce();
  });
});

describe("MAINTENANCE", () => {
  it("collects the newest page of each category, at the requested page size", async () => {
    const r = await collectMaintenance(deps(), { pageSize: 50 });
    expect(r.failed).toBe(0);
    const ids = await storedIds();
    // 12 generated + samples per fond, all under 50: everything, and the newest JURI decision included.
    expect(ids).toContain("JURITEXT900000000011");
    expect(ids).toEqual([...piste.documentIds()].sort());
    const [run] = await db.sql`select mode, status, docs_collected::int from legifrance_collector_runs`;
    expect(run).toEqual({ mode: "maintenance", status: "completed", docs_collected: ids.length });
    // The status view shows those documents per category, not 0.
    const status = await db.sql<{ category: string; docs_collected: number; maintenance_docs_collected: number }[]>`
      select category, docs_collected::int, maintenance_docs_collected::int from legifrance_collector_status order by category`;
    expect(status.reduce((n, s) => n + s.docs_collected, 0)).toBe(ids.length);
    expect(status.every((s) => s.docs_collected > 0 && s.docs_collected === s.maintenance_docs_collected)).toBe(true);
    expect(piste.stats().requests["/dila/legifrance/lf-engine-app/search"]).toBeGreaterThan(0);
  });
});

describe("lanes", () => {
  it("MASSIVE's files and their documents' embedding jobs are bulk; MAINTENANCE's are live", async () => {
    await db.sql`delete from legal_documents`;
    await db.sql`truncate embedding_sync_queue`;
    const drain = async () => {
      for (;;) {
        const r = await processFilesQueue({ sql: db.sql, store }, { batchSize: 50, budgetMs: 30_000 });
        if (r.claimed === 0) return;
        expect(r.failed).toBe(0);
      }
    };
    const lanesOf = async (table: "files_queue" | "embedding_sync_queue") =>
      Object.fromEntries((await db.sql.unsafe<{ lane: string; n: number }[]>(
        table === "files_queue"
          ? `select lane, count(*)::int as n from files_queue group by lane`
          : `select lane, count(*)::int as n from embedding_sync_queue where source_table = 'legal_documents' group by lane`,
      )).map((r) => [r.lane, r.n]));

    const m = await collectMaintenance(deps(), { pageSize: 3 });
    expect(m.collected).toBeGreaterThan(0);
    expect(await lanesOf("files_queue")).toEqual({ live: m.collected });
    await drain();
    expect(await lanesOf("embedding_sync_queue")).toEqual({ live: m.collected });

    const massive = await collectMassive(deps(), { budgetMs: 60_000 });
    expect(massive.done).toBe(true);
    const total = piste.documentIds().length;
    // Every object was (re-)uploaded by MASSIVE: every file is queued in bulk.
    expect(await lanesOf("files_queue")).toEqual({ bulk: total });
    await drain();
    // Documents MAINTENANCE had written are unchanged (no new job); the others' jobs are bulk.
    expect(await lanesOf("embedding_sync_queue")).toEqual({ live: m.collected, bulk: total - m.collected });
  });
});
