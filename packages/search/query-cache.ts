// The query-embedding cache: the same question (after normalization) is embedded once per model and
// dimension. Keyed by a hash of the normalized text, so the table never holds the users' questions.
import type postgres from "postgres";
import { contentHash, vectorLiteral } from "../embeddings/hash.ts";
import type { EmbeddingProvider } from "../embeddings/provider.ts";

/** Unicode NFC, lower case, whitespace collapsed: "  Quel  DÉLAI ? " and "quel délai ?" are one entry. */
export function normalizeQuery(q: string): string {
  return q.normalize("NFC").toLowerCase().replace(/\s+/g, " ").trim();
}

export interface QueryEmbedding {
  /** pgvector's text form. */
  vector: string;
  cached: boolean;
}

/**
 * The query's embedding, from the cache or from the provider (then stored). The provider call happens
 * outside any transaction; the cache write is its own statement. `scope` is whose cache this is (a
 * user's id, or "service"); null: no cache.
 */
export async function embedQuery(
  sql: postgres.Sql,
  provider: EmbeddingProvider,
  query: string,
  scope: string | null,
): Promise<QueryEmbedding> {
  if (scope === null) {
    const { vectors } = await provider.embed([normalizeQuery(query)]);
    return { vector: vectorLiteral(vectors[0]), cached: false };
  }
  const hash = contentHash(normalizeQuery(query));
  const [hit] = await sql<{ embedding: string }[]>`
    update public.query_embedding_cache set hits = hits + 1, last_used_at = now()
     where model = ${provider.model} and dimensions = ${provider.dimensions} and scope = ${scope} and query_hash = ${hash}
    returning embedding::text as embedding`;
  if (hit) return { vector: hit.embedding, cached: true };
  const { vectors } = await provider.embed([normalizeQuery(query)]);
  const vector = vectorLiteral(vectors[0]);
  await sql`
    insert into public.query_embedding_cache (model, dimensions, scope, query_hash, embedding)
    values (${provider.model}, ${provider.dimensions}, ${scope}, ${hash}, ${vector}::extensions.vector)
    on conflict (model, dimensions, scope, query_hash) do update set hits = query_embedding_cache.hits + 1, last_used_at = now()`;
  return { vector, cached: false };
}
