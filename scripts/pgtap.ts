// Runs supabase/tests/*.sql with pg_prove against a fresh clone of the migrated template; given file
// arguments (npx tsx scripts/pgtap.ts supabase/tests/140_embedding_segments.test.sql), only those.
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { basename } from "node:path";
import postgres from "postgres";
import { cloneTemplate, ensureTestServer, prepareTemplate } from "../packages/testkit/testbed.ts";

const adminUrl = await ensureTestServer((m) => console.error(`[testbed] ${m}`));
if (!process.env.TEST_TEMPLATE_READY) await prepareTemplate(adminUrl);
const all = readdirSync("supabase/tests").filter((f) => f.endsWith(".sql")).sort().map((f) => `supabase/tests/${f}`);
const asked = process.argv.slice(2).map((a) => `supabase/tests/${basename(a)}`);
const unknown = asked.filter((f) => !all.includes(f));
if (unknown.length > 0) {
  console.error(`no such pgTAP file: ${unknown.join(", ")} (the files are in supabase/tests)`);
  process.exit(2);
}
const files = asked.length > 0 ? asked : all;
if (files.length === 0) {
  console.error("no pgTAP files in supabase/tests");
  process.exit(1);
}
const db = await cloneTemplate(adminUrl, "pgtap");
let status = 1;
try {
  const sql = postgres(db.url, { max: 1, onnotice: () => {} });
  await sql`create extension if not exists pgtap with schema extensions`;
  await sql.end();
  const u = new URL(db.url);
  const r = spawnSync("pg_prove", ["--failures", "--comments", ...files], {
    stdio: "inherit",
    env: {
      ...process.env,
      PGHOST: u.hostname,
      PGPORT: u.port || "5432",
      PGUSER: decodeURIComponent(u.username),
      PGPASSWORD: decodeURIComponent(u.password),
      PGDATABASE: db.name,
    },
  });
  status = r.status ?? 1;
} finally {
  await db.drop();
}
process.exit(status);
