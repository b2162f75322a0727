// What `kb` knows about a database: connection settings that make row text identical on both sides,
// our migrations, the environment label, and each table's columns, key and foreign keys.
import postgres from "postgres";
import { KbError } from "./env.ts";

export type Sql = postgres.Sql;
/** A pool, a transaction or a reserved connection: anything that runs a query. */
export type AnySql = postgres.Sql | postgres.TransactionSql | postgres.ReservedSql;

/**
 * A client whose text output does not depend on the server's or the session's defaults: row hashes
 * (md5 of the row's text) are compared across two servers, so time zone, date style and float
 * digits are pinned.
 */
export function connectKb(url: string, max = 4): Sql {
  const pooled = new URL(url).port === "6543";
  return postgres(url, {
    max,
    prepare: !pooled,
    onnotice: () => {},
    connect_timeout: 10,
    connection: {
      application_name: "kb",
      TimeZone: "UTC",
      DateStyle: "ISO, MDY",
      IntervalStyle: "postgres",
      extra_float_digits: "1",
    },
  });
}

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

export function quoteLiteral(value: string): string {
  if (value.includes("\0")) throw new KbError("a key contains a NUL byte");
  return `'${value.replace(/'/g, "''")}'`;
}

/** A text[] literal for keys sent inside COPY, which takes no bind parameters. */
export function textArrayLiteral(values: string[]): string {
  return `${
    quoteLiteral(`{${values.map((v) => `"${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`).join(",")}}`)
  }::text[]`;
}

/** Does this database have this project's migrations (the embedding tables and kb_sync_log)? */
export async function checkMigrations(sql: Sql, side: string): Promise<void> {
  const [r] = await sql<{ sources: boolean; chunks: boolean; log: boolean }[]>`
    select to_regclass('public.embedding_sources') is not null as sources,
           to_regclass('public.documentation_embeddings') is not null as chunks,
           to_regclass('public.kb_sync_log') is not null as log`;
  const missing = [!r.sources && "embedding_sources", !r.chunks && "documentation_embeddings", !r.log && "kb_sync_log"]
    .filter(Boolean);
  if (missing.length) {
    throw new KbError(
      `${side} does not have this project's migrations (missing ${
        missing.join(", ")
      }): run npm run db:migrate or supabase db push on it first`,
    );
  }
}

/** public.environment_label() (migration 20260101001600_ops) when the target has it, else null (an older project). */
export async function environmentLabel(sql: Sql): Promise<string | null> {
  const [r] = await sql<{ has: boolean }[]>`select to_regprocedure('public.environment_label()') is not null as has`;
  if (!r.has) return null;
  const [l] = await sql<{ label: string | null }[]>`select public.environment_label() as label`;
  return l.label ?? null;
}

export interface ColumnInfo {
  name: string;
  type: string;
  generated: boolean;
  identityAlways: boolean;
  /** Backed by a sequence (serial or identity): bumped after explicit values are written. */
  sequence: boolean;
  /** Could hold a credential: its base type (domains, arrays and citext resolved) is text-like. */
  textLike: boolean;
  /** json or jsonb (at its base): its keys are inspected too. */
  json: boolean;
  /** An integer at its base: could be an id. */
  integer: boolean;
}

export interface ForeignKey {
  columns: string[];
  /** The referenced table, named like TableInfo.name. */
  parent: string;
  parentColumns: string[];
}

export interface TableInfo {
  /** As embedding_sources names it: bare in public, else schema.table. */
  name: string;
  /** schema-qualified, quoted: safe to splice into SQL. */
  qualified: string;
  columns: ColumnInfo[];
  primaryKey: string[];
  /** NOT NULL unique indexes other than the primary key (column lists). */
  uniqueKeys: string[][];
  /** Tables this one references (their names), self-references left out. */
  parents: string[];
  /** Every foreign key, self-references included. */
  foreignKeys: ForeignKey[];
}

const tableName = /^(?:([a-z_][a-z0-9_]{0,62})\.)?([a-z_][a-z0-9_]{0,62})$/;
// Never read: the platform's own schemas (vault holds secrets) and this project's private one.
const forbiddenSchemas = new Set([
  "vault",
  "auth",
  "storage",
  "net",
  "cron",
  "private",
  "extensions",
  "pg_catalog",
  "information_schema",
  "supabase_functions",
  "supabase_migrations",
  "realtime",
  "graphql",
  "pgsodium",
]);

export function normalizeTableName(input: string): string {
  const m = input.trim().toLowerCase().match(tableName);
  if (!m) throw new KbError(`"${input}" is not a table name ([schema.]table, lower case)`);
  const schema = m[1] ?? "public";
  if (forbiddenSchemas.has(schema) || schema.startsWith("pg_")) {
    throw new KbError(`kb does not copy tables of schema ${schema}`);
  }
  return schema === "public" ? m[2] : `${schema}.${m[2]}`;
}

/** The table, or null when this database has no such table. */
export async function describeTable(sql: Sql, name: string): Promise<TableInfo | null> {
  const norm = normalizeTableName(name);
  const [schema, rel] = norm.includes(".") ? norm.split(".") : ["public", norm];
  const [t] = await sql<{ oid: number }[]>`
    select c.oid::int as oid from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = ${schema} and c.relname = ${rel} and c.relkind in ('r', 'p')`;
  if (!t) return null;
  // A domain, an array or a domain over an array hides its base type: resolve it (10 levels at most),
  // so that a domain over text counts as text when looking for credentials.
  const columns = await sql<
    {
      name: string;
      type: string;
      generated: boolean;
      identity_always: boolean;
      seq: boolean;
      base: string;
      category: string;
    }[]
  >`
    select a.attname::text as name, format_type(a.atttypid, a.atttypmod) as type,
           a.attgenerated <> '' as generated, a.attidentity = 'a' as identity_always,
           pg_get_serial_sequence(${`${quoteIdent(schema)}.${quoteIdent(rel)}`}, a.attname) is not null as seq,
           bt.typname::text as base, bt.typcategory::text as category
    from pg_attribute a
    cross join lateral (
      with recursive t(oid, lvl) as (
        select a.atttypid, 0
        union all
        select case when ty.typtype = 'd' then ty.typbasetype else ty.typelem end, t.lvl + 1
        from t join pg_type ty on ty.oid = t.oid
        where (ty.typtype = 'd' or (ty.typcategory = 'A' and ty.typelem <> 0)) and t.lvl < 10)
      select ty.typname, ty.typcategory from t join pg_type ty on ty.oid = t.oid order by t.lvl desc limit 1) bt
    where a.attrelid = ${t.oid} and a.attnum > 0 and not a.attisdropped
    order by a.attnum`;
  const indexes = await sql<{ primary: boolean; cols: string[]; all_not_null: boolean }[]>`
    select i.indisprimary as primary,
           array(select a.attname::text from unnest(i.indkey) with ordinality k(attnum, ord)
                 join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum order by k.ord) as cols,
           bool_and(a2.attnotnull) as all_not_null
    from pg_index i join pg_attribute a2 on a2.attrelid = i.indrelid and a2.attnum = any (i.indkey)
    where i.indrelid = ${t.oid} and i.indisunique and i.indpred is null and i.indexprs is null
    group by i.indexrelid, i.indisprimary, i.indkey, i.indrelid
    order by i.indisprimary desc, i.indexrelid`;
  const fks = await sql<{ parent: string; cols: string[]; parent_cols: string[] }[]>`
    select case when n.nspname = 'public' then c.relname::text else n.nspname || '.' || c.relname end as parent,
           array(select a.attname::text from unnest(f.conkey) with ordinality k(attnum, ord)
                 join pg_attribute a on a.attrelid = f.conrelid and a.attnum = k.attnum order by k.ord) as cols,
           array(select a.attname::text from unnest(f.confkey) with ordinality k(attnum, ord)
                 join pg_attribute a on a.attrelid = f.confrelid and a.attnum = k.attnum order by k.ord) as parent_cols
    from pg_constraint f join pg_class c on c.oid = f.confrelid join pg_namespace n on n.oid = c.relnamespace
    where f.conrelid = ${t.oid} and f.contype = 'f'
    order by f.conname`;
  return {
    name: norm,
    qualified: `${quoteIdent(schema)}.${quoteIdent(rel)}`,
    columns: columns.map((c) => ({
      name: c.name,
      type: c.type,
      generated: c.generated,
      identityAlways: c.identity_always,
      sequence: c.seq,
      textLike: c.category === "S" || ["json", "jsonb", "bytea", "xml", "citext"].includes(c.base),
      json: c.base === "json" || c.base === "jsonb",
      integer: ["int2", "int4", "int8"].includes(c.base),
    })),
    primaryKey: indexes.find((i) => i.primary)?.cols ?? [],
    uniqueKeys: indexes.filter((i) => !i.primary && i.all_not_null).map((i) => i.cols),
    parents: [...new Set(fks.map((f) => f.parent).filter((p) => p !== norm))],
    foreignKeys: fks.map((f) => ({ columns: f.cols, parent: f.parent, parentColumns: f.parent_cols })),
  };
}

/**
 * The target has every migration the source has (supabase_migrations.schema_migrations, as the
 * Supabase CLI records them): rows shaped by a migration the target lacks may not fit it, and the
 * target's own rules (triggers, sync functions) would be older than the source's.
 */
export async function checkMigrationVersions(src: Sql, tgt: Sql, targetName: string): Promise<void> {
  const read = async (sql: Sql) => {
    const [r] = await sql<
      { has: boolean }[]
    >`select to_regclass('supabase_migrations.schema_migrations') is not null as has`;
    if (!r.has) return null;
    return await sql<
      { version: string; name: string | null }[]
    >`select version, name from supabase_migrations.schema_migrations order by version`;
  };
  const [s, t] = await Promise.all([read(src), read(tgt)]);
  if (!s?.length) return;
  const have = new Set((t ?? []).map((r) => r.version));
  const missing = s.filter((r) => !have.has(r.version));
  if (missing.length) {
    throw new KbError(
      `target "${targetName}" lacks ${missing.length} migration${missing.length > 1 ? "s" : ""} the source has: ` +
        `${
          missing.map((m) => `${m.version}${m.name ? `_${m.name}` : ""}`).join(", ")
        }. Apply them there first (supabase db push or npm run db:migrate).`,
    );
  }
}
