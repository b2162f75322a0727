// npm run bench:search -- search with each reader's rights, on the real PostgreSQL of the test bed,
// through the search function (local stack, Deno, offline embedding provider). Writes .bench/search.json.
//
//   corpus   50,000 chunks (BENCH_CHUNKS) of French legal prose from a shared vocabulary, one per row
//            of a table whose RLS shows each user only their own rows; 20% belong to the test user.
//            Chunks are loaded straight into documentation_embeddings (vectors from the offline
//            provider, the same one the function embeds queries with), then the HNSW index is built
//            once over all of them, which is far quicker than inserting into a live index.
//   search   200 queries (3-6 vocabulary words, hybrid mode, matchCount 8), each as the user then as
//            the service role (no rights check), after one warm-up pass that also fills the query cache.
//   leaks    every result the user got is checked against the table: rows of other users count.
//   pdf      text extraction of a generated 20-page French PDF with unpdf (Node), pages per second.
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import postgres from "postgres";
import { PDFDocument, StandardFonts } from "pdf-lib";
import { vectorLiteral } from "../../packages/embeddings/hash.ts";
import { offlineEmbedding } from "../../packages/embeddings/offline.ts";
import { extractDocument } from "../../packages/files-queue/extract.ts";
import { startLocalStack } from "../../packages/local-stack/index.ts";
import { signUserJwt } from "../../packages/local-stack/keys.ts";
import { migrate } from "../../packages/local-stack/migrate.ts";
import { databaseUrl, ensureTestServer } from "../../packages/testkit/testbed.ts";
import { createAuthUsers } from "../helpers/users.ts";

const CHUNKS = Number(process.env.BENCH_CHUNKS ?? 50_000);
const DISTINCT = Math.min(CHUNKS, Number(process.env.BENCH_DISTINCT_TEXTS ?? 10_000));
const QUERIES = Number(process.env.BENCH_QUERIES ?? 200);
const USER_SHARE = 0.2;
const HNSW = process.env.BENCH_HNSW ?? "m = 16, ef_construction = 64";
const VOCABULARY = ("le la les un une des du de article code civil pénal travail commerce contrat bail salarié " +
  "employeur demande délai jours mois tribunal juge appel cour cassation décision recours procédure acte notarié " +
  "propriété vente achat prix paiement facture taxe impôt déclaration revenu société associé capital statuts " +
  "assemblée gérant président conseil administration responsabilité dommage préjudice réparation assurance sinistre " +
  "garantie clause résiliation préavis licenciement indemnité congé formation retraite pension sécurité sociale " +
  "santé maladie accident famille mariage divorce enfant garde succession héritier testament donation").split(" ");
const CONTENT_WORDS = VOCABULARY.filter((w) => w.length > 3);
const log = (m: string) => console.error(`[bench] ${m}`);

// A small deterministic PRNG, so two runs search the same corpus with the same queries.
let seed = 12345;
const rand = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
const pick = <T>(xs: T[]) => xs[Math.floor(rand() * xs.length)];

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
}

const adminUrl = await ensureTestServer(log);
const dbName = `bench_search_${Date.now().toString(36)}`;
const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
await admin.unsafe(`create database ${dbName}`);
const url = databaseUrl(adminUrl, dbName);
const sql = postgres(url, { max: 4, onnotice: () => {} });
let stack: Awaited<ReturnType<typeof startLocalStack>> | undefined;
const stackDir = `.bench/local-stack-${dbName}`;

try {
  const t0 = performance.now();
  log(`database ${dbName}: migrating`);
  await migrate(url);
  await sql`update cron.job set active = false`;
  const testUser = crypto.randomUUID();
  const others = Array.from({ length: 4 }, () => crypto.randomUUID());
  // Real users: the search log (conversations) references auth.users.
  await createAuthUsers(sql, [testUser, ...others]);

  await sql`create table bench_notes (id int primary key, owner uuid not null, body text not null)`;
  await sql`alter table bench_notes enable row level security`;
  await sql`create policy own_notes on bench_notes for select to authenticated using (owner = (select auth.uid()))`;
  await sql`grant select on bench_notes to authenticated`;
  await sql`select register_embedding_source('bench_notes', content_columns => array['body'])`;

  // Texts and their vectors (computed once per distinct text; rows cycle through them).
  const texts = Array.from(
    { length: DISTINCT },
    (_, i) =>
      `Note ${i} : ` + Array.from({ length: 30 + Math.floor(rand() * 30) }, () => pick(VOCABULARY)).join(" ") + ".",
  );
  log(`loading ${CHUNKS} chunks (${DISTINCT} distinct texts), without the HNSW index`);
  await sql`drop index private.documentation_embeddings_s0_embedding_hnsw`;
  const BATCH = 500;
  for (let start = 0; start < CHUNKS; start += BATCH) {
    const ids = Array.from({ length: Math.min(BATCH, CHUNKS - start) }, (_, k) => start + k + 1);
    const owners = ids.map((id) => (id % 5 === 0 ? testUser : others[id % 4])); // exactly 20% the test user's
    const bodies = ids.map((id) => `${texts[(id - 1) % DISTINCT]} (${id})`);
    const vectors = ids.map((id) => vectorLiteral(offlineEmbedding(texts[(id - 1) % DISTINCT], 1536)));
    await sql.begin(async (tx) => {
      // The rows only: their chunks are written below, so no job is queued.
      await tx`set local session_replication_role = replica`;
      await tx`insert into bench_notes (id, owner, body) select * from unnest(${ids}::int[], ${owners}::uuid[], ${bodies}::text[])`;
      await tx`insert into documentation_embeddings (source_table, source_id, chunk_index, content, content_hash, embedding, model, token_count, source_version)
               select 'bench_notes', x.id::text, 0, x.body, md5(x.body), x.v::extensions.vector, 'offline-lexical-v1', 60, 1
               from unnest(${ids}::int[], ${bodies}::text[], ${vectors}::text[]) as x(id, body, v)`;
    });
  }
  const tLoad = performance.now();
  log(`loaded in ${((tLoad - t0) / 1000).toFixed(1)} s; building the HNSW index (${HNSW})`);
  await sql.begin(async (tx) => {
    await tx`set local maintenance_work_mem = '1GB'`;
    await tx`set local max_parallel_maintenance_workers = 2`;
    await tx.unsafe(`create index documentation_embeddings_s0_embedding_hnsw on private.documentation_embeddings_s0
                     using hnsw (embedding extensions.vector_cosine_ops) with (${
      HNSW.replace(/[^a-z0-9_=, ]/gi, "")
    })`);
  });
  await sql`analyze documentation_embeddings`;
  await sql`analyze bench_notes`;
  const tIndex = performance.now();
  log(`index built in ${((tIndex - tLoad) / 1000).toFixed(1)} s`);

  stack = await startLocalStack({
    databaseUrl: url,
    port: 0,
    migrate: false,
    dataDir: stackDir,
    functionEnv: { EMBEDDING_PROVIDER: "offline", EMBEDDING_DIMENSIONS: "1536" },
  });
  const userHeaders = {
    apikey: stack.publishableKey,
    authorization: `Bearer ${await signUserJwt(stack.keys, testUser, { expiresInSeconds: 3600 })}`,
  };
  const serviceHeaders = { apikey: stack.secretKey };
  const queries = Array.from(
    { length: QUERIES },
    () => Array.from({ length: 3 + Math.floor(rand() * 4) }, () => pick(CONTENT_WORDS)).join(" "),
  );

  const run = async (headers: Record<string, string>, some = queries) => {
    const ms: number[] = [];
    const ids: string[][] = [];
    for (const query of some) {
      const t = performance.now();
      const r = await fetch(`${stack!.apiUrl}/functions/v1/search`, {
        method: "POST",
        headers: { "content-type": "application/json", ...headers },
        body: JSON.stringify({ query, matchCount: 8 }),
      });
      const body = await r.json();
      ms.push(performance.now() - t);
      if (r.status !== 200) throw new Error(`search ${r.status}: ${JSON.stringify(body)}`);
      ids.push(body.results.map((x: { source_id: string }) => x.source_id));
    }
    return { ms, ids };
  };
  log("warm-up (fills the query cache and the buffer cache)");
  await run(serviceHeaders);
  await run(userHeaders);
  // User and service queries alternate, so a busy machine slows both alike and the ratio stays fair.
  log(`${QUERIES} queries as the user and as the service role, alternating`);
  const u = { ms: [] as number[], ids: [] as string[][] };
  const s = { ms: [] as number[], ids: [] as string[][] };
  for (const query of queries) {
    for (const [headers, into] of [[userHeaders, u], [serviceHeaders, s]] as const) {
      const one = await run(headers, [query]);
      into.ms.push(...one.ms);
      into.ids.push(...one.ids);
    }
  }
  const returned = u.ids.flat();
  const [leak] = await sql<{ n: number }[]>`
    select count(*)::int as n from unnest(${returned}::text[]) r(id) join bench_notes b on b.id::text = r.id where b.owner <> ${testUser}`;
  const [missing] = await sql<{ n: number }[]>`
    select count(*)::int as n from unnest(${returned}::text[]) r(id) where not exists (select from bench_notes b where b.id::text = r.id)`;
  const emptyUser = u.ids.filter((x) => x.length === 0).length;
  const shortUser = u.ids.filter((x) => x.length < 8).length;

  // PDF extraction: a 20-page French PDF, extracted 10 times.
  const doc = await PDFDocument.create();
  const font = await doc.embedFont(StandardFonts.Helvetica);
  for (let p = 0; p < 20; p++) {
    const page = doc.addPage([595, 842]);
    for (let l = 0; l < 40; l++) {
      page.drawText(Array.from({ length: 12 }, () => pick(VOCABULARY)).join(" "), {
        x: 40,
        y: 800 - l * 19,
        size: 10,
        font,
      });
    }
  }
  const pdf = await doc.save();
  const tp = performance.now();
  let pages = 0;
  for (let i = 0; i < 10; i++) {
    const x = await extractDocument("bench/doc.pdf", pdf);
    if (!x.ok) throw new Error(x.reason);
    pages += x.doc.pages.length;
  }
  const pdfPagesPerS = pages / ((performance.now() - tp) / 1000);

  const userP95 = percentile(u.ms, 95);
  const serviceP95 = percentile(s.ms, 95);
  const result = {
    chunks: CHUNKS,
    readable_by_user: Math.floor(CHUNKS / 5),
    queries: QUERIES,
    search_p50_ms: +percentile(u.ms, 50).toFixed(1),
    search_p95_ms: +userP95.toFixed(1),
    search_service_p50_ms: +percentile(s.ms, 50).toFixed(1),
    search_service_p95_ms: +serviceP95.toFixed(1),
    rights_overhead_ratio: +(userP95 / serviceP95).toFixed(2),
    leaked_results: leak.n + missing.n,
    user_queries_with_fewer_than_8_results: shortUser,
    user_queries_with_no_result: emptyUser,
    pdf_pages_per_s: Math.round(pdfPagesPerS),
    setup_load_s: +((tLoad - t0) / 1000).toFixed(1),
    setup_index_s: +((tIndex - tLoad) / 1000).toFixed(1),
    hnsw: HNSW,
    measured_at: new Date().toISOString(),
  };
  const targets: [string, boolean][] = [
    ["rights_overhead_ratio <= 2", result.rights_overhead_ratio <= 2],
    ["leaked_results = 0", result.leaked_results === 0],
    ["user_queries_with_no_result = 0", emptyUser === 0],
  ];
  const missed = targets.filter(([, ok]) => !ok).map(([what]) => what);
  mkdirSync(".bench", { recursive: true });
  writeFileSync(".bench/search.json", JSON.stringify({ ...result, missed_targets: missed }, null, 2) + "\n");
  const rows: [string, string, string][] = [
    ["search_p50_ms", String(result.search_p50_ms), "user, through the function (rights checked by the database)"],
    ["search_p95_ms", String(result.search_p95_ms), "user"],
    [
      "search_service_p95_ms",
      String(result.search_service_p95_ms),
      `service role, no rights check (p50 ${result.search_service_p50_ms})`,
    ],
    ["rights_overhead_ratio", String(result.rights_overhead_ratio), "user p95 / service p95 (target <= 2)"],
    ["leaked_results", String(result.leaked_results), `over ${QUERIES} queries (target 0)`],
    ["user_queries_short", String(shortUser), "queries with fewer than 8 results for the user"],
    ["pdf_pages_per_s", String(result.pdf_pages_per_s), "unpdf text extraction, 20-page PDF, Node"],
    ["setup", `${result.setup_load_s}+${result.setup_index_s} s`, `load + HNSW build (${HNSW})`],
  ];
  const w0 = Math.max(...rows.map((r) => r[0].length));
  const w1 = Math.max(...rows.map((r) => r[1].length));
  console.log(
    `search benchmark (${CHUNKS} chunks, ${
      USER_SHARE * 100
    }% readable by the user, real PostgreSQL, offline provider, hybrid, matchCount 8)`,
  );
  console.log(`${"metric".padEnd(w0)}  ${"value".padStart(w1)}  note`);
  for (const [k, v, n] of rows) console.log(`${k.padEnd(w0)}  ${v.padStart(w1)}  ${n}`);
  for (const [what, ok] of targets) console.log(`${ok ? "met   " : "MISSED"}  ${what}`);
  console.log("written to .bench/search.json");
} finally {
  await stack?.stop();
  await sql.end({ timeout: 5 });
  rmSync(stackDir, { recursive: true, force: true });
  if (process.env.BENCH_KEEP_DB) log(`kept database ${dbName} (BENCH_KEEP_DB)`);
  else await admin.unsafe(`drop database if exists ${dbName} with (force)`);
  await admin.end({ timeout: 5 });
}
