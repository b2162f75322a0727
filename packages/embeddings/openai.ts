// The OpenAI provider, through the official SDK. The SDK's own retries are off: the pipeline's
// retry loop honours Retry-After within the worker's deadline and then gives jobs back to the
// queue, which the SDK cannot know about.
import OpenAI from "openai";
import {
  type EmbeddingLimits,
  type EmbeddingProvider,
  EmbeddingProviderError,
  type EmbeddingResult,
  OPENAI_LIMITS,
  parseRetryAfter,
  type ProviderBudget,
  rateLimitHeaders,
} from "./provider.ts";

export interface OpenAIProviderOptions {
  apiKey: string;
  baseURL?: string;
  model: string;
  dimensions: number;
  timeoutMs?: number;
  /** Configured tokens/min and requests/min; learned from the response headers when absent. */
  tpmLimit?: number;
  rpmLimit?: number;
}

export class OpenAIEmbeddingProvider implements EmbeddingProvider {
  readonly name = "openai";
  readonly model: string;
  readonly dimensions: number;
  readonly limits: EmbeddingLimits = OPENAI_LIMITS;
  readonly budget: ProviderBudget;
  private readonly client: OpenAI;
  // text-embedding-ada-002 has a fixed size and refuses the `dimensions` parameter.
  private readonly sendDimensions: boolean;

  constructor(o: OpenAIProviderOptions) {
    this.model = o.model;
    this.dimensions = o.dimensions;
    this.sendDimensions = o.model.startsWith("text-embedding-3");
    this.budget = { tpm: o.tpmLimit, rpm: o.rpmLimit };
    this.client = new OpenAI({ apiKey: o.apiKey, baseURL: o.baseURL, maxRetries: 0, timeout: o.timeoutMs ?? 60_000 });
  }

  async embed(inputs: string[], options: { signal?: AbortSignal } = {}): Promise<EmbeddingResult> {
    try {
      // withResponse(): the headers carry the account's rate limits, which the shared budget learns.
      const { data: res, response } = await this.client.embeddings.create(
        {
          model: this.model,
          input: inputs,
          // Asked for explicitly so the SDK hands back the base64 as is: decoding it straight into a
          // Float32Array skips the SDK's number[] copy (a third of the memory at batchSize 500).
          encoding_format: "base64",
          ...(this.sendDimensions ? { dimensions: this.dimensions } : {}),
        },
        { signal: options.signal },
      ).withResponse();
      const vectors = new Array<Float32Array>(inputs.length);
      for (const d of res.data) {
        const e = d.embedding as unknown;
        vectors[d.index] = typeof e === "string" ? base64ToFloat32(e) : Float32Array.from(e as number[]);
      }
      for (let i = 0; i < inputs.length; i++) {
        if (!vectors[i]) throw new EmbeddingProviderError(`provider returned no embedding for input ${i}`, 502, true);
        if (vectors[i].length !== this.dimensions) {
          throw new EmbeddingProviderError(
            `provider returned ${vectors[i].length} dimensions, expected ${this.dimensions}`,
            undefined,
            false,
          );
        }
      }
      return { vectors, tokens: res.usage?.total_tokens ?? 0, rateLimits: rateLimitHeaders(response.headers) };
    } catch (e) {
      throw toProviderError(e);
    }
  }
}

const B64 = new Int16Array(128).fill(-1);
for (let i = 0; i < 64; i++) B64["ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".charCodeAt(i)] = i;

/** Base64 of little-endian float32s (OpenAI's encoding) straight into a Float32Array, no string copies. */
export function base64ToFloat32(b64: string): Float32Array {
  let len = b64.length;
  while (len > 0 && b64.charCodeAt(len - 1) === 61) len--; // '=' padding
  const bytes = new Uint8Array(Math.floor((len * 3) / 4));
  let acc = 0, bits = 0, p = 0;
  for (let i = 0; i < len; i++) {
    const v = B64[b64.charCodeAt(i) & 127];
    if (v < 0) throw new Error("invalid base64 in embedding");
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      bytes[p++] = (acc >> bits) & 0xff;
    }
  }
  // Little-endian float32, as OpenAI sends them (and as every platform we run on stores them).
  return new Float32Array(bytes.buffer, 0, bytes.length >> 2);
}

function toProviderError(e: unknown): unknown {
  if (e instanceof EmbeddingProviderError) return e;
  if (e instanceof OpenAI.APIConnectionError) {
    // Includes timeouts (APIConnectionTimeoutError): the request may or may not have been served.
    return new EmbeddingProviderError(`OpenAI connection error: ${e.message}`, undefined, true);
  }
  if (e instanceof OpenAI.APIError) {
    const status = e.status;
    const retryable = status === 429 || status === 408 || status === 409 || (status !== undefined && status >= 500);
    const headers = e.headers as Headers | undefined;
    return new EmbeddingProviderError(
      `OpenAI ${status ?? "error"}: ${e.message}`,
      status,
      retryable,
      parseRetryAfter(headers),
      rateLimitHeaders(headers),
    );
  }
  return e;
}
