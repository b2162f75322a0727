// Search with each reader's rights, against the real PostgreSQL: two users, a table whose RLS shows
// each user only their own rows; search_documents (through runSearch, as the function runs it),
// match_documents and hybrid_search, as each user and as the service role. Plus the query cache and
// the index-model refusal.
import { beforeAll, describe, expect, it } from "vitest";
import type { Caller } from "../packages/core/auth.ts";
import { vectorLiteral } from "../packages/embeddings/hash.ts";
import { offlineEmbedding, OfflineEmbeddingProvider } from "../packages/embeddings/offline.ts";
import { processEmbeddingQueue } from "../packages/embeddings/pipeline.ts";
import type { EmbeddingProvider } from "../packages/embeddings/provider.ts";
import { normalizeQuery } from "../packages/search/query-cache.ts";
import { withCallerRights } from "../packages/search/rights.ts";
import { cacheScope, runSearch, searchBodySchema } from "../packages/search/search.ts";
import { useTestDatabase } from "./helpers/db.ts";
import { createAuthUsers } from "./helpers/users.ts";

const db = useTestDatabase();
const alice = crypto.randomUUID();
const bob = crypto.randomUUID();
const user = (id: string): Caller => ({
  role: "authenticated",
  via: "user_jwt",
  userId: id,
  claims: { sub: id, role: "authenticated" },
});
const service: Caller = { role: "service_role", via: "secret_key" };

/** Counts provider calls, so the cache can be seen working. */
class CountingProvider implements EmbeddingProvider {
  readonly inner = new OfflineEmbeddingProvider(1536);
  readonly name = this.inner.name;
  readonly model = this.inner.model;
  readonly dimensions = 1536;
  readonly limits = this.inner.limits;
  calls = 0;
  async embed(inputs: string[]) {
    this.calls++;
    return await this.inner.embed(inputs);
  }
}
const provider = new CountingProvider();
const search = (caller: Caller, body: Record<string, unknown>) =>
  runSearch({ sql: db.sql, provider }, caller, searchBodySchema.parse(body));

beforeAll(async () => {
  await createAuthUsers(db.sql, [alice, bob]);
  await db.sql`create table private_notes (id bigint primary key, owner uuid not null, body text not null)`;
  await db.sql`alter table private_notes enable row level security`;
  await db.sql`create policy own_notes on private_notes for select to authenticated using (owner = auth.uid())`;
  await db.sql`grant select on private_notes to authenticated`;
  await db.sql`select register_embedding_source('private_notes', content_columns => array['body'])`;
  // 40 notes each; both users write about the same subject, so every query matches both.
  await db.sql`insert into private_notes
    select g, case when g % 2 = 0 then ${alice}::uuid else ${bob}::uuid end,
           'Le délai de préavis du bail commercial ' || g || ' est de six mois pour ' || case when g % 2 = 0 then 'Alice' else 'Bob' end
    from generate_series(1, 80) g`;
  await db.sql`alter table embedding_sync_queue disable trigger embedding_sync_queue_webhook`;
  const r = await processEmbeddingQueue(db.sql, provider.inner, {
    workerId: "rights",
    batchSize: 100,
    budgetMs: 60_000,
    leaseSeconds: 60,
    concurrency: 2,
    maxAttempts: 3,
  });
  expect(r.embedded).toBe(80);
}, 60_000);

const owners = async (ids: string[]) => {
  const rows = await db.sql<
    { id: string; owner: string }[]
  >`select id::text, owner::text from private_notes where id::text = any(${ids})`;
  return new Set(rows.map((r) => r.owner));
};

describe("search respects each user's rights", () => {
  for (const mode of ["hybrid", "vector", "text"] as const) {
    it(`${mode}: each user gets only their own rows, the service role gets both`, async () => {
      for (const [who, id] of [["alice", alice], ["bob", bob]] as const) {
        const r = await search(user(id), { query: "délai de préavis du bail commercial", mode, matchCount: 20 });
        expect(r.results, `${who} ${mode}`).toHaveLength(20);
        expect(await owners(r.results.map((x) => x.source_id))).toEqual(new Set([id]));
      }
      const s = await search(service, { query: "délai de préavis du bail commercial", mode, matchCount: 40 });
      expect(s.results).toHaveLength(40);
      expect(await owners(s.results.map((x) => x.source_id))).toEqual(new Set([alice, bob]));
    });
  }

  it("a user asking for another user's row by its exact words gets nothing of it", async () => {
    // Only note 7 (Bob's) has all these words. A question matches any meaningful word, so Alice's
    // full-text search finds her own notes on "bail commercial", never note 7; Bob's ranks note 7 first.
    const t = await search(user(alice), { query: "bail commercial 7 Bob", mode: "text", matchCount: 50 });
    expect(t.results.map((x) => x.source_id)).not.toContain("7");
    expect(await owners(t.results.map((x) => x.source_id))).toEqual(new Set([alice]));
    expect((await search(user(bob), { query: "bail commercial 7 Bob", mode: "text" })).results[0].source_id).toBe("7");
    const h = await search(user(alice), { query: "bail commercial 7 Bob", matchCount: 50 });
    expect(h.results.length).toBeGreaterThan(0);
    expect(h.results.map((x) => x.source_id)).not.toContain("7");
    expect(await owners(h.results.map((x) => x.source_id))).toEqual(new Set([alice]));
  });

  it("includeSource returns the live row read with the caller's rights", async () => {
    await db.sql`update private_notes set body = body where id = 2`; // no-op: content unchanged
    const r = await search(user(alice), { query: "préavis bail commercial 2", includeSource: true, matchCount: 3 });
    expect(r.results.length).toBeGreaterThan(0);
    for (const x of r.results) {
      expect(x.source).toMatchObject({ id: Number(x.source_id), owner: alice });
    }
    const [row] = await db.sql`select to_jsonb(n) as j from private_notes n where id = ${r.results[0].source_id}`;
    expect(r.results[0].source).toEqual(row.j);
  });

  it("a table the user has no grant on is invisible to them, not an error", async () => {
    await db.sql`create table staff_only (id int primary key, body text)`;
    await db.sql`revoke all on staff_only from authenticated, anon`;
    await db.sql`select register_embedding_source('staff_only', content_columns => array['body'])`;
    await db.sql`insert into staff_only values (1, 'préavis du bail commercial : note interne')`;
    await processEmbeddingQueue(db.sql, provider.inner, {
      workerId: "staff",
      batchSize: 10,
      budgetMs: 30_000,
      leaseSeconds: 60,
      concurrency: 1,
      maxAttempts: 3,
    });
    const u = await search(user(alice), {
      query: "note interne préavis",
      matchCount: 50,
      filter: { source_table: "staff_only" },
    });
    expect(u.results).toEqual([]);
    const s = await search(service, {
      query: "note interne préavis",
      matchCount: 50,
      filter: { source_table: "staff_only" },
    });
    expect(s.results.map((x) => x.source_id)).toEqual(["1"]);
  });

  it("the policy's set of readable keys answers as the per-row check does, whatever a user sets", async () => {
    // What each user may read, checked row by row (the set off), then through the set (on), then with
    // the set's cap below what they may read (the set is null: row by row again). The settings are the
    // user's to set: they may change the cost of their own query, never its answer.
    const seen = (id: string, settings: string) =>
      withCallerRights(db.sql, user(id), async (tx) => {
        await tx.unsafe(settings);
        const rows = await tx<{ k: string }[]>`
          select source_table || ':' || source_id as k from documentation_embeddings order by 1`;
        return rows.map((r) => r.k);
      });
    for (const id of [alice, bob]) {
      const perRow = await seen(id, "set local embedding_rights.by_set = off");
      expect(perRow).toHaveLength(40);
      expect(perRow.every((k) => k.startsWith("private_notes:"))).toBe(true);
      expect(await seen(id, "set local embedding_rights.by_set = on")).toEqual(perRow);
      expect(
        await seen(id, "set local embedding_rights.by_set = on; set local search.exact_max_rows = 10"),
      ).toEqual(perRow);
      const readableSet = (cap: number) =>
        withCallerRights(db.sql, user(id), async (tx) => {
          await tx`select set_config('search.exact_max_rows', ${String(cap)}, true)`;
          const [r] = await tx<{ s: Record<string, Record<string, number>> | null }[]>`
            select embedding_rights.readable_set() as s`;
          return r.s;
        });
      expect(await readableSet(10)).toBeNull();
      const keys = (await readableSet(1000))!;
      // Every source is in the set, the ones the user reads nothing of as {}.
      expect(Object.keys(keys["private_notes"]).map((k) => `private_notes:${k}`).sort()).toEqual(perRow);
      expect(keys["staff_only"]).toEqual({});
    }
  });

  it("match_documents and hybrid_search follow the same rule when called as a user", async () => {
    const q = vectorLiteral(offlineEmbedding("délai de préavis du bail commercial", 1536));
    for (const id of [alice, bob]) {
      const [m, h, direct] = await withCallerRights(db.sql, user(id), async (tx) => [
        await tx<
          { source_id: string }[]
        >`select source_id from match_documents(${q}::extensions.vector, 30, '{"source_table": "private_notes"}')`,
        await tx<
          { source_id: string }[]
        >`select source_id from hybrid_search('préavis bail', ${q}::extensions.vector, 30, '{"source_table": "private_notes"}')`,
        await tx<
          { n: number }[]
        >`select count(*)::int as n from documentation_embeddings where source_table = 'private_notes'`,
      ]);
      expect(m).toHaveLength(30);
      expect(h).toHaveLength(30);
      expect(await owners(m.map((x) => x.source_id))).toEqual(new Set([id]));
      expect(await owners(h.map((x) => x.source_id))).toEqual(new Set([id]));
      expect((direct as { n: number }[])[0].n).toBe(40); // reading the table directly: the same policy
    }
    const all = await withCallerRights(
      db.sql,
      service,
      (tx) =>
        tx<
          { source_id: string }[]
        >`select source_id from match_documents(${q}::extensions.vector, 80, '{"source_table": "private_notes"}')`,
    );
    expect(all).toHaveLength(80);
  });
});

describe("the query-embedding cache", () => {
  it("the same query twice (modulo case and spaces) makes one provider call, within one user's cache", async () => {
    const before = provider.calls;
    const a = await search(user(alice), { query: "Quelle est la durée du  PRÉAVIS ?" });
    const b = await search(user(alice), { query: "  quelle est la durée du préavis ? " });
    expect(provider.calls - before).toBe(1);
    expect(a.cached).toBe(false);
    expect(b.cached).toBe(true);
    const [row] = await db
      .sql`select hits::int, model, dimensions from query_embedding_cache where model = ${provider.model}
      and scope = ${alice} and query_hash = encode(sha256(convert_to(${
      normalizeQuery("quelle est la durée du préavis ?")
    }, 'UTF8')), 'hex')`;
    expect(row).toMatchObject({ hits: 1, dimensions: 1536 });
    // The table keeps no question text.
    const cols = await db
      .sql`select column_name from information_schema.columns where table_name = 'query_embedding_cache'`;
    expect(cols.map((c) => c.column_name)).not.toContain("query");
    // text mode needs no embedding at all
    const c = await search(user(alice), { query: "une question jamais posée", mode: "text" });
    expect(provider.calls - before).toBe(1);
    expect(c.cached).toBe(false);
  });

  it("never tells one user about another's question: each user has their own cache, anon none", async () => {
    const q = "Quelle indemnité pour licencier Jean Dupont en mars ?";
    const first = await search(user(alice), { query: q });
    expect(first.cached).toBe(false);
    const before = provider.calls;
    const other = await search(user(bob), { query: q });
    expect(other.cached).toBe(false); // Bob's cache is his own: Alice's question is not in it
    expect(provider.calls - before).toBe(1); // and it costs him the same as a new question
    const anonCaller: Caller = { role: "anon", via: "publishable_key" };
    const hashOf = normalizeQuery(q);
    const scopes = await db.sql<{ scope: string }[]>`select scope from query_embedding_cache
      where query_hash = encode(sha256(convert_to(${hashOf}, 'UTF8')), 'hex') order by scope`;
    expect(scopes.map((r) => r.scope).sort()).toEqual([alice, bob].sort());
    expect(cacheScope(anonCaller)).toBeNull();
    expect(cacheScope(service)).toBe("service");
  });

  it("refuses an index embedded with another model, with a clear error", async () => {
    const other = new CountingProvider();
    Object.defineProperty(other, "model", { value: "text-embedding-3-large" });
    await expect(runSearch({ sql: db.sql, provider: other }, service, searchBodySchema.parse({ query: "préavis" })))
      .rejects.toThrow(
        /index holds chunks embedded with model "offline[^"]*", but this function embeds queries with "text-embedding-3-large"/,
      );
    expect(other.calls).toBe(0);
  });

  it("refuses a result embedded with another model, in an index caught half re-embedded", async () => {
    // The constant-time check has just passed for this pool (one chunk of the right model), so only the
    // results' own models can tell that the chunks found were embedded with another model.
    const body = searchBodySchema.parse({ query: "bail commercial six mois", mode: "vector", matchCount: 5 });
    const before = await runSearch({ sql: db.sql, provider }, service, body);
    const hit = before.results[0];
    await db.sql`update documentation_embeddings set model = 'text-embedding-3-large'
                 where source_table = ${hit.source_table} and source_id = ${hit.source_id}`;
    try {
      await expect(runSearch({ sql: db.sql, provider }, service, body))
        .rejects.toThrow(
          /index holds chunks embedded with model "text-embedding-3-large", but this function embeds queries with "offline/,
        );
    } finally {
      await db.sql`update documentation_embeddings set model = ${provider.model}
                   where source_table = ${hit.source_table} and source_id = ${hit.source_id}`;
    }
  });
});

describe("the log", () => {
  it("each search is logged with the user, the question and the sources returned", async () => {
    const r = await search(user(bob), { query: "bail commercial six mois", matchCount: 5 });
    const [log] = await db.sql`select * from conversations where id = ${r.logId}`;
    expect(log).toMatchObject({
      user_id: bob,
      question: "bail commercial six mois",
      mode: "hybrid",
      result_count: 5,
      status: "active",
    });
    expect(log.sources.map((s: { source_id: string }) => s.source_id)).toEqual(r.results.map((x) => x.source_id));
    expect(log.best_similarity).toBeGreaterThan(0);
  });
});
