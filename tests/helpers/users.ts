// Users for tests that do not go through sign-in: rows in auth.users (the platform's table, which
// conversations, feedback and client_memberships reference), so a JWT's sub is a real user as on a
// hosted project. Tests of sign-in itself use supabase-js against the local stack's Auth instead.
import type postgres from "postgres";

export async function createAuthUsers(sql: postgres.Sql, ids: string[]): Promise<void> {
  for (const id of ids) {
    await sql`insert into auth.users (id, aud, role, email, raw_user_meta_data, created_at, updated_at)
              values (${id}, 'authenticated', 'authenticated', ${`${id}@users.test`}, '{}', now(), now())
              on conflict (id) do nothing`;
  }
}
