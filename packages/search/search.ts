// The search function's logic: body schema, the query (with the caller's rights), the live source rows,
// and the log entry. Order matters: the query is embedded first (cache, then provider; no transaction
// open), then one short transaction searches with the caller's rights, then the log is written.
import { z } from "zod";
import type postgres from "postgres";
import type { Caller } from "../core/auth.ts";
import { pgUuid } from "../core/validation.ts";
import type { EmbeddingProvider } from "../embeddings/provider.ts";
import { embedQuery } from "./query-cache.ts";
import { type Tx, withCallerRights } from "./rights.ts";

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

function mismatch(indexModel: string, provider: EmbeddingProvider): IndexModelMismatch {
  return new IndexModelMismatch(
    `the index holds chunks embedded with model "${indexModel}", but this function embeds queries with ` +
      `"${provider.model}" (${provider.name}); set EMBEDDING_MODEL/EMBEDDING_PROVIDER to the index's, or re-embed the index`,
  );
}

/**
 * Refuses to search an index embedded with another model before paying for the query's embedding:
 * its vectors are not comparable with the query's. One chunk tells (an index is embedded with one
 * model), read in constant time whatever the index's size; checked once a minute per connection pool.
 * An index caught half re-embedded is caught by the results' own models (see searchRows).
 */
export async function assertIndexModel(sql: postgres.Sql, provider: EmbeddingProvider): Promise<void> {
  const seen = modelCheck.get(sql);
  if (seen && seen.model === provider.model && Date.now() - seen.at < 60_000) return;
  const [row] = await sql<{ model: string }[]>`select model from public.documentation_embeddings limit 1`;
  if (row && row.model !== provider.model) throw mismatch(row.model, provider);
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
  model: string;
  source?: Record<string, unknown> | null;
}

/** A signed-in user may not write into another user's conversation. */
export class ForeignConversation extends Error {}

/**
 * The search with the caller's rights (see search_documents). Users who search text and may read more
 * rows than the exact plan takes get full-text candidates: the GIN index cannot serve a query under
 * RLS, so the service ranks the matches and hands them over in growing pages, each checked with the
 * caller's rights, until a page holds `need` rows the caller may read or every match was seen. The
 * answer is the same as ranking the caller's own matches: a chunk's rank does not depend on other chunks.
 * Whether the caller reads broadly is asked once and passed on, so their rows are counted once.
 */
async function searchRows(
  sql: postgres.Sql,
  caller: Caller,
  body: SearchBody,
  embedding: string | null,
): Promise<Row[]> {
  const filter = body.filter as postgres.JSONValue;
  const search = (tx: Tx, candidates: string[] | null, broad: boolean | null) =>
    tx<Row[]>`
    select s.id, s.source_table, s.source_id, s.chunk_index, s.content, s.metadata, s.score, s.similarity,
           (select d.model from public.documentation_embeddings d where d.id = s.id) as model
      ${body.includeSource ? tx`, public.read_source_row(s.source_table, s.source_id) as source` : tx``}
    from public.search_documents(${body.query}, ${embedding}::extensions.vector, ${body.matchCount},
                                 ${body.mode}, ${tx.json(filter)}, 50, ${candidates}::bigint[], 1, 1, ${broad}) s`;
  if (caller.role === "service_role" || body.mode === "vector") {
    return await withCallerRights(sql, caller, (tx) => search(tx, null, null));
  }
  const small = await withCallerRights(sql, caller, async (tx) => {
    const [r] = await tx<{ broad: boolean }[]>`select public.search_reader_is_broad(${tx.json(filter)}) as broad`;
    return r.broad ? null : await search(tx, null, false);
  });
  if (small) return small;
  const need = body.mode === "hybrid" ? body.matchCount * 2 : body.matchCount;
  for (let pageSize = need * 8;; pageSize *= 8) {
    const page = await sql<{ id: string }[]>`
      select id::text from private.search_text_ranked(${body.query}, ${sql.json(filter)}, ${pageSize})`;
    const ids = page.map((r) => r.id);
    const rows = await withCallerRights(sql, caller, async (tx) => {
      if (ids.length === pageSize) {
        const [r] = await tx<{ n: number }[]>`
          select count(*)::int as n from public.documentation_embeddings where id = any(${ids}::bigint[])`;
        if (r.n < need) return null;
      }
      return await search(tx, ids, true);
    });
    if (rows) return rows;
  }
}

/** Runs one search for `caller` and logs it. */
export async function runSearch(
  deps: { sql: postgres.Sql; provider: EmbeddingProvider },
  caller: Caller,
  body: SearchBody,
): Promise<SearchAnswer> {
  const { sql, provider } = deps;
  if (body.conversationId) await assertConversationOwner(sql, caller, body.conversationId);
  let embedding: string | null = null;
  let cached = false;
  if (body.mode !== "text") {
    await assertIndexModel(sql, provider);
    const q = await embedQuery(sql, provider, body.query, cacheScope(caller));
    embedding = q.vector;
    cached = q.cached;
  }
  const rows = await searchRows(sql, caller, body, embedding);
  const foreign = body.mode === "text" ? undefined : rows.find((r) => r.model !== provider.model);
  if (foreign) throw mismatch(foreign.model, provider);
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
    source_table: r.source_table,
    source_id: r.source_id,
    chunk_index: r.chunk_index,
    score: r.score,
    similarity: r.similarity,
  }));
  const bestSimilarity = rows.reduce<number | null>(
    (m, r) => r.similarity === null ? m : Math.max(m ?? -1, r.similarity),
    null,
  );
  const [log] = await sql<{ id: string; conversation_id: string }[]>`
    insert into public.conversations (conversation_id, user_id, question, sources, mode, result_count, best_score, best_similarity)
    values (coalesce(${body.conversationId ?? null}::uuid, gen_random_uuid()), ${userIdOf(caller)}::uuid, ${body.query},
            ${sql.json(sources as postgres.JSONValue)}, ${body.mode}, ${rows.length}, ${
    rows[0]?.score ?? null
  }, ${bestSimilarity})
    returning id, conversation_id`;
  return { results, logId: log.id, conversationId: log.conversation_id, cached };
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The auth user's id for a user caller; null for services (and for a sub that is not a uuid). */
export function userIdOf(caller: Caller): string | null {
  return caller.role === "authenticated" && caller.userId && UUID.test(caller.userId) ? caller.userId : null;
}

/**
 * Whose query-embedding cache a caller uses: their own (a user), the services' (the service role), or
 * none (anon callers cannot be told apart). A shared cache would tell one user, by its flag or by its
 * speed, that somebody else already asked exactly this question.
 */
export function cacheScope(caller: Caller): string | null {
  if (caller.role === "service_role") return "service";
  return userIdOf(caller);
}

/**
 * A conversation belongs to the user who started it: a caller naming another user's conversation gets
 * "not found", as for an id that does not exist. The conversations trigger enforces the same rule for
 * every writer (conversations_owner_guard); this check answers before any work is done.
 */
async function assertConversationOwner(sql: postgres.Sql, caller: Caller, conversationId: string): Promise<void> {
  const [row] = await sql<{ user_id: string | null }[]>`
    select user_id::text as user_id from public.conversations where conversation_id = ${conversationId}
    order by created_at limit 1`;
  if (row && row.user_id !== userIdOf(caller)) throw new ForeignConversation("no such conversation");
}
