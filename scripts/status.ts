// npm run status: the running local stack's KEY=value lines, like `supabase status -o env`, read
// from the state file it writes in .local/. Exit code 1 (and the reason on stderr) when not running.
import { localDataDir, readState } from "../packages/connection/stack-state.ts";

const dataDir = localDataDir();
const { state, reason } = readState(dataDir);
if (!state) {
  console.error(`Local stack is NOT running: ${reason}`);
  process.exit(1);
}
const lines: Record<string, string | number> = {
  API_URL: state.apiUrl,
  FUNCTIONS_URL: `${state.apiUrl}/functions/v1`,
  STORAGE_URL: `${state.apiUrl}/storage/v1`,
  DB_URL: state.dbUrl,
  DATABASE: state.database,
  ANON_KEY: state.anonKey,
  SERVICE_ROLE_KEY: state.serviceRoleKey,
  PUBLISHABLE_KEY: state.publishableKey,
  SECRET_KEY: state.secretKey,
  KEYS: "local-only",
  FUNCTIONS: state.functions.join(","),
  PG_NET: state.pgNet,
  PG_CRON: state.pgCron,
  ...state.extra,
  PID: state.pid,
  STARTUP_MS: state.startupMs,
};
for (const [k, v] of Object.entries(lines)) {
  // Quoted like `supabase status -o env`, so the output can be sourced by a shell.
  console.log(`${k}=${JSON.stringify(String(v))}`);
}
