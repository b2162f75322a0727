// retryWhileUnreachable: a statement whose connection is killed under it (pg_terminate_backend, as a
// server restart would) is sent again on a fresh connection; other errors and the deadline are not retried.
import postgres from "postgres";
import { afterAll, beforeAll, expect, it } from "vitest";
import { isConnectionLost, retryWhileUnreachable } from "../packages/core/db.ts";
import { useTestDatabase, waitFor } from "./helpers/db.ts";

const db = useTestDatabase();
let client: postgres.Sql;
beforeAll(() => {
  client = postgres(db.url, { max: 1, onnotice: () => {}, connection: { application_name: "reconnect_probe" } });
});
afterAll(async () => {
  await client?.end({ timeout: 2 });
});

// Only the sleeping statement: killed during postgres.js's own type lookup on connect, the error
// would surface as an unhandled rejection outside the retried call.
const terminateProbe = () =>
  db.sql`
  select pg_terminate_backend(pid) from pg_stat_activity
  where application_name = 'reconnect_probe' and state = 'active' and query like '%pg_sleep(%'`;

it("sends a statement again after its backend was terminated, and it then completes", async () => {
  let tries = 0;
  const run = retryWhileUnreachable(async () => {
    tries++;
    const [r] = await client<{ v: number }[]>`select 42 as v, pg_sleep(case when ${tries} = 1 then 30 else 0 end)`;
    return r.v;
  }, Date.now() + 20_000);
  await waitFor("the first try to run", async () => (await terminateProbe()).length > 0, 10_000);
  expect(await run).toBe(42);
  expect(tries).toBeGreaterThanOrEqual(2); // the first try died; a later one answered
});

it("does not retry a statement that failed on its own merits", async () => {
  let tries = 0;
  const err = await retryWhileUnreachable(() => {
    tries++;
    return client`select 1/0`;
  }, Date.now() + 20_000).catch((e) => e);
  expect(err.code).toBe("22012");
  expect(isConnectionLost(err)).toBe(false);
  expect(tries).toBe(1);
});

it("gives up at the deadline with the connection error", async () => {
  const dead = postgres("postgres://postgres:postgres@127.0.0.1:1/none", {
    max: 1,
    connect_timeout: 1,
    onnotice: () => {},
  });
  const t0 = Date.now();
  const err = await retryWhileUnreachable(() => dead`select 1`, Date.now() + 1_500).catch((e) => e);
  expect(isConnectionLost(err)).toBe(true);
  expect(Date.now() - t0).toBeLessThan(10_000);
  await dead.end({ timeout: 1 });
});
