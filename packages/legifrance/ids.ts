// Légifrance ids, validated before one ever becomes part of a Storage path.
//
// The rule is 8 capital letters (the base and kind: LEGIARTI, LEGITEXT, JURITEXT, JORFTEXT, CNILTEXT,
// KALITEXT, CETATEXT, CONSTEXT, ...) then 12 digits. The exceptions the API is documented to return
// are handled explicitly, each mapped back to the plain id:
//   - a version suffix "_DD-MM-YYYY" on text ids in search results of the CODE_DATE / LODA_DATE fonds
//     (e.g. "LEGITEXT000006070721_01-01-2024"): the dated version of the same text;
//   - surrounding whitespace in some JURI extracts.
// Anything else (lower case, wrong length, separators, "..") is refused.

export const LEGIFRANCE_ID = /^[A-Z]{8}\d{12}$/;
const VERSIONED = /^([A-Z]{8}\d{12})_(\d{2})-(\d{2})-(\d{4})$/;

export type IdCheck = { ok: true; id: string; prefix: string } | { ok: false; reason: string };

export function checkLegifranceId(raw: unknown): IdCheck {
  if (typeof raw !== "string") return { ok: false, reason: "id is not a string" };
  const trimmed = raw.trim();
  if (LEGIFRANCE_ID.test(trimmed)) return { ok: true, id: trimmed, prefix: trimmed.slice(0, 8) };
  const v = VERSIONED.exec(trimmed);
  if (v) return { ok: true, id: v[1], prefix: v[1].slice(0, 8) };
  return { ok: false, reason: `not a Légifrance id (expected ^[A-Z]{8}\\d{12}$): ${JSON.stringify(raw.slice(0, 80))}` };
}

/** Which /consult endpoint serves a document, and the body field that carries its id. */
export interface ConsultRoute {
  endpoint: "getArticle" | "juri" | "cnil" | "jorf" | "kaliText";
  field: "id" | "textId" | "textCid";
}

const ROUTES: Record<string, ConsultRoute> = {
  LEGIARTI: { endpoint: "getArticle", field: "id" },
  JORFARTI: { endpoint: "getArticle", field: "id" },
  KALIARTI: { endpoint: "getArticle", field: "id" },
  JURITEXT: { endpoint: "juri", field: "textId" },
  CETATEXT: { endpoint: "juri", field: "textId" },
  CONSTEXT: { endpoint: "juri", field: "textId" },
  JUFITEXT: { endpoint: "juri", field: "textId" },
  CNILTEXT: { endpoint: "cnil", field: "textId" },
  JORFTEXT: { endpoint: "jorf", field: "textCid" },
  KALITEXT: { endpoint: "kaliText", field: "id" },
};

export function consultRouteFor(id: string): ConsultRoute | null {
  return ROUTES[id.slice(0, 8)] ?? null;
}

const CATEGORY = /^[a-z0-9][a-z0-9_-]{0,62}$/;

/** `legifrance/{category}/{id}.json`, only from a validated category and id. */
export function documentPath(category: string, id: string): string {
  if (!CATEGORY.test(category)) throw new Error(`invalid category: ${JSON.stringify(category)}`);
  if (!LEGIFRANCE_ID.test(id)) throw new Error(`invalid Légifrance id: ${JSON.stringify(id)}`);
  return `legifrance/${category}/${id}.json`;
}

/** The inverse of documentPath, for the worker: null when the path is not one of ours. */
export function parseDocumentPath(path: string): { category: string; id: string } | null {
  const m = /^legifrance\/([a-z0-9][a-z0-9_-]{0,62})\/([A-Z]{8}\d{12})\.json$/.exec(path);
  return m ? { category: m[1], id: m[2] } : null;
}
