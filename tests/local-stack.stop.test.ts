// Stopping `npm start` the ways a user does: Ctrl-C or `kill` on the whole process group (which npm
// also forwards to its child, so the stack sees the signal twice), and a second signal well after
// the first. Against this file's test database (DATABASE_URL) to keep the start quick.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { processAlive } from "../packages/connection/stack-state.ts";
import { useTestDatabase, waitFor } from "./helpers/db.ts";

const db = useTestDatabase();
/** What docs/local-stack.md promises for a stop. */
const STOP_WITHIN_MS = 10_000;
const started: { child: ChildProcess; dataDir: string }[] = [];

afterEach(async () => {
  for (const { child, dataDir } of started.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch { /* already gone */ }
    }
    await rm(dataDir, { recursive: true, force: true });
  }
});

/** `npm start` (or the script alone) in its own process group, until it says it is running. */
async function start(viaNpm: boolean): Promise<{ child: ChildProcess; output: () => string; functionsPid: number }> {
  const dataDir = mkdtempSync(join(tmpdir(), "local-stack-stop-"));
  const env: Record<string, string | undefined> = {
    ...process.env,
    DATABASE_URL: db.url,
    API_PORT: "0",
    LOCAL_STACK_DATA_DIR: dataDir,
    LOCAL_STACK_DEMO: "0",
  };
  delete env.OPENAI_API_KEY;
  delete env.PISTE_CLIENT_ID;
  const [cmd, args] = viaNpm
    ? ["npm", ["start", "--silent"]]
    : [process.execPath, ["--import", "tsx", "scripts/start.ts"]];
  const child = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "pipe"], detached: true });
  started.push({ child, dataDir });
  let out = "";
  child.stdout!.on("data", (d) => (out += d));
  child.stderr!.on("data", (d) => (out += d));
  await waitFor(
    "the stack to be running",
    () => Promise.resolve(out.includes("Running. Ctrl-C to stop.")),
    90_000,
    200,
  );
  return { child, output: () => out, functionsPid: Number(/pid (\d+)\)/.exec(out)![1]) };
}

function groupGone(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return false;
  } catch {
    return true;
  }
}

describe("stopping npm start", () => {
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    it(
      `${signal} to the process group stops cleanly within ${STOP_WITHIN_MS / 1000} s, every process gone`,
      async () => {
        const { child, output, functionsPid } = await start(true);
        const t0 = Date.now();
        process.kill(-child.pid!, signal);
        await waitFor(
          "every process of the group to exit",
          () => Promise.resolve(groupGone(child.pid!)),
          STOP_WITHIN_MS,
          50,
        );
        expect(Date.now() - t0).toBeLessThan(STOP_WITHIN_MS);
        expect(output()).toMatch(/stopped \(database, gateway, functions, pg_net sender, cron ticker\) in [\d.]+ s/);
        expect(output()).not.toContain("forced exit");
        expect(processAlive(functionsPid)).toBe(false);
      },
      120_000,
    );
  }

  it("a second signal 100 ms after the first is the same stop, not a forced exit", async () => {
    const first = await start(false);
    // Read from the child's own record once it is gone: an exit before the signals (or within the
    // 100 ms) is then seen as well, where an "exit" listener added late would wait forever.
    const exitCode = () => first.child.exitCode ?? (first.child.signalCode ? -1 : undefined);
    // As a launcher forwarding the group's signal does, 100 ms apart.
    first.child.kill("SIGTERM");
    await new Promise((r) => setTimeout(r, 100));
    first.child.kill("SIGTERM");
    const code = await waitFor("the stack to exit", () => Promise.resolve(exitCode() !== undefined), STOP_WITHIN_MS * 2)
      .then(() => exitCode())
      .catch((e) => {
        throw new Error(`${e.message}; its output:\n${first.output()}`);
      });
    expect(first.output()).not.toContain("forced exit");
    expect(code, first.output()).toBe(0);
  }, 120_000);
});
