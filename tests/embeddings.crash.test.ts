// A worker process killed (SIGKILL) in the middle of a batch: its jobs come back after the lease and
// another worker finishes them; nothing is lost and nothing is written twice.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, expect, it } from "vitest";
import { OpenAIEmbeddingProvider } from "../packages/embeddings/openai.ts";
import { processEmbeddingQueue } from "../packages/embeddings/pipeline.ts";
import { type FakeOpenAI, startFakeOpenAI } from "../packages/testkit/fake-openai.ts";
import { useTestDatabase, waitFor } from "./helpers/db.ts";

const db = useTestDatabase();
let fake: FakeOpenAI;
beforeAll(async () => {
  fake = await startFakeOpenAI();
});
afterAll(async () => {
  await fake?.stop();
});

it("SIGKILL mid-batch: the jobs return after the lease and are completed exactly once", async () => {
  await db.sql`create table crash_docs (id int primary key, body text)`;
  await db.sql`select register_embedding_source('crash_docs')`;
  await db.sql`insert into crash_docs select g, 'document ' || g from generate_series(1, 60) g`;
  fake.setFaults({ latencyMs: 30_000 }); // the doomed worker hangs in its provider call
  const script = fileURLToPath(new URL("./embeddings.crash-worker.ts", import.meta.url));
  // node itself (not the tsx wrapper, which would leave its own child running when killed).
  const child = spawn(process.execPath, ["--import", "tsx", script, db.url, fake.url, fake.apiKey, "6"], {
    stdio: "ignore",
  });
  const exited = new Promise((r) => child.once("exit", r));
  try {
    await waitFor("the worker to hold jobs", async () => {
      const [r] = await db.sql`select count(*)::int as n from embedding_sync_queue where status = 'processing'`;
      return r.n === 60;
    }, 20_000);
    child.kill("SIGKILL");
    await exited;
  } finally {
    if (child.exitCode === null) child.kill("SIGKILL");
  }
  fake.setFaults({ latencyMs: 0 });
  const [held] = await db.sql`select min(lease_until) as until, count(distinct locked_by)::int as holders
                              from embedding_sync_queue where status = 'processing'`;
  expect(held.holders).toBe(1);

  const provider = new OpenAIEmbeddingProvider({
    apiKey: fake.apiKey,
    baseURL: fake.url,
    model: "text-embedding-3-small",
    dimensions: 1536,
  });
  const rescue = () =>
    processEmbeddingQueue(db.sql, provider, {
      workerId: "rescuer",
      batchSize: 100,
      budgetMs: 20_000,
      leaseSeconds: 30,
      concurrency: 1,
      maxAttempts: 3,
    });
  // Before the lease ends the jobs stay with the dead worker.
  if (new Date(held.until).getTime() > Date.now() + 500) expect((await rescue()).claimed).toBe(0);
  await waitFor(
    "the lease to expire",
    () => Promise.resolve(Date.now() > new Date(held.until).getTime() + 100),
    10_000,
  );
  fake.resetStats();
  const r = await rescue();
  expect(r).toMatchObject({ claimed: 60, embedded: 60, dead: 0 });
  const rows = await db.sql`select status, retry_count from embedding_sync_queue where source_table = 'crash_docs'`;
  expect(rows).toHaveLength(60);
  expect(rows.every((x) => x.status === "completed" && x.retry_count === 1)).toBe(true);
  const [c] = await db
    .sql`select count(*)::int as n, count(distinct source_id)::int as ids from documentation_embeddings where source_table = 'crash_docs'`;
  expect(c).toEqual({ n: 60, ids: 60 });
  expect([...fake.stats.inputCounts.values()].every((n) => n === 1)).toBe(true);
});
