// Text extraction for client documents: PDF (unpdf, page by page), Markdown and plain text. Pure: bytes
// in, pages out, or the reason the file cannot be read. No network, no file system.
import { extractText, getDocumentProxy } from "unpdf";

export type DocumentKind = "application/pdf" | "text/markdown" | "text/plain";

export interface ExtractedDocument {
  mimetype: DocumentKind;
  title: string;
  /** One entry per page (Markdown and text: a single page), whitespace normalized. */
  pages: string[];
}

export type Extraction = { ok: true; doc: ExtractedDocument } | { ok: false; reason: string };

const NO_TEXT = "no extractable text";

/** The kind a file name says it is; null for anything else. */
export function kindOfPath(path: string): DocumentKind | null {
  const ext = /\.([A-Za-z0-9]+)$/.exec(path)?.[1]?.toLowerCase();
  if (ext === "pdf") return "application/pdf";
  if (ext === "md" || ext === "markdown") return "text/markdown";
  if (ext === "txt" || ext === "text") return "text/plain";
  return null;
}

/** Whitespace normalized, and NUL removed: PostgreSQL text cannot hold it (titles included). */
function tidy(text: string): string {
  return text.replaceAll("\u0000", "").replace(/[ \t\f\v\u00a0]+/g, " ").replace(/ *\n */g, "\n").replace(
    /\n{3,}/g,
    "\n\n",
  ).trim();
}

function fileTitle(path: string): string {
  const name = path.split("/").pop() ?? path;
  return name.replace(/\.[A-Za-z0-9]+$/, "") || name;
}

export async function extractDocument(path: string, bytes: Uint8Array): Promise<Extraction> {
  const kind = kindOfPath(path);
  if (!kind) {
    return { ok: false, reason: `unsupported file type: ${path.split("/").pop()} (PDF, Markdown or plain text)` };
  }
  if (kind === "application/pdf") return await extractPdf(path, bytes);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return { ok: false, reason: "not valid UTF-8 text" };
  }
  const content = tidy(text);
  if (!content) return { ok: false, reason: NO_TEXT };
  const heading = kind === "text/markdown" ? tidy(/^#\s+(.+)$/m.exec(text)?.[1] ?? "") : "";
  return { ok: true, doc: { mimetype: kind, title: heading || fileTitle(path), pages: [content] } };
}

async function extractPdf(path: string, bytes: Uint8Array): Promise<Extraction> {
  if (bytes.length < 5 || new TextDecoder().decode(bytes.subarray(0, 5)) !== "%PDF-") {
    return { ok: false, reason: "not a PDF (corrupt or mislabelled file)" };
  }
  let pdf: Awaited<ReturnType<typeof getDocumentProxy>>;
  try {
    // pdf.js takes ownership of the buffer it is given: hand it a copy.
    pdf = await getDocumentProxy(new Uint8Array(bytes));
  } catch (e) {
    const name = (e as { name?: string }).name ?? "";
    if (name === "PasswordException") return { ok: false, reason: "encrypted PDF (password protected)" };
    return { ok: false, reason: `corrupt PDF: ${(e as Error).message}` };
  }
  try {
    const { text } = await extractText(pdf, { mergePages: false });
    const pages = text.map(tidy);
    if (pages.every((p) => p === "")) return { ok: false, reason: NO_TEXT };
    let title = fileTitle(path);
    try {
      const meta = await pdf.getMetadata();
      const t = (meta.info as { Title?: unknown } | undefined)?.Title;
      if (typeof t === "string" && tidy(t)) title = tidy(t);
    } catch {
      // metadata is optional
    }
    return { ok: true, doc: { mimetype: "application/pdf", title, pages } };
  } catch (e) {
    return { ok: false, reason: `corrupt PDF: ${(e as Error).message}` };
  } finally {
    await pdf.loadingTask.destroy().catch(() => {});
  }
}
