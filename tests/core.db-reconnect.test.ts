// retryWhileUnreachable: a statement whose connection is killed under it (pg_terminate_backend, as a
// server restart would) is sent again on a fresh connection; other errors and the deadline are not retried.
import { spawn } from "node:child_process";
import { type AddressInfo, connect, createServer } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
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

// On every new connection postgres.js looks up array types in a promise no caller holds; a server
// that goes away right then (a restart) used to end the whole process, Deno or Node: the edge
// runtime with every function in it, or `npm start`. A proxy resets the client's first connection as
// that lookup goes out; the process must carry on and answer its next statement.
describe("a connection lost during postgres.js's type lookup on connect", () => {
  const root = fileURLToPath(new URL("..", import.meta.url));
  const fixture = join(root, "tests/fixtures/db-client-child.ts");
  const runtimes: [string, string, string[]][] = [
    ["Deno", join(root, "node_modules/.bin/deno"), ["run", "--allow-net", "--allow-env", "--allow-read", fixture]],
    ["Node", process.execPath, ["--import", "tsx", fixture]],
  ];
  for (const [name, cmd, args] of runtimes) {
    it(`${name}: the process stays up and its next statement is answered`, async () => {
      const upstream = new URL(db.url);
      let resets = 0;
      const proxy = createServer((client) => {
        const server = connect(Number(upstream.port || 5432), upstream.hostname);
        client.on("data", (d) => {
          if (resets === 0 && d.toString("latin1").includes("typarray")) {
            resets++;
            client.resetAndDestroy();
            server.destroy();
            return;
          }
          server.write(d);
        });
        server.on("data", (d) => client.write(d));
        for (const s of [client, server]) s.on("error", () => {});
        client.on("close", () => server.destroy());
        server.on("close", () => client.destroy());
      });
      await new Promise<void>((r) => proxy.listen(0, "127.0.0.1", () => r()));
      try {
        const via = new URL(db.url);
        via.hostname = "127.0.0.1";
        via.port = String((proxy.address() as AddressInfo).port);
        const child = spawn(cmd, args, {
          cwd: root,
          env: { ...process.env, DATABASE_URL: via.toString() },
          stdio: ["ignore", "pipe", "pipe"],
        });
        let out = "";
        child.stdout.on("data", (d) => (out += d));
        child.stderr.on("data", (d) => (out += d));
        const code = await new Promise<number | null>((r) => child.on("close", (c) => r(c)));
        expect(resets, out).toBe(1);
        expect(code, out).toBe(0);
        const answer = JSON.parse(out.split("\n").find((l) => l.startsWith("{"))!);
        expect(answer.second).toEqual([1, 2]);
        expect(out).toContain("database connection lost while connecting (ECONNRESET)");
      } finally {
        proxy.close();
      }
    }, 60_000);
  }
});
