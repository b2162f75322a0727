// Search quality (issue 13, points 3 and 4): a null embedding is a text-only search with honest scores,
// and natural French questions find their answers in full text (recall and precision over a small
// hand-labelled corpus, printed).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { vectorLiteral } from "../packages/embeddings/hash.ts";
import { offlineEmbedding } from "../packages/embeddings/offline.ts";
import { OpenAIEmbeddingProvider } from "../packages/embeddings/openai.ts";
import { processEmbeddingQueue } from "../packages/embeddings/pipeline.ts";
import { type FakeOpenAI, startFakeOpenAI } from "../packages/testkit/fake-openai.ts";
import { corpus, questions } from "./fixtures/french-questions.ts";
import { useTestDatabase } from "./helpers/db.ts";

const db = useTestDatabase();
let fake: FakeOpenAI;

beforeAll(async () => {
  fake = await startFakeOpenAI();
  const provider = new OpenAIEmbeddingProvider({
    apiKey: fake.apiKey,
    baseURL: fake.url,
    model: "text-embedding-3-small",
    dimensions: 1536,
    timeoutMs: 10_000,
  });
  await db.sql`create table fr_law (id int primary key, title text, body text)`;
  await db.sql`select register_embedding_source('fr_law', content_columns => array['title', 'body'])`;
  await db.sql`insert into fr_law ${db.sql(corpus)}`;
  const r = await processEmbeddingQueue(db.sql, provider, {
    workerId: "search-1",
    batchSize: 500,
    budgetMs: 30_000,
    leaseSeconds: 30,
    concurrency: 2,
    maxAttempts: 3,
  });
  expect(r.claimed).toBe(corpus.length);
}, 60_000);
afterAll(async () => {
  await fake?.stop();
});

const FILTER = JSON.stringify({ source_table: "fr_law" });

describe("hybrid_search with a null embedding", () => {
  it("is a text-only search: only rows matching the text, scored by their full-text rank", async () => {
    const hits = await db.sql<{ source_id: string; score: number }[]>`
      select source_id, score from hybrid_search('permis de construire', null, 10, ${FILTER}::text::jsonb)`;
    // Every hit contains one of the words; the two documents about building permits come first.
    expect(hits.map((h) => h.source_id).slice(0, 2).sort()).toEqual(["19", "20"]);
    expect(hits.map((h) => h.source_id).sort()).toEqual(["19", "20", "22"]);
    expect(hits.map((h) => h.score)).toEqual([1 / 51, 1 / 52, 1 / 53]);
    expect(await db.sql`select * from hybrid_search('xyzzy plugh', null, 10, ${FILTER}::text::jsonb)`).toEqual([]);
    expect(await db.sql`select * from hybrid_search(null, null, 10, ${FILTER}::text::jsonb)`).toEqual([]);
  });

  it("an embedding without text is a vector-only search", async () => {
    const q = vectorLiteral(offlineEmbedding("vitesse des véhicules en agglomération", 1536));
    const hits = await db
      .sql`select source_id, score from hybrid_search(null, ${q}::vector, 3, ${FILTER}::text::jsonb)`;
    expect(hits.map((h) => h.source_id)[0]).toBe("21");
    expect(hits.map((h) => h.score)).toEqual([1 / 51, 1 / 52, 1 / 53]);
  });
});

describe("natural questions in full text", () => {
  it("match any meaningful word, ranked: recall improves and precision holds (figures printed)", async () => {
    const K = 5;
    const score = async (search: (q: string) => Promise<string[]>) => {
      let recall = 0, top1 = 0, relevantReturned = 0, returned = 0, answered = 0;
      for (const { q, relevant } of questions) {
        const ids = (await search(q)).map(Number);
        const rel = new Set(relevant);
        recall += ids.filter((id) => rel.has(id)).length / rel.size;
        if (ids.length > 0) answered += 1;
        if (rel.has(ids[0])) top1 += 1;
        relevantReturned += ids.filter((id) => rel.has(id)).length;
        returned += ids.length;
      }
      const n = questions.length;
      return {
        [`recall@${K}`]: +(recall / n).toFixed(3),
        "precision@1": +(top1 / n).toFixed(3),
        [`precision@${K}`]: returned ? +(relevantReturned / returned).toFixed(3) : 0,
        "questions with a hit": `${answered}/${n}`,
      };
    };
    const before = await score(async (q) =>
      (await db.sql<{ source_id: string }[]>`
        select source_id from documentation_embeddings
        where source_table = 'fr_law' and fts @@ websearch_to_tsquery('french', ${q})
        order by ts_rank_cd(fts, websearch_to_tsquery('french', ${q})) desc limit ${K}`).map((r) => r.source_id)
    );
    const after = await score(async (q) =>
      (await db.sql<
        { source_id: string }[]
      >`select source_id from hybrid_search(${q}, null, ${K}, ${FILTER}::text::jsonb)`).map((r) => r.source_id)
    );
    console.log(`\nfull-text branch, ${questions.length} French questions over ${corpus.length} documents:`);
    console.table({
      "before (websearch_to_tsquery, every word)": before,
      "after (any meaningful word, ts_rank_cd)": after,
    });

    expect(after[`recall@${K}`]).toBeGreaterThanOrEqual(0.9);
    expect(after[`recall@${K}`]).toBeGreaterThan(before[`recall@${K}`] as number);
    expect(after["precision@1"]).toBeGreaterThanOrEqual(0.75);
    expect(after["precision@1"]).toBeGreaterThan(before["precision@1"] as number);
  });

  it("ignores French stop words and question words", async () => {
    const [r] = await db.sql`select embedding_question_tsquery('Combien de jours de congé par mois ?')::text as q`;
    expect(r.q).toBe("'cong' | 'jour' | 'mois'");
    const [s] = await db
      .sql`select embedding_question_tsquery('Comment est-ce que je peux le faire ?') is null as empty`;
    expect(s.empty).toBe(false);
  });
});
