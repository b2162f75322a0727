// Issue 14's "done when", end to end through the local stack (gateway + Storage + Deno functions) on the
// real PostgreSQL, with the PISTE stand-in and the offline embedding provider: an article whose
// texteHtml holds entities and a list reaches legal_documents decoded and one line per item, is found
// by full text, carries its citation metadata on its chunks, and ABROGE_DIFF / VIGUEUR_DIFF versions
// get in_force right; the daily job and a resync of Storage cost nothing for unchanged documents.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SupabaseClient } from "@supabase/supabase-js";
import { createNodeClient } from "../packages/connection/node-client.ts";
import { startTestStack } from "../packages/testkit/stack.ts";
import type { LocalStack } from "../packages/local-stack/index.ts";
import { type PisteStandIn, startPisteStandIn } from "../packages/testkit/legifrance-stand-in.ts";
import { offlineEmbedding } from "../packages/embeddings/offline.ts";
import { useTestDatabase, waitFor } from "./helpers/db.ts";

const ART_1792 = "LEGIARTI000006438937"; // VIGUEUR, entities + <ul>, ISO dates, lienModifications
const ART_197 = "LEGIARTI000048831929"; // ABROGE_DIFF ending 2099-01-01, a table
const ART_L217 = "LEGIARTI000032227301"; // ABROGE_DIFF ended 2022-01-01, an <ol>
const ART_DIFF = "LEGIARTI000051234567"; // VIGUEUR_DIFF starting 2099-01-01 (ISO date-times)

const db = useTestDatabase();
let stack: LocalStack;
let piste: PisteStandIn;
let admin: SupabaseClient;

beforeAll(async () => {
  piste = await startPisteStandIn({ generatedPerFond: 0 });
  stack = await startTestStack({
    databaseUrl: db.url,
    functionEnv: {
      PISTE_OAUTH_URL: piste.oauthUrl,
      PISTE_API_URL: piste.apiUrl,
      PISTE_CLIENT_ID: piste.clientId,
      PISTE_CLIENT_SECRET: piste.clientSecret,
      EMBEDDING_PROVIDER: "offline",
    },
  });
  admin = createNodeClient(stack.apiUrl, stack.serviceRoleKey);
  await db.sql`update cron.job set active = false`; // this file drives every step itself
  await db.sql`alter table files_queue disable trigger files_queue_webhook`;
}, 90_000);

afterAll(async () => {
  await stack?.stop();
  await piste?.stop();
});

async function invoke(name: string, body: Record<string, unknown>) {
  const { data, error } = await admin.functions.invoke(name, { body });
  if (error) throw new Error(`${name}: ${error.message} ${await (error as { context?: Response }).context?.text()}`);
  return data as Record<string, unknown>;
}

/** Runs the embedding worker until no legal_documents job is left pending or processing. */
async function drainEmbeddings() {
  await waitFor(
    "the embedding queue to drain",
    async () => {
      await invoke("process-embedding-queue", { action: "process", batchSize: 200 });
      const [q] = await db.sql`select count(*)::int as n from embedding_sync_queue
                              where source_table = 'legal_documents' and status in ('pending', 'processing')`;
      return q.n === 0;
    },
    30_000,
    200,
  );
}

async function search(text: string, filter: Record<string, unknown>) {
  const v = `[${Array.from(offlineEmbedding(text, 1536)).join(",")}]`;
  return await db.sql<{ source_id: string; metadata: Record<string, unknown> }[]>`
    select source_id, metadata from hybrid_search(${text}, ${v}::extensions.vector, 10, ${
    db.sql.json(filter as never)
  })`;
}

describe("a Légifrance article as a lawyer reads it", () => {
  it("is collected, decoded, structured, searchable, cited, and in force or not as of today", async () => {
    expect(await invoke("legifrance-collector", { mode: "massive", continue: false })).toMatchObject({
      acquired: true,
      done: true,
    });
    const expected = piste.documentIds();
    expect(expected).toEqual(expect.arrayContaining([ART_1792, ART_197, ART_L217, ART_DIFF]));
    expect(await invoke("process-files-queue", { batchSize: 100 })).toMatchObject({
      stored: expected.length,
      failed: 0,
    });

    // Entities decoded, one line per list item, the comment gone.
    const [doc] = await db
      .sql`select content, legal_status, in_force, start_date::text, end_date::text from legal_documents where id = ${ART_1792}`;
    expect(doc.content).toContain("envers le maître ou l'acquéreur de l'ouvrage");
    expect(doc.content).not.toMatch(/&[a-zA-Z#0-9]+;|<|fin -->/);
    const lines = doc.content.split("\n");
    expect(lines).toEqual(expect.arrayContaining([
      "- d'une cause étrangère ;",
      "- du fait du maître de l'ouvrage ;",
      "- d'un « vice apparent » accepté à la réception.",
    ]));
    expect(lines.filter((l: string) => l.startsWith("- "))).toHaveLength(3);
    expect(doc).toMatchObject({ legal_status: "VIGUEUR", in_force: true, start_date: "1979-01-01", end_date: null });
    const [table] = await db.sql`select content from legal_documents where id = ${ART_197}`;
    expect(table.content.split("\n")).toContain("Supérieure à 11 294 € et inférieure ou égale à 28 797 € | 11 %");

    // Legal status as of today: raw etat kept, in_force derived.
    const status = await db.sql`select id, legal_status, in_force, start_date::text, end_date::text from legal_documents
                                 where id in (${ART_197}, ${ART_L217}, ${ART_DIFF}) order by id`;
    expect(status).toEqual([
      { id: ART_L217, legal_status: "ABROGE_DIFF", in_force: false, start_date: "2016-07-01", end_date: "2022-01-01" },
      { id: ART_197, legal_status: "ABROGE_DIFF", in_force: true, start_date: "2024-02-18", end_date: "2099-01-01" },
      { id: ART_DIFF, legal_status: "VIGUEUR_DIFF", in_force: false, start_date: "2099-01-01", end_date: null },
    ]);

    await drainEmbeddings();
    const [chunks] = await db
      .sql`select count(distinct source_id)::int as n from documentation_embeddings where source_table = 'legal_documents'`;
    expect(chunks.n).toBe(expected.length);

    // Full text finds "maître de l'ouvrage" (French stemming over the decoded words).
    const fts = await db.sql`select distinct source_id from documentation_embeddings
                              where source_table = 'legal_documents' and fts @@ websearch_to_tsquery('french', 'maître de l''ouvrage')`;
    expect(fts.map((r) => r.source_id)).toEqual([ART_1792]);
    const hits = await search("maître de l'ouvrage", { source_table: "legal_documents" });
    expect(hits[0].source_id).toBe(ART_1792);

    // Citation metadata on every chunk of the article.
    const meta = await db.sql<{ metadata: Record<string, unknown> }[]>`
      select metadata from documentation_embeddings where source_table = 'legal_documents' and source_id = ${ART_1792}`;
    expect(meta.length).toBeGreaterThan(0);
    for (const m of meta) {
      expect(m.metadata).toMatchObject({
        title: "Code civil - Article 1792",
        parent_title: "Code civil",
        parent_title_long: "Code civil",
        number: "1792",
        section_path:
          "Livre III : Des différentes manières dont on acquiert la propriété > Titre VIII : Du contrat de louage > " +
          "Chapitre III : Du louage d'ouvrage et d'industrie > Section 3 : Des devis et des marchés",
        url: `https://www.legifrance.gouv.fr/codes/article_lc/${ART_1792}`,
        legal_status: "VIGUEUR",
        in_force: true,
        start_date: "1979-01-01",
        modifications: [{
          title: "Loi n°78-12 du 4 janvier 1978 - art. 1",
          link_type: "MODIFIE",
          text_id: "JORFTEXT000000522207",
          article_num: "1",
          date: "1979-01-01",
        }],
      });
      expect(m.metadata).not.toHaveProperty("end_date"); // 2999-01-01: no end
    }

    // Search filters on in_force: the version that left force is found only when asked for.
    const q = "défauts de conformité de l'emballage";
    expect((await search(q, { source_table: "legal_documents" })).map((h) => h.source_id)).toContain(ART_L217);
    expect((await search(q, { in_force: true })).map((h) => h.source_id)).not.toContain(ART_L217);
    expect((await search(q, { in_force: false })).map((h) => h.source_id)[0]).toBe(ART_L217);
    expect((await search(q, { in_force: true })).every((h) => h.metadata.in_force === true)).toBe(true);
  });

  it("the daily job flips in_force when dates cross, and the chunks follow with no new embedding", async () => {
    const before = await db.sql`select id, content_hash, embedding::text from documentation_embeddings
                                 where source_table = 'legal_documents' and source_id in (${ART_197}, ${ART_DIFF}) order by id`;
    const [n] = await db.sql`select refresh_legal_documents_in_force('2099-01-02') as n`;
    expect(Number(n.n)).toBe(2);
    const rows = await db
      .sql`select id, in_force from legal_documents where id in (${ART_197}, ${ART_DIFF}) order by id`;
    expect(rows).toEqual([{ id: ART_197, in_force: false }, { id: ART_DIFF, in_force: true }]);
    await drainEmbeddings();
    const after = await db.sql`select id, content_hash, embedding::text, metadata from documentation_embeddings
                                where source_table = 'legal_documents' and source_id in (${ART_197}, ${ART_DIFF}) order by id`;
    expect(after.map((c) => [c.id, c.content_hash, c.embedding])).toEqual(
      before.map((c) => [c.id, c.content_hash, c.embedding]),
    );
    expect(Object.fromEntries(after.map((c) => [c.metadata.number, c.metadata.in_force]))).toEqual({
      "197": false,
      "L3121-99": true,
    });
  });

  it("resync re-derives from Storage and rewrites only documents whose parsed result changed", async () => {
    const [count] = await db.sql`select count(*)::int as n from legal_documents`;
    // A row as an older parser left it: entities in the text, another hash. Its re-embedding is drained first.
    await db
      .sql`update legal_documents set content = 'Tout constructeur … envers le ma&icirc;tre', parse_hash = 'older-parser'
                  where id = ${ART_1792}`;
    await drainEmbeddings();
    const [t0] = await db.sql`select clock_timestamp() as t`;
    const stamps = await db.sql`select id, updated_at::text from legal_documents order by id`;

    const [queued] = await db.sql`select resync_legal_documents('agentbasic-legifrance-raw') as n`;
    expect(Number(queued.n)).toBe(count.n);
    const w = await invoke("process-files-queue", { batchSize: 100 });
    expect(w).toMatchObject({ stored: count.n, unchanged: count.n - 1, failed: 0 });

    const [doc] = await db.sql`select content from legal_documents where id = ${ART_1792}`;
    expect(doc.content).toContain("envers le maître ou l'acquéreur");
    const changed = (await db.sql`select id, updated_at::text from legal_documents order by id`)
      .filter((r, i) => r.updated_at !== stamps[i].updated_at).map((r) => r.id);
    expect(changed).toEqual([ART_1792]);
    // Only that document's text goes to the embedding queue.
    const jobs = await db.sql`select distinct source_id from embedding_sync_queue
                               where source_table = 'legal_documents' and updated_at > ${t0.t}`;
    expect(jobs.map((j) => j.source_id)).toEqual([ART_1792]);
  });
});
