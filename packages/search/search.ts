// The search function's logic: body schema, the query (with the caller's rights), the live source rows,
// and the log entry. Order matters: the query is embedded first (cache, then provider; no transaction
// open), then one short transaction searches with the caller's rights, then the log is written.
import { z } from "zod";
import type postgres from "postgres";
import type { Caller } from "../core/auth.ts";
import { pgUuid } from "../core/validation.ts";
import type { EmbeddingProvider } from "../embeddings/provider.ts";
import { embedQuery } from "./query-cache.ts";
import { withCallerRights } from "./rights.ts";

const metadataValue = z.union([z.string().max(500), z.number(), z.boolean()]);

export const searchBodySchema = z.object({
  query: z.string().trim().min(1).max(2000),
  matchCount: z.number().int().min(1).max(50).default(8),
  mode: z.enum(["hybrid", "vector", "text"]).default("hybrid"),
  filter: z.object({ source_table: z.string().min(1).max(200).optional() })
    .catchall(metadataValue)
    .refine((f) => Object.keys(f).length <= 20, "at most 20 filter keys")
    .default({}),
  includeSource: z.boolean().default(false),
  conversationId: pgUuid.optional(),
}).strict();
export type SearchBody = z.infer<typeof searchBodySchema>;

export interface SearchResult {
  source_table: string;
  source_id: string;
  chunk_index: number;
  content: string;
  score: number;
  metadata: Record<string, unknown>;
  source?: Record<string, unknown> | null;
}

export interface SearchAnswer {
  results: SearchResult[];
  logId: string;
  conversationId: string;
  cached: boolean;
}

/** Thrown when the index was embedded with another model than the one this function queries with. */
export class IndexModelMismatch extends Error {}

const modelCheck = new WeakMap<postgres.Sql, { model: string; at: number }>();

/**
 * Refuses to search an index embedded with another model: its vectors are not comparable with the
 * query's. Checked once a minute per connection pool (the query scans the chunks' model column).
 */
export async function assertIndexModel(sql: postgres.Sql, provider: EmbeddingProvider): Promise<void> {
  const seen = modelCheck.get(sql);
  if (seen && seen.model === provider.model && Date.now() - seen.at < 60_000) return;
  const rows = await sql<{ model: string }[]>`
    select distinct model from (select model from public.documentation_embeddings where model <> ${provider.model} limit 1) m`;
  if (rows.length) {
    throw new IndexModelMismatch(
      `the index holds chunks embedded with model "${rows[0].model}", but this function embeds queries with ` +
        `"${provider.model}" (${provider.name}); set EMBEDDING_MODEL/EMBEDDING_PROVIDER to the index's, or re-embed the index`,
    );
  }
  modelCheck.set(sql, { model: provider.model, at: Date.now() });
}

interface Row {
  id: string;
  source_table: string;
  source_id: string;
  chunk_index: number;
  content: string;
  metadata: Record<string, unknown>;
  score: number;
  similarity: number | null;
  source?: Record<string, unknown> | null;
}

/** Full-text matches checked against a user's rights (the best ones by rank). */
const TEXT_CANDIDATES = 200;

/** Runs one search for `caller` and logs it. */
export async function runSearch(
  deps: { sql: postgres.Sql; provider: EmbeddingProvider },
  caller: Caller,
  body: SearchBody,
): Promise<SearchAnswer> {
  const { sql, provider } = deps;
  let embedding: string | null = null;
  let cached = false;
  if (body.mode !== "text") {
    await assertIndexModel(sql, provider);
    const q = await embedQuery(sql, provider, body.query);
    embedding = q.vector;
    cached = q.cached;
  }
  // Under RLS the full-text branch cannot use its GIN index (see search_documents), so for a caller
  // whose rights are checked, the best full-text matches are found first without RLS, and only those
  // candidates are checked with the caller's rights. Ids alone reveal nothing to the caller.
  let candidates: string[] | null = null;
  if (caller.role !== "service_role" && body.mode !== "vector") {
    const [c] = await sql<{ ids: string[] }[]>`
      select coalesce(array_agg(s.id), '{}') as ids
      from public.search_documents(${body.query}, null, ${TEXT_CANDIDATES}, 'text', ${sql.json(body.filter as postgres.JSONValue)}) s`;
    candidates = c.ids;
  }
  const rows = await withCallerRights(sql, caller, async (tx) => {
    const found = await tx<Row[]>`
      select s.id, s.source_table, s.source_id, s.chunk_index, s.content, s.metadata, s.score, s.similarity
        ${body.includeSource ? tx`, public.read_source_row(s.source_table, s.source_id) as source` : tx``}
      from public.search_documents(${body.query}, ${embedding}::extensions.vector, ${body.matchCount},
                                   ${body.mode}, ${tx.json(body.filter as postgres.JSONValue)}, 50, ${candidates}::bigint[]) s`;
    return found;
  });
  const results: SearchResult[] = rows.map((r) => ({
    source_table: r.source_table,
    source_id: r.source_id,
    chunk_index: r.chunk_index,
    content: r.content,
    score: r.score,
    metadata: r.metadata,
    ...(body.includeSource ? { source: r.source ?? null } : {}),
  }));
  const sources = rows.map((r) => ({
    source_table: r.source_table, source_id: r.source_id, chunk_index: r.chunk_index, score: r.score, similarity: r.similarity,
  }));
  const bestSimilarity = rows.reduce<number | null>((m, r) => r.similarity === null ? m : Math.max(m ?? -1, r.similarity), null);
  const [log] = await sql<{ id: string; conversation_id: string }[]>`
    insert into public.conversations (conversation_id, user_id, question, sources, mode, result_count, best_score, best_similarity)
    values (coalesce(${body.conversationId ?? null}::uuid, gen_random_uuid()), ${userIdOf(caller)}::uuid, ${body.query},
            ${sql.json(sources as postgres.JSONValue)}, ${body.mode}, ${rows.length}, ${rows[0]?.score ?? null}, ${bestSimilarity})
    returning id, conversation_id`;
  return { results, logId: log.id, conversationId: log.conversation_id, cached };
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The auth user's id for a user caller; null for services (and for a sub that is not a uuid). */
export function userIdOf(caller: Caller): string | null {
  return caller.role === "authenticated" && caller.userId && UUID.test(caller.userId) ? caller.userId : null;
}
