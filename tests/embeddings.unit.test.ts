// Pure pieces of the embedding pipeline: chunking, packing, Retry-After, retry, offline provider, config.
import { describe, expect, it } from "vitest";
import { packRequests } from "../packages/embeddings/batching.ts";
import { assertDimensionsMatch, createProvider, parseEmbeddingEnv } from "../packages/embeddings/config.ts";
import { contentHash, vectorLiteral } from "../packages/embeddings/hash.ts";
import { offlineEmbedding, OfflineEmbeddingProvider } from "../packages/embeddings/offline.ts";
import { base64ToFloat32 } from "../packages/embeddings/openai.ts";
import {
  EmbeddingProviderError,
  OPENAI_LIMITS,
  parseRetryAfter,
  rateLimitHeaders,
} from "../packages/embeddings/provider.ts";
import { RetriesExhaustedError, withRetry } from "../packages/embeddings/retry.ts";
import { chunkText, countTokens } from "../packages/embeddings/tokens.ts";
import { formatRateLimitDuration } from "../packages/testkit/fake-openai.ts";

const cos = (a: Float32Array, b: Float32Array) => a.reduce((s, x, i) => s + x * b[i], 0);

describe("chunkText", () => {
  it("keeps a short text whole and cuts a long one into overlapping chunks within the limit", () => {
    expect(chunkText("Bonjour le monde", 512, 64)).toEqual([{
      index: 0,
      text: "Bonjour le monde",
      tokens: countTokens("Bonjour le monde"),
    }]);
    const long = Array.from({ length: 3000 }, (_, i) => `phrase ${i} sur l'été à Zürich`).join(". ");
    const chunks = chunkText(long, 200, 20);
    expect(chunks.length).toBeGreaterThan(10);
    for (const c of chunks) expect(c.tokens).toBeLessThanOrEqual(200);
    expect(chunks.map((c) => c.index)).toEqual(chunks.map((_, i) => i));
    // Overlap: each chunk starts with the end of the previous one.
    expect(chunks[0].text.slice(-80)).toContain(chunks[1].text.slice(0, 30));
  });
});

describe("packRequests", () => {
  it("respects the input count and token limits", () => {
    const items = Array.from({ length: 5000 }, () => ({ text: "x", tokens: 100 }));
    const groups = packRequests(items, OPENAI_LIMITS);
    expect(groups.map((g) => g.length)).toEqual([2048, 2048, 904]);
    const heavy = Array.from({ length: 100 }, () => ({ text: "x", tokens: 8000 }));
    const hg = packRequests(heavy, OPENAI_LIMITS);
    for (const g of hg) expect(g.length * 8000).toBeLessThanOrEqual(300_000);
    expect(hg.flat()).toEqual(heavy.map((_, i) => i));
    expect(() => packRequests([{ text: "x", tokens: 9000 }], OPENAI_LIMITS)).toThrow(/over the provider/);
  });
});

describe("retry", () => {
  it("reads Retry-After as seconds, HTTP date or retry-after-ms", () => {
    expect(parseRetryAfter(new Headers({ "retry-after": "3" }))).toBe(3000);
    expect(parseRetryAfter(new Headers({ "retry-after-ms": "250" }))).toBe(250);
    expect(parseRetryAfter(new Headers({ "retry-after": new Date(Date.now() + 5000).toUTCString() }))).toBeGreaterThan(
      3000,
    );
    expect(parseRetryAfter(new Headers())).toBeUndefined();
  });

  it("waits exactly Retry-After, gives up at the deadline, never retries a 400", async () => {
    const sleeps: number[] = [];
    let calls = 0;
    const v = await withRetry(() => {
      if (++calls < 3) return Promise.reject(new EmbeddingProviderError("429", 429, true, 1234));
      return Promise.resolve("ok");
    }, {
      maxAttempts: 5,
      baseDelayMs: 10,
      maxDelayMs: 100,
      deadline: Date.now() + 60_000,
      sleep: (ms) => {
        sleeps.push(ms);
        return Promise.resolve();
      },
    });
    expect(v).toBe("ok");
    expect(sleeps).toEqual([1234, 1234]);
    await expect(
      withRetry(() => Promise.reject(new EmbeddingProviderError("429", 429, true, 10_000)), {
        maxAttempts: 5,
        baseDelayMs: 10,
        maxDelayMs: 100,
        deadline: Date.now() + 1_000,
        sleep: () => Promise.resolve(),
      }),
    )
      .rejects.toBeInstanceOf(RetriesExhaustedError);
    let bad = 0;
    await expect(withRetry(() => {
      bad++;
      return Promise.reject(new EmbeddingProviderError("400", 400, false));
    }, { maxAttempts: 5, baseDelayMs: 10, maxDelayMs: 100, deadline: Date.now() + 1_000 })).rejects.toThrow("400");
    expect(bad).toBe(1);
  });
});

describe("offline provider", () => {
  it("is deterministic, unit-length and lexical", async () => {
    const p = new OfflineEmbeddingProvider(256);
    const { vectors } = await p.embed([
      "contrat de travail",
      "contrat de travail",
      "le contrat de bail",
      "météo à Lyon",
    ]);
    expect(vectors[0]).toEqual(vectors[1]);
    expect(cos(vectors[0], vectors[0])).toBeCloseTo(1, 5);
    expect(cos(vectors[0], vectors[2])).toBeGreaterThan(cos(vectors[0], vectors[3]));
    expect(offlineEmbedding("", 8)[0]).toBe(1);
  });
});

describe("configuration", () => {
  it("picks openai when a key is set, offline otherwise, and refuses a dimension mismatch", () => {
    expect(parseEmbeddingEnv({}).EMBEDDING_PROVIDER).toBe("offline");
    expect(parseEmbeddingEnv({ OPENAI_API_KEY: "sk-local-test" }).EMBEDDING_PROVIDER).toBe("openai");
    expect(() => parseEmbeddingEnv({ EMBEDDING_PROVIDER: "openai" })).toThrow(/OPENAI_API_KEY/);
    const p = createProvider(parseEmbeddingEnv({ EMBEDDING_DIMENSIONS: "768" }));
    expect(() => assertDimensionsMatch(p, 1536)).toThrow(
      /EMBEDDING_DIMENSIONS=768 but documentation_embeddings.embedding is vector\(1536\)/,
    );
    expect(() => assertDimensionsMatch(createProvider(parseEmbeddingEnv({})), 1536)).not.toThrow();
  });

  it("gives the openai provider its configured TPM/RPM budget; the offline provider has none", () => {
    const env = parseEmbeddingEnv({
      OPENAI_API_KEY: "sk-local-test",
      EMBEDDING_TPM_LIMIT: "1000000",
      EMBEDDING_RPM_LIMIT: "3000",
    });
    expect(createProvider(env).budget).toEqual({ tpm: 1_000_000, rpm: 3000 });
    expect(createProvider(parseEmbeddingEnv({ OPENAI_API_KEY: "sk-local-test" })).budget).toEqual({
      tpm: undefined,
      rpm: undefined,
    });
    expect(createProvider(parseEmbeddingEnv({})).budget).toBeUndefined();
    expect(() => parseEmbeddingEnv({ EMBEDDING_TPM_LIMIT: "0" })).toThrow(/EMBEDDING_TPM_LIMIT/);
    expect(() => parseEmbeddingEnv({ EMBEDDING_RPM_LIMIT: "1.5" })).toThrow(/EMBEDDING_RPM_LIMIT/);
  });

  it("hashes like SQL's sha256 and writes pgvector literals", () => {
    expect(contentHash("abc")).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    expect(vectorLiteral(new Float32Array([0.5, -0.25, 0]))).toBe("[0.5,-0.25,0]");
  });
});

describe("rate-limit headers", () => {
  it("keeps only x-ratelimit-* and retry-after, names lower-cased", () => {
    const h = new Headers({
      "X-RateLimit-Limit-Tokens": "1000000",
      "x-ratelimit-reset-requests": "20ms",
      "Retry-After": "2",
      "content-type": "application/json",
    });
    expect(rateLimitHeaders(h)).toEqual({
      "x-ratelimit-limit-tokens": "1000000",
      "x-ratelimit-reset-requests": "20ms",
      "retry-after": "2",
    });
    expect(rateLimitHeaders(new Headers({ "content-type": "application/json" }))).toBeUndefined();
    expect(rateLimitHeaders(undefined)).toBeUndefined();
  });

  it("the fake writes reset durations in OpenAI's format", () => {
    expect([0, 0.02, 1, 1.5, 90.5, 360, 3600].map(formatRateLimitDuration)).toEqual([
      "0s",
      "20ms",
      "1s",
      "1.5s",
      "1m30.5s",
      "6m0s",
      "1h0m0s",
    ]);
  });
});

describe("vector encodings", () => {
  it("vectorLiteral keeps 8 decimals, pgvector's syntax", () => {
    expect(vectorLiteral(new Float32Array([1, -1, 0.03125, -0.000123456789, 0]))).toBe("[1,-1,0.03125,-0.00012346,0]");
    const v = new Float32Array(1536).map((_, i) => Math.sin(i) / 40);
    const back = vectorLiteral(v).slice(1, -1).split(",").map(Number);
    back.forEach((x, i) => expect(Math.abs(x - v[i])).toBeLessThan(1e-8));
  });

  it("base64ToFloat32 reads OpenAI's base64 embeddings", () => {
    const v = new Float32Array([0.5, -0.25, 1e-3, 0.123456]);
    const b64 = Buffer.from(v.buffer).toString("base64");
    expect(Array.from(base64ToFloat32(b64))).toEqual(Array.from(v));
  });
});
