// Bulk segments (issue 9, deliverable 3): bulk-lane chunks land in an unindexed loading segment whose
// HNSW index is built once, by private.maintain_embedding_segments(). These tests drive the real
// worker SQL (claim_embedding_jobs / apply_embedding_results) with precomputed 1536-d vectors and
// the maintenance procedure by hand, with small thresholds so a segment fills in seconds, and assert
// that search finds every row exactly once at every stage, that a build killed in the middle is
// finished by the next run, and that a live write never waits for a build, on another segment or on
// the one its row's chunks are in (their deletes wait for the build's seal instead).
import { createHash } from "node:crypto";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { useTestDatabase, waitFor } from "./helpers/db.ts";

const db = useTestDatabase();
const MODEL = "segments-test-model";
const DIMS = 1536;

/** A deterministic pseudo-random unit-ish vector per chunk text (mulberry32 seeded by its hash). */
function vectorOf(text: string): string {
  let a = createHash("sha256").update(text).digest().readUInt32LE(0);
  const out: string[] = [];
  for (let i = 0; i < DIMS; i++) {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    out.push((((t ^ (t >>> 14)) >>> 0) / 4294967296 - 0.5).toFixed(4));
  }
  return `[${out.join(",")}]`;
}

/** Rows whose id is a multiple of 5 have two chunks, the others one. */
const chunkCount = (id: number) => (id % 5 === 0 ? 2 : 1);
const chunkText = (content: string, i: number) => `${content} #${i}`;

interface Job {
  id: string;
  source_id: string;
  action: string;
  content: string | null;
}

/** One worker pass over everything claimable: the pipeline's SQL with precomputed vectors. */
async function drain(sql: postgres.Sql, worker = "seg-worker", batch = 100): Promise<number> {
  let done = 0;
  for (;;) {
    const jobs = await sql<
      Job[]
    >`select id::text, source_id, action, content from claim_embedding_jobs(${worker}, ${batch}, 120)`;
    if (!jobs.length) return done;
    const chunks = jobs.flatMap((j) =>
      j.action === "DELETE" || j.content === null ? [] : Array.from(
        { length: chunkCount(Number(j.source_id)) },
        (_, i) => {
          const c = chunkText(j.content!, i);
          return { j: Number(j.id), i, c, h: createHash("sha256").update(c).digest("hex"), t: 4, e: vectorOf(c) };
        },
      )
    );
    const out = await sql<{ outcome: string }[]>`
      select outcome from apply_embedding_results(${worker}, ${MODEL}, ${jobs.map((j) => Number(j.id))}::bigint[], ${
      sql.json(chunks)
    })`;
    expect(out.every((o) => o.outcome === "applied" || o.outcome === "superseded")).toBe(true);
    done += jobs.length;
  }
}

/** Writes rows [from, to] of `table` ("<table> doc <id> v<version>") and makes their jobs bulk. */
async function writeBulk(sql: postgres.Sql, table: string, from: number, to: number, version = 1) {
  await sql.unsafe(
    `insert into ${table} select g, '${table} doc ' || g || ' v${version}' from generate_series(${from}, ${to}) g
                    on conflict (id) do update set body = excluded.body`,
  );
  await sql.unsafe(
    `update embedding_sync_queue set lane = 'bulk' where source_table = '${table}' and status = 'pending'`,
  );
}

/** Every written row has exactly its chunks, all in one segment; returns the segments in use. */
async function expectEachRowOnce(sql: postgres.Sql, table: string, ids: Iterable<number>): Promise<Set<number>> {
  const rows = await sql<{ source_id: string; n: number; segs: number; seg: number; idx: number }[]>`
    select source_id, count(*)::int as n, count(distinct segment)::int as segs, min(segment) as seg,
           count(distinct chunk_index)::int as idx
    from documentation_embeddings where source_table = ${table} group by source_id`;
  const got = new Map(rows.map((r) => [Number(r.source_id), r]));
  const want = [...ids];
  expect(got.size).toBe(want.length);
  for (const id of want) {
    const r = got.get(id);
    expect(r, `row ${id} is missing`).toBeDefined();
    expect({ id, n: r!.n, segs: r!.segs, idx: r!.idx }).toEqual({
      id,
      n: chunkCount(id),
      segs: 1,
      idx: chunkCount(id),
    });
  }
  return new Set(rows.map((r) => r.seg));
}

/** Each sampled row's own vector finds that row's chunk first, through match_documents. */
async function expectFoundByOwnVector(sql: postgres.Sql, table: string, sample: number[], version = 1) {
  for (const id of sample) {
    // The chunk's text as the worker embedded it (the source's content: its text columns).
    const [{ content: text }] = await sql<{ content: string }[]>`
      select content from documentation_embeddings where source_table = ${table} and source_id = ${
      String(id)
    } and chunk_index = 0`;
    expect(text).toContain(`doc ${id} v${version}`);
    const [top] = await sql<{ source_table: string; source_id: string; chunk_index: number }[]>`
      select source_table, source_id, chunk_index from match_documents(${vectorOf(text)}::extensions.vector, 3)`;
    expect({ id, top }).toEqual({ id, top: { source_table: table, source_id: String(id), chunk_index: 0 } });
  }
}

const sampleOf = (from: number, to: number, n: number) =>
  Array.from({ length: n }, (_, k) => from + Math.floor(((to - from) * k) / Math.max(n - 1, 1)));

function segments(sql: postgres.Sql) {
  return sql<
    {
      segment: number;
      state: string;
      rows: string;
      indexed: boolean;
      build_attempts: number;
      last_error: string | null;
    }[]
  >`
    select segment, state, rows, indexed, build_attempts, last_error from embedding_segment_status order by segment`;
}

/** The backend building an index on this segment, once pg_stat_progress_create_index shows it. */
function buildingPid(sql: postgres.Sql, seg: number): Promise<number> {
  return waitFor(
    `the build of segment ${seg} to run`,
    async () => {
      const [r] = await sql<{ pid: number }[]>`
      select pid from pg_stat_progress_create_index
      where relid = to_regclass(${`private.documentation_embeddings_s${seg}`}) and command = 'CREATE INDEX'`;
      return r?.pid;
    },
    20_000,
    20,
  );
}

let maint: postgres.Sql; // maintenance runs on its own connection, as pg_cron's would
beforeAll(async () => {
  maint = postgres(db.url, { max: 1, onnotice: () => {} });
  await db.sql`update embedding_sync_settings set bulk_segment_min_rows = 300, bulk_segment_max_rows = 700`;
});
afterAll(async () => {
  await maint?.end({ timeout: 5 });
});

describe("bulk segments", () => {
  const T = "seg_docs";
  const written = new Set<number>();

  it("search finds every row exactly once while segments go loading -> building -> sealed", async () => {
    const sql = db.sql;
    await sql.unsafe(`create table ${T} (id int primary key, body text)`);
    await sql`select register_embedding_source(${T})`;
    // Some live rows first: segment 0.
    await sql.unsafe(`insert into ${T} select g, 'doc ' || g || ' v1' from generate_series(1, 100) g`);
    await drain(sql);
    for (let i = 1; i <= 100; i++) written.add(i);
    expect(await expectEachRowOnce(sql, T, written)).toEqual(new Set([0]));
    // Segment 0's rows: counted while the table was never analysed, the planner's estimate after.
    expect(Number((await segments(sql))[0].rows)).toBe(await countIn(sql, 0));

    // A bulk backlog above bulk_segment_min_rows: the next run opens segment 1.
    await writeBulk(sql, T, 101, 1100);
    await maint`call private.maintain_embedding_segments()`;
    expect((await segments(sql)).map((s) => [s.segment, s.state])).toEqual([[0, "live"], [1, "loading"]]);
    await drain(sql, "seg-worker", 50);
    for (let i = 101; i <= 1100; i++) written.add(i);
    expect(await expectEachRowOnce(sql, T, written)).toEqual(new Set([0, 1]));
    await expectFoundByOwnVector(sql, T, [...sampleOf(1, 100, 3), ...sampleOf(101, 1100, 12)]);

    // More bulk work queued, segment 1 is full: the run closes it, opens segment 2, and builds 1.
    await writeBulk(sql, T, 1101, 2000);
    const run = maint`call private.maintain_embedding_segments()`.execute();
    await buildingPid(sql, 1);
    expect((await segments(sql)).map((s) => [s.segment, s.state])).toEqual([[0, "live"], [1, "building"], [
      2,
      "loading",
    ]]);
    // While segment 1 builds: searches read it (exact scan), and bulk writes go on into segment 2.
    await expectFoundByOwnVector(sql, T, sampleOf(101, 1100, 6));
    await drain(sql, "seg-worker", 50);
    for (let i = 1101; i <= 2000; i++) written.add(i);
    expect(await expectEachRowOnce(sql, T, written)).toEqual(new Set([0, 1, 2]));
    await run;
    const after = await segments(sql);
    expect(after.map((s) => [s.segment, s.state, s.indexed])).toEqual([[0, "live", true], [1, "sealed", true], [
      2,
      "loading",
      false,
    ]]);
    expect(Number(after[1].rows)).toBe(await countIn(sql, 1));
    expect(await expectEachRowOnce(sql, T, written)).toEqual(new Set([0, 1, 2]));
    await expectFoundByOwnVector(sql, T, [
      ...sampleOf(1, 100, 3),
      ...sampleOf(101, 1100, 6),
      ...sampleOf(1101, 2000, 6),
    ]);

    // The plan: each partition's own HNSW index where it has one, a sort of the loading segment.
    await sql.begin(async (tx) => {
      await tx`set local enable_seqscan = off`;
      const plan = (await tx.unsafe(
        `explain (costs off) select id from documentation_embeddings order by embedding <=> '${
          vectorOf("q")
        }' limit 10`,
      )).map((r) => Object.values(r)[0] as string).join("\n");
      expect(plan).toMatch(/Merge Append/);
      expect(plan).toMatch(
        /Index Scan using documentation_embeddings_s0_embedding_hnsw on documentation_embeddings_s0/,
      );
      expect(plan).toMatch(
        /Index Scan using documentation_embeddings_s1_embedding_hnsw on documentation_embeddings_s1/,
      );
      expect(plan).toMatch(/Sort[\s\S]*Seq Scan on documentation_embeddings_s2/);
    });

    // The backlog is drained: the run closes segment 2 and builds it; nothing is left loading.
    await maint`call private.maintain_embedding_segments()`;
    expect((await segments(sql)).map((s) => [s.segment, s.state, s.indexed]))
      .toEqual([[0, "live", true], [1, "sealed", true], [2, "sealed", true]]);
    expect(await expectEachRowOnce(sql, T, written)).toEqual(new Set([0, 1, 2]));
    await expectFoundByOwnVector(sql, T, [...sampleOf(1, 100, 3), ...sampleOf(101, 2000, 12)]);
    const [{ content: c1500 }] = await sql<{ content: string }[]>`
      select content from documentation_embeddings where source_table = ${T} and source_id = '1500' and chunk_index = 0`;
    const [h] = await sql<{ source_id: string }[]>`
      select source_id from hybrid_search('doc 1500 v1', ${vectorOf(c1500)}::extensions.vector, 5)`;
    expect(h.source_id).toBe("1500");
  }, 180_000);

  it("a live edit moves a bulk row to segment 0, a delete removes it from its segment", async () => {
    const sql = db.sql;
    const segOf = async (id: number) => (await sql<{ segment: number; n: number }[]>`
      select segment, count(*)::int as n from documentation_embeddings where source_table = ${T} and source_id = ${
      String(id)
    }
      group by segment`);
    expect(await segOf(205)).toEqual([{ segment: 1, n: 2 }]);
    expect(await segOf(1500)).toEqual([{ segment: 2, n: 2 }]);
    await sql.unsafe(`update ${T} set body = 'doc 205 v2' where id = 205`);
    await sql.unsafe(`update ${T} set body = 'doc 1203 v2' where id = 1203`);
    await sql.unsafe(`delete from ${T} where id in (1500, 300)`);
    await drain(sql);
    written.delete(1500);
    written.delete(300);
    expect(await segOf(205)).toEqual([{ segment: 0, n: 2 }]);
    expect(await segOf(1203)).toEqual([{ segment: 0, n: 1 }]);
    expect(await segOf(1500)).toEqual([]);
    expect(await segOf(300)).toEqual([]);
    await expectEachRowOnce(sql, T, written);
    await expectFoundByOwnVector(sql, T, [205, 1203], 2);
  }, 60_000);

  it("a crash in the middle of a build: the next run finishes it; a live write never waits for it", async () => {
    const sql = db.sql;
    const C = "seg_crash";
    await sql.unsafe(`create table ${C} (id int primary key, body text)`);
    await sql`select register_embedding_source(${C})`;
    // One large segment (max rows above the load): built when the backlog is drained, slowly enough to catch.
    await sql`update embedding_sync_settings set bulk_segment_max_rows = 100000`;
    await writeBulk(sql, C, 1, 3000);
    await maint`call private.maintain_embedding_segments()`;
    const seg = (await segments(sql)).find((s) => s.state === "loading")!.segment;
    await drain(sql);
    const ids = Array.from({ length: 3000 }, (_, k) => k + 1);
    expect(await expectEachRowOnce(sql, C, ids)).toEqual(new Set([seg]));

    // The doomed run has a connection of its own, as a pg_cron run would.
    const doomed = postgres(db.url, { max: 1, onnotice: () => {} });
    const run = doomed`call private.maintain_embedding_segments()`.then(() => null, (e: Error) => e);
    const pid = await buildingPid(sql, seg);

    // A live write (a new row, and an edit of a row of a sealed bulk segment) during the build: it
    // must not wait for the build's SHARE lock (lock_timeout turns a wait into an error).
    const live = postgres(db.url, { max: 1, onnotice: () => {} });
    try {
      await live`set lock_timeout = '2s'`;
      await live.unsafe(`insert into ${T} values (5000, 'doc 5000 v1')`);
      await live.unsafe(`update ${T} set body = 'doc 1700 v2' where id = 1700`);
      const t0 = Date.now();
      await drain(live, "live-worker");
      const ms = Date.now() - t0;
      // The control: a write that does not name its segments locks every partition, and waits.
      const blocked = await live`delete from documentation_embeddings where source_table = 'nothing'`.then(
        () => null,
        (e) => e,
      );
      expect(blocked?.code).toBe("55P03"); // lock_not_available
      const [still] = await sql`select count(*)::int as n from pg_stat_progress_create_index where pid = ${pid}`;
      expect(still.n, `the build was still running when the live write (${ms} ms) committed`).toBe(1);
    } finally {
      await live.end({ timeout: 5 });
    }
    written.add(5000);
    const [moved] =
      await sql`select segment from documentation_embeddings where source_table = ${T} and source_id = '1700'`;
    expect(moved.segment).toBe(0);

    // Kill the build mid-way.
    const [k] = await sql`select pg_terminate_backend(${pid}) as ok`;
    expect(k.ok).toBe(true);
    expect(await run).toBeInstanceOf(Error);
    await doomed.end({ timeout: 1 });
    const crashed = (await segments(sql)).find((s) => s.segment === seg)!;
    expect(crashed).toMatchObject({ state: "building", indexed: false, build_attempts: 1 });
    // Still searchable (exact scan) and complete.
    expect(await expectEachRowOnce(sql, C, ids)).toEqual(new Set([seg]));
    await expectFoundByOwnVector(sql, C, sampleOf(1, 3000, 5));

    // The next run (the dead session's advisory lock went with it) resumes and finishes the build.
    await maint`call private.maintain_embedding_segments()`;
    const done = (await segments(sql)).find((s) => s.segment === seg)!;
    expect(done).toMatchObject({ state: "sealed", indexed: true, build_attempts: 2, last_error: null });
    expect(Number(done.rows)).toBe(3000 + 600);
    const [valid] = await sql`
      select bool_and(i.indisvalid and i.indisready) as ok, count(*)::int as n from pg_index i
      where i.indrelid = to_regclass(${`private.documentation_embeddings_s${seg}`})
        and i.indexrelid = to_regclass(${`private.documentation_embeddings_s${seg}_embedding_hnsw`})`;
    expect(valid).toEqual({ ok: true, n: 1 });
    expect(await expectEachRowOnce(sql, C, ids)).toEqual(new Set([seg]));
    expect(await expectEachRowOnce(sql, T, written)).toBeDefined();
    await expectFoundByOwnVector(sql, C, sampleOf(1, 3000, 8));
  }, 180_000);

  it(
    "a build uses bulk_segment_build_workers parallel workers (0 by default), never the server's default",
    async () => {
      const sql = db.sql;
      const P = "seg_parallel";
      await sql.unsafe(`create table ${P} (id int primary key, body text)`);
      await sql`select register_embedding_source(${P})`;
      await sql`update embedding_sync_settings set bulk_segment_min_rows = 300, bulk_segment_max_rows = 100000, segment_merges_enabled = false`;
      // Builds a fresh segment of 400 rows whose table asks for 2 parallel workers, as a segment past
      // min_parallel_table_scan_size would get by default; returns the workers pgvector says it used.
      const build = async (from: number) => {
        await writeBulk(sql, P, from, from + 399);
        await maint`call private.maintain_embedding_segments()`;
        const seg = (await segments(sql)).find((s) => s.state === "loading")!.segment;
        await sql.unsafe(`alter table private.documentation_embeddings_s${seg} set (parallel_workers = 2)`);
        await drain(sql);
        const said: string[] = [];
        const builder = postgres(db.url, { max: 1, onnotice: (n) => said.push(String(n.message)) });
        try {
          await builder`set client_min_messages = debug1`;
          await builder`call private.maintain_embedding_segments()`;
        } finally {
          await builder.end({ timeout: 5 });
        }
        expect((await segments(sql)).find((s) => s.segment === seg)?.state).toBe("sealed");
        return Number(said.map((m) => /^using (\d+) parallel workers$/.exec(m)?.[1]).find(Boolean) ?? 0);
      };
      expect(await build(1)).toBe(0);
      // The control: the setting raised, the same build does use the workers.
      await sql`update embedding_sync_settings set bulk_segment_build_workers = 2`;
      try {
        expect(await build(1001)).toBe(2);
      } finally {
        await sql`update embedding_sync_settings set bulk_segment_build_workers = 0`;
      }
    },
    120_000,
  );

  it("empty sealed segments are dropped; with segments off every bulk write goes to segment 0", async () => {
    const sql = db.sql;
    const E = "seg_empty";
    await sql.unsafe(`create table ${E} (id int primary key, body text)`);
    await sql`select register_embedding_source(${E})`;
    // Merges off: this segment must stay on its own to be emptied (tests/embeddings.merge.test.ts merges).
    await sql`update embedding_sync_settings set bulk_segment_min_rows = 50, bulk_segment_max_rows = 1000, segment_merges_enabled = false`;
    await writeBulk(sql, E, 1, 60);
    await maint`call private.maintain_embedding_segments()`;
    const seg = (await segments(sql)).find((s) => s.state === "loading")!.segment;
    await drain(sql);
    await maint`call private.maintain_embedding_segments()`; // closes and builds it
    expect((await segments(sql)).find((s) => s.segment === seg)?.state).toBe("sealed");
    await sql.unsafe(`delete from ${E}`);
    await drain(sql);
    await maint`call private.maintain_embedding_segments()`;
    expect((await segments(sql)).find((s) => s.segment === seg)).toBeUndefined();
    const [gone] = await sql`select to_regclass(${`private.documentation_embeddings_s${seg}`}) is null as gone`;
    expect(gone.gone).toBe(true);

    await sql`update embedding_sync_settings set bulk_segments_enabled = false`;
    await writeBulk(sql, E, 1, 60, 3);
    await maint`call private.maintain_embedding_segments()`;
    expect((await segments(sql)).some((s) => s.state === "loading")).toBe(false);
    await drain(sql);
    expect(await expectEachRowOnce(sql, E, Array.from({ length: 60 }, (_, k) => k + 1))).toEqual(new Set([0]));
    await sql`update embedding_sync_settings set bulk_segments_enabled = true`;
  }, 60_000);

  it("a live edit of a row in a segment under build commits while the build holds its lock", async () => {
    const sql = db.sql;
    const B = "seg_under_build";
    await sql.unsafe(`create table ${B} (id int primary key, body text)`);
    await sql`select register_embedding_source(${B})`;
    await sql`update embedding_sync_settings set bulk_segment_min_rows = 50, bulk_segment_max_rows = 100000, segment_merges_enabled = false`;
    await writeBulk(sql, B, 1, 200);
    await maint`call private.maintain_embedding_segments(false)`;
    const seg = (await segments(sql)).find((s) => s.state === "loading")!.segment;
    await drain(sql);
    await maint`call private.maintain_embedding_segments(false)`; // no bulk job left: closed, not built
    expect((await segments(sql)).find((s) => s.segment === seg)?.state).toBe("building");
    const part = `private.documentation_embeddings_s${seg}`;
    const [v1] = await sql<{ content: string }[]>`
      select content from documentation_embeddings where source_table = ${B} and source_id = '10' and chunk_index = 0`;
    const [v7] = await sql<{ content: string }[]>`
      select content from documentation_embeddings where source_table = ${B} and source_id = '7' and chunk_index = 0`;

    // The build: the same CREATE INDEX as private.build_embedding_segments, in a transaction kept open,
    // so its SHARE lock on the segment is held for as long as the test needs.
    const builder = postgres(db.url, { max: 1, onnotice: () => {} });
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const build = builder.begin(async (tx) => {
      const [{ spec }] = await tx<{ spec: string }[]>`select private.embedding_hnsw_index_spec() as spec`;
      await tx.unsafe(`create index held_build on ${part} ${spec}`);
      await held;
      throw new Error("rolled back");
    }).catch((e: Error) => e);
    const live = postgres(db.url, { max: 1, onnotice: () => {} });
    try {
      await waitFor("the build's SHARE lock", async () =>
        (await sql`
        select 1 from pg_locks where relation = to_regclass(${part}) and mode = 'ShareLock' and granted`).length > 0);
      await live`set lock_timeout = '5s'`;
      // The control: a write to that segment that does not defer its deletes waits for the build.
      const blocked = await live`set lock_timeout = '200ms'`.then(() =>
        live.unsafe(
          `delete from documentation_embeddings where segment = ${seg} and source_table = 'nothing'`,
        )
      ).then(() => null, (e) => e);
      expect(blocked?.code).toBe("55P03"); // lock_not_available
      await live`set lock_timeout = '5s'`;

      // Live edits of rows whose chunks are in the segment under build: one edited, one deleted.
      await sql.unsafe(`update ${B} set body = '${B} doc 10 v2' where id = 10`);
      await sql.unsafe(`delete from ${B} where id = 7`);
      const t0 = Date.now();
      await drain(live, "live-worker");
      const ms = Date.now() - t0;
      expect(ms, "the live apply completed within its bound").toBeLessThan(5_000);
      const [still] = await sql`select count(*)::int as n from pg_locks
                                where relation = to_regclass(${part}) and mode = 'ShareLock' and granted`;
      expect(still.n, "the build still held its lock when the live write committed").toBe(1);

      // Searches see the edit at once: row 10 once, in segment 0, with its new text; row 7 gone.
      const rows10 = await sql<{ content: string }[]>`
        select d.content from documentation_embeddings d
        where d.source_table = ${B} and d.source_id = '10' and d.segment = 0 order by d.chunk_index`;
      expect(rows10.map((r) => r.content)).toEqual(
        [0, 1].map((i) => v1.content.replace("v1", "v2").replace("#0", `#${i}`)),
      );
      const only = { source_table: B };
      const byOld = await sql<{ source_id: string; content: string }[]>`
        select source_id, content from match_documents(${vectorOf(v1.content)}::extensions.vector, 50, ${
        sql.json(only)
      })`;
      expect(byOld.length).toBe(50);
      expect(byOld.filter((r) => r.source_id === "10" && !r.content.includes(" v2 "))).toEqual([]);
      const [top] = await sql<{ source_id: string; content: string }[]>`
        select source_id, content from match_documents(${vectorOf(rows10[0].content)}::extensions.vector, 3)`;
      expect(top).toEqual({ source_id: "10", content: rows10[0].content });
      const [seven] = await sql`select count(*)::int as n from match_documents(${
        vectorOf(v7.content)
      }::extensions.vector, 50,
                                  ${sql.json(only)}) where source_id = '7'`;
      expect(seven.n).toBe(0);
      for (const [q, id] of [["doc 10", "10"], ["doc 7", "7"]]) {
        const hits = await sql<{ content: string }[]>`
          select content from search_documents(${q}, null, 200, 'text', ${sql.json(only)}) where source_id = ${id}`;
        expect({ q, hits: hits.map((h) => h.content).sort() })
          .toEqual({ q, hits: id === "10" ? rows10.map((r) => r.content) : [] });
      }

      // A user sees the marks of the chunks they may read, and nothing of the others'.
      await sql.unsafe(`alter table ${B} enable row level security;
        create policy only_10 on ${B} for select to authenticated using (id = 10);
        grant select on ${B} to authenticated`);
      const seen = await sql.begin(async (tx) => {
        await tx`select set_config('role', 'authenticated', true)`;
        return tx<{ source_id: string; n: number }[]>`
          select d.source_id, count(*)::int as n from embedding_pending_deletes p
          join documentation_embeddings d on d.id = p.id and d.segment = p.segment group by d.source_id`;
      });
      expect(seen).toEqual([{ source_id: "10", n: 2 }]);
      const [marks] = await sql`select count(*)::int as n from embedding_pending_deletes where segment = ${seg}`;
      expect(marks.n).toBe(2 + 1); // row 10's two old chunks, row 7's one
    } finally {
      release();
      await build;
      await builder.end({ timeout: 5 });
      await live.end({ timeout: 5 });
    }

    // The real build: it deletes the marked chunks when it seals the segment, after the live writes
    // that marked some and are still open. Here the build is held before its CREATE INDEX (a writer's
    // lock on the segment), row 20 is edited and applied in a transaction left open, then the build
    // is let go: its seal must wait for that transaction, and delete row 20's old chunks too.
    const gates = postgres(db.url, { max: 1, onnotice: () => {} });
    const late = postgres(db.url, { max: 1, onnotice: () => {} });
    let letBuild!: () => void;
    const buildGate = new Promise<void>((r) => (letBuild = r));
    let commit!: () => void;
    const commitGate = new Promise<void>((r) => (commit = r));
    let marked!: () => void;
    const markedP = new Promise<void>((r) => (marked = r));
    let holding!: () => void;
    const holdingP = new Promise<void>((r) => (holding = r));
    const hold = gates.begin(async (tx) => {
      await tx.unsafe(`lock table ${part} in row exclusive mode`);
      holding();
      await buildGate;
    });
    let open: Promise<unknown> | undefined;
    try {
      await holdingP;
      const run = maint`call private.build_embedding_segments()`.execute();
      await waitFor("the build to wait before its CREATE INDEX", async () =>
        (await sql`
        select 1 from pg_locks where relation = to_regclass(${part}) and mode = 'ShareLock' and not granted`).length >
          0);
      await sql.unsafe(`update ${B} set body = '${B} doc 20 v2' where id = 20`);
      open = late.begin(async (tx) => {
        await drain(tx as unknown as postgres.Sql, "late-worker");
        marked();
        await commitGate;
      });
      await markedP;
      letBuild();
      await hold;
      await waitFor("the seal to wait for the open live write", async () =>
        (await sql`
        select 1 from pg_stat_activity where query like 'call private.build_embedding_segments()%'
          and wait_event_type = 'Lock' and wait_event in ('transactionid', 'tuple')`).length > 0);
      commit();
      await open;
      await run;
    } finally {
      letBuild();
      commit();
      await Promise.allSettled([hold, open]);
      await gates.end({ timeout: 5 });
      await late.end({ timeout: 5 });
    }
    const done = (await segments(sql)).find((s) => s.segment === seg)!;
    expect(done).toMatchObject({ state: "sealed", indexed: true, last_error: null });
    expect(Number(done.rows)).toBe(await countIn(sql, seg));
    const [left] = await sql`select count(*)::int as n from embedding_pending_deletes`;
    expect(left.n).toBe(0);
    const ids = Array.from({ length: 200 }, (_, k) => k + 1).filter((id) => id !== 7);
    expect(await expectEachRowOnce(sql, B, ids)).toEqual(new Set([0, seg]));
    await expectFoundByOwnVector(sql, B, [10, 20], 2);
    await expectFoundByOwnVector(sql, B, sampleOf(11, 200, 5));
  }, 120_000);
});

async function countIn(sql: postgres.Sql, seg: number): Promise<number> {
  const [r] = await sql`select count(*)::int as n from documentation_embeddings where segment = ${seg}`;
  return r.n;
}
