// Priority lanes of embedding_sync_queue on the real PostgreSQL: which lane a change lands in, how a
// claim shares a batch between the lanes, what the status views show, and what the webhook sends.
import { beforeAll, beforeEach, describe, expect, it } from "vitest";
import { useTestDatabase } from "./helpers/db.ts";

const db = useTestDatabase();

beforeAll(async () => {
  // Only the wakes asserted below may reach pg_net's queue: the schedules stay quiet.
  await db.sql`update cron.job set active = false`;
  await db.sql`create table notes (id bigint primary key, body text not null)`;
  await db.sql`create table faq (id bigint primary key, question text not null)`;
  await db.sql`select register_embedding_source('notes', array['body'])`;
  await db.sql`select register_embedding_source('faq', array['question'])`;
});

beforeEach(async () => {
  await db.sql`delete from notes`;
  await db.sql`delete from faq`;
  await db.sql`truncate embedding_sync_queue`;
  await db.sql`update embedding_sync_settings set lanes_enabled = true, bulk_share = 0.2`;
});

/** n notes written as bulk work (as kb push writes them): `set local embedding_sync.lane = 'bulk'`. */
async function bulkNotes(n: number, from = 1) {
  await db.sql.begin(async (tx) => {
    await tx.unsafe(`set local embedding_sync.lane = 'bulk'`);
    await tx`insert into notes select g, 'note ' || g from generate_series(${from}::int, ${from + n - 1}::int) g`;
  });
}

type Claimed = { id: string; source_table: string; source_id: string; lane: string };
const claim = (worker: string, limit: number, lane: string | null = null) =>
  db.sql<Claimed[]>`select * from claim_embedding_jobs(${worker}, ${limit}, 60, ${lane})`;
const complete = (worker: string, jobs: Claimed[]) =>
  db.sql`select complete_embedding_jobs(${worker}, ${jobs.map((j) => j.id)}::bigint[])`;
const lanes = async () =>
  Object.fromEntries((await db.sql<{ lane: string; n: number }[]>`
    select lane, count(*)::int as n from embedding_sync_queue where status = 'pending' group by lane`).map((
    r,
  ) => [r.lane, r.n]));

describe("which lane a change lands in", () => {
  it("row triggers queue live jobs; bulk writes, resync in every mode are bulk, and resync restores the caller's lane", async () => {
    await db.sql`insert into faq values (1, 'Comment résilier ?')`;
    await bulkNotes(3);
    expect(await lanes()).toEqual({ live: 1, bulk: 3 });

    await db.sql`truncate embedding_sync_queue`;
    await db.sql`truncate embedding_sync_versions`;
    const [r] = await db.sql`select sum(enqueued)::int as n from resync_embedding_sources()`;
    expect(r.n).toBe(4);
    expect(await lanes()).toEqual({ bulk: 4 });
    await db.sql`truncate embedding_sync_queue`;
    await db.sql`select * from resync_embedding_sources('faq', true)`;
    expect(await lanes()).toEqual({ bulk: 1 });

    // In one transaction: the resync's bulk setting ends with it, the edit after it is live.
    await db.sql.begin(async (tx) => {
      await tx`select * from resync_embedding_sources('notes', true)`;
      const [s] = await tx`select coalesce(current_setting('embedding_sync.lane', true), '') as lane`;
      expect(s.lane).toBe("");
      await tx`insert into faq values (2, 'Après le resync')`;
    });
    const [j] = await db.sql`select lane from embedding_sync_queue where source_table = 'faq' and source_id = '2'`;
    expect(j.lane).toBe("live");
  });

  it("a register backfill (register, then resync) is bulk", async () => {
    await db.sql`create table pages (id bigint primary key, body text)`;
    await db.sql`alter table pages disable trigger user`;
    await db.sql`insert into pages select g, 'page ' || g from generate_series(1, 5) g`;
    await db.sql`alter table pages enable trigger user`;
    await db.sql`select register_embedding_source('pages', array['body'])`;
    await db.sql`select * from resync_embedding_sources('pages')`;
    const rows = await db
      .sql`select lane, count(*)::int as n from embedding_sync_queue where source_table = 'pages' group by lane`;
    expect(rows).toEqual([{ lane: "bulk", n: 5 }]);
    await db.sql`select unregister_embedding_source('pages')`;
  });

  it("a live edit of a row whose job is pending in bulk upgrades it; a bulk change never downgrades a live one", async () => {
    await bulkNotes(2);
    await db.sql`update notes set body = 'edited by hand' where id = 1`;
    const jobs = await db
      .sql`select source_id, lane, content from embedding_sync_queue where status = 'pending' order by source_id`;
    expect(jobs).toEqual([
      { source_id: "1", lane: "live", content: "body: edited by hand" }, // still one pending job per row
      { source_id: "2", lane: "bulk", content: "body: note 2" },
    ]);
    await db.sql.begin(async (tx) => {
      await tx.unsafe(`set local embedding_sync.lane = 'bulk'`);
      await tx`update notes set body = body || ' (bulk)'`;
    });
    const after = await db
      .sql`select source_id, lane, content from embedding_sync_queue where status = 'pending' order by source_id`;
    expect(after).toEqual([
      { source_id: "1", lane: "live", content: "body: edited by hand (bulk)" },
      { source_id: "2", lane: "bulk", content: "body: note 2 (bulk)" },
    ]);
  });
});

describe("claims", () => {
  it("a live edit made after 2,000 pending bulk jobs is claimed in the first claim", async () => {
    await bulkNotes(2000);
    await db.sql`insert into faq values (1, 'Une modification urgente')`;
    const jobs = await claim("w", 50);
    expect(jobs).toHaveLength(50);
    expect(jobs.filter((j) => j.lane === "live").map((j) => `${j.source_table}/${j.source_id}`)).toEqual(["faq/1"]);
    // Live could fill only 1 of its 40: bulk got its 10 and the 39 left.
    expect(jobs.filter((j) => j.lane === "bulk")).toHaveLength(49);
  });

  it("no starvation: under a steady stream of live jobs every mixed claim carries bulk's share, and bulk drains", async () => {
    await bulkNotes(200);
    let nextFaq = 1;
    const bulkPerClaim: number[] = [];
    for (let i = 0; i < 25 && (await lanes()).bulk; i++) {
      // More live work arrives than a batch can hold.
      await db.sql`insert into faq select g, 'q' || g from generate_series(${nextFaq}::int, ${nextFaq + 59}::int) g`;
      nextFaq += 60;
      const jobs = await claim("w", 50);
      expect(jobs).toHaveLength(50);
      bulkPerClaim.push(jobs.filter((j) => j.lane === "bulk").length);
      await complete("w", jobs);
    }
    expect(bulkPerClaim).toEqual(Array(20).fill(10)); // floor(50 * 0.2) every time, 200 bulk jobs in 20 claims
    expect((await lanes()).bulk).toBeUndefined();
  });

  it("share edge cases: at least one bulk job, never the whole batch while live waits, unused shares go to the other lane", async () => {
    await bulkNotes(20);
    await db.sql`insert into faq select g, 'q' || g from generate_series(1, 20) g`;
    await db.sql`update embedding_sync_settings set bulk_share = 0.01`;
    let jobs = await claim("a", 10);
    expect(jobs.filter((j) => j.lane === "bulk")).toHaveLength(1);
    jobs = await claim("b", 1);
    expect(jobs.map((j) => j.lane)).toEqual(["live"]);
    await db.sql`update embedding_sync_settings set bulk_share = 0`;
    jobs = await claim("c", 10);
    expect(jobs.every((j) => j.lane === "live")).toBe(true);
    // Live has 0 left: bulk takes the whole batch.
    jobs = await claim("d", 30);
    expect(jobs.map((j) => j.lane)).toEqual(Array(19).fill("bulk"));
  });

  it("p_lane claims one lane only; the runbook's 3-argument call still resolves", async () => {
    await bulkNotes(5);
    await db.sql`insert into faq select g, 'q' || g from generate_series(1, 5) g`;
    expect((await claim("a", 100, "bulk")).map((j) => j.lane)).toEqual(Array(5).fill("bulk"));
    await db.sql`insert into faq values (6, 'q6')`;
    const three = await db.sql<Claimed[]>`select * from claim_embedding_jobs('b', 2, 60)`;
    expect(three.map((j) => j.lane)).toEqual(["live", "live"]);
    expect((await claim("c", 100, "live")).map((j) => j.lane)).toEqual(Array(4).fill("live"));
    await expect(claim("d", 1, "urgent")).rejects.toThrow(/p_lane must be live, bulk or null/);
  });

  it("lanes_enabled = false: plain FIFO by (run_at, id), whatever p_lane says", async () => {
    await bulkNotes(30);
    await db.sql`insert into faq values (1, 'late live edit')`;
    await db.sql`update embedding_sync_settings set lanes_enabled = false`;
    const fifo = await claim("a", 30, "live");
    expect(fifo.map((j) => j.source_id)).toEqual(Array.from({ length: 30 }, (_, i) => String(i + 1)));
    expect(fifo.every((j) => j.lane === "bulk")).toBe(true);
    const [last] = await claim("a", 30);
    expect(last).toMatchObject({ source_table: "faq", lane: "live" });
  });
});

describe("what operators see", () => {
  it("embedding_sync_status counts pending jobs per lane; stuck and dead-letter rows show their lane", async () => {
    await bulkNotes(7);
    await db.sql`insert into faq select g, 'q' || g from generate_series(1, 3) g`;
    await db
      .sql`update embedding_sync_queue set created_at = now() - interval '1 hour' where source_table = 'faq' and source_id = '1'`;
    const status = await db.sql`
      select source_table, pending::int, pending_live::int, pending_bulk::int,
             extract(epoch from oldest_pending_live_age)::int >= 3600 as old_live
      from embedding_sync_status order by source_table`;
    expect(status).toEqual([
      { source_table: "faq", pending: 3, pending_live: 3, pending_bulk: 0, old_live: true },
      { source_table: "notes", pending: 7, pending_live: 0, pending_bulk: 7, old_live: null },
    ]);
    const jobs = await claim("w", 10);
    await db.sql`update embedding_sync_queue set lease_until = now() - interval '1 second' where id = ${jobs[0].id}`;
    await db.sql`select fail_embedding_jobs('w', ${[jobs[1].id]}::bigint[], 'bad input', 0, true)`;
    const [stuck] = await db.sql`select lane from embedding_sync_stuck where id = ${jobs[0].id}`;
    const [dead] = await db.sql`select lane from embedding_sync_dead_letter where id = ${jobs[1].id}`;
    expect(stuck.lane).toBe(jobs[0].lane);
    expect(dead.lane).toBe(jobs[1].lane);
  });
});

describe("wakes", () => {
  beforeAll(async () => {
    await db.sql`delete from vault.secrets where name in ('project_url', 'secret_key', 'service_role_key')`;
    await db
      .sql`select vault.create_secret('http://127.0.0.1:9', 'project_url'), vault.create_secret('local-test-key', 'secret_key')`;
  });
  beforeEach(async () => {
    await db.sql`delete from net.http_request_queue`;
    // Every test starts outside any wake window.
    await db.sql`update private.embedding_sync_wake set last_wake_at = '-infinity'`;
    await db.sql`update private.embedding_sync_live_wake set last_wake_at = '-infinity'`;
  });
  const calls = async () =>
    (await db.sql<{ body: Record<string, unknown> }[]>`
    select convert_from(body, 'UTF8')::jsonb as body from net.http_request_queue
    where url like '%/functions/v1/process-embedding-queue' order by id`).map((r) => r.body);

  it("a live change wakes ONE worker with lane live, coalesced per window; bulk-only inserts fan out without a lane", async () => {
    await db.sql`insert into faq values (1, 'q1')`;
    await db.sql`insert into faq values (2, 'q2')`; // inside the window: coalesced
    expect(await calls()).toEqual([{ action: "process", lane: "live", batchSize: 100 }]);

    await db.sql`delete from net.http_request_queue`;
    await bulkNotes(250);
    const bulk = await calls();
    expect(bulk.length).toBeGreaterThanOrEqual(1);
    for (const b of bulk) expect(b).toEqual({ action: "process", batchSize: 100 });
  });

  it("a live edit that upgrades a pending bulk job wakes a live worker", async () => {
    await bulkNotes(3);
    await db.sql`delete from net.http_request_queue`;
    await db.sql`update notes set body = 'by hand' where id = 2`;
    expect(await calls()).toEqual([{ action: "process", lane: "live", batchSize: 100 }]);
  });

  it("lanes off: a live change wakes as before (fan-out, no lane)", async () => {
    await db.sql`update embedding_sync_settings set lanes_enabled = false`;
    await db.sql`insert into faq values (1, 'q1')`;
    expect(await calls()).toEqual([{ action: "process", batchSize: 100 }]);
  });

  it("the fan-out only starts what the pool lacks: workers holding bulk leases count, live-only workers do not", async () => {
    await bulkNotes(900); // a backlog worth max_workers (4) batches of 100
    await db.sql`delete from net.http_request_queue`;
    await db.sql`update private.embedding_sync_wake set last_wake_at = '-infinity'`;
    await db.sql`select private.fan_out_embedding_workers(1)`;
    expect(await calls()).toHaveLength(4);

    // Three workers drain bulk, one live-only worker lingers: one more bulk worker is missing.
    await db.sql`delete from net.http_request_queue`;
    for (const w of ["b1", "b2", "b3"]) await db.sql`select id from claim_embedding_jobs(${w}, 10, 60, 'bulk')`;
    await db.sql`insert into faq values (7, 'live')`;
    await db.sql`delete from net.http_request_queue`;
    await db.sql`select id from claim_embedding_jobs('live-1', 10, 60, 'live')`;
    await db.sql`select private.fan_out_embedding_workers(1)`;
    expect(await calls()).toHaveLength(1);

    // A full pool: a wake (the lanes-off baseline wakes by fan-out on every edit) starts nobody.
    await db.sql`delete from net.http_request_queue`;
    await db.sql`select id from claim_embedding_jobs('b4', 10, 60, 'bulk')`;
    await db.sql`update embedding_sync_settings set lanes_enabled = false`;
    await db.sql`insert into faq values (8, 'live')`;
    expect(await calls()).toEqual([]);
  });

  it("fan-out starts a worker for jobs whose lease expired when nothing is pending", async () => {
    await db.sql`update embedding_sync_settings set lanes_enabled = true`;
    await db.sql`truncate embedding_sync_queue`;
    await bulkNotes(30, 9000);
    await db.sql`select id from claim_embedding_jobs('dead-worker', 100, 60, 'bulk')`;
    // The worker died with the server: its lease ran out, and no job is pending.
    await db
      .sql`update embedding_sync_queue set lease_until = now() - interval '1 second' where locked_by = 'dead-worker'`;
    await db.sql`delete from net.http_request_queue`;
    await db.sql`select private.fan_out_embedding_workers()`;
    expect((await calls()).length).toBeGreaterThanOrEqual(1);
  });

  it("continuation asks for one successor only while jobs of its lane are ready", async () => {
    const body = { action: "process", lane: "live", batchSize: 10 };
    const [none] = await db.sql`select private.continue_embedding_worker(${db.sql.json(body)}) as id`;
    expect(none.id).toBeNull();
    await bulkNotes(2);
    await db.sql`delete from net.http_request_queue`;
    const [still] = await db.sql`select private.continue_embedding_worker(${db.sql.json(body)}) as id`;
    expect(still.id).toBeNull(); // only bulk jobs are ready: a live worker has no successor to ask for
    const [bulk] = await db.sql`select private.continue_embedding_worker(${
      db.sql.json({ ...body, lane: "bulk" })
    }) as id`;
    expect(bulk.id).not.toBeNull();
    expect(await calls()).toEqual([{ ...body, lane: "bulk" }]);
    // As many workers as max_workers hold jobs: no successor, the chains never outgrow the parallelism.
    await db.sql`update embedding_sync_settings set max_workers = 1`;
    try {
      await claim("busy", 1);
      const [full] = await db.sql`select private.continue_embedding_worker(${
        db.sql.json({ ...body, lane: "bulk" })
      }) as id`;
      expect(full.id).toBeNull();
    } finally {
      await db.sql`update embedding_sync_settings set max_workers = 4`;
    }
  });
});
