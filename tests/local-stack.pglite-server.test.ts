// The PGlite wire-protocol multiplexer: many clients on one backend without clobbering each other's
// extended-protocol state, transactions kept to their client, a vanished client rolled back.
import { connect, type Socket } from "node:net";
import { PGlite } from "@electric-sql/pglite";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pristineCluster } from "../packages/local-stack/pglite.ts";
import { type PGliteServer, servePGlite } from "../packages/local-stack/pglite-server.ts";

let db: PGlite;
let server: PGliteServer;
let url: string;
const clients: postgres.Sql[] = [];
const client = (max = 1) => {
  const c = postgres(url, { max, onnotice: () => {} });
  clients.push(c);
  return c;
};

beforeAll(async () => {
  db = await PGlite.create({ loadDataDir: await pristineCluster() }); // in memory, initdb skipped
  server = await servePGlite(db, "127.0.0.1", 0, { idleInTransactionMs: 1500 });
  url = `postgres://postgres:postgres@127.0.0.1:${server.port}/postgres`;
}, 60_000);
afterAll(async () => {
  await Promise.all(clients.map((c) => c.end({ timeout: 1 })));
  await server?.stop();
  await db?.close();
});

describe("PGlite server", () => {
  it("keeps concurrent clients' queries, errors and transactions apart", async () => {
    await client()`create table mux (c int, i int)`;
    let wrong = 0;
    await Promise.all([0, 1, 2, 3, 4, 5].map(async (c) => {
      const sql = client();
      for (let i = 0; i < 150; i++) {
        const v = c * 10_000 + i;
        if (c === 5 && i % 2 === 0) {
          // Errors leave the backend skipping until Sync; that must not touch anyone else.
          await expect(sql`select 1 / ${i - i}::int`).rejects.toThrow(/division by zero/);
          continue;
        }
        if (c === 4) {
          const [r] = await sql.begin(async (tx) => {
            await tx`insert into mux values (${c}, ${i})`;
            return await tx`select ${v}::int as v, count(*)::int as n from mux where c = ${c}`;
          });
          if (r.v !== v || r.n !== i + 1) wrong++;
          continue;
        }
        const [r] = c % 2 ? await sql`select ${v}::int as v` : await sql`select ${v}::int as v, ${`x${c}`}::text as t`;
        if (r.v !== v) wrong++;
      }
    }));
    expect(wrong).toBe(0);
    expect((await client()`select count(*)::int as n from mux`)[0].n).toBe(150);
  });

  it("an open transaction holds the backend: others run after its commit and see its rows", async () => {
    const a = client();
    const b = client();
    await a`create table held (x int)`;
    let committedAt = 0;
    let bDoneAt = 0;
    let bSaw = -1;
    await b`select 1`; // connected before a's transaction starts
    const { bQuery } = await a.begin(async (tx) => {
      await tx`insert into held values (1)`;
      const bQuery = b`select count(*)::int as n from held`.then(([r]) => {
        bSaw = r.n;
        bDoneAt = performance.now();
      });
      await new Promise((r) => setTimeout(r, 300));
      committedAt = performance.now();
      // Returned wrapped, not awaited: awaiting b inside a's transaction would wait forever on a
      // single backend (the reason for the design rule: no waiting on others inside a transaction).
      return { bQuery };
    });
    await bQuery;
    expect(bSaw).toBe(1);
    expect(bDoneAt).toBeGreaterThanOrEqual(committedAt);
  });

  it("delivers NOTIFY to the connections that LISTEN, on commit only", async () => {
    const listener = client();
    const got: string[] = [];
    await listener.listen("net_http_request", (payload) => void got.push(payload));
    const notifier = client();
    await notifier`select pg_notify('net_http_request', 'one')`;
    await notifier.begin(async (tx) => {
      await tx`select pg_notify('net_http_request', 'rolled-back')`;
      throw new Error("rollback");
    }).catch(() => {});
    await notifier.begin((tx) => tx`notify net_http_request, 'two'`);
    await notifier`select pg_notify('other_channel', 'not for the listener')`;
    for (let i = 0; i < 50 && got.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
    expect(got).toEqual(["one", "two"]);
  });

  it("refuses COPY FROM STDIN with an error instead of letting it crash PGlite; COPY TO STDOUT works", async () => {
    const a = client();
    await a`create table copied (x int)`;
    await expect(a`copy copied from stdin`.writable()).rejects.toThrow(/COPY FROM STDIN is not supported/);
    await expect(a.unsafe("select 1; copy copied from stdin")).rejects.toThrow(/COPY FROM STDIN is not supported/);
    let text = "";
    for await (const chunk of await a`copy (select 42 as x) to stdout`.readable()) text += chunk;
    expect(text).toBe("42\n");
    expect((await client()`select count(*)::int as n from copied`)[0].n).toBe(0); // the backend lives on
  });

  it("rolls back the transaction of a client that disconnects, and frees the backend", async () => {
    await client()`create table orphaned (x int)`;
    const sock = await rawClientInTransaction("begin; insert into orphaned values (1);");
    sock.destroy();
    const [r] = await client()`select count(*)::int as n from orphaned`;
    expect(r.n).toBe(0);
    expect(db.isInTransaction()).toBe(false);
  });

  it("disconnects a client idle in a transaction while others wait (idle_in_transaction timeout)", async () => {
    await client()`create table forgotten (x int)`;
    const other = client();
    await other`select 1`;
    const sock = await rawClientInTransaction("begin; insert into forgotten values (1);"); // a forgotten BEGIN
    const closed = new Promise<void>((r) => sock.once("close", () => r()));
    const t0 = performance.now();
    const [r] = await other`select count(*)::int as n from forgotten`;
    expect(r.n).toBe(0); // its insert was rolled back
    expect(performance.now() - t0).toBeGreaterThanOrEqual(1400);
    await closed;
  });
});

/** A raw wire-protocol client that runs `sql` (which opens a transaction) and then just sits there. */
async function rawClientInTransaction(sql: string): Promise<Socket> {
  const sock = connect(server.port, "127.0.0.1");
  const user = Buffer.from("user\0postgres\0database\0postgres\0\0");
  const startup = Buffer.alloc(8 + user.length);
  startup.writeInt32BE(startup.length, 0);
  startup.writeInt32BE(196608, 4);
  user.copy(startup, 8);
  const q = Buffer.from(sql + "\0");
  const query = Buffer.concat([Buffer.from("Q"), Buffer.alloc(4), q]);
  query.writeInt32BE(4 + q.length, 1);
  let got = Buffer.alloc(0);
  await new Promise<void>((resolve, reject) => {
    sock.on("error", reject);
    sock.on("data", (d) => {
      got = Buffer.concat([got, d]);
      // ReadyForQuery 'Z' with status 'T' (in a transaction block) after our query.
      if (got.includes(Buffer.from([0x5a, 0, 0, 0, 5, 0x54]))) resolve();
    });
    sock.write(startup, () => sock.write(query));
  });
  return sock;
}
