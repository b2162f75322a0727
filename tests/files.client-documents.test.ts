// Unit tests of the client-documents handler's pure parts: text extraction (PDF page by page with
// unpdf, Markdown, text) on files generated here, the path rule, and the search's query normalization.
import { describe, expect, it } from "vitest";
import { extractDocument, kindOfPath } from "../packages/files-queue/extract.ts";
import { parseClientPath } from "../packages/files-queue/handlers/client-documents.ts";
import { normalizeQuery } from "../packages/search/query-cache.ts";
import { searchBodySchema } from "../packages/search/search.ts";
import { corruptPdf, encryptedPdf, imageOnlyPdf, textPdf } from "./helpers/pdfs.ts";

describe("extractDocument", () => {
  it("a PDF: one entry per page, French accents intact, the title from its metadata", async () => {
    const pdf = await textPdf([["Article 1 : l'employeur doit prévenir le salarié."], [], [
      "Article 3 : délai de préavis à l'échéance.",
    ]], "Règlement intérieur");
    const x = await extractDocument("c/reglement.pdf", pdf);
    expect(x).toEqual({
      ok: true,
      doc: {
        mimetype: "application/pdf",
        title: "Règlement intérieur",
        pages: [
          "Article 1 : l'employeur doit prévenir le salarié.",
          "",
          "Article 3 : délai de préavis à l'échéance.",
        ],
      },
    });
  });

  it("a PDF without a title takes its file name", async () => {
    const x = await extractDocument("c/mon-contrat.pdf", await textPdf([["Bonjour"]]));
    expect(x.ok && x.doc.title).toBe("mon-contrat");
  });

  it("failures name their reason", async () => {
    expect(await extractDocument("c/scan.pdf", await imageOnlyPdf())).toEqual({
      ok: false,
      reason: "no extractable text",
    });
    expect(await extractDocument("c/x.pdf", await encryptedPdf())).toEqual({
      ok: false,
      reason: "encrypted PDF (password protected)",
    });
    expect(await extractDocument("c/x.pdf", corruptPdf())).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/^corrupt PDF/),
    });
    expect(await extractDocument("c/x.pdf", new TextEncoder().encode("hello"))).toEqual({
      ok: false,
      reason: "not a PDF (corrupt or mislabelled file)",
    });
    expect(await extractDocument("c/x.docx", new Uint8Array([1, 2]))).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/^unsupported file type/),
    });
    expect(await extractDocument("c/x.txt", new Uint8Array([0xff, 0xfe, 0x00]))).toEqual({
      ok: false,
      reason: "not valid UTF-8 text",
    });
    expect(await extractDocument("c/x.txt", new TextEncoder().encode("  \n\t "))).toEqual({
      ok: false,
      reason: "no extractable text",
    });
  });

  it("Markdown: one page, the first heading as title; text: the file name", async () => {
    const md = await extractDocument(
      "c/notes.md",
      new TextEncoder().encode("Intro\n\n# Procédure de résiliation\n\nEnvoyer   une lettre."),
    );
    expect(md).toEqual({
      ok: true,
      doc: {
        mimetype: "text/markdown",
        title: "Procédure de résiliation",
        pages: ["Intro\n\n# Procédure de résiliation\n\nEnvoyer une lettre."],
      },
    });
    const txt = await extractDocument("c/memo.txt", new TextEncoder().encode("Mémo"));
    expect(txt).toEqual({ ok: true, doc: { mimetype: "text/plain", title: "memo", pages: ["Mémo"] } });
    // NUL never reaches SQL (PostgreSQL text cannot hold it), in the text nor in the title.
    const nul = await extractDocument("c/nul.md", new TextEncoder().encode("# Ti\u0000tre\n\nCon\u0000gé"));
    expect(nul).toEqual({ ok: true, doc: { mimetype: "text/markdown", title: "Titre", pages: ["# Titre\n\nCongé"] } });
    expect(kindOfPath("a/B.PDF")).toBe("application/pdf");
    expect(kindOfPath("a/b.markdown")).toBe("text/markdown");
    expect(kindOfPath("a/b")).toBeNull();
  });
});

describe("paths and bodies", () => {
  it("a client document path is <client uuid>/<one file name>", () => {
    const id = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d";
    expect(parseClientPath(`${id}/contrat.pdf`)).toEqual({ clientId: id, fileName: "contrat.pdf" });
    expect(parseClientPath(`${id.toUpperCase()}/a.md`)?.clientId).toBe(id);
    for (const bad of [`${id}/sub/a.pdf`, `${id}/..`, `${id}/`, "acme/a.pdf", `../${id}/a.pdf`, `${id}`]) {
      expect(parseClientPath(bad), bad).toBeNull();
    }
  });

  it("queries normalize to one cache key; bodies are validated", () => {
    expect(normalizeQuery("  Quel  DÉLAI\n de préavis ? ")).toBe("quel délai de préavis ?");
    expect(normalizeQuery("e\u0301")).toBe(normalizeQuery("é"));
    expect(searchBodySchema.parse({ query: "x" })).toEqual({
      query: "x",
      matchCount: 8,
      mode: "hybrid",
      filter: {},
      includeSource: false,
    });
    expect(searchBodySchema.safeParse({ query: "x", filter: { page: { $gt: 1 } } }).success).toBe(false);
    expect(searchBodySchema.safeParse({ query: "x", extra: 1 }).success).toBe(false);
    expect(searchBodySchema.safeParse({ query: "   " }).success).toBe(false);
  });
});
