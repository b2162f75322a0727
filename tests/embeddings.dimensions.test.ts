// OpenAI's `dimensions` parameter: text-embedding-3-* return vectors of EMBEDDING_DIMENSIONS (sent as the
// request's `dimensions`), ada-002 refuses the parameter. The fake server answers as the real API does,
// and the configuration refuses, at startup, a size the model cannot return.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createProvider, parseEmbeddingEnv } from "../packages/embeddings/config.ts";
import { OpenAIEmbeddingProvider } from "../packages/embeddings/openai.ts";
import { type FakeOpenAI, startFakeOpenAI } from "../packages/testkit/fake-openai.ts";

let fake: FakeOpenAI;
beforeAll(async () => {
  fake = await startFakeOpenAI();
});
afterAll(async () => {
  await fake?.stop();
});

/** A raw request, to see the server's own answer to a body the SDK would not send. */
async function post(body: Record<string, unknown>) {
  const res = await fetch(`${fake.url}/embeddings`, {
    method: "POST",
    headers: { authorization: `Bearer ${fake.apiKey}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return {
    status: res.status,
    body: await res.json() as { data?: { embedding: number[] }[]; error?: { message: string } },
  };
}

describe("OpenAI dimensions", () => {
  it("EMBEDDING_DIMENSIONS reaches the request: text-embedding-3 vectors come back at that size", async () => {
    for (const [model, dims] of [["text-embedding-3-small", "512"], ["text-embedding-3-large", "1024"]] as const) {
      fake.resetStats();
      const provider = createProvider(parseEmbeddingEnv({
        OPENAI_API_KEY: fake.apiKey,
        OPENAI_BASE_URL: fake.url,
        EMBEDDING_MODEL: model,
        EMBEDDING_DIMENSIONS: dims,
      }));
      const { vectors } = await provider.embed(["Le salarié a droit à un congé de deux jours et demi par mois."]);
      expect(vectors[0]).toHaveLength(Number(dims));
      expect(fake.stats.dimensions).toEqual([Number(dims)]);
      // Unit length, as OpenAI's shortened vectors are.
      expect(Math.hypot(...vectors[0])).toBeCloseTo(1, 5);
    }
  });

  it("the fake answers like the real API: dimensions honoured for text-embedding-3, refused for ada-002", async () => {
    const short = await post({
      model: "text-embedding-3-small",
      input: "bonjour",
      dimensions: 256,
      encoding_format: "float",
    });
    expect(short.status).toBe(200);
    expect(short.body.data![0].embedding).toHaveLength(256);
    const full = await post({ model: "text-embedding-3-small", input: "bonjour", encoding_format: "float" });
    expect(full.body.data![0].embedding).toHaveLength(1536);

    const ada = await post({ model: "text-embedding-ada-002", input: "bonjour", dimensions: 512 });
    expect(ada).toMatchObject({
      status: 400,
      body: { error: { message: "This model does not support specifying dimensions." } },
    });
    expect((await post({ model: "text-embedding-ada-002", input: "bonjour", dimensions: 1536 })).status).toBe(400);
    expect((await post({ model: "text-embedding-3-small", input: "bonjour", dimensions: 2000 })).status).toBe(400);
    expect((await post({ model: "text-embedding-3-small", input: "bonjour", dimensions: 0 })).status).toBe(400);
  });

  it("ada-002 is asked without `dimensions` and gets its 1536", async () => {
    fake.resetStats();
    const ada = new OpenAIEmbeddingProvider({
      apiKey: fake.apiKey,
      baseURL: fake.url,
      model: "text-embedding-ada-002",
      dimensions: 1536,
    });
    const { vectors } = await ada.embed(["bonjour"]);
    expect(vectors[0]).toHaveLength(1536);
    expect(fake.stats.byStatus).toEqual({ 200: 1 });
  });

  it("the configuration refuses a size the model cannot return, before any request", () => {
    const env = (model: string, dims: string) => ({
      OPENAI_API_KEY: "sk-test",
      EMBEDDING_MODEL: model,
      EMBEDDING_DIMENSIONS: dims,
    });
    expect(() => parseEmbeddingEnv(env("text-embedding-ada-002", "512")))
      .toThrow(/EMBEDDING_DIMENSIONS: text-embedding-ada-002 always returns 1536 dimensions/);
    expect(() => parseEmbeddingEnv(env("text-embedding-3-small", "2000")))
      .toThrow(/EMBEDDING_DIMENSIONS: text-embedding-3-small returns at most 1536 dimensions/);
    expect(parseEmbeddingEnv(env("text-embedding-3-large", "3072")).EMBEDDING_DIMENSIONS).toBe(3072);
    expect(parseEmbeddingEnv(env("text-embedding-ada-002", "1536")).EMBEDDING_DIMENSIONS).toBe(1536);
    // Other models and the offline provider have their own rules.
    expect(parseEmbeddingEnv(env("my-compatible-model", "768")).EMBEDDING_DIMENSIONS).toBe(768);
    expect(parseEmbeddingEnv({ EMBEDDING_DIMENSIONS: "2000" }).EMBEDDING_PROVIDER).toBe("offline");
  });
});
