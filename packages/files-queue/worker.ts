// process-files-queue: claims files_queue rows (SQL: claim_files_queue, SKIP LOCKED + lease), and hands
// each file to its bucket's handler (files_queue_watched_buckets.handler): the handler downloads and
// parses it with no transaction open, then writes its rows in the transaction that completes the queue
// rows. Handlers: legifrance (collected JSON -> legal_documents), client-documents (PDF, Markdown, text
// -> client_documents + pages).
// - A file that cannot be parsed (malformed, unknown shape, bad path, no text, too large) fails alone
//   and for good, with the reason: retrying cannot fix its bytes.
// - A download error is transient: the row backs off and is retried, then dead-lettered.
// - A handler writes a row only when its parsed result changed (legal_documents.parse_hash), so a
//   resync of unchanged files (public.resync_legal_documents) rewrites and re-embeds nothing.
import { z } from "zod";
import pLimit from "p-limit";
import type postgres from "postgres";
import { errorResponse, guardRequest, json } from "../core/http.ts";
import type { FilesContext } from "../storage/context.ts";
import { clientDocumentsHandler } from "./handlers/client-documents.ts";
import { legifranceHandler } from "./handlers/legifrance.ts";
import type { ClaimedFile, FileFailure, FileHandler } from "./handlers/types.ts";
import type { ObjectStore } from "../storage/object-store.ts";

export const workerBodySchema = z.object({
  batchSize: z.number().int().min(1).max(500).default(50),
  budgetMs: z.number().int().min(100).max(140_000).optional(),
  concurrency: z.number().int().min(1).max(32).default(8),
}).strict();
export type WorkerBody = z.infer<typeof workerBodySchema>;

export interface WorkerResult {
  claimed: number;
  stored: number;
  failed: number;
  superseded: number;
  /** Stored files whose parsed result was already written (no write, no re-embedding). */
  unchanged: number;
  batches: number;
  ms: number;
}

export interface WorkerOptions {
  batchSize: number;
  budgetMs: number;
  concurrency?: number;
  leaseSeconds?: number;
  /** Client documents over this size fail alone (default 20 MB; CLIENT_DOCUMENTS_MAX_BYTES). */
  maxClientDocumentBytes?: number;
  /** Keep polling while a webhook wake is recent (uploads coalesced into it may still commit). */
  lingerAfterWake?: boolean;
}

type AnyHandler = FileHandler<any>;

export function fileHandlers(opts: { maxClientDocumentBytes?: number } = {}): Record<string, AnyHandler> {
  return {
    "legifrance": legifranceHandler,
    "client-documents": clientDocumentsHandler({ maxBytes: opts.maxClientDocumentBytes }),
  };
}

type Outcome = { row: ClaimedFile; handler: string; value: unknown } | ({ row: ClaimedFile } & FileFailure);

export async function processFilesQueue(
  deps: { sql: postgres.Sql; store: ObjectStore; workerId?: string },
  opts: WorkerOptions,
): Promise<WorkerResult> {
  const t0 = performance.now();
  const worker = deps.workerId ?? `files-${crypto.randomUUID()}`;
  const { sql, store } = deps;
  const handlers = fileHandlers(opts);
  const r: WorkerResult = { claimed: 0, stored: 0, failed: 0, superseded: 0, unchanged: 0, batches: 0, ms: 0 };
  const limit = pLimit(opts.concurrency ?? 8);
  let lastMs = 0;
  while (performance.now() - t0 + lastMs * 1.5 < opts.budgetMs) {
    const tb = performance.now();
    const rows = await sql<ClaimedFile[]>`
      select id, file_path, bucket_id, file_size, lane from public.claim_files_queue(${worker}, ${opts.batchSize}, ${
      opts.leaseSeconds ?? 120
    })`;
    if (rows.length === 0) {
      // Uploads inside a wake's window make no call of their own: the woken worker keeps polling
      // until a window after the last wake, or they would wait for the minute's cron dispatch.
      if (opts.lingerAfterWake && performance.now() - t0 + 500 < opts.budgetMs && (await recentlyWoken(sql))) {
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      break;
    }
    r.batches++;
    r.claimed += rows.length;
    const buckets = await sql<{ bucket_id: string; handler: string }[]>`
      select bucket_id, handler from public.files_queue_watched_buckets where bucket_id = any(${[
      ...new Set(rows.map((x) => x.bucket_id)),
    ]})`;
    const handlerOf = new Map(buckets.map((b) => [b.bucket_id, b.handler]));

    const outcomes: Outcome[] = await Promise.all(rows.map((row) =>
      limit(async (): Promise<Outcome> => {
        const name = handlerOf.get(row.bucket_id);
        const handler = name ? handlers[name] : undefined;
        if (!name || !handler) {
          return { row, error: `bucket ${row.bucket_id} is not watched by any handler`, permanent: true };
        }
        try {
          const p = await handler.prepare(row, { store, sql });
          return "value" in p ? { row, handler: name, value: p.value } : { row, ...p };
        } catch (e) {
          return { row, error: (e as Error).message, permanent: false };
        }
      })
    ));

    for (const o of outcomes) {
      if ("error" in o) {
        const [f] = await sql<{ status: string | null }[]>`
          select public.fail_files_queue(${worker}, ${o.row.id}, ${o.error}, ${o.permanent}) as status`;
        if (f?.status) r.failed++;
      }
    }
    const good = outcomes.filter((o): o is Extract<Outcome, { handler: string }> => "handler" in o);
    if (good.length) {
      await sql.begin(async (tx) => {
        // Only rows this worker still leases are written: a file re-uploaded meanwhile is pending
        // again and its newer content will be processed by the next claim.
        const done = await tx<{ id: string }[]>`
          select id from public.complete_files_queue(${worker}, ${good.map((o) => o.row.id)}::bigint[]) as id`;
        const doneIds = new Set(done.map((d) => String(d.id)));
        const keep = good.filter((o) => doneIds.has(String(o.row.id)));
        r.superseded += good.length - keep.length;
        // A bulk file's rows queue bulk embedding jobs (a MASSIVE collection, a resync), so an
        // editor's live change is never queued behind them. The setting lasts until commit.
        for (const lane of ["live", "bulk"] as const) {
          const inLane = keep.filter((o) => (o.row.lane ?? "live") === lane);
          if (!inLane.length) continue;
          await tx`select set_config('embedding_sync.lane', ${lane}, true)`;
          for (const name of new Set(inLane.map((o) => o.handler))) {
            r.unchanged += await handlers[name].write(tx, inLane.filter((o) => o.handler === name));
          }
        }
        r.stored += keep.length;
      });
    }
    lastMs = performance.now() - tb;
  }
  r.ms = Math.round(performance.now() - t0);
  return r;
}

async function recentlyWoken(sql: postgres.Sql): Promise<boolean> {
  const [r] = await sql<{ linger: boolean }[]>`select public.files_queue_recently_woken() as linger`;
  return !!r?.linger;
}

const workerEnvSchema = z.object({
  CLIENT_DOCUMENTS_MAX_BYTES: z.coerce.number().int().min(1).max(1024 * 1024 * 1024).optional(),
});

export function workerHandler(
  ctx: () => FilesContext,
  defaultBudgetMs = 100_000,
  env?: Record<string, string | undefined>,
) {
  return async (req: Request): Promise<Response> => {
    const g = await guardRequest(req, workerBodySchema, undefined, env);
    if (!g.ok) return g.response;
    const body = g.value.body;
    try {
      const { sql, store, env: source } = ctx();
      const cfg = workerEnvSchema.safeParse(env ?? source ?? {});
      if (!cfg.success) return errorResponse(500, "invalid CLIENT_DOCUMENTS_MAX_BYTES");
      const result = await processFilesQueue({ sql, store }, {
        batchSize: body.batchSize,
        budgetMs: body.budgetMs ?? defaultBudgetMs,
        concurrency: body.concurrency,
        maxClientDocumentBytes: cfg.data.CLIENT_DOCUMENTS_MAX_BYTES,
        lingerAfterWake: true,
      });
      return json(result);
    } catch (e) {
      return errorResponse(500, "process-files-queue failed", (e as Error).message);
    }
  };
}
