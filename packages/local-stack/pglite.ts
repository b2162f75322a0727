// The embedded default database: PGlite (Postgres compiled to WASM) with pgvector, persisted in the
// data dir and served on a TCP port, so Deno, psql and the Supabase CLI all connect with an
// ordinary postgres:// URL.
//
// PGlite has ONE backend. pglite-server.ts multiplexes client connections onto it one protocol
// unit (up to a Sync) at a time and keeps a connection's open transaction to itself, so many
// clients work, but one long transaction stalls all the others (hence the design rule: no
// transaction across network I/O). LISTEN/NOTIFY does not cross connections here, so the pg_net
// sender polls on PGlite.
import { mkdir } from "node:fs/promises";
import { PGlite } from "@electric-sql/pglite";
import { vector } from "@electric-sql/pglite-pgvector";
import { servePGlite } from "./pglite-server.ts";

export interface EmbeddedPostgres {
  url: string;
  stop(): Promise<void>;
}

// The server accepts any credentials; these are the conventional local ones.
export function embeddedUrl(port: number): string {
  return `postgres://postgres:postgres@127.0.0.1:${port}/postgres`;
}

export async function startEmbeddedPostgres(dataDir: string, port: number): Promise<EmbeddedPostgres> {
  await mkdir(dataDir, { recursive: true });
  const db = await PGlite.create({ dataDir, extensions: { vector } });
  let server;
  try {
    server = await servePGlite(db, "127.0.0.1", port);
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
