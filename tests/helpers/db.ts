import { afterAll, beforeAll, inject } from "vitest";
import postgres from "postgres";
import { cloneTemplate } from "../../packages/testkit/testbed.ts";

export interface TestDatabase {
  /** postgres:// URL of this test file's own database. */
  url: string;
  /** A postgres.js client on it (closed after the file). */
  sql: postgres.Sql;
}

/**
 * Gives the calling test file its own database, cloned from the migrated template, dropped after.
 * Use at the top level of a test file: `const db = useTestDatabase();` then `db.sql` inside tests.
 */
export function useTestDatabase(): TestDatabase {
  const handle = {} as TestDatabase;
  let drop: (() => Promise<void>) | undefined;
  beforeAll(async () => {
    const clone = await cloneTemplate(inject("adminUrl"));
    drop = clone.drop;
    handle.url = clone.url;
    handle.sql = postgres(clone.url, { max: 10, onnotice: () => {} });
  }, 60_000);
  afterAll(async () => {
    await handle.sql?.end({ timeout: 5 });
    await drop?.();
  }, 60_000);
  return handle;
}

/** Polls `check` until it returns a truthy value or the deadline passes (then throws with `what`). */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined | null | false>,
  timeoutMs = 15_000,
  intervalMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${last}` : ""}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
