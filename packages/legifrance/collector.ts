// The Légifrance collector: search pages of the crawl plan, consult each document with the endpoint for
// its kind, and upload it as JSON to Storage at legifrance/{category}/{id}.json (upsert, so a replay
// rewrites the same bytes). Documents are fetched concurrently; the PISTE client's token bucket keeps
// the request rate under the quota whatever the concurrency.
//
// MASSIVE: walks the plan page by page. A page's cursor advances only once every document on it is
// stored or recorded as failed, so a crash replays at most one page per category and loses nothing.
// MAINTENANCE: the newest page (50-100 documents) of each enabled category, no cursor.
import type postgres from "postgres";
import pLimit from "p-limit";
import { isConnectionLost, retryWhile, retryWhileUnreachable } from "../core/db.ts";
import { isStorageUnavailable, type ObjectStore } from "../storage/object-store.ts";
import type { LegifranceApi } from "./client.ts";
import { checkLegifranceId, consultRouteFor, documentPath } from "./ids.ts";
import { ENVELOPE_FORMAT } from "./parser.ts";

export interface CollectorDeps {
  sql: postgres.Sql;
  api: LegifranceApi;
  store: ObjectStore;
  bucket: string;
  /** Documents consulted + uploaded at once (default 8). */
  concurrency?: number;
  log?: (line: string) => void;
}

export interface PlanEntry {
  category: string;
  fond: string;
  query: string;
  filters: unknown[];
  page_size: number;
  next_page: number;
  total_results: number | null;
}

export interface CollectResult {
  runId: string | null;
  acquired: boolean;
  pages: number;
  collected: number;
  failed: number;
  done: boolean;
  stopped: boolean;
  /** MASSIVE: the error that ended this invocation early, and how many invocations in a row failed. */
  error?: string;
  consecutiveErrors?: number;
}

// How long an upload waits out Storage answering 5xx (a restart of it or of its database) before the
// document is recorded as failed: a PostgreSQL restart takes seconds, a crash recovery tens of them.
const STORAGE_RESTART_WAIT_MS = 60_000;

const NEWEST_SORT: Record<string, string> = {
  JURI: "DATE_DESC",
  CETAT: "DATE_DESC",
  JUFI: "DATE_DESC",
  CONSTIT: "DATE_DESC",
  CNIL: "DATE_DESC",
  JORF: "SIGNATURE_DATE_DESC",
  LODA_DATE: "SIGNATURE_DATE_DESC",
  LODA_ETAT: "SIGNATURE_DATE_DESC",
  KALI: "SIGNATURE_DATE_DESC",
  CIRC: "SIGNATURE_DATE_DESC",
  ACCO: "SIGNATURE_DATE_DESC",
  CODE_DATE: "DATE_DESC",
  CODE_ETAT: "DATE_DESC",
};

/** The /search body for one page of a plan entry, in the API's shape. */
export function searchBody(
  entry: Pick<PlanEntry, "fond" | "query" | "filters">,
  page: number,
  pageSize: number,
  newest = false,
) {
  const q = entry.query.trim();
  return {
    fond: entry.fond,
    recherche: {
      champs: q
        ? [{
          typeChamp: "ALL",
          criteres: [{ typeRecherche: "UN_DES_MOTS", valeur: q, operateur: "ET" }],
          operateur: "ET",
        }]
        : [],
      filtres: entry.filters,
      pageNumber: page,
      pageSize,
      operateur: "ET",
      sort: newest ? (NEWEST_SORT[entry.fond] ?? "DATE_DESC") : "PERTINENCE",
      typePagination: "DEFAUT",
    },
  };
}

/**
 * The document ids on a search page. Code and LODA results list their articles as `extracts` of type
 * "articles" under `sections`; the other fonds are one document per result (`titles[0].id`). Raw ids
 * are returned unvalidated: validation (and recording a bad one) is the caller's job.
 */
export function documentIdsOf(fond: string, page: unknown): { ids: unknown[]; total: number } {
  const p = page as { results?: unknown[]; totalResultNumber?: unknown };
  const ids: unknown[] = [];
  const articles = fond.startsWith("CODE_") || fond.startsWith("LODA_");
  for (const r of Array.isArray(p?.results) ? p.results : []) {
    const result = r as { titles?: { id?: unknown }[]; sections?: { extracts?: { id?: unknown; type?: unknown }[] }[] };
    if (articles) {
      for (const s of result.sections ?? []) {
        for (const x of s.extracts ?? []) if (x.type === "articles") ids.push(x.id);
      }
    } else if (result.titles?.[0]) {
      ids.push(result.titles[0].id);
    }
  }
  const seen = new Set<unknown>();
  return {
    ids: ids.filter((id) => (seen.has(id) ? false : (seen.add(id), true))),
    total: Number(p?.totalResultNumber ?? 0),
  };
}

type DocOutcome = { ok: true; id: string } | { ok: false; id: string; error: string };

/** MASSIVE uploads go to the files queue's bulk lane, so maintenance's fresh documents pass first. */
type Lane = "live" | "bulk";

async function collectDocument(
  deps: CollectorDeps,
  entry: Pick<PlanEntry, "category" | "fond">,
  rawId: unknown,
  runId: string | null,
  lane: Lane,
  signal?: AbortSignal,
): Promise<DocOutcome> {
  const check = checkLegifranceId(rawId);
  const shownId = typeof rawId === "string" ? rawId : JSON.stringify(rawId);
  if (!check.ok) {
    await deps
      .sql`select public.legifrance_record_failure(${runId}, ${entry.category}, ${shownId}, ${entry.fond}, ${check.reason})`;
    return { ok: false, id: shownId, error: check.reason };
  }
  const route = consultRouteFor(check.id);
  try {
    if (!route) throw new Error(`no consult endpoint known for ${check.prefix} ids`);
    const data = await deps.api.consult(route.endpoint, { [route.field]: check.id }, signal);
    const envelope = {
      format: ENVELOPE_FORMAT,
      id: check.id,
      category: entry.category,
      fond: entry.fond,
      endpoint: route.endpoint,
      data,
    };
    // PISTE served it: a Storage restart (or its database's) is waited out, not recorded against the
    // document, whose failure would then wait for another run to be collected again.
    await retryWhile(
      (e) => !signal?.aborted && isStorageUnavailable(e),
      () =>
        deps.store.put(
          deps.bucket,
          documentPath(entry.category, check.id),
          JSON.stringify(envelope),
          "application/json",
          { lane },
        ),
      Date.now() + STORAGE_RESTART_WAIT_MS,
    );
    return { ok: true, id: check.id };
  } catch (e) {
    if (signal?.aborted) throw e;
    const error = (e as Error).message ?? String(e);
    await deps
      .sql`select public.legifrance_record_failure(${runId}, ${entry.category}, ${check.id}, ${entry.fond}, ${error})`;
    return { ok: false, id: check.id, error };
  }
}

async function collectPage(
  deps: CollectorDeps,
  entry: PlanEntry,
  ids: unknown[],
  runId: string | null,
  lane: Lane,
  signal?: AbortSignal,
) {
  const limit = pLimit(deps.concurrency ?? 8);
  const outcomes = await Promise.all(
    ids.map((id) => limit(() => collectDocument(deps, entry, id, runId, lane, signal))),
  );
  const okIds = outcomes.filter((o) => o.ok).map((o) => o.id);
  if (okIds.length) await deps.sql`select public.legifrance_resolve_failures(${entry.category}, ${okIds}::text[])`;
  return { collected: okIds.length, failed: outcomes.length - okIds.length };
}

export interface MassiveOptions {
  runId?: string | null;
  /** Stop starting new pages after this many ms (the invocation's wall-clock budget). */
  budgetMs: number;
  /** Renewed on every page; a run whose lease lapses can be taken over. */
  leaseSeconds?: number;
  signal?: AbortSignal;
}

export async function collectMassive(deps: CollectorDeps, opts: MassiveOptions): Promise<CollectResult> {
  const t0 = performance.now();
  const lease = opts.leaseSeconds ?? 300;
  const [run] = await deps.sql<{ run_id: string; acquired: boolean }[]>`
    select * from public.legifrance_start_run('massive', ${opts.runId ?? null}, ${lease})`;
  const result: CollectResult = {
    runId: run.run_id,
    acquired: run.acquired,
    pages: 0,
    collected: 0,
    failed: 0,
    done: false,
    stopped: false,
  };
  if (!run.acquired) return result;

  let lastPageMs = 0;
  const deadline = Date.now() + opts.budgetMs; // epoch ms, as retryWhileUnreachable reads it
  try {
    for (;;) {
      try {
        const [entry] = await deps.sql<PlanEntry[]>`
          select category, fond, query, filters, page_size, next_page, total_results
            from public.legifrance_crawl_plan where enabled and not done order by category limit 1`;
        if (!entry) {
          result.done = true;
          await deps.sql`select public.legifrance_finish_run(${run.run_id}, 'completed')`;
          return result;
        }
        const [state] = await deps.sql<
          { status: string }[]
        >`select status from public.legifrance_collector_runs where id = ${run.run_id}`;
        if (state?.status !== "running") {
          result.stopped = true;
          return result;
        }
        // Start a page only if it can finish inside the budget (estimated from the last one).
        if (performance.now() - t0 + lastPageMs * 1.2 > opts.budgetMs) return result;

        const tPage = performance.now();
        const page = await deps.api.search(searchBody(entry, entry.next_page, entry.page_size), opts.signal);
        const { ids, total } = documentIdsOf(entry.fond, page);
        const { collected, failed } = await collectPage(deps, entry, ids, run.run_id, "bulk", opts.signal);
        // An empty page past the end closes the category even if the announced total was larger.
        const effectiveTotal = ids.length === 0 ? Math.min(total, (entry.next_page - 1) * entry.page_size) : total;
        await deps
          .sql`select public.legifrance_advance_plan(${run.run_id}, ${entry.category}, ${entry.next_page}, ${effectiveTotal}, ${collected}, ${failed}, ${lease})`;
        result.pages++;
        result.collected += collected;
        result.failed += failed;
        lastPageMs = performance.now() - tPage;
        deps.log?.(
          `massive ${entry.category} page ${entry.next_page}: ${collected} stored, ${failed} failed (${
            Math.round(lastPageMs)
          } ms)`,
        );
      } catch (e) {
        // The database went away (a restart, a failover): nothing of the page is lost, its cursor did not
        // move. Wait for the server within the budget and replay the page (uploads are upserts, the
        // cursor advances once); past the budget the invocation dies and its lease tells health so.
        if (opts.signal?.aborted || !isConnectionLost(e)) throw e;
        deps.log?.(`massive: database unreachable (${(e as Error).message}); waiting to replay the page`);
        await retryWhileUnreachable(() => deps.sql`select 1`, deadline);
      }
    }
  } catch (e) {
    // A killed invocation (aborted) just dies: its lease and cursor are what the next one resumes from.
    if (opts.signal?.aborted) throw e;
    result.error = (e as Error).message ?? String(e);
    const [r] = await deps.sql<
      { n: number | null }[]
    >`select public.legifrance_run_error(${run.run_id}, ${result.error}) as n`;
    result.consecutiveErrors = r?.n ?? 0;
    return result;
  }
}

export interface MaintenanceOptions {
  pageSize: number;
  signal?: AbortSignal;
}

export async function collectMaintenance(deps: CollectorDeps, opts: MaintenanceOptions): Promise<CollectResult> {
  const [run] = await deps.sql<
    { run_id: string; acquired: boolean }[]
  >`select * from public.legifrance_start_run('maintenance', null, 600)`;
  const entries = await deps.sql<PlanEntry[]>`
    select category, fond, query, filters, page_size, next_page, total_results
      from public.legifrance_crawl_plan where enabled order by category`;
  const result: CollectResult = {
    runId: run.run_id,
    acquired: true,
    pages: 0,
    collected: 0,
    failed: 0,
    done: true,
    stopped: false,
  };
  try {
    for (const entry of entries) {
      const page = await deps.api.search(searchBody(entry, 1, opts.pageSize, true), opts.signal);
      const { ids } = documentIdsOf(entry.fond, page);
      const { collected, failed } = await collectPage(deps, entry, ids, run.run_id, "live", opts.signal);
      // Per category, so legifrance_collector_status shows what maintenance collected.
      await deps
        .sql`select public.legifrance_record_maintenance_page(${run.run_id}, ${entry.category}, ${collected}, ${failed})`;
      result.pages++;
      result.collected += collected;
      result.failed += failed;
    }
  } catch (e) {
    // No cursor to keep: the next scheduled run starts over from the newest page anyway.
    await deps.sql`select public.legifrance_finish_run(${run.run_id}, 'failed', ${(e as Error).message ?? String(e)})`;
    throw e;
  }
  await deps.sql`select public.legifrance_finish_run(${run.run_id}, 'completed')`;
  return result;
}

/** Asks the active MASSIVE run to stop; it stops before its next page. */
export async function stopMassive(sql: postgres.Sql): Promise<number> {
  const rows = await sql`
    update public.legifrance_collector_runs set status = 'stopped', finished_at = now(), updated_at = now()
     where mode = 'massive' and status = 'running' returning id`;
  return rows.length;
}
