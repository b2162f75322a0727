// Turns a collected file (the collector's envelope around a /consult answer) into plain text and
// metadata for legal_documents. Each consult shape has its own zod schema; a file that matches none
// is refused with the reason, and only that file fails.
//
// Compatibility: the files already in Storage (1.3 million) are `legifrance-document/v1` envelopes
// around the raw /consult answer. The parser only ever reads more out of the same raw answer, so a
// parser change never makes them unreadable; a new envelope format must be added to
// ENVELOPE_FORMATS next to v1, never replace it (tests/fixtures/legifrance-v1 holds files written
// by the v1 collector, and they must keep parsing).
import { createHash } from "node:crypto";
import { z } from "zod";
import { LEGIFRANCE_ID } from "./ids.ts";
import { decodeText, htmlToText } from "./html.ts";

export { htmlToText };

/** The format the collector writes today. */
export const ENVELOPE_FORMAT = "legifrance-document/v1";
/** Every format the parser reads. */
export const ENVELOPE_FORMATS = [ENVELOPE_FORMAT] as const;

export const envelopeSchema = z.object({
  format: z.enum(ENVELOPE_FORMATS),
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
  /** Long title of the parent text (textTitles[].titreLong), for a citation. */
  parent_title_long: string | null;
  /** Where the article sits in its text: fullSectionsTitre, else sectionParentTitre. */
  section_path: string | null;
  /** Légifrance URL of this exact version (LEGIARTI/JORFARTI/... ids are version ids). */
  url: string | null;
  /** The texts that modified this version (lienModifications), or null when the API gives none. */
  modifications: Modification[] | null;
  content: string;
}

export interface Modification {
  title: string | null;
  link_type: string | null;
  text_id: string | null;
  article_num: string | null;
  date: string | null;
}

// Dates come as epoch ms (most endpoints) or ISO strings; 2999-01-01 is Légifrance's "no end".
// A legal date is a calendar day in France: an ISO string is read as the day it writes (whatever
// its offset), and epoch ms as the day in Europe/Paris, which is right both for UTC midnight and for
// Paris midnight (22:00 or 23:00 UTC the day before).
const dateish = z.union([z.number(), z.string()]).nullable().optional();
const nstr = z.string().nullable().optional();
// Fields read for the citation only: a value of an unexpected type is dropped (null), never a reason
// to refuse a file that parsed before they were read.
const extra = z.string().nullable().optional().catch(null);
const parisDay = new Intl.DateTimeFormat("en-CA", {
  timeZone: "Europe/Paris",
  year: "numeric",
  month: "2-digit",
  day: "2-digit",
});

export function toDate(v: number | string | null | undefined): string | null {
  if (v === null || v === undefined || v === "") return null;
  let day: string;
  if (typeof v === "number" || /^-?\d{6,}$/.test(v)) {
    const d = new Date(Number(v));
    if (Number.isNaN(d.getTime())) return null;
    day = parisDay.format(d);
  } else {
    const m = /^(\d{4}-\d{2}-\d{2})(?:$|[T ])/.exec(v.trim());
    if (!m || Number.isNaN(new Date(m[1] + "T00:00:00Z").getTime())) return null;
    day = m[1];
  }
  if (!/^\d{4}-\d{2}-\d{2}$/.test(day)) return null;
  return day >= "2999-01-01" ? null : day;
}

/** A title or label from the API: entities decoded, blank means absent. */
function label(v: string | null | undefined): string | null {
  const t = v ? decodeText(v) : "";
  return t || null;
}

/** The body of a document: its HTML when there is one (it keeps lists and tables), else its plain text. */
function body(html: string | null | undefined, plain: string | null | undefined): string {
  return (html?.trim() ? htmlToText(html) : "") || decodeText(plain ?? "");
}

const modificationLink = z.object({
  textCid: extra,
  textTitle: extra,
  linkType: extra,
  articleNum: extra,
  datePubliTexte: dateish.catch(null),
  dateDebutCible: dateish.catch(null),
});

function modifications(links: z.infer<typeof modificationLink>[] | null | undefined): Modification[] | null {
  if (!links?.length) return null;
  return links.map((l) => ({
    title: label(l.textTitle),
    link_type: label(l.linkType),
    text_id: l.textCid && LEGIFRANCE_ID.test(l.textCid) ? l.textCid : null,
    article_num: label(l.articleNum),
    date: toDate(l.dateDebutCible ?? l.datePubliTexte),
  }));
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
    context: z.object({
      titreTxt: z.array(z.object({ cid: nstr, titre: nstr })).nullable().optional(),
      titresTM: z.array(z.object({ id: extra, titre: extra })).nullable().optional().catch(null),
    }).nullable().optional(),
    fullSectionsTitre: extra,
    sectionParentTitre: extra,
    lienModifications: z.array(modificationLink).nullable().optional().catch(null),
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
type TextSection = {
  title?: string | null;
  articles?: z.infer<typeof textArticle>[] | null;
  sections?: TextSection[] | null;
};
const textSection: z.ZodType<TextSection> = z.lazy(() =>
  z.object({
    title: nstr,
    articles: z.array(textArticle).nullable().optional(),
    sections: z.array(textSection).nullable().optional(),
  })
);
const consolidatedResponse = z.object({
  id: z.string(),
  title: nstr,
  titreLong: extra,
  nor: nstr,
  textNumber: nstr,
  etat: nstr,
  dateDebutVersion: dateish,
  dateFinVersion: dateish,
  dateTexte: dateish,
  articles: z.array(textArticle).nullable().optional(),
  sections: z.array(textSection).nullable().optional(),
});

// Légifrance's public paths per id kind. LEGIARTI articles live under /codes in a code and under
// /loda in a law or decree; the fond the collector recorded tells which.
const URL_KIND: Record<string, string> = {
  JORFARTI: "jorf/article_jo",
  KALIARTI: "conv_coll/article",
  JURITEXT: "juri/id",
  CETATEXT: "ceta/id",
  CONSTEXT: "cons/id",
  JUFITEXT: "jufi/id",
  CNILTEXT: "cnil/id",
  JORFTEXT: "jorf/id",
  KALITEXT: "conv_coll/id",
  KALICONT: "conv_coll/id",
};

/** The Légifrance URL of this exact version; built only from a validated id. */
export function legifranceUrl(id: string, fond?: string | null): string | null {
  if (!LEGIFRANCE_ID.test(id)) return null;
  const prefix = id.slice(0, 8);
  const loda = /^LODA/.test(fond ?? "");
  const kind = prefix === "LEGIARTI"
    ? (loda ? "loda/article_lc" : "codes/article_lc")
    : prefix === "LEGITEXT"
    ? (loda ? "loda/id" : "codes/texte_lc")
    : URL_KIND[prefix];
  return kind ? `https://www.legifrance.gouv.fr/${kind}/${id}` : null;
}

/** A stable hash of the parsed document: the worker rewrites a row only when it changes. */
export function documentHash(doc: LegalDocument): string {
  return createHash("sha256").update(JSON.stringify(doc)).digest("hex");
}

function issues(e: z.ZodError): string {
  return e.issues.slice(0, 3).map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ");
}

export type ParseResult = { ok: true; doc: LegalDocument } | { ok: false; reason: string };

/** Parses a collected file's bytes (as text). Never throws: a bad file is `{ ok: false, reason }`. */
export function parseCollectedFile(text: string): ParseResult {
  let raw: unknown;
  try {
    // PostgreSQL text cannot hold NUL (a `\u0000` escape in the API's JSON): it is dropped from every string.
    raw = JSON.parse(text, (_key, v) => typeof v === "string" && v.includes("\u0000") ? v.replaceAll("\u0000", "") : v);
  } catch (e) {
    return { ok: false, reason: `malformed JSON: ${(e as Error).message.slice(0, 200)}` };
  }
  const env = envelopeSchema.safeParse(raw);
  if (!env.success) return { ok: false, reason: `not a collected Légifrance document: ${issues(env.error)}` };
  return parseEnvelope(env.data);
}

export function parseEnvelope(env: Envelope): ParseResult {
  const base = { id: env.id, category: env.category, fond: env.fond ?? null, url: legifranceUrl(env.id, env.fond) };
  switch (env.endpoint) {
    case "getArticle": {
      const r = articleResponse.safeParse(env.data);
      if (!r.success) return { ok: false, reason: `unknown getArticle shape: ${issues(r.error)}` };
      const a = r.data.article;
      const content = body(a.texteHtml, a.texte);
      if (!content) return { ok: false, reason: "article has no text" };
      const parent = a.textTitles?.[0];
      const parentTitle = label(parent?.titre) ?? label(a.context?.titreTxt?.[0]?.titre);
      const tm = (a.context?.titresTM ?? []).map((t) => label(t.titre)).filter((t): t is string => !!t);
      const num = label(a.num);
      return {
        ok: true,
        doc: {
          ...base,
          doc_type: "article",
          title: parentTitle && num ? `${parentTitle} - Article ${num}` : num ? `Article ${num}` : parentTitle,
          number: num,
          legal_status: a.etat ?? null,
          start_date: toDate(a.dateDebut),
          end_date: toDate(a.dateFin),
          parent_id: parent?.cid ?? parent?.id ?? a.context?.titreTxt?.[0]?.cid ?? null,
          parent_title: parentTitle,
          parent_title_long: label(parent?.titreLong) ?? parentTitle,
          section_path: label(a.fullSectionsTitre) ?? (tm.length ? tm.join(" > ") : null) ??
            label(a.sectionParentTitre),
          modifications: modifications(a.lienModifications),
          content,
        },
      };
    }
    case "juri":
    case "cnil": {
      const r = decisionResponse.safeParse(env.data);
      if (!r.success) return { ok: false, reason: `unknown ${env.endpoint} shape: ${issues(r.error)}` };
      const t = r.data.text;
      const content = body(t.texteHtml, t.texte);
      if (!content) return { ok: false, reason: "decision has no text" };
      return {
        ok: true,
        doc: {
          ...base,
          doc_type: "decision",
          title: label(t.titre),
          number: label(t.numeroAffaire?.[0] ?? t.num),
          legal_status: t.etat ?? t.solution ?? null,
          start_date: toDate(t.dateTexte),
          end_date: null,
          parent_id: null,
          parent_title: label(t.juridiction),
          parent_title_long: null,
          section_path: null,
          modifications: null,
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
          const text = body(a.content, a.texte);
          if (text) parts.push(a.num ? `Article ${label(a.num)}\n${text}` : text);
        }
      };
      const walk = (sections: TextSection[] | null | undefined) => {
        for (const s of sections ?? []) {
          const title = label(s.title);
          if (title) parts.push(title);
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
          title: label(t.title),
          number: label(t.textNumber ?? t.nor),
          legal_status: t.etat ?? null,
          start_date: toDate(t.dateDebutVersion ?? t.dateTexte),
          end_date: toDate(t.dateFinVersion),
          parent_id: null,
          parent_title: null,
          parent_title_long: label(t.titreLong) ?? label(t.title),
          section_path: null,
          modifications: null,
          content,
        },
      };
    }
    default:
      return { ok: false, reason: `unknown document shape: endpoint ${JSON.stringify(env.endpoint)}` };
  }
}
