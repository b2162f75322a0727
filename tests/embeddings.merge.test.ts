// Segment merges: sealed segments merge in the background under a size-tiered policy, each merge
// building its index once and swapping it in atomically. Segments are made here the way a bulk
// backfill makes them (a loading segment opened, written, closed and built by the real procedures),
// with chunks written straight into the loading segment and deterministic vectors computed in SQL.
// The tests check what a reader sees: every chunk exactly once, at every step, through merges killed
// in their copy or their build, a live edit during a merge, and a read in the middle of the swap.
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { useTestDatabase, waitFor } from "./helpers/db.ts";

const db = useTestDatabase();

interface Segment { segment: number; state: string; rows: string; indexed: boolean; build_attempts: number; merged_from: number[] | null; merged_into: number | null }

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

/** A sealed segment holding one chunk for each of rows [from, to] of `table`: opened, written, closed, built. */
async function sealedSegment(sql: postgres.Sql, table: string, from: number, to: number): Promise<number> {
  const [{ id }] = await sql<{ id: number }[]>`select private.open_embedding_segment() as id`;
  expect(id).toBeGreaterThan(0);
  await sql.unsafe(`
    insert into documentation_embeddings (source_table, source_id, chunk_index, content, content_hash, embedding,
      model, token_count, metadata, source_version, segment)
    select '${table}', g::text, 0, '${table} doc ' || g || ' v1', md5('${table} doc ' || g || ' v1'), merge_test_vector(g),
           'merge-model', 3, '{}', 1, ${id}
    from generate_series(${from}, ${to}) g`);
  // No bulk job waits: maintenance closes the loading segment; the build job builds it (and merges).
  await sql`call private.maintain_embedding_segments(false)`;
  await sql`call private.build_embedding_segments()`;
  return id;
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
      order by embedding <=> merge_test_vector(${id}) limit 2`;
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

describe("segment merges", () => {
  it("merges by size tier: sealed segments stay about log(n), every chunk found exactly once", async () => {
    const sql = db.sql;
    const T = "merge_tiers";
    await sql`update embedding_sync_settings set segment_merges_enabled = true`;
    // merge factor 3, fresh segments of 50 chunks: tier 0 is [0, 150), tier 1 [150, 450), tier 2 [450, 1350).
    const want = [[50], [50, 50], [150], [50, 150], [50, 50, 150], [150, 150], [50, 150, 150], [50, 50, 150, 150], [450]];
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
    // the next maintenance run.
    const shells = all.filter((s) => s.state === "merged");
    expect(shells.filter((s) => s.merged_into === last.segment).map((s) => s.segment)).toEqual(last.merged_from);
    expect(shells.every((s) => s.rows === "0")).toBe(true);
    await sql`call private.maintain_embedding_segments(false)`;
    expect((await segments(sql)).map((s) => [s.segment, s.state])).toEqual([[last.segment, "sealed"]]);
    const [{ parts }] = await sql<{ parts: number }[]>`
      select count(*)::int as parts from pg_inherits where inhparent = 'public.documentation_embeddings'::regclass`;
    expect(parts).toBe(2); // segment 0 and the merged one

    expect(await expectEachChunkOnce(sql, T, range(1, 450))).toEqual(new Set([last.segment]));
    await expectFoundByOwnVector(sql, T, sampleOf(1, 450, 12));
    await sql`update embedding_sync_settings set segment_merges_enabled = false`;
  }, 180_000);
});
