// The process-embedding-queue function's configuration, from its environment (function secrets).
import { z } from "zod";
import { OfflineEmbeddingProvider } from "./offline.ts";
import { OpenAIEmbeddingProvider } from "./openai.ts";
import type { EmbeddingProvider } from "./provider.ts";

const intFromEnv = (def: number, min: number, max: number) => z.coerce.number().int().min(min).max(max).default(def);

/**
 * OpenAI's embedding models and their full size. text-embedding-3-* take a `dimensions` parameter
 * (EMBEDDING_DIMENSIONS is sent as it) that returns shorter vectors; ada-002 has one fixed size.
 */
export const OPENAI_MODEL_DIMENSIONS: Record<string, number> = {
  "text-embedding-3-small": 1536,
  "text-embedding-3-large": 3072,
  "text-embedding-ada-002": 1536,
};

export const embeddingEnvSchema = z
  .object({
    EMBEDDING_PROVIDER: z.enum(["openai", "offline"]).optional(),
    OPENAI_API_KEY: z.string().min(1).optional(),
    OPENAI_BASE_URL: z.url().optional(),
    EMBEDDING_MODEL: z.string().min(1).default("text-embedding-3-small"),
    EMBEDDING_DIMENSIONS: intFromEnv(1536, 1, 16000),
    /** Wall-clock budget of one invocation; the platform kills functions at 150 s (free plan). */
    EMBEDDING_BUDGET_MS: intFromEnv(120_000, 1_000, 400_000),
    /** Lease of claimed jobs; must outlast one batch's embedding (retries included). */
    EMBEDDING_LEASE_SECONDS: intFromEnv(180, 5, 3600),
    /** Parallel provider requests per invocation. */
    EMBEDDING_REQUEST_CONCURRENCY: intFromEnv(4, 1, 32),
    EMBEDDING_REQUEST_TIMEOUT_MS: intFromEnv(60_000, 100, 600_000),
    EMBEDDING_MAX_ATTEMPTS: intFromEnv(4, 1, 20),
    /** The account's tokens/min and requests/min for the model; learned from the provider's
     *  x-ratelimit-* headers when unset (and the learned values win once known). */
    EMBEDDING_TPM_LIMIT: z.coerce.number().int().min(1).max(1e12).optional(),
    EMBEDDING_RPM_LIMIT: z.coerce.number().int().min(1).max(1e9).optional(),
  })
  .transform((e) => ({
    ...e,
    // openai when a key is there (unless told otherwise), else the offline provider.
    EMBEDDING_PROVIDER: e.EMBEDDING_PROVIDER ?? (e.OPENAI_API_KEY ? "openai" : "offline"),
  }))
  .refine((e) => e.EMBEDDING_PROVIDER !== "openai" || !!e.OPENAI_API_KEY, {
    message: "EMBEDDING_PROVIDER=openai needs OPENAI_API_KEY",
    path: ["OPENAI_API_KEY"],
  })
  // OpenAI refuses these requests; say so at startup rather than fail every batch.
  .superRefine((e, ctx) => {
    if (e.EMBEDDING_PROVIDER !== "openai") return;
    const size = OPENAI_MODEL_DIMENSIONS[e.EMBEDDING_MODEL];
    if (size === undefined) return; // another model (or an OpenAI-compatible server): its own rules
    const shortens = e.EMBEDDING_MODEL.startsWith("text-embedding-3");
    if (shortens ? e.EMBEDDING_DIMENSIONS > size : e.EMBEDDING_DIMENSIONS !== size) {
      ctx.addIssue({
        code: "custom",
        path: ["EMBEDDING_DIMENSIONS"],
        message: shortens
          ? `${e.EMBEDDING_MODEL} returns at most ${size} dimensions (its \`dimensions\` parameter shortens, never lengthens)`
          : `${e.EMBEDDING_MODEL} always returns ${size} dimensions (it takes no \`dimensions\` parameter)`,
      });
    }
  });

export type EmbeddingEnv = z.infer<typeof embeddingEnvSchema>;

export function parseEmbeddingEnv(source: Record<string, string | undefined>): EmbeddingEnv {
  const r = embeddingEnvSchema.safeParse(source);
  if (!r.success) {
    throw new Error(
      `invalid embedding configuration: ${r.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`,
    );
  }
  return r.data;
}

export function createProvider(env: EmbeddingEnv): EmbeddingProvider {
  if (env.EMBEDDING_PROVIDER === "openai") {
    return new OpenAIEmbeddingProvider({
      apiKey: env.OPENAI_API_KEY!,
      baseURL: env.OPENAI_BASE_URL,
      model: env.EMBEDDING_MODEL,
      dimensions: env.EMBEDDING_DIMENSIONS,
      timeoutMs: env.EMBEDDING_REQUEST_TIMEOUT_MS,
      tpmLimit: env.EMBEDDING_TPM_LIMIT,
      rpmLimit: env.EMBEDDING_RPM_LIMIT,
    });
  }
  return new OfflineEmbeddingProvider(env.EMBEDDING_DIMENSIONS);
}

/** Refuses to run when the provider's vectors would not fit documentation_embeddings.embedding. */
export function assertDimensionsMatch(provider: EmbeddingProvider, tableDimensions: number | null): void {
  if (tableDimensions === null || tableDimensions <= 0) {
    throw new Error("documentation_embeddings.embedding has no dimension: are the embedding-sync migrations applied?");
  }
  if (provider.dimensions !== tableDimensions) {
    throw new Error(
      `EMBEDDING_DIMENSIONS=${provider.dimensions} but documentation_embeddings.embedding is vector(${tableDimensions}); ` +
        `set EMBEDDING_DIMENSIONS=${tableDimensions}, or change the table's with npm run embeddings:storage -- --dimensions ${provider.dimensions}`,
    );
  }
}
