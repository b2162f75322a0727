// For tests: a local stack on free ports against a given (already migrated) test database, with its
// own throwaway data dir, serving either the real functions or a fixtures directory.
import { mkdtempSync } from "node:fs";
import { rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type LocalStack, type LocalStackOptions, startLocalStack } from "../local-stack/index.ts";

export const FIXTURE_FUNCTIONS_DIR = fileURLToPath(new URL("../../tests/fixtures/functions", import.meta.url));
export const FIXTURE_CONFIG = fileURLToPath(new URL("../../tests/fixtures/config.toml", import.meta.url));

export async function startTestStack(opts: LocalStackOptions = {}): Promise<LocalStack> {
  const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), "local-stack-"));
  const lines: string[] = [];
  const stack = await startLocalStack({
    port: 0,
    migrate: false,
    log: (l) => {
      lines.push(l);
      if (process.env.LOCAL_STACK_DEBUG) console.error(l);
    },
    ...opts,
    dataDir,
  });
  const stop = stack.stop;
  // Mutated rather than spread: functionsPid is a live getter.
  stack.stop = async () => {
    await stop();
    if (!opts.dataDir) await rm(dataDir, { recursive: true, force: true });
  };
  return stack;
}
