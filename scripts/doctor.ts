// npm run doctor -- --env <name> [--json]: the health function's checks, run from this machine with
// only a database URL (<NAME>_DB_URL, or the local stack). Exits 1 when a check fails.
import { connectDb } from "../packages/core/db.ts";
import { runHealthChecks } from "../packages/ops/checks.ts";
import { formatReport, MIGRATIONS_DIR, parseArgs, resolveDbUrl } from "../packages/ops/cli.ts";
import { migrationVersionsIn } from "../packages/ops/migrations.ts";

let args;
let url: string;
try {
  args = parseArgs(process.argv.slice(2));
  url = resolveDbUrl(args.env);
} catch (e) {
  console.error(`doctor: ${(e as Error).message}`);
  process.exit(2);
}
const sql = connectDb(url, { max: 4, connect_timeout: 5 });
try {
  // The provider is the function's business: its secrets are checked here only when this shell has them.
  const hasEmbeddingEnv = Object.keys(process.env).some((k) => k.startsWith("EMBEDDING_") || k === "OPENAI_API_KEY");
  const report = await runHealthChecks(sql, {
    expectedMigrations: migrationVersionsIn(MIGRATIONS_DIR),
    embeddingEnv: hasEmbeddingEnv ? process.env : null,
  });
  console.log(args.json ? JSON.stringify(report, null, 2) : formatReport(report));
  process.exitCode = report.status === "fail" ? 1 : 0;
} finally {
  await sql.end({ timeout: 2 });
}
