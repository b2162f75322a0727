// The running local stack's state file (<dataDir>/stack.json, gitignored, mode 0600): the stack
// writes it; `npm run status`, and `kb` or `doctor` asked for the environment "local", read it. It
// lives apart from the stack so that tools which run against a real project never import the stack
// itself. It is removed on a clean stop; a stale one (its process gone) is reported as "not running".
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const repoRoot = fileURLToPath(new URL("../../", import.meta.url));

/** Where `npm start` keeps its data and state file: LOCAL_STACK_DATA_DIR, else .local/ in the repository. */
export function localDataDir(env: Record<string, string | undefined> = process.env): string {
  return env.LOCAL_STACK_DATA_DIR || join(repoRoot, ".local");
}

export interface StackState {
  pid: number;
  startedAt: string;
  startupMs: number;
  apiUrl: string;
  dbUrl: string;
  anonKey: string;
  serviceRoleKey: string;
  publishableKey: string;
  secretKey: string;
  functionsPid: number;
  functions: string[];
  functionsFailed: Record<string, string>;
  database: "pglite" | "postgres";
  pgNet: string;
  pgCron: string;
  storageRoot: string;
  extra: Record<string, string>;
}

export function stateFile(dataDir: string): string {
  return join(dataDir, "stack.json");
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** The state of a running stack, or null (with the reason) when none is running. */
export function readState(dataDir: string): { state: StackState | null; reason?: string } {
  const file = stateFile(dataDir);
  if (!existsSync(file)) {
    return { state: null, reason: `no ${file}: the local stack is not running (start it with npm start)` };
  }
  let state: StackState;
  try {
    state = JSON.parse(readFileSync(file, "utf8"));
  } catch {
    return { state: null, reason: `${file} is unreadable` };
  }
  if (!processAlive(state.pid)) {
    return { state: null, reason: `the stack that wrote ${file} (pid ${state.pid}) is no longer running` };
  }
  return { state };
}
