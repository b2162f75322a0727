// The statements that write a table on the target, shared by push and restore. Foreign keys and
// triggers stay on (never session_replication_role = replica): the target's embedding-sync triggers
// see every promoted row, and a row that breaks a constraint fails the whole transaction.
import type postgres from "postgres";
import { quoteIdent } from "./catalog.ts";
import { type TablePlan, columnList, keyExpr } from "./tables.ts";

type Tx = postgres.TransactionSql | postgres.Sql;

/**
 * Inserts the rows of `fromSql` (a relation with the plan's columns); with `update`, a row whose key
 * exists is updated instead. Returns how many rows were inserted and updated.
 */
export async function upsertRows(tx: Tx, p: TablePlan, fromSql: string, onConflict: "update" | "nothing", params: unknown[] = []) {
  const cols = columnList(p);
  const nonKey = p.columns.filter((c) => !p.key.includes(c));
  const action = onConflict === "update" && nonKey.length
    ? `do update set ${nonKey.map((c) => `${quoteIdent(c)} = excluded.${quoteIdent(c)}`).join(", ")}`
    : "do nothing";
  const [r] = await tx.unsafe<{ inserted: number; updated: number }[]>(
    `with w as (
       insert into ${p.qualified} (${cols}) ${p.overriding ? "overriding system value" : ""}
       select ${cols} from ${fromSql}
       on conflict (${p.key.map(quoteIdent).join(", ")}) ${action}
       returning (xmax = 0) as ins)
     select (count(*) filter (where ins))::int as inserted, (count(*) filter (where not ins))::int as updated from w`,
    params as never[],
  );
  return r;
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
