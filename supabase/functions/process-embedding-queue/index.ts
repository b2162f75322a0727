// process-embedding-queue: drains embedding_sync_queue into documentation_embeddings.
// Bodies (the runbook's): { action: 'process', batchSize? } | { action: 'resync', forceResync? }
// | { action: 'status' } | { action: 'cleanup' }. Logic in packages/embeddings/handler.ts.
import { createProcessEmbeddingQueueHandler } from "../../../packages/embeddings/handler.ts";

const handle = createProcessEmbeddingQueueHandler();

export default {
  fetch: (req: Request) => handle(req),
} satisfies Deno.ServeDefaultExport;
