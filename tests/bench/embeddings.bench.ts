// npm run bench:embeddings -- the embedding-sync benchmark, on the real PostgreSQL of the test bed,
// with the fake OpenAI server adding 300 ms to every request. Writes .bench/embeddings.json.
//
//   pipeline  20,000 rows through process-embedding-queue (the Deno function, via the local stack):
//             k = 4 parallel invocations, batchSize 500, requests packed by OpenAI's limits.
//   baseline  the same rows embedded the way Supabase's automatic-embeddings guide does it:
//             10 parallel invocations, each embedding its jobs one row per provider call.
//             At 300 ms a call it runs ~33 rows/s, so 20,000 rows would take ~10 minutes: it is
//             measured on BASELINE_ROWS of the same rows and its rate extrapolated (said in the output).
//   queue     claim + complete of the bare queue, 4 workers, no provider.
//   latency   UPDATE commit -> new chunk searchable, through the webhook path.
//   resync    resync of unchanged data: provider calls (target 0).
//   rss       peak RSS (VmHWM) of the Deno process serving the functions: first with ONE invocation
//             at batchSize 500 (the platform gives each invocation its own 256 MB), measured on a
//             fresh process before anything else runs; then again after the 4-parallel pipeline,
//             where one local process serves all four at once (reported, not the target's figure).
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import postgres from "postgres";
import { OpenAIEmbeddingProvider } from "../../packages/embeddings/openai.ts";
import { contentHash, vectorLiteral } from "../../packages/embeddings/hash.ts";
import { countTokens } from "../../packages/embeddings/tokens.ts";
import { startLocalStack } from "../../packages/local-stack/index.ts";
import { migrate } from "../../packages/local-stack/migrate.ts";
import { startFakeOpenAI } from "../../packages/testkit/fake-openai.ts";
import { databaseUrl, ensureTestServer } from "../../packages/testkit/testbed.ts";

const ROWS = Number(process.env.BENCH_ROWS ?? 20_000);
const BASELINE_ROWS = Math.min(ROWS, Number(process.env.BENCH_BASELINE_ROWS ?? 2_000));
const QUEUE_JOBS = 40_000;
const LATENCY_SAMPLES = 40;
const PROVIDER_LATENCY_MS = 300;
const V8_FLAGS = process.env.BENCH_DENO_V8_FLAGS ?? "--max-old-space-size=128,--max-semi-space-size=4";
const BENCH_VOCABULARY = "le la les un une des du de article code civil pénal travail commerce contrat bail salarié " +
  "employeur demande délai jours mois tribunal juge appel cour cassation décision recours procédure acte notarié " +
  "propriété vente achat prix paiement facture taxe impôt déclaration revenu société associé capital statuts " +
  "assemblée gérant président conseil administration responsabilité dommage préjudice réparation assurance sinistre " +
  "garantie clause résiliation préavis licenciement indemnité congé formation retraite pension sécurité sociale " +
  "santé maladie accident famille mariage divorce enfant garde succession héritier testament donation";
const log = (m: string) => console.error(`[bench] ${m}`);
/** What went wrong in this run; printed with the table, which is still written (a missed target, not a lost run). */
const problems: string[] = [];
const PIPELINE_DEADLINE_MS = 15 * 60_000;

const adminUrl = await ensureTestServer(log);
const dbName = `bench_embeddings_${Date.now().toString(36)}`;
const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
await admin.unsafe(`create database ${dbName}`);
const url = databaseUrl(adminUrl, dbName);
const sql = postgres(url, { max: 12, onnotice: () => {} });
const fake = await startFakeOpenAI({ latencyMs: PROVIDER_LATENCY_MS });
let stack: Awaited<ReturnType<typeof startLocalStack>> | undefined;
const stackDir = `.bench/local-stack-${dbName}`; // generated keys and storage of this run only

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
}

function rssMb(pid: number): { hwm: number; rss: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0);
  return { hwm: kb("VmHWM") / 1024, rss: kb("VmRSS") / 1024 };
}

async function pending(table: string | null = null): Promise<number> {
  const [r] = await sql<{ n: number }[]>`select count(*)::int as n from embedding_sync_queue
    where status in ('pending', 'processing') and (${table}::text is null or source_table = ${table})`;
  return r.n;
}

try {
  log(`database ${dbName}: migrating`);
  await migrate(url);
  stack = await startLocalStack({
    databaseUrl: url,
    port: 0,
    migrate: false,
    dataDir: stackDir,
    functionEnv: {
      EMBEDDING_PROVIDER: "openai",
      OPENAI_API_KEY: fake.apiKey,
      OPENAI_BASE_URL: fake.url,
      EMBEDDING_REQUEST_CONCURRENCY: "4",
      // The hosted Edge Runtime caps each worker's memory (256 MB), so V8 collects before growing
      // that far; an uncapped local Deno lets garbage pile up to several times the live heap (the
      // live heap of one invocation at batchSize 500 stays near 50 MB). These flags stand in for
      // the platform's limits and are printed with the result; BENCH_DENO_V8_FLAGS= (empty) turns
      // them off. The local stack passes functionEnv into the Deno process's environment.
      ...(V8_FLAGS ? { DENO_V8_FLAGS: V8_FLAGS } : {}), // Deno refuses an empty DENO_V8_FLAGS
    },
  });
  const invoke = async (body: unknown) => {
    const res = await fetch(`${stack!.apiUrl}/functions/v1/process-embedding-queue`, {
      method: "POST",
      headers: { authorization: `Bearer ${stack!.serviceRoleKey}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const json = await res.json();
    if (res.status !== 200) throw new Error(`process-embedding-queue ${res.status}: ${JSON.stringify(json)}`);
    return json as Record<string, number>;
  };
  await sql`update cron.job set active = false`; // this benchmark drives every run itself

  // Rows like FAQ answers: ~70 tokens of French legal prose each, all distinct, drawn from a shared
  // vocabulary as real rows are. (Rows padded with md5 hex would give near-random, mutually
  // orthogonal vectors, the worst case for HNSW inserts and unlike any real corpus.)
  await sql`create table bench_docs (id int primary key, title text not null, body text not null)`;
  await sql`select register_embedding_source('bench_docs')`;
  await sql`alter table embedding_sync_queue disable trigger embedding_sync_queue_webhook`;
  await sql`insert into bench_docs (id, title, body)
            select g, 'Article ' || g || ' du code',
                   'Question ' || g || ' : ' || (
                     select string_agg(w[1 + abs(hashtext(g || ':' || k)) % array_length(w, 1)], ' ')
                     from generate_series(1, 45) k) || '.'
            from generate_series(1, ${ROWS}) g,
                 (select string_to_array(${BENCH_VOCABULARY}, ' ') as w) v`;
  log(`${await pending()} jobs queued for ${ROWS} rows`);

  // --- memory: one invocation at batchSize 500, on a fresh functions process ---------------------
  await sql`create table bench_rss (id int primary key, body text not null)`;
  await sql`select register_embedding_source('bench_rss')`;
  await sql`insert into bench_rss select g, 'Mesure mémoire ' || g || ' ' || md5(g::text) || ' ' || md5((g + 1)::text)
            from generate_series(1, 5000) g`;
  await sql`update embedding_sync_queue set run_at = now() + interval '1 hour' where source_table = 'bench_docs'`;
  const single = { claimed: 0 };
  while ((await pending("bench_rss")) > 0) {
    single.claimed += (await invoke({ action: "process", batchSize: 500 })).claimed;
  }
  const rssSingle = rssMb(stack.functionsPid);
  await sql`update embedding_sync_queue set run_at = now() where source_table = 'bench_docs'`;
  log(`memory: one invocation, batchSize 500, ${single.claimed} rows: functions VmHWM ${rssSingle.hwm.toFixed(1)} MB`);

  // --- pipeline ---------------------------------------------------------------------------------
  fake.resetStats();
  let t0 = performance.now();
  // Like the cron fan-out: 4 parallel invocations; an invocation stops claiming before its
  // wall-clock budget ends, so the next round continues until the queue is empty.
  // A round that finds nothing to claim while jobs are left waits for the next one to be due (a
  // retry's backoff, a lease) instead of counting against the run.
  const runs: Record<string, number>[] = [];
  while ((await pending()) > 0) {
    if (performance.now() - t0 > PIPELINE_DEADLINE_MS) {
      problems.push(`pipeline: ${await pending()} jobs left after ${PIPELINE_DEADLINE_MS / 60_000} minutes`);
      break;
    }
    const round = await Promise.all(Array.from({ length: 4 }, () => invoke({ action: "process", batchSize: 500 })));
    runs.push(...round);
    if (round.every((r) => r.claimed === 0)) {
      const [next] = await sql<{ due_in_ms: number | null; leased: number }[]>`
        select (extract(epoch from min(run_at) filter (where status = 'pending') - now()) * 1000)::float8 as due_in_ms,
               count(*) filter (where status = 'processing')::int as leased
        from embedding_sync_queue where status in ('pending', 'processing')`;
      log(
        `pipeline: nothing claimable, ${await pending()} jobs left (${next.leased} leased, next due in ${
          Math.round(next.due_in_ms ?? 0)
        } ms)`,
      );
      await new Promise((r) => setTimeout(r, Math.min(5_000, Math.max(250, next.due_in_ms ?? 1_000))));
    }
  }
  const pipelineJobsLeft = await pending();
  const pipelineMs = performance.now() - t0;
  const pipelineRowsPerS = ROWS / (pipelineMs / 1000);
  const pipelineRequests = fake.stats.ok;
  const rss = rssMb(stack.functionsPid);
  log(
    `pipeline: ${ROWS} rows in ${Math.round(pipelineMs)} ms, ${pipelineRequests} provider requests, ` +
      `claimed ${runs.map((r) => r.claimed).join("+")}; functions VmHWM ${rss.hwm.toFixed(1)} MB`,
  );

  // --- unchanged resync ---------------------------------------------------------------------------
  fake.resetStats();
  const resync = await invoke({ action: "resync", forceResync: null });
  while ((await pending()) > 0) {
    await Promise.all(Array.from({ length: 4 }, () => invoke({ action: "process", batchSize: 500 })));
  }
  const unchangedResyncCalls = fake.stats.requests;
  log(`unchanged resync: ${resync.enqueued} jobs, ${unchangedResyncCalls} provider calls`);

  // --- baseline (same rows, one row per provider call, 10 parallel invocations) ---------------------
  // Re-queues BASELINE_ROWS of the same rows and clears their chunks, so nothing is skipped.
  await sql`delete from documentation_embeddings where source_table = 'bench_docs' and source_id::int <= ${BASELINE_ROWS}`;
  await sql`update bench_docs set title = title || ' ' where id <= ${BASELINE_ROWS}`; // a real change: new jobs
  const provider = new OpenAIEmbeddingProvider({
    apiKey: fake.apiKey,
    baseURL: fake.url,
    model: "text-embedding-3-small",
    dimensions: 1536,
  });
  fake.resetStats();
  t0 = performance.now();
  let baselineDone = 0;
  await Promise.all(Array.from({ length: 10 }, async (_, w) => {
    const worker = `baseline-${w}`;
    for (;;) {
      // Like the guide's worker: take a small batch of jobs, then embed them one at a time.
      const jobs = await sql<{ id: string; content: string }[]>`
        select id, content from claim_embedding_jobs(${worker}, 10, 300)`;
      if (jobs.length === 0) return;
      for (const job of jobs) {
        const { vectors } = await provider.embed([job.content]);
        const chunk = {
          j: job.id,
          i: 0,
          c: job.content,
          h: contentHash(job.content),
          t: countTokens(job.content),
          e: vectorLiteral(vectors[0]),
        };
        await sql`select * from apply_embedding_results(${worker}, ${provider.model}, ${`{${job.id}}`}::bigint[], ${
          JSON.stringify([chunk])
        }::text::jsonb)`;
        baselineDone++;
      }
    }
  }));
  const baselineMs = performance.now() - t0;
  const baselineRowsPerS = baselineDone / (baselineMs / 1000);
  log(`baseline: ${baselineDone} rows in ${Math.round(baselineMs)} ms, ${fake.stats.ok} provider requests`);

  // --- queue throughput ---------------------------------------------------------------------------
  await sql`insert into embedding_sync_queue (source_table, source_id, action, content)
            select 'bench_queue', g::text, 'INSERT', 'x' from generate_series(1, ${QUEUE_JOBS}) g`;
  const workers = Array.from({ length: 4 }, () => postgres(url, { max: 1, onnotice: () => {} }));
  t0 = performance.now();
  let queueDone = 0;
  await Promise.all(workers.map(async (c, w) => {
    for (;;) {
      const jobs = await c<{ id: string }[]>`select id from claim_embedding_jobs(${`q${w}`}, 500, 60)`;
      if (jobs.length === 0) return;
      const [{ n }] = await c<{ n: number }[]>`select complete_embedding_jobs(${`q${w}`}, ${`{${
        jobs.map((j) => j.id).join(",")
      }}`}::bigint[]) as n`;
      queueDone += n;
    }
  }));
  const queueMs = performance.now() - t0;
  await Promise.all(workers.map((c) => c.end()));
  const queueJobsPerS = queueDone / (queueMs / 1000);
  log(`queue: ${queueDone} jobs claimed+completed in ${Math.round(queueMs)} ms`);

  // --- latency through the webhook ----------------------------------------------------------------
  await sql`alter table embedding_sync_queue enable trigger embedding_sync_queue_webhook`;
  const latencies: number[] = [];
  await Promise.all(Array.from({ length: LATENCY_SAMPLES }, async (_, i) => {
    await new Promise((r) => setTimeout(r, i * 250 + Math.random() * 200)); // ~4 updates/s, irregular
    const id = 1 + ((i * 7919) % ROWS);
    const marker = `latence${i}x${Date.now()}`;
    await sql`update bench_docs set body = body || ' ' || ${marker} where id = ${id}`; // autocommit
    const committed = performance.now();
    for (;;) {
      const [hit] = await sql`select 1 from documentation_embeddings
                              where source_table = 'bench_docs' and source_id = ${String(id)} and content like ${
        "%" + marker
      }`;
      if (hit) break;
      if (performance.now() - committed > 30_000) {
        problems.push(`update ${i} not searchable after 30 s (counted as 30,000 ms)`);
        break;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    latencies.push(performance.now() - committed);
  }));
  const [{ calls }] =
    await sql`select count(*)::int as calls from net.http_request_queue where url like '%process-embedding-queue'`;
  log(`latency: ${LATENCY_SAMPLES} updates, ${calls} webhook calls in total`);
  const rssAfter = rssMb(stack.functionsPid);

  const result = {
    rows: ROWS,
    // The test machine is shared; the pipeline is CPU-bound (HNSW inserts), the baseline is not.
    load_avg_1m_at_end: Number(readFileSync("/proc/loadavg", "utf8").split(" ")[0]),
    cpus: availableParallelism(),
    provider_latency_ms: PROVIDER_LATENCY_MS,
    pipeline_rows_per_s: Math.round(pipelineRowsPerS),
    pipeline_jobs_left: pipelineJobsLeft,
    pipeline_provider_requests: pipelineRequests,
    baseline_rows_per_s: Number(baselineRowsPerS.toFixed(1)),
    baseline_rows_measured: baselineDone,
    baseline_extrapolated: baselineDone < ROWS,
    ratio: Number((pipelineRowsPerS / baselineRowsPerS).toFixed(1)),
    queue_jobs_per_s: Math.round(queueJobsPerS),
    latency_p50_ms: Math.round(percentile(latencies, 50)),
    latency_p95_ms: Math.round(percentile(latencies, 95)),
    unchanged_resync_provider_calls: unchangedResyncCalls,
    peak_rss_mb: Number(rssSingle.hwm.toFixed(1)),
    peak_rss_mb_4_parallel: Number(Math.max(rss.hwm, rssAfter.hwm).toFixed(1)),
    deno_v8_flags: V8_FLAGS || null,
    problems,
    missed: [] as string[],
  };
  // [metric, value, note, target]: a target is checked in this run and a miss is marked, not thrown.
  const atMost = (limit: number) => (v: number) => v <= limit;
  const atLeast = (limit: number) => (v: number) => v >= limit;
  const rowsOut: [string, number, string, ((v: number) => boolean)?][] = [
    ["pipeline_rows_per_s", result.pipeline_rows_per_s, `${ROWS} rows, ${pipelineRequests} provider requests`],
    [
      "pipeline_jobs_left",
      result.pipeline_jobs_left,
      "jobs not done when the pipeline part ended; target 0",
      atMost(0),
    ],
    [
      "baseline_rows_per_s",
      result.baseline_rows_per_s,
      result.baseline_extrapolated
        ? `measured on ${baselineDone} of the ${ROWS} rows, rate extrapolated`
        : `${ROWS} rows`,
    ],
    ["ratio", result.ratio, "reported, no target: the baseline is latency-bound, the pipeline index-bound (issue #9)"],
    ["queue_jobs_per_s", result.queue_jobs_per_s, "claim+complete, 4 workers; target >= 10,000", atLeast(10_000)],
    ["latency_p50_ms", result.latency_p50_ms, "UPDATE commit -> searchable, webhook; target <= 2,000", atMost(2_000)],
    ["latency_p95_ms", result.latency_p95_ms, "target <= 5,000", atMost(5_000)],
    ["unchanged_resync_provider_calls", result.unchanged_resync_provider_calls, "target 0", atMost(0)],
    [
      "peak_rss_mb",
      result.peak_rss_mb,
      `Deno functions VmHWM, one invocation at batchSize 500 (DENO_V8_FLAGS=${V8_FLAGS || "none"}); target <= 200`,
      atMost(200),
    ],
    [
      "peak_rss_mb_4_parallel",
      result.peak_rss_mb_4_parallel,
      "same process serving the 4 parallel pipeline invocations",
    ],
  ];
  const marks = rowsOut.map(([k, v, , ok]) => {
    if (!ok) return "";
    if (Number.isFinite(v) && ok(v)) return "met";
    result.missed.push(k);
    return "MISSED";
  });
  mkdirSync(".bench", { recursive: true });
  writeFileSync(".bench/embeddings.json", JSON.stringify(result, null, 2) + "\n");
  const w0 = Math.max(...rowsOut.map((r) => r[0].length));
  const w1 = Math.max(...rowsOut.map((r) => String(r[1]).length));
  console.log(
    `embedding sync benchmark (fake OpenAI +${PROVIDER_LATENCY_MS} ms/request, real PostgreSQL, ` +
      `${result.cpus} CPUs, load average ${result.load_avg_1m_at_end} at the end)`,
  );
  console.log(`${"metric".padEnd(w0)}  ${"value".padStart(w1)}  ${"target".padEnd(6)}  note`);
  rowsOut.forEach(([k, v, n], i) =>
    console.log(`${k.padEnd(w0)}  ${String(v).padStart(w1)}  ${marks[i].padEnd(6)}  ${n}`)
  );
  for (const p of problems) console.log(`problem: ${p}`);
  if (result.missed.length) console.log(`MISSED: ${result.missed.join(", ")}`);
  console.log(`written to .bench/embeddings.json`);
} finally {
  await stack?.stop();
  rmSync(stackDir, { recursive: true, force: true });
  await fake.stop();
  await sql.end({ timeout: 5 });
  await admin.unsafe(`drop database if exists ${dbName} with (force)`);
  await admin.end();
}
