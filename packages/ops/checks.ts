// The health checks, shared by the `health` function, `npm run doctor` and the dashboard. Each check
// is a few cheap SQL statements; they run in parallel, each under a time limit, and a check that
// throws or times out is a failure naming the error rather than a failed report.
import { Cron } from "croner";
import type postgres from "postgres";
import { createProvider, type EmbeddingEnv, parseEmbeddingEnv } from "../embeddings/config.ts";
import { type CheckResult, type CheckStatus, type HealthReport, worst } from "./report.ts";

/** The cron jobs the migrations schedule; each must exist and its last run must have succeeded. */
export const EXPECTED_CRON_JOBS = [
  "process-embedding-queue",
  "embedding-sync-maintenance",
  "legifrance-collector-maintenance",
  "process-files-queue",
  "files-queue-coherence",
  "ops-metrics-sample",
  "ops-metrics-cleanup",
  "ops-alerts",
  "embedding-segments-maintenance",
  "embedding-segments-build",
  "legal-documents-in-force",
] as const;

/** Vault entries the schedules need (private.invoke_edge_function). Only names are ever read. */
/** The schedules need the project URL and a key: a secret key (preferred) or the legacy service_role JWT. */
export const VAULT_KEY_ENTRIES = ["secret_key", "service_role_key"] as const;

export interface HealthOptions {
  /** Migration versions this build ships (migrations.generated.ts in functions, the folder in doctor). */
  expectedMigrations: readonly string[];
  /** The embedding function's secrets, when this process can see them; null: the provider is not checked. */
  embeddingEnv: Record<string, string | undefined> | null;
  /** Make one real embedding call (`?probe=provider`). */
  probeProvider?: boolean;
  /** Per-check time limit (ms). */
  checkTimeoutMs?: number;
}

interface Settings {
  environment_label: string | null;
  queue_age_warn_seconds: number;
  queue_age_fail_seconds: number;
  dead_letters_warn: number;
  dead_letters_fail: number;
  stuck_warn: number;
  stuck_fail: number;
  pg_net_window_minutes: number;
  pg_net_failure_warn: number;
  pg_net_failure_fail: number;
  failed_files_warn: number;
  failed_files_fail: number;
  /** When the schedules were installed; null on a database older than that column. */
  installed_at: Date | null;
}

type Outcome = { status: CheckStatus; detail: string; data?: Record<string, unknown> };
type Check = (sql: postgres.Sql, settings: Settings | null, opts: HealthOptions) => Promise<Outcome>;

const n = (v: unknown) => Number(v ?? 0);

const database: Check = async (sql) => {
  const t0 = performance.now();
  const [r] = await sql<
    { db: string; version: string }[]
  >`select current_database() as db, current_setting('server_version') as version`;
  const latency = Math.round((performance.now() - t0) * 10) / 10;
  return {
    status: "ok",
    detail: `${r.db} on PostgreSQL ${r.version}, ${latency} ms`,
    data: { database: r.db, server_version: r.version, latency_ms: latency },
  };
};

const environment: Check = (_sql, settings) => {
  const label = settings?.environment_label ?? null;
  if (!settings) {
    return Promise.resolve({
      status: "fail",
      detail: "ops_settings is missing: is migration 20260101001600 (ops) applied?",
    });
  }
  return Promise.resolve(
    label ? { status: "ok", detail: `environment: ${label}`, data: { label } } : {
      status: "warn",
      detail: "no environment label: select set_environment_label('production') (or staging, development, …)",
      data: { label: null },
    },
  );
};

const extensions: Check = async (sql) => {
  // Only pg_extension says an extension is installed. The local stack's stand-ins (schemas commented
  // as such) are named as what they are: they work only while the local stack runs, so a database
  // with a stand-in and no stack has nothing running its schedules (the schedules check says so).
  const rows = await sql<{ name: string; version: string | null; stand_in: boolean }[]>`
    select x.name, e.extversion as version,
           e.extversion is null and coalesce(obj_description(ns.oid, 'pg_namespace') like 'local-stack % stand-in', false) as stand_in
      from (values ('vector', null), ('pg_cron', 'cron'), ('pg_net', 'net')) as x(name, schema)
      left join pg_extension e on e.extname = x.name
      left join pg_namespace ns on ns.nspname = x.schema`;
  const versions = Object.fromEntries(rows.map((r) => [r.name, r.version]));
  const standIns = rows.filter((r) => r.stand_in).map((r) => r.name);
  const missing = rows.filter((r) => !r.version && !r.stand_in).map((r) => r.name);
  const line = rows.map((r) =>
    r.version
      ? `${r.name} ${r.version}`
      : r.stand_in
      ? `${r.name} not installed (local-stack stand-in: runs only while the local stack runs)`
      : `${r.name} MISSING`
  ).join(", ");
  const data = { versions, stand_ins: standIns };
  return {
    status: missing.length ? "fail" : "ok",
    detail: missing.length ? `missing: ${missing.join(", ")} (${line})` : line,
    data,
  };
};

const migrations: Check = async (sql, _s, opts) => {
  const [{ reg }] = await sql<
    { reg: string | null }[]
  >`select to_regclass('supabase_migrations.schema_migrations')::text as reg`;
  if (!reg) {
    return {
      status: "fail",
      detail: "no migration history (supabase_migrations.schema_migrations does not exist)",
      data: { missing: [...opts.expectedMigrations] },
    };
  }
  const applied =
    (await sql<{ version: string }[]>`select version from supabase_migrations.schema_migrations order by version`).map((
      r,
    ) => r.version);
  const have = new Set(applied);
  const shipped = new Set(opts.expectedMigrations);
  const missing = opts.expectedMigrations.filter((v) => !have.has(v));
  const unknown = applied.filter((v) => !shipped.has(v));
  const data = {
    applied: applied.length,
    expected: opts.expectedMigrations.length,
    missing,
    unknown,
    latest: applied.at(-1) ?? null,
  };
  if (missing.length) {
    return { status: "fail", detail: `${missing.length} migration(s) not applied: ${missing.join(", ")}`, data };
  }
  if (unknown.length) {
    return {
      status: "warn",
      detail: `${applied.length} applied; ${unknown.length} newer than this build: ${unknown.join(", ")}`,
      data,
    };
  }
  return { status: "ok", detail: `${applied.length} applied, latest ${data.latest}`, data };
};

const vault: Check = async (sql) => {
  // Names only: the secret values are never selected.
  const names = (await sql<{ name: string }[]>`select name from vault.secrets where name = any(${[
    "project_url",
    ...VAULT_KEY_ENTRIES,
    "alert_webhook_url",
  ]})`)
    .map((r) => r.name);
  const key = VAULT_KEY_ENTRIES.find((k) => names.includes(k));
  const missing = [
    ...(names.includes("project_url") ? [] : ["project_url"]),
    ...(key ? [] : ["secret_key (or the legacy service_role_key)"]),
  ];
  const webhook = names.includes("alert_webhook_url");
  const data = { present: names.sort(), missing, alert_webhook: webhook };
  if (missing.length) {
    return {
      status: "fail",
      detail: `Vault entries missing: ${missing.join(", ")} (the schedules cannot call the functions)`,
      data,
    };
  }
  return { status: "ok", detail: `project_url and ${key} present; alert webhook ${webhook ? "set" : "not set"}`, data };
};

/**
 * Seconds between two runs of a pg_cron schedule (the longest gap of the next few, for irregular
 * expressions), or null when it is not one we can read. pg_cron runs in GMT.
 */
export function scheduleIntervalSeconds(schedule: string): number | null {
  const secs = /^\s*(\d+)\s+seconds?\s*$/i.exec(schedule);
  if (secs) return Number(secs[1]);
  try {
    const runs = new Cron(schedule, { paused: true, timezone: "Etc/UTC" }).nextRuns(4);
    let gap = 0;
    for (let i = 1; i < runs.length; i++) gap = Math.max(gap, (runs[i].getTime() - runs[i - 1].getTime()) / 1000);
    return gap > 0 ? gap : null;
  } catch {
    return null;
  }
}

const duration = (s: number) =>
  s < 120 ? `${Math.round(s)} s` : s < 7200 ? `${Math.round(s / 60)} min` : `${Math.round(s / 360) / 10} h`;

const schedules: Check = async (sql) => {
  // Ages come from the database clock, the one the runs were recorded with.
  const rows = await sql<
    {
      jobname: string;
      schedule: string;
      active: boolean;
      last_status: string | null;
      last_start: Date | null;
      last_message: string | null;
      last_age: number | null;
      installed_age: number | null;
    }[]
  >`
    select j.jobname, j.schedule, j.active, d.status as last_status, d.start_time as last_start, left(d.return_message, 200) as last_message,
           extract(epoch from now() - d.start_time)::float8 as last_age,
           (select extract(epoch from now() - (to_jsonb(s) ->> 'installed_at')::timestamptz)::float8 from ops_settings s) as installed_age
      from cron.job j
      left join lateral (select r.status, r.start_time, r.return_message from cron.job_run_details r
                          where r.jobid = j.jobid order by r.start_time desc nulls last, r.runid desc limit 1) d on true
     where j.jobname = any(${[...EXPECTED_CRON_JOBS]})`;
  const byName = new Map(rows.map((r) => [r.jobname, r]));
  const missing = EXPECTED_CRON_JOBS.filter((j) => !byName.has(j));
  const failed = rows.filter((r) => r.last_status === "failed");
  const inactive = rows.filter((r) => !r.active).map((r) => r.jobname);
  // An active job is late when its last run (or, never having run, the install) is older than twice
  // its interval: nothing is running it (no scheduler, or a stand-in without its local stack).
  const late: string[] = [];
  const jobs = EXPECTED_CRON_JOBS.map((j) => {
    const r = byName.get(j);
    const interval = r ? scheduleIntervalSeconds(r.schedule) : null;
    if (r?.active && interval !== null) {
      if (r.last_age === null && r.installed_age !== null && r.installed_age > 2 * interval) {
        late.push(`${j} never ran (every ${duration(interval)}, installed ${duration(r.installed_age)} ago)`);
      } else if (r.last_age !== null && r.last_age > 2 * interval) {
        late.push(`${j} last ran ${duration(r.last_age)} ago (every ${duration(interval)})`);
      }
    }
    return {
      job: j,
      scheduled: !!r,
      schedule: r?.schedule ?? null,
      active: r?.active ?? false,
      interval_seconds: interval,
      last_status: r?.last_status ?? null,
      last_run: r?.last_start?.toISOString() ?? null,
    };
  });
  const problems = [
    ...missing.map((j) => `${j} not scheduled`),
    ...failed.map((r) => `${r.jobname} last run failed: ${r.last_message ?? "no message"}`),
    ...late,
  ];
  if (problems.length) return { status: "fail", detail: problems.join("; "), data: { jobs } };
  if (inactive.length) return { status: "warn", detail: `paused: ${inactive.join(", ")}`, data: { jobs } };
  return {
    status: "ok",
    detail: `${rows.length} jobs scheduled, each ran within twice its interval, none failing`,
    data: { jobs },
  };
};

const pgNet: Check = async (sql, s) => {
  const minutes = s?.pg_net_window_minutes ?? 15;
  const [r] = await sql<{ total: string; failed: string }[]>`
    select count(*) as total,
           count(*) filter (where timed_out or error_msg is not null or status_code is null or status_code >= 400) as failed
      from net._http_response where created > now() - make_interval(mins => ${minutes})`;
  const total = n(r.total), failed = n(r.failed);
  const share = total ? failed / total : 0;
  const data = { window_minutes: minutes, requests: total, failed, failure_share: Math.round(share * 1000) / 1000 };
  const line = `${failed}/${total} requests failed or timed out in the last ${minutes} min`;
  if (total && share >= (s?.pg_net_failure_fail ?? 0.5)) return { status: "fail", detail: line, data };
  if (total && share >= (s?.pg_net_failure_warn ?? 0.1)) return { status: "warn", detail: line, data };
  return { status: "ok", detail: line, data };
};

const embeddingQueue: Check = async (sql, s) => {
  const [{ has_lane }] = await sql<{ has_lane: boolean }[]>`
    select exists (select from pg_attribute where attrelid = 'public.embedding_sync_queue'::regclass and attname = 'lane' and not attisdropped) as has_lane`;
  // Every count goes through a status's partial index: completed jobs (the bulk) are never scanned.
  const [r] = await sql<{ by_status: Record<string, number>; oldest: number | null; stuck: string; dead: string }[]>`
    select ops_queue_backlog() as by_status,
           extract(epoch from now() - (select min(created_at) from embedding_sync_queue where status = 'pending'))::float8 as oldest,
           (select count(*) from embedding_sync_queue where status = 'processing' and lease_until < now()) as stuck,
           (select count(*) from embedding_sync_queue where status = 'failed') as dead`;
  const byStatus = r.by_status;
  const byLane = has_lane
    ? Object.fromEntries((await sql.unsafe<{ lane: string; n: string }[]>(
      `select lane::text as lane, count(*) as n from public.embedding_sync_queue where status = 'pending' group by lane`,
    )).map((r) => [r.lane, n(r.n)]))
    : null;
  const oldest = r.oldest === null ? null : Math.round(r.oldest);
  const stuck = n(r.stuck), dead = n(r.dead);
  const data = {
    by_status: byStatus,
    pending_by_lane: byLane,
    oldest_pending_seconds: oldest,
    stuck,
    dead_letters: dead,
  };
  const t = s ??
    {
      queue_age_warn_seconds: 900,
      queue_age_fail_seconds: 3600,
      dead_letters_warn: 1,
      dead_letters_fail: 100,
      stuck_warn: 1,
      stuck_fail: 50,
    };
  const fails: string[] = [], warns: string[] = [];
  const judge = (v: number, warn: number, fail: number, what: string) => {
    if (v >= fail) fails.push(what);
    else if (v >= warn) warns.push(what);
  };
  judge(oldest ?? 0, t.queue_age_warn_seconds, t.queue_age_fail_seconds, `oldest pending ${oldest} s`);
  judge(dead, t.dead_letters_warn, t.dead_letters_fail, `${dead} dead letter(s)`);
  judge(stuck, t.stuck_warn, t.stuck_fail, `${stuck} stuck job(s)`);
  const line =
    `pending ${byStatus.pending ?? 0}, processing ${byStatus.processing ?? 0}, failed ${dead}, stuck ${stuck}` +
    (oldest !== null ? `, oldest pending ${oldest} s` : "") +
    (byLane ? `, pending by lane ${JSON.stringify(byLane)}` : "");
  if (fails.length) return { status: "fail", detail: `${fails.join(", ")} (${line})`, data };
  if (warns.length) return { status: "warn", detail: `${warns.join(", ")} (${line})`, data };
  return { status: "ok", detail: line, data };
};

const files: Check = async (sql, s) => {
  const [rows, failedRows] = await Promise.all([
    sql<
      {
        bucket_id: string;
        storage_count: string;
        queue_count: string;
        last_check_at: Date | null;
        missing_in_queue: string | null;
        queued_without_object: string | null;
        drift_alert: boolean;
      }[]
    >`
      select * from ops_files_overview()`,
    sql<{ bucket_id: string; failed: string }[]>`select bucket_id, failed from ops_failed_files_count()`,
  ]);
  const failedIn = new Map(failedRows.map((r) => [r.bucket_id, n(r.failed)]));
  const buckets = rows.map((r) => ({
    bucket: r.bucket_id,
    storage: n(r.storage_count),
    queue: n(r.queue_count),
    failed: failedIn.get(r.bucket_id) ?? 0,
    // From the latest hourly coherence check (its anti-joins are too slow to run on every call).
    missing_in_queue: r.missing_in_queue === null ? null : n(r.missing_in_queue),
    queued_without_object: r.queued_without_object === null ? null : n(r.queued_without_object),
    drift_alert: r.drift_alert,
    last_coherence_check: r.last_check_at?.toISOString() ?? null,
  }));
  const drift = buckets.filter((b) => b.drift_alert).map((b) => b.bucket);
  // The coherence job runs hourly: no check in the last two hours means it is not running. Before the
  // first check was due (installed less than two hours ago), none is not a warning.
  const now = Date.now();
  const installedLongAgo = !s?.installed_at || now - s.installed_at.getTime() > 2 * 3600_000;
  const stale = buckets.filter((b) =>
    b.last_coherence_check ? now - Date.parse(b.last_coherence_check) > 2 * 3600_000 : installedLongAgo
  )
    .map((b) => b.bucket);
  const line =
    buckets.map((b) => `${b.bucket}: ${b.storage} in Storage, ${b.queue} queued, ${b.failed} failed`).join("; ") ||
    "no watched bucket";
  // Failed files are the files' dead letter: each one is a document that is not searchable.
  const failWhen = s?.failed_files_fail ?? 100, warnWhen = s?.failed_files_warn ?? 1;
  const failing = buckets.filter((b) => b.failed >= failWhen).map((b) => `${b.failed} failed file(s) in ${b.bucket}`);
  const warns = [
    ...buckets.filter((b) => b.failed >= warnWhen && b.failed < failWhen).map((b) =>
      `${b.failed} failed file(s) in ${b.bucket}`
    ),
    ...drift.map((b) => `drift in ${b} at the last coherence check`),
    ...stale.map((b) => `no coherence check in 2 h for ${b}`),
  ];
  const data = { buckets, failed_files_warn: warnWhen, failed_files_fail: failWhen };
  if (failing.length) return { status: "fail", detail: `${[...failing, ...warns].join(", ")} (${line})`, data };
  return { status: warns.length ? "warn" : "ok", detail: warns.length ? `${warns.join(", ")} (${line})` : line, data };
};

const collector: Check = async (sql) => {
  const runs = await sql<
    {
      mode: string;
      status: string;
      started_at: Date;
      docs_collected: string;
      docs_failed: string;
      last_error: string | null;
    }[]
  >`
    select mode, status, started_at, docs_collected, docs_failed, left(last_error, 200) as last_error
      from legifrance_collector_runs order by started_at desc limit 5`;
  const [f] = await sql<
    { failed: string }[]
  >`select count(*) as failed from legifrance_failed_documents where resolved_at is null`;
  const plan = await sql<
    {
      category: string;
      done: boolean;
      next_page: number;
      docs_collected: string;
      total_results: number | null;
      failed_documents: string;
    }[]
  >`
    select category, done, next_page, docs_collected, total_results, failed_documents from legifrance_collector_status order by category`;
  const failedDocs = n(f.failed);
  const data = {
    last_runs: runs.map((r) => ({
      mode: r.mode,
      status: r.status,
      started_at: r.started_at.toISOString(),
      docs_collected: n(r.docs_collected),
      docs_failed: n(r.docs_failed),
      last_error: r.last_error,
    })),
    failed_documents: failedDocs,
    plan: plan.map((p) => ({
      category: p.category,
      done: p.done,
      next_page: p.next_page,
      docs_collected: n(p.docs_collected),
      total_results: p.total_results,
      failed_documents: n(p.failed_documents),
    })),
  };
  const last = runs[0];
  const line = last
    ? `last run ${last.mode} ${last.status} at ${last.started_at.toISOString()}; ${failedDocs} failed document(s)`
    : `no run yet; ${failedDocs} failed document(s)`;
  // A MASSIVE run still 'running' whose lease lapsed has no invocation left (it died with its server or
  // its function) and nothing else resumes it: it waits for an operator, who needs its id.
  const stalled = await sql<{ id: string; lease_until: Date }[]>`
    select r.id, r.lease_until from legifrance_collector_runs r
     where r.mode = 'massive' and r.status = 'running' and r.lease_until < now() order by r.started_at`;
  if (stalled.length) {
    const names = stalled.map((r) =>
      `massive run ${r.id} stalled (lease expired at ${r.lease_until.toISOString()}): ` +
      `resume it with legifrance-collector {"mode":"massive","runId":"${r.id}"}`
    );
    return {
      status: "fail",
      detail: `${names.join("; ")} (${line})`,
      data: { ...data, stalled_runs: stalled.map((r) => r.id) },
    };
  }
  return { status: last?.status === "failed" ? "warn" : "ok", detail: line, data };
};

const knowledgeBase: Check = async (sql) => {
  const rows = await sql<
    { source_table: string; rows: string; rows_with_embeddings: string; empty_warning: boolean }[]
  >`
    select source_table, rows, rows_with_embeddings, empty_warning from ops_knowledge_base()`;
  const sources = rows.map((r) => {
    const total = n(r.rows), embedded = n(r.rows_with_embeddings);
    // Rounded down: 189 of 190 is 0.994, never 1 (a gap is never rounded away).
    return {
      source_table: r.source_table,
      rows: total,
      rows_with_embeddings: embedded,
      coverage: total ? Math.floor((embedded / total) * 1000) / 1000 : null,
    };
  });
  // The rule is SQL's (ops_knowledge_base.empty_warning): emptied, or the whole knowledge base empty.
  const empty = rows.filter((r) => r.empty_warning).map((r) => r.source_table);
  const line = sources.map((s) =>
    `${s.source_table}: ${s.rows} rows, ${
      s.rows
        ? `${s.rows_with_embeddings} embedded (${Math.floor((s.rows_with_embeddings / s.rows) * 1000) / 10}%)`
        : "none to embed"
    }`
  ).join("; ");
  if (!sources.length) {
    return { status: "warn", detail: "empty knowledge base: no registered source", data: { sources } };
  }
  if (empty.length) {
    return { status: "warn", detail: `empty knowledge base: ${empty.join(", ")} (${line})`, data: { sources } };
  }
  return { status: "ok", detail: line, data: { sources } };
};

const provider: Check = async (sql, _s, opts) => {
  if (!opts.embeddingEnv) {
    return {
      status: "ok",
      detail: "not checked here (the function's secrets are not visible)",
      data: { checked: false },
    };
  }
  let env: EmbeddingEnv;
  try {
    env = parseEmbeddingEnv(opts.embeddingEnv);
  } catch (e) {
    return { status: "fail", detail: (e as Error).message };
  }
  const [{ dims }] = await sql<{ dims: number | null }[]>`select embedding_dimensions() as dims`;
  // The models of the latest chunks (primary key order): a scan of the whole table would not be cheap.
  const models = (await sql<
    { model: string }[]
  >`select distinct model from (select model from documentation_embeddings order by id desc limit 100) m`)
    .map((r) => r.model);
  const p = createProvider(env);
  const data: Record<string, unknown> = {
    provider: env.EMBEDDING_PROVIDER,
    model: p.model,
    dimensions: p.dimensions,
    table_dimensions: dims,
    models_in_table: models,
  };
  if (dims !== p.dimensions) {
    return {
      status: "fail",
      detail: `EMBEDDING_DIMENSIONS=${p.dimensions} but documentation_embeddings.embedding is vector(${dims})`,
      data,
    };
  }
  const foreign = models.filter((m) => m !== p.model);
  if (opts.probeProvider) {
    const t0 = performance.now();
    try {
      const r = await p.embed(["health probe"], { signal: AbortSignal.timeout(10_000) });
      data.probe_ms = Math.round(performance.now() - t0);
      if (r.vectors[0]?.length !== dims) {
        return { status: "fail", detail: `probe returned ${r.vectors[0]?.length} dimensions, table has ${dims}`, data };
      }
    } catch (e) {
      return { status: "fail", detail: `probe failed: ${(e as Error).message}`, data };
    }
  }
  const line = `${env.EMBEDDING_PROVIDER} ${p.model}, ${p.dimensions} dimensions` +
    (opts.probeProvider ? `, probe ${data.probe_ms} ms` : "");
  if (foreign.length) {
    return { status: "warn", detail: `${line}; the table also holds embeddings of ${foreign.join(", ")}`, data };
  }
  return { status: "ok", detail: line, data };
};

/** Every check, in the order people read them. */
export const CHECKS: ReadonlyArray<[string, Check]> = [
  ["database", database],
  ["environment", environment],
  ["extensions", extensions],
  ["migrations", migrations],
  ["vault", vault],
  ["schedules", schedules],
  ["pg_net", pgNet],
  ["embedding_queue", embeddingQueue],
  ["files", files],
  ["collector", collector],
  ["knowledge_base", knowledgeBase],
  ["provider", provider],
];

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
  });
  return Promise.race([p, limit]).finally(() => clearTimeout(timer));
}

/** Runs every check against `sql` (a superuser or service-role connection) and builds the report. */
export async function runHealthChecks(sql: postgres.Sql, opts: HealthOptions): Promise<HealthReport> {
  const t0 = performance.now();
  const timeout = opts.checkTimeoutMs ?? 5_000;
  let settings: Settings | null = null;
  let dbError: string | null = null;
  try {
    [settings = null] = await withTimeout(sql<Settings[]>`select * from ops_settings`, timeout);
  } catch (e) {
    dbError = (e as Error).message;
  }
  const checks: CheckResult[] = await Promise.all(CHECKS.map(async ([name, check]): Promise<CheckResult> => {
    // The environment check needs only the settings row; when even that failed, say why once.
    if (name === "environment" && dbError) {
      return { name, status: "fail", detail: `cannot read ops_settings: ${dbError}` };
    }
    const started = performance.now();
    const ms = () => Math.round((performance.now() - started) * 10) / 10;
    try {
      const o = await withTimeout(check(sql, settings, opts), timeout);
      return { name, status: o.status, detail: o.detail, ...(o.data ? { data: o.data } : {}), ms: ms() };
    } catch (e) {
      return { name, status: "fail", detail: `check failed: ${(e as Error).message}`, ms: ms() };
    }
  }));
  return {
    status: worst(checks.map((c) => c.status)),
    environment: settings?.environment_label ?? null,
    checked_at: new Date().toISOString(),
    duration_ms: Math.round(performance.now() - t0),
    checks,
  };
}
