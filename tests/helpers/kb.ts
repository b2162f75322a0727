// Runs `npm run kb`'s entry (scripts/kb.ts) as the operator would: a child process, environments
// given as <NAME>_DB_URL variables, backups in a throwaway directory.
import { spawn } from "node:child_process";
import { appendFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const repoRoot = fileURLToPath(new URL("../../", import.meta.url));
const tsx = `${repoRoot}node_modules/.bin/tsx`;

export interface KbRun {
  code: number;
  stdout: string;
  stderr: string;
}

export function runKb(
  args: string[],
  env: Record<string, string>,
  opts: { onSpawn?: (pid: number) => void } = {},
): Promise<KbRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(tsx, ["scripts/kb.ts", ...args], {
      cwd: repoRoot,
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", ...env },
      stdio: ["ignore", "pipe", "pipe"],
      detached: true, // its own process group, so a test can kill tsx and its node child together
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => {
      stdout += d;
      if (process.env.KB_TEST_LOG) appendFileSync(process.env.KB_TEST_LOG, d);
    });
    child.stderr.on("data", (d) => {
      stderr += d;
      if (process.env.KB_TEST_LOG) appendFileSync(process.env.KB_TEST_LOG, d);
    });
    child.on("error", reject);
    child.on("close", (code, signal) => resolve({ code: code ?? (signal ? 137 : -1), stdout, stderr }));
    if (child.pid) opts.onSpawn?.(child.pid);
  });
}
