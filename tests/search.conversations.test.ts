// The conversation log and feedback against the real PostgreSQL: round trips through the
// conversations actions with each caller's rights, RLS between two users, and the quality views.
import { beforeAll, describe, expect, it } from "vitest";
import type { Caller } from "../packages/core/auth.ts";
import { OfflineEmbeddingProvider } from "../packages/embeddings/offline.ts";
import { processEmbeddingQueue } from "../packages/embeddings/pipeline.ts";
import { conversationsBodySchema, runConversationAction } from "../packages/search/conversations.ts";
import { runSearch, searchBodySchema } from "../packages/search/search.ts";
import { useTestDatabase } from "./helpers/db.ts";
import { createAuthUsers } from "./helpers/users.ts";

const db = useTestDatabase();
const provider = new OfflineEmbeddingProvider(1536);
const alice = crypto.randomUUID();
const bob = crypto.randomUUID();
const user = (id: string): Caller => ({
  role: "authenticated",
  via: "user_jwt",
  userId: id,
  claims: { sub: id, role: "authenticated" },
});
const service: Caller = { role: "service_role", via: "secret_key" };

const act = async (caller: Caller, body: Record<string, unknown>) => {
  const r = await runConversationAction(db.sql, caller, conversationsBodySchema.parse(body));
  return { status: r.status, body: await r.json() };
};
const search = (caller: Caller, body: Record<string, unknown>) =>
  runSearch({ sql: db.sql, provider }, caller, searchBodySchema.parse(body));

beforeAll(async () => {
  await createAuthUsers(db.sql, [alice, bob]);
  await db.sql`create table faq (id int primary key, question text, answer text)`;
  await db.sql`select register_embedding_source('faq', content_columns => array['question', 'answer'])`;
  await db.sql`insert into faq values (1, 'Quel est le délai de préavis ?', 'Trois mois pour un bail d''habitation.'),
                                      (2, 'Comment résilier un contrat ?', 'Par lettre recommandée avec accusé de réception.')`;
  await db.sql`alter table embedding_sync_queue disable trigger embedding_sync_queue_webhook`;
  await processEmbeddingQueue(db.sql, provider, {
    workerId: "conv",
    batchSize: 10,
    budgetMs: 30_000,
    leaseSeconds: 60,
    concurrency: 1,
    maxAttempts: 3,
  });
}, 60_000);

describe("conversations and feedback", () => {
  it("search -> answer -> feedback -> list -> archive, for the user who asked", async () => {
    const conversationId = crypto.randomUUID();
    const s1 = await search(user(alice), { query: "délai de préavis", conversationId });
    const s2 = await search(user(alice), { query: "résilier un contrat", conversationId });
    expect(s1.conversationId).toBe(conversationId);

    const a = await act(user(alice), { action: "answer", logId: s1.logId, response: "Trois mois." });
    expect(a.status).toBe(200);
    const f = await act(user(alice), { action: "feedback", logId: s1.logId, rating: 1, comment: "clair" });
    expect(f.body).toMatchObject({ logId: s1.logId, rating: 1, comment: "clair" });
    // Feedback again replaces it (one per entry).
    await act(user(alice), { action: "feedback", logId: s1.logId, rating: -1, comment: "en fait non" });

    const l = await act(user(alice), { action: "list", conversationId });
    expect(l.body.entries.map((e: { question: string }) => e.question)).toEqual([
      "résilier un contrat",
      "délai de préavis",
    ]);
    expect(l.body.entries[1]).toMatchObject({
      response: "Trois mois.",
      feedbackRating: -1,
      feedbackComment: "en fait non",
      userId: alice,
    });
    expect(l.body.entries[1].sources[0]).toMatchObject({ source_table: "faq", source_id: s1.results[0].source_id });

    const ar = await act(user(alice), { action: "archive", conversationId });
    expect(ar.body).toEqual({ conversationId, archived: 2 });
    expect((await act(user(alice), { action: "list", conversationId })).body.entries).toEqual([]);
    expect((await act(user(alice), { action: "list", conversationId, status: "archived" })).body.entries).toHaveLength(
      2,
    );
    const [row] = await db.sql`select status, response from conversations where id = ${s2.logId}`;
    expect(row).toEqual({ status: "archived", response: null });
  });

  it("a user reaches only their own rows; the service role reaches all", async () => {
    const s = await search(user(bob), { query: "délai de préavis" });
    expect((await act(user(alice), { action: "answer", logId: s.logId, response: "intrus" })).status).toBe(404);
    expect((await act(user(alice), { action: "feedback", logId: s.logId, rating: -1 })).status).toBe(404);
    expect((await act(user(alice), { action: "archive", conversationId: s.conversationId })).status).toBe(404);
    const [row] = await db.sql`select response, status from conversations where id = ${s.logId}`;
    expect(row).toEqual({ response: null, status: "active" });
    expect(await db.sql`select 1 from feedback where conversation_entry_id = ${s.logId}`).toHaveLength(0);

    const mine = (await act(user(alice), { action: "list", status: "all" })).body.entries;
    expect(mine.length).toBeGreaterThan(0);
    expect(mine.every((e: { userId: string }) => e.userId === alice)).toBe(true);
    const all = (await act(service, { action: "list", status: "all", limit: 200 })).body.entries;
    expect(new Set(all.map((e: { userId: string }) => e.userId))).toEqual(new Set([alice, bob]));
    // The service role may answer anyone's entry (the assistant's backend does).
    expect((await act(service, { action: "answer", logId: s.logId, response: "Trois mois." })).status).toBe(200);
  });

  it("direct SQL as a user: own rows only, in the tables and in user_questions_complete", async () => {
    const rows = await db.sql.begin(async (tx) => {
      await tx`set local role authenticated`;
      await tx`select set_config('request.jwt.claims', ${JSON.stringify({ sub: bob, role: "authenticated" })}, true)`;
      const c = await tx`select distinct user_id::text from conversations`;
      const v = await tx`select distinct user_id::text from user_questions_complete`;
      // Writing someone else's user_id is refused by RLS.
      const err = await tx.savepoint((sp) =>
        sp`insert into feedback (conversation_entry_id, user_id, rating)
        select id, ${alice}::uuid, 1 from conversations limit 1`
      ).catch((e) => e);
      return { c, v, err };
    });
    expect(rows.c).toEqual([{ user_id: bob }]);
    expect(rows.v).toEqual([{ user_id: bob }]);
    expect(String(rows.err)).toMatch(/row-level security/);
  });

  it("quality views: negative feedback with its sources; questions under the similarity threshold", async () => {
    const good = await search(user(bob), {
      query: "Comment résilier un contrat ? Par lettre recommandée avec accusé de réception.",
    });
    const poor = await search(user(bob), { query: "xylophone zèbre quantique" });
    const none = await search(user(bob), { query: "xylophone zèbre quantique", mode: "text" });
    await act(user(bob), { action: "feedback", logId: good.logId, rating: -1, comment: "hors sujet" });

    const neg = await db
      .sql`select log_id::text, question, comment, sources from search_negative_feedback where log_id = ${good.logId}`;
    expect(neg).toHaveLength(1);
    expect(neg[0]).toMatchObject({ question: good.results.length ? expect.any(String) : "", comment: "hors sujet" });
    expect(neg[0].sources.map((x: { source_id: string }) => x.source_id)).toEqual(good.results.map((x) => x.source_id));

    const unanswered = new Set(
      (await db.sql`select log_id::text from search_unanswered_questions`).map((r) => r.log_id),
    );
    expect(unanswered.has(poor.logId)).toBe(true);
    expect(unanswered.has(none.logId)).toBe(true);
    expect(unanswered.has(good.logId)).toBe(false);
    // The threshold is the operators' to set.
    await db.sql`update search_settings set unanswered_similarity_threshold = 0.99`;
    expect(await db.sql`select 1 from search_unanswered_questions where log_id = ${good.logId}`).toHaveLength(1);
    await db.sql`update search_settings set unanswered_similarity_threshold = 0.3`;
    // Users cannot read the operators' views.
    const err = await db.sql.begin(async (tx) => {
      await tx`set local role authenticated`;
      await tx`select * from search_negative_feedback`;
    }).catch((e) => e);
    expect(String(err)).toMatch(/permission denied/);
  });
});
