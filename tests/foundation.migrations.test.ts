import { readdirSync } from "node:fs";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { migrate } from "../packages/local-stack/migrate.ts";
import { databaseUrl } from "../packages/testkit/testbed.ts";

// A fresh, empty database (not the template): this test is about how migrations get there.
const name = `mig_${Date.now().toString(36)}`;
let admin: postgres.Sql;
let sql: postgres.Sql;
let url: string;

beforeAll(async () => {
  const adminUrl = inject("adminUrl");
  admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database ${name}`);
  url = databaseUrl(adminUrl, name);
  sql = postgres(url, { max: 2, onnotice: () => {} });
});

afterAll(async () => {
  await sql?.end();
  await admin?.unsafe(`drop database if exists ${name} with (force)`);
  await admin?.end();
});

async function schemaSnapshot() {
  return await sql`
    select n.nspname || '.' || c.relname || ':' || c.relkind::text as obj
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast')
    union all
    select n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'
    from pg_proc p join pg_namespace n on n.oid = p.pronamespace
    where n.nspname not in ('pg_catalog', 'information_schema')
    order by 1`;
}

describe("migrations through the Supabase CLI", () => {
  const files = readdirSync("supabase/migrations").filter((f) => f.endsWith(".sql")).sort();

  it("applies every migration and tracks each in supabase_migrations.schema_migrations", async () => {
    const out = await migrate(url);
    // The CLI is driven with its supported flags: no deprecation notice reaches the user.
    expect(out).not.toMatch(/deprecated/i);
    const tracked = await sql<{ version: string; name: string }[]>`
      select version, name from supabase_migrations.schema_migrations order by version`;
    expect(tracked.map((r) => `${r.version}_${r.name}.sql`)).toEqual(files);
  });

  it("a second db:migrate changes nothing", async () => {
    const before = await schemaSnapshot();
    const [{ count: trackedBefore }] =
      await sql`select count(*)::int as count from supabase_migrations.schema_migrations`;
    const out = await migrate(url);
    expect(out).toMatch(/up to date/i);
    expect(await schemaSnapshot()).toEqual(before);
    const [{ count: trackedAfter }] =
      await sql`select count(*)::int as count from supabase_migrations.schema_migrations`;
    expect(trackedAfter).toBe(trackedBefore);
  });
});
