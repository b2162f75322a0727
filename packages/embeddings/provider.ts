// The port every embeddings provider implements, and the errors the pipeline reasons about.

/** Per-request limits; the pipeline packs inputs so no request exceeds them. */
export interface EmbeddingLimits {
  maxInputs: number;
  maxTokensPerRequest: number;
  maxTokensPerInput: number;
}

export interface EmbeddingResult {
  /** One vector per input, in input order. */
  vectors: Float32Array[];
  /** Tokens billed for the request, as the provider reports them. */
  tokens: number;
  /** The response's rate-limit headers, for the shared budget to learn from. */
  rateLimits?: RateLimitHeaders;
}

/** x-ratelimit-* headers (and retry-after) of one response, names lower-cased, values as sent. */
export type RateLimitHeaders = Record<string, string>;

/**
 * The tokens/min and requests/min a provider meters, as configured (EMBEDDING_TPM_LIMIT,
 * EMBEDDING_RPM_LIMIT). A provider with a budget (even an empty one: the limits are then learned
 * from its headers) is paced through the database, shared by every invocation.
 */
export interface ProviderBudget {
  tpm?: number;
  rpm?: number;
}

export interface EmbeddingProvider {
  readonly name: string;
  readonly model: string;
  readonly dimensions: number;
  readonly limits: EmbeddingLimits;
  /** Set when the provider meters tokens and requests per minute; absent: never paced. */
  readonly budget?: ProviderBudget;
  embed(inputs: string[], options?: { signal?: AbortSignal }): Promise<EmbeddingResult>;
}

/** OpenAI's documented limits for /v1/embeddings. */
export const OPENAI_LIMITS: EmbeddingLimits = {
  maxInputs: 2048,
  maxTokensPerRequest: 300_000,
  maxTokensPerInput: 8191,
};

/**
 * A provider failure, classified. `retryable` is true for 429, 5xx, timeouts and connection errors;
 * a 400 is about the inputs (the pipeline bisects to find the one at fault); 401/403 are fatal for
 * the whole run.
 */
export class EmbeddingProviderError extends Error {
  constructor(
    message: string,
    readonly status: number | undefined,
    readonly retryable: boolean,
    readonly retryAfterMs?: number,
    readonly rateLimits?: RateLimitHeaders,
  ) {
    super(message);
    this.name = "EmbeddingProviderError";
  }

  get isBadInput(): boolean {
    return this.status === 400 || this.status === 413 || this.status === 422;
  }
}

/** Retry-After as seconds or an HTTP date (and OpenAI's retry-after-ms), in milliseconds. */
export function parseRetryAfter(
  headers: { get(name: string): string | null } | undefined,
  now = Date.now(),
): number | undefined {
  if (!headers) return undefined;
  const ms = headers.get("retry-after-ms");
  if (ms && Number.isFinite(Number(ms))) return Math.max(0, Number(ms));
  const v = headers.get("retry-after");
  if (!v) return undefined;
  if (/^\d+(\.\d+)?$/.test(v.trim())) return Math.max(0, Number(v) * 1000);
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** The rate-limit headers of a response (x-ratelimit-*, retry-after, retry-after-ms), or undefined. */
export function rateLimitHeaders(
  headers: { forEach(cb: (value: string, name: string) => void): void } | undefined,
): RateLimitHeaders | undefined {
  if (!headers) return undefined;
  const out: RateLimitHeaders = {};
  let any = false;
  headers.forEach((value, name) => {
    const n = name.toLowerCase();
    if (n.startsWith("x-ratelimit-") || n === "retry-after" || n === "retry-after-ms") {
      out[n] = value;
      any = true;
    }
  });
  return any ? out : undefined;
}
