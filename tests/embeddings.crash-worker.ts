// A worker process for tests/embeddings.crash.test.ts: runs the pipeline until killed.
// argv: <database url> <fake OpenAI base url> <api key> <lease seconds>
import postgres from "postgres";
import { OpenAIEmbeddingProvider } from "../packages/embeddings/openai.ts";
import { processEmbeddingQueue } from "../packages/embeddings/pipeline.ts";

const [dbUrl, baseURL, apiKey, lease] = process.argv.slice(2);
const sql = postgres(dbUrl, { max: 2, onnotice: () => {} });
const provider = new OpenAIEmbeddingProvider({ apiKey, baseURL, model: "text-embedding-3-small", dimensions: 1536 });
await processEmbeddingQueue(sql, provider, {
  workerId: `doomed-${process.pid}`,
  batchSize: 100,
  budgetMs: 60_000,
  leaseSeconds: Number(lease),
  concurrency: 1,
  maxAttempts: 1,
});
await sql.end();
