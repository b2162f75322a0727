// The PISTE client against the stand-in (real HTTP, PISTE's wire format and failures), plus the id
// rules and the document parser. No database needed.
import { afterEach, describe, expect, it } from "vitest";
import { parseRetryAfter, PisteClient, PisteHttpError } from "../packages/legifrance/client.ts";
import {
  type PisteStandIn,
  type PisteStandInOptions,
  startPisteStandIn,
} from "../packages/testkit/legifrance-stand-in.ts";
import { checkLegifranceId, consultRouteFor, documentPath, parseDocumentPath } from "../packages/legifrance/ids.ts";
import { ENVELOPE_FORMAT, parseCollectedFile } from "../packages/legifrance/parser.ts";
import { generatedDocuments, sampleDocuments } from "../packages/testkit/legifrance-corpus.ts";
import { documentIdsOf, searchBody } from "../packages/legifrance/collector.ts";

let piste: PisteStandIn | null = null;
afterEach(async () => {
  await piste?.stop();
  piste = null;
});

async function setup(
  opts: PisteStandInOptions = {},
  client: Partial<ConstructorParameters<typeof PisteClient>[0]> = {},
) {
  piste = await startPisteStandIn({ generatedPerFond: 5, ...opts });
  const c = new PisteClient({
    oauthUrl: piste.oauthUrl,
    apiUrl: piste.apiUrl,
    clientId: piste.clientId,
    clientSecret: piste.clientSecret,
    rps: 200,
    backoffBaseMs: 20,
    ...client,
  });
  return { piste, client: c };
}

const unexpected = (): PisteHttpError => {
  throw new Error("expected the request to fail");
};

const consultAll = (client: PisteClient, ids: string[]) =>
  Promise.all(ids.map((id) => {
    const r = consultRouteFor(id)!;
    return client.consult(r.endpoint, { [r.field]: id }) as Promise<Record<string, unknown>>;
  }));

describe("ids", () => {
  it("accepts Légifrance ids and the documented versioned form; refuses everything else", () => {
    expect(checkLegifranceId("LEGIARTI000006419292")).toEqual({
      ok: true,
      id: "LEGIARTI000006419292",
      prefix: "LEGIARTI",
    });
    expect(checkLegifranceId("LEGITEXT000006070721_01-01-2024")).toMatchObject({
      ok: true,
      id: "LEGITEXT000006070721",
    });
    expect(checkLegifranceId(" JURITEXT000007022837 ")).toMatchObject({ ok: true, id: "JURITEXT000007022837" });
    for (
      const bad of [
        "../../etc/passwd",
        "LEGIARTI00000641929",
        "legiarti000006419292",
        "LEGIARTI0000064192921",
        "JURITEXT000007022837/../x",
        "",
        42,
        null,
      ]
    ) {
      expect(checkLegifranceId(bad).ok).toBe(false);
    }
    expect(documentPath("codes", "LEGIARTI000006419292")).toBe("legifrance/codes/LEGIARTI000006419292.json");
    expect(() => documentPath("codes", "../x")).toThrow();
    expect(() => documentPath("../codes", "LEGIARTI000006419292")).toThrow();
    expect(parseDocumentPath("legifrance/codes/LEGIARTI000006419292.json")).toEqual({
      category: "codes",
      id: "LEGIARTI000006419292",
    });
    expect(parseDocumentPath("legifrance/codes/../x.json")).toBeNull();
    expect(consultRouteFor("JORFTEXT000000465978")).toEqual({ endpoint: "jorf", field: "textCid" });
    expect(parseRetryAfter("3")).toBe(3000);
    expect(parseRetryAfter(null)).toBeNull();
  });
});

describe("PISTE client", () => {
  it("caches the token: many requests, one token", async () => {
    const { piste, client } = await setup();
    const ids = piste.documentIds();
    const docs = await consultAll(client, ids);
    expect(docs).toHaveLength(ids.length);
    expect(ids.length).toBeGreaterThan(20);
    expect(piste.stats().tokensIssued).toBe(1);
  });

  it("survives a token that dies before its announced expiry (401): one refresh, then the replay succeeds", async () => {
    // The first token dies after 20 of the corpus's 31 requests, whatever the machine's speed: the
    // requests already sent with it get 401 and are replayed with the second token, which serves the
    // rest (at most 11 first tries plus those replays) and never dies.
    const { piste, client } = await setup({ tokenUses: 20, latencyMs: 20 }, { rps: 50 });
    const ids = piste.documentIds();
    const docs = await consultAll(client, ids);
    expect(docs).toHaveLength(ids.length);
    expect(piste.stats().status[401]).toBeGreaterThan(0);
    expect(piste.stats().tokensIssued).toBeGreaterThan(1);
    // Each dead token costs at most one refresh, never one per waiting request.
    expect(client.stats.tokenRefreshes).toBe(piste.stats().tokensIssued);
    expect(client.stats.tokenRefreshes).toBeLessThanOrEqual(piste.stats().status[401] + 1);

    piste.revokeTokens();
    piste.setFaults({ tokenUses: undefined });
    const again = await consultAll(client, ids.slice(0, 5));
    expect(again).toHaveLength(5);
  });

  it("a 429 storm with Retry-After ends with every request answered, and Retry-After is honoured", async () => {
    const { piste, client } = await setup({ rate429: 0.5, retryAfterS: 0, seed: 7 }, { maxRetries: 12 });
    const ids = piste.documentIds();
    const docs = await consultAll(client, ids);
    expect(docs).toHaveLength(ids.length);
    expect(piste.stats().status[429]).toBeGreaterThan(5);

    piste.setFaults({ rate429: 0, burst429: 1, retryAfterS: 1 });
    const t0 = performance.now();
    await consultAll(client, ids.slice(0, 1));
    expect(performance.now() - t0).toBeGreaterThanOrEqual(990);
  });

  it("retries 500s with backoff, and gives up after maxRetries with the status", async () => {
    const { piste, client } = await setup({ burst500: 3 });
    const [doc] = await consultAll(client, ["LEGIARTI000032041571"]);
    expect((doc.article as { num: string }).num).toBe("1240");
    expect(client.stats.retries).toBe(3);

    piste.setFaults({ failIds: ["JURITEXT000007022837"] });
    const limited = new PisteClient({
      oauthUrl: piste.oauthUrl,
      apiUrl: piste.apiUrl,
      clientId: piste.clientId,
      clientSecret: piste.clientSecret,
      maxRetries: 2,
      backoffBaseMs: 5,
    });
    const err = await limited.consult("juri", { textId: "JURITEXT000007022837" }).then(
      unexpected,
      (e: PisteHttpError) => e,
    );
    expect(err).toBeInstanceOf(PisteHttpError);
    expect(err.status).toBe(500);
    expect(limited.stats.requests).toBe(1 + 1 + 2); // token + first try + 2 retries
  });

  it("does not retry other 4xx, and bad credentials are an error, not a loop", async () => {
    const { piste, client } = await setup();
    const notFound = await client.consult("getArticle", { id: "LEGIARTI999999999999" }).then(
      unexpected,
      (e: PisteHttpError) => e,
    );
    expect(notFound.status).toBe(404);
    expect(client.stats.retries).toBe(0);
    const bad = new PisteClient({
      oauthUrl: piste.oauthUrl,
      apiUrl: piste.apiUrl,
      clientId: piste.clientId,
      clientSecret: "wrong",
      backoffBaseMs: 5,
    });
    const e = await bad.search({ fond: "JURI", recherche: {} }).then(unexpected, (x: PisteHttpError) => x);
    expect(e.status).toBe(401);
    expect(piste.stats().tokensIssued).toBe(1);
  });

  it("keeps under an enforced per-second quota at its configured rate", async () => {
    const { piste, client } = await setup({ quotaRps: 10 }, { rps: 8 });
    const ids = piste.documentIds().slice(0, 20);
    const t0 = performance.now();
    await consultAll(client, ids);
    expect(performance.now() - t0).toBeGreaterThan(1900); // 20 requests at 8/s
    expect(piste.stats().status[429] ?? 0).toBe(0);
    expect(piste.stats().peakRps).toBeLessThanOrEqual(10);
  });

  it("the stand-in enforces its quota when a client ignores it", async () => {
    const { piste, client } = await setup({ quotaRps: 5 }, { rps: 1000, maxRetries: 10 });
    const docs = await consultAll(client, piste.documentIds().slice(0, 12));
    expect(docs).toHaveLength(12);
    expect(piste.stats().status[429]).toBeGreaterThan(0);
  });

  it("search pages list code articles from extracts and other fonds from titles", async () => {
    const { client } = await setup();
    const codes = documentIdsOf(
      "CODE_DATE",
      await client.search(searchBody({ fond: "CODE_DATE", query: "", filters: [] }, 1, 100)),
    );
    expect(codes.ids).toContain("LEGIARTI000032041571");
    expect(codes.ids.every((id) => String(id).startsWith("LEGIARTI"))).toBe(true);
    const juri = documentIdsOf(
      "JURI",
      await client.search(searchBody({ fond: "JURI", query: "", filters: [] }, 1, 3, true)),
    );
    expect(juri.ids).toEqual(["JURITEXT900000000004", "JURITEXT900000000003", "JURITEXT900000000002"]);
    expect(juri.total).toBe(6);
    const tooBig = await client.search(searchBody({ fond: "JURI", query: "", filters: [] }, 1, 101)).then(
      unexpected,
      (e: PisteHttpError) => e,
    );
    expect(tooBig.status).toBe(400);
  });
});

describe("parser", () => {
  const envelope = (d: ReturnType<typeof sampleDocuments>[number], category = "cat") =>
    JSON.stringify({
      format: ENVELOPE_FORMAT,
      id: d.id,
      category,
      fond: d.fond,
      endpoint: d.consult.endpoint,
      data: d.consult.response,
    });

  it("parses every consult shape of the corpus into text and metadata", () => {
    for (const d of [...sampleDocuments(), ...generatedDocuments(2)]) {
      const r = parseCollectedFile(envelope(d));
      expect(r.ok, d.id).toBe(true);
      if (r.ok) {
        expect(r.doc.id).toBe(d.id);
        expect(r.doc.content.length).toBeGreaterThan(20);
        expect(r.doc.title).toBeTruthy();
        expect(r.doc.url).toMatch(new RegExp(`^https://www\\.legifrance\\.gouv\\.fr/.+/${d.id}$`));
      }
    }
    const jorf = sampleDocuments().find((d) => d.id === "JORFTEXT000000465978")!;
    const r = parseCollectedFile(envelope(jorf));
    expect(r).toMatchObject({
      ok: true,
      doc: { doc_type: "text", number: "2002-1", start_date: "2002-01-02", end_date: null },
    });
    if (r.ok) {
      expect(r.doc.content).toBe(
        "Article 1\nLes textes sont publiés au Journal officiel de la République française.\n\nArticle 2\nLe présent décret entre en vigueur le lendemain de sa publication.",
      );
    }
    const juri = parseCollectedFile(envelope(sampleDocuments().find((d) => d.id === "JURITEXT000007022837")!));
    expect(juri).toMatchObject({
      ok: true,
      doc: { doc_type: "decision", number: "06-14.557", start_date: "2007-06-14", parent_title: "Cour de cassation" },
    });
  });

  it("refuses malformed JSON, foreign files and unknown shapes with a reason", () => {
    expect(parseCollectedFile("{oops")).toMatchObject({ ok: false, reason: expect.stringMatching(/^malformed JSON/) });
    expect(parseCollectedFile(JSON.stringify({ hello: 1 }))).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/not a collected Légifrance document/),
    });
    const base = { format: ENVELOPE_FORMAT, id: "LEGIARTI000000000001", category: "c", endpoint: "getArticle" };
    expect(parseCollectedFile(JSON.stringify({ ...base, data: { article: { texte: "x" } } }))).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/unknown getArticle shape/),
    });
    expect(parseCollectedFile(JSON.stringify({ ...base, endpoint: "legiPart", data: {} }))).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/unknown document shape/),
    });
    expect(parseCollectedFile(JSON.stringify({ ...base, id: "../x", data: {} })).ok).toBe(false);
  });
});
