// Embedding storage as a setting: public.set_embedding_storage (and npm run embeddings:storage) changes
// the vector type and the dimensions of an existing index. These tests run the real pipeline
// (processEmbeddingQueue, the real openai SDK against the fake OpenAI server) on the real PostgreSQL,
// with segment 0 and a sealed bulk segment, each with its own HNSW index.
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { vectorLiteral } from "../packages/embeddings/hash.ts";
import { offlineEmbedding } from "../packages/embeddings/offline.ts";
import { OpenAIEmbeddingProvider } from "../packages/embeddings/openai.ts";
import { processEmbeddingQueue } from "../packages/embeddings/pipeline.ts";
import { embedQuery } from "../packages/search/query-cache.ts";
import { type FakeOpenAI, startFakeOpenAI } from "../packages/testkit/fake-openai.ts";
import { useTestDatabase } from "./helpers/db.ts";

const db = useTestDatabase();
const T = "storage_docs";
const MODEL = "text-embedding-3-small";
const root = fileURLToPath(new URL("../", import.meta.url));
let fake: FakeOpenAI;
let maint: postgres.Sql; // procedures that COMMIT run on their own connection, as an operator's would

const providerAt = (dimensions: number) =>
  new OpenAIEmbeddingProvider({ apiKey: fake.apiKey, baseURL: fake.url, model: MODEL, dimensions, timeoutMs: 10_000 });

let workers = 0;
const run = (dimensions: number) =>
  processEmbeddingQueue(db.sql, providerAt(dimensions), {
    workerId: `storage-${++workers}`,
    batchSize: 100,
    budgetMs: 60_000,
    leaseSeconds: 60,
    concurrency: 2,
    maxAttempts: 3,
  });

const TOPICS = [
  "congé payé",
  "licenciement économique",
  "période d'essai",
  "heures supplémentaires",
  "télétravail",
  "rupture conventionnelle",
  "prime d'ancienneté",
  "arrêt maladie",
  "formation professionnelle",
  "préavis de démission",
];
const bodyOf = (i: number) =>
  `Article ${i} du code : ${TOPICS[i % TOPICS.length]}, alinéa ${i * 7 % 13}, cas numéro ${i}`;

interface Storage {
  vector_type: string;
  dimensions: number;
  pending_index_rebuilds: number;
}
const storage = async () => (await db.sql<Storage[]>`select * from embedding_storage()`)[0];

/** Each partition's HNSW index: name, operator class and options. */
const hnswIndexes = () =>
  db.sql<{ part: string; idx: string; opclass: string; options: string[] | null }[]>`
  select c.relname as part, ic.relname as idx, opc.opcname as opclass, ic.reloptions as options
  from pg_inherits h join pg_class c on c.oid = h.inhrelid
  join pg_index i on i.indrelid = c.oid join pg_class ic on ic.oid = i.indexrelid
  join pg_am am on am.oid = ic.relam and am.amname = 'hnsw'
  join pg_opclass opc on opc.oid = i.indclass[0]
  where h.inhparent = 'public.documentation_embeddings'::regclass order by 1`;

/** The 10 nearest chunks of a query text, exactly (no index), in the column's own type. */
async function nearest(text: string, dims: number, type: string): Promise<string[]> {
  const q = vectorLiteral(offlineEmbedding(text, dims));
  return await db.sql.begin(async (tx) => {
    await tx`set local enable_indexscan = off`;
    const rows = await tx.unsafe<{ source_id: string }[]>(
      `select source_id from documentation_embeddings order by embedding <=> $1::extensions.${type} limit 10`,
      [q],
    );
    return rows.map((r) => r.source_id);
  });
}

/** The plan of a nearest-neighbour query on segment 0 names its HNSW index (it is usable with the new type). */
async function usesHnswIndex(type: string, dims: number): Promise<boolean> {
  const q = vectorLiteral(offlineEmbedding("congé payé", dims));
  const plan = await db.sql.begin(async (tx) => {
    await tx`set local enable_seqscan = off`;
    await tx`set local enable_sort = off`; // a few rows: the planner would rather sort them
    return await tx.unsafe<{ "QUERY PLAN": string }[]>(
      `explain select id from private.documentation_embeddings_s0 order by embedding <=> '${q}'::extensions.${type} limit 5`,
    );
  });
  return plan.some((r) => r["QUERY PLAN"].includes("documentation_embeddings_s0_embedding_hnsw"));
}

beforeAll(async () => {
  fake = await startFakeOpenAI();
  maint = postgres(db.url, { max: 1, onnotice: () => {} });
  await db.sql`update embedding_sync_settings set bulk_segment_min_rows = 20, bulk_segment_max_rows = 1000`;
  await db.sql.unsafe(`create table ${T} (id int primary key, body text)`);
  await db.sql`select register_embedding_source(${T})`;
  // Segment 0: 60 live rows.
  const insertRows = (from: number, to: number) =>
    db.sql.begin(async (tx) => {
      for (let i = from; i <= to; i++) await tx.unsafe(`insert into ${T} values ($1, $2)`, [i, bodyOf(i)]);
    });
  await insertRows(1, 60);
  expect(await run(1536)).toMatchObject({ claimed: 60, embedded: 60, dead: 0 });
  // Segment 1: 30 bulk rows, loaded, then built and sealed by the segment maintenance.
  await insertRows(61, 90);
  await db.sql`update embedding_sync_queue set lane = 'bulk' where source_table = ${T} and status = 'pending'`;
  await maint`call private.maintain_embedding_segments()`;
  expect(await run(1536)).toMatchObject({ claimed: 30, embedded: 30, dead: 0 });
  await maint`call private.maintain_embedding_segments()`;
  const segs = await db.sql`select segment, state, indexed, rows::int from embedding_segment_status order by segment`;
  expect(segs.map((s) => [s.segment, s.state, s.indexed])).toEqual([[0, "live", true], [1, "sealed", true]]);
  await db.sql`alter index private.documentation_embeddings_s1_embedding_hnsw set (ef_construction = 40)`;
}, 120_000);
afterAll(async () => {
  await maint?.end({ timeout: 5 });
  await fake?.stop();
});

describe("embedding storage", () => {
  it(
    "a type change converts the stored vectors in place: no provider call, same neighbours, every index rebuilt",
    async () => {
      expect(await storage()).toEqual({ vector_type: "vector", dimensions: 1536, pending_index_rebuilds: 0 });
      const probes = [3, 17, 42, 71, 88].map(bodyOf);
      const before = await Promise.all(probes.map((p) => nearest(p, 1536, "vector")));
      const chunksBefore = await db.sql`select id, source_id, content_hash from documentation_embeddings order by id`;
      fake.resetStats();

      await maint`call set_embedding_storage(1536, 'halfvec')`;

      expect(await storage()).toEqual({ vector_type: "halfvec", dimensions: 1536, pending_index_rebuilds: 0 });
      expect((await db.sql`select embedding_dimensions() as d`)[0].d).toBe(1536);
      expect(
        (await db.sql`select format_type(atttypid, atttypmod) as t from pg_attribute
      where attrelid = 'query_embedding_cache'::regclass and attname = 'embedding'`)[0].t,
      ).toBe("halfvec(1536)");
      // Every partition that had an HNSW index has it again, in halfvec, with its own options.
      expect(await hnswIndexes()).toEqual([
        {
          part: "documentation_embeddings_s0",
          idx: "documentation_embeddings_s0_embedding_hnsw",
          opclass: "halfvec_cosine_ops",
          options: null,
        },
        {
          part: "documentation_embeddings_s1",
          idx: "documentation_embeddings_s1_embedding_hnsw",
          opclass: "halfvec_cosine_ops",
          options: ["ef_construction=40"],
        },
      ]);
      expect(await usesHnswIndex("halfvec", 1536)).toBe(true);
      // Nothing re-embedded, nothing queued, the same chunks, the same nearest neighbours.
      expect(fake.stats.requests).toBe(0);
      expect(await db.sql`select 1 from embedding_sync_queue where status = 'pending'`).toHaveLength(0);
      expect(await db.sql`select id, source_id, content_hash from documentation_embeddings order by id`).toEqual(
        chunksBefore,
      );
      // Same 10 neighbours, the same first; near-ties (texts of one topic) may swap places at 16 bits.
      const after = await Promise.all(probes.map((p) => nearest(p, 1536, "halfvec")));
      expect(after.map((a) => [a[0], [...a].sort()])).toEqual(before.map((b) => [b[0], [...b].sort()]));
      expect(await run(1536)).toMatchObject({ claimed: 0, embedded: 0 });
      expect(fake.stats.requests).toBe(0);
    },
    120_000,
  );

  it(
    "the whole pipeline writes and reads halfvec: new rows, hash reuse, updates, deletes, query cache, a new segment's build",
    async () => {
      expect((await storage()).vector_type).toBe("halfvec");
      fake.resetStats();
      // Row 91 repeats row 3's text: its vector is reused from the stored halfvec, not asked for.
      await db.sql.unsafe(`insert into ${T} values (91, $1), (92, $2)`, [
        bodyOf(3),
        "Un texte tout neuf sur le repos dominical",
      ]);
      await db.sql.unsafe(`update ${T} set body = $1 where id = 5`, ["Article 5 réécrit : indemnité de licenciement"]);
      await db.sql.unsafe(`delete from ${T} where id = 6`);
      expect(await run(1536)).toMatchObject({ claimed: 4, embedded: 2, unchanged: 1, deleted: 1, dead: 0 });
      expect(fake.stats.inputs).toBe(2);
      const [r91, r3] = await Promise.all([91, 3].map(async (id) =>
        (await db.sql`
      select embedding::text as e, pg_typeof(embedding)::text as t from documentation_embeddings
      where source_table = ${T} and source_id = ${String(id)}`)[0]
      ));
      expect(r91).toEqual(r3);
      expect(r91.t).toBe("halfvec");
      expect((await nearest("Article 5 réécrit : indemnité de licenciement", 1536, "halfvec"))[0]).toBe("5");
      expect(await db.sql`select 1 from documentation_embeddings where source_table = ${T} and source_id = '6'`)
        .toHaveLength(0);

      // The query cache stores and serves halfvec.
      const provider = providerAt(1536);
      const first = await embedQuery(db.sql, provider, "Combien de jours de congé ?", "service");
      const second = await embedQuery(db.sql, provider, "combien de jours de congé ?", "service");
      expect([first.cached, second.cached]).toEqual([false, true]);
      expect(second.vector.split(",")).toHaveLength(1536);

      // A new bulk segment is loaded and built in halfvec (its build copies segment 0's operator class).
      await db.sql.unsafe(
        `insert into ${T} select g, 'Texte en masse ' || g || ' sur la durée du travail' from generate_series(100, 129) g`,
      );
      await db.sql`update embedding_sync_queue set lane = 'bulk' where source_table = ${T} and status = 'pending'`;
      await maint`call private.maintain_embedding_segments()`;
      expect(await run(1536)).toMatchObject({ claimed: 30, embedded: 30, dead: 0 });
      await maint`call private.maintain_embedding_segments()`;
      const s2 = (await hnswIndexes()).find((x) => x.part === "documentation_embeddings_s2");
      expect(s2).toMatchObject({ opclass: "halfvec_cosine_ops" });
      expect((await db.sql`select state, last_error from embedding_segments where id = 2`)[0]).toEqual({
        state: "sealed",
        last_error: null,
      });
    },
    120_000,
  );

  it(
    "a dimension change clears the vectors, queues every row and the provider re-embeds them at the new size",
    async () => {
      const rows = Number((await db.sql`select count(*) from ${db.sql(T)}`)[0].count);
      await db.sql`select resync_embedding_sources(${T})`; // nothing pending before the change
      expect(await db.sql`select 1 from embedding_sync_queue where status = 'pending'`).toHaveLength(0);
      fake.resetStats();

      await maint`call set_embedding_storage(512, 'halfvec')`;

      expect(await storage()).toEqual({ vector_type: "halfvec", dimensions: 512, pending_index_rebuilds: 0 });
      expect((await db.sql`select embedding_dimensions() as d`)[0].d).toBe(512);
      expect((await db.sql`select count(*)::int as n from documentation_embeddings`)[0].n).toBe(0);
      expect((await db.sql`select count(*)::int as n from query_embedding_cache`)[0].n).toBe(0);
      expect((await db.sql`select count(*)::int as n from embedding_sync_versions where content_hash is not null`)[0].n)
        .toBe(0);
      expect(
        await db.sql`select lane, count(*)::int as n from embedding_sync_queue where status = 'pending' group by lane`,
      )
        .toEqual([{ lane: "bulk", n: rows }]);
      expect((await hnswIndexes()).map((x) => x.opclass)).toEqual([
        "halfvec_cosine_ops",
        "halfvec_cosine_ops",
        "halfvec_cosine_ops",
      ]);
      expect(fake.stats.requests).toBe(0);

      // A worker still configured for 1536 cannot write into the 512-d column: its jobs are not applied.
      // (The function refuses to start at all: EMBEDDING_DIMENSIONS is checked against the table.)
      await processEmbeddingQueue(db.sql, providerAt(1536), {
        workerId: "storage-stale",
        batchSize: 5,
        budgetMs: 20_000,
        leaseSeconds: 60,
        concurrency: 1,
        maxAttempts: 1,
        maxBatches: 1,
      }).catch(() => null);
      expect((await db.sql`select count(*)::int as n from documentation_embeddings`)[0].n).toBe(0);
      await db
        .sql`update embedding_sync_queue set status = 'pending', run_at = now(), retry_count = 0, locked_by = null,
                 locked_at = null, lease_until = null where status in ('processing', 'failed') or (status = 'pending' and run_at > now())`;

      // Every row is embedded again, each distinct text sent once (rows 3 and 91 share theirs), at 512
      // dimensions (the `dimensions` parameter).
      fake.resetStats();
      const r = await run(512);
      expect(r).toMatchObject({ claimed: rows, embedded: rows - 1, unchanged: 1, dead: 0 });
      expect(fake.stats.inputs).toBe(rows - 1);
      expect(fake.stats.dimensions).toEqual(Array(fake.stats.ok).fill(512));
      const [{ n, d }] = await db.sql`select count(distinct source_id)::int as n, min(vector_dims(embedding)) as d
                                    from documentation_embeddings where source_table = ${T}`;
      expect({ n, d }).toEqual({ n: rows, d: 512 });
      expect((await nearest(bodyOf(42), 512, "halfvec"))[0]).toBe("42");
      expect(await usesHnswIndex("halfvec", 512)).toBe(true);
      // The fingerprints are back: a plain resync finds nothing to do.
      const [again] = await db.sql`select coalesce(sum(enqueued), 0)::int as n from resync_embedding_sources(${T})`;
      expect(again.n).toBe(0);
    },
    180_000,
  );

  it(
    "back to vector: in place again; a run killed before the segment indexes were rebuilt is finished by the next call",
    async () => {
      const probe = bodyOf(17);
      const before = await nearest(probe, 512, "halfvec");
      fake.resetStats();
      await maint`call set_embedding_storage(512, 'vector')`;
      expect(await storage()).toEqual({ vector_type: "vector", dimensions: 512, pending_index_rebuilds: 0 });
      expect((await hnswIndexes()).map((x) => x.opclass)).toEqual([
        "vector_cosine_ops",
        "vector_cosine_ops",
        "vector_cosine_ops",
      ]);
      const after = await nearest(probe, 512, "vector");
      expect([after[0], [...after].sort()]).toEqual([before[0], [...before].sort()]);
      expect(fake.stats.requests).toBe(0);

      // The state a kill after the first transaction leaves: the column converted, segment 1's index
      // still to rebuild. The next call (any settings, here none) finishes it.
      await db.sql`drop index private.documentation_embeddings_s1_embedding_hnsw`;
      await db.sql`insert into private.embedding_storage_rebuilds (partition, index_name, opclass_suffix, with_clause)
                 values ('private.documentation_embeddings_s1', 'documentation_embeddings_s1_embedding_hnsw', '_cosine_ops', ' with (ef_construction=40)')`;
      expect((await storage()).pending_index_rebuilds).toBe(1);
      await maint`call set_embedding_storage()`;
      expect(await storage()).toEqual({ vector_type: "vector", dimensions: 512, pending_index_rebuilds: 0 });
      expect((await hnswIndexes()).find((x) => x.part === "documentation_embeddings_s1"))
        .toMatchObject({ opclass: "vector_cosine_ops", options: ["ef_construction=40"] });
    },
    120_000,
  );

  it("bad settings are refused and change nothing; only the owner may change the storage", async () => {
    const chunks = (await db.sql`select count(*)::int as n from documentation_embeddings`)[0].n;
    await expect(maint`call set_embedding_storage(3000, 'vector')`).rejects.toMatchObject({ code: "22023" });
    await expect(maint`call set_embedding_storage(512, 'float')`).rejects.toMatchObject({ code: "22023" });
    await expect(maint`call set_embedding_storage(0, 'halfvec')`).rejects.toMatchObject({ code: "22023" });
    expect(await storage()).toEqual({ vector_type: "vector", dimensions: 512, pending_index_rebuilds: 0 });
    expect((await db.sql`select count(*)::int as n from documentation_embeddings`)[0].n).toBe(chunks);
    const rights = await db.sql`
      select r as role, has_function_privilege(r, 'public.set_embedding_storage(int, text)', 'execute') as change,
             has_function_privilege(r, 'public.embedding_storage()', 'execute') as show
      from unnest(array['anon', 'authenticated', 'service_role']) r order by r`;
    expect(rights).toEqual([
      { role: "anon", change: false, show: false },
      { role: "authenticated", change: false, show: false },
      { role: "service_role", change: false, show: true },
    ]);
  });

  it("npm run embeddings:storage: validates its arguments, asks before re-embedding, converts the type", async () => {
    const cli = (...args: string[]) =>
      promisify(execFile)(process.execPath, ["--import", "tsx", "scripts/embeddings-storage.ts", ...args], {
        cwd: root,
        env: { ...process.env, DATABASE_URL: db.url },
      }).then(
        (r) => ({ code: 0, out: r.stdout, err: r.stderr }),
        (e) => ({ code: e.code as number, out: e.stdout as string, err: e.stderr as string }),
      );

    expect(await cli()).toMatchObject({ code: 0, out: expect.stringContaining("embeddings stored as vector(512)") });
    const bad = await Promise.all([
      cli("--type", "float16"),
      cli("--dimensions", "abc"),
      cli("--type", "vector", "--dimensions", "3072"),
    ]);
    expect(bad.map((b) => b.code)).toEqual([2, 2, 2]);
    expect(bad[0].err).toMatch(/type: Invalid option/);
    const noYes = await cli("--dimensions", "256");
    expect(noYes).toMatchObject({ code: 2, err: expect.stringContaining("--yes") });
    expect(await storage()).toEqual({ vector_type: "vector", dimensions: 512, pending_index_rebuilds: 0 });

    const ok = await cli("--type", "halfvec");
    expect(ok).toMatchObject({ code: 0, out: expect.stringContaining("embeddings stored as halfvec(512)") });
    expect(ok.out).toContain("nothing to embed again");
    expect(await storage()).toEqual({ vector_type: "halfvec", dimensions: 512, pending_index_rebuilds: 0 });
  }, 120_000);
});
