// The process-embedding-queue function's logic: runbook body shapes, role rules, and the actions.
// The Deno entry only wires the environment to this handler.
import { z } from "zod";
import type postgres from "postgres";
import { connectDb, retryWhileUnreachable } from "../core/db.ts";
import { parseEnv, platformEnvSchema, readEnv } from "../core/env.ts";
import { errorResponse, guardRequest, json, readsNeedAuthenticated } from "../core/http.ts";
import { assertDimensionsMatch, createProvider, type EmbeddingEnv, parseEmbeddingEnv } from "./config.ts";
import { processEmbeddingQueue } from "./pipeline.ts";
import type { EmbeddingProvider } from "./provider.ts";

export const processQueueBodySchema = z.discriminatedUnion("action", [
  z.object({
    action: z.literal("process"),
    batchSize: z.number().int().min(1).max(500).default(50),
    // Set by the live wake: claim only live jobs (see claim_embedding_jobs).
    lane: z.enum(["live", "bulk"]).optional(),
  }),
  z.object({
    action: z.literal("resync"),
    forceResync: z.string().min(1).max(200).nullable().default(null),
    // true: re-enqueue every row (a model change); default: only rows whose text or metadata changed.
    force: z.boolean().default(false),
  }),
  z.object({ action: z.literal("status") }),
  z.object({ action: z.literal("cleanup") }),
]);
export type ProcessQueueBody = z.infer<typeof processQueueBodySchema>;

interface Runtime {
  sql: postgres.Sql;
  provider: EmbeddingProvider;
  env: EmbeddingEnv;
}

/**
 * Builds the handler. Configuration is checked on first use (the database must be reachable to
 * read the table's dimension); a bad configuration, such as EMBEDDING_DIMENSIONS not matching
 * documentation_embeddings, makes every request fail with that clear error until it is fixed.
 */
export function createProcessEmbeddingQueueHandler(source: Record<string, string | undefined> = readEnv()) {
  let runtime: Promise<Runtime> | undefined;
  const workerPrefix = `peq-${crypto.randomUUID().slice(0, 8)}`;
  let invocation = 0;

  const init = async (): Promise<Runtime> => {
    const platform = parseEnv(platformEnvSchema, source);
    const env = parseEmbeddingEnv(source);
    const provider = createProvider(env);
    const sql = connectDb(platform.SUPABASE_DB_URL, { max: 6 });
    try {
      const [{ dims }] = await sql<{ dims: number | null }[]>`select public.embedding_dimensions() as dims`;
      assertDimensionsMatch(provider, dims);
    } catch (e) {
      await sql.end({ timeout: 1 });
      throw e;
    }
    return { sql, provider, env };
  };
  const getRuntime = () => {
    runtime ??= init().catch((e) => {
      runtime = undefined; // a database that was down may be up next time; a bad config fails again
      throw e;
    });
    return runtime;
  };

  return async function handle(req: Request): Promise<Response> {
    const guarded = await guardRequest(
      req,
      processQueueBodySchema,
      readsNeedAuthenticated("action", ["status"]),
      source,
    );
    if (!guarded.ok) return guarded.response;
    const body = guarded.value.body;
    let rt: Runtime;
    try {
      rt = await getRuntime();
    } catch (e) {
      console.error(`process-embedding-queue: ${e instanceof Error ? e.message : e}`);
      return errorResponse(500, e instanceof Error ? e.message : "configuration error");
    }
    const { sql, provider, env } = rt;
    try {
      switch (body.action) {
        case "process": {
          const r = await processEmbeddingQueue(sql, provider, {
            workerId: `${workerPrefix}-${++invocation}`,
            batchSize: body.batchSize,
            budgetMs: env.EMBEDDING_BUDGET_MS,
            leaseSeconds: env.EMBEDDING_LEASE_SECONDS,
            concurrency: env.EMBEDDING_REQUEST_CONCURRENCY,
            maxAttempts: env.EMBEDDING_MAX_ATTEMPTS,
            lingerAfterWake: true,
            lane: body.lane,
          });
          // Out of time with work left: one successor (same body) through pg_net, so a large backlog
          // drains continuously instead of waiting for the 5-minute cron. SQL checks that jobs are ready.
          let continued = false;
          if (r.outOfBudget && r.batches > 0 && !r.fatalError) {
            // Through a database restart too: a run that drained on past one must still hand over.
            const [c] = await retryWhileUnreachable(() =>
              sql<{ id: string | null }[]>`
              select private.continue_embedding_worker(${sql.json(body)}) as id`, Date.now() + 30_000);
            continued = c?.id != null;
          }
          // Every count of the run. Running out of time is internal: the answer says `continued` instead.
          const { outOfBudget: _outOfBudget, fatalError, ...counts } = r;
          return json({
            ...counts,
            continued,
            provider: provider.name,
            model: provider.model,
            ...(fatalError ? { error: fatalError } : {}),
          });
        }
        case "resync": {
          const rows = await sql<{ source_table: string; enqueued: string; deletes: string }[]>`
            select * from public.resync_embedding_sources(${body.forceResync}, ${body.force})`;
          return json({
            tables: rows.map((r) => ({
              source_table: r.source_table,
              enqueued: Number(r.enqueued),
              deletes: Number(r.deletes),
            })),
            enqueued: rows.reduce((n, r) => n + Number(r.enqueued), 0),
            deletes: rows.reduce((n, r) => n + Number(r.deletes), 0),
          });
        }
        case "status": {
          const queue = await sql`
            select source_table, pending::int, processing::int, completed::int, failed::int,
                   extract(epoch from oldest_pending_age)::float8 as oldest_pending_seconds
            from public.embedding_sync_status order by source_table`;
          const [{ stuck }] = await sql<
            { stuck: number }[]
          >`select count(*)::int as stuck from public.embedding_sync_stuck`;
          return json({
            queue,
            stuck,
            provider: provider.name,
            model: provider.model,
            dimensions: provider.dimensions,
          });
        }
        case "cleanup": {
          const [{ recovered }] = await sql<
            { recovered: number }[]
          >`select public.recover_stuck_embedding_jobs() as recovered`;
          const [{ deleted }] = await sql<{ deleted: number }[]>`select public.cleanup_embedding_queue() as deleted`;
          return json({ recovered, deleted });
        }
      }
    } catch (e) {
      const err = e as { code?: string; message?: string };
      if (err.code === "22023") return errorResponse(400, err.message ?? "invalid request");
      console.error(`process-embedding-queue ${body.action}: ${err.message ?? e}`);
      return errorResponse(500, `${body.action} failed: ${err.message ?? "unexpected error"}`);
    }
  };
}
