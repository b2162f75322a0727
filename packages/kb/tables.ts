// Which tables a push or diff covers, in which order, and how a row is named on both sides.
//
// Default: every embedding source, the tables they reference by foreign key (transitively), and
// those sources' chunks in documentation_embeddings. --tables chooses instead (the chosen sources'
// chunks come along). Parents are always ordered before children.
import { KbError } from "./env.ts";
import { type Sql, type TableInfo, describeTable, normalizeTableName, quoteIdent, textArrayLiteral } from "./catalog.ts";

export const CHUNKS_TABLE = "documentation_embeddings";

export interface TablePlan {
  name: string;
  qualified: string;
  /** Columns naming a row in both projects: the primary key, or a natural key instead of a surrogate identity. */
  key: string[];
  /** Columns copied and compared: no generated column, no surrogate identity. */
  columns: string[];
  /** An identity ALWAYS column is written explicitly (INSERT … OVERRIDING SYSTEM VALUE). */
  overriding: boolean;
  /** Serial/identity columns written explicitly: their sequence is moved past the copied values. */
  sequenceColumns: string[];
  /** Row filter (alias r): the chunks table is limited to the selected sources' rows. */
  where: string | null;
  isChunks: boolean;
}

// A column whose name says it holds a credential. Only text-like columns count: an integer such as
// documentation_embeddings.token_count cannot hold a key.
const credentialWords = new Set(["secret", "secrets", "token", "tokens", "password", "passwords", "passwd", "pwd",
  "apikey", "credential", "credentials", "jwt", "privatekey", "passphrase"]);
const credentialPhrases = [/api_?key/, /service_?role/, /private_?key/, /access_?key/, /client_?secret/, /secret/, /password/];

export function looksLikeCredential(column: string): boolean {
  const lower = column.toLowerCase();
  if (lower.split(/[^a-z0-9]+/).some((w) => credentialWords.has(w))) return true;
  return credentialPhrases.some((p) => p.test(lower));
}

export async function embeddingSourceNames(sql: Sql): Promise<string[]> {
  const rows = await sql<{ source_table: string }[]>`select source_table from public.embedding_sources order by source_table`;
  return rows.map((r) => r.source_table);
}

export interface SelectOptions {
  tables?: string[];
  /** table.column names the operator allowed with --copy-credential-column. */
  allowCredentialColumns?: string[];
}

export async function selectTables(src: Sql, tgt: Sql, o: SelectOptions = {}): Promise<TablePlan[]> {
  const sources = new Set(await embeddingSourceNames(src));
  const infos = new Map<string, { s: TableInfo; t: TableInfo }>();
  const load = async (name: string) => {
    if (infos.has(name)) return infos.get(name)!;
    const [s, t] = await Promise.all([describeTable(src, name), describeTable(tgt, name)]);
    if (!s && !t) throw new KbError(`unknown table "${name}": neither side has it`);
    if (!s) throw new KbError(`unknown table "${name}": the source has no such table`);
    if (!t) throw new KbError(`unknown table "${name}": the target has no such table (apply the same migrations there)`);
    infos.set(name, { s, t });
    return { s, t };
  };

  let names: string[];
  if (o.tables?.length) {
    names = [...new Set(o.tables.map(normalizeTableName))];
    for (const n of names) await load(n);
    if (names.some((n) => sources.has(n)) && !names.includes(CHUNKS_TABLE)) names.push(CHUNKS_TABLE);
  } else {
    names = [];
    const queue = [...sources];
    while (queue.length) {
      const n = queue.shift()!;
      if (names.includes(n)) continue;
      names.push(n);
      queue.push(...(await load(n)).s.parents);
    }
    names.push(CHUNKS_TABLE);
  }
  for (const n of names) await load(n);

  const chunkSources = names.filter((n) => sources.has(n));
  const allowed = new Set((o.allowCredentialColumns ?? []).map((c) => c.toLowerCase()));
  const plans = names.map((n) => planTable(infos.get(n)!, allowed, n === CHUNKS_TABLE
    ? (o.tables?.length && !chunkSources.length ? null : `r.source_table = any (${textArrayLiteral(chunkSources)})`)
    : null));
  return orderParentsFirst(plans, new Map(names.map((n) => [n, infos.get(n)!.s.parents])));
}

function planTable({ s, t }: { s: TableInfo; t: TableInfo }, allowed: Set<string>, where: string | null): TablePlan {
  const sc = new Map(s.columns.map((c) => [c.name, c]));
  const tc = new Map(t.columns.map((c) => [c.name, c]));
  const onlySource = [...sc.keys()].filter((c) => !tc.has(c));
  const onlyTarget = [...tc.keys()].filter((c) => !sc.has(c));
  const typeDiff = [...sc.values()].filter((c) => tc.has(c.name) && tc.get(c.name)!.type !== c.type)
    .map((c) => `${c.name} (${c.type} in the source, ${tc.get(c.name)!.type} in the target)`);
  if (onlySource.length || onlyTarget.length || typeDiff.length) {
    throw new KbError([
      `table ${s.name} has different columns on the two sides:`,
      onlySource.length ? ` only in the source: ${onlySource.join(", ")};` : "",
      onlyTarget.length ? ` only in the target: ${onlyTarget.join(", ")};` : "",
      typeDiff.length ? ` different types: ${typeDiff.join(", ")};` : "",
      " apply the same migrations to both.",
    ].join(""));
  }
  if (!s.primaryKey.length) throw new KbError(`table ${s.name} has no primary key: kb cannot match its rows`);

  let key = s.primaryKey;
  let skip: string[] = [];
  const pkCol = key.length === 1 ? sc.get(key[0]) : undefined;
  if (s.name === CHUNKS_TABLE) {
    // Chunks are named by source row and chunk index. Their id is numbered independently in each
    // project, and their segment says where each project's bulk loads put them: neither is copied
    // (a copied chunk lands in the target's segment 0, see keepChunksInOneSegment).
    key = ["source_table", "source_id", "chunk_index"];
    skip = ["id", "segment"];
  } else if (pkCol?.identityAlways && s.uniqueKeys.length) {
    // A surrogate identity numbered independently in each project: rows are matched by the natural
    // key instead, and the target numbers its own.
    key = s.uniqueKeys[0];
    skip = [pkCol.name];
  }
  const copied = s.columns.filter((c) => !c.generated && !skip.includes(c.name));
  const refused = copied.filter((c) => c.textLike && looksLikeCredential(c.name) && !allowed.has(`${s.name}.${c.name}`.toLowerCase()));
  if (refused.length) {
    throw new KbError(
      `table ${s.name}: refusing to copy ${refused.map((c) => c.name).join(", ")}: the name looks like a credential. ` +
        `Secrets never travel between projects; if this column holds no secret, allow it by name with ` +
        refused.map((c) => `--copy-credential-column ${s.name}.${c.name}`).join(" "),
    );
  }
  return {
    name: s.name,
    qualified: s.qualified,
    key,
    columns: copied.map((c) => c.name),
    overriding: copied.some((c) => c.identityAlways),
    sequenceColumns: copied.filter((c) => c.sequence).map((c) => c.name),
    where,
    isChunks: s.name === CHUNKS_TABLE,
  };
}

function orderParentsFirst(plans: TablePlan[], parents: Map<string, string[]>): TablePlan[] {
  const byName = new Map(plans.map((p) => [p.name, p]));
  const out: TablePlan[] = [];
  const state = new Map<string, "visiting" | "done">();
  const visit = (n: string, path: string[]) => {
    if (state.get(n) === "done") return;
    if (state.get(n) === "visiting") throw new KbError(`foreign keys form a cycle: ${[...path, n].join(" -> ")}; kb cannot order it`);
    state.set(n, "visiting");
    for (const p of parents.get(n) ?? []) if (byName.has(p)) visit(p, [...path, n]);
    state.set(n, "done");
    out.push(byName.get(n)!);
  };
  for (const p of plans) visit(p.name, []);
  return out;
}

export function keyExpr(p: TablePlan): string {
  return p.key.length === 1
    ? `r.${quoteIdent(p.key[0])}::text`
    : `jsonb_build_array(${p.key.map((k) => `r.${quoteIdent(k)}`).join(", ")})::text`;
}

export function columnList(p: TablePlan, alias = ""): string {
  return p.columns.map((c) => `${alias}${quoteIdent(c)}`).join(", ");
}

/** md5 of the row's copied columns as text: equal on both sides iff the rows are equal. */
export function rowHashExpr(p: TablePlan): string {
  return `md5(row(${columnList(p, "r.")})::text)`;
}

export function whereClause(p: TablePlan, extra?: string): string {
  const parts = [p.where, extra].filter(Boolean);
  return parts.length ? `where ${parts.join(" and ")}` : "";
}
