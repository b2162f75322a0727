// The "Using supabase-js from Node against the local stack" snippet of docs/local-stack.md, exactly as written there,
// run by plain Node (ESM, no tsx) against a running stack.
import { execFile } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createNodeClient } from "../packages/connection/node-client.ts";
import { FIXTURE_CONFIG, FIXTURE_FUNCTIONS_DIR, startTestStack } from "../packages/testkit/stack.ts";
import type { LocalStack } from "../packages/local-stack/index.ts";
import { useTestDatabase } from "./helpers/db.ts";

const repo = fileURLToPath(new URL("..", import.meta.url));
const db = useTestDatabase();
let stack: LocalStack;

beforeAll(async () => {
  stack = await startTestStack({
    databaseUrl: db.url,
    functionsDir: FIXTURE_FUNCTIONS_DIR,
    configFile: FIXTURE_CONFIG,
  });
}, 60_000);
afterAll(async () => {
  await stack?.stop();
});

function docSnippet(): string {
  const page = readFileSync(join(repo, "docs", "local-stack.md"), "utf8");
  const section = page.split("## Using supabase-js from Node against the local stack")[1];
  const m = section ? /```js\n([\s\S]*?)```/.exec(section) : null;
  if (!m) {
    throw new Error(
      "docs/local-stack.md has no js snippet under 'Using supabase-js from Node against the local stack'",
    );
  }
  return m[1];
}

describe("docs/local-stack.md: supabase-js from plain Node", () => {
  it("the snippet runs as a plain .mjs file and reaches the local stack", async () => {
    const admin = createNodeClient(stack.apiUrl, stack.serviceRoleKey).storage;
    expect((await admin.createBucket("readme-check", { public: false })).error).toBeNull();
    // Inside the repository so that `import '@supabase/supabase-js'` resolves from node_modules.
    const dir = join(repo, "node_modules", ".cache", "readme-snippets");
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `local-client-${process.pid}.mjs`);
    writeFileSync(file, docSnippet());
    const { stdout } = await promisify(execFile)(process.execPath, [file], {
      cwd: repo,
      env: { PATH: process.env.PATH ?? "", API_URL: stack.apiUrl, SERVICE_ROLE_KEY: stack.serviceRoleKey },
      timeout: 30_000,
    });
    expect(stdout).toContain("readme-check");
  });
});
