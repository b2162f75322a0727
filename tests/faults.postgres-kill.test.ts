// PostgreSQL itself SIGKILLed (the postmaster, -9) in the middle of work, on a private durable
// cluster (fsync, synchronous_commit, full_page_writes on), with the local stack running on it: after
// the restart, nothing is lost, nothing is duplicated, nothing is stale, and the pipeline resumes by
// itself, without a restart of the stack. The short version of `npm run bench:faults`.
import { afterAll, beforeAll, expect, it, onTestFailed } from "vitest";
import {
  createSource,
  embeddingInvariants,
  type FaultBed,
  pick,
  progress,
  recoveryAfter,
  startFaultBed,
  until,
  wastedInputs,
} from "../packages/testkit/faults.ts";

let bed: FaultBed;
// The bed's last lines (server restarts, pg_net, the functions' own output), printed when a test fails.
const lines: string[] = [];
const log = (m: string) => {
  lines.push(`${new Date().toISOString().slice(11, 23)} ${m}`);
  if (lines.length > 300) lines.shift();
  if (process.env.FAULTS_DEBUG) console.error(m);
};
const printLogOnFailure = () => onTestFailed(() => console.error(`the fault bed's last lines:\n${lines.join("\n")}`));

beforeAll(async () => {
  bed = await startFaultBed({ log, providerLatencyMs: 50 });
}, 150_000);
afterAll(async () => {
  await bed?.stop();
}, 60_000);

it("runs on a durable server", async () => {
  expect(await bed.cluster.settings()).toMatchObject({ fsync: "on", synchronous_commit: "on", full_page_writes: "on" });
});

it(
  "postmaster SIGKILL mid-drain: work resumes within 120 s and every row ends with exactly its current chunk",
  async () => {
    printLogOnFailure();
    const { sql } = bed;
    const rows = 1500;
    bed.fake.resetStats();
    await createSource(sql, "fault_drain", rows); // the webhook wakes the workers
    const at = Math.round(pick(0.15, 0.6) * rows);
    await until(
      "the drain to reach the fault point",
      90_000,
      async () => (await progress(sql, "fault_drain")).done >= at,
      50,
    );
    // A row edited while its old version may be in flight: the newest content must win.
    await sql`update fault_drain set body = body || ' (modifié)' where id % 97 = 0`;
    const [held] = await sql<{ n: number; workers: number }[]>`
    select count(*)::int as n, count(distinct locked_by)::int as workers from embedding_sync_queue where status = 'processing'`;
    const faultAt = new Date();
    await bed.cluster.sigkill();
    await bed.cluster.start();
    const restartedAt = Date.now();
    const recovery = await recoveryAfter(sql, "fault_drain", faultAt, restartedAt, 120_000);
    expect(recovery).toBeLessThanOrEqual(120);
    // The recovery is the target (above); finishing the rest is throughput, slow on a loaded machine.
    await until("the drain to finish", 300_000, async () => (await progress(sql, "fault_drain")).left === 0, 250);
    expect(await embeddingInvariants(sql, ["fault_drain"])).toEqual({
      lost_rows: 0,
      duplicate_chunks: 0,
      stale_chunks: 0,
      orphan_chunks: 0,
      stuck_jobs: 0,
      unfinished_jobs: 0,
      dead_jobs: 0,
    });
    // Re-embedded inputs: at most the batches that were in flight when the server died.
    expect(wastedInputs(bed.fake)).toBeLessThanOrEqual(Math.max(held.n, 1));
  },
  600_000,
);

it(
  "postmaster SIGKILL while a bulk resync fills a loading segment: the segment is built and every row is searchable once",
  async () => {
    printLogOnFailure();
    const { sql } = bed;
    const rows = 1000;
    // Small segments (400 chunks instead of 10,000) so a run of this size opens, fills and builds several.
    await sql`update embedding_sync_settings set bulk_segment_min_rows = 400, bulk_segment_max_rows = 400`;
    await createSource(sql, "fault_bulk", rows, { register: false });
    await sql`select register_embedding_source('fault_bulk', array['body'])`;
    await sql`select * from resync_embedding_sources('fault_bulk')`; // bulk-lane jobs
    await sql`call private.maintain_embedding_segments(false)`; // opens the loading segment now rather than at the minute
    const at = Math.round(pick(0.1, 0.5) * rows);
    await until("the bulk drain to fill a segment", 90_000, async () => {
      const [r] = await sql<{ n: number }[]>`
      select count(*)::int as n from documentation_embeddings where source_table = 'fault_bulk' and segment > 0`;
      return r.n >= at;
    }, 50);
    const faultAt = new Date();
    await bed.cluster.sigkill();
    await bed.cluster.start();
    const restartedAt = new Date();
    const recovery = await recoveryAfter(sql, "fault_bulk", faultAt, restartedAt.getTime(), 120_000);
    expect(recovery).toBeLessThanOrEqual(120);
    await until("every bulk job done", 300_000, async () => (await progress(sql, "fault_bulk")).left === 0, 250);
    // pg_cron came back with the server and runs its jobs again (the segment jobs run every minute)...
    await until("a pg_cron run after the restart", 90_000, async () => {
      const [r] = await sql<{ n: number }[]>`
      select count(*)::int as n from cron.job_run_details d join cron.job j using (jobid)
      where j.jobname = 'embedding-segments-maintenance' and d.start_time > ${restartedAt} and d.status = 'succeeded'`;
      return r.n > 0;
    }, 500);
    // ...and what it runs closes and builds the segments the crash interrupted (called here rather than
    // waiting for the next minutes' runs, so the test stays short; bench:faults waits for pg_cron).
    // A build pg_cron started meanwhile holds the builders' lock: ask again until it has finished.
    await until("every segment sealed", 90_000, async () => {
      await sql`call private.maintain_embedding_segments()`;
      const [r] = await sql<{ n: number }[]>`select count(*)::int as n from embedding_segments where state <> 'sealed'`;
      return r.n === 0;
    }, 1000);
    expect(await embeddingInvariants(sql, ["fault_bulk"])).toEqual({
      lost_rows: 0,
      duplicate_chunks: 0,
      stale_chunks: 0,
      orphan_chunks: 0,
      stuck_jobs: 0,
      unfinished_jobs: 0,
      dead_jobs: 0,
    });
    const segments = await sql<{ segment: number; indexed: boolean }[]>`
    select segment, indexed from embedding_segment_status where segment > 0`;
    expect(segments.length).toBeGreaterThan(0);
    expect(segments.every((s) => s.indexed)).toBe(true);
  },
  600_000,
);
