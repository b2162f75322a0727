// Priority lanes through the local stack (gateway + pg_net stand-in + the real function) on the real
// PostgreSQL, with the fake OpenAI server: the live worker that lingers for the next edit. (The
// continuation, which needs a short budget, is in embeddings.lanes.continuation.test.ts.)
import { describe, expect, it } from "vitest";
import { waitFor } from "./helpers/db.ts";
import { useNotesStack } from "./helpers/notes-stack.ts";

const { db, functionCalls } = useNotesStack();

const embedded = async (id: number, text: string) => {
  const [r] = await db.sql`select count(*)::int as n from documentation_embeddings
                           where source_table = 'notes' and source_id = ${String(id)} and content = ${"body: " + text}`;
  return r.n > 0;
};

describe("lanes through the local stack", () => {
  it("a live-woken worker lingers: an edit made while it lingers is embedded by the same invocation", async () => {
    // The live wake's time is held in SQL, not raced: set into the future in the first edit's own
    // transaction, it keeps the worker lingering and coalesces the second edit's wake however slow the
    // machine; set into the past, it lets the worker end.
    const wakeIn = (hours: number) =>
      `update private.embedding_sync_live_wake set last_wake_at = clock_timestamp() + interval '${hours} hours'`;
    const before = await functionCalls();
    await db.sql.begin(async (tx) => {
      await tx`insert into notes values (1, 'première version')`;
      await tx.unsafe(wakeIn(1));
    });
    try {
      await waitFor("the first edit embedded", () => embedded(1, "première version"), 20_000);
      await db.sql`update notes set body = 'deuxième version' where id = 1`;
      await waitFor("the second edit embedded", () => embedded(1, "deuxième version"), 20_000);
      // The second wake was coalesced: only the lingering worker could have claimed it.
      expect((await functionCalls()) - before).toBe(1);
    } finally {
      await db.sql.unsafe(wakeIn(-1));
    }
    // It answers once its linger ends, having claimed both edits.
    const body = await waitFor("the live worker's answer", async () => {
      const [r] = await db.sql`select content::jsonb as b from net._http_response order by id desc limit 1`;
      return r?.b;
    }, 15_000);
    expect(body).toMatchObject({ claimed: 2, continued: false });
  });
});
