// Runs supabase/tests/*.sql with pg_prove against a fresh clone of the migrated template.
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import postgres from "postgres";
import { cloneTemplate, ensureTestServer, prepareTemplate } from "../packages/testkit/testbed.ts";

const adminUrl = await ensureTestServer((m) => console.error(`[testbed] ${m}`));
if (!process.env.TEST_TEMPLATE_READY) await prepareTemplate(adminUrl);
const files = readdirSync("supabase/tests").filter((f) => f.endsWith(".sql")).sort().map((f) => `supabase/tests/${f}`);
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
