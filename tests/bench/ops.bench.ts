// npm run bench:ops -- how long health takes on a project with data, on the test bed's PostgreSQL.
// Seeds BENCH_OPS_OBJECTS Storage objects with their files_queue rows (default 300,000; 1% drift),
// BENCH_OPS_DOCS legal_documents (default 20,000) and as many completed embedding jobs, then times
// runHealthChecks (the function's, doctor's and the dashboard's checks) BENCH_ROUNDS times (default 5),
// the per-minute metrics sample and the hourly alert check. Prints a table, writes .bench/ops.json.
import { mkdirSync, writeFileSync } from "node:fs";
import postgres from "postgres";
import { migrate } from "../../packages/local-stack/migrate.ts";
import { CHECKS, runHealthChecks } from "../../packages/ops/checks.ts";
import { SHIPPED_MIGRATIONS } from "../../packages/ops/migrations.generated.ts";
import { databaseUrl, ensureTestServer } from "../../packages/testkit/testbed.ts";

const OBJECTS = Number(process.env.BENCH_OPS_OBJECTS ?? 300_000);
const DOCS = Number(process.env.BENCH_OPS_DOCS ?? 20_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const BUCKET = "agentbasic-legifrance-raw";
const log = (m: string) => console.error(`[bench] ${m}`);

const adminUrl = await ensureTestServer(log);
const dbName = `bench_ops_${Date.now().toString(36)}`;
const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
await admin.unsafe(`create database ${dbName}`);
const url = databaseUrl(adminUrl, dbName);
const sql = postgres(url, { max: 4, onnotice: () => {} });
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

try {
  await migrate(url);
  log(`seeding ${OBJECTS} objects, ${DOCS} documents`);
  const t0 = performance.now();
  await sql.begin(async (tx) => {
    // Seeded as a restore would: triggers off, then every table written directly.
    await tx`set local session_replication_role = replica`;
    await tx`insert into storage.objects (bucket_id, name, metadata)
             select ${BUCKET}, 'codes/' || g || '.json', jsonb_build_object('size', 1000 + g % 500) from generate_series(1, ${OBJECTS}) g`;
    await tx`insert into files_queue (file_path, bucket_id, file_size, status, processed)
             select 'codes/' || g || '.json', ${BUCKET}, 1000 + g % 500, case when g % 10 = 0 then 'pending' else 'completed' end, g % 10 <> 0
               from generate_series(1, ${OBJECTS}) g where g % 100 <> 0`;
    await tx`insert into legal_documents (id, category, doc_type, title, content, file_path)
             select 'LEGIARTI' || lpad(g::text, 12, '0'), 'codes', 'article', 'Article ' || g, 'Texte de l''article ' || g, 'codes/' || g || '.json'
               from generate_series(1, ${DOCS}) g`;
    await tx`insert into embedding_sync_queue (source_table, source_id, action, status, processed_at)
             select 'legal_documents', 'LEGIARTI' || lpad(g::text, 12, '0'), 'INSERT', 'completed', now() - make_interval(secs => g)
               from generate_series(1, ${DOCS}) g`;
  });
  await sql`analyze`;
  log(`seeded in ${Math.round(performance.now() - t0)} ms`);
  await sql`select set_environment_label('bench')`;

  const totals: number[] = [];
  const perCheck = new Map<string, number[]>();
  for (let i = 0; i < ROUNDS; i++) {
    const r = await runHealthChecks(sql, {
      expectedMigrations: SHIPPED_MIGRATIONS,
      embeddingEnv: { EMBEDDING_PROVIDER: "offline" },
    });
    totals.push(r.duration_ms ?? 0);
    for (const c of r.checks) perCheck.set(c.name, [...(perCheck.get(c.name) ?? []), c.ms ?? 0]);
  }
  const timed = async (q: () => Promise<unknown>) => {
    const xs: number[] = [];
    for (let i = 0; i < Math.min(ROUNDS, 3); i++) {
      const t = performance.now();
      await q();
      xs.push(performance.now() - t);
    }
    return median(xs);
  };
  const sample = await timed(() => sql`select private.ops_sample_metrics()`);
  const alerts = await timed(() => sql`select count(*) from private.ops_check_alerts()`);

  const rows: Array<[string, number]> = [
    ["health, whole report (parallel checks)", median(totals)],
    ...CHECKS.map(([name]) => [`  check ${name}`, median(perCheck.get(name) ?? [0])] as [string, number]),
    ["ops_sample_metrics() (every minute)", sample],
    ["ops_check_alerts() (hourly)", alerts],
  ];
  console.log(
    `\nops benchmark: ${OBJECTS.toLocaleString("en")} objects, ${
      DOCS.toLocaleString("en")
    } documents, median of ${ROUNDS}\n`,
  );
  console.log(`${"what".padEnd(42)} ${"ms".padStart(9)}`);
  for (const [what, ms] of rows) console.log(`${what.padEnd(42)} ${ms.toFixed(1).padStart(9)}`);
  mkdirSync(".bench", { recursive: true });
  writeFileSync(
    ".bench/ops.json",
    JSON.stringify(
      { objects: OBJECTS, documents: DOCS, rounds: ROUNDS, median_ms: Object.fromEntries(rows) },
      null,
      2,
    ) + "\n",
  );
  console.log("\nwrote .bench/ops.json");
} finally {
  await sql.end({ timeout: 2 });
  await admin.unsafe(`drop database if exists ${dbName} with (force)`);
  await admin.end();
}
