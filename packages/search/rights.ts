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
    const role = dbRole(caller);
    // Identifiers cannot be bound: the role is one of three literals above.
    if (role === "service_role") await tx`set local role service_role`;
    else if (role === "authenticated") await tx`set local role authenticated`;
    else await tx`set local role anon`;
    await tx`select set_config('request.jwt.claims', ${JSON.stringify(claims)}, true)`;
    return await fn(tx);
  }) as T;
}
