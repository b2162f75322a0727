// Which tables a push or diff covers, in which order, and how a row is named on both sides.
//
// Default: every embedding source, the tables they reference by foreign key (transitively), and
// those sources' chunks in documentation_embeddings. --tables chooses instead (the chosen sources'
// chunks come along). Parents are always ordered before children.
//
// Matching rule. A row is named by its primary key, except in a table whose primary key is a single
// identity ALWAYS column and that has a NOT NULL unique key: each project numbers such a table
// itself, so its rows are named by that natural key (the first such unique index) and the identity
// is never copied. Every reference to such a row is carried as the row's natural key: a foreign key
// column pointing at the identity, and a chunk's source_id. It is compared and copied in that form
// and written as the target's own id of the same row, in the push's transaction. A reference that
// cannot be carried that way (no foreign key, a self-reference, a composite key mixing the identity)
// is refused before anything is written.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { KbError } from "./env.ts";
import {
  describeTable,
  normalizeTableName,
  quoteIdent,
  type Sql,
  type TableInfo,
  textArrayLiteral,
} from "./catalog.ts";

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
  /** The identity column each project numbers itself (never copied) when rows are matched by a natural key. */
  surrogate: string | null;
  /**
   * Columns holding the id of a row matched by natural key (a foreign key to a surrogate, or a
   * chunk's source_id): compared and copied as that row's natural key, written as the target's id.
   */
  refs: RefColumn[];
  /** Copied columns that could hold a credential (text-like at their base type), and the json ones among them. */
  textColumns: string[];
  jsonColumns: string[];
}

export interface RefColumn {
  column: string;
  /** The referenced row's natural key as text, over the table aliased r. */
  portable: string;
  /** LEFT JOINs over the stage (aliased s) that find the target's id, and the expression reading it. */
  joins: string;
  resolved: string;
}

export async function embeddingSourceNames(sql: Sql): Promise<string[]> {
  const rows = await sql<
    { source_table: string }[]
  >`select source_table from public.embedding_sources order by source_table`;
  return rows.map((r) => r.source_table);
}

export interface SelectOptions {
  tables?: string[];
}

interface Pair {
  s: TableInfo;
  t: TableInfo;
}

/** A table each project numbers itself: its identity, and the natural key its rows are matched by. */
interface Remapped {
  info: TableInfo;
  surrogate: string;
  key: string[];
}

const repoRoot = fileURLToPath(new URL("../../", import.meta.url));

/** Tables this project's migrations create: a target missing one has not had the migrations applied. */
function projectTables(): Set<string> {
  const dir = join(repoRoot, "supabase/migrations");
  const out = new Set<string>();
  if (!existsSync(dir)) return out;
  for (const f of readdirSync(dir)) {
    if (!f.endsWith(".sql")) continue;
    for (
      const m of readFileSync(join(dir, f), "utf8").matchAll(
        /create table (?:if not exists )?(?:public\.)?([a-z_][a-z0-9_]*)\b/gi,
      )
    ) {
      out.add(m[1].toLowerCase());
    }
  }
  return out;
}

export async function selectTables(src: Sql, tgt: Sql, o: SelectOptions = {}): Promise<TablePlan[]> {
  const sourceRows = await src<{ source_table: string; pk_column: string }[]>`
    select source_table, pk_column from public.embedding_sources order by source_table`;
  const sources = new Map(sourceRows.map((r) => [r.source_table, r.pk_column]));
  const infos = new Map<string, Pair>();
  // Every table is described before anything is refused, so that all missing tables are named at once.
  const missing = { neither: [] as string[], source: [] as string[], target: [] as string[] };
  const seen = new Set<string>();
  const load = async (name: string): Promise<Pair | null> => {
    if (seen.has(name)) return infos.get(name) ?? null;
    seen.add(name);
    const [s, t] = await Promise.all([describeTable(src, name), describeTable(tgt, name)]);
    if (!s || !t) {
      (!s && !t ? missing.neither : !s ? missing.source : missing.target).push(name);
      return null;
    }
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
    const queue = [...sources.keys()];
    while (queue.length) {
      const n = queue.shift()!;
      if (names.includes(n)) continue;
      names.push(n);
      queue.push(...((await load(n))?.s.parents ?? []));
    }
    names.push(CHUNKS_TABLE);
  }
  for (const n of names) await load(n);
  // Referenced tables outside the selection are described too: a reference to a row matched by
  // natural key is rewritten whether or not its table is pushed.
  // (A parent in a platform schema, such as auth.users, is never copied nor numbered by kb: skipped.)
  for (let i = 0; i < infos.size; i++) {
    for (const p of [...infos.values()][i].s.parents) {
      if (isPromotable(p)) await load(p);
    }
  }
  refuseMissing(missing);

  const remapped = new Map<string, Remapped>();
  for (const [n, { s }] of infos) {
    const pk = s.primaryKey.length === 1 ? s.columns.find((c) => c.name === s.primaryKey[0]) : undefined;
    const natural = pk && s.uniqueKeys.find((k) => !k.includes(pk.name));
    if (n !== CHUNKS_TABLE && pk?.identityAlways && natural) {
      remapped.set(n, { info: s, surrogate: pk.name, key: natural });
    }
  }
  const refusals: string[] = [];
  const chunkSources = names.filter((n) => sources.has(n));
  const plans = names.map((n) =>
    planTable(
      infos.get(n)!,
      remapped,
      refusals,
      n === CHUNKS_TABLE
        ? {
          where: o.tables?.length && !chunkSources.length
            ? null
            : `r.source_table = any (${textArrayLiteral(chunkSources)})`,
          sources: chunkSources.map((c) => [c, sources.get(c)!] as [string, string]),
        }
        : null,
    )
  );
  refuseUnlinkedReferences(names.map((n) => infos.get(n)!.s), remapped, refusals);
  if (refusals.length) {
    throw new KbError(`cannot keep every reference true, so nothing was written:\n  ${refusals.join("\n  ")}`);
  }
  // Chunks come after their source rows: their source_id is resolved against the rows just written.
  const parents = new Map(names.map((n) => [n, n === CHUNKS_TABLE ? chunkSources : infos.get(n)!.s.parents]));
  return orderParentsFirst(plans, parents);
}

function isPromotable(name: string): boolean {
  try {
    normalizeTableName(name);
    return true;
  } catch {
    return false;
  }
}

function refuseMissing(m: { neither: string[]; source: string[]; target: string[] }): void {
  const lines: string[] = [];
  const list = (xs: string[]) => xs.map((x) => `"${x}"`).join(", ");
  if (m.neither.length) lines.push(`unknown table ${list(m.neither)}: neither side has it`);
  if (m.source.length) lines.push(`unknown table ${list(m.source)}: the source has no such table`);
  if (m.target.length) {
    const ours = projectTables();
    const theirs = m.target.filter((n) => !ours.has(n));
    const project = m.target.filter((n) => ours.has(n));
    if (theirs.length) {
      lines.push(
        `the target has no table ${list(theirs)}: create ${
          theirs.length > 1 ? "them" : "it"
        } there first (kb copies rows, not schema)`,
      );
    }
    if (project.length) {
      lines.push(
        `the target has no table ${
          list(project)
        }: apply this project's migrations there (npm run db:migrate or supabase db push)`,
      );
    }
  }
  if (lines.length) throw new KbError(lines.join("\n"));
}

/** The natural key of a remapped table's row as text, over alias `a`; its own references followed down. */
function portableKey(r: Remapped, a: string, remapped: Map<string, Remapped>, depth: number): string {
  const parts = r.key.map((c) => portableColumn(r.info, c, a, remapped, depth));
  return r.key.length === 1 ? `(${parts[0]})::text` : `jsonb_build_array(${parts.join(", ")})::text`;
}

function remappedParent(info: TableInfo, column: string, remapped: Map<string, Remapped>): Remapped | undefined {
  for (const fk of info.foreignKeys) {
    const r = remapped.get(fk.parent);
    if (
      r && fk.parent !== info.name && fk.columns.length === 1 && fk.columns[0] === column &&
      fk.parentColumns[0] === r.surrogate
    ) return r;
  }
  return undefined;
}

function portableColumn(
  info: TableInfo,
  column: string,
  a: string,
  remapped: Map<string, Remapped>,
  depth: number,
): string {
  const r = remappedParent(info, column, remapped);
  if (!r) return `${a}.${quoteIdent(column)}`;
  if (depth > 8) throw new KbError(`table ${info.name}: references nest deeper than 8 tables`);
  const k = `k${depth}`;
  return `(select ${portableKey(r, k, remapped, depth + 1)} from ${r.info.qualified} ${k} where ${k}.${
    quoteIdent(r.surrogate)
  } = ${a}.${quoteIdent(column)})`;
}

/** The join reading the target's id of the row whose natural key `on` compares ($m is the join's alias). */
function resolveJoin(r: Remapped, m: string, on: string, remapped: Map<string, Remapped>, asText: boolean): string {
  return `left join (select ${portableKey(r, "q", remapped, 1)} as k, q.${quoteIdent(r.surrogate)}${
    asText ? "::text" : ""
  } as id
    from ${r.info.qualified} q) ${m} on ${on.replace(/\$m/g, m)}`;
}

const lit = (x: string) => `'${x.replace(/'/g, "''")}'`;

function planTable(
  { s, t }: Pair,
  remapped: Map<string, Remapped>,
  refusals: string[],
  chunks: { where: string | null; sources: [string, string][] } | null,
): TablePlan {
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
  let surrogate: string | null = null;
  const refs: RefColumn[] = [];
  if (chunks) {
    // Chunks are named by source row and chunk index. Their id is numbered independently in each
    // project, and their segment says where each project's bulk loads put them: neither is copied
    // (a copied chunk lands in the target's segment 0, see keepChunksInOneSegment).
    key = ["source_table", "source_id", "chunk_index"];
    skip = ["id", "segment"];
    const moved = chunks.sources.map(([n, pk]) => ({ n, r: remapped.get(n)!, pk })).filter((x) =>
      x.r && x.r.surrogate === x.pk
    );
    if (moved.length) {
      refs.push({
        column: "source_id",
        portable: `case r.source_table ${
          moved.map(({ n, r }) => {
            const idType = r.info.columns.find((c) => c.name === r.surrogate)!.type;
            return `when ${lit(n)} then (select ${portableKey(r, "k0", remapped, 1)} from ${r.info.qualified} k0
            where k0.${quoteIdent(r.surrogate)} = r.source_id::${idType})`;
          }).join(" ")
        } else r.source_id end`,
        joins: moved.map(({ n, r }, i) =>
          resolveJoin(r, `m_src${i}`, `s.source_table = ${lit(n)} and $m.k = s.source_id`, remapped, true)
        ).join("\n"),
        resolved: `case s.source_table ${
          moved.map(({ n }, i) => `when ${lit(n)} then m_src${i}.id`).join(" ")
        } else s.source_id end`,
      });
    }
  } else {
    const own = remapped.get(s.name);
    if (own) {
      key = own.key;
      skip = [own.surrogate];
      surrogate = own.surrogate;
    }
    for (const fk of s.foreignKeys) {
      const r = remapped.get(fk.parent);
      if (!r || !fk.parentColumns.includes(r.surrogate)) continue;
      if (fk.parent === s.name) {
        refusals.push(
          `${s.name}(${
            fk.columns.join(", ")
          }) references its own table's ${r.surrogate}, which each project numbers itself: kb cannot rewrite a self-reference`,
        );
      } else if (fk.columns.length !== 1) {
        refusals.push(
          `${s.name}(${fk.columns.join(", ")}) references ${fk.parent}(${
            fk.parentColumns.join(", ")
          }), mixing the id each project numbers itself with other columns`,
        );
      } else {
        const c = fk.columns[0];
        const m = `m_${refs.length}`;
        refs.push({
          column: c,
          portable: portableColumn(s, c, "r", remapped, 1),
          joins: resolveJoin(r, m, `$m.k = s.${quoteIdent(c)}`, remapped, false),
          resolved: `${m}.id`,
        });
      }
    }
  }
  const copied = s.columns.filter((c) => !c.generated && !skip.includes(c.name));
  return {
    name: s.name,
    qualified: s.qualified,
    key,
    columns: copied.map((c) => c.name),
    overriding: copied.some((c) => c.identityAlways),
    sequenceColumns: copied.filter((c) => c.sequence).map((c) => c.name),
    where: chunks?.where ?? null,
    isChunks: !!chunks,
    surrogate,
    refs,
    textColumns: copied.filter((c) => c.textLike).map((c) => c.name),
    jsonColumns: copied.filter((c) => c.json).map((c) => c.name),
  };
}

/**
 * An integer column named after a table matched by natural key (article_id for kb_articles) that has
 * no foreign key: kb cannot know it holds that table's ids, so it could not rewrite them.
 */
function refuseUnlinkedReferences(tables: TableInfo[], remapped: Map<string, Remapped>, refusals: string[]): void {
  const stems = new Map<string, string>();
  for (const n of remapped.keys()) {
    const bare = n.split(".").pop()!;
    const unprefixed = bare.replace(/^[a-z0-9]+_/, "");
    for (const b of [bare, unprefixed]) {
      for (const stem of [b, b.replace(/s$/, ""), b.replace(/es$/, "")]) if (stem) stems.set(stem, n);
    }
  }
  for (const t of tables) {
    if (t.name === CHUNKS_TABLE) continue;
    for (const c of t.columns) {
      const m = c.integer ? c.name.match(/^(.+)_id$/) : null;
      if (!m || !stems.has(m[1]) || stems.get(m[1]) === t.name) continue;
      if (t.foreignKeys.some((fk) => fk.columns.includes(c.name))) continue;
      refusals.push(
        `${t.name}.${c.name} looks like a reference to ${stems.get(m[1])}, whose ids each project numbers itself, ` +
          `but has no foreign key: add the foreign key (kb then rewrites it to the target's ids), or leave ${t.name} out with --tables`,
      );
    }
  }
}

function orderParentsFirst(plans: TablePlan[], parents: Map<string, string[]>): TablePlan[] {
  const byName = new Map(plans.map((p) => [p.name, p]));
  const out: TablePlan[] = [];
  const state = new Map<string, "visiting" | "done">();
  const visit = (n: string, path: string[]) => {
    if (state.get(n) === "done") return;
    if (state.get(n) === "visiting") {
      throw new KbError(`foreign keys form a cycle: ${[...path, n].join(" -> ")}; kb cannot order it`);
    }
    state.set(n, "visiting");
    for (const p of parents.get(n) ?? []) if (byName.has(p)) visit(p, [...path, n]);
    state.set(n, "done");
    out.push(byName.get(n)!);
  };
  for (const p of plans) visit(p.name, []);
  return out;
}

/** A copied column as compared and copied: a reference as its row's natural key, else the value. */
function columnExpr(p: TablePlan, c: string): string {
  return p.refs.find((r) => r.column === c)?.portable ?? `r.${quoteIdent(c)}`;
}

/** The row's key as text, the same on both sides for the same row (references by natural key). */
export function keyExpr(p: TablePlan): string {
  return p.key.length === 1
    ? `(${columnExpr(p, p.key[0])})::text`
    : `jsonb_build_array(${p.key.map((k) => columnExpr(p, k)).join(", ")})::text`;
}

export function columnList(p: TablePlan, alias = ""): string {
  return p.columns.map((c) => `${alias}${quoteIdent(c)}`).join(", ");
}

/** The copied columns over alias r, references as natural keys: what the source sends. */
export function portableSelectList(p: TablePlan): string {
  return p.columns.map((
    c,
  ) => (p.refs.some((r) => r.column === c) ? `${columnExpr(p, c)} as ${quoteIdent(c)}` : `r.${quoteIdent(c)}`)).join(
    ", ",
  );
}

/** The stage table's columns: the table's own, references as text (natural keys until resolved). */
export function stageSelectList(p: TablePlan): string {
  return p.columns.map((c) => (p.refs.some((r) => r.column === c) ? `null::text as ${quoteIdent(c)}` : quoteIdent(c)))
    .join(", ");
}

/** The staged rows with every reference resolved to the target's id (a parenthesised query). */
export function resolvedRows(p: TablePlan, stage: string): string {
  const cols = p.columns.map((c) => {
    const r = p.refs.find((x) => x.column === c);
    return r ? `${r.resolved} as ${quoteIdent(c)}` : `s.${quoteIdent(c)}`;
  });
  return `(select ${cols.join(", ")} from ${stage} s ${p.refs.map((r) => r.joins).join("\n")})`;
}

/** Staged references naming a row the target does not have: (col, k) rows, 5 per column at most. */
export function unresolvedRefs(p: TablePlan, stage: string): string {
  return p.refs.map((r) =>
    `(select ${lit(r.column)} as col, s.${quoteIdent(r.column)}::text as k from ${stage} s ${r.joins}
    where s.${quoteIdent(r.column)} is not null and (${r.resolved}) is null limit 5)`
  ).join(" union all ");
}

/** md5 of the row's copied columns as text: equal on both sides iff the rows are equal. */
export function rowHashExpr(p: TablePlan): string {
  return `md5(row(${p.columns.map((c) => columnExpr(p, c)).join(", ")})::text)`;
}

export function whereClause(p: TablePlan, extra?: string): string {
  const parts = [p.where, extra].filter(Boolean);
  return parts.length ? `where ${parts.join(" and ")}` : "";
}
