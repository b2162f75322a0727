// npm run bench:sizing -- what the embeddings cost in bytes and memory, per dimensions and vector type.
// On the test bed's PostgreSQL (pgvector), for each dimension count (SIZING_DIMS, default 256,512,1024,1536)
// SIZING_CHUNKS (default 20,000) clustered unit vectors (SIZING_CLUSTERS centres, default 100, plus noise:
// real embeddings are clustered, not uniform) are stored as vector(d) and as halfvec(d), and each table gets
// the HNSW index documentation_embeddings has (cosine, m=16, ef_construction=64, one process). Measured:
//   table bytes   pg_table_size: heap + TOAST of (id, embedding), i.e. the vector column's cost;
//   index bytes   pg_relation_size of the HNSW index;
//   element bytes the memory one vector takes in the build's in-memory graph: a build on a small sample
//                 with maintenance_work_mem = SIZING_PROBE_MEM_MB (default 2) makes pgvector say "hnsw graph
//                 no longer fits into maintenance_work_mem after N tuples"; element = that memory / N.
// Then, linearly, the whole corpus (SIZING_CORPUS chunks, default 1,300,000): table, index, the build
// memory that would keep one graph of everything in memory, the rows of a segment whose graph fits a
// 256 MB build (the default bulk_segment_build_mem_mb), and the smallest Supabase compute whose cache
// holds the corpus's HNSW indexes (index <= 3/4 of RAM, Supabase's effective_cache_size).
// Prints the table and writes .bench/sizing.json. Not part of npm test (a few minutes on 2 cores).
import { mkdirSync, writeFileSync } from "node:fs";
import { availableParallelism, loadavg } from "node:os";
import postgres from "postgres";
import { cloneTemplate, ensureTestServer, prepareTemplate } from "../../packages/testkit/testbed.ts";

const CHUNKS = Number(process.env.SIZING_CHUNKS ?? 20_000);
const DIMS = (process.env.SIZING_DIMS ?? "256,512,1024,1536").split(",").map(Number);
const CLUSTERS = Number(process.env.SIZING_CLUSTERS ?? 100);
const CORPUS = Number(process.env.SIZING_CORPUS ?? 1_300_000);
const PROBE_MEM_MB = Number(process.env.SIZING_PROBE_MEM_MB ?? 2);
const SEGMENT_BUILD_MEM_MB = 256;
const TYPES = ["vector", "halfvec"] as const;
// Supabase compute sizes and their RAM.
const COMPUTE: [string, number][] = [
  ["Micro", 1],
  ["Small", 2],
  ["Medium", 4],
  ["Large", 8],
  ["XL", 16],
  ["2XL", 32],
  ["4XL", 64],
  ["8XL", 128],
  ["12XL", 192],
  ["16XL", 256],
];
const CACHE_SHARE = 0.75;
const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

const log = (m: string) => console.error(`[sizing] ${m}`);
const seconds = (t0: number) => Math.round((performance.now() - t0) / 100) / 10;

interface Row {
  dims: number;
  type: string;
  chunks: number;
  table_bytes: number;
  index_bytes: number;
  build_s: number;
  probe_tuples: number | null;
  element_bytes: number | null;
  corpus_table_bytes: number;
  corpus_index_bytes: number;
  corpus_graph_bytes: number | null;
  segment_rows_256mb: number | null;
  compute: string;
}

const adminUrl = await ensureTestServer(log);
if (!process.env.TEST_TEMPLATE_READY) await prepareTemplate(adminUrl);
const db = await cloneTemplate(adminUrl, "sizing");
let notices: string[] = [];
const sql = postgres(db.url, { max: 1, onnotice: (n) => notices.push(n.message), idle_timeout: 10 });
const started = performance.now();
const rows: Row[] = [];

try {
  await sql`update cron.job set active = false`; // nothing else runs in this database
  await sql`set max_parallel_maintenance_workers = 0`; // one process, as the memory notice assumes
  for (const d of DIMS) {
    log(`${d} dims: generating ${CHUNKS} clustered vectors`);
    await sql.unsafe(`drop table if exists sz_centres, sz_vector, sz_halfvec, sz_probe`);
    await sql.unsafe(`create unlogged table sz_centres as
      select c, array_agg(random() - 0.5 order by k) as v from generate_series(1, ${CLUSTERS}) c, generate_series(1, ${d}) k group by c`);
    // Each vector: its centre plus noise a third of the centres' spread, normalised (as embeddings are).
    await sql.unsafe(`create table sz_vector (id int primary key, embedding extensions.vector(${d}) not null)`);
    await sql.unsafe(`insert into sz_vector
      select g, extensions.l2_normalize((select array_agg(c.v[k] + (random() - 0.5) / 3 order by k)
                                         from generate_series(1, ${d}) k)::extensions.vector)
      from generate_series(1, ${CHUNKS}) g join sz_centres c on c.c = 1 + g % ${CLUSTERS}`);
    await sql.unsafe(`create table sz_halfvec (id int primary key, embedding extensions.halfvec(${d}) not null)`);
    await sql.unsafe(`insert into sz_halfvec select id, embedding::extensions.halfvec(${d}) from sz_vector`);
    await sql.unsafe(`vacuum analyze sz_vector`);
    await sql.unsafe(`vacuum analyze sz_halfvec`);

    for (const type of TYPES) {
      const table = `sz_${type}`;
      // The full build, with memory to spare: the index as a sealed segment has it.
      await sql.unsafe(`set maintenance_work_mem = '1GB'`);
      let t0 = performance.now();
      await sql.unsafe(`create index ${table}_hnsw on ${table} using hnsw (embedding extensions.${type}_cosine_ops)`);
      const build_s = seconds(t0);
      const [size] = await sql<{ t: string; i: string }[]>`
        select pg_table_size(${table}::regclass)::text as t, pg_relation_size(${table + "_hnsw"}::regclass)::text as i`;

      // The memory probe: a sample just large enough that its vectors alone overflow PROBE_MEM_MB.
      const valueBytes = type === "vector" ? 4 * d + 8 : 2 * d + 8;
      const sample = Math.min(CHUNKS, Math.ceil((PROBE_MEM_MB * MiB) / valueBytes) + 64);
      await sql.unsafe(`create unlogged table sz_probe as select * from ${table} order by id limit ${sample}`);
      await sql.unsafe(`set maintenance_work_mem = '${PROBE_MEM_MB}MB'`);
      notices = [];
      t0 = performance.now();
      await sql.unsafe(`create index sz_probe_hnsw on sz_probe using hnsw (embedding extensions.${type}_cosine_ops)`);
      const said = notices.map((n) => n.match(/no longer fits into maintenance_work_mem after (\d+) tuples/)).find(
        Boolean,
      );
      const probe_tuples = said ? Number(said[1]) : null;
      const element_bytes = probe_tuples ? Math.round((PROBE_MEM_MB * MiB) / probe_tuples) : null;
      await sql.unsafe(`drop table sz_probe`);
      log(
        `${d} ${type}: build ${build_s} s, probe ${seconds(t0)} s (${sample} rows, notice after ${
          probe_tuples ?? "-"
        } tuples)`,
      );

      const table_bytes = Number(size.t);
      const index_bytes = Number(size.i);
      const corpus_index_bytes = Math.round((index_bytes / CHUNKS) * CORPUS);
      const fit = COMPUTE.find(([, ram]) => corpus_index_bytes <= CACHE_SHARE * ram * GiB);
      rows.push({
        dims: d,
        type,
        chunks: CHUNKS,
        table_bytes,
        index_bytes,
        build_s,
        probe_tuples,
        element_bytes,
        corpus_table_bytes: Math.round((table_bytes / CHUNKS) * CORPUS),
        corpus_index_bytes,
        corpus_graph_bytes: element_bytes ? element_bytes * CORPUS : null,
        segment_rows_256mb: element_bytes ? Math.floor((SEGMENT_BUILD_MEM_MB * MiB) / element_bytes) : null,
        compute: fit ? `${fit[0]} (${fit[1]} GB)` : "more than 16XL",
      });
      await sql.unsafe(`drop index ${table}_hnsw`);
    }
  }
} finally {
  await sql.end({ timeout: 5 });
  await db.drop();
}

const mb = (b: number) => `${(b / MiB).toFixed(1)} MB`;
const gb = (b: number | null) => (b === null ? "-" : `${(b / GiB).toFixed(2)} GB`);
const header = [
  "dims",
  "type",
  `table (${CHUNKS / 1000}k)`,
  `HNSW (${CHUNKS / 1000}k)`,
  "bytes/chunk table+HNSW",
  "graph element",
  `table (${CORPUS / 1e6}M)`,
  `HNSW (${CORPUS / 1e6}M)`,
  `one-graph build (${CORPUS / 1e6}M)`,
  "segment rows @256 MB",
  "compute (HNSW <= 3/4 RAM)",
];
const lines = rows.map((r) => [
  String(r.dims),
  r.type,
  mb(r.table_bytes),
  mb(r.index_bytes),
  `${Math.round(r.table_bytes / r.chunks)} + ${Math.round(r.index_bytes / r.chunks)}`,
  r.element_bytes === null ? "-" : `${r.element_bytes} B`,
  gb(r.corpus_table_bytes),
  gb(r.corpus_index_bytes),
  gb(r.corpus_graph_bytes),
  r.segment_rows_256mb === null ? "-" : r.segment_rows_256mb.toLocaleString("en-US"),
  r.compute,
]);
console.log(
  `| ${header.join(" | ")} |\n|${header.map(() => "---").join("|")}|\n${
    lines.map((l) => `| ${l.join(" | ")} |`).join("\n")
  }`,
);
const result = {
  chunks: CHUNKS,
  corpus: CORPUS,
  clusters: CLUSTERS,
  probe_mem_mb: PROBE_MEM_MB,
  cache_share: CACHE_SHARE,
  hnsw: { m: 16, ef_construction: 64, opclass: "<type>_cosine_ops" },
  results: rows,
  minutes: Math.round((performance.now() - started) / 6000) / 10,
  cores: availableParallelism(),
  load: loadavg()[0],
};
mkdirSync(".bench", { recursive: true });
writeFileSync(".bench/sizing.json", JSON.stringify(result, null, 2) + "\n");
console.log(
  `written to .bench/sizing.json (${result.minutes} min, load ${result.load.toFixed(1)} on ${result.cores} cores)`,
);
const missing = rows.filter((r) => r.element_bytes === null);
if (missing.length) console.log(`no memory notice for: ${missing.map((r) => `${r.dims} ${r.type}`).join(", ")}`);
