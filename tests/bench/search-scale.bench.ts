// npm run bench:search-scale -- search at the size of the whole corpus: 1,000,000 chunks, loaded the way
// a bulk backfill writes them, searched through the search function as the service and as users who
// may read 100%, 10%, 1%, 0.1% and 20 rows. Writes .bench/search-scale.json; prints a table.
//
//   vectors  256 dimensions stored as halfvec: what a project of this size picks. OpenAI's
//            text-embedding-3 models take `dimensions`, and text-embedding-3-large at 256 scores above
//            ada-002 at 1536 on MTEB (OpenAI's figures); halfvec halves the bytes again, so 1.3M chunks
//            fit in memory on a mid-size compute (the sizing table in docs/embedding-storage.md). Clustered: 400 topics, each
//            chunk a point of its topic's six-dimensional patch plus a little noise (see bench_point).
//   load     per stage (100k, 300k, 1M chunks; BENCH_STAGES to change), into loading segments of
//            bulk_segment_max_rows chunks: a bulk job waiting in the queue makes the maintenance open
//            a loading segment, the chunks are written into it (precomputed vectors: bench:scale
//            measures the embedding pipeline), then the real maintenance procedures close, build,
//            seal and merge the segments, as pg_cron runs them.
//   rights   bench_docs: one row per chunk, 1,000 clients; RLS shows a user the rows of the clients
//            they belong to. Users: all clients (100%), 100 (10%), 10 (1%), 1 (0.1%), and one who owns
//            20 rows.
//   search   vector mode, matchCount 10, through the local stack's gateway and Deno functions; each
//            query's embedding comes from the query cache (seeded per caller, as a repeated question).
//   recall   against an exact search over what each caller may read (service: every chunk).
//   server   a private PostgreSQL 15 cluster with a Large compute's memory (8 GB: shared_buffers a
//            quarter of it, effective_cache_size three quarters, as Supabase sets them) and hosted
//            durability (fsync, synchronous_commit on), the compute README's sizing table names for
//            this corpus at 256-d halfvec. BENCH_KEEP_DB=1 leaves it running and prints its URL.
import { mkdirSync, writeFileSync } from "node:fs";
import postgres from "postgres";
import { contentHash } from "../../packages/embeddings/hash.ts";
import { OFFLINE_MODEL } from "../../packages/embeddings/offline.ts";
import { startLocalStack } from "../../packages/local-stack/index.ts";
import { signUserJwt } from "../../packages/local-stack/keys.ts";
import { migrate } from "../../packages/local-stack/migrate.ts";
import { normalizeQuery } from "../../packages/search/query-cache.ts";
import { startDurableCluster } from "../../packages/testkit/durable-postgres.ts";
import { createAuthUsers } from "../helpers/users.ts";

const STAGES = (process.env.BENCH_STAGES ?? "100000,300000,1000000").split(",").map(Number);
const DIMS = Number(process.env.BENCH_DIMS ?? 256);
const TYPE = process.env.BENCH_TYPE === "vector" ? "vector" : "halfvec";
const SEGMENT_ROWS = Number(process.env.BENCH_SEGMENT_ROWS ?? 250_000);
// maintenance_work_mem for a segment's build, which also caps a segment's size (its graph must fit):
// 1 GB, what a Large compute (8 GB) gives an index build.
const BUILD_MEM_MB = Number(process.env.BENCH_BUILD_MEM_MB ?? 1024);
const QUERIES = Number(process.env.BENCH_QUERIES ?? 40);
const CLIENTS = 1000;
const CENTRES = 400;
const log = (m: string) => console.error(`[bench ${new Date().toISOString().slice(11, 19)}] ${m}`);

const USERS = [
  { name: "100%", id: "00000000-0000-4000-8000-000000000100", clients: CLIENTS },
  { name: "10%", id: "00000000-0000-4000-8000-000000000010", clients: 100 },
  { name: "1%", id: "00000000-0000-4000-8000-000000000001", clients: 10 },
  { name: "0.1%", id: "00000000-0000-4000-8000-000000000000", clients: 1 },
  { name: "20 rows", id: "00000000-0000-4000-8000-000000000020", clients: 0 },
];
const TWENTY_ROWS_CLIENT = CLIENTS; // a client of its own, owning rows 1..20

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] : NaN;
}
const round = (x: number, d = 1) => Number.isFinite(x) ? +x.toFixed(d) : null;

const dbName = "search_scale";
const cluster = await startDurableCluster({
  database: dbName,
  log,
  extraConf: ["shared_buffers = '2GB'", "effective_cache_size = '6GB'", `maintenance_work_mem = '${BUILD_MEM_MB}MB'`]
    .join("\n"),
});
const url = cluster.url;
const sql = postgres(url, { max: 4, onnotice: () => {}, idle_timeout: 0 });
let stack: Awaited<ReturnType<typeof startLocalStack>> | undefined;
const tStart = performance.now();

try {
  log(`database ${dbName}: migrating`);
  await migrate(url);
  await sql`update cron.job set active = false`; // the bench runs the maintenance itself, in order
  await sql`alter table embedding_sync_queue disable trigger embedding_sync_queue_webhook`;

  // The index: DIMS dimensions, TYPE (the column is empty: it changes in place).
  // Segment 0's index options (m, ef_construction), which every segment's index copies, kept as migrated.
  const [{ opts }] = await sql<{ opts: string }[]>`
    select coalesce(' with (' || array_to_string(reloptions, ', ') || ')', '') as opts from pg_class
    where oid = 'private.documentation_embeddings_s0_embedding_hnsw'::regclass`;
  await sql`drop index private.documentation_embeddings_s0_embedding_hnsw`;
  await sql.unsafe(`alter table documentation_embeddings alter column embedding type extensions.${TYPE}(${DIMS})`);
  await sql.unsafe(`alter table query_embedding_cache alter column embedding type extensions.vector(${DIMS})`);
  await sql.unsafe(`create index documentation_embeddings_s0_embedding_hnsw on private.documentation_embeddings_s0
                    using hnsw (embedding extensions.${TYPE}_cosine_ops)${opts}`);
  await sql`update embedding_sync_settings
            set bulk_segment_min_rows = 1, bulk_segment_max_rows = ${SEGMENT_ROWS}, bulk_segment_build_mem_mb = ${BUILD_MEM_MB}`;

  await sql`create table bench_docs (id bigint primary key, client_id int not null, body text not null)`;
  await sql`create index on bench_docs (client_id)`;
  await sql`create table bench_members (user_id uuid not null, client_id int not null, primary key (user_id, client_id))`;
  await sql`alter table bench_docs enable row level security`;
  // Written the way Supabase's RLS guide advises: the caller's clients computed once per query.
  await sql`create policy members on bench_docs for select to authenticated
            using (client_id = any (array(select m.client_id from bench_members m where m.user_id = (select auth.uid()))))`;
  await sql`grant select on bench_docs, bench_members to authenticated`;
  await sql`select register_embedding_source('bench_docs', content_columns => array['body'])`;
  await sql`alter table bench_docs disable trigger user`;
  // Real users: the search log (conversations) references auth.users.
  await createAuthUsers(sql, USERS.map((u) => u.id));
  for (const u of USERS) {
    const step = u.clients ? CLIENTS / u.clients : 0;
    if (u.clients) {
      await sql`insert into bench_members select ${u.id}::uuid, c from generate_series(0, ${CLIENTS - 1}, ${step}) c`;
    } else await sql`insert into bench_members values (${u.id}::uuid, ${TWENTY_ROWS_CLIENT})`;
  }
  await sql`select setseed(0.2026)`;
  // A topic: a centre and six directions; a chunk: a point of its topic's six-dimensional patch, plus a
  // little noise in every dimension. Real embeddings vary along few directions within a subject; noise
  // as large as the centres in all 256 dimensions would make every chunk of a topic equally far from a
  // question, a nearest-neighbour order that neither an index nor a reader could tell apart.
  const basis = Array.from({ length: 6 }, (_, j) => `b${j + 1}`);
  await sql.unsafe(`create table bench_centres as
    select c, array(select (random() - 0.5)::real from generate_series(1, ${DIMS} + c * 0)) as v,
           ${
    basis.map((b) => `array(select ((random() - 0.5) * 0.5)::real from generate_series(1, ${DIMS} + c * 0)) as ${b}`)
      .join(", ")
  }
    from generate_series(0, ${CENTRES - 1}) c`);
  await sql.unsafe(`create function bench_point(t bench_centres) returns real[] language sql volatile as $$
    select array_agg(u.v ${
    basis.map((b, j) => `+ z.z${j + 1} * u.${b}`).join(" ")
  } + (random() - 0.5) * 0.05 order by u.i)
    from unnest(t.v, ${basis.map((b) => `t.${b}`).join(", ")}) with ordinality u(v, ${basis.join(", ")}, i),
         (select ${basis.map((_, j) => `(random() - 0.5) * 2 as z${j + 1}`).join(", ")}) z $$`);

  // Query vectors: points of random topics; one cache entry per caller (scope), as a question asked before.
  const queries = (await sql.unsafe<{ v: string }[]>(`
    select bench_point(t)::extensions.vector::text as v
    from bench_centres t order by random() limit ${QUERIES}`)).map((r, i) => ({
    text: `bench question ${i}`,
    vector: r.v,
  }));
  for (const scope of ["service", ...USERS.map((u) => u.id)]) {
    for (const q of queries) {
      await sql`insert into query_embedding_cache (model, dimensions, scope, query_hash, embedding)
                values (${OFFLINE_MODEL}, ${DIMS}, ${scope}, ${
        contentHash(normalizeQuery(q.text))
      }, ${q.vector}::extensions.vector)`;
    }
  }

  stack = await startLocalStack({
    databaseUrl: url,
    port: 0,
    migrate: false,
    dataDir: `.bench/local-stack-${dbName}`,
    functionEnv: { EMBEDDING_PROVIDER: "offline", EMBEDDING_DIMENSIONS: String(DIMS) },
  });
  const headers: Record<string, Record<string, string>> = { service: { apikey: stack.secretKey } };
  for (const u of USERS) {
    headers[u.name] = {
      apikey: stack.publishableKey,
      authorization: `Bearer ${await signUserJwt(stack.keys, u.id, { expiresInSeconds: 6 * 3600 })}`,
    };
  }

  const mergeProc = (await sql<{ p: string }[]>`
    select p.oid::regprocedure::text as p from pg_proc p
    where p.pronamespace = 'private'::regnamespace and p.prokind = 'p' and p.proname = 'merge_embedding_segments'`)[0]
    ?.p;
  log(
    mergeProc
      ? `segments merge with ${mergeProc}`
      : "no merge procedure in this schema: segments are built, never merged",
  );

  let loaded = 0;
  let buildMs = 0;
  /** Loads chunks up to `total`, a segment at a time, and lets the maintenance close, build and merge them. */
  const loadTo = async (total: number) => {
    while (loaded < total) {
      // A bulk job waiting (a backfill's) makes the maintenance open a loading segment.
      await sql`insert into embedding_sync_queue (source_table, source_id, action, lane)
                values ('bench_docs', 'backfill', 'UPDATE', 'bulk') on conflict do nothing`;
      await sql`call private.maintain_embedding_segments(false)`;
      const [seg] = await sql<{ id: number }[]>`select id from embedding_segments where state = 'loading'`;
      if (!seg) throw new Error("the maintenance opened no loading segment");
      const n = Math.min(SEGMENT_ROWS, total - loaded);
      const from = loaded + 1, to = loaded + n;
      await sql`insert into bench_docs select g, case when g <= 20 then ${TWENTY_ROWS_CLIENT} else g % ${CLIENTS} end, 'dossier ' || g
                from generate_series(${from}::bigint, ${to}::bigint) g`;
      await sql.unsafe(`
        insert into documentation_embeddings (source_table, source_id, chunk_index, content, content_hash, embedding, model,
                                              token_count, source_version, segment)
        select 'bench_docs', g::text, 0, 'dossier ' || g, md5(g::text),
               bench_point(t)::extensions.${TYPE}, '${OFFLINE_MODEL}', 3, 1, ${seg.id}
        from generate_series(${from}::bigint, ${to}::bigint) g
        join bench_centres t on t.c = (hashint8(g) & 2147483647) % ${CENTRES}`);
      loaded = to;
      // Full: the maintenance closes it (its index is built next); the last one closes when no bulk job is left.
      if (loaded >= total) await sql`delete from embedding_sync_queue where source_id = 'backfill'`;
      await sql`call private.maintain_embedding_segments(false)`;
      const t = performance.now();
      await sql`call private.build_embedding_segments()`;
      if (mergeProc) await sql.unsafe(`call ${mergeProc.replace(/\(.*\)$/, "")}()`);
      buildMs += performance.now() - t;
      log(`loaded ${loaded} chunks; ${(await segments()).length} segments`);
    }
    // The searches measure the loaded corpus at rest: autovacuum's first pass over segments of up to
    // 550,000 fresh rows (which an insert-only table gets too) is done here, not left to land in the
    // middle of a stage's searches and take a core from them.
    await sql`vacuum (analyze) bench_docs`;
    await sql`vacuum (analyze) documentation_embeddings`;
  };
  const segments = async () =>
    await sql<
      { segment: number; state: string; indexed: boolean }[]
    >`select segment, state, indexed from embedding_segment_status
      where segment = 0 or rows > 0`;

  const search = async (who: string, q: { text: string }) => {
    const t = performance.now();
    const r = await fetch(`${stack!.apiUrl}/functions/v1/search`, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers[who] },
      body: JSON.stringify({ query: q.text, mode: "vector", matchCount: 10 }),
    });
    const body = await r.json();
    const ms = performance.now() - t;
    if (r.status !== 200) throw new Error(`search as ${who}: ${r.status} ${JSON.stringify(body)}`);
    if (body.cachedEmbedding !== true) throw new Error(`search as ${who}: the query embedding was not the cached one`);
    return { ms, ids: (body.results as { source_id: string }[]).map((x) => x.source_id) };
  };
  /** Exact top 10 over what `userId` may read (null: every chunk), by the service, with no index. */
  const exact = async (userId: string | null, q: { vector: string }) => {
    const readable = userId === null ? "" : `and d.source_id in (select b.id::text from bench_docs b
        where b.client_id = any (array(select m.client_id from bench_members m where m.user_id = '${userId}')))`;
    return await sql.begin(async (tx) => {
      await tx`set local enable_indexscan = off`;
      await tx`set local enable_bitmapscan = off`;
      const rows = await tx.unsafe<{ source_id: string }[]>(
        `
        with d as materialized (select d.source_id, d.embedding <=> $1::extensions.${TYPE} as dist
                                from documentation_embeddings d where true ${readable})
        select source_id from d order by dist, source_id limit 10`,
        [q.vector],
      );
      return rows.map((r) => r.source_id);
    });
  };
  const recall = (got: string[], want: string[]) =>
    want.length ? got.filter((x) => want.includes(x)).length / want.length : 1;

  const growth: { chunks: number; segments: number; search_p50_ms: number | null; search_p95_ms: number | null }[] = [];
  let final: Record<string, unknown> = {};
  for (const stage of STAGES) {
    await loadTo(stage);
    const segs = await segments();
    log(`stage ${stage}: searching (${segs.length} segments)`);
    for (const q of queries) await search("service", q); // warm-up
    const serviceMs: number[] = [];
    const serviceIds: string[][] = [];
    for (const q of queries) {
      const r = await search("service", q);
      serviceMs.push(r.ms);
      serviceIds.push(r.ids);
    }
    growth.push({
      chunks: stage,
      segments: segs.length,
      search_p50_ms: round(percentile(serviceMs, 50)),
      search_p95_ms: round(percentile(serviceMs, 95)),
    });
    if (stage !== STAGES[STAGES.length - 1]) continue;

    log("users: searching");
    const userMs: number[] = [];
    const byShare: Record<string, number> = {};
    const userP95: Record<string, number | null> = {};
    const userIds: Record<string, string[][]> = {};
    for (const u of USERS) {
      for (const q of queries) await search(u.name, q); // warm-up
      const ms: number[] = [];
      userIds[u.name] = [];
      for (const q of queries) {
        const r = await search(u.name, q);
        ms.push(r.ms);
        userIds[u.name].push(r.ids);
      }
      userMs.push(...ms);
      userP95[u.name] = round(percentile(ms, 95));
    }
    log("recall against exact search");
    let serviceRecall = 0;
    for (let i = 0; i < queries.length; i++) serviceRecall += recall(serviceIds[i], await exact(null, queries[i]));
    let leaks = 0;
    for (const u of USERS) {
      let r = 0;
      for (let i = 0; i < queries.length; i++) {
        const want = await exact(u.id, queries[i]);
        r += recall(userIds[u.name][i], want);
        const [leak] = await sql<{ n: number }[]>`
          select count(*)::int as n from unnest(${userIds[u.name][i]}::text[]) s(id)
          where not exists (select from bench_docs b join bench_members m on m.client_id = b.client_id
                            where b.id::text = s.id and m.user_id = ${u.id})`;
        leaks += leak.n;
      }
      byShare[u.name] = +(r / queries.length).toFixed(3);
    }
    const [{ bytes }] = await sql<{ bytes: string }[]>`
      select coalesce(sum(pg_relation_size(i.indexrelid)), 0)::text as bytes from pg_index i
      join pg_class c on c.oid = i.indexrelid join pg_am am on am.oid = c.relam where am.amname = 'hnsw'`;
    const [{ table_bytes }] = await sql<{ table_bytes: string }[]>`
      select coalesce(sum(pg_relation_size(c.oid)), 0)::text as table_bytes from pg_inherits h join pg_class c on c.oid = h.inhrelid
      where h.inhparent = 'public.documentation_embeddings'::regclass`;
    const serviceP95 = percentile(serviceMs, 95);
    final = {
      chunks: stage,
      dimensions: DIMS,
      vector_type: TYPE,
      segments: segs.length,
      search_p50_ms: round(percentile(serviceMs, 50)),
      search_p95_ms: round(serviceP95),
      user_search_p95_ms: round(percentile(userMs, 95)),
      user_search_p95_ms_by_share: userP95,
      recall_at_10: +(serviceRecall / queries.length).toFixed(3),
      user_recall_at_10_by_share: byShare,
      leaked_results: leaks,
      index_bytes: Number(bytes),
      table_bytes: Number(table_bytes),
      build_minutes: +(buildMs / 60_000).toFixed(1),
    };
  }

  const first = growth[0], last = growth[growth.length - 1];
  const result = {
    ...final,
    growth,
    growth_p95_ratio: first && last && first.search_p95_ms && last.search_p95_ms
      ? +(last.search_p95_ms / first.search_p95_ms).toFixed(2)
      : null,
    queries: QUERIES,
    segment_rows: SEGMENT_ROWS,
    build_mem_mb: BUILD_MEM_MB,
    bench_minutes: +((performance.now() - tStart) / 60_000).toFixed(1),
    measured_at: new Date().toISOString(),
  } as Record<string, any>;
  const targets: [string, boolean][] = [
    ["chunks >= 1,000,000", result.chunks >= 1_000_000],
    ["segments <= 16", result.segments <= 16],
    ["search_p95_ms <= 50", result.search_p95_ms <= 50],
    ["user_search_p95_ms <= 2 x service p95", result.user_search_p95_ms <= 2 * result.search_p95_ms],
    ["recall_at_10 >= 0.95", result.recall_at_10 >= 0.95],
    [
      "user recall >= 0.95 for every share",
      Object.values(result.user_recall_at_10_by_share ?? {}).every((r) => (r as number) >= 0.95),
    ],
    ["p95 at the last stage <= 2 x p95 at the first", result.growth_p95_ratio !== null && result.growth_p95_ratio <= 2],
    ["no result the user may not read", result.leaked_results === 0],
  ];
  result.missed_targets = targets.filter(([, ok]) => !ok).map(([t]) => t);
  mkdirSync(".bench", { recursive: true });
  writeFileSync(".bench/search-scale.json", JSON.stringify(result, null, 2) + "\n");

  const rows: [string, string, string][] = [
    [
      "chunks",
      String(result.chunks),
      `${DIMS}-d ${TYPE}, ${CENTRES} clusters; loading segments of ${SEGMENT_ROWS}, build memory ${BUILD_MEM_MB} MB`,
    ],
    ["segments", String(result.segments), "scanned by every search (target <= 16)"],
    ["search_p50_ms", String(result.search_p50_ms), "service, through the search function, vector mode, matchCount 10"],
    ["search_p95_ms", String(result.search_p95_ms), "service (target <= 50)"],
    [
      "user_search_p95_ms",
      String(result.user_search_p95_ms),
      `all users (target <= 2 x service): ${JSON.stringify(result.user_search_p95_ms_by_share)}`,
    ],
    ["recall_at_10", String(result.recall_at_10), "service, against exact search (target >= 0.95)"],
    [
      "user_recall_at_10",
      JSON.stringify(result.user_recall_at_10_by_share),
      "against exact search over each user's rows (target >= 0.95 each)",
    ],
    ["leaked_results", String(result.leaked_results), "results a user may not read (target 0)"],
    ["index_bytes", String(result.index_bytes), `HNSW indexes; table ${result.table_bytes} bytes`],
    ["build_minutes", String(result.build_minutes), "closing, building and merging segments"],
    [
      "growth",
      growth.map((g) => `${g.chunks}: p95 ${g.search_p95_ms} ms, ${g.segments} seg`).join("; "),
      `p95 ratio ${result.growth_p95_ratio} (target <= 2)`,
    ],
    ["bench_minutes", String(result.bench_minutes), "the whole run"],
  ];
  const w0 = Math.max(...rows.map((r) => r[0].length));
  const w1 = Math.max(...rows.map((r) => r[1].length));
  console.log(`search at scale (real PostgreSQL, local stack, ${QUERIES} queries per caller)`);
  console.log(`${"metric".padEnd(w0)}  ${"value".padStart(w1)}  note`);
  for (const [k, v, n] of rows) console.log(`${k.padEnd(w0)}  ${v.padStart(w1)}  ${n}`);
  console.log(result.missed_targets.length ? `MISSED: ${result.missed_targets.join("; ")}` : "every target met");
  console.log("written to .bench/search-scale.json");
} finally {
  await stack?.stop();
  await sql.end({ timeout: 5 });
  if (process.env.BENCH_KEEP_DB) log(`kept: ${url} (data ${cluster.dataDir}, postmaster ${cluster.postmasterPid()})`);
  else await cluster.destroy();
}
