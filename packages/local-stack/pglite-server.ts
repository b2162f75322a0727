// A PostgreSQL wire-protocol server for PGlite that is safe with many concurrent clients.
//
// PGlite has ONE backend, so clients must take turns. pglite-socket's multiplexer takes turns per
// protocol *message*: two clients' extended-protocol sequences (Parse/Bind/Execute/Sync) then
// interleave on the shared backend, and one client's Bind or error clobbers the other's unnamed
// portal ("portal \"\" does not exist", or worse, another client's rows). This server takes turns
// per *unit*: everything a client sends up to a Sync (or a simple Query, or a CopyDone/CopyFail)
// runs in one exclusive section. After a unit, if the backend is inside a transaction block (or
// the client stopped mid-sequence with a Flush), that client keeps the backend: only its units run
// until it is back to idle. A client that disconnects while holding it is rolled back.
//
// LISTEN/NOTIFY: the single backend emits every NotificationResponse into the output of whichever
// client's unit committed the NOTIFY. The server takes them out of that stream and delivers them to
// the connections that sent LISTEN for the channel, so LISTEN works across connections as usual.
import { createServer, type Server, type Socket } from "node:net";
import type { PGlite } from "@electric-sql/pglite";

const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;
const CANCEL_REQUEST = 80877102;
const UNIT_END = new Set(["S", "Q", "c", "f"]); // Sync, Query, CopyDone, CopyFail

interface Conn {
  id: number;
  socket: Socket;
  buf: Buffer;
  started: boolean;
  pending: Buffer[];
  closed: boolean;
  channels: Set<string>;
}

interface Unit {
  conn: Conn;
  messages: Buffer[];
  /** The client can go on without the backend (ended with Sync/Query/CopyDone/CopyFail). */
  endsSequence: boolean;
}

export interface PGliteServer {
  port: number;
  stop(): Promise<void>;
  stats(): { connections: number; queued: number };
}

export interface ServeOptions {
  log?: (line: string) => void;
  maxConnections?: number;
  /**
   * A client that holds the backend inside a transaction and sends nothing for this long while
   * others wait is disconnected (its transaction rolled back), like Postgres's
   * idle_in_transaction_session_timeout: on a single backend, a forgotten BEGIN in a psql session
   * would otherwise freeze every function and the stack itself.
   */
  idleInTransactionMs?: number;
}

export async function servePGlite(
  db: PGlite,
  host: string,
  port: number,
  opts: ServeOptions = {},
): Promise<PGliteServer> {
  const log = opts.log ?? (() => {});
  const maxConnections = opts.maxConnections ?? 200;
  const idleLimit = opts.idleInTransactionMs ?? 60_000;
  let idleTimer: NodeJS.Timeout | null = null;
  const conns = new Set<Conn>();
  const queue: Unit[] = [];
  let owner: Conn | null = null;
  let running = false;
  let nextId = 1;
  const rollback = encodeQuery("ROLLBACK");

  async function pump(): Promise<void> {
    if (running) return;
    running = true;
    try {
      for (;;) {
        const i = owner ? queue.findIndex((u) => u.conn === owner) : 0;
        if (i < 0 || queue.length === 0) {
          if (owner && queue.length > 0) armIdleTimer(owner);
          break;
        }
        if (idleTimer) clearTimeout(idleTimer);
        idleTimer = null;
        const unit = queue.splice(i, 1)[0];
        if (unit.conn.closed) continue;
        const conn = unit.conn;
        const framer = new Framer();
        await db.runExclusive(async () => {
          for (let m = 0; m < unit.messages.length; m++) {
            // Flush PGlite's files once per unit, not once per message.
            await db.execProtocolRawStream(new Uint8Array(unit.messages[m]), {
              syncToFs: m === unit.messages.length - 1,
              onRawData: (data) => {
                const out = framer.feed(data, deliverNotification);
                if (out.length && !conn.closed && conn.socket.writable) conn.socket.write(out);
              },
            });
          }
        }).catch((e) => {
          // A protocol-level failure of PGlite itself: this client cannot continue. If the WASM
          // backend exited, every client is lost: say so plainly.
          const exited = (e as { name?: string }).name === "ExitStatus";
          log(
            `[db] PGlite ${exited ? "backend EXITED (restart the stack)" : "protocol error"}: ${
              e instanceof Error ? e.message : e
            }`,
          );
          conn.socket.destroy(e instanceof Error ? e : new Error(String(e)));
        });
        // The client keeps the backend inside a transaction block and after a Flush (mid-sequence).
        owner = db.isInTransaction() || !unit.endsSequence ? conn : null;
        if (owner === conn && conn.closed) await release(conn);
      }
    } finally {
      running = false;
    }
  }

  /** A NotificationResponse goes to the connections listening on its channel, not to the notifier. */
  function deliverNotification(msg: Buffer): void {
    const end = msg.indexOf(0, 9);
    const channel = msg.subarray(9, end < 0 ? msg.length : end).toString("utf8");
    for (const c of conns) if (c.channels.has(channel) && !c.closed && c.socket.writable) c.socket.write(msg);
  }

  function armIdleTimer(holder: Conn): void {
    if (idleTimer) return;
    idleTimer = setTimeout(() => {
      idleTimer = null;
      if (owner !== holder || queue.length === 0) return;
      log(
        `[db] a client held PGlite idle in a transaction for ${idleLimit} ms while others waited: disconnecting it (rolled back)`,
      );
      holder.socket.destroy();
    }, idleLimit);
    idleTimer.unref();
  }

  /** A client gone while holding the backend: roll its transaction back and free the backend. */
  async function release(conn: Conn): Promise<void> {
    if (owner !== conn) return;
    await db.runExclusive(() => db.execProtocolRawStream(rollback, { onRawData: () => {} })).catch(() => {});
    owner = null;
  }

  function onData(conn: Conn, data: Buffer): void {
    conn.buf = conn.buf.length ? Buffer.concat([conn.buf, data]) : data;
    for (;;) {
      if (!conn.started) {
        if (conn.buf.length < 8) return;
        const len = conn.buf.readInt32BE(0);
        if (conn.buf.length < len) return;
        const code = conn.buf.readInt32BE(4);
        const msg = conn.buf.subarray(0, len);
        conn.buf = conn.buf.subarray(len);
        if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
          conn.socket.write("N"); // no TLS here: the client goes on in clear on localhost
          continue;
        }
        if (code === CANCEL_REQUEST) {
          conn.socket.end();
          return;
        }
        conn.started = true;
        queue.push({ conn, messages: [Buffer.from(msg)], endsSequence: true });
        void pump();
        continue;
      }
      if (conn.buf.length < 5) return;
      const len = 1 + conn.buf.readInt32BE(1);
      if (conn.buf.length < len) return;
      const type = String.fromCharCode(conn.buf[0]);
      const msg = Buffer.from(conn.buf.subarray(0, len));
      conn.buf = conn.buf.subarray(len);
      if (type === "X") {
        // Terminate ends this client's session, never the shared backend.
        conn.socket.end();
        return;
      }
      trackListen(conn, type, msg);
      conn.pending.push(refuseCopyFromStdin(type, msg));
      if (UNIT_END.has(type) || type === "H") {
        queue.push({ conn, messages: conn.pending, endsSequence: type !== "H" });
        conn.pending = [];
        void pump();
      }
    }
  }

  function onClose(conn: Conn): void {
    if (conn.closed) return;
    conn.closed = true;
    conns.delete(conn);
    for (let i = queue.length - 1; i >= 0; i--) if (queue[i].conn === conn) queue.splice(i, 1);
    if (owner === conn && !running) void release(conn).then(() => pump());
    else if (owner === conn) {
      // pump() releases it after the unit in flight.
    }
  }

  const server: Server = createServer((socket) => {
    if (conns.size >= maxConnections) {
      socket.end();
      return;
    }
    socket.setNoDelay(true);
    const conn: Conn = {
      id: nextId++,
      socket,
      buf: Buffer.alloc(0),
      started: false,
      pending: [],
      closed: false,
      channels: new Set(),
    };
    conns.add(conn);
    socket.on("data", (d: Buffer) => onData(conn, d));
    socket.on("close", () => onClose(conn));
    socket.on("error", () => onClose(conn));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address();
  return {
    port: typeof address === "object" && address ? address.port : port,
    stats: () => ({ connections: conns.size, queued: queue.length }),
    stop: () =>
      new Promise<void>((resolve) => {
        if (idleTimer) clearTimeout(idleTimer);
        for (const c of conns) c.socket.destroy();
        server.close(() => resolve());
      }),
  };
}

const LISTEN = /^\s*(listen|unlisten)\s+(?:"((?:[^"]|"")+)"|([A-Za-z_][\w$]*)|(\*))\s*;?\s*$/i;

/** Which channels a connection listens on, from its LISTEN / UNLISTEN statements (simple or extended). */
function trackListen(conn: Conn, type: string, msg: Buffer): void {
  let sql: string;
  if (type === "Q") sql = msg.subarray(5, msg.length - 1).toString("utf8");
  else if (type === "P") {
    const nameEnd = msg.indexOf(0, 5);
    const queryEnd = msg.indexOf(0, nameEnd + 1);
    if (nameEnd < 0 || queryEnd < 0) return;
    sql = msg.subarray(nameEnd + 1, queryEnd).toString("utf8");
  } else return;
  const m = LISTEN.exec(sql);
  if (!m) return;
  // Unquoted identifiers fold to lower case, as Postgres does.
  const channel = m[2] !== undefined ? m[2].replace(/""/g, '"') : m[3]?.toLowerCase();
  if (m[1].toLowerCase() === "listen" && channel) conn.channels.add(channel);
  else if (m[4]) conn.channels.clear();
  else if (channel) conn.channels.delete(channel);
}

/**
 * Splits the backend's output into whole messages: NotificationResponses ('A') are handed to
 * `notify`, everything else is returned to be forwarded. A message split across chunks waits.
 */
class Framer {
  private partial = Buffer.alloc(0);
  feed(data: Uint8Array, notify: (msg: Buffer) => void): Buffer {
    const buf = this.partial.length ? Buffer.concat([this.partial, data]) : Buffer.from(data);
    const keep: Buffer[] = [];
    let start = 0;
    let pos = 0;
    while (buf.length - pos >= 5) {
      const len = 1 + buf.readInt32BE(pos + 1);
      if (buf.length - pos < len) break;
      if (buf[pos] === 0x41) {
        if (pos > start) keep.push(buf.subarray(start, pos));
        notify(Buffer.from(buf.subarray(pos, pos + len)));
        start = pos + len;
      }
      pos += len;
    }
    if (pos > start) keep.push(buf.subarray(start, pos));
    this.partial = Buffer.from(buf.subarray(pos));
    return keep.length === 1 ? keep[0] : Buffer.concat(keep);
  }
}

// PGlite's WASM backend exits (taking every client with it) when COPY FROM STDIN waits for input
// over the wire protocol. Such a statement is swapped for one that fails with a clear error, so the
// client gets an ordinary ErrorResponse (and an aborted transaction, as after any error).
const COPY_FROM_STDIN = /(^|;)\s*copy\b[^;]*\bfrom\s+stdin\b/i;
const COPY_REFUSAL = "do $refuse$ begin raise exception using errcode = '0A000', message = " +
  "'COPY FROM STDIN is not supported by the local PGlite server: use INSERT, or a real PostgreSQL (DATABASE_URL)'; end $refuse$";

function refuseCopyFromStdin(type: string, msg: Buffer): Buffer {
  if (type === "Q") {
    const sql = msg.subarray(5, msg.length - 1).toString("utf8");
    return COPY_FROM_STDIN.test(sql) ? Buffer.from(encodeQuery(COPY_REFUSAL)) : msg;
  }
  if (type === "P") {
    const nameEnd = msg.indexOf(0, 5);
    const queryEnd = msg.indexOf(0, nameEnd + 1);
    if (nameEnd < 0 || queryEnd < 0 || !COPY_FROM_STDIN.test(msg.subarray(nameEnd + 1, queryEnd).toString("utf8"))) {
      return msg;
    }
    const name = msg.subarray(5, nameEnd + 1);
    const query = Buffer.from(COPY_REFUSAL + "\0", "utf8");
    const body = Buffer.concat([name, query, Buffer.from([0, 0])]); // no parameter types
    const out = Buffer.alloc(5 + body.length);
    out.write("P", 0, "ascii");
    out.writeInt32BE(4 + body.length, 1);
    body.copy(out, 5);
    return out;
  }
  return msg;
}

function encodeQuery(sql: string): Uint8Array {
  const body = Buffer.from(sql + "\0", "utf8");
  const out = Buffer.alloc(1 + 4 + body.length);
  out.write("Q", 0, "ascii");
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return new Uint8Array(out);
}
