// npm run bench:resync -- resync of unchanged rows at scale, on the real PostgreSQL of the test bed.
// Writes .bench/resync.json and prints a table.
//
// BENCH_RESYNC_ROWS (default 100,000) rows with a metadata column are embedded through the real SQL
// path (resync force -> claim_embedding_jobs -> apply_embedding_results), then:
//   unchanged  resync_embedding_sources(null) on unchanged data, 3 times: jobs enqueued (target 0), seconds;
//   changed    the same after 100 rows changed behind the triggers' back (target 100);
//   forced     resync_embedding_sources(null, true): every row, today's behaviour for a model change.
// In this scratch database the HNSW index is dropped and the vector column shrunk to 8 dimensions:
// resync never reads vectors, and filling 100,000 HNSW entries would take minutes for nothing.
import { mkdirSync, writeFileSync } from "node:fs";
import { availableParallelism, loadavg } from "node:os";
import postgres from "postgres";
import { migrate } from "../../packages/local-stack/migrate.ts";
import { databaseUrl, ensureTestServer } from "../../packages/testkit/testbed.ts";

const ROWS = Number(process.env.BENCH_RESYNC_ROWS ?? 100_000);
const CHANGED = 100;
const log = (m: string) => console.error(`[bench] ${m}`);

const adminUrl = await ensureTestServer(log);
const dbName = `bench_resync_${Date.now().toString(36)}`;
const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
await admin.unsafe(`create database ${dbName}`);
const sql = postgres(databaseUrl(adminUrl, dbName), { max: 2, onnotice: () => {} });
const seconds = (t0: number) => Number(((performance.now() - t0) / 1000).toFixed(2));

async function resync(force = false): Promise<{ enqueued: number; deletes: number; s: number }> {
  const t0 = performance.now();
  const rows = await sql<{ enqueued: string; deletes: string }[]>`
    select enqueued, deletes from resync_embedding_sources(null, ${force}) where source_table = 'bench_rows'`;
  return { enqueued: Number(rows[0].enqueued), deletes: Number(rows[0].deletes), s: seconds(t0) };
}

async function drain(): Promise<void> {
  for (;;) {
    const [r] = await sql<{ n: number }[]>`
      with jobs as (select * from claim_embedding_jobs('bench', 5000, 600))
      select coalesce((select count(*)::int from apply_embedding_results('bench', 'bench-model',
        (select array_agg(id) from jobs),
        (select jsonb_agg(jsonb_build_object('j', id, 'i', 0, 'c', content, 'h', content_hash, 't', 10,
                                             'e', '[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8]')) from jobs))), 0) as n`;
    if (r.n === 0) return;
  }
}

try {
  log(`database ${dbName}: migrating`);
  await migrate(databaseUrl(adminUrl, dbName));
  await sql`update cron.job set active = false`;
  await sql`alter table embedding_sync_queue disable trigger embedding_sync_queue_webhook`;
  await sql`drop index private.documentation_embeddings_s0_embedding_hnsw`;
  await sql`alter table documentation_embeddings alter column embedding type extensions.vector(8)`;
  await sql`create table bench_rows (id int primary key, title text not null, body text not null, category text)`;
  await sql`select register_embedding_source('bench_rows', content_columns => array['title', 'body'],
                                             metadata_columns => array['title', 'category'])`;
  await sql`alter table bench_rows disable trigger user`;
  await sql`insert into bench_rows select g, 'Article ' || g, 'Texte de l''article ' || g || ' : ' || md5(g::text) || ' ' || md5((g * 7)::text),
                                          'cat-' || (g % 20)
            from generate_series(1, ${ROWS}) g`;
  await sql`alter table bench_rows enable trigger user`;
  let t0 = performance.now();
  const initial = await resync(true);
  await drain();
  await sql`vacuum analyze bench_rows, embedding_sync_versions, embedding_sync_queue, documentation_embeddings`;
  log(`${initial.enqueued} rows embedded (SQL path) in ${seconds(t0)} s`);

  const unchanged = [await resync(), await resync(), await resync()];
  log(`unchanged: ${unchanged.map((u) => `${u.enqueued} jobs in ${u.s} s`).join(", ")}`);

  await sql`alter table bench_rows disable trigger user`;
  await sql`update bench_rows set body = body || ' (modifié)' where id % ${Math.floor(ROWS / CHANGED)} = 0`;
  await sql`alter table bench_rows enable trigger user`;
  const changed = await resync();
  log(`changed: ${changed.enqueued} jobs in ${changed.s} s`);
  await drain();

  t0 = performance.now();
  const forced = await resync(true);
  log(`forced: ${forced.enqueued} jobs in ${forced.s} s`);

  const best = Math.min(...unchanged.map((u) => u.s));
  const result = {
    at: new Date().toISOString(),
    cpus: availableParallelism(),
    load_avg_1m_at_end: Number(loadavg()[0].toFixed(2)),
    rows: ROWS,
    unchanged_enqueued: unchanged.map((u) => u.enqueued),
    unchanged_seconds: unchanged.map((u) => u.s),
    changed_rows: CHANGED,
    changed_enqueued: changed.enqueued,
    changed_seconds: changed.s,
    forced_enqueued: forced.enqueued,
    forced_seconds: forced.s,
  };
  mkdirSync(".bench", { recursive: true });
  writeFileSync(".bench/resync.json", JSON.stringify(result, null, 2) + "\n");
  const rowsOut: [string, string, string][] = [
    [
      "unchanged_enqueued",
      unchanged.map((u) => u.enqueued).join(" / "),
      `resync(null) of ${ROWS} unchanged rows, 3 runs; target 0`,
    ],
    ["unchanged_seconds", unchanged.map((u) => u.s).join(" / "), `best ${best} s`],
    ["changed_enqueued", String(changed.enqueued), `${CHANGED} rows changed behind the triggers; target ${CHANGED}`],
    ["changed_seconds", String(changed.s), ""],
    ["forced_enqueued", String(forced.enqueued), "force => true (a model change): every row, as before"],
    ["forced_seconds", String(forced.s), ""],
  ];
  const w0 = Math.max(...rowsOut.map((r) => r[0].length));
  const w1 = Math.max(...rowsOut.map((r) => r[1].length));
  console.log(
    `resync benchmark (${ROWS} rows, real PostgreSQL, ${result.cpus} CPUs, load average ${result.load_avg_1m_at_end} at the end)`,
  );
  console.log(`${"metric".padEnd(w0)}  ${"value".padStart(w1)}  note`);
  for (const [k, v, n] of rowsOut) console.log(`${k.padEnd(w0)}  ${v.padStart(w1)}  ${n}`);
  console.log(`written to .bench/resync.json`);
  if (unchanged.some((u) => u.enqueued !== 0) || changed.enqueued !== CHANGED) process.exitCode = 1;
} finally {
  await sql.end({ timeout: 5 });
  await admin.unsafe(`drop database if exists ${dbName} with (force)`);
  await admin.end();
}
