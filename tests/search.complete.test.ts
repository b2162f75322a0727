// A user's search is complete: among the rows that user may read, the same top 10 as an exact search
// over those rows, in every mode, with and without a filter, whether the user reads 20 rows of 20,000
// (the exact plan) or a broad share (the index's iterative scan, checked for recall).
//
// 20,000 dossiers of 1,000 clients (20 each); RLS shows a user the dossiers of the clients they belong
// to. Chunks are written directly, with clustered vectors (64 dimensions, so the test builds its
// index in seconds) and words drawn from the same topics, so every query has close matches in many
// clients: the case where "best N over everyone, then RLS" leaves a small reader with nothing.
import { beforeAll, describe, expect, it } from "vitest";
import postgres from "postgres";
import type { Caller } from "../packages/core/auth.ts";
import type { EmbeddingProvider } from "../packages/embeddings/provider.ts";
import { withCallerRights } from "../packages/search/rights.ts";
import { runSearch, searchBodySchema } from "../packages/search/search.ts";
import { useTestDatabase } from "./helpers/db.ts";
import { createAuthUsers } from "./helpers/users.ts";

const db = useTestDatabase();
const DIMS = 64;
const TOPICS = [
  "bail",
  "préavis",
  "licenciement",
  "congé",
  "salaire",
  "succession",
  "divorce",
  "brevet",
  "vente",
  "impôt",
];
const small = "00000000-0000-4000-8000-000000000020"; // member of one client: 20 rows
const broad = "00000000-0000-4000-8000-000000002000"; // member of 100 clients: 2,000 rows
const user = (id: string): Caller => ({
  role: "authenticated",
  via: "user_jwt",
  userId: id,
  claims: { sub: id, role: "authenticated" },
});

/** The query vector for a topic: its center, nudged (the vectors are stored by SQL below). */
let queries: { topic: number; vector: string; text: string }[] = [];

/** Embeds nothing: the test passes vectors it made; the search function needs a provider for its checks. */
class VectorsByText implements EmbeddingProvider {
  readonly name = "test";
  readonly model = "test-64";
  readonly dimensions = DIMS;
  readonly limits = { maxInputs: 10, maxTokensPerRequest: 10_000, maxTokensPerInput: 1_000 };
  embed(inputs: string[]) {
    return Promise.resolve({
      vectors: inputs.map((t) =>
        Float32Array.from(JSON.parse(queries.find((q) => q.text.toLowerCase() === t)!.vector) as number[])
      ),
      tokens: 0,
    });
  }
}

beforeAll(async () => {
  const sql = db.sql;
  await createAuthUsers(sql, [small, broad]);
  await sql`create table dossiers (id bigint primary key, client_id int not null, body text not null)`;
  await sql`create index on dossiers (client_id)`;
  await sql`create table dossier_members (user_id uuid not null, client_id int not null, primary key (user_id, client_id))`;
  await sql`alter table dossiers enable row level security`;
  await sql`create policy members_read on dossiers for select to authenticated
            using (client_id = any (array(select m.client_id from dossier_members m where m.user_id = (select auth.uid()))))`;
  await sql`grant select on dossiers to authenticated`;
  await sql`grant select on dossier_members to authenticated`;
  await sql`select register_embedding_source('dossiers', content_columns => array['body'])`;
  await sql`insert into dossier_members select ${small}::uuid, 7`;
  await sql`insert into dossier_members select ${broad}::uuid, c from generate_series(0, 999, 10) c`;
  // Turn the row triggers off: the chunks are written below, as the worker would write them.
  await sql`alter table dossiers disable trigger user`;
  await sql`insert into dossiers select g, g % 1000, 'dossier ' || g from generate_series(1, 20000) g`;

  // The index, at 64 dimensions (the column is empty yet, so its type changes in place).
  await sql`drop index private.documentation_embeddings_s0_embedding_hnsw`;
  await sql.unsafe(`alter table documentation_embeddings alter column embedding type extensions.vector(${DIMS})`);
  await sql.unsafe(`alter table query_embedding_cache alter column embedding type extensions.vector(${DIMS})`);
  await sql`select setseed(0.42)`;
  await sql`create temp table centers as
            select t, array(select (random() - 0.5)::real from generate_series(1, ${DIMS})) as c from generate_series(0, 9) t`;
  // Each dossier: a topic (a client's 20 dossiers span every topic), its center plus noise; text with
  // the topic's word, a third of them a second topic's word.
  await sql.unsafe(`
    insert into documentation_embeddings (source_table, source_id, chunk_index, content, content_hash, embedding, model,
                                          token_count, metadata, source_version)
    select 'dossiers', d.id::text, 0,
           'dossier ' || d.id || ' ' || (array['${
    TOPICS.join("','")
  }'])[1 + (d.id / 1000) % 10] || ' client ' || d.client_id
             || case when d.id % 3 = 0 then ' ' || (array['${TOPICS.join("','")}'])[1 + (d.id / 100) % 10] else '' end,
           md5(d.id::text), (select array_agg(x + (random() - 0.5) * 0.6) from unnest(c.c) x)::extensions.vector, 'test-64', 5,
           jsonb_build_object('topic', (d.id / 1000) % 10), 1
    from dossiers d join centers c on c.t = (d.id / 1000) % 10`);
  await sql`create index documentation_embeddings_s0_embedding_hnsw on private.documentation_embeddings_s0
            using hnsw (embedding extensions.vector_cosine_ops)`;
  await sql`analyze documentation_embeddings`;
  const rows = await sql<{ t: number; v: string }[]>`
    select t, (select array_agg(x + (random() - 0.5) * 0.4) from unnest(c) x)::extensions.vector::text as v from centers order by t`;
  queries = rows.map((r) => ({
    topic: r.t,
    vector: r.v,
    text: `${TOPICS[r.t]} et ${TOPICS[(r.t + 3) % 10]} pour un dossier`,
  }));
}, 120_000);

type Mode = "vector" | "text" | "hybrid";

/**
 * The reference: an exact search, as the service, over the chunks of the rows `readerId` may read
 * (read with their rights), with the same ranking rules as search_documents.
 */
async function exactTop(
  readerId: string,
  mode: Mode,
  q: { vector: string; text: string },
  filter: Record<string, unknown>,
  k = 10,
) {
  const readable = await withCallerRights(
    db.sql,
    user(readerId),
    (tx) => tx<{ id: string }[]>`select id::text from dossiers`,
  );
  const ids = readable.map((r) => r.id);
  const meta = { ...filter } as Record<string, postgres.JSONValue>;
  delete meta.source_table;
  const depth = mode === "hybrid" ? k * 2 : k;
  const vec = await db.sql<{ id: string }[]>`
    with c as materialized (select id, embedding <=> ${q.vector}::extensions.vector as d
                            from unnest(${ids}::text[]) k(sid) join documentation_embeddings on source_id = k.sid
                            where source_table = 'dossiers' and metadata @> ${db.sql.json(meta)})
    select c.id::text from c order by c.d, c.id limit ${depth}`;
  const txt = await db.sql<{ id: string }[]>`
    with c as materialized (select id, ts_rank_cd(fts, embedding_question_tsquery(${q.text}), 1) as r
                            from unnest(${ids}::text[]) k(sid) join documentation_embeddings on source_id = k.sid
                            where source_table = 'dossiers' and metadata @> ${db.sql.json(meta)}
                              and fts @@ embedding_question_tsquery(${q.text}))
    select c.id::text from c order by c.r desc, c.id limit ${depth}`;
  if (mode === "vector") return vec.map((r) => r.id);
  if (mode === "text") return txt.map((r) => r.id);
  const score = new Map<string, number>();
  vec.forEach((r, i) => score.set(r.id, (score.get(r.id) ?? 0) + 1 / (50 + i + 1)));
  txt.forEach((r, i) => score.set(r.id, (score.get(r.id) ?? 0) + 1 / (50 + i + 1)));
  return [...score.entries()].sort((a, b) => b[1] - a[1] || Number(a[0]) - Number(b[0])).slice(0, k).map(([id]) => id);
}

const provider = new VectorsByText();
/** The chunk ids the search function's logic returns to `readerId`, in order. */
async function searchAs(
  readerId: string,
  mode: Mode,
  q: { text: string },
  filter: Record<string, unknown>,
  sql = db.sql,
) {
  const r = await runSearch(
    { sql, provider },
    user(readerId),
    searchBodySchema.parse({ query: q.text, mode, matchCount: 10, filter }),
  );
  const out: string[] = [];
  for (const x of r.results) {
    const [row] = await db.sql<{ id: string }[]>`
      select id::text from documentation_embeddings where source_table = 'dossiers' and source_id = ${x.source_id} and chunk_index = ${x.chunk_index}`;
    out.push(row.id);
  }
  return out;
}

const FILTERS: Record<string, Record<string, unknown>> = {
  "no filter": {},
  "source_table": { source_table: "dossiers" },
  "metadata": { topic: 3 },
};

describe("a user who reads 20 rows of 20,000 gets the exact top 10 among them", () => {
  for (const mode of ["vector", "text", "hybrid"] as const) {
    for (const [name, filter] of Object.entries(FILTERS)) {
      it(`${mode}, ${name}`, async () => {
        for (const q of queries.slice(0, 4)) {
          const expected = await exactTop(small, mode, q, filter);
          const gotIds = await searchAs(small, mode, q, filter);
          expect(gotIds, `${mode} ${name} topic ${q.topic}`).toEqual(expected);
          expect(gotIds.length, "the reader has matching rows: the page is not empty").toBeGreaterThan(0);
        }
      });
    }
  }
});

describe("a user who reads a broad share (2,000 rows, past the exact plan's threshold)", () => {
  it("vector and hybrid: recall@10 >= 0.95 against the exact search over their rows; text: exact", async () => {
    // The exact plan stops at search_exact_max_rows readable rows; 500 here (new sessions of this
    // database) sends this reader to the index's iterative scan. The default is 2,000.
    await db.sql.unsafe(`alter database ${db.url.split("/").pop()} set search.exact_max_rows = 500`);
    const sql = postgres(db.url, { max: 4, onnotice: () => {} });
    try {
      const isBroad = await withCallerRights(
        sql,
        user(broad),
        async (tx) => (await tx<{ b: boolean }[]>`select public.search_reader_is_broad('{}') as b`)[0].b,
      );
      expect(isBroad).toBe(true);
      let hits = 0, total = 0;
      for (const mode of ["vector", "hybrid", "text"] as const) {
        for (const [name, filter] of Object.entries(FILTERS)) {
          for (const q of queries.slice(0, 3)) {
            const expected = await exactTop(broad, mode, q, filter);
            const got = await searchAs(broad, mode, q, filter, sql);
            if (mode === "text") expect(got, `text ${name} topic ${q.topic}`).toEqual(expected);
            hits += got.filter((id) => expected.includes(id)).length;
            total += expected.length;
          }
        }
      }
      const recall = hits / total;
      console.log(`broad reader (2,000 of 20,000 rows): recall@10 ${recall.toFixed(3)} over ${total / 10} queries`);
      expect(recall).toBeGreaterThanOrEqual(0.95);
    } finally {
      await sql.end({ timeout: 5 });
    }
  }, 300_000);
});
