// Runs SQL with the caller's rights, as PostgREST does: in one short transaction, `set local role` to
// the caller's role and the JWT's claims in request.jwt.claims, so auth.uid() and every RLS policy see
// the caller. The function's own connection is the database owner; without this it would see all.
import type postgres from "postgres";
import type { Caller } from "../core/auth.ts";

export type Tx = postgres.TransactionSql;

/** The database role a caller acts as (a fixed list: never a name taken from the request). */
function dbRole(caller: Caller): "service_role" | "authenticated" | "anon" {
  return caller.role;
}

/** Runs `fn` in a transaction that has the caller's role and claims. No network I/O belongs inside. */
export async function withCallerRights<T>(sql: postgres.Sql, caller: Caller, fn: (tx: Tx) => Promise<T>): Promise<T> {
  const claims = caller.claims ?? { role: caller.role };
  return await sql.begin(async (tx) => {
    // One round trip, as PostgREST does it: set_config('role', …, true) is SET LOCAL ROLE.
    await tx`select set_config('role', ${dbRole(caller)}, true), set_config('request.jwt.claims', ${
      JSON.stringify(claims)
    }, true)`;
    return await fn(tx);
  }) as T;
}
