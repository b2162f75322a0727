// The search function's boundary: who may call (signed-in users and services; anonymous callers only
// when SEARCH_ALLOW_ANON=true), the body, the provider, and the answers.
import { z } from "zod";
import type postgres from "postgres";
import { connectDb } from "../core/db.ts";
import { parseEnv, platformEnvSchema, readEnv } from "../core/env.ts";
import { errorResponse, guardRequest, json } from "../core/http.ts";
import { assertDimensionsMatch, createProvider, parseEmbeddingEnv } from "../embeddings/config.ts";
import type { EmbeddingProvider } from "../embeddings/provider.ts";
import { ForeignConversation, IndexModelMismatch, runSearch, searchBodySchema } from "./search.ts";

const searchEnvSchema = z.object({
  SEARCH_ALLOW_ANON: z.enum(["true", "false"]).default("false"),
});

interface Runtime {
  sql: postgres.Sql;
  provider: EmbeddingProvider;
}

/** A lazily built runtime shared by the search and conversations functions: one pool per instance. */
export function lazyRuntime(source: Record<string, string | undefined>, withProvider: boolean) {
  let runtime: Promise<Runtime> | undefined;
  const init = async (): Promise<Runtime> => {
    const platform = parseEnv(platformEnvSchema, source);
    const provider = withProvider ? createProvider(parseEmbeddingEnv(source)) : (null as unknown as EmbeddingProvider);
    const sql = connectDb(platform.SUPABASE_DB_URL, { max: 6 });
    if (withProvider) {
      try {
        const [{ dims }] = await sql<{ dims: number | null }[]>`select public.embedding_dimensions() as dims`;
        assertDimensionsMatch(provider, dims);
      } catch (e) {
        await sql.end({ timeout: 1 });
        throw e;
      }
    }
    return { sql, provider };
  };
  return () => {
    runtime ??= init().catch((e) => {
      runtime = undefined;
      throw e;
    });
    return runtime;
  };
}

export function createSearchHandler(source: Record<string, string | undefined> = readEnv()) {
  const getRuntime = lazyRuntime(source, true);
  const allowAnon = searchEnvSchema.safeParse(source).data?.SEARCH_ALLOW_ANON === "true";
  return async function handle(req: Request): Promise<Response> {
    const guarded = await guardRequest(req, searchBodySchema, () => allowAnon ? "anon" : "authenticated", source);
    if (!guarded.ok) return guarded.response;
    const { body, caller } = guarded.value;
    let rt: Runtime;
    try {
      rt = await getRuntime();
    } catch (e) {
      console.error(`search: ${(e as Error).message}`);
      return errorResponse(500, (e as Error).message);
    }
    try {
      const r = await runSearch(rt, caller, body);
      return json({ results: r.results, logId: r.logId, conversationId: r.conversationId, cachedEmbedding: r.cached });
    } catch (e) {
      if (e instanceof IndexModelMismatch) return errorResponse(409, "index model mismatch", e.message);
      if (e instanceof ForeignConversation) return errorResponse(404, "no such conversation");
      const err = e as { code?: string; message?: string };
      if (err.code === "P0002") return errorResponse(404, "no such conversation");
      if (err.code === "22023" || err.code === "22P02") return errorResponse(400, err.message ?? "invalid request");
      console.error(`search: ${err.message ?? e}`);
      return errorResponse(500, "search failed", err.message);
    }
  };
}
