// The provider budget shared across invocations: 4 workers, each with its own pool and
// provider (as 4 function invocations would be), against the fake OpenAI server metering a quota.
import postgres from "postgres";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { OpenAIEmbeddingProvider } from "../packages/embeddings/openai.ts";
import { processEmbeddingQueue, type ProcessOptions } from "../packages/embeddings/pipeline.ts";
import { countTokens } from "../packages/embeddings/tokens.ts";
import { acceptedTokensPerMinute, type FakeOpenAI, startFakeOpenAI } from "../packages/testkit/fake-openai.ts";
import { useTestDatabase } from "./helpers/db.ts";

const db = useTestDatabase();
let fake: FakeOpenAI;
const MODEL = "text-embedding-3-small";

beforeAll(async () => {
  fake = await startFakeOpenAI();
});
afterAll(async () => {
  await fake?.stop();
});
beforeEach(async () => {
  await db.sql`delete from embedding_sync_queue`;
  await db.sql`delete from embedding_provider_budget`;
  fake.setFaults({
    quota: null,
    rateLimit: { count: 0, retryAfterSeconds: 0 },
    rateLimitFor: { ms: 0, retryAfterSeconds: 0 },
  });
  fake.resetStats();
});

const newProvider = (limits: { tpmLimit?: number; rpmLimit?: number } = {}) =>
  new OpenAIEmbeddingProvider({
    apiKey: fake.apiKey,
    baseURL: fake.url,
    model: MODEL,
    dimensions: 1536,
    timeoutMs: 20_000,
    ...limits,
  });

/** A table of `n` rows of about 50 tokens each, all distinct, here and across tables (no embedding is reused). */
async function makeRows(table: string, n: number): Promise<number> {
  await db.sql.unsafe(`create table ${table} (id int primary key, body text)`);
  await db.sql`select register_embedding_source(${table}::regclass)`;
  await db.sql.unsafe(`insert into ${table} select g, 'Article ' || g || ' du code ${table} : ' ||
    'le locataire est tenu de payer le loyer et les charges récupérables aux termes convenus, ' ||
    'et d''user paisiblement des locaux loués suivant la destination qui leur a été donnée par le contrat.'
    from generate_series(1, ${n}) g`);
  const jobs = await db.sql<
    { content: string }[]
  >`select content from embedding_sync_queue where source_table = ${table}`;
  expect(jobs).toHaveLength(n);
  return jobs.reduce((t, j) => t + countTokens(j.content), 0);
}

/**
 * Runs `workers` workers, each re-invoked (as cron or webhooks would) until no job is left open,
 * each with its own pool and provider. Returns when the last job is done (or throws at the deadline).
 */
async function drain(
  workers: number,
  provider: () => OpenAIEmbeddingProvider,
  timeoutMs: number,
  extra: Partial<ProcessOptions> = {},
) {
  const pools = Array.from({ length: workers }, () => postgres(db.url, { max: 3, onnotice: () => {} }));
  const deadline = Date.now() + timeoutMs;
  let invocations = 0;
  let deferred = 0;
  try {
    await Promise.all(pools.map(async (sql, w) => {
      const p = provider();
      for (;;) {
        const [{ open }] = await sql<{ open: number }[]>`
          select count(*)::int as open from embedding_sync_queue where status in ('pending', 'processing')`;
        if (open === 0) return;
        if (Date.now() > deadline) throw new Error(`drain: ${open} jobs still open after ${timeoutMs} ms`);
        const r = await processEmbeddingQueue(sql, p, {
          workerId: `budget-w${w}-${++invocations}`,
          batchSize: 10,
          budgetMs: 20_000,
          leaseSeconds: 30,
          concurrency: 2,
          maxAttempts: 4,
          retryBaseMs: 50,
          retryMaxMs: 500,
          ...extra,
        });
        deferred += r.deferred;
        if (r.claimed === 0) await new Promise((r) => setTimeout(r, 100)); // jobs backing off or leased
      }
    }));
  } finally {
    await Promise.all(pools.map((p) => p.end({ timeout: 5 })));
  }
  return { invocations, deferred };
}

async function expectAllEmbeddedOnce(table: string, n: number) {
  const [q] = await db.sql<{ completed: number; other: number }[]>`
    select count(*) filter (where status = 'completed')::int as completed, count(*) filter (where status <> 'completed')::int as other
    from embedding_sync_queue where source_table = ${table}`;
  expect(q).toEqual({ completed: n, other: 0 });
  const [e] = await db.sql<{ rows: number; chunks: number }[]>`
    select count(distinct source_id)::int as rows, count(*)::int as chunks from documentation_embeddings where source_table = ${table}`;
  expect(e).toEqual({ rows: n, chunks: n });
  // Each text was accepted by the provider exactly once.
  expect(fake.stats.inputs).toBe(n);
  expect([...fake.stats.inputCounts.values()].every((c) => c === 1)).toBe(true);
}

describe("the fake OpenAI server's quota", () => {
  it("meters tokens per minute like OpenAI: headers on every answer, 429 with Retry-After and OpenAI's body past it", async () => {
    fake.setFaults({ quota: { tpm: 1200, rpm: 100 } });
    const input = "mot ".repeat(500).trim(); // 500 tokens
    const post = () =>
      fetch(`${fake.url}/embeddings`, {
        method: "POST",
        headers: { authorization: `Bearer ${fake.apiKey}`, "content-type": "application/json" },
        body: JSON.stringify({ model: MODEL, input: [input] }),
      });
    expect(countTokens(input)).toBe(500);
    const ok = await post();
    expect(ok.status).toBe(200);
    await ok.arrayBuffer();
    // (The bucket refills while the answer is written: 20 tokens/s, 100 requests/min.)
    const h = (name: string) => ok.headers.get(`x-ratelimit-${name}`) ?? "";
    expect([h("limit-tokens"), h("limit-requests"), h("remaining-requests")]).toEqual(["1200", "100", "99"]);
    expect(Number(h("remaining-tokens"))).toBeGreaterThanOrEqual(700);
    expect(Number(h("remaining-tokens"))).toBeLessThan(720);
    expect(h("reset-tokens")).toMatch(/^2[45](\.\d+)?s$/); // 500 tokens at 20/s
    expect(h("reset-requests")).toMatch(/^[1-6]\d\dms$/); // one request at 100/min
    expect((await post()).status).toBe(200); // 200 left
    const refused = await post();
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThanOrEqual(15); // 300 short at 20/s
    const body = await refused.json() as { error: { message: string; type: string; code: string } };
    expect(body.error).toMatchObject({ type: "tokens", code: "rate_limit_exceeded" });
    expect(body.error.message).toMatch(
      /^Rate limit reached for text-embedding-3-small .* on tokens per min \(TPM\): Limit 1200, Used (9\d\d|1000), Requested 500\. Please try again in 1[45]\.?\d*s\./,
    );
    expect(fake.stats.rateLimited).toBe(1);
    expect([...fake.stats.tokensBySecond.values()].reduce((a, b) => a + b, 0)).toBe(1000);
  });
});

describe("provider budget shared by parallel invocations", () => {
  // These tests hold the pace under the quota (an upper bound a slow machine cannot break). How close
  // to the quota the workers get is throughput, measured by npm run bench:scale (quota_utilization).
  it("4 workers under a 30,000 TPM / 200 RPM quota: every job once, ≤ 2 429s, never above the quota", async () => {
    const tpm = 30_000;
    const rows = 600; // about 50 tokens each: a minute of quota
    const tokens = await makeRows("paced_items", rows);
    expect(tokens / rows).toBeGreaterThan(40);
    fake.setFaults({ quota: { tpm, rpm: 200 } });
    fake.resetStats();

    const t0 = Date.now();
    await drain(4, () => newProvider({ tpmLimit: tpm, rpmLimit: 200 }), 120_000);
    const minutes = (Date.now() - t0) / 60_000;

    await expectAllEmbeddedOnce("paced_items", rows);
    expect(fake.stats.tokens).toBe(tokens);
    expect(fake.stats.rateLimited).toBeLessThanOrEqual(2);
    const utilization = fake.stats.tokens / minutes / tpm;
    console.log(
      `paced: ${fake.stats.tokens} tokens in ${(minutes * 60).toFixed(1)} s = ${
        utilization.toFixed(3)
      } of the quota, ${fake.stats.rateLimited} 429s, ${fake.stats.ok} requests`,
    );
    expect(utilization).toBeLessThanOrEqual(1.05);
  }, 180_000);

  it("with no configured limit, learns the limits from the headers and paces to them", async () => {
    const tpm = 30_000;
    const rows = 400;
    const tokens = await makeRows("learned_items", rows);
    fake.setFaults({ quota: { tpm, rpm: 200 } });
    fake.resetStats();

    const t0 = Date.now();
    await drain(4, () => newProvider(), 120_000);
    const t1 = Date.now();

    await expectAllEmbeddedOnce("learned_items", rows);
    expect(fake.stats.tokens).toBe(tokens);
    expect(fake.stats.rateLimited).toBeLessThanOrEqual(2);
    const [b] = await db.sql<
      { configured_tpm: number | null; learned_tpm: string; learned_rpm: string; learned_at: Date | null }[]
    >`
      select configured_tpm, learned_tpm, learned_rpm, learned_at from embedding_provider_budget where provider = 'openai' and model = ${MODEL}`;
    expect(b).toMatchObject({ configured_tpm: null, learned_tpm: String(tpm), learned_rpm: "200" });
    expect(b.learned_at).toBeInstanceOf(Date);
    // Until the first answer nothing is known (the first requests go at once, the provider's
    // minute-deep bucket takes them); from then on the pace is the quota's.
    const paced = acceptedTokensPerMinute(fake.stats, t0 + 5_000, t1) / tpm;
    console.log(
      `learned: ${fake.stats.tokens} tokens in ${((t1 - t0) / 1000).toFixed(1)} s, ${
        paced.toFixed(3)
      } of the quota after the first 5 s, ${fake.stats.rateLimited} 429s`,
    );
    expect(paced).toBeLessThanOrEqual(1.1);
  }, 180_000);

  it("a 429 storm (Retry-After 2) pauses every worker; no job is lost, all complete after it", async () => {
    const rows = 100;
    await makeRows("storm_items", rows);
    fake.setFaults({ rateLimitFor: { ms: 6_000, retryAfterSeconds: 2 } });
    fake.resetStats();

    const t0 = Date.now();
    await drain(4, () => newProvider(), 90_000);

    expect(Date.now() - t0).toBeGreaterThanOrEqual(6_000);
    await expectAllEmbeddedOnce("storm_items", rows);
    const [{ failed }] = await db.sql<{ failed: number }[]>`
      select count(*)::int as failed from embedding_sync_queue where source_table = 'storm_items' and status = 'failed'`;
    expect(failed).toBe(0);
    // The pause is shared: a request waits for it whoever got the 429, so each of the 8 request
    // slots (4 workers x 2) meets the storm about once per Retry-After, not in a tight loop.
    console.log(`storm: ${fake.stats.rateLimited} 429s over 6 s, done in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    expect(fake.stats.rateLimited).toBeGreaterThan(0);
    expect(fake.stats.rateLimited).toBeLessThanOrEqual(8 * 4);
    const [b] = await db.sql<
      { paused_until: Date | null }[]
    >`select paused_until from embedding_provider_budget where model = ${MODEL}`;
    expect(b.paused_until!.getTime()).toBeGreaterThan(t0 + 2_000);
  }, 120_000);

  it(
    "a budget spent past the run's deadline: the reservation is refunded and the jobs deferred, no attempt counted",
    async () => {
      await makeRows("deferred_items", 5);
      // 6,000 tokens/min and every worker paused for 60 s: far beyond a 5 s run.
      await db
        .sql`select note_embedding_rate_limits('openai', ${MODEL}, '{"x-ratelimit-limit-tokens": "6000"}'::jsonb, 60)`;
      const level = async () =>
        Number((await db.sql`select token_level from embedding_provider_budget where model = ${MODEL}`)[0].token_level);
      const before = await level();

      const r = await processEmbeddingQueue(db.sql, newProvider(), {
        workerId: "budget-deferrer",
        batchSize: 10,
        budgetMs: 5_000,
        leaseSeconds: 30,
        concurrency: 2,
        maxAttempts: 4,
      });
      expect(r).toMatchObject({ claimed: 5, embedded: 0, deferred: 5, retried: 0, dead: 0, providerCalls: 0 });
      expect(fake.stats.requests).toBe(0);
      // Refunded: the level only refilled since (without the refund it would be ~250 tokens lower).
      expect(await level()).toBeGreaterThanOrEqual(before);
      const jobs = await db.sql<{ status: string; retry_count: number; wait: number; last_error: string }[]>`
      select status, retry_count, extract(epoch from run_at - now())::float8 as wait, last_error
      from embedding_sync_queue where source_table = 'deferred_items'`;
      for (const j of jobs) {
        expect(j).toMatchObject({
          status: "pending",
          retry_count: 0,
          last_error: expect.stringMatching(/provider budget/),
        });
        expect(j.wait).toBeGreaterThan(50);
      }
    },
    60_000,
  );
});
