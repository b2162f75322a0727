// repopulate-files-queue: rebuilds or repairs files_queue from storage.objects in keyset batches
// (SQL: files_queue_repopulate_batch), until done or until the wall-clock budget runs out; then it
// continues itself through pg_net with the cursor. Each batch is its own statement (autocommit), so a
// run that dies keeps what it inserted and a replay from an older cursor only finds conflicts.
import { z } from "zod";
import type postgres from "postgres";
import { retryWhileUnreachable } from "../core/db.ts";
import { errorResponse, guardRequest, json } from "../core/http.ts";
import { continueViaPgNet, type FilesContext } from "../storage/context.ts";
import { bucketNameSchema } from "../storage/object-store.ts";

export const repopulateBodySchema = z.object({
  bucket: bucketNameSchema,
  batchSize: z.number().int().min(1).max(100_000).default(10_000),
  cursor: z.string().max(1024).nullable().optional(),
  dryRun: z.boolean().default(false),
  /** Wall-clock budget of this invocation (default 100 s); at least one batch always runs. */
  budgetMs: z.number().int().min(1).max(140_000).optional(),
}).strict();
export type RepopulateBody = z.infer<typeof repopulateBodySchema>;

export interface RepopulateResult {
  inserted: number;
  scanned: number;
  cursor: string | null;
  done: boolean;
  batches: number;
  /** dryRun only: rows missing from the queue in the scanned range (nothing inserted). */
  missing?: number;
  continued?: boolean;
}

export async function repopulate(sql: postgres.Sql, body: RepopulateBody, budgetMs: number): Promise<RepopulateResult> {
  const t0 = performance.now();
  const t0Epoch = Date.now();
  const r: RepopulateResult = { inserted: 0, scanned: 0, cursor: body.cursor ?? null, done: false, batches: 0 };
  let missing = 0;
  let lastMs = 0;
  while (!r.done && performance.now() - t0 + lastMs * 1.5 < budgetMs) {
    const tb = performance.now();
    // A batch replayed from the same cursor only meets conflicts, so a restart of the database in the
    // middle of a rebuild is waited out (within the budget) instead of losing the cursor.
    const [b] = await retryWhileUnreachable(
      () =>
        sql<{ inserted: string; scanned: string; cursor: string | null; done: boolean }[]>`
      select * from public.files_queue_repopulate_batch(${body.bucket}, ${r.cursor}, ${body.batchSize}, ${body.dryRun})`,
      t0Epoch + budgetMs,
    );
    lastMs = performance.now() - tb;
    r.batches++;
    r.scanned += Number(b.scanned);
    if (body.dryRun) missing += Number(b.inserted);
    else r.inserted += Number(b.inserted);
    r.cursor = b.cursor;
    r.done = b.done;
  }
  if (body.dryRun) r.missing = missing;
  return r;
}

export function repopulateHandler(ctx: () => FilesContext, defaultBudgetMs = 100_000) {
  return async (req: Request): Promise<Response> => {
    const g = await guardRequest(req, repopulateBodySchema);
    if (!g.ok) return g.response;
    const body = g.value.body;
    try {
      const { sql } = ctx();
      const [bucket] = await sql`select id from storage.buckets where id = ${body.bucket}`;
      if (!bucket) return errorResponse(404, `bucket ${body.bucket} does not exist`);
      const result = await repopulate(sql, body, body.budgetMs ?? defaultBudgetMs);
      if (!result.done && !body.dryRun) {
        result.continued = await continueViaPgNet(sql, "repopulate-files-queue", {
          bucket: body.bucket,
          batchSize: body.batchSize,
          cursor: result.cursor,
          dryRun: false,
          ...(body.budgetMs ? { budgetMs: body.budgetMs } : {}),
        });
      }
      return json(result);
    } catch (e) {
      return errorResponse(500, "repopulate failed", (e as Error).message);
    }
  };
}
