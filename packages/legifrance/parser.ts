// Turns a collected file (the collector's envelope around a /consult answer) into plain text and
// metadata for legal_documents. Each consult shape has its own zod schema; a file that matches none
// is refused with the reason, and only that file fails.
import { z } from "zod";
import { LEGIFRANCE_ID } from "./ids.ts";

export const ENVELOPE_FORMAT = "legifrance-document/v1";

export const envelopeSchema = z.object({
  format: z.literal(ENVELOPE_FORMAT),
  id: z.string().regex(LEGIFRANCE_ID),
  category: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/),
  fond: z.string().nullable().optional(),
  endpoint: z.string(),
  data: z.record(z.string(), z.unknown()),
});
export type Envelope = z.infer<typeof envelopeSchema>;

export interface LegalDocument {
  id: string;
  category: string;
  fond: string | null;
  doc_type: "article" | "decision" | "text";
  title: string | null;
  number: string | null;
  legal_status: string | null;
  start_date: string | null;
  end_date: string | null;
  parent_id: string | null;
  parent_title: string | null;
  url: string | null;
  content: string;
}

// Dates come as epoch ms (most endpoints) or ISO strings; 2999-01-01 is Légifrance's "no end".
const dateish = z.union([z.number(), z.string()]).nullable().optional();
const nstr = z.string().nullable().optional();

function toDate(v: number | string | null | undefined): string | null {
  if (v === null || v === undefined || v === "") return null;
  const d = typeof v === "number" ? new Date(v) : new Date(v.length === 10 ? v + "T00:00:00Z" : v);
  if (Number.isNaN(d.getTime())) return null;
  if (d.getUTCFullYear() >= 2999) return null;
  return d.toISOString().slice(0, 10);
}

/** HTML to plain text: tags dropped, block ends become newlines, the common entities decoded. */
export function htmlToText(html: string): string {
  return html
    .replace(/<\s*br\s*\/?>/gi, "\n")
    .replace(/<\/(p|div|li|h\d|tr)>/gi, "\n")
    .replace(/<[^>]*>/g, "")
    .replace(/&nbsp;/g, " ")
    .replace(/&lt;/g, "<")
    .replace(/&gt;/g, ">")
    .replace(/&quot;/g, '"')
    .replace(/&#39;|&apos;/g, "'")
    .replace(/&amp;/g, "&")
    .replace(/[ \t]+\n/g, "\n")
    .replace(/\n{3,}/g, "\n\n")
    .trim();
}

const articleResponse = z.object({
  article: z.object({
    id: z.string(),
    num: nstr,
    texte: nstr,
    texteHtml: nstr,
    etat: nstr,
    dateDebut: dateish,
    dateFin: dateish,
    textTitles: z.array(z.object({ id: nstr, cid: nstr, titre: nstr, titreLong: nstr })).nullable().optional(),
    context: z.object({ titreTxt: z.array(z.object({ cid: nstr, titre: nstr })).nullable().optional() }).nullable().optional(),
  }),
});

const decisionResponse = z.object({
  text: z.object({
    id: z.string(),
    titre: nstr,
    texte: nstr,
    texteHtml: nstr,
    dateTexte: dateish,
    num: nstr,
    numeroAffaire: z.array(z.string()).nullable().optional(),
    etat: nstr,
    juridiction: nstr,
    solution: nstr,
  }),
});

const textArticle = z.object({ id: nstr, num: nstr, content: nstr, texte: nstr });
type TextSection = { title?: string | null; articles?: z.infer<typeof textArticle>[] | null; sections?: TextSection[] | null };
const textSection: z.ZodType<TextSection> = z.lazy(() =>
  z.object({ title: nstr, articles: z.array(textArticle).nullable().optional(), sections: z.array(textSection).nullable().optional() })
);
const consolidatedResponse = z.object({
  id: z.string(),
  title: nstr,
  nor: nstr,
  textNumber: nstr,
  etat: nstr,
  dateDebutVersion: dateish,
  dateFinVersion: dateish,
  dateTexte: dateish,
  articles: z.array(textArticle).nullable().optional(),
  sections: z.array(textSection).nullable().optional(),
});

const URL_KIND: Record<string, string> = {
  LEGIARTI: "codes/article_lc", JORFARTI: "jorf/article_jo", KALIARTI: "conv_coll/article",
  JURITEXT: "juri/id", CETATEXT: "ceta/id", CONSTEXT: "cons/id", JUFITEXT: "jufi/id",
  CNILTEXT: "cnil/id", JORFTEXT: "jorf/id", KALITEXT: "conv_coll/id",
};

export function legifranceUrl(id: string): string | null {
  const kind = URL_KIND[id.slice(0, 8)];
  return kind ? `https://www.legifrance.gouv.fr/${kind}/${id}` : null;
}

function issues(e: z.ZodError): string {
  return e.issues.slice(0, 3).map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ");
}

export type ParseResult = { ok: true; doc: LegalDocument } | { ok: false; reason: string };

/** Parses a collected file's bytes (as text). Never throws: a bad file is `{ ok: false, reason }`. */
export function parseCollectedFile(text: string): ParseResult {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    return { ok: false, reason: `malformed JSON: ${(e as Error).message.slice(0, 200)}` };
  }
  const env = envelopeSchema.safeParse(raw);
  if (!env.success) return { ok: false, reason: `not a collected Légifrance document: ${issues(env.error)}` };
  return parseEnvelope(env.data);
}

export function parseEnvelope(env: Envelope): ParseResult {
  const base = { id: env.id, category: env.category, fond: env.fond ?? null, url: legifranceUrl(env.id) };
  switch (env.endpoint) {
    case "getArticle": {
      const r = articleResponse.safeParse(env.data);
      if (!r.success) return { ok: false, reason: `unknown getArticle shape: ${issues(r.error)}` };
      const a = r.data.article;
      const content = (a.texte?.trim() || htmlToText(a.texteHtml ?? "")).trim();
      if (!content) return { ok: false, reason: "article has no text" };
      const parent = a.textTitles?.[0];
      const parentTitle = parent?.titre ?? a.context?.titreTxt?.[0]?.titre ?? null;
      return {
        ok: true,
        doc: {
          ...base,
          doc_type: "article",
          title: parentTitle && a.num ? `${parentTitle} - Article ${a.num}` : a.num ? `Article ${a.num}` : parentTitle,
          number: a.num ?? null,
          legal_status: a.etat ?? null,
          start_date: toDate(a.dateDebut),
          end_date: toDate(a.dateFin),
          parent_id: parent?.cid ?? parent?.id ?? a.context?.titreTxt?.[0]?.cid ?? null,
          parent_title: parentTitle,
          content,
        },
      };
    }
    case "juri":
    case "cnil": {
      const r = decisionResponse.safeParse(env.data);
      if (!r.success) return { ok: false, reason: `unknown ${env.endpoint} shape: ${issues(r.error)}` };
      const t = r.data.text;
      const content = (t.texte?.trim() || htmlToText(t.texteHtml ?? "")).trim();
      if (!content) return { ok: false, reason: "decision has no text" };
      return {
        ok: true,
        doc: {
          ...base,
          doc_type: "decision",
          title: t.titre ?? null,
          number: t.numeroAffaire?.[0] ?? t.num ?? null,
          legal_status: t.etat ?? t.solution ?? null,
          start_date: toDate(t.dateTexte),
          end_date: null,
          parent_id: null,
          parent_title: t.juridiction ?? null,
          content,
        },
      };
    }
    case "jorf":
    case "kaliText": {
      const r = consolidatedResponse.safeParse(env.data);
      if (!r.success) return { ok: false, reason: `unknown ${env.endpoint} shape: ${issues(r.error)}` };
      const t = r.data;
      const parts: string[] = [];
      const addArticles = (arts: z.infer<typeof textArticle>[] | null | undefined) => {
        for (const a of arts ?? []) {
          const body = htmlToText(a.content ?? a.texte ?? "");
          if (body) parts.push(a.num ? `Article ${a.num}\n${body}` : body);
        }
      };
      const walk = (sections: TextSection[] | null | undefined) => {
        for (const s of sections ?? []) {
          if (s.title) parts.push(s.title);
          addArticles(s.articles);
          walk(s.sections);
        }
      };
      addArticles(t.articles);
      walk(t.sections);
      const content = parts.join("\n\n").trim();
      if (!content) return { ok: false, reason: "text has no articles" };
      return {
        ok: true,
        doc: {
          ...base,
          doc_type: "text",
          title: t.title ?? null,
          number: t.textNumber ?? t.nor ?? null,
          legal_status: t.etat ?? null,
          start_date: toDate(t.dateDebutVersion ?? t.dateTexte),
          end_date: toDate(t.dateFinVersion),
          parent_id: null,
          parent_title: null,
          content,
        },
      };
    }
    default:
      return { ok: false, reason: `unknown document shape: endpoint ${JSON.stringify(env.endpoint)}` };
  }
}
