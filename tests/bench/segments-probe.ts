// Bulk segments probe (issue 9, deliverable 3), not an npm script: `npx tsx tests/bench/segments-probe.ts`.
// On the test bed's PostgreSQL, PROBE_ROWS (default 20,000) precomputed 1536-d vectors are written two ways:
//   incremental  inserted straight into a copy of segment 0 (same columns and indexes, HNSW m=16,
//                ef_construction=64) by PROBE_WRITERS (default 4) writers in batches of 100: the
//                per-row index limit;
//   segments     through the real worker SQL as bulk-lane jobs (claim_embedding_jobs ->
//                apply_embedding_results, same writers and batches) into a loading segment, then
//                private.maintain_embedding_segments() closes it and builds its HNSW index.
// Prints both rates (rows/s, the segment path's clock running until its index is built) and their ratio.
// The vectors are generated in SQL once, before either clock starts, and read from a table by both.
import { availableParallelism, loadavg } from "node:os";
import postgres from "postgres";
import { cloneTemplate, ensureTestServer, prepareTemplate } from "../../packages/testkit/testbed.ts";

const ROWS = Number(process.env.PROBE_ROWS ?? 20_000);
const WRITERS = Number(process.env.PROBE_WRITERS ?? 4);
const BATCH = 100;
const log = (m: string) => console.error(`[probe] ${m}`);
const seconds = (t0: number) => (performance.now() - t0) / 1000;

const adminUrl = await ensureTestServer(log);
if (!process.env.TEST_TEMPLATE_READY) await prepareTemplate(adminUrl);
const db = await cloneTemplate(adminUrl, "probe");
const sql = postgres(db.url, { max: WRITERS + 2, onnotice: () => {}, idle_timeout: 10 });

/** Runs `work(writer)` on WRITERS writers until each returns 0 rows; resolves to the rows written. */
async function writers(work: (w: number) => Promise<number>): Promise<number> {
  const totals = await Promise.all(Array.from({ length: WRITERS }, async (_, w) => {
    let n = 0;
    for (;;) {
      const k = await work(w);
      if (k === 0) return n;
      n += k;
    }
  }));
  return totals.reduce((a, b) => a + b, 0);
}

try {
  await sql`update cron.job set active = false`; // nothing else runs in the probe's database
  await sql`alter table embedding_sync_queue disable trigger embedding_sync_queue_webhook`;
  log(`generating ${ROWS} random 1536-d vectors`);
  await sql`create unlogged table probe_vectors (id int primary key, v extensions.vector(1536) not null)`;
  // `where g > 0` correlates the subquery with the row, so each row gets its own vector.
  await sql`insert into probe_vectors
            select g, (select array_agg(random() - 0.5) from generate_series(1, 1536) d where g > 0)::extensions.vector
            from generate_series(1, ${ROWS}) g`;
  await sql`create table probe_docs (id int primary key, body text not null)`;
  await sql`select register_embedding_source('probe_docs')`;

  // 1. The incremental limit: an identical table with its HNSW index, rows inserted one batch at a time.
  await sql`create table probe_incremental (like private.documentation_embeddings_s0 including all)`;
  await sql`create sequence probe_batches`;
  log(`incremental: ${WRITERS} writers into an HNSW-indexed table`);
  let t0 = performance.now();
  const incRows = await writers(async () => {
    const [r] = await sql<{ n: number }[]>`
      with b as (select nextval('probe_batches') - 1 as k),
      ins as (insert into probe_incremental (id, source_table, source_id, chunk_index, content, content_hash, embedding,
                                             model, token_count, source_version)
              select v.id, 'probe', v.id::text, 0, 'probe ' || v.id, md5(v.id::text), v.v, 'probe', 1, 1
              from probe_vectors v, b where v.id > b.k * ${BATCH} and v.id <= (b.k + 1) * ${BATCH}
              returning 1)
      select count(*)::int as n from ins`;
    return r.n;
  });
  const incS = seconds(t0);
  log(`incremental: ${incRows} rows in ${incS.toFixed(1)} s`);

  // 2. The segment path.
  await sql`update embedding_sync_settings set bulk_segment_min_rows = ${Math.min(ROWS, 20_000)},
                                               bulk_segment_max_rows = ${Math.max(ROWS, 50_000)}`;
  await sql`insert into probe_docs select g, 'probe document ' || g from generate_series(1, ${ROWS}) g`;
  await sql`update embedding_sync_queue set lane = 'bulk' where source_table = 'probe_docs'`;
  t0 = performance.now();
  await sql`call private.maintain_embedding_segments()`;
  const [opened] = await sql<
    { segment: number }[]
  >`select segment from embedding_segment_status where state = 'loading'`;
  if (!opened) throw new Error("no loading segment was opened");
  log(`segments: ${WRITERS} workers into loading segment ${opened.segment}`);
  const segRows = await writers(async (w) => {
    const [r] = await sql<{ n: number }[]>`
      with jobs as (select * from claim_embedding_jobs(${`probe-${w}`}, ${BATCH}, 600))
      select coalesce((select count(*)::int from apply_embedding_results(${`probe-${w}`}, 'probe',
        (select array_agg(id) from jobs),
        (select jsonb_agg(jsonb_build_object('j', j.id, 'i', 0, 'c', j.content, 'h', j.content_hash, 't', 1, 'e', v.v::text))
         from jobs j join probe_vectors v on v.id = j.source_id::int))), 0) as n`;
    return r.n;
  });
  const loadS = seconds(t0);
  log(`segments: ${segRows} rows loaded in ${loadS.toFixed(1)} s; building the index`);
  await sql`call private.maintain_embedding_segments()`;
  const segS = seconds(t0);
  const [seg] = await sql<{ state: string; rows: string; indexed: boolean; build_ms: string }[]>`
    select state, rows, indexed, build_ms from embedding_segment_status where segment = ${opened.segment}`;
  if (seg.state !== "sealed" || !seg.indexed) {
    throw new Error(`segment ${opened.segment} is ${seg.state}, indexed ${seg.indexed}`);
  }

  const inc = incRows / incS;
  const viaSegments = segRows / segS;
  console.log([
    `rows ${ROWS}, writers ${WRITERS}, batch ${BATCH}, cores ${availableParallelism()}, load ${
      loadavg()[0].toFixed(2)
    }`,
    `incremental_limit_rows_per_s  ${inc.toFixed(0).padStart(7)}   (${incS.toFixed(1)} s into an HNSW-indexed table)`,
    `segments_rows_per_s           ${viaSegments.toFixed(0).padStart(7)}   (${segS.toFixed(1)} s: load ${
      loadS.toFixed(1)
    } s + build ${(Number(seg.build_ms) / 1000).toFixed(1)} s of ${seg.rows} rows)`,
    `segments_vs_incremental       ${(viaSegments / inc).toFixed(2).padStart(7)}`,
  ].join("\n"));
} finally {
  await sql.end({ timeout: 5 });
  await db.drop();
}
