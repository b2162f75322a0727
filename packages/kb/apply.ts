// The statements that write a table on the target, shared by push and restore. Foreign keys and
// triggers stay on (never session_replication_role = replica): the target's embedding-sync triggers
// see every promoted row, and a row that breaks a constraint fails the whole transaction.
import type postgres from "postgres";
import { quoteIdent } from "./catalog.ts";
import { columnList, keyExpr, type TablePlan } from "./tables.ts";

type Tx = postgres.TransactionSql | postgres.Sql;

/**
 * Inserts the rows of `fromSql` (a relation with the plan's columns); with `update`, a row whose key
 * exists is updated instead. Returns how many rows were inserted and updated.
 */
export async function upsertRows(
  tx: Tx,
  p: TablePlan,
  fromSql: string,
  onConflict: "update" | "nothing",
  params: unknown[] = [],
) {
  const cols = columnList(p);
  // An identity ALWAYS column can only be set on insert (a restore writes back the target's own ids).
  const nonKey = p.columns.filter((c) => !p.key.includes(c) && c !== p.surrogate);
  if (p.isChunks) return upsertChunks(tx, p, fromSql, onConflict === "update" ? nonKey : [], params);
  const action = onConflict === "update" && nonKey.length
    ? `do update set ${nonKey.map((c) => `${quoteIdent(c)} = excluded.${quoteIdent(c)}`).join(", ")}`
    : "do nothing";
  const [r] = await tx.unsafe<{ inserted: number; updated: number }[]>(
    `with w as (
       insert into ${p.qualified} (${cols}) ${p.overriding ? "overriding system value" : ""}
       select ${cols} from ${fromSql} s
       on conflict (${p.key.map(quoteIdent).join(", ")}) ${action}
       returning (xmax = 0) as ins)
     select (count(*) filter (where ins))::int as inserted, (count(*) filter (where not ins))::int as updated from w`,
    params as never[],
  );
  return r;
}

// documentation_embeddings is partitioned by segment: it has no unique key on (source_table, source_id,
// chunk_index) for ON CONFLICT, and a partitioned table has no xmax to tell inserts from updates. So
// matched chunks are updated where they are, and the others inserted (into segment 0).
async function upsertChunks(tx: Tx, p: TablePlan, fromSql: string, update: string[], params: unknown[]) {
  const match = p.key.map((k) => `r.${quoteIdent(k)} = s.${quoteIdent(k)}`).join(" and ");
  const updated = update.length
    ? `update ${p.qualified} r set ${update.map((c) => `${quoteIdent(c)} = s.${quoteIdent(c)}`).join(", ")}
       from ${fromSql} s where ${match} returning 1`
    : "select 1 where false";
  const [r] = await tx.unsafe<{ inserted: number; updated: number }[]>(
    `with u as (${updated}),
     i as (insert into ${p.qualified} (${columnList(p)})
           select ${columnList(p, "s.")} from ${fromSql} s
           where not exists (select from ${p.qualified} r where ${match})
           returning 1)
     select (select count(*) from i)::int as inserted, (select count(*) from u)::int as updated`,
    params as never[],
  );
  return r;
}

/**
 * A source row's chunks live in one segment (search finds each chunk once per row, and the worker
 * relies on it). Copied chunks land in segment 0, so a row that now has chunks in segment 0 and in a
 * bulk segment is moved to segment 0 whole. Only the bulk segments are scanned (they are small).
 */
export async function keepChunksInOneSegment(tx: Tx): Promise<void> {
  await tx.unsafe(
    `update public.documentation_embeddings d set segment = 0
     from (select distinct b.source_table, b.source_id from public.documentation_embeddings b
           where b.segment <> 0
             and exists (select from public.documentation_embeddings z
                         where z.segment = 0 and z.source_table = b.source_table and z.source_id = b.source_id)) m
     where d.segment <> 0 and d.source_table = m.source_table and d.source_id = m.source_id`,
  );
}

export async function deleteRows(tx: Tx, p: TablePlan, keys: string[]): Promise<number> {
  if (!keys.length) return 0;
  const res = await tx.unsafe(`delete from ${p.qualified} r where ${keyExpr(p)} = any ($1::text[])`, [keys] as never[]);
  return res.count;
}

/** Serial/identity values were written explicitly: move their sequences past them (never back). */
export async function bumpSequences(tx: Tx, p: TablePlan): Promise<void> {
  for (const c of p.sequenceColumns) {
    await tx.unsafe(
      `select setval(s.seq, x.m)
       from (select pg_get_serial_sequence($1, $2)::regclass as seq) s,
            (select max(${quoteIdent(c)}) as m from ${p.qualified}) x
       where x.m is not null and x.m > coalesce(pg_sequence_last_value(s.seq), 0)`,
      [p.qualified, c] as never[],
    );
  }
}

export async function lockTables(tx: Tx, plans: TablePlan[]): Promise<void> {
  await tx.unsafe(`set local lock_timeout = '30s'`);
  await tx.unsafe(`set local statement_timeout = 0`);
  // EXCLUSIVE: readers go on, writers wait until the push commits or rolls back.
  if (plans.length) await tx.unsafe(`lock table ${plans.map((p) => p.qualified).join(", ")} in exclusive mode`);
}
