import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import postgres from "postgres";

const root = fileURLToPath(new URL("../../", import.meta.url));
const bootstrapFile = fileURLToPath(new URL("./sql/platform-bootstrap.sql", import.meta.url));

/** Stand-ins for what hosted Supabase already has (roles, extensions, vault, storage, net, cron). */
export async function applyPlatformBootstrap(dbUrl: string): Promise<void> {
  const sql = postgres(dbUrl, { max: 1, onnotice: () => {} });
  try {
    await sql.unsafe(await readFile(bootstrapFile, "utf8"));
  } finally {
    await sql.end();
  }
}

/**
 * Applies supabase/migrations with the real Supabase CLI, which records each one in
 * supabase_migrations.schema_migrations exactly as on a hosted project; a second push is a no-op.
 */
export async function pushMigrations(dbUrl: string): Promise<string> {
  const bin = fileURLToPath(new URL("node_modules/.bin/supabase", `file://${root}`));
  return await new Promise((resolve, reject) => {
    const child = spawn(bin, ["db", "push", `--remote=${withSslDisabled(dbUrl)}`, "--yes", "--workdir", root], {
      cwd: root,
      env: { ...process.env, SUPABASE_TELEMETRY_DISABLED: "1", DO_NOT_TRACK: "1" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    child.on("error", reject);
    child.on(
      "close",
      (code) => code === 0 ? resolve(out) : reject(new Error(`supabase db push failed (exit ${code}):\n${out}`)),
    );
  });
}

export async function migrate(dbUrl: string): Promise<string> {
  await applyPlatformBootstrap(dbUrl);
  return await pushMigrations(dbUrl);
}

// The local servers speak no TLS; saying so up front avoids the CLI's TLS probe and warning.
function withSslDisabled(dbUrl: string): string {
  const u = new URL(dbUrl);
  if (!u.searchParams.has("sslmode")) u.searchParams.set("sslmode", "disable");
  return u.toString();
}
