// The continuation through the local stack: an invocation that runs out of its (short) time budget
// while jobs are ready asks pg_net for one successor with the same body, and the chain drains the
// backlog with no webhook and no cron.
import { describe, expect, it } from "vitest";
import { waitFor } from "./helpers/db.ts";
import { useNotesStack } from "./helpers/notes-stack.ts";

// A short budget, so one invocation cannot drain the backlog below on its own.
const { db, admin, functionCalls } = useNotesStack({ EMBEDDING_BUDGET_MS: "3500" });

describe("continuation", () => {
  it("an invocation out of budget with jobs left asks for a successor, and the chain drains the backlog", async () => {
    // Only this test's own call starts the chain: no webhook, no cron.
    await db.sql`alter table embedding_sync_queue disable trigger embedding_sync_queue_webhook`;
    try {
      await db.sql.begin(async (tx) => {
        await tx.unsafe(`set local embedding_sync.lane = 'bulk'`);
        await tx`insert into notes select g, 'note ' || g from generate_series(100, 1599) g`;
      });
      const before = await functionCalls();
      const { data, error } = await admin().functions.invoke("process-embedding-queue", {
        body: { action: "process", lane: "bulk", batchSize: 20 },
      });
      expect(error).toBeNull();
      expect(data.continued).toBe(true);
      expect(data.claimed).toBeGreaterThan(0);
      expect(data.claimed).toBeLessThan(1500);
      await waitFor(
        "the successors drained the bulk backlog",
        async () => {
          const [r] = await db
            .sql`select count(*)::int as n from embedding_sync_queue where status in ('pending', 'processing')`;
          return r.n === 0;
        },
        110_000,
        250,
      );
      expect((await functionCalls()) - before).toBeGreaterThanOrEqual(1);
      const [n] = await db
        .sql`select count(distinct source_id)::int as n from documentation_embeddings where source_table = 'notes'`;
      expect(n.n).toBe(1500);
    } finally {
      await db.sql`alter table embedding_sync_queue enable trigger embedding_sync_queue_webhook`;
    }
  }, 150_000);
});
