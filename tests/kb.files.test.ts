// kb push --files between two local stacks (gateway + Storage) on two real databases: incremental
// copy (missing or changed by size/hash), resuming after a kill, deletes in replace mode only.
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { SupabaseClient } from "@supabase/supabase-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createNodeClient } from "../packages/connection/node-client.ts";
import type { LocalStack } from "../packages/local-stack/index.ts";
import { startTestStack } from "../packages/testkit/stack.ts";
import { useTestDatabase, waitFor } from "./helpers/db.ts";
import { runKb } from "./helpers/kb.ts";

const BUCKET = "kb-docs";
const OBJECTS = 300;
const dev = useTestDatabase();
const prod = useTestDatabase();
let devStack: LocalStack;
let prodStack: LocalStack;
let devClient: SupabaseClient;
let prodClient: SupabaseClient;
let env: Record<string, string>;
const backupDir = mkdtempSync(join(tmpdir(), "kb-files-backups-"));

async function objects(sql: typeof dev.sql) {
  return [
    ...await sql<{ name: string; size: string; etag: string }[]>`
    select name, metadata->>'size' as size, metadata->>'eTag' as etag from storage.objects where bucket_id = ${BUCKET} order by name`,
  ];
}

beforeAll(async () => {
  devStack = await startTestStack({ databaseUrl: dev.url });
  prodStack = await startTestStack({ databaseUrl: prod.url });
  for (const db of [dev, prod]) await db.sql`update cron.job set active = false`;
  devClient = createNodeClient(devStack.apiUrl, devStack.serviceRoleKey);
  prodClient = createNodeClient(prodStack.apiUrl, prodStack.serviceRoleKey);
  expect((await devClient.storage.createBucket(BUCKET, { public: false })).error).toBeNull();
  for (let i = 0; i < OBJECTS; i += 20) {
    await Promise.all(Array.from({ length: Math.min(20, OBJECTS - i) }, async (_, j) => {
      const { error } = await devClient.storage.from(BUCKET).upload(
        `docs/${String(i + j).padStart(4, "0")}.bin`,
        randomBytes(100_000),
        {
          contentType: "application/octet-stream",
        },
      );
      expect(error).toBeNull();
    }));
  }
  env = {
    DEV_DB_URL: dev.url,
    DEV_URL: devStack.apiUrl,
    DEV_SERVICE_ROLE_KEY: devStack.serviceRoleKey,
    PROD_DB_URL: prod.url,
    PROD_URL: prodStack.apiUrl,
    PROD_SECRET_KEY: prodStack.serviceRoleKey,
    KB_BACKUP_DIR: backupDir,
  };
}, 180_000);

afterAll(async () => {
  await devStack?.stop();
  await prodStack?.stop();
  rmSync(backupDir, { recursive: true, force: true });
});

// The tables are empty on both sides here (this file is about files): --allow-empty says so.
const push = (...extra: string[]) =>
  runKb(["push", "--from", "dev", "--to", "prod", "--allow-empty", "--files", BUCKET, ...extra], env);

describe("kb push --files", () => {
  it("--dry-run counts what it would copy and copies nothing", async () => {
    const r = await push("--dry-run");
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(
      `bucket ${BUCKET}: ${OBJECTS} objects in the source, ${OBJECTS} to copy (30.0 MB), 0 to delete, 0 unchanged`,
    );
    expect((await prodClient.storage.getBucket(BUCKET)).data).toBeNull();
    expect(await objects(prod.sql)).toHaveLength(0);
  });

  it("a killed run resumes: the second run copies only what is left", async () => {
    let pid = 0;
    const killed = runKb(
      ["push", "--from", "dev", "--to", "prod", "--allow-empty", "--files", BUCKET, "--mode", "overwrite"],
      env,
      {
        onSpawn: (p) => (pid = p),
      },
    );
    await waitFor("the first objects to be copied", async () => (await objects(prod.sql)).length >= 20, 60_000, 10);
    process.kill(-pid, "SIGKILL"); // tsx and its node child: the whole process group
    expect((await killed).code).not.toBe(0);
    const copiedBeforeKill = (await objects(prod.sql)).length;
    expect(copiedBeforeKill).toBeLessThan(OBJECTS);

    const r = await push("--mode", "overwrite");
    expect(r.code, r.stderr).toBe(0);
    const m = r.stdout.match(
      new RegExp(
        `bucket ${BUCKET}: ${OBJECTS} objects in the source, (\\d+) to copy .*, 0 to delete, (\\d+) unchanged`,
      ),
    );
    expect(m, r.stdout).not.toBeNull();
    const [toCopy, unchanged] = [Number(m![1]), Number(m![2])];
    // Whatever was complete before the kill is not copied again (an upload in flight may have landed since).
    expect(unchanged).toBeGreaterThanOrEqual(copiedBeforeKill);
    expect(toCopy + unchanged).toBe(OBJECTS);
    expect(r.stdout).toContain(`bucket ${BUCKET}: copied ${toCopy} objects, deleted 0, ${unchanged} unchanged`);
    expect(await objects(prod.sql)).toEqual(await objects(dev.sql));
    const a = await devClient.storage.from(BUCKET).download("docs/0123.bin");
    const b = await prodClient.storage.from(BUCKET).download("docs/0123.bin");
    expect(Buffer.from(await b.data!.arrayBuffer()).equals(Buffer.from(await a.data!.arrayBuffer()))).toBe(true);

    const again = await push("--mode", "overwrite");
    expect(again.stdout).toContain(`0 to copy (0 B), 0 to delete, ${OBJECTS} unchanged`);
  });

  it("copies an object changed by hash; deletes the target's extra objects in replace mode only", async () => {
    // Same size, other bytes: only the hash tells.
    expect((await devClient.storage.from(BUCKET).upload("docs/0007.bin", randomBytes(100_000), { upsert: true })).error)
      .toBeNull();
    expect((await prodClient.storage.from(BUCKET).upload("only-in-prod.txt", "stays unless replace")).error).toBeNull();

    const overwrite = await push("--mode", "overwrite");
    expect(overwrite.code, overwrite.stderr).toBe(0);
    expect(overwrite.stdout).toContain(`1 to copy (100.0 kB), 0 to delete, ${OBJECTS - 1} unchanged`);
    expect((await objects(prod.sql)).map((o) => o.name)).toContain("only-in-prod.txt");

    const replace = await push("--mode", "replace");
    expect(replace.code, replace.stderr).toBe(0);
    expect(replace.stdout).toContain(`0 to copy (0 B), 1 to delete, ${OBJECTS} unchanged`);
    expect(await objects(prod.sql)).toEqual(await objects(dev.sql));
  });

  it("`local` is the running local stack: its DB URL, API URL and key come from its state file", async () => {
    const localEnv = {
      PROD_DB_URL: prod.url,
      PROD_URL: prodStack.apiUrl,
      PROD_SECRET_KEY: prodStack.serviceRoleKey,
      LOCAL_STACK_DATA_DIR: devStack.dataDir,
      KB_BACKUP_DIR: backupDir,
    };
    const r = await runKb(
      ["push", "--from", "local", "--to", "prod", "--allow-empty", "--files", BUCKET, "--dry-run"],
      localEnv,
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(
      `bucket ${BUCKET}: ${OBJECTS} objects in the source, 0 to copy (0 B), 0 to delete, ${OBJECTS} unchanged`,
    );
    const s = await runKb(["status", "--env", "local"], localEnv);
    expect(s.code, s.stderr).toBe(0);
    expect(s.stdout).toContain(`environment "local": host 127.0.0.1, database ${new URL(dev.url).pathname.slice(1)}`);
    expect(s.stdout).not.toContain(devStack.serviceRoleKey);
  });

  it("an unknown bucket or a missing key is refused before anything is written", async () => {
    const a = await runKb(["push", "--from", "dev", "--to", "prod", "--allow-empty", "--files", "no-such-bucket"], env);
    expect([a.code, a.stderr]).toEqual([2, expect.stringContaining("unknown bucket in the source: no-such-bucket")]);
    const { PROD_SECRET_KEY: _, ...noKey } = env;
    const b = await runKb(["push", "--from", "dev", "--to", "prod", "--files", BUCKET], noKey);
    expect([b.code, b.stderr]).toEqual([
      2,
      expect.stringContaining("--files needs PROD_SECRET_KEY or PROD_SERVICE_ROLE_KEY"),
    ]);
  });
});
