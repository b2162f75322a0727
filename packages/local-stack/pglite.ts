// The embedded default database: PGlite (Postgres compiled to WASM) with pgvector, persisted in the
// data dir and served on a TCP port, so Deno, psql and the Supabase CLI all connect with an
// ordinary postgres:// URL.
//
// PGlite has ONE backend. pglite-server.ts multiplexes client connections onto it one protocol
// unit (up to a Sync) at a time and keeps a connection's open transaction to itself, so many
// clients work, but one long transaction stalls all the others (hence the design rule: no
// transaction across network I/O). It also routes NOTIFY to the connections that LISTEN.
import { existsSync, readFileSync } from "node:fs";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { PGlite } from "@electric-sql/pglite";
import { vector } from "@electric-sql/pglite-pgvector";
import { servePGlite } from "./pglite-server.ts";

const PGLITE_VERSION: string = JSON.parse(
  readFileSync(fileURLToPath(new URL("../../node_modules/@electric-sql/pglite/package.json", import.meta.url)), "utf8"),
).version;

// A fresh cluster (initdb output, before any SQL of ours), cached outside the data dir. initdb in
// WASM is most of a first start (seconds, far more on a busy machine); unpacking this copy takes a
// fraction of that, so only the very first start after an install pays for initdb, and deleting
// .local to start over stays quick. The file name carries the PGlite version it was made with.
const pristineCache = fileURLToPath(
  new URL(`../../node_modules/.cache/local-stack/pglite-${PGLITE_VERSION}-initdb.tar`, import.meta.url),
);

export async function pristineCluster(): Promise<Blob> {
  if (existsSync(pristineCache)) return new Blob([await readFile(pristineCache)]);
  // initdb in memory is faster than on disk; the dump is then unpacked into the data dir.
  const fresh = await PGlite.create({ extensions: { vector } });
  try {
    const dump = await fresh.dumpDataDir("none");
    const bytes = new Uint8Array(await dump.arrayBuffer());
    await mkdir(dirname(pristineCache), { recursive: true });
    const tmp = `${pristineCache}.${process.pid}.tmp`;
    await writeFile(tmp, bytes).then(() => rename(tmp, pristineCache)).catch(() => {}); // a cache only
    return new Blob([bytes]);
  } finally {
    await fresh.close();
  }
}

export interface EmbeddedPostgres {
  url: string;
  stop(): Promise<void>;
}

// The server accepts any credentials; these are the conventional local ones.
export function embeddedUrl(port: number): string {
  return `postgres://postgres:postgres@127.0.0.1:${port}/postgres`;
}

export async function startEmbeddedPostgres(
  dataDir: string,
  port: number,
  log: (line: string) => void = () => {},
): Promise<EmbeddedPostgres> {
  await mkdir(dataDir, { recursive: true });
  const db = existsSync(join(dataDir, "PG_VERSION"))
    ? await PGlite.create({ dataDir, extensions: { vector } })
    : await PGlite.create({ dataDir, extensions: { vector }, loadDataDir: await pristineCluster() });
  let server;
  try {
    server = await servePGlite(db, "127.0.0.1", port, { log });
  } catch (e) {
    await db.close();
    throw new Error(`cannot serve PGlite on 127.0.0.1:${port}: ${e instanceof Error ? e.message : e}`);
  }
  return {
    url: embeddedUrl(server.port),
    stop: async () => {
      await server.stop();
      await db.close();
    },
  };
}
