// process-files-queue: claims files_queue rows (SQL: claim_files_queue, SKIP LOCKED + lease), downloads
// each file from Storage, parses it, and upserts legal_documents, completing the rows in the same
// transaction. No transaction is open while files are downloaded.
// - A file that does not parse (malformed JSON, unknown shape, not one of the collector's paths) fails
//   alone and for good, with the reason: retrying cannot fix its bytes.
// - A download error is transient: the row backs off and is retried, then dead-lettered.
// - A row is written only when its parse_hash (the parsed document's hash) or its file changed, so a
//   resync of unchanged files (public.resync_legal_documents) rewrites and re-embeds nothing.
// - in_force is not written here: a trigger computes it from the status and dates (SQL decides).
import { z } from "zod";
import pLimit from "p-limit";
import type postgres from "postgres";
import { errorResponse, guardRequest, json } from "../core/http.ts";
import { documentHash, type LegalDocument, parseCollectedFile } from "../legifrance/parser.ts";
import { parseDocumentPath } from "../legifrance/ids.ts";
import type { FilesContext } from "./context.ts";
import type { ObjectStore } from "./object-store.ts";

export const workerBodySchema = z.object({
  batchSize: z.number().int().min(1).max(500).default(50),
  budgetMs: z.number().int().min(100).max(140_000).optional(),
  concurrency: z.number().int().min(1).max(32).default(8),
}).strict();
export type WorkerBody = z.infer<typeof workerBodySchema>;

interface Claimed {
  id: string;
  file_path: string;
  bucket_id: string;
}

export interface WorkerResult {
  claimed: number;
  stored: number;
  failed: number;
  superseded: number;
  /** Stored files whose parsed result was already in legal_documents (no write, no re-embedding). */
  unchanged: number;
  batches: number;
  ms: number;
}

export async function processFilesQueue(
  deps: { sql: postgres.Sql; store: ObjectStore; workerId?: string },
  opts: { batchSize: number; budgetMs: number; concurrency?: number; leaseSeconds?: number },
): Promise<WorkerResult> {
  const t0 = performance.now();
  const worker = deps.workerId ?? `files-${crypto.randomUUID()}`;
  const { sql, store } = deps;
  const r: WorkerResult = { claimed: 0, stored: 0, failed: 0, superseded: 0, unchanged: 0, batches: 0, ms: 0 };
  const limit = pLimit(opts.concurrency ?? 8);
  let lastMs = 0;
  while (performance.now() - t0 + lastMs * 1.5 < opts.budgetMs) {
    const tb = performance.now();
    const rows = await sql<Claimed[]>`
      select id, file_path, bucket_id from public.claim_files_queue(${worker}, ${opts.batchSize}, ${opts.leaseSeconds ?? 120})`;
    if (rows.length === 0) break;
    r.batches++;
    r.claimed += rows.length;

    const outcomes = await Promise.all(rows.map((row) => limit(async () => {
      const path = parseDocumentPath(row.file_path);
      if (!path) return { row, error: `not a collected Légifrance path: ${row.file_path}`, permanent: true };
      let text: string;
      try {
        text = await store.get(row.bucket_id, row.file_path);
      } catch (e) {
        return { row, error: (e as Error).message, permanent: false };
      }
      const parsed = parseCollectedFile(text);
      if (!parsed.ok) return { row, error: parsed.reason, permanent: true };
      if (parsed.doc.id !== path.id || parsed.doc.category !== path.category) {
        return { row, error: `file content (${parsed.doc.category}/${parsed.doc.id}) does not match its path`, permanent: true };
      }
      return { row, doc: parsed.doc };
    })));

    const good = outcomes.filter((o): o is { row: Claimed; doc: LegalDocument } => "doc" in o && !!o.doc);
    for (const o of outcomes) {
      if ("error" in o && o.error) {
        const [f] = await sql<{ status: string | null }[]>`
          select public.fail_files_queue(${worker}, ${o.row.id}, ${o.error}, ${o.permanent}) as status`;
        if (f?.status) r.failed++;
      }
    }
    if (good.length) {
      const docs = good.map((o) => ({ ...o.doc, parse_hash: documentHash(o.doc), file_path: o.row.file_path }));
      await sql.begin(async (tx) => {
        // Only rows this worker still leases are written: a file re-uploaded meanwhile is pending
        // again and its newer content will be processed by the next claim.
        const done = await tx<{ id: string }[]>`
          select id from public.complete_files_queue(${worker}, ${good.map((o) => o.row.id)}::bigint[]) as id`;
        const doneIds = new Set(done.map((d) => String(d.id)));
        const keep = docs.filter((_, i) => doneIds.has(String(good[i].row.id)));
        r.superseded += docs.length - keep.length;
        if (keep.length) {
          const written = await tx`
            insert into public.legal_documents as d (id, category, fond, doc_type, title, number, legal_status,
              start_date, end_date, parent_id, parent_title, parent_title_long, section_path, url, modifications,
              content, parse_hash, file_path, collected_at)
            select x.id, x.category, x.fond, x.doc_type, x.title, x.number, x.legal_status,
                   x.start_date, x.end_date, x.parent_id, x.parent_title, x.parent_title_long, x.section_path, x.url,
                   x.modifications, x.content, x.parse_hash, x.file_path, now()
              from jsonb_to_recordset(${tx.json(keep as unknown as postgres.JSONValue)}) as x(
                id text, category text, fond text, doc_type text, title text, number text, legal_status text,
                start_date date, end_date date, parent_id text, parent_title text, parent_title_long text,
                section_path text, url text, modifications jsonb, content text, parse_hash text, file_path text)
            on conflict (id) do update set
              category = excluded.category, fond = excluded.fond, doc_type = excluded.doc_type, title = excluded.title,
              number = excluded.number, legal_status = excluded.legal_status, start_date = excluded.start_date,
              end_date = excluded.end_date, parent_id = excluded.parent_id, parent_title = excluded.parent_title,
              parent_title_long = excluded.parent_title_long, section_path = excluded.section_path,
              url = excluded.url, modifications = excluded.modifications, content = excluded.content,
              parse_hash = excluded.parse_hash, file_path = excluded.file_path,
              collected_at = excluded.collected_at, updated_at = now()
            where (d.parse_hash, d.file_path) is distinct from (excluded.parse_hash, excluded.file_path)`;
          r.unchanged += keep.length - written.count;
        }
        r.stored += keep.length;
      });
    }
    lastMs = performance.now() - tb;
  }
  r.ms = Math.round(performance.now() - t0);
  return r;
}

export function workerHandler(ctx: () => FilesContext, defaultBudgetMs = 100_000) {
  return async (req: Request): Promise<Response> => {
    const g = await guardRequest(req, workerBodySchema);
    if (!g.ok) return g.response;
    const body = g.value.body;
    try {
      const { sql, store } = ctx();
      const result = await processFilesQueue({ sql, store }, {
        batchSize: body.batchSize, budgetMs: body.budgetMs ?? defaultBudgetMs, concurrency: body.concurrency,
      });
      return json(result);
    } catch (e) {
      return errorResponse(500, "process-files-queue failed", (e as Error).message);
    }
  };
}
