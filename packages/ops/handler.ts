// The `health` function's logic, also mounted by `npm run dashboard` against a database URL:
//   GET  …/health[?probe=provider]   any valid caller: status + environment; service role: every check's detail
//   GET  …/health/dashboard[?hours=] service role: the report plus metrics over time, dead letters, open alerts
//   POST …/health/retry {ids}        service role: dead-letter jobs back to pending
//   POST …/health/retry-files {ids}  service role: failed files back to pending
// The check logic is packages/ops/checks.ts; this file only routes, authorises and shapes answers.
import { z } from "zod";
import type postgres from "postgres";
import type { Role } from "../core/auth.ts";
import { errorResponse, json, type Parsed, readJson, validateBody } from "../core/http.ts";
import { type HealthOptions, runHealthChecks } from "./checks.ts";
import { type HealthReport, httpStatusOf, redact } from "./report.ts";
import { type TopUser, topUsers } from "./top-users.ts";

export interface HealthHandlerDeps {
  sql: () => postgres.Sql;
  /** The caller's role, or the 401 to answer (the functions' one `unauthorizedResponse`, with its reason). */
  authorize: (req: Request) => Parsed<Role> | Promise<Parsed<Role>>;
  options: () => Omit<HealthOptions, "probeProvider">;
}

const healthQuerySchema = z.object({ probe: z.enum(["provider"]).optional() });
const dashboardQuerySchema = z.object({ hours: z.coerce.number().int().min(1).max(168).default(6) });
export const retryBodySchema = z.object({ ids: z.array(z.number().int().positive()).min(1).max(500) });

export interface DashboardData {
  report: HealthReport;
  series: Array<{
    sampled_at: string;
    queue_by_status: Record<string, number>;
    /** {"live": {"pending": n, ...}, "bulk": {...}}: the backlog per priority lane. */
    queue_by_lane: Record<string, Record<string, number>>;
    files_inserted: number;
    jobs_completed: number;
  }>;
  dead_letters: Array<
    {
      id: number;
      source_table: string;
      source_id: string;
      action: string;
      retry_count: number;
      last_error: string | null;
      created_at: string;
    }
  >;
  /** The files_queue rows the files worker gave up on, newest first, with the reason. */
  failed_files: Array<
    { id: number; bucket_id: string; file_path: string; attempts: number; last_error: string | null; failed_at: string }
  >;
  alerts: Array<{ id: number; kind: string; subject: string; message: string; opened_at: string }>;
  /** The most active users over the last 30 days (usage_by_user). */
  top_users: TopUser[];
}

/** What the dashboard page shows, read in one go (the report's checks carry coverage, coherence and the plan). */
export async function dashboardData(sql: postgres.Sql, options: HealthOptions, hours: number): Promise<DashboardData> {
  const [report, series, dead, alerts, failedFiles] = await Promise.all([
    runHealthChecks(sql, options),
    sql<
      {
        sampled_at: Date;
        queue_by_status: Record<string, number>;
        queue_by_lane: Record<string, Record<string, number>>;
        files_inserted: number;
        jobs_completed: number;
      }[]
    >`
      select sampled_at, queue_by_status, queue_by_lane, files_inserted, jobs_completed from ops_metrics
       where sampled_at > now() - make_interval(hours => ${hours}) order by sampled_at`,
    sql<
      {
        id: string;
        source_table: string;
        source_id: string;
        action: string;
        retry_count: number;
        last_error: string | null;
        created_at: Date;
      }[]
    >`
      select id, source_table, source_id, action, retry_count, left(last_error, 300) as last_error, created_at
        from embedding_sync_dead_letter order by id desc limit 100`,
    sql<{ id: string; kind: string; subject: string; message: string; opened_at: Date }[]>`
      select id, kind, subject, message, opened_at from ops_alerts where resolved_at is null order by opened_at desc, id desc`,
    sql<
      {
        id: string;
        bucket_id: string;
        file_path: string;
        attempts: number;
        last_error: string | null;
        failed_at: Date;
      }[]
    >`
      select * from ops_failed_files(100)`,
  ]);
  return {
    report,
    series: series.map((s) => ({ ...s, sampled_at: s.sampled_at.toISOString() })),
    dead_letters: dead.map((d) => ({ ...d, id: Number(d.id), created_at: d.created_at.toISOString() })),
    alerts: alerts.map((a) => ({ ...a, id: Number(a.id), opened_at: a.opened_at.toISOString() })),
    top_users: await topUsers(sql),
    failed_files: failedFiles.map((f) => ({ ...f, id: Number(f.id), failed_at: f.failed_at.toISOString() })),
  };
}

export function createHealthHandler(deps: HealthHandlerDeps): (req: Request) => Promise<Response> {
  return async (req) => {
    const url = new URL(req.url);
    // Hosted and local runtimes both hand the function a path that starts …/health.
    const sub = url.pathname.replace(/^.*?\/health(?=\/|$)/, "").replace(/\/$/, "");
    const auth = await deps.authorize(req);
    if (!auth.ok) return auth.response;
    const role = auth.value;
    const query = Object.fromEntries(url.searchParams);

    if (sub === "") {
      if (req.method !== "GET") return json({ error: "method not allowed" }, 405, { allow: "GET" });
      const q = healthQuerySchema.safeParse(query);
      if (!q.success) return errorResponse(400, "invalid query", z.treeifyError(q.error));
      // A probe spends a provider call: only the service role may ask for one.
      const probe = q.data.probe === "provider" && role === "service_role";
      const report = await runHealthChecks(deps.sql(), { ...deps.options(), probeProvider: probe });
      return json(role === "service_role" ? report : redact(report), httpStatusOf(report), {
        "cache-control": "no-store",
      });
    }
    if (role !== "service_role") {
      return errorResponse(403, "forbidden", "this requires the service role (a secret key)");
    }

    if (sub === "/dashboard") {
      if (req.method !== "GET") return json({ error: "method not allowed" }, 405, { allow: "GET" });
      const q = dashboardQuerySchema.safeParse(query);
      if (!q.success) return errorResponse(400, "invalid query", z.treeifyError(q.error));
      return json(await dashboardData(deps.sql(), deps.options(), q.data.hours), 200, { "cache-control": "no-store" });
    }
    if (sub === "/retry") {
      if (req.method !== "POST") return json({ error: "method not allowed" }, 405, { allow: "POST" });
      const body = validateBody(await readJson(req), retryBodySchema);
      if (!body.ok) return body.response;
      const [r] = await deps.sql()<
        { n: number }[]
      >`select retry_embedding_dead_letter(${body.value.ids}::bigint[]) as n`;
      return json({ retried: r.n });
    }
    if (sub === "/retry-files") {
      if (req.method !== "POST") return json({ error: "method not allowed" }, 405, { allow: "POST" });
      const body = validateBody(await readJson(req), retryBodySchema);
      if (!body.ok) return body.response;
      const [r] = await deps.sql()<{ n: number }[]>`select retry_failed_files(${body.value.ids}::bigint[]) as n`;
      return json({ retried: r.n });
    }
    return errorResponse(404, "not found");
  };
}
