// The embedded default database: PGlite (Postgres compiled to WASM) with pgvector, persisted in the
// data dir and served on a TCP port through pglite-socket, so Deno, psql and the Supabase CLI all
// connect with an ordinary postgres:// URL.
//
// PGlite has ONE backend. pglite-socket multiplexes client connections onto it query by query and
// keeps a connection's open transaction to itself, so many clients work, but one long transaction
// stalls all the others (hence the design rule: no transaction across network I/O). LISTEN/NOTIFY
// does not cross connections here, so the pg_net sender polls on PGlite.
import { mkdir } from "node:fs/promises";
import { PGlite } from "@electric-sql/pglite";
import { vector } from "@electric-sql/pglite-pgvector";
import { PGLiteSocketServer } from "@electric-sql/pglite-socket";

export interface EmbeddedPostgres {
  url: string;
  stop(): Promise<void>;
}

// pglite-socket accepts any credentials; these are the conventional local ones.
export function embeddedUrl(port: number): string {
  return `postgres://postgres:postgres@127.0.0.1:${port}/postgres`;
}

export async function startEmbeddedPostgres(dataDir: string, port: number): Promise<EmbeddedPostgres> {
  await mkdir(dataDir, { recursive: true });
  const db = await PGlite.create({ dataDir, extensions: { vector } });
  // Enough for the functions' pools, the CLI, the stack's own clients and a psql or two.
  const server = new PGLiteSocketServer({ db, host: "127.0.0.1", port, maxConnections: 100 });
  try {
    await server.start();
  } catch (e) {
    await db.close();
    throw new Error(`cannot serve PGlite on 127.0.0.1:${port}: ${e instanceof Error ? e.message : e}`);
  }
  const actualPort = Number(server.getServerConn().split(":").pop());
  return {
    url: embeddedUrl(actualPort),
    stop: async () => {
      await server.stop();
      await db.close();
    },
  };
}
