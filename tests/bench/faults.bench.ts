// npm run bench:faults -- faults injected in the middle of real work, then the invariants (issue: faults
// survived). Everything runs on a private PostgreSQL 15 cluster with durable settings (fsync,
// synchronous_commit, full_page_writes on), with pg_cron, pgvector and our migrations, and the local
// stack (gateway, pg_net sender, Deno functions) on it; work is woken as a deployment wakes it
// (webhooks, continuations, pg_cron). Processes are killed by pid only. Writes .bench/faults.json.
//
//   pg_kill_drain       postmaster SIGKILL during a live drain of FAULTS_DRAIN_ROWS rows (rows edited too)
//   pg_kill_bulk        postmaster SIGKILL while a bulk resync fills a loading segment
//   pg_kill_build       postmaster SIGKILL during a segment's HNSW index build
//   terminate_backends  pg_terminate_backend of every client connection, 5 times within a minute, mid-drain
//   provider_down       provider refused, then timing out, then 500s (FAULTS_PROVIDER_DOWN_S), mid-drain
//   xmin_pinned         a session idle in transaction (xmin pinned, FAULTS_XMIN_PIN_S) during a drain
//   files_rebuild       postmaster SIGKILL while repopulate-files-queue rebuilds files_queue from
//                       FAULTS_FILES_OBJECTS (100,000) storage.objects rows
//   pg_kill_merge       postmaster SIGKILL inside a segment merge (copy, HNSW build or swap), rows edited
//   pg_kill_kb_push     postmaster SIGKILL inside `npm run kb -- push`'s transaction (FAULTS_KB_ROWS articles)
//   pg_kill_massive     postmaster SIGKILL during a MASSIVE collection against the PISTE stand-in
//   stack_kill_drain    `npm start` on PGlite, its whole process group SIGKILLed mid-drain and mid-commits
//   stack_kill_upload   the same, during a burst of Storage uploads
//
// Each scenario runs FAULTS_RUNS times (default 3) with its fault at a random point of its window.
import { createHash, randomBytes } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import {
  createSource,
  embeddingInvariants,
  type FaultBed,
  filesDrift,
  type Invariants,
  percentile,
  pick,
  progress,
  recoveryAfter,
  sigkillGroup,
  sleep,
  type StackProcess,
  startFaultBed,
  startStackProcess,
  stopStackProcess,
  until,
  wastedInputs,
} from "../../packages/testkit/faults.ts";
import { startPisteStandIn } from "../../packages/testkit/legifrance-stand-in.ts";
import { migrate } from "../../packages/local-stack/migrate.ts";
import { runHealthChecks } from "../../packages/ops/checks.ts";
import { SHIPPED_MIGRATIONS } from "../../packages/ops/migrations.generated.ts";
import { type KbRun, runKb } from "../helpers/kb.ts";

const RUNS = Number(process.env.FAULTS_RUNS ?? 3);
const DRAIN_ROWS = Number(process.env.FAULTS_DRAIN_ROWS ?? 1_500);
const BULK_ROWS = Number(process.env.FAULTS_BULK_ROWS ?? 2_000);
const SEGMENT_ROWS = Number(process.env.FAULTS_SEGMENT_ROWS ?? 1_000);
const PROVIDER_DOWN_S = Number(process.env.FAULTS_PROVIDER_DOWN_S ?? 30);
const XMIN_PIN_S = Number(process.env.FAULTS_XMIN_PIN_S ?? 60);
// Enough rows that the drain outlasts the windows before, during and after the pin (about 170/s here).
const XMIN_ROWS = Number(process.env.FAULTS_XMIN_ROWS ?? 40_000);
const TERMINATE_WINDOW_S = Number(process.env.FAULTS_TERMINATE_WINDOW_S ?? 30);
const FILES_OBJECTS = Number(process.env.FAULTS_FILES_OBJECTS ?? 30_000);
const KB_ROWS = Number(process.env.FAULTS_KB_ROWS ?? 20_000);
const MASSIVE_PER_FOND = Number(process.env.FAULTS_MASSIVE_PER_FOND ?? 40);
const STACK_DRAIN_ROWS = Number(process.env.FAULTS_STACK_DRAIN_ROWS ?? 500);
const RECOVERY_TARGET_S = 120;
// The whole run ends by itself: a run not started within this budget is reported as skipped.
const BUDGET_S = Number(process.env.FAULTS_BUDGET_S ?? 1500);
const started = Date.now();
const log = (m: string) => console.error(`[faults ${Math.round((Date.now() - started) / 1000)}s] ${m}`);

interface RunResult {
  scenario: string;
  run: number;
  fault_at: string; // where in its window the fault landed
  passed: boolean;
  invariants: Invariants;
  files_drift?: number; // files_queue vs storage.objects, both directions
  recovery_s: number | null; // server accepting again -> work resumed and no pre-fault claim held
  recovered: boolean; // false when recovery was measured and never came within its deadline
  restart_s: number | null; // SIGKILL -> server accepting (crash recovery)
  wasted_provider_calls: number;
  in_flight_at_fault: number; // inputs claimed by workers when the fault hit (the allowed waste)
  problems?: string[]; // scenario-specific invariants broken (any fails the run)
  notes?: string;
}

const results: RunResult[] = [];
const skipped: string[] = [];
const extra: Record<string, unknown> = {};
let tableSeq = 0;

async function heldNow(bed: FaultBed): Promise<number> {
  const [r] = await bed.sql<
    { n: number }[]
  >`select count(*)::int as n from embedding_sync_queue where status = 'processing'`;
  return r.n;
}

async function drainedAndChecked(
  bed: FaultBed,
  table: string,
  deadlineMs: number,
  sealed = false,
): Promise<Invariants> {
  await until(`${table} drained`, deadlineMs, async () => {
    const p = await progress(bed.sql, table);
    if (p.left > 0) return false;
    if (!sealed) return true;
    const [r] = await bed.sql<
      { n: number }[]
    >`select count(*)::int as n from embedding_segments where state <> 'sealed'`;
    return r.n === 0;
  }, 500).catch((e) => log(String(e)));
  return await embeddingInvariants(bed.sql, [table]);
}

async function restartServer(bed: FaultBed): Promise<{ faultAt: Date; restartS: number; upAt: number }> {
  const faultAt = new Date();
  const t0 = Date.now();
  await bed.cluster.sigkill();
  await bed.cluster.start();
  return { faultAt, restartS: (Date.now() - t0) / 1000, upAt: Date.now() };
}

function record(r: Omit<RunResult, "passed" | "recovered"> & { measuresRecovery?: boolean }) {
  const { measuresRecovery = true, ...rest } = r;
  const inv = r.invariants;
  const recovered = !measuresRecovery || r.recovery_s !== null;
  const passed = recovered && Object.values(inv).every((v) => v === 0) && !r.files_drift && !r.problems?.length &&
    (r.recovery_s === null || r.recovery_s <= RECOVERY_TARGET_S) &&
    r.wasted_provider_calls <= Math.max(r.in_flight_at_fault, 0);
  results.push({ ...rest, recovered, passed });
  log(
    `${r.scenario} #${r.run} ${passed ? "PASS" : "FAIL"} fault at ${r.fault_at}; recovery ${
      r.recovery_s ?? (recovered ? "-" : "NONE within its deadline")
    } s; ` +
      `restart ${r.restart_s ?? "-"} s; wasted ${r.wasted_provider_calls}/${r.in_flight_at_fault}; ${
        JSON.stringify(inv)
      }` +
      `${r.problems?.length ? `; PROBLEMS: ${r.problems.join("; ")}` : ""}${r.notes ? `; ${r.notes}` : ""}`,
  );
}

// --- scenarios ---------------------------------------------------------------------------------------

async function pgKillDrain(bed: FaultBed, run: number) {
  const table = `drain_${++tableSeq}`;
  bed.fake.resetStats();
  await createSource(bed.sql, table, DRAIN_ROWS);
  const frac = pick(0.1, 0.8);
  await until("fault point", 600_000, async () => (await progress(bed.sql, table)).done >= frac * DRAIN_ROWS, 50);
  // Edits racing the drain: after the restart each row must hold its newest content.
  await bed.sql.unsafe(`update ${table} set body = body || ' (modifié)' where id % 53 = 0`);
  const held = await heldNow(bed);
  const { faultAt, restartS, upAt } = await restartServer(bed);
  const recovery = await recoveryAfter(bed.sql, table, faultAt, upAt, 600_000).catch(() => null);
  const inv = await drainedAndChecked(bed, table, 900_000);
  record({
    scenario: "pg_kill_drain",
    run,
    fault_at: `${Math.round(frac * 100)}% drained`,
    invariants: inv,
    recovery_s: recovery,
    restart_s: restartS,
    wasted_provider_calls: wastedInputs(bed.fake),
    in_flight_at_fault: held,
  });
}

async function pgKillBulk(bed: FaultBed, run: number) {
  const table = `bulk_${++tableSeq}`;
  bed.fake.resetStats();
  await bed
    .sql`update embedding_sync_settings set bulk_segment_min_rows = ${SEGMENT_ROWS}, bulk_segment_max_rows = ${SEGMENT_ROWS}`;
  await createSource(bed.sql, table, BULK_ROWS, { register: false });
  await bed.sql`select register_embedding_source(${table}, array['body'])`;
  await bed.sql`select * from resync_embedding_sources(${table})`;
  await bed.sql`call private.maintain_embedding_segments(false)`;
  const frac = pick(0.05, 0.8);
  await until("fault point", 600_000, async () => {
    const [r] = await bed.sql.unsafe<{ n: number }[]>(
      `select count(*)::int as n from documentation_embeddings where source_table = '${table}' and segment > 0`,
    );
    return r.n >= frac * BULK_ROWS;
  }, 50);
  const held = await heldNow(bed);
  const { faultAt, restartS, upAt } = await restartServer(bed);
  const recovery = await recoveryAfter(bed.sql, table, faultAt, upAt, 600_000).catch(() => null);
  const inv = await drainedAndChecked(bed, table, 900_000, true);
  record({
    scenario: "pg_kill_bulk",
    run,
    fault_at: `${Math.round(frac * 100)}% in loading segments`,
    invariants: inv,
    recovery_s: recovery,
    restart_s: restartS,
    wasted_provider_calls: wastedInputs(bed.fake),
    in_flight_at_fault: held,
  });
}

async function pgKillBuild(bed: FaultBed, run: number) {
  const table = `build_${++tableSeq}`;
  bed.fake.resetStats();
  // The segment is filled with its build held back (the build job paused), then built by hand: the
  // kill lands inside CREATE INDEX, at a random point of the build's measured length.
  await bed.sql`update cron.job set active = false where jobname = 'embedding-segments-build'`;
  await bed
    .sql`update embedding_sync_settings set bulk_segment_min_rows = ${SEGMENT_ROWS}, bulk_segment_max_rows = ${SEGMENT_ROWS}`;
  await createSource(bed.sql, table, SEGMENT_ROWS, { register: false });
  await bed.sql`select register_embedding_source(${table}, array['body'])`;
  await bed.sql`select * from resync_embedding_sources(${table})`;
  await bed.sql`call private.maintain_embedding_segments(false)`;
  await until("segment filled", 600_000, async () => (await progress(bed.sql, table)).left === 0, 250);
  await bed.sql`call private.maintain_embedding_segments(false)`; // closes it: state 'building'
  const [seg] = await bed.sql<
    { id: number }[]
  >`select id from embedding_segments where state = 'building' order by id desc limit 1`;
  // Its own client, not a reserved connection of the pool: postgres.js threw an uncaught TypeError
  // from a reserved connection whose server was killed under it, taking the whole run down.
  const b = postgres(bed.cluster.url, { max: 1, onnotice: () => {} });
  const building = b`call private.build_embedding_segments()`.catch(() => "killed");
  // The statement the procedure runs does not show in pg_stat_activity (the CALL does); the build's
  // progress view says when CREATE INDEX is under way.
  const inBuild = async () =>
    (await bed.sql<{ n: number }[]>`
    select count(*)::int as n from pg_stat_progress_create_index where relid = ${`private.documentation_embeddings_s${
      seg?.id ?? 0
    }`}::regclass`)[0].n > 0;
  await until("the index build to run", 60_000, inBuild, 10);
  const delay = Math.round(pick(0, 1500));
  await sleep(delay);
  const stillBuilding = await inBuild();
  const { restartS, upAt } = await restartServer(bed);
  await building;
  await b.end({ timeout: 1 }).catch(() => {});
  // The build job was paused only so that this run's CALL was the one killed: back on, pg_cron (every
  // minute) finds the segment still 'building' and builds it again.
  await until(
    "build job back on",
    60_000,
    async () => (await bed.sql`update cron.job set active = true where jobname = 'embedding-segments-build'`, true),
    500,
  );
  // pg_cron's build job (every minute) finds the segment still 'building' and builds it again.
  let recovery: number | null = null;
  try {
    await until("segment sealed after the restart", 300_000, async () => {
      const [r] = await bed.sql<{ state: string }[]>`select state from embedding_segments where id = ${seg?.id ?? -1}`;
      return r?.state === "sealed";
    }, 500);
    recovery = (Date.now() - upAt) / 1000;
  } catch (e) {
    log(String(e));
  }
  const inv = await embeddingInvariants(bed.sql, [table]);
  const [idx] = await bed.sql<{ indexed: boolean }[]>`select indexed from embedding_segment_status where segment = ${
    seg?.id ?? -1
  }`;
  record({
    scenario: "pg_kill_build",
    run,
    fault_at: `${delay} ms into CREATE INDEX${stillBuilding ? "" : " (build had ended)"}`,
    invariants: inv,
    recovery_s: recovery,
    restart_s: restartS,
    wasted_provider_calls: wastedInputs(bed.fake),
    in_flight_at_fault: 0,
    notes: idx?.indexed ? "segment indexed" : "segment NOT indexed",
  });
  if (!idx?.indexed) results[results.length - 1].passed = false;
}

/** Segments out of step with their tables: a row without its attached table or the reverse, a merge
 * left half-done ('merging'/'merged'), a sealed segment without a valid HNSW index. */
async function segmentFaults(bed: FaultBed): Promise<string[]> {
  const [r] = await bed.sql<{ no_table: number; no_row: number; unfinished: number; unindexed: number }[]>`
    select (select count(*)::int from embedding_segments g
             where to_regclass('private.documentation_embeddings_s' || g.id) is null) as no_table,
           (select count(*)::int from pg_inherits i join pg_class c on c.oid = i.inhrelid
             where i.inhparent = 'public.documentation_embeddings'::regclass and c.relname <> 'documentation_embeddings_s0'
               and not exists (select from embedding_segments g where 'documentation_embeddings_s' || g.id = c.relname)) as no_row,
           (select count(*)::int from embedding_segments where state in ('merging', 'merged')) as unfinished,
           (select count(*)::int from embedding_segment_status where state = 'sealed' and not indexed) as unindexed`;
  return [
    r.no_table && `${r.no_table} segments without their table`,
    r.no_row && `${r.no_row} attached tables without a segment`,
    r.unfinished && `${r.unfinished} segments left merging/merged`,
    r.unindexed && `${r.unindexed} sealed segments without a valid HNSW index`,
  ].filter((x): x is string => !!x);
}

async function pgKillMerge(bed: FaultBed, run: number) {
  const seq = ++tableSeq;
  const tables = [`merge_${seq}_a`, `merge_${seq}_b`];
  bed.fake.resetStats();
  // Two fresh segments, one per table, each filled and built with merges held back (and the build job
  // paused), then merged by hand with a merge factor of 2, so the kill lands inside this run's merge:
  // its copy, its HNSW build or its swap, at a random instant after the merging segment was attached.
  await bed.sql`update cron.job set active = false where jobname = 'embedding-segments-build'`;
  await bed
    .sql`update embedding_sync_settings set bulk_segment_min_rows = ${SEGMENT_ROWS}, bulk_segment_max_rows = ${SEGMENT_ROWS},
                  segment_merges_enabled = false, segment_merge_factor = 2`;
  for (const table of tables) {
    await createSource(bed.sql, table, SEGMENT_ROWS, { register: false });
    await bed.sql`select register_embedding_source(${table}, array['body'])`;
    await bed.sql`select * from resync_embedding_sources(${table})`;
    await until(`${table}'s segment filled and built`, 600_000, async () => {
      await bed.sql`call private.maintain_embedding_segments(false)`;
      if ((await progress(bed.sql, table)).left > 0) return false;
      await bed.sql`call private.maintain_embedding_segments(false)`;
      await bed.sql`call private.build_embedding_segments()`;
      const [r] = await bed.sql<
        { n: number }[]
      >`select count(*)::int as n from embedding_segments where state <> 'sealed'`;
      return r.n === 0;
    }, 500);
  }
  const sources = (await bed.sql<{ segment: number }[]>`
    select distinct segment from documentation_embeddings where source_table = any (${tables}) and segment > 0`).map((
    r,
  ) => r.segment);
  await bed.sql`update embedding_sync_settings set segment_merges_enabled = true`;
  const notices: string[] = [];
  const b = postgres(bed.cluster.url, { max: 1, onnotice: (n) => notices.push(n.message) });
  // A merge gives up (and returns) when it cannot attach its segment within lock_timeout: called again
  // until one attaches.
  let merging = false;
  let merge: Promise<unknown> = Promise.resolve();
  await until("the merge to attach its segment", 120_000, async () => {
    if (!merging) {
      merging = true;
      merge = b`call private.merge_embedding_segments()`.catch(() => "killed").finally(() => (merging = false));
    }
    return (await bed.sql<{ n: number }[]>`select count(*)::int as n from embedding_segments where state = 'merging'`)[
      0
    ].n > 0;
  }, 10).catch((e) => {
    throw new Error(`${e instanceof Error ? e.message : e}; the merge said: ${notices.slice(-3).join(" / ")}`);
  });
  // Edits racing the merge: moved to segment 0 by the live lane; each must end once, current. The two
  // tables' rows have the same text: each edit names its table, or the fake provider, which counts an
  // input it has seen before as wasted, would count the other table's edit of the same row.
  for (const table of tables) {
    await bed.sql.unsafe(`update ${table} set body = body || ' (modifié dans ${table})' where id % 97 = 0`);
  }
  const delay = Math.round(pick(0, 2000));
  await sleep(delay);
  const stillMerging = merging;
  const held = await heldNow(bed);
  const { faultAt, restartS, upAt } = await restartServer(bed);
  await merge;
  await b.end({ timeout: 1 }).catch(() => {});
  // Maintenance alone from here: the build job (pg_cron) merges again and drops what a merge emptied.
  await until(
    "build job back on",
    60_000,
    async () => (await bed.sql`update cron.job set active = true where jobname = 'embedding-segments-build'`, true),
    500,
  );
  let recovery: number | null = null;
  try {
    await until("the merge completed by maintenance", 300_000, async () => {
      const [r] = await bed.sql<{ n: number }[]>`
        select count(*)::int as n from embedding_segments where id = any (${sources}::int[]) or state in ('merging', 'merged')`;
      for (const table of tables) if ((await progress(bed.sql, table)).left > 0) return false;
      return r.n === 0;
    }, 500);
    recovery = (Date.now() - upAt) / 1000;
  } catch (e) {
    log(String(e));
  }
  void faultAt;
  const inv = await embeddingInvariants(bed.sql, tables);
  const seg = await segmentFaults(bed);
  record({
    scenario: "pg_kill_merge",
    run,
    fault_at: `${delay} ms into merging ${sources.join("+")}${stillMerging ? "" : " (merge had ended)"}`,
    invariants: inv,
    recovery_s: recovery,
    restart_s: restartS,
    wasted_provider_calls: wastedInputs(bed.fake),
    in_flight_at_fault: held,
    problems: seg,
  });
  await bed.sql`update embedding_sync_settings set segment_merge_factor = 4`;
}

// --- kb push ---------------------------------------------------------------------------------------
// The source is a second database on the same cluster (migrated like the target, with the platform's
// cron stand-in); the target is the cluster's database, under the running stack. Both die with the
// postmaster; only the target's outcome is judged.
const KB_TABLES = "kb_categories,kb_articles";
let kbBed: { src: postgres.Sql; env: Record<string, string>; backupDir: string; pushMs: number } | null = null;

async function kbChecksum(sql: postgres.Sql): Promise<string> {
  const [r] = await sql<{ c: string }[]>`
    select md5(coalesce((select string_agg(t::text, ',' order by id) from kb_categories t), '') || '|' ||
               coalesce((select string_agg(t::text, ',' order by id) from kb_articles t), '')) as c`;
  return r.c;
}

function kbPushTimed(bed: FaultBed, onLocked?: () => Promise<void>): { run: Promise<KbRun>; locked: Promise<number> } {
  const run = runKb(["push", "--from", "src", "--to", "tgt", "--tables", KB_TABLES], kbBed!.env);
  // The push's transaction on the target begins with an EXCLUSIVE lock on the tables it writes.
  const locked = until("the push's transaction on the target", 300_000, async () => {
    const [r] = await bed.sql<{ n: number }[]>`
      select count(*)::int as n from pg_locks l join pg_stat_activity a using (pid)
      where a.application_name = 'kb' and l.relation = 'public.kb_articles'::regclass and l.mode = 'ExclusiveLock' and l.granted`;
    return r.n > 0 ? Date.now() : false;
  }, 10).then(async (t) => {
    await onLocked?.();
    return t;
  });
  return { run, locked };
}

async function kbSetup(bed: FaultBed) {
  const admin = postgres(bed.cluster.adminUrl, { max: 1, onnotice: () => {} });
  await admin.unsafe("create database kb_source").finally(() => admin.end());
  const srcUrl = bed.cluster.adminUrl.replace(/\/postgres$/, "/kb_source");
  await migrate(srcUrl);
  const src = postgres(srcUrl, { max: 4, onnotice: () => {} });
  const schema = `
    create table kb_categories (id int primary key, name text not null);
    create table kb_articles (id int primary key, category_id int not null references kb_categories (id),
      title text not null, body text not null, updated_at timestamptz not null default '2026-01-01T00:00:00Z')`;
  await src.unsafe(schema);
  await bed.sql.unsafe(schema);
  await src`insert into kb_categories select g, 'catégorie ' || g from generate_series(1, 50) g`;
  await src.unsafe(`insert into kb_articles (id, category_id, title, body)
    select g, 1 + g % 50, 'Article ' || g, repeat('Le bailleur est tenu de délivrer au preneur la chose louée. ' || md5(g::text), 6)
    from generate_series(1, ${KB_ROWS}) g`);
  const backupDir = mkdtempSync(join(tmpdir(), "faults-kb-"));
  kbBed = {
    src,
    env: { SRC_DB_URL: srcUrl, TGT_DB_URL: bed.cluster.url, KB_BACKUP_DIR: backupDir },
    backupDir,
    pushMs: 0,
  };
  // A first, undisturbed push: the target starts as a copy, and its transaction's length is the window.
  const { run, locked } = kbPushTimed(bed);
  const r = await run;
  if (r.code !== 0) throw new Error(`first kb push failed (${r.code}): ${r.stderr.slice(-500)}`);
  kbBed.pushMs = Date.now() - (await locked);
  log(`kb: source of ${KB_ROWS} articles pushed once; the push's transaction lasted ${kbBed.pushMs} ms`);
}

async function kbTeardown() {
  if (!kbBed) return;
  await kbBed.src.end({ timeout: 1 }).catch(() => {});
  rmSync(kbBed.backupDir, { recursive: true, force: true });
}

async function pgKillKbPush(bed: FaultBed, run: number) {
  if (!kbBed) await kbSetup(bed);
  const { src, backupDir } = kbBed!;
  // Changes of every kind for a replace: updates, deletes, inserts.
  await src.unsafe(`update kb_articles set title = title || ' (${run})', updated_at = now() where id % 5 = ${run % 5}`);
  await src.unsafe(`delete from kb_articles where id % 97 = ${run}`);
  const [{ next }] = await src<{ next: number }[]>`select coalesce(max(id), 0) + 1 as next from kb_articles`;
  await src.unsafe(`insert into kb_articles (id, category_id, title, body)
    select g, 1 + g % 50, 'Nouvel article ' || g, repeat('Le preneur répond des dégradations. ' || md5(g::text), 6)
    from generate_series(${next}, ${next + Math.round(KB_ROWS / 20)}) g`);
  const want = await kbChecksum(src);
  const before = await kbChecksum(bed.sql);
  const [{ n: logsBefore }] = await bed.sql<{ n: number }[]>`select count(*)::int as n from kb_sync_log`;
  const delay = Math.round(pick(0, kbBed!.pushMs));
  let restart: Awaited<ReturnType<typeof restartServer>> | null = null;
  let pushEnded = false;
  let endedAtKill = false;
  const { run: pushing, locked } = kbPushTimed(bed, async () => {
    await sleep(delay);
    endedAtKill = pushEnded;
    restart = await restartServer(bed);
  });
  void pushing.then(() => (pushEnded = true));
  const first = await pushing;
  await locked;
  const { restartS, upAt } = restart!;
  const problems: string[] = [];
  const after = await kbChecksum(bed.sql);
  const [{ n: logsAfter }] = await bed.sql<{ n: number }[]>`select count(*)::int as n from kb_sync_log`;
  const outcome = after === want ? "in" : after === before ? "out" : "partial";
  if (outcome === "partial") problems.push("the target holds part of the push");
  if ((outcome === "in") !== (logsAfter === logsBefore + 1)) {
    problems.push(`push ${outcome} but kb_sync_log has ${logsAfter - logsBefore} new rows`);
  }
  if (first.code === 0 && outcome !== "in") problems.push("kb reported success but the push is not in");
  if (first.code !== 0 && outcome === "in" && !/uncertain|may have committed/i.test(first.stderr)) {
    problems.push(`kb said "${first.stderr.trim().split("\n").pop()}" but the push is in`);
  }
  const leftovers = readdirSync(backupDir).filter((f) => f.endsWith(".partial"));
  if (leftovers.length) problems.push(`${leftovers.length} partial backups left`);
  // The operator's next step: push again. It must complete the promotion.
  const second = await runKb(["push", "--from", "src", "--to", "tgt", "--tables", KB_TABLES], kbBed!.env);
  const recovery = second.code === 0 ? (Date.now() - upAt) / 1000 : null;
  if (second.code !== 0) problems.push(`second push exit ${second.code}: ${second.stderr.trim().split("\n").pop()}`);
  if ((await kbChecksum(bed.sql)) !== want) problems.push("after the second push the target differs from the source");
  const [{ n: logsEnd }] = await bed.sql<{ n: number }[]>`select count(*)::int as n from kb_sync_log`;
  if (logsEnd !== logsAfter + (outcome === "in" ? 0 : 1) && logsEnd !== logsAfter + 1) {
    problems.push("the second push was not recorded");
  }
  record({
    scenario: "pg_kill_kb_push",
    run,
    fault_at: `${delay} ms of ${kbBed!.pushMs} ms into the push's transaction${endedAtKill ? " (push had ended)" : ""}`,
    invariants: await embeddingInvariants(bed.sql, []),
    recovery_s: recovery,
    restart_s: restartS,
    wasted_provider_calls: 0,
    in_flight_at_fault: 0,
    problems,
    notes: `first push exit ${first.code}, wholly ${outcome}`,
  });
}

// --- the whole local stack SIGKILLed ------------------------------------------------------------------
// `npm start` on embedded PGlite (its own data dir, kept across runs), in its own process group, with
// the fake provider: the group is SIGKILLed, then `npm start` runs again on the same data dir.
let stackProc: StackProcess | null = null;
let stackDir: string | null = null;
let stackSql: postgres.Sql | null = null;

async function stackUp(bed: FaultBed): Promise<{ p: StackProcess; sql: postgres.Sql; startS: number }> {
  stackDir ??= mkdtempSync(join(tmpdir(), "faults-npm-start-"));
  const t0 = Date.now();
  const p = await startStackProcess(stackDir, {
    EMBEDDING_PROVIDER: "openai",
    OPENAI_API_KEY: bed.fake.apiKey,
    OPENAI_BASE_URL: bed.fake.url,
  });
  stackProc = p;
  stackSql = postgres(p.dbUrl, { max: 4, onnotice: () => {}, connect_timeout: 10 });
  return { p, sql: stackSql, startS: (Date.now() - t0) / 1000 };
}

async function stackKill(): Promise<Date> {
  const at = new Date();
  await sigkillGroup(stackProc!.pgid);
  await stackSql?.end({ timeout: 0 }).catch(() => {});
  stackSql = null;
  return at;
}

async function stackTeardown() {
  await stackSql?.end({ timeout: 1 }).catch(() => {});
  if (stackProc) await stopStackProcess(stackProc).catch(() => {});
  if (stackDir) rmSync(stackDir, { recursive: true, force: true });
}

/** Single-row commits on their own connection until stopped: the ids PGlite acknowledged. */
function ledgerWriter(url: string, table: string) {
  const acked: number[] = [];
  let stop = false;
  const w = postgres(url, { max: 1, onnotice: () => {}, connect_timeout: 5 });
  const done = (async () => {
    for (let i = 1; !stop; i++) {
      try {
        await w.unsafe(`insert into ${table} (id) values (${i})`);
        acked.push(i);
      } catch {
        return;
      }
    }
  })();
  return {
    acked,
    stop: async () => {
      stop = true;
      await Promise.race([done, sleep(2000)]);
      await w.end({ timeout: 0 }).catch(() => {});
    },
  };
}

async function lostLedger(sql: postgres.Sql, table: string, acked: number[]): Promise<number> {
  const [r] = await sql.unsafe<{ n: number }[]>(
    `select count(*)::int as n from unnest($1::int[]) a(id) where not exists (select from ${table} t where t.id = a.id)`,
    [acked],
  );
  return r.n;
}

async function stackKillDrain(bed: FaultBed, run: number) {
  const table = `sdrain_${++tableSeq}`;
  bed.fake.resetStats();
  let sql = stackSql ?? (await stackUp(bed)).sql;
  await sql.unsafe(`create table ${table}_ledger (id int primary key)`);
  await createSource(sql, table, STACK_DRAIN_ROWS);
  const frac = pick(0.1, 0.8);
  await until("fault point", 600_000, async () => (await progress(sql, table)).done >= frac * STACK_DRAIN_ROWS, 100);
  const ledger = ledgerWriter(stackProc!.dbUrl, `${table}_ledger`);
  await sleep(pick(200, 1500));
  const [{ n: doneBefore }] = await sql.unsafe<{ n: number }[]>(
    `select count(*)::int as n from embedding_sync_queue where source_table = '${table}' and status = 'completed'`,
  );
  const [{ held }] = await sql.unsafe<{ held: number }[]>(
    `select count(*)::int as held from embedding_sync_queue where source_table = '${table}' and status = 'processing'`,
  );
  const faultAt = await stackKill();
  await ledger.stop();
  const up = await stackUp(bed);
  sql = up.sql;
  const upAt = Date.now();
  const problems: string[] = [];
  const lost = await lostLedger(sql, `${table}_ledger`, ledger.acked);
  if (lost) problems.push(`${lost} of ${ledger.acked.length} acknowledged commits lost`);
  const [{ n: doneAfter }] = await sql.unsafe<{ n: number }[]>(
    `select count(*)::int as n from embedding_sync_queue where source_table = '${table}' and status = 'completed'`,
  );
  if (doneAfter < doneBefore) problems.push(`${doneBefore - doneAfter} completed jobs lost`);
  const recovery = await recoveryAfter(sql, table, faultAt, upAt, 600_000).catch(() => null);
  await until(`${table} drained`, 900_000, async () => (await progress(sql, table)).left === 0, 500).catch((e) =>
    log(String(e))
  );
  const inv = await embeddingInvariants(sql, [table]);
  record({
    scenario: "stack_kill_drain",
    run,
    fault_at: `${Math.round(frac * 100)}% drained, ${ledger.acked.length} ledger commits`,
    invariants: inv,
    recovery_s: recovery,
    restart_s: up.startS,
    wasted_provider_calls: wastedInputs(bed.fake),
    in_flight_at_fault: held,
    problems,
    notes: `${doneBefore} jobs completed at the kill`,
  });
}

async function stackKillUpload(bed: FaultBed, run: number) {
  let sql = stackSql ?? (await stackUp(bed)).sql;
  const bucket = `faults-upload-${run}`;
  await sql`insert into storage.buckets (id, name) values (${bucket}, ${bucket})`;
  const acked = new Map<string, string>(); // name -> md5 of what was sent
  let stop = false;
  let failed = 0;
  const uploader = async (w: number) => {
    for (let i = 0; !stop; i++) {
      const name = `burst/${w}/${i}.bin`;
      const bytes = randomBytes(4096 + Math.floor(Math.random() * 60_000));
      try {
        const r = await fetch(`${stackProc!.apiUrl}/storage/v1/object/${bucket}/${name}`, {
          method: "POST",
          body: bytes,
          headers: {
            apikey: stackProc!.secretKey,
            authorization: `Bearer ${stackProc!.secretKey}`,
            "content-type": "application/octet-stream",
          },
        });
        if (r.ok) acked.set(name, createHash("md5").update(bytes).digest("hex"));
        else failed++;
        await r.arrayBuffer().catch(() => {});
      } catch {
        failed++;
      }
    }
  };
  const burst = Promise.all(Array.from({ length: 8 }, (_, w) => uploader(w)));
  const delay = Math.round(pick(1000, 6000));
  await sleep(delay);
  const before = acked.size;
  const faultAt = await stackKill();
  stop = true;
  await burst;
  void faultAt;
  const up = await stackUp(bed);
  sql = up.sql;
  const upAt = Date.now();
  const root = join(stackDir!, "storage", bucket);
  const problems: string[] = [];
  // Every acknowledged upload: its row, and its file with the bytes sent.
  const rows = await sql<{ name: string; version: string; etag: string; size: number }[]>`
    select name, version, metadata->>'eTag' as etag, (metadata->>'size')::int as size from storage.objects where bucket_id = ${bucket}`;
  const byName = new Map(rows.map((r) => [r.name, r]));
  let missing = 0;
  let wrong = 0;
  for (const [name, md5] of acked) {
    const r = byName.get(name);
    if (!r) {
      missing++;
      continue;
    }
    const path = join(root, ...name.split("/"), r.version);
    const onDisk = existsSync(path) ? createHash("md5").update(readFileSync(path)).digest("hex") : null;
    if (r.etag !== `"${md5}"` || onDisk !== md5) wrong++;
  }
  if (missing) problems.push(`${missing} acknowledged uploads without a row`);
  if (wrong) problems.push(`${wrong} acknowledged uploads whose row or file differs from what was sent`);
  // Rows and files agree, both ways (files a crash left without a row are swept by the restarted stack).
  const rowsWithoutFile = () =>
    rows.filter((r) => {
      const path = join(root, ...r.name.split("/"), r.version);
      return !existsSync(path) || statSync(path).size !== r.size;
    }).length;
  const keep = new Set(rows.map((r) => join(root, ...r.name.split("/"), r.version)));
  const filesWithoutRow = () => listFiles(root).filter((f) => !keep.has(f)).length;
  let recovery: number | null = null;
  try {
    await until(
      "Storage files and storage.objects agree",
      120_000,
      () => Promise.resolve(rowsWithoutFile() + filesWithoutRow() === 0),
      500,
    );
    recovery = (Date.now() - upAt) / 1000;
  } catch {
    problems.push(`${rowsWithoutFile()} rows without their file, ${filesWithoutRow()} files without a row after 120 s`);
  }
  record({
    scenario: "stack_kill_upload",
    run,
    fault_at: `${delay} ms into the burst, ${before} uploads acknowledged`,
    invariants: await embeddingInvariants(sql, []),
    recovery_s: recovery,
    restart_s: up.startS,
    wasted_provider_calls: 0,
    in_flight_at_fault: 0,
    problems,
    notes: `${acked.size} acknowledged, ${failed} failed, ${rows.length} rows`,
  });
}

function listFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((
    d,
  ) => (d.isDirectory() ? listFiles(join(dir, d.name)) : [join(dir, d.name)]));
}

// --- a MASSIVE collection -----------------------------------------------------------------------------
// legifrance-collector runs in the stack (Deno) against the PISTE stand-in, uploading through the
// stack's Storage; its continuations go through pg_net. Each run starts the plan over on an emptied
// bucket.
const LEGIFRANCE_BUCKET = "agentbasic-legifrance-raw";

async function pgKillMassive(bed: FaultBed, run: number) {
  const { sql } = bed;
  const expected = new Set(piste.documentIds());
  await sql`delete from storage.objects where bucket_id = ${LEGIFRANCE_BUCKET}`;
  await sql`delete from files_queue where bucket_id = ${LEGIFRANCE_BUCKET}`;
  await sql`truncate legifrance_collector_runs, legifrance_failed_documents`;
  await sql`update legifrance_crawl_plan set next_page = 1, done = false, total_results = null, docs_collected = 0, page_size = 10`;
  const stored = async () =>
    (await sql<{ n: number }[]>`select count(*)::int as n from storage.objects where bucket_id = ${LEGIFRANCE_BUCKET}`)[
      0
    ].n;
  const invoke = (body: Record<string, unknown>) =>
    fetch(`${bed.stack.apiUrl}/functions/v1/legifrance-collector`, {
      method: "POST",
      headers: { apikey: bed.stack.secretKey, "content-type": "application/json" },
      body: JSON.stringify(body),
    }).then((r) => r.status).catch((e) => String(e));
  const first = invoke({ mode: "massive", restart: true });
  const frac = pick(0.1, 0.7);
  await until("fault point", 600_000, async () => (await stored()) >= frac * expected.size, 50);
  const { faultAt, restartS, upAt } = await restartServer(bed);
  const [{ id: runId }] = await sql<
    { id: string }[]
  >`select id from legifrance_collector_runs where mode = 'massive' order by started_at desc limit 1`;
  const problems: string[] = [];
  // The run resumes by itself (the invocation waits out the restart), or health's collector check
  // names it, and then the operator resumes it with the call the check gives.
  let how = "resumed by itself";
  let recovery: number | null = null;
  try {
    await until("the MASSIVE run resumed or named by health", 600_000, async () => {
      const [r] = await sql<{ n: number }[]>`select count(*)::int as n from storage.objects
        where bucket_id = ${LEGIFRANCE_BUCKET} and created_at > ${faultAt}`;
      if (r.n > 0) return true;
      const [st] = await sql<{ status: string }[]>`select status from legifrance_collector_runs where id = ${runId}`;
      if (st?.status === "completed") return true;
      const report = await runHealthChecks(sql, { expectedMigrations: SHIPPED_MIGRATIONS, embeddingEnv: null });
      const c = report.checks.find((x) => x.name === "collector");
      if (c?.status === "fail" && c.detail?.includes(runId)) {
        how = "named by health, resumed by the operator";
        void invoke({ mode: "massive", runId });
        return true;
      }
      if (st?.status !== "running") {
        how = `left ${st?.status}`;
        return true;
      }
      return false;
    }, 1000);
    recovery = (Date.now() - upAt) / 1000;
  } catch (e) {
    log(String(e));
  }
  await until(
    "the MASSIVE run completed",
    600_000,
    async () =>
      (await sql<{ status: string }[]>`select status from legifrance_collector_runs where id = ${runId}`)[0]?.status ===
        "completed",
    1000,
  )
    .catch((e) => problems.push(String(e)));
  const names = await sql<{ name: string }[]>`select name from storage.objects where bucket_id = ${LEGIFRANCE_BUCKET}`;
  const got = new Set(names.map((r) => r.name.replace(/^.*\//, "").replace(/\.json$/, "")));
  const lost = [...expected].filter((id) => !got.has(id)).length;
  const extra = [...got].filter((id) => !expected.has(id)).length;
  const [q] = await sql<
    { n: number; d: number }[]
  >`select count(*)::int as n, count(distinct file_path)::int as d from files_queue
    where bucket_id = ${LEGIFRANCE_BUCKET} and status <> 'deleted'`;
  const [p] = await sql<
    { n: number; done: boolean }[]
  >`select sum(docs_collected)::int as n, bool_and(done) as done from legifrance_crawl_plan where enabled`;
  const [f] = await sql<
    { n: number }[]
  >`select count(*)::int as n from legifrance_failed_documents where resolved_at is null`;
  if (lost) problems.push(`${lost} documents lost`);
  if (extra) problems.push(`${extra} unexpected objects`);
  if (q.n !== q.d || q.d !== expected.size) {
    problems.push(`files_queue: ${q.n} rows for ${q.d} paths, ${expected.size} documents`);
  }
  if (p.n !== expected.size || !p.done) {
    problems.push(`plan counted ${p.n} documents for ${expected.size}, done ${p.done}`);
  }
  if (f.n) problems.push(`${f.n} failed documents`);
  const status = await first;
  record({
    scenario: "pg_kill_massive",
    run,
    fault_at: `${Math.round(frac * 100)}% of ${expected.size} documents stored`,
    invariants: await embeddingInvariants(sql, []),
    recovery_s: recovery,
    restart_s: restartS,
    wasted_provider_calls: 0,
    in_flight_at_fault: 0,
    problems,
    notes: `${how}; first invocation answered ${status}`,
  });
}

async function terminateBackends(bed: FaultBed, run: number) {
  const table = `term_${++tableSeq}`;
  bed.fake.resetStats();
  await createSource(bed.sql, table, DRAIN_ROWS);
  await until("drain started", 120_000, async () => (await progress(bed.sql, table)).done > 0, 50);
  // Five rounds at random instants within the window.
  const at = Array.from({ length: 5 }, () => pick(0, TERMINATE_WINDOW_S * 1000)).sort((a, b) => a - b);
  const t0 = Date.now();
  let killed = 0;
  let held = 0;
  let lastAt = new Date();
  for (const ms of at) {
    await sleep(Math.max(0, t0 + ms - Date.now()));
    held += await heldNow(bed).catch(() => 0);
    lastAt = new Date();
    const [r] = await bed.sql<{ n: number }[]>`
      select count(*)::int as n from (select pg_terminate_backend(pid) from pg_stat_activity
        where datname = current_database() and backend_type = 'client backend' and pid <> pg_backend_pid()) t`;
    killed += r.n;
  }
  const upAt = Date.now();
  const recovery = await recoveryAfter(bed.sql, table, lastAt, upAt, 600_000).catch(() => null);
  const inv = await drainedAndChecked(bed, table, 900_000);
  record({
    scenario: "terminate_backends",
    run,
    fault_at: `5 rounds at ${at.map((x) => Math.round(x / 1000)).join("/")} s, ${killed} backends`,
    invariants: inv,
    recovery_s: recovery,
    restart_s: null,
    wasted_provider_calls: wastedInputs(bed.fake),
    in_flight_at_fault: held,
  });
}

async function providerDown(bed: FaultBed, run: number) {
  const table = `prov_${++tableSeq}`;
  bed.fake.resetStats();
  await createSource(bed.sql, table, DRAIN_ROWS);
  const frac = pick(0.05, 0.5);
  await until("fault point", 600_000, async () => (await progress(bed.sql, table)).done >= frac * DRAIN_ROWS, 50);
  const third = (PROVIDER_DOWN_S * 1000) / 3;
  await bed.provider.set("refused");
  await sleep(third);
  await bed.provider.set("timeout");
  await sleep(third);
  await bed.provider.set("500");
  await sleep(third);
  const backAt = new Date();
  await bed.provider.set("up");
  const upAt = Date.now();
  const [dead] = await bed.sql.unsafe<{ n: number }[]>(
    `select count(*)::int as n from embedding_sync_queue where source_table = '${table}' and status = 'failed'`,
  );
  const recovery = await recoveryAfter(bed.sql, table, backAt, upAt, 600_000).catch(() => null);
  const inv = await drainedAndChecked(bed, table, 900_000);
  record({
    scenario: "provider_down",
    run,
    fault_at: `${Math.round(frac * 100)}% drained, down ${PROVIDER_DOWN_S} s`,
    invariants: inv,
    recovery_s: recovery,
    restart_s: null,
    wasted_provider_calls: wastedInputs(bed.fake),
    in_flight_at_fault: 0,
    notes: `${dead.n} dead letters while down`,
  });
}

async function xminPinned(bed: FaultBed, run: number) {
  const table = `xmin_${++tableSeq}`;
  await createSource(bed.sql, table, XMIN_ROWS);
  // Completions per second over a window; a window the drain ended in measured nothing.
  let drainEnded = false;
  const rate = async (ms: number) => {
    const [a] = await bed.sql<
      { n: number }[]
    >`select count(*)::int as n from embedding_sync_queue where status = 'completed'`;
    await sleep(ms);
    const [b] = await bed.sql<
      { n: number }[]
    >`select count(*)::int as n from embedding_sync_queue where status = 'completed'`;
    if ((await progress(bed.sql, table)).left === 0) drainEnded = true;
    return (b.n - a.n) / (ms / 1000);
  };
  const dead = async () => {
    const [r] = await bed.sql<
      { n: number }[]
    >`select n_dead_tup::int as n from pg_stat_user_tables where relid = 'public.embedding_sync_queue'::regclass`;
    return r.n;
  };
  await until("drain started", 120_000, async () => (await progress(bed.sql, table)).done > 0, 50);
  const window = Math.min(30_000, (XMIN_PIN_S * 1000) / 2);
  const before = await rate(window);
  const pin = await bed.sql.reserve();
  await pin`begin isolation level repeatable read`;
  await pin`select count(*) from embedding_sync_queue`; // takes the snapshot: xmin pinned from here
  const t0 = Date.now();
  const deadBefore = await dead();
  await sleep(Math.max(0, XMIN_PIN_S * 1000 - window));
  const during = await rate(window);
  const deadDuring = await dead();
  void t0;
  await pin`rollback`;
  pin.release();
  const after = await rate(window);
  const inv = await drainedAndChecked(bed, table, 900_000);
  extra.xminDrainEnded = drainEnded;
  extra.xmin = {
    pin_s: XMIN_PIN_S,
    rows: XMIN_ROWS,
    claims_per_s_before: before,
    claims_per_s_during: during,
    claims_per_s_after: after,
    dead_tuples_at_pin: deadBefore,
    dead_tuples_pinned: deadDuring,
    dead_tuples_after: await dead(),
  };
  record({
    scenario: "xmin_pinned",
    run,
    fault_at: `pinned ${XMIN_PIN_S} s`,
    invariants: inv,
    recovery_s: null,
    restart_s: null,
    measuresRecovery: false,
    wasted_provider_calls: 0,
    in_flight_at_fault: 0,
    notes: `completions/s before ${before.toFixed(0)}, pinned ${during.toFixed(0)}, after ${
      after.toFixed(0)
    }; dead tuples ${deadDuring}${drainEnded ? "; the drain ended within a window: raise FAULTS_XMIN_ROWS" : ""}`,
  });
}

async function filesRebuild(bed: FaultBed, run: number) {
  const { sql } = bed;
  const bucket = `faults-rebuild-${run}`;
  await sql`insert into storage.buckets (id, name) values (${bucket}, ${bucket})`;
  await sql`insert into storage.objects (bucket_id, name, metadata)
            select ${bucket}, 'LEGITEXT/' || g || '.json', jsonb_build_object('size', 1000 + g % 500, 'mimetype', 'application/json')
            from generate_series(1, ${FILES_OBJECTS}) g`;
  // The files worker is not part of this scenario (the objects have no bytes on disk): its cron job
  // and the queue's webhook are paused while the rebuild runs.
  await sql`update cron.job set active = false where jobname = 'process-files-queue'`;
  await sql`alter table files_queue disable trigger files_queue_webhook`;
  await sql`insert into files_queue_watched_buckets (bucket_id) values (${bucket})`;
  const invoked = fetch(`${bed.stack.apiUrl}/functions/v1/repopulate-files-queue`, {
    method: "POST",
    headers: { apikey: bed.stack.secretKey, "content-type": "application/json" },
    body: JSON.stringify({ bucket, batchSize: 5000 }),
  }).then((r) => r.status).catch((e) => String(e));
  const frac = pick(0.1, 0.8);
  await until("fault point", 300_000, async () => {
    const [r] = await sql<{ n: number }[]>`select count(*)::int as n from files_queue where bucket_id = ${bucket}`;
    return r.n >= frac * FILES_OBJECTS;
  }, 50);
  const { restartS, upAt } = await restartServer(bed);
  let recovery: number | null = null;
  try {
    await until("files_queue agrees with Storage", 300_000, async () => {
      const d = await filesDrift(sql, bucket);
      return d.missing_rows + d.extra_rows === 0;
    }, 1000);
    recovery = (Date.now() - upAt) / 1000;
  } catch (e) {
    log(String(e));
  }
  const d = await filesDrift(sql, bucket);
  const status = await invoked;
  const [rows] = await sql<{ n: number; distinct_paths: number }[]>`
    select count(*)::int as n, count(distinct file_path)::int as distinct_paths from files_queue where bucket_id = ${bucket}`;
  record({
    scenario: "files_rebuild",
    run,
    fault_at: `${Math.round(frac * 100)}% rebuilt`,
    invariants: await embeddingInvariants(sql, []),
    files_drift: d.missing_rows + d.extra_rows + (rows.n - rows.distinct_paths),
    recovery_s: recovery,
    restart_s: restartS,
    wasted_provider_calls: 0,
    in_flight_at_fault: 0,
    notes:
      `${rows.n} rows for ${FILES_OBJECTS} objects; missing ${d.missing_rows}, extra ${d.extra_rows}; first invocation answered ${status}`,
  });
  await sql`delete from files_queue_watched_buckets where bucket_id = ${bucket}`;
  await sql`delete from files_queue where bucket_id = ${bucket}`;
  await sql`alter table files_queue enable trigger files_queue_webhook`;
  await sql`update cron.job set active = true where jobname = 'process-files-queue'`;
}

// --- run -----------------------------------------------------------------------------------------------

// postgres.js can throw from a timer when the server dies under a pipelined write (its socket is gone
// by the time the write runs): a client-side error with nothing to recover, which must not end the
// run and leave its cluster and stack behind. Anything else still ends the process.
process.on("uncaughtException", (e) => {
  if (e instanceof TypeError && /postgres\/src\/connection\.js/.test(e.stack ?? "")) {
    log(`postgres.js client error on a dead socket, ignored: ${e.message}`);
    return;
  }
  console.error(e);
  process.exit(1);
});

// The PISTE stand-in the collector talks to (FAULTS_MASSIVE_PER_FOND generated documents per fond).
const piste = await startPisteStandIn({ generatedPerFond: MASSIVE_PER_FOND, latencyMs: 20 });
const bed = await startFaultBed({
  log,
  providerLatencyMs: 50,
  functionEnv: {
    PISTE_OAUTH_URL: piste.oauthUrl,
    PISTE_API_URL: piste.apiUrl,
    PISTE_CLIENT_ID: piste.clientId,
    PISTE_CLIENT_SECRET: piste.clientSecret,
  },
});
let exitCode = 0;
try {
  const settings = await bed.cluster.settings();
  log(
    `private cluster on ${bed.cluster.port}: fsync=${settings.fsync} synchronous_commit=${settings.synchronous_commit} full_page_writes=${settings.full_page_writes}`,
  );
  const scenarios: [string, (b: FaultBed, run: number) => Promise<void>, number][] = [
    ["pg_kill_drain", pgKillDrain, RUNS],
    ["pg_kill_bulk", pgKillBulk, RUNS],
    ["pg_kill_build", pgKillBuild, RUNS],
    ["terminate_backends", terminateBackends, RUNS],
    ["provider_down", providerDown, RUNS],
    ["files_rebuild", filesRebuild, RUNS],
    ["xmin_pinned", xminPinned, 1],
    ["pg_kill_merge", pgKillMerge, RUNS],
    ["pg_kill_kb_push", pgKillKbPush, RUNS],
    ["pg_kill_massive", pgKillMassive, RUNS],
    ["stack_kill_drain", stackKillDrain, RUNS],
    ["stack_kill_upload", stackKillUpload, RUNS],
  ];
  const only = process.env.FAULTS_ONLY?.split(",");
  // Round by round (every scenario's first run, then every second run...): a run that outgrows the
  // budget skips the last runs of every scenario, never a whole scenario.
  for (let i = 1; i <= Math.max(...scenarios.map(([, , runs]) => runs)); i++) {
    for (const [name, fn, runs] of scenarios) {
      if ((only && !only.includes(name)) || i > runs) continue;
      if ((Date.now() - started) / 1000 > BUDGET_S) {
        skipped.push(`${name} #${i}`);
        continue;
      }
      log(`${name} #${i}`);
      try {
        await fn(bed, i);
      } catch (e) {
        log(`${name} #${i} aborted: ${e instanceof Error ? e.stack : e}`);
        // Whatever the run paused, back on (the collector's maintenance stays off for the whole bench).
        await bed.sql`update cron.job set active = true where jobname <> 'legifrance-collector-maintenance'`.catch(
          () => {},
        );
        results.push({
          scenario: name,
          run: i,
          fault_at: "-",
          passed: false,
          invariants: await embeddingInvariants(bed.sql, []),
          recovery_s: null,
          recovered: false,
          restart_s: null,
          wasted_provider_calls: 0,
          in_flight_at_fault: 0,
          notes: `aborted: ${e}`,
        });
      }
    }
  }

  const sum = (k: keyof Invariants) => results.reduce((n, r) => n + r.invariants[k], 0);
  const rec = results.map((r) => r.recovery_s).filter((x): x is number => x !== null);
  const pgRec = results.filter((r) => r.restart_s !== null).map((r) => r.recovery_s ?? Infinity);
  const xmin = extra.xmin as Record<string, number> | undefined;
  const out = {
    cpus: availableParallelism(),
    load_avg_1m_at_end: Number(readFileSync("/proc/loadavg", "utf8").split(" ")[0]),
    durable: settings,
    scaled: {
      drain_rows: DRAIN_ROWS,
      bulk_rows: BULK_ROWS,
      segment_rows: SEGMENT_ROWS,
      provider_down_s: PROVIDER_DOWN_S,
      xmin_pin_s: XMIN_PIN_S,
      xmin_rows: XMIN_ROWS,
      terminate_window_s: TERMINATE_WINDOW_S,
      files_objects: FILES_OBJECTS,
      kb_rows: KB_ROWS,
      massive_per_fond: MASSIVE_PER_FOND,
      stack_drain_rows: STACK_DRAIN_ROWS,
    },
    scenarios: [...new Set(results.map((r) => r.scenario))].map((s) => ({
      name: s,
      runs: results.filter((r) => r.scenario === s).length,
      passed: results.filter((r) => r.scenario === s && r.passed).length,
      results: results.filter((r) => r.scenario === s),
    })),
    runs: results.length,
    skipped,
    passed: results.filter((r) => r.passed).length,
    lost_rows: sum("lost_rows"),
    duplicate_chunks: sum("duplicate_chunks"),
    stale_chunks: sum("stale_chunks"),
    orphan_chunks: sum("orphan_chunks"),
    stuck_jobs: sum("stuck_jobs"),
    unfinished_jobs: sum("unfinished_jobs"),
    dead_jobs: sum("dead_jobs"),
    recovery_s_p50: Number(percentile(rec, 50).toFixed(1)),
    recovery_s_max: Number(Math.max(0, ...rec).toFixed(1)),
    recovery_s_max_after_pg_restart: Number(Math.max(0, ...pgRec).toFixed(1)),
    claims_per_s: xmin ? Number(xmin.claims_per_s_before.toFixed(1)) : null,
    xmin_pinned_claims_per_s: xmin ? Number(xmin.claims_per_s_during.toFixed(1)) : null,
    claims_per_s_after_unpin: xmin ? Number(xmin.claims_per_s_after.toFixed(1)) : null,
    queue_dead_tuples_pinned: xmin?.dead_tuples_pinned ?? null,
    wasted_provider_calls: results.reduce((n, r) => n + r.wasted_provider_calls, 0),
    files_drift: results.reduce((n, r) => n + (r.files_drift ?? 0), 0),
    total_s: Math.round((Date.now() - started) / 1000),
  };
  mkdirSync(".bench", { recursive: true });
  writeFileSync(".bench/faults.json", JSON.stringify(out, null, 2) + "\n");

  const rows: [string, string, string, string, string, string, string][] = [
    [
      "scenario",
      "runs",
      "passed",
      "recovery s (max)",
      "recovery s (each run)",
      "wasted",
      "invariants (lost/dup/stale/orphan/stuck/unfinished/dead)",
    ],
  ];
  for (const s of out.scenarios) {
    const rs = s.results;
    const r = rs.map((x) => x.recovery_s).filter((x): x is number => x !== null);
    const t = (k: keyof Invariants) => rs.reduce((n, x) => n + x.invariants[k], 0);
    rows.push([
      s.name,
      String(s.runs),
      String(s.passed),
      r.length ? Math.max(...r).toFixed(1) : "-",
      rs.map((x) => (x.recovery_s === null ? (x.recovered ? "-" : "NONE") : x.recovery_s.toFixed(1))).join(", "),
      String(rs.reduce((n, x) => n + x.wasted_provider_calls, 0)),
      ["lost_rows", "duplicate_chunks", "stale_chunks", "orphan_chunks", "stuck_jobs", "unfinished_jobs", "dead_jobs"]
        .map((k) => t(k as keyof Invariants)).join("/"),
    ]);
  }
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  console.log(
    `faults benchmark (private durable PostgreSQL 15, ${out.cpus} CPUs, load ${out.load_avg_1m_at_end}, ${out.total_s} s)`,
  );
  for (const r of rows) console.log(r.map((c, i) => c.padEnd(w[i])).join("  "));
  const targets = [
    [`passed = runs`, out.passed === out.runs, `${out.passed}/${out.runs}`],
    [
      `every run within ${BUDGET_S} s`,
      skipped.length === 0,
      skipped.length ? `skipped: ${skipped.join(", ")}` : "none skipped",
    ],
    [
      `lost/duplicate/stale chunks, stuck jobs = 0`,
      out.lost_rows + out.duplicate_chunks + out.stale_chunks + out.stuck_jobs === 0,
      `${out.lost_rows}/${out.duplicate_chunks}/${out.stale_chunks}/${out.stuck_jobs}`,
    ],
    [
      `recovery_s_max <= ${RECOVERY_TARGET_S} after PostgreSQL restarts`,
      out.recovery_s_max_after_pg_restart <= RECOVERY_TARGET_S,
      `${out.recovery_s_max_after_pg_restart} s (p50 of all ${out.recovery_s_p50} s)`,
    ],
    [
      `claims/s before / xmin pinned / after, over a drain that outlasts them`,
      extra.xminDrainEnded !== true,
      `${out.claims_per_s} / ${out.xmin_pinned_claims_per_s} / ${out.claims_per_s_after_unpin}; queue dead tuples pinned ${out.queue_dead_tuples_pinned}`,
    ],
  ] as const;
  for (const [what, ok, value] of targets) console.log(`${ok ? "met   " : "MISSED"}  ${what}: ${value}`);
  if (out.passed !== out.runs || skipped.length) exitCode = 1;
} finally {
  await kbTeardown();
  await stackTeardown();
  await piste.stop();
  await bed.stop();
}
process.exit(exitCode);
