// The assistant's side end to end, through the local stack (gateway + Storage + Deno functions) on the
// real PostgreSQL with the offline embedding provider: client documents uploaded with storage-js
// (PDFs generated here: several pages of French text, a scan without a text layer, an encrypted and a
// corrupt one, a file over the size limit) -> files_queue -> process-files-queue -> client_documents
// and pages -> process-embedding-queue -> search, as two users of two clients; then conversations.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SupabaseClient } from "@supabase/supabase-js";
import { createNodeClient } from "../packages/connection/node-client.ts";
import type { LocalStack } from "../packages/local-stack/index.ts";
import { signUserJwt } from "../packages/local-stack/keys.ts";
import { startTestStack } from "../packages/testkit/stack.ts";
import { useTestDatabase, waitFor } from "./helpers/db.ts";
import { createAuthUsers } from "./helpers/users.ts";
import { corpus, questions } from "./fixtures/french-questions.ts";
import { corruptPdf, encryptedPdf, imageOnlyPdf, textPdf } from "./helpers/pdfs.ts";

const BUCKET = "client-documents";
const MAX_BYTES = 50_000;
const db = useTestDatabase();
let stack: LocalStack;
let admin: SupabaseClient;
const acme = crypto.randomUUID();
const globex = crypto.randomUUID();
const alice = crypto.randomUUID(); // member of acme
const bob = crypto.randomUUID(); // member of globex
const stranger = crypto.randomUUID(); // member of no client

const CONTRAT = [
  [
    "Contrat de prestation de services - ACME",
    "Article 1 : objet du contrat.",
    "Le prestataire fournit une assistance juridique.",
  ],
  [
    "Article 2 : durée et résiliation.",
    "Le délai de préavis est de trois mois avant l'échéance.",
    "La résiliation se fait par lettre recommandée.",
  ],
  ["Article 3 : confidentialité.", "Les parties s'engagent à ne pas divulguer les informations échangées."],
];
const BAIL = [
  ["Bail commercial - GLOBEX", "Le délai de préavis du preneur est de six mois."],
  ["Le loyer est révisé chaque année selon l'indice des loyers commerciaux."],
];

async function call(name: string, body: unknown, headers: Record<string, string>) {
  const r = await fetch(`${stack.apiUrl}/functions/v1/${name}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
  return { status: r.status, body: await r.json() };
}
const service = () => ({ apikey: stack.secretKey });
const asUser = async (id: string) => ({
  apikey: stack.publishableKey,
  authorization: `Bearer ${await signUserJwt(stack.keys, id)}`,
});

async function upload(path: string, bytes: Uint8Array, contentType: string) {
  const { error } = await admin.storage.from(BUCKET).upload(
    path,
    new Blob([Buffer.from(bytes)], { type: contentType }),
    { upsert: true, contentType },
  );
  expect(error).toBeNull();
}

/** Runs the files worker, then drains the embedding queue; returns what the embedding runs did. */
async function processAll() {
  const f = await call("process-files-queue", { batchSize: 50 }, service());
  expect(f.status).toBe(200);
  let embedded = 0;
  let claimed = 0;
  await waitFor(
    "the embedding queue to drain",
    async () => {
      const p = await call("process-embedding-queue", { action: "process", batchSize: 100 }, service());
      embedded += p.body.embedded ?? 0;
      claimed += p.body.claimed ?? 0;
      const [q] = await db
        .sql`select count(*)::int as n from embedding_sync_queue where status in ('pending', 'processing')`;
      return q.n === 0;
    },
    60_000,
    200,
  );
  return { files: f.body, embedded, claimed };
}

async function queueRow(path: string) {
  const [r] = await db.sql`select status, last_error from files_queue where file_path = ${path}`;
  return r;
}

beforeAll(async () => {
  stack = await startTestStack({
    databaseUrl: db.url,
    functionEnv: {
      EMBEDDING_PROVIDER: "offline",
      EMBEDDING_DIMENSIONS: "1536",
      CLIENT_DOCUMENTS_MAX_BYTES: String(MAX_BYTES),
    },
  });
  admin = createNodeClient(stack.apiUrl, stack.secretKey);
  await db.sql`update cron.job set active = false`;
  // This file drives the embedding worker itself, so it can count what each step embeds.
  await db.sql`alter table embedding_sync_queue disable trigger embedding_sync_queue_webhook`;
  await db.sql`alter table files_queue disable trigger files_queue_webhook`;
  await createAuthUsers(db.sql, [alice, bob, stranger]);
  await db.sql`insert into clients (id, name) values (${acme}, 'ACME'), (${globex}, 'Globex')`;
  await db.sql`insert into client_memberships (client_id, user_id) values (${acme}, ${alice}), (${globex}, ${bob})`;
}, 90_000);
afterAll(async () => {
  await stack?.stop();
});

describe("client documents become searchable for their client only", () => {
  it("uploads are queued in their own transaction; each bad file fails alone with its reason", async () => {
    expect((await admin.storage.getBucket(BUCKET)).data).toMatchObject({ id: BUCKET, public: false });
    await upload(`${acme}/contrat.pdf`, await textPdf(CONTRAT, "Contrat ACME"), "application/pdf");
    await upload(`${globex}/bail.pdf`, await textPdf(BAIL), "application/pdf");
    await upload(
      `${acme}/notes.md`,
      new TextEncoder().encode("# Notes internes\n\nLe délai de préavis a été négocié à trois mois."),
      "text/markdown",
    );
    await upload(`${acme}/scan.pdf`, await imageOnlyPdf(), "application/pdf");
    await upload(`${acme}/verrouille.pdf`, await encryptedPdf(), "application/pdf");
    await upload(`${acme}/casse.pdf`, corruptPdf(), "application/pdf");
    await upload(`${acme}/gros.txt`, new TextEncoder().encode("préavis ".repeat(MAX_BYTES / 8 + 10)), "text/plain");
    const [q] = await db
      .sql`select count(*)::int as n from files_queue where bucket_id = ${BUCKET} and status = 'pending'`;
    expect(q.n).toBe(7);

    const { files } = await processAll();
    expect(files).toMatchObject({ claimed: 7, stored: 3, failed: 4 });
    expect(await queueRow(`${acme}/scan.pdf`)).toEqual({ status: "failed", last_error: "no extractable text" });
    expect(await queueRow(`${acme}/verrouille.pdf`)).toEqual({
      status: "failed",
      last_error: "encrypted PDF (password protected)",
    });
    expect((await queueRow(`${acme}/casse.pdf`)).last_error).toMatch(/^corrupt PDF/);
    expect((await queueRow(`${acme}/gros.txt`)).last_error).toMatch(/^file too large: \d+ bytes \(limit 50000\)/);

    const docs = await db
      .sql`select client_id::text, path, title, pages, mimetype, size::int from client_documents order by path`;
    expect(docs).toHaveLength(3);
    expect(docs).toEqual(expect.arrayContaining([
      expect.objectContaining({
        client_id: acme,
        path: `${acme}/contrat.pdf`,
        title: "Contrat ACME",
        pages: 3,
        mimetype: "application/pdf",
      }),
      expect.objectContaining({
        client_id: acme,
        path: `${acme}/notes.md`,
        title: "Notes internes",
        pages: 1,
        mimetype: "text/markdown",
      }),
      expect.objectContaining({ client_id: globex, path: `${globex}/bail.pdf`, pages: 2, mimetype: "application/pdf" }),
    ]));
    // Chunks carry the client and the page.
    const chunks = await db
      .sql`select metadata from documentation_embeddings where source_table = 'client_document_pages'`;
    expect(chunks).toHaveLength(6);
    const page2 = chunks.map((c) => c.metadata).find((m) => m.path === `${acme}/contrat.pdf` && m.page === 2);
    expect(page2).toMatchObject({ client_id: acme, page: 2 });
  });

  it("two users of two clients, each searching: their client's documents, never the other's", async () => {
    for (const [who, client, expected] of [[alice, acme, "trois mois"], [bob, globex, "six mois"]] as const) {
      const r = await call(
        "search",
        { query: "délai de préavis", matchCount: 20, includeSource: true },
        await asUser(who),
      );
      expect(r.status).toBe(200);
      expect(r.body.results.length).toBeGreaterThan(0);
      expect(r.body.results.every((x: { metadata: { client_id: string } }) => x.metadata.client_id === client)).toBe(
        true,
      );
      expect(r.body.results[0].content).toContain(expected);
      expect(r.body.results[0].source).toMatchObject({ client_id: client });
      // Asking for the other client's exact words finds nothing of theirs.
      const other = await call("search", {
        query: expected === "trois mois" ? "indice des loyers commerciaux" : "ne pas divulguer les informations",
        mode: "text",
      }, await asUser(who));
      expect(other.body.results).toEqual([]);
    }
    // The service role sees both clients; a user of no client sees none of them.
    const s = await call("search", {
      query: "délai de préavis",
      matchCount: 20,
      filter: { source_table: "client_document_pages" },
    }, service());
    expect(new Set(s.body.results.map((x: { metadata: { client_id: string } }) => x.metadata.client_id))).toEqual(
      new Set([acme, globex]),
    );
    const none = await call("search", { query: "délai de préavis", matchCount: 20 }, await asUser(stranger));
    expect(none.body.results).toEqual([]);
    // A filter on chunk metadata: one page of one document.
    const p = await call("search", { query: "confidentialité", filter: { page: 3 } }, await asUser(alice));
    expect(p.body.results.map((x: { metadata: { page: number } }) => x.metadata.page)).toEqual([3]);
  });

  it("members open their client's documents (download, signed URL of a cited page); editors write; nobody crosses clients", async () => {
    const storageAs = async (id: string) =>
      createNodeClient(stack.apiUrl, stack.publishableKey, { accessToken: await signUserJwt(stack.keys, id) }).storage
        .from(BUCKET);
    const mine = { [alice]: `${acme}/contrat.pdf`, [bob]: `${globex}/bail.pdf` };
    for (const [who, other] of [[alice, bob], [bob, alice]] as const) {
      const files = await storageAs(who);
      // The path a search result cites opens, by download and by a signed URL that needs no key.
      const hit = await call(
        "search",
        { query: "délai de préavis", filter: { source_table: "client_document_pages" } },
        await asUser(who),
      );
      const paths = hit.body.results.map((r: { metadata: { path: string } }) => r.metadata.path) as string[];
      expect(paths.every((p) => p.startsWith(`${mine[who].split("/")[0]}/`))).toBe(true);
      const cited = paths.find((p) => p === mine[who])!;
      expect(cited).toBe(mine[who]);
      const down = await files.download(cited);
      expect(down.error).toBeNull();
      expect(new TextDecoder().decode((await down.data!.arrayBuffer()).slice(0, 5))).toBe("%PDF-");
      const signed = await files.createSignedUrl(cited, 60);
      expect(signed.error).toBeNull();
      const viaUrl = await fetch(signed.data!.signedUrl);
      expect(viaUrl.status).toBe(200);
      expect(Buffer.from(await viaUrl.arrayBuffer()).subarray(0, 5).toString()).toBe("%PDF-");
      // The other client's document: no download, no signed URL, not even in a listing.
      expect((await files.download(mine[other])).data).toBeNull();
      expect((await files.createSignedUrl(mine[other], 60)).data).toBeNull();
      expect((await files.list(mine[other].split("/")[0])).data).toEqual([]);
      expect(((await files.list(mine[who].split("/")[0])).data ?? []).map((o) => o.name)).toContain(
        mine[who].split("/")[1],
      );
    }
    // A member reads but does not write; an editor writes only directly under its own client's folder.
    const aliceFiles = await storageAs(alice);
    const note = new Blob(["# Note\n\nPréavis de trois mois."], { type: "text/markdown" });
    expect((await aliceFiles.upload(`${acme}/note.md`, note)).error).not.toBeNull();
    await db.sql`update client_memberships set role = 'editor' where user_id = ${alice}`;
    expect((await aliceFiles.upload(`${acme}/note.md`, note)).error).toBeNull();
    expect((await aliceFiles.upload(`${acme}/note.md`, note, { upsert: true })).error).toBeNull();
    expect((await aliceFiles.upload(`${globex}/intrus.md`, note)).error).not.toBeNull();
    expect((await aliceFiles.upload(`${acme}/sous/dossier.md`, note)).error).not.toBeNull();
    // Bob (a member of globex) cannot delete it; Alice can, and the queue follows.
    await (await storageAs(bob)).remove([`${acme}/note.md`]);
    expect(await db.sql`select 1 from storage.objects where bucket_id = ${BUCKET} and name = ${`${acme}/note.md`}`)
      .toHaveLength(1);
    expect((await db.sql`select status from files_queue where file_path = ${`${acme}/note.md`}`)[0].status).toBe(
      "pending",
    );
    expect((await aliceFiles.remove([`${acme}/note.md`])).error).toBeNull();
    expect((await db.sql`select status from files_queue where file_path = ${`${acme}/note.md`}`)[0].status).toBe(
      "deleted",
    );
    expect(
      (await db.sql`select name from storage.objects where bucket_id = ${BUCKET} and name like ${`${globex}/%`}`).map((
        r,
      ) => r.name),
    ).toEqual([`${globex}/bail.pdf`]);
    await db.sql`update client_memberships set role = 'member' where user_id = ${alice}`;
  });

  it("re-uploading re-embeds only the changed page; deleting removes the row and its chunks", async () => {
    const changed = CONTRAT.map((p, i) =>
      i === 1 ? ["Article 2 : durée et résiliation.", "Le délai de préavis est désormais de deux mois."] : p
    );
    await upload(`${acme}/contrat.pdf`, await textPdf(changed, "Contrat ACME"), "application/pdf");
    const r = await processAll();
    expect(r.files).toMatchObject({ claimed: 1, stored: 1 });
    expect(r.claimed).toBe(1); // one page changed: one job, the other pages enqueued nothing
    expect(r.embedded).toBe(1);
    const [c] = await db
      .sql`select e.content from documentation_embeddings e join client_document_pages p on p.id::text = e.source_id
                             where e.source_table = 'client_document_pages' and p.page = 2 and p.client_id = ${acme} and e.metadata->>'path' like '%contrat.pdf'`;
    expect(c.content).toContain("deux mois");

    const { error } = await admin.storage.from(BUCKET).remove([`${acme}/contrat.pdf`]);
    expect(error).toBeNull();
    expect(await db.sql`select 1 from client_documents where path = ${`${acme}/contrat.pdf`}`).toHaveLength(0);
    await processAll();
    const left = await db
      .sql`select 1 from documentation_embeddings where metadata->>'path' = ${`${acme}/contrat.pdf`}`;
    expect(left).toHaveLength(0);
    const [notes] = await db
      .sql`select count(*)::int as n from documentation_embeddings where metadata->>'path' = ${`${acme}/notes.md`}`;
    expect(notes.n).toBe(1);
  });
});

describe("the search and conversations functions", () => {
  it("bad bodies 400, wrong method 405, no credential 401, anon 403", async () => {
    const u = await asUser(alice);
    for (
      const body of [{}, { query: "" }, { query: "x".repeat(2001) }, { query: "a", matchCount: 51 }, {
        query: "a",
        mode: "fuzzy",
      }, { query: "a", conversationId: "nope" }]
    ) {
      const r = await call("search", body, u);
      expect(r.status, JSON.stringify(body)).toBe(400);
    }
    expect((await fetch(`${stack.apiUrl}/functions/v1/search`, { method: "GET", headers: u })).status).toBe(405);
    expect((await call("search", { query: "préavis" }, {})).status).toBe(401);
    expect((await call("search", { query: "préavis" }, { apikey: stack.publishableKey })).status).toBe(403);
  });

  it("conversation round trip through the functions: search, answer, feedback, list, archive", async () => {
    const u = await asUser(alice);
    const s = await call("search", { query: "Quel est le délai de préavis négocié ?" }, u);
    expect(s.status).toBe(200);
    expect((await call("conversations", { action: "answer", logId: s.body.logId, response: "Trois mois." }, u)).status)
      .toBe(200);
    expect(
      (await call("conversations", { action: "feedback", logId: s.body.logId, rating: -1, comment: "imprécis" }, u))
        .status,
    ).toBe(200);
    // Bob cannot touch it.
    const b = await asUser(bob);
    expect((await call("conversations", { action: "feedback", logId: s.body.logId, rating: 1 }, b)).status).toBe(404);
    const l = await call("conversations", { action: "list", conversationId: s.body.conversationId }, u);
    expect(l.body.entries).toEqual([
      expect.objectContaining({
        question: "Quel est le délai de préavis négocié ?",
        response: "Trois mois.",
        feedbackRating: -1,
      }),
    ]);
    const [neg] = await db.sql`select comment, sources from search_negative_feedback where log_id = ${s.body.logId}`;
    expect(neg.comment).toBe("imprécis");
    expect(neg.sources.map((x: { source_id: string }) => x.source_id)).toEqual(
      s.body.results.map((x: { source_id: string }) => x.source_id),
    );
    expect((await call("conversations", { action: "archive", conversationId: s.body.conversationId }, u)).body).toEqual(
      { conversationId: s.body.conversationId, archived: 1 },
    );
    expect((await call("conversations", { action: "list", conversationId: s.body.conversationId }, b)).body.entries)
      .toEqual([]);
  });

  it("a conversation belongs to its first user: another user's conversationId is 404 and writes nothing", async () => {
    const a = await call("search", { query: "Quel est le délai de préavis ?" }, await asUser(alice));
    expect(a.status).toBe(200);
    const [{ n: before }] = await db
      .sql`select count(*)::int as n from conversations where conversation_id = ${a.body.conversationId}`;
    const b = await call(
      "search",
      { query: "Et pour Initech ?", conversationId: a.body.conversationId },
      await asUser(bob),
    );
    expect(b).toEqual({ status: 404, body: expect.objectContaining({ error: "no such conversation" }) });
    // A service naming it is refused too: every entry of a conversation has one user.
    expect((await call("search", { query: "x", conversationId: a.body.conversationId }, service())).status).toBe(404);
    const [{ n: after }] = await db
      .sql`select count(*)::int as n from conversations where conversation_id = ${a.body.conversationId}`;
    expect(after).toBe(before);
    // Its own user continues it.
    const more = await call(
      "search",
      { query: "Et la résiliation ?", conversationId: a.body.conversationId },
      await asUser(alice),
    );
    expect(more.status).toBe(200);
    expect(more.body.conversationId).toBe(a.body.conversationId);
  });

  it("cachedEmbedding tells a user only about their own questions", async () => {
    const q = "Quelle indemnité pour licencier Jean Dupont en mars ?";
    expect((await call("search", { query: q }, await asUser(alice))).body.cachedEmbedding).toBe(false);
    expect((await call("search", { query: q }, await asUser(bob))).body.cachedEmbedding).toBe(false);
    expect((await call("search", { query: q }, await asUser(bob))).body.cachedEmbedding).toBe(true);
  });

  it("French questions find their rows in text mode through the function (one question rule)", async () => {
    await db.sql`create table fr_law (id int primary key, title text, body text)`;
    await db.sql`select register_embedding_source('fr_law', content_columns => array['title', 'body'])`;
    await db.sql`insert into fr_law ${db.sql(corpus)}`;
    await processAll();
    let found = 0;
    for (const { q, relevant } of questions) {
      const r = await call(
        "search",
        { query: q, mode: "text", matchCount: 5, filter: { source_table: "fr_law" } },
        service(),
      );
      expect(r.status).toBe(200);
      const ids = r.body.results.map((x: { source_id: string }) => Number(x.source_id));
      if (relevant.some((id) => ids.includes(id))) found++;
    }
    // "combien de jours de congé par mois ?" and the others: every word was required before, so most found nothing.
    expect(found / questions.length).toBeGreaterThanOrEqual(0.9);
  });
});
