// npm run bench:kb -- promoting a knowledge base, on the real PostgreSQL of the test bed.
// Writes .bench/kb.json and prints a table.
//
//   push     `kb push --mode replace` of 20,000 rows with their chunks (1536-d) into an empty target
//            (the whole command: process start, plan, backup, COPY, upserts, log, commit).
//   pgdump   `pg_dump --data-only` of the same two tables piped into `psql` against a second empty
//            target, in the same run. Both targets keep documentation_embeddings' HNSW index during
//            the load (neither builds it afterwards), and both fire the targets' sync triggers.
//   queue    the push target's embedding queue processed with the fake OpenAI server: provider calls
//            (target 0, the chunks travelled with their content hash and model).
//   repush   the same push again into the target that now holds the rows: rows written (target 0).
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { OpenAIEmbeddingProvider } from "../../packages/embeddings/openai.ts";
import { processEmbeddingQueue } from "../../packages/embeddings/pipeline.ts";
import { migrate } from "../../packages/local-stack/migrate.ts";
import { startFakeOpenAI } from "../../packages/testkit/fake-openai.ts";
import { databaseUrl, ensureTestServer } from "../../packages/testkit/testbed.ts";

const ROWS = Number(process.env.BENCH_ROWS ?? 20_000);
const log = (m: string) => console.error(`[bench] ${m}`);
const words =
  ("le la les un une des du de article code civil pénal travail commerce contrat bail salarié employeur demande délai " +
    "jours mois tribunal juge appel cour cassation décision recours procédure acte notarié propriété vente achat prix paiement")
    .split(" ");

const adminUrl = await ensureTestServer(log);
const stamp = Date.now().toString(36);
const names = {
  tpl: `bench_kb_tpl_${stamp}`,
  src: `bench_kb_src_${stamp}`,
  tgt: `bench_kb_tgt_${stamp}`,
  dump: `bench_kb_dump_${stamp}`,
};
const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
const backupDir = mkdtempSync(join(tmpdir(), "bench-kb-"));
const clients: postgres.Sql[] = [];
const connect = (db: string) => {
  const c = postgres(databaseUrl(adminUrl, db), { max: 4, onnotice: () => {} });
  clients.push(c);
  return c;
};
const fake = await startFakeOpenAI();
const provider = new OpenAIEmbeddingProvider({
  apiKey: fake.apiKey,
  baseURL: fake.url,
  model: "text-embedding-3-small",
  dimensions: 1536,
  timeoutMs: 60_000,
});
const drain = (sql: postgres.Sql) =>
  processEmbeddingQueue(sql, provider, {
    workerId: `bench-kb-${Math.random()}`,
    batchSize: 500,
    budgetMs: 600_000,
    leaseSeconds: 300,
    concurrency: 2,
    maxAttempts: 3,
  });

function kb(args: string[]): { s: number; out: string } {
  const t0 = performance.now();
  const r = spawnSync("node_modules/.bin/tsx", ["scripts/kb.ts", ...args], {
    encoding: "utf8",
    maxBuffer: 64 << 20,
    env: {
      ...process.env,
      SRC_DB_URL: databaseUrl(adminUrl, names.src),
      TGT_DB_URL: databaseUrl(adminUrl, names.tgt),
      KB_BACKUP_DIR: backupDir,
    },
  });
  const s = (performance.now() - t0) / 1000;
  if (r.status !== 0) throw new Error(`kb ${args.join(" ")} failed (${r.status}): ${r.stderr}`);
  // The command's own phases (comparison, each COPY), from its progress lines.
  for (const l of r.stderr.split("\n")) if (/^compared |done in /.test(l)) log(`  kb: ${l}`);
  return { s, out: r.stdout };
}

try {
  log(`migrating a template (${names.tpl})`);
  await admin.unsafe(`create database ${names.tpl}`);
  const tplUrl = databaseUrl(adminUrl, names.tpl);
  await migrate(tplUrl);
  const tpl = postgres(tplUrl, { max: 1, onnotice: () => {} });
  await tpl.unsafe(`
    create table kb_bench_docs (id int primary key, title text not null, body text not null);
    select register_embedding_source('kb_bench_docs', content_columns => array['title', 'body']);
    update cron.job set active = false;`);
  await tpl.end();
  for (const db of [names.src, names.tgt, names.dump]) {
    await admin.unsafe(`create database ${db} template ${names.tpl}`);
    await admin.unsafe(`alter database ${db} set search_path = "$user", public, extensions`);
  }
  const src = connect(names.src);
  const tgt = connect(names.tgt);
  const dump = connect(names.dump);

  log(`source: ${ROWS} rows, embedded through the pipeline (fake OpenAI); the scratch source has no HNSW index`);
  await src`drop index private.documentation_embeddings_s0_embedding_hnsw`;
  const body = Array.from({ length: 5000 }, (_, i) => words[(i * 7 + (i >> 3)) % words.length]).join(" ");
  await src`insert into kb_bench_docs select g, 'Document ' || g, 'Texte ' || g || ' ' || substr(${body}, 1 + (g * 13) % 4000, 400)
            from generate_series(1, ${ROWS}) g`;
  const embedded = await drain(src);
  log(`source embedded: ${embedded.embedded} chunks in ${(embedded.ms / 1000).toFixed(1)} s`);

  // Each timed load starts from a checkpoint, so neither pays for flushing what came before it.
  await admin`checkpoint`;
  log("push into the empty target (HNSW index in place)");
  const push = kb(["push", "--from", "src", "--to", "tgt", "--mode", "replace", "--tables", "kb_bench_docs", "--json"]);
  const pushed = JSON.parse(push.out);
  log(`push: ${push.s.toFixed(1)} s (${pushed.totals.inserted} rows inserted)`);

  await admin`checkpoint`;
  log("pg_dump --data-only | psql into the second empty target (HNSW index in place)");
  const t0 = performance.now();
  // documentation_embeddings is partitioned: its rows are dumped from its partitions and loaded through the parent.
  execFileSync("bash", [
    "-o",
    "pipefail",
    "-c",
    `pg_dump --data-only --load-via-partition-root --table=public.kb_bench_docs --table='private.documentation_embeddings_s*' -d "$SRC" | psql -q -v ON_ERROR_STOP=1 -d "$DST" > /dev/null`,
  ], {
    env: { ...process.env, SRC: databaseUrl(adminUrl, names.src), DST: databaseUrl(adminUrl, names.dump) },
    stdio: ["ignore", "ignore", "inherit"],
  });
  const pgdumpS = (performance.now() - t0) / 1000;
  const [dumped] = await dump<{ n: number }[]>`select count(*)::int as n from documentation_embeddings`;
  log(`pg_dump | psql: ${pgdumpS.toFixed(1)} s (${dumped.n} chunks)`);

  const before = fake.stats.requests;
  const q = await drain(tgt);
  const providerCalls = fake.stats.requests - before;
  log(`target queue: ${q.claimed} jobs, ${q.unchanged} chunks unchanged, ${providerCalls} provider calls`);

  const repush = kb([
    "push",
    "--from",
    "src",
    "--to",
    "tgt",
    "--mode",
    "replace",
    "--tables",
    "kb_bench_docs",
    "--json",
  ]);
  const rep = JSON.parse(repush.out);
  const written = rep.totals.inserted + rep.totals.updated + rep.totals.deleted;

  const result = {
    rows: ROWS,
    chunks: pushed.applied.documentation_embeddings?.inserted ?? 0,
    dimensions: 1536,
    push_s: round(push.s),
    pgdump_s: round(pgdumpS),
    push_vs_pgdump: round(push.s / pgdumpS),
    repush_unchanged_s: round(repush.s),
    repush_rows_written: written,
    provider_calls_after_push: providerCalls,
    target_queue_jobs: q.claimed,
    notes: "both targets keep the HNSW index during the load; neither builds it after loading. " +
      "push_s and repush_unchanged_s are whole `kb push` commands (process start included).",
  };
  mkdirSync(".bench", { recursive: true });
  writeFileSync(".bench/kb.json", JSON.stringify(result, null, 2) + "\n");
  const rowsOut: [string, string, string][] = [
    ["push_s", result.push_s.toFixed(2), `${ROWS} rows + ${result.chunks} chunks, --mode replace, empty target`],
    ["pgdump_s", result.pgdump_s.toFixed(2), "pg_dump --data-only | psql, same tables, second empty target"],
    ["push_vs_pgdump", result.push_vs_pgdump.toFixed(2), "target <= 1.5"],
    ["repush_unchanged_s", result.repush_unchanged_s.toFixed(2), "same push, target already holds the rows"],
    ["repush_rows_written", String(written), "target 0"],
    ["provider_calls_after_push", String(providerCalls), `target 0 (${q.claimed} queue jobs processed)`],
  ];
  const w0 = Math.max(...rowsOut.map((r) => r[0].length));
  const w1 = Math.max(...rowsOut.map((r) => r[1].length));
  console.log(`${"metric".padEnd(w0)}  ${"value".padStart(w1)}  note`);
  for (const [k, v, n] of rowsOut) console.log(`${k.padEnd(w0)}  ${v.padStart(w1)}  ${n}`);
  console.log("HNSW: both targets pay documentation_embeddings' HNSW index row by row (no index build after loading).");
  console.log("written to .bench/kb.json");
} finally {
  await Promise.all(clients.map((c) => c.end({ timeout: 5 })));
  for (const db of Object.values(names)) {
    await admin.unsafe(`drop database if exists ${db} with (force)`).catch(() => {});
  }
  await admin.end();
  await fake.stop();
  rmSync(backupDir, { recursive: true, force: true });
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}
