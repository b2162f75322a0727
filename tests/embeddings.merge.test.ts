// Segment merges: sealed segments merge in the background under a size-tiered policy, each merge
// building its index once and swapping it in atomically. Segments are made here the way a bulk
// backfill makes them (a loading segment opened, written, closed and built by the real procedures),
// with chunks written straight into the loading segment and deterministic vectors computed in SQL.
// The tests check what a reader sees: every chunk exactly once, at every step, through merges killed
// in their copy or their build, a live edit during a merge, and a read in the middle of the swap.
import postgres from "postgres";
import { beforeAll, beforeEach, describe, expect, it } from "vitest";
import { useTestDatabase, waitFor } from "./helpers/db.ts";

const db = useTestDatabase();

interface Segment {
  segment: number;
  state: string;
  rows: string;
  indexed: boolean;
  build_attempts: number;
  merged_from: number[] | null;
  merged_into: number | null;
}

function segments(sql: postgres.Sql): Promise<Segment[]> {
  return sql<Segment[]>`
    select segment, state, rows, indexed, build_attempts, merged_from, merged_into
    from embedding_segment_status where segment > 0 order by segment`;
}

const sealedSizes = async (sql: postgres.Sql) =>
  (await segments(sql)).filter((s) => s.state === "sealed").map((s) => Number(s.rows)).sort((a, b) => a - b);

/** A connection of its own, as a pg_cron run has; its backend pid for pg_stat_* and pg_terminate_backend. */
async function session(url: string): Promise<{ sql: postgres.Sql; pid: number }> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  const [{ pid }] = await sql<{ pid: number }[]>`select pg_backend_pid() as pid`;
  return { sql, pid };
}

/** Each table's rows get vectors of their own (a search over every table finds the right one). */
const SEED: Record<string, number> = { merge_tiers: 0, merge_kill: 10_000, merge_live: 20_000, merge_swap: 30_000 };

/** A sealed segment holding one chunk for each of rows [from, to] of `table`: opened, written, closed, built. */
async function sealedSegment(sql: postgres.Sql, table: string, from: number, to: number): Promise<number> {
  const [{ id }] = await sql<{ id: number }[]>`select private.open_embedding_segment() as id`;
  expect(id).toBeGreaterThan(0);
  await sql.unsafe(`
    insert into documentation_embeddings (source_table, source_id, chunk_index, content, content_hash, embedding,
      model, token_count, metadata, source_version, segment)
    select '${table}', g::text, 0, '${table} doc ' || g || ' v1', md5('${table} doc ' || g || ' v1'), merge_test_vector(${
    SEED[table]
  } + g),
           'merge-model', 3, '{}', 1, ${id}
    from generate_series(${from}, ${to}) g`);
  // No bulk job waits: maintenance closes the loading segment; the build job builds it (and merges).
  await sql`call private.maintain_embedding_segments(false)`;
  await sql`call private.build_embedding_segments()`;
  return id;
}

/** A registered source table with rows 1..n whose chunks the test writes itself, in bulk segments. */
async function sourceTable(sql: postgres.Sql, table: string, n: number) {
  await sql.unsafe(`create table ${table} (id int primary key, body text)`);
  await sql`select register_embedding_source(${table})`;
  await sql.unsafe(`insert into ${table} select g, '${table} doc ' || g || ' v1' from generate_series(1, ${n}) g`);
  await sql`delete from embedding_sync_queue where source_table = ${table}`;
}

/** Claims every ready job as `worker` and applies it, each chunk with a vector of its own (seeded 100,000 + id). */
function applyAll(sql: postgres.Sql, worker: string, jobIds: number[]) {
  return sql<{ outcome: string }[]>`
    select outcome from apply_embedding_results(${worker}, 'merge-model', ${jobIds}::bigint[],
      (select coalesce(jsonb_agg(jsonb_build_object('j', q.id, 'i', 0, 'c', q.content, 'h', md5(q.content), 't', 3,
                                                    'e', merge_test_vector(100000 + q.source_id::int)::text)), '[]')
       from embedding_sync_queue q where q.locked_by = ${worker} and q.action <> 'DELETE'))`;
}

/** Every row of [from, to] of `table` has its chunk exactly once; returns the segments holding them. */
async function expectEachChunkOnce(sql: postgres.Sql, table: string, ids: number[]): Promise<Set<number>> {
  const rows = await sql<{ source_id: string; n: number; seg: number }[]>`
    select source_id, count(*)::int as n, min(segment) as seg
    from documentation_embeddings where source_table = ${table} group by source_id`;
  const got = new Map(rows.map((r) => [Number(r.source_id), r]));
  const missing = ids.filter((id) => !got.has(id));
  const twice = rows.filter((r) => r.n !== 1).map((r) => r.source_id);
  expect({ missing, twice, extra: got.size - ids.length }).toEqual({ missing: [], twice: [], extra: 0 });
  return new Set(rows.map((r) => r.seg));
}

/** A vector search over documentation_embeddings (the per-segment HNSW indexes, merged) finds each sampled row first. */
async function expectFoundByOwnVector(sql: postgres.Sql, table: string, sample: number[]) {
  for (const id of sample) {
    const top = await sql<{ source_table: string; source_id: string }[]>`
      select source_table, source_id from documentation_embeddings
      order by embedding <=> merge_test_vector(${SEED[table] + id}) limit 2`;
    expect({ id, top: top[0] }).toEqual({ id, top: { source_table: table, source_id: String(id) } });
    expect(top[1]?.source_id, `row ${id} found twice`).not.toBe(String(id));
  }
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, k) => from + k);
const sampleOf = (from: number, to: number, n: number) =>
  Array.from({ length: n }, (_, k) => from + Math.floor(((to - from) * k) / Math.max(n - 1, 1)));

beforeAll(async () => {
  const sql = db.sql;
  // A deterministic, well spread vector per row, of the column's own dimensions.
  await sql.unsafe(`
    create function merge_test_vector(p int) returns extensions.vector language sql immutable as $$
      select array_agg(sin(p * 12.9898 + k * 78.233) * cos(p * 0.37 + k))::extensions.vector
      from generate_series(1, public.embedding_dimensions()) k
    $$`);
  // Builds run serially so that the tests' kills and pauses land where they mean to.
  await sql`update embedding_sync_settings set segment_merges_enabled = false, segment_merge_factor = 3,
              bulk_segment_max_rows = 50, bulk_segment_min_rows = 1000000`;
});

// Each test starts with no bulk segment (maintenance drops emptied ones) and makes its sealed segments
// with merges off, then turns them on.
beforeEach(async () => {
  await db.sql`update embedding_sync_settings set segment_merges_enabled = false`;
  await db.sql`delete from documentation_embeddings where segment > 0`;
  await db.sql`call private.maintain_embedding_segments(false)`;
  expect(await segments(db.sql)).toEqual([]);
});

describe("segment merges", () => {
  it("merges by size tier: sealed segments stay about log(n), every chunk found exactly once", async () => {
    const sql = db.sql;
    const T = "merge_tiers";
    await sql`update embedding_sync_settings set segment_merges_enabled = true`;
    // merge factor 3, fresh segments of 50 chunks: tier 0 is [0, 150), tier 1 [150, 450), tier 2 [450, 1350).
    const want = [[50], [50, 50], [150], [50, 150], [50, 50, 150], [150, 150], [50, 150, 150], [50, 50, 150, 150], [
      450,
    ]];
    const seen: number[][] = [];
    for (let k = 0; k < want.length; k++) {
      await sealedSegment(sql, T, k * 50 + 1, k * 50 + 50);
      seen.push(await sealedSizes(sql));
      await expectEachChunkOnce(sql, T, range(1, k * 50 + 50));
    }
    expect(seen).toEqual(want);

    const all = await segments(sql);
    const last = all.find((s) => s.state === "sealed")!;
    expect(last).toMatchObject({ indexed: true, rows: "450" });
    expect(last.merged_from).toHaveLength(3);
    // Its sources, emptied by the swap (and those of the merge that made one of them), are dropped by
    // the build run that merged them, not left to the next maintenance run.
    expect(all.map((s) => [s.segment, s.state])).toEqual([[last.segment, "sealed"]]);
    const [{ parts }] = await sql<{ parts: number }[]>`
      select count(*)::int as parts from pg_inherits where inhparent = 'public.documentation_embeddings'::regclass`;
    expect(parts).toBe(2); // segment 0 and the merged one

    expect(await expectEachChunkOnce(sql, T, range(1, 450))).toEqual(new Set([last.segment]));
    await expectFoundByOwnVector(sql, T, sampleOf(1, 450, 12));
  }, 180_000);

  it(
    "a merge killed in its copy, then in its build: search stays complete and exact-once; the next run finishes it",
    async () => {
      const sql = db.sql;
      const K = "merge_kill";
      const sources = [
        await sealedSegment(sql, K, 1, 700),
        await sealedSegment(sql, K, 701, 1400),
        await sealedSegment(sql, K, 1401, 2100),
      ];
      const ids = range(1, 2100);
      await sql`update embedding_sync_settings set segment_merges_enabled = true`;
      // A gate in the copy: inserting this merge's copy of row 2100 (the last source's last row) waits for
      // an advisory lock the test holds, so the merge is caught with most rows copied.
      await sql.unsafe(`
      create function merge_test_gate() returns trigger language plpgsql as $$
      begin
        if new.segment > 0 and new.source_table = 'merge_kill' and new.source_id = '2100' then
          perform pg_advisory_xact_lock_shared(770077);
        end if;
        return new;
      end $$;
      create trigger merge_test_gate before insert on documentation_embeddings for each row execute function merge_test_gate();`);
      const gate = await session(db.url);
      await gate.sql`select pg_advisory_lock(770077)`;

      // 1. Killed in the copy.
      const first = await session(db.url);
      const run1 = first.sql`call private.merge_embedding_segments()`.then(() => null, (e: Error) => e);
      await waitFor(
        "the merge to reach the gate in its copy",
        async () => {
          const [r] =
            await sql`select count(*)::int as n from pg_locks where pid = ${first.pid} and locktype = 'advisory' and not granted`;
          return r.n === 1;
        },
        60_000,
        20,
      );
      const target = (await segments(sql)).find((s) => s.state === "merging")!;
      expect(target).toMatchObject({ merged_from: sources, rows: "2100", indexed: false, build_attempts: 1 });
      const part = `private.documentation_embeddings_s${target.segment}`;
      // Rows were written (the table grew), invisible to everyone until the swap commits.
      const [grown] = await sql`select pg_relation_size(${part}) > 0 as yes`;
      expect(grown.yes).toBe(true);
      await expectEachChunkOnce(sql, K, ids);
      await sql`select pg_terminate_backend(${first.pid})`;
      expect(await run1).toBeInstanceOf(Error);
      await first.sql.end({ timeout: 1 });
      await gate.sql`select pg_advisory_unlock(770077)`;
      await gate.sql.end({ timeout: 5 });
      await sql`drop trigger merge_test_gate on documentation_embeddings`;

      expect((await segments(sql)).map((s) => [s.segment, s.state])).toEqual([...sources.map((id) => [id, "sealed"]), [
        target.segment,
        "merging",
      ]]);
      expect(await expectEachChunkOnce(sql, K, ids)).toEqual(new Set(sources));
      await expectFoundByOwnVector(sql, K, sampleOf(1, 2100, 6));

      // 2. The next run merges into the same table again; killed in its index build.
      const second = await session(db.url);
      const run2 = second.sql`call private.build_embedding_segments()`.then(() => null, (e: Error) => e);
      await waitFor(
        "the merged segment's index build",
        async () => {
          const [r] = await sql`select count(*)::int as n from pg_stat_progress_create_index
                            where pid = ${second.pid} and relid = to_regclass(${part})`;
          return r.n === 1;
        },
        60_000,
        20,
      );
      await expectEachChunkOnce(sql, K, ids);
      await sql`select pg_terminate_backend(${second.pid})`;
      expect(await run2).toBeInstanceOf(Error);
      await second.sql.end({ timeout: 1 });
      expect((await segments(sql)).find((s) => s.segment === target.segment)).toMatchObject({
        state: "merging",
        build_attempts: 2,
        indexed: false,
      });
      expect(await expectEachChunkOnce(sql, K, ids)).toEqual(new Set(sources));
      await expectFoundByOwnVector(sql, K, sampleOf(1, 2100, 6));

      // 3. The next run finishes it, and drops the emptied sources itself.
      await sql`call private.build_embedding_segments()`;
      expect((await segments(sql)).find((s) => s.segment === target.segment)).toMatchObject({
        state: "sealed",
        rows: "2100",
        indexed: true,
        build_attempts: 3,
      });
      expect((await segments(sql)).map((s) => s.segment)).toEqual([target.segment]);
      expect(await expectEachChunkOnce(sql, K, ids)).toEqual(new Set([target.segment]));
      await expectFoundByOwnVector(sql, K, sampleOf(1, 2100, 10));
    },
    240_000,
  );

  it(
    "a live edit and a delete of rows in segments being merged: the edit ends in segment 0 only, the delete nowhere",
    async () => {
      const sql = db.sql;
      const L = "merge_live";
      await sourceTable(sql, L, 1500);
      const sources = [
        await sealedSegment(sql, L, 1, 500),
        await sealedSegment(sql, L, 501, 1000),
        await sealedSegment(sql, L, 1001, 1500),
      ];
      await sql`update embedding_sync_settings set segment_merges_enabled = true`;

      const merger = await session(db.url);
      const run = merger.sql`call private.build_embedding_segments()`.execute();
      const building = await waitFor(
        "the merged segment's index build",
        async () => {
          const [r] = await sql<
            { relid: string }[]
          >`select relid::regclass::text as relid from pg_stat_progress_create_index where pid = ${merger.pid}`;
          return r?.relid;
        },
        60_000,
        20,
      );
      const target = (await segments(sql)).find((s) => s.state === "merging")!;
      expect(building).toBe(`private.documentation_embeddings_s${target.segment}`);
      expect(target.merged_from).toEqual(sources);

      // During the build (the copy is done): a live edit of row 777 (segment 2) and a delete of row 1200
      // (segment 3), through the real worker SQL, on a connection that refuses to wait for a lock.
      const live = await session(db.url);
      try {
        await live.sql`set lock_timeout = '2s'`;
        await live.sql.unsafe(`update ${L} set body = '${L} doc 777 v2' where id = 777`);
        await live.sql.unsafe(`delete from ${L} where id = 1200`);
        const jobs = await live.sql<{ id: string; lane: string }[]>`
        select q.id::text, q.lane from claim_embedding_jobs('merge-live-worker', 10, 60) c join embedding_sync_queue q on q.id = c.id`;
        expect(jobs.map((j) => j.lane)).toEqual(["live", "live"]);
        const out = await applyAll(live.sql, "merge-live-worker", jobs.map((j) => Number(j.id)));
        expect(out.map((o) => o.outcome)).toEqual(["applied", "applied"]);
      } finally {
        await live.sql.end({ timeout: 5 });
      }
      const [still] = await sql`select count(*)::int as n from pg_stat_progress_create_index where pid = ${merger.pid}`;
      expect(still.n, "the build was still running when the live edit committed").toBe(1);

      await run;
      await merger.sql.end({ timeout: 5 });
      expect((await segments(sql)).find((s) => s.segment === target.segment)).toMatchObject({
        state: "sealed",
        rows: "1498",
        indexed: true,
      });
      const where = await sql<{ segment: number; content: string }[]>`
      select segment, content from documentation_embeddings where source_table = ${L} and source_id in ('777', '1200')`;
      expect(where).toEqual([{ segment: 0, content: expect.stringContaining(`${L} doc 777 v2`) }]);
      const ids = range(1, 1500).filter((id) => id !== 1200);
      expect(await expectEachChunkOnce(sql, L, ids)).toEqual(new Set([0, target.segment]));
      const [top] =
        await sql`select source_id from documentation_embeddings order by embedding <=> merge_test_vector(100777) limit 1`;
      expect(top.source_id).toBe("777");
      await expectFoundByOwnVector(sql, L, sampleOf(1, 1500, 8).filter((id) => id !== 777 && id !== 1200));
    },
    240_000,
  );

  it(
    "in the middle of the swap: a read is not blocked and sees every chunk once; a live edit waits, then lands once",
    async () => {
      const sql = db.sql;
      const W = "merge_swap";
      await sourceTable(sql, W, 900);
      const sources = [
        await sealedSegment(sql, W, 1, 300),
        await sealedSegment(sql, W, 301, 600),
        await sealedSegment(sql, W, 601, 900),
      ];
      const ids = range(1, 900);
      await sql`update embedding_sync_settings set segment_merges_enabled = true`;
      // Pauses the swap at its last step (marking the sources 'merged'), with every lock of the swap held.
      const blocker = await sql.reserve();
      await blocker`begin`;
      await blocker`select 1 from embedding_segments where id = ${sources[0]} for update`;

      const merger = await session(db.url);
      const editor = await session(db.url);
      let applying: Promise<string[]> | undefined;
      const run = merger.sql`call private.merge_embedding_segments()`.execute();
      try {
        await waitFor(
          "the swap to wait at its last step",
          async () => {
            const [r] = await sql`select wait_event from pg_stat_activity where pid = ${merger.pid}`;
            return r?.wait_event === "transactionid";
          },
          60_000,
          20,
        );
        const [held] = await sql`
        select count(*)::int as n from pg_locks
        where pid = ${merger.pid} and mode = 'ShareLock' and granted
          and relation = any (${sources.map((id) => `private.documentation_embeddings_s${id}`)}::regclass[])`;
        expect(held.n, "the swap holds SHARE on the three sources").toBe(3);

        const reader = await session(db.url);
        try {
          await reader.sql`set lock_timeout = '200ms'`;
          // The sources' rows are deleted and the merged ones written, neither committed: readers see the old state whole.
          expect(await expectEachChunkOnce(reader.sql, W, ids)).toEqual(new Set(sources));
          await expectFoundByOwnVector(reader.sql, W, sampleOf(1, 900, 4));
          // A write to a source waits for the swap's commit (lock_timeout turns the wait into an error).
          const blocked = await reader.sql`delete from documentation_embeddings where segment = ${
            sources[1]
          } and source_id = 'none'`
            .then(() => null, (e) => e);
          expect(blocked?.code).toBe("55P03");
        } finally {
          await reader.sql.end({ timeout: 5 });
        }
        // A live edit of row 450 (segment 2), applied now: it reads where the row's chunks are (the
        // sources, as the swap has not committed) and waits for the swap; after the commit they are in
        // the merged segment, and that is where its delete must find them.
        await editor.sql.unsafe(`update ${W} set body = '${W} doc 450 v2' where id = 450`);
        const jobs = await editor.sql<
          { id: string }[]
        >`select id::text from claim_embedding_jobs('merge-swap-worker', 10, 60)`;
        expect(jobs).toHaveLength(1);
        applying = applyAll(editor.sql, "merge-swap-worker", jobs.map((j) => Number(j.id))).then((r) =>
          r.map((o) => o.outcome)
        );
        await waitFor(
          "the live edit to wait for the swap",
          async () => {
            const [r] = await sql`select wait_event_type from pg_stat_activity where pid = ${editor.pid}`;
            return r?.wait_event_type === "Lock";
          },
          30_000,
          20,
        );
      } finally {
        await blocker`rollback`;
        blocker.release();
      }
      await run;
      await merger.sql.end({ timeout: 5 });
      expect(await applying).toEqual(["applied"]);
      await editor.sql.end({ timeout: 5 });
      const where = await sql<{ segment: number; content: string }[]>`
      select segment, content from documentation_embeddings where source_table = ${W} and source_id = '450'`;
      expect(where).toEqual([{ segment: 0, content: expect.stringContaining(`${W} doc 450 v2`) }]);
      const merged = (await segments(sql)).find((s) =>
        s.state === "sealed" && s.merged_from?.join() === sources.join()
      )!;
      expect(merged).toMatchObject({ rows: "900", indexed: true });
      expect(await expectEachChunkOnce(sql, W, ids)).toEqual(new Set([0, merged.segment]));
      const [top] =
        await sql`select source_id from documentation_embeddings order by embedding <=> merge_test_vector(100450) limit 1`;
      expect(top.source_id).toBe("450");
      await expectFoundByOwnVector(sql, W, sampleOf(1, 900, 6).filter((id) => id !== 450));
    },
    240_000,
  );
});
