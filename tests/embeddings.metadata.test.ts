// Chunk metadata (issue 13, point 5): registered metadata columns land in every chunk's metadata, stay
// current when only they change (no provider call), and `filter` on them works in both searches.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { vectorLiteral } from "../packages/embeddings/hash.ts";
import { offlineEmbedding } from "../packages/embeddings/offline.ts";
import { OpenAIEmbeddingProvider } from "../packages/embeddings/openai.ts";
import { processEmbeddingQueue } from "../packages/embeddings/pipeline.ts";
import { type FakeOpenAI, startFakeOpenAI } from "../packages/testkit/fake-openai.ts";
import { useTestDatabase } from "./helpers/db.ts";

const db = useTestDatabase();
let fake: FakeOpenAI;
let provider: OpenAIEmbeddingProvider;

beforeAll(async () => {
  fake = await startFakeOpenAI();
  provider = new OpenAIEmbeddingProvider({
    apiKey: fake.apiKey,
    baseURL: fake.url,
    model: "text-embedding-3-small",
    dimensions: 1536,
    timeoutMs: 10_000,
  });
});
afterAll(async () => {
  await fake?.stop();
});
beforeEach(async () => {
  if (db.sql) await db.sql`delete from embedding_sync_queue where status <> 'completed'`;
});

let workers = 0;
const run = () =>
  processEmbeddingQueue(db.sql, provider, {
    workerId: `meta-${++workers}`,
    batchSize: 500,
    budgetMs: 30_000,
    leaseSeconds: 30,
    concurrency: 2,
    maxAttempts: 3,
    retryBaseMs: 20,
    retryMaxMs: 200,
  });

async function metadataOf(table: string) {
  const rows = await db.sql<{ source_id: string; metadata: Record<string, unknown> }[]>`
    select source_id, metadata from documentation_embeddings where source_table = ${table} order by source_id::int, chunk_index`;
  return Object.fromEntries(rows.map((r) => [r.source_id, r.metadata]));
}

async function asAuthenticated<T>(f: (tx: typeof db.sql) => Promise<T>): Promise<T> {
  return await db.sql.begin(async (tx) => {
    await tx`set local role authenticated`;
    return await f(tx as unknown as typeof db.sql);
  }) as T;
}

describe("chunk metadata", () => {
  it("registered metadata columns are written to each chunk; a metadata-only change rewrites them with no provider call", async () => {
    await db.sql`create table articles (id int primary key, title text, body text, url text, category text,
                  published_on date, owner text, views int not null default 0)`;
    await db.sql`select register_embedding_source('articles', content_columns => array['title', 'body'],
                  metadata_columns => array['title', 'url', 'category', 'published_on', 'owner'])`;
    await db.sql`insert into articles (id, title, body, url, category, published_on, owner) values
      (1, 'Congés payés', 'Le salarié a droit à deux jours et demi de congé par mois.', 'https://example.test/a/1', 'travail', '2024-05-01', 'rh'),
      (2, 'Bail commercial', 'Le locataire peut demander le renouvellement du bail.', 'https://example.test/a/2', 'baux', '2023-01-15', null)`;
    await run();
    expect(await metadataOf("articles")).toEqual({
      1: {
        title: "Congés payés",
        url: "https://example.test/a/1",
        category: "travail",
        published_on: "2024-05-01",
        owner: "rh",
        chunk_count: 1,
      },
      2: {
        title: "Bail commercial",
        url: "https://example.test/a/2",
        category: "baux",
        published_on: "2023-01-15",
        chunk_count: 1,
      },
    });

    // Only metadata changes: one job, no provider call, the new values in the chunk.
    fake.resetStats();
    await db.sql`update articles set category = 'droit du travail', owner = 'juridique' where id = 1`;
    expect(await db.sql`select action from embedding_sync_queue where source_table = 'articles' and status = 'pending'`)
      .toEqual([{ action: "UPDATE" }]);
    const r = await run();
    expect(r).toMatchObject({ claimed: 1, embedded: 0, unchanged: 1, providerCalls: 0 });
    expect(fake.stats.requests).toBe(0);
    expect((await metadataOf("articles"))[1]).toMatchObject({ category: "droit du travail", owner: "juridique" });

    // A column neither embedded nor in the metadata still enqueues nothing.
    await db.sql`update articles set views = views + 1`;
    expect(await db.sql`select 1 from embedding_sync_queue where source_table = 'articles' and status = 'pending'`)
      .toHaveLength(0);

    // And resync compares metadata too: a change the trigger never saw is found, nothing else.
    await db.sql`alter table articles disable trigger user`;
    await db.sql`update articles set url = 'https://example.test/a/2-v2' where id = 2`;
    await db.sql`alter table articles enable trigger user`;
    expect(await db.sql`select enqueued::int from resync_embedding_sources('articles')`).toEqual([{ enqueued: 1 }]);
    expect(await run()).toMatchObject({ claimed: 1, providerCalls: 0 });
    expect((await metadataOf("articles"))[2]).toMatchObject({ url: "https://example.test/a/2-v2" });
  });

  it("filter on metadata works in match_documents and hybrid_search", async () => {
    const q = vectorLiteral(offlineEmbedding("congé par mois", 1536));
    const vec = await asAuthenticated((tx) =>
      tx`select source_id, metadata from match_documents(${q}::vector, 5, '{"category": "baux"}')`
    );
    expect(vec.map((h) => h.source_id)).toEqual(["2"]);
    const hybrid = await asAuthenticated((tx) =>
      tx`select source_id from hybrid_search('congé', ${q}::vector, 5, '{"source_table": "articles", "owner": "juridique"}')`
    );
    expect(hybrid.map((h) => h.source_id)).toEqual(["1"]);
  });

  it("a selective metadata filter finds all its chunks among many (the GIN index serves it, not an HNSW post-filter)", async () => {
    await db.sql`create table many_docs (id int primary key, body text, tag text)`;
    await db.sql`select register_embedding_source('many_docs', metadata_columns => array['tag'])`;
    await db.sql`insert into many_docs select g, 'document numéro ' || g || ' sur le thème ' || (g % 37),
                 case when g % 500 = 0 then 'rare' when g % 20 = 0 then 'medium' else 'common' end from generate_series(1, 3000) g`;
    for (let i = 0; i < 10; i++) if ((await run()).claimed === 0) break;
    await db.sql`analyze documentation_embeddings`;
    const q = vectorLiteral(offlineEmbedding("document numéro 17 sur le thème 17", 1536));
    const hits = await asAuthenticated((tx) =>
      tx`select source_id from match_documents(${q}::vector, 10, '{"tag": "rare"}')`
    );
    expect(hits.map((h) => h.source_id).sort()).toEqual(["1000", "1500", "2000", "2500", "3000", "500"]);
    // A filter matching 1 chunk in 20: still a full page of results, all matching.
    const medium = await asAuthenticated((tx) =>
      tx`select source_id, metadata->>'tag' as tag from match_documents(${q}::vector, 10, '{"tag": "medium"}')`
    );
    expect(medium.map((h) => h.tag)).toEqual(Array(10).fill("medium"));
    const hybridMedium = await asAuthenticated((tx) =>
      tx`select metadata->>'tag' as tag from hybrid_search('thème', ${q}::vector, 10, '{"tag": "medium"}')`
    );
    expect(hybridMedium.map((h) => h.tag)).toEqual(Array(10).fill("medium"));
    // At scale the planner serves the ORDER BY distance from HNSW, which returns ef_search (40)
    // candidates: filtered afterwards, a 1-in-20 filter would keep about 2. Forced here on purpose.
    const viaHnsw = await db.sql.begin(async (tx) => {
      await tx`set local enable_seqscan = off`;
      await tx`set local enable_bitmapscan = off`;
      await tx`set local enable_sort = off`;
      const plan = await tx.unsafe(
        `explain select id from documentation_embeddings order by embedding <=> '${q}' limit 10`,
      );
      expect(plan.map((p) => Object.values(p)[0]).join("\n")).toMatch(/hnsw/);
      await tx`set local role authenticated`;
      return await tx`select metadata->>'tag' as tag from match_documents(${q}::vector, 10, '{"tag": "medium"}')`;
    });
    expect(viaHnsw.map((h) => h.tag)).toEqual(Array(10).fill("medium"));
    const plan = await db.sql.unsafe(
      `explain select id from documentation_embeddings where metadata @> '{"tag": "rare"}'`,
    );
    expect(plan.map((p) => Object.values(p)[0]).join("\n")).toMatch(/documentation_embeddings_metadata/);
  });

  it("refuses unknown or reserved metadata columns at registration", async () => {
    await db.sql`create table bad_meta (id int primary key, body text, chunk_count int)`;
    await expect(db.sql`select register_embedding_source('bad_meta', metadata_columns => array['nope'])`).rejects
      .toThrow(/metadata_columns names a column/);
    await expect(db.sql`select register_embedding_source('bad_meta', metadata_columns => array['chunk_count'])`).rejects
      .toThrow(/reserved/);
  });
});
