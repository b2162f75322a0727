// Credentials never travel between projects. Before a push writes anything, every column it would
// copy is checked three ways, and one refusal names every finding (table, column, what, which row):
//   - its name (api keys, tokens, secrets, passwords, DSNs, webhook and database URLs);
//   - for json/jsonb columns, every object key at any depth, by the same rule;
//   - its values, in the source snapshot: shapes of provider keys, Supabase secret keys, JWTs, Slack
//     tokens, webhook URLs and database URLs with a password.
// Only columns that can hold text at their base type are checked (a domain over text, citext or
// text[] counts; an integer cannot hold a key). --copy-credential-column table.column lets one
// named column through, after the operator has looked at it.
import type { AnySql } from "./catalog.ts";
import { quoteIdent } from "./catalog.ts";
import { KbError } from "./env.ts";
import { keyExpr, type TablePlan, whereClause } from "./tables.ts";

const credentialWords = new Set([
  "secret",
  "secrets",
  "token",
  "tokens",
  "password",
  "passwords",
  "passwd",
  "pwd",
  "apikey",
  "credential",
  "credentials",
  "jwt",
  "privatekey",
  "passphrase",
  "dsn",
]);
const credentialPhrases = [
  /_key$/,
  /^key$/,
  /api_?key/,
  /service_?role/,
  /private_?key/,
  /access_?key/,
  /client_?secret/,
  /secret/,
  /token/,
  /password/,
  /passwd/,
  /webhook/,
  /(database|db|postgres|pg|conn|connection)_?(url|uri|string|dsn)/,
];

export function looksLikeCredential(name: string): boolean {
  const lower = name.toLowerCase();
  if (lower.split(/[^a-z0-9]+/).some((w) => credentialWords.has(w))) return true;
  return credentialPhrases.some((p) => p.test(lower));
}

/** Value shapes of credentials: what each catches, and its pattern. */
export const credentialValueShapes: [string, RegExp][] = [
  ["an OpenAI-style key (sk-…)", /(^|[^A-Za-z0-9_-])sk-[A-Za-z0-9_-]{16,}/],
  ["a Stripe-style key (sk_live_…/rk_…)", /(^|[^A-Za-z0-9])[sr]k_(live|test)_[A-Za-z0-9]{10,}/],
  ["a Supabase secret key (sb_secret_…)", /sb_secret_[A-Za-z0-9_-]{8,}/],
  ["a JWT", /eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+/],
  ["a Slack token (xox?-…)", /xox[abposr]-[A-Za-z0-9-]{8,}/],
  ["a webhook URL (https://hooks.…)", /https?:\/\/hooks\./],
  ["a database URL with a password", /postgres(ql)?:\/\/[^\s:/@]+:[^\s@/]+@/],
];

// What every shape above contains, as one cheap POSIX alternation of literals: the database reads
// each row once with it and returns only the rows that match, which JS then checks exactly. Row
// text is mostly prose, so almost nothing comes back; a full scan with the exact shapes costs
// several times more in PostgreSQL's regex engine.
const valuePrefilter = "sk-|k_live_|k_test_|sb_secret_|eyJ|xox|hooks\\.|postgres";
// The same for json keys, case-insensitive: words any credential-looking key name contains.
const keyPrefilter = "key|token|secret|pass|pwd|dsn|webhook|jwt|credential|service_?role|url|uri|string";

function findInJson(v: unknown, path: string): string | null {
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const f = findInJson(v[i], `${path}[${i}]`);
      if (f) return f;
    }
  } else if (v && typeof v === "object") {
    for (const [k, x] of Object.entries(v)) {
      if (looksLikeCredential(k)) return `${path}.${k}`;
      const f = findInJson(x, `${path}.${k}`);
      if (f) return f;
    }
  }
  return null;
}

export interface CredentialFinding {
  table: string;
  column: string;
  what: string;
  /** The key of one row holding it (values and json keys). */
  row?: string;
  rows?: number;
}

/**
 * Every credential the push would copy from the source (names, then json keys and values read in
 * the snapshot `src` is in). Allowed columns (table.column, any case) are skipped.
 */
export async function findCredentials(
  src: AnySql,
  plans: TablePlan[],
  allowed: string[],
): Promise<CredentialFinding[]> {
  const allow = new Set(allowed.map((a) => a.toLowerCase()));
  const out: CredentialFinding[] = [];
  for (const p of plans) {
    const cols = p.textColumns.filter((c) => !allow.has(`${p.name}.${c}`.toLowerCase()));
    for (const c of cols) {
      if (looksLikeCredential(c)) out.push({ table: p.name, column: c, what: "its name looks like a credential" });
    }
    const scan = cols.filter((c) => !looksLikeCredential(c));
    if (!scan.length) continue;
    const json = scan.filter((c) => p.jsonColumns.includes(c));
    const text = (cs: string[]) => `concat_ws(' ', ${cs.map((c) => `r.${quoteIdent(c)}::text`).join(", ")})`;
    const candidates = src.unsafe<{ k: string; v: Record<string, string | null> }[]>(
      `select ${keyExpr(p)} as k, jsonb_build_object(${
        scan.map((c) => `'${c.replace(/'/g, "''")}', r.${quoteIdent(c)}::text`).join(", ")
      }) as v
       from ${p.qualified} r ${whereClause(p, `(${text(scan)} ~ $1${json.length ? ` or ${text(json)} ~* $2` : ""})`)}`,
      (json.length ? [valuePrefilter, keyPrefilter] : [valuePrefilter]) as never[],
    ).cursor(200);
    const hits = new Map<string, CredentialFinding>();
    const hit = (column: string, what: string, row: string) => {
      const id = `${column}\u0000${what}`;
      const h = hits.get(id);
      if (h) {
        h.rows = (h.rows ?? 1) + 1;
        if (row < h.row!) h.row = row;
      } else hits.set(id, { table: p.name, column, what, row, rows: 1 });
    };
    for await (const rows of candidates) {
      for (const r of rows) {
        for (const c of scan) {
          const v = r.v[c];
          if (v == null) continue;
          const shape = credentialValueShapes.find(([, re]) => re.test(v));
          if (shape) hit(c, `a value looks like ${shape[0]}`, r.k);
          if (json.includes(c)) {
            let parsed: unknown = null;
            try {
              parsed = JSON.parse(v);
            } catch { /* not json text: nothing to inspect */ }
            const path = findInJson(parsed, "$");
            if (path) hit(c, `a json key looks like a credential (${path})`, r.k);
          }
        }
      }
    }
    out.push(...[...hits.values()].sort((a, b) => a.column.localeCompare(b.column) || a.what.localeCompare(b.what)));
  }
  return out;
}

export function refuseCredentials(found: CredentialFinding[]): void {
  if (!found.length) return;
  const lines = found.map((f) =>
    `${f.table}.${f.column}: ${f.what}${
      f.row !== undefined ? ` (row ${f.row}${f.rows && f.rows > 1 ? ` and ${f.rows - 1} more` : ""})` : ""
    }`
  );
  const flags = [...new Set(found.map((f) => `--copy-credential-column ${f.table}.${f.column}`))].join(" ");
  throw new KbError(
    `refusing to copy what looks like credentials (secrets never travel between projects):\n  ${lines.join("\n  ")}\n` +
      `If a column holds no secret, allow it by name after checking it: ${flags}`,
  );
}
