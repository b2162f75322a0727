// The API gateway on 127.0.0.1:54321: the routes supabase-js calls.
//   /functions/v1/<name>[/…]  → the Deno functions process (verify_jwt enforced here, as on the platform)
//   /storage/v1/…             → the Storage stand-in (storage.ts)
//   /auth/v1/.well-known/jwks.json → the project's public signing keys (ES256), as Supabase Auth serves them
//   /auth/v1/…                → the Auth stand-in (auth.ts): email + password sign-in, sessions, admin users
//   /health                   → {"ok":true}
//   /dashboard[/…]            → the operator dashboard's static files (packages/ops/dashboard)
// PostgREST and Realtime are not part of the local stack: /rest/v1 and /realtime/v1 answer 501 saying so.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { Readable } from "node:stream";
import type { JSONWebKeySet } from "jose";
import { type AuthConfig, authenticate, verifyJwt } from "../core/auth.ts";
import { FUNCTION_NAME } from "./function-config.ts";
import { dashboardAsset } from "../ops/dashboard-assets.ts";
import type { StorageCaller } from "./storage.ts";

export interface GatewayOptions {
  port: number;
  /** Credentials the gateway accepts (both key schemes); see keys.ts gatewayAuthConfig. */
  auth: AuthConfig;
  jwks: JSONWebKeySet;
  /** Internal URL of the Deno functions process; null while it is not running. */
  functionsUrl: () => string | null;
  /** Function names served (loaded or failed to load); anything else is a 404. */
  functionNames: () => Set<string>;
  verifyJwt: (name: string) => boolean;
  storage: (req: Request, rawPath: string) => Promise<Response>;
  /** The Auth stand-in, given the path after /auth/v1. */
  authApi?: (req: Request, path: string) => Promise<Response>;
  log: (line: string) => void;
  /** Wall-clock limit of one function call (the hosted free plan's 150 s). */
  functionTimeoutMs?: number;
  /** Largest request body a function call may carry (default FUNCTION_BODY_LIMIT_BYTES). */
  functionBodyLimitBytes?: number;
}

/**
 * A function call's body is read whole by the gateway before it is forwarded, so it is bounded: the
 * functions take small JSON bodies, and a streamed body of a few MB that a function answers without
 * reading made the Deno side reset the connection (a 502 instead of an answer).
 */
export const FUNCTION_BODY_LIMIT_BYTES = 1024 * 1024;

export interface Gateway {
  url: string;
  port: number;
  stop(): Promise<void>;
}

const CORS = {
  "access-control-allow-origin": "*",
  "access-control-allow-headers":
    "authorization, x-client-info, apikey, content-type, x-upsert, cache-control, x-metadata, x-supabase-api-version",
  "access-control-allow-methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS, HEAD",
};

/**
 * True when a path segment is `.` or `..`, percent-encoded or not (`%2e%2e`, `.%2E`), or holds a
 * backslash, which URL parsers treat as a slash. Such a path would be resolved by whoever parses it
 * next, after the gateway chose the route and its checks from the unresolved one.
 */
export function hasDotSegment(path: string): boolean {
  if (path.includes("\\")) return true;
  return path.split("/").some((seg) => {
    const d = seg.replace(/%2e/gi, ".");
    return d === "." || d === ".." || /%5c/i.test(seg);
  });
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text), ...CORS });
  res.end(text);
}

async function sendResponse(res: ServerResponse, r: Response, head = false): Promise<void> {
  const headers: Record<string, string> = { ...CORS };
  // fetch() has already decoded a compressed upstream body, so its encoding and length no longer apply.
  const decoded = r.headers.has("content-encoding");
  r.headers.forEach((v, k) => {
    if (k === "content-encoding" || k === "transfer-encoding" || k === "connection") return;
    if (k === "content-length" && decoded) return;
    headers[k] = v;
  });
  res.writeHead(r.status, headers);
  if (!r.body || head) {
    res.end();
    return;
  }
  await new Promise<void>((resolve, reject) => {
    const body = Readable.fromWeb(r.body as import("node:stream/web").ReadableStream);
    body.on("error", reject);
    res.on("close", resolve);
    body.pipe(res);
  });
}

/**
 * The request body as a web stream with backpressure. A reader that stops early (a size limit, an
 * error answered before the body) leaves the socket paused until the answer is written; then the
 * rest is read into nothing rather than the socket destroyed: closing a socket with unread input
 * makes the kernel reset the connection, and the client would lose the answer sent just before.
 * Reading on only after the answer keeps a refused upload from being read at full speed while the
 * refusal is still being prepared.
 */
function bodyStream(req: IncomingMessage, res: ServerResponse): ReadableStream<Uint8Array> {
  let onData: (chunk: Buffer) => void = () => {};
  let onEnd = () => {};
  let onError: (e: Error) => void = () => {};
  const detach = () => {
    req.off("data", onData).off("end", onEnd).off("error", onError);
    req.pause();
  };
  res.once("finish", () => {
    detach();
    if (!req.complete) req.resume();
  });
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      onData = (chunk) => {
        controller.enqueue(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
        if ((controller.desiredSize ?? 0) <= 0) req.pause();
      };
      onEnd = () => controller.close();
      onError = (e) => controller.error(e);
      req.on("data", onData).once("end", onEnd).once("error", onError);
      req.pause();
    },
    pull() {
      req.resume();
    },
    cancel: detach,
  }, { highWaterMark: 256 * 1024, size: (c) => c.byteLength });
  return stream;
}

function toWebRequest(req: IncomingMessage, url: string, body?: Uint8Array | ReadableStream<Uint8Array>): Request {
  const headers = new Headers();
  const buffered = body instanceof Uint8Array;
  for (const [k, v] of Object.entries(req.headers)) {
    if (v === undefined || k === "host" || k === "connection") continue;
    if (buffered && (k === "content-length" || k === "transfer-encoding")) continue;
    headers.set(k, Array.isArray(v) ? v.join(", ") : v);
  }
  const hasBody = req.method !== "GET" && req.method !== "HEAD";
  return new Request(url, {
    method: req.method,
    headers,
    body: hasBody ? (body as BodyInit | undefined) : undefined,
    // @ts-expect-error Node's fetch needs duplex for a streamed request body; the DOM type lacks it.
    duplex: hasBody && !buffered ? "half" : undefined,
  });
}

/** The whole body, or null as soon as it passes `limit` bytes (the rest is drained, never kept). */
async function readBodyUpTo(req: IncomingMessage, res: ServerResponse, limit: number): Promise<Uint8Array | null> {
  if (Number(req.headers["content-length"] ?? 0) > limit) {
    req.resume();
    return null;
  }
  const reader = bodyStream(req, res).getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel();
      return null;
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks, size);
}

/** The verified caller of a Storage request (any of the accepted credentials), or null. */
export async function storageCaller(auth: AuthConfig, req: Request): Promise<StorageCaller | null> {
  const r = await authenticate(req, auth);
  if (!r.ok) return null;
  return { role: r.caller.role, claims: (r.caller.claims ?? { role: r.caller.role }) as Record<string, unknown> };
}

export async function startGateway(opts: GatewayOptions): Promise<Gateway> {
  const server: Server = createServer((req, res) => {
    handle(req, res).catch((e) => {
      opts.log(`[gateway] ${req.method} ${req.url}: ${e instanceof Error ? e.stack : e}`);
      if (!res.headersSent) sendJson(res, 500, { error: "gateway error" });
      else res.destroy();
    });
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // req.url is the raw request target: never normalised, so `..` reaches the storage checks.
    const raw = req.url ?? "/";
    const q = raw.indexOf("?");
    const path = q >= 0 ? raw.slice(0, q) : raw;
    const search = q >= 0 ? raw.slice(q) : "";
    const method = (req.method ?? "GET").toUpperCase();
    if (hasDotSegment(path)) {
      return sendJson(res, 400, {
        code: "INVALID_PATH",
        message: "dot segments ('.', '..', encoded or not) and backslashes are not allowed in a request path",
      });
    }
    if (method === "OPTIONS") {
      res.writeHead(204, CORS);
      res.end();
      return;
    }
    if (path === "/health") return sendJson(res, 200, { ok: true });
    if (path === "/dashboard" || path.startsWith("/dashboard/")) {
      const asset = await dashboardAsset(path);
      return asset ? await sendResponse(res, asset, method === "HEAD") : sendJson(res, 404, { error: "not found" });
    }

    if (path.startsWith("/functions/v1/")) {
      const rest = path.slice("/functions/v1/".length);
      const slash = rest.indexOf("/");
      const name = slash >= 0 ? rest.slice(0, slash) : rest;
      const sub = slash >= 0 ? rest.slice(slash) : "";
      if (!FUNCTION_NAME.test(name) || !opts.functionNames().has(name)) {
        return sendJson(res, 404, { code: "NOT_FOUND", message: "Requested function was not found" });
      }
      if (opts.verifyJwt(name)) {
        // As on the platform: verify_jwt wants a JWT in Authorization; an opaque sb_… key is refused,
        // which is why our functions set verify_jwt = false and authenticate in code.
        const token = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? "")?.[1];
        if (!token) return sendJson(res, 401, { code: 401, message: "Missing authorization header" });
        if (!(await verifyJwt(token, opts.auth)).ok) return sendJson(res, 401, { code: 401, message: "Invalid JWT" });
      }
      const base = opts.functionsUrl();
      if (!base) return sendJson(res, 503, { code: "UNAVAILABLE", message: "functions runtime is not running" });
      const limit = opts.functionBodyLimitBytes ?? FUNCTION_BODY_LIMIT_BYTES;
      const body = method === "GET" || method === "HEAD" ? undefined : await readBodyUpTo(req, res, limit);
      if (body === null) {
        return sendJson(res, 413, {
          code: "PAYLOAD_TOO_LARGE",
          message: `request body exceeds the ${limit} byte limit of a function call`,
          limit,
        });
      }
      const inbound = toWebRequest(req, `${base}/${name}${sub}${search}`, body);
      let upstream: Response;
      try {
        upstream = await fetch(inbound, {
          signal: AbortSignal.timeout(opts.functionTimeoutMs ?? 150_000),
          redirect: "manual",
        });
      } catch (e) {
        const timedOut = (e as Error).name === "TimeoutError";
        return sendJson(res, timedOut ? 504 : 502, {
          code: timedOut ? "WORKER_TIMEOUT" : "BAD_GATEWAY",
          message: timedOut
            ? "Function exceeded the wall clock limit"
            : `functions runtime unreachable: ${(e as Error).message}`,
        });
      }
      return await sendResponse(res, upstream, method === "HEAD");
    }

    if (path.startsWith("/storage/v1/")) {
      const r = await opts.storage(
        toWebRequest(req, `http://local${path}${search}`, bodyStream(req, res)),
        path.slice("/storage/v1/".length),
      );
      return await sendResponse(res, r, method === "HEAD");
    }

    if (path === "/auth/v1/.well-known/jwks.json" && (method === "GET" || method === "HEAD")) {
      return sendJson(res, 200, opts.jwks);
    }
    if (path.startsWith("/auth/v1/") && opts.authApi) {
      const authBody = method === "GET" || method === "HEAD"
        ? undefined
        : await readBodyUpTo(req, res, FUNCTION_BODY_LIMIT_BYTES);
      if (authBody === null) {
        return sendJson(res, 413, {
          code: "PAYLOAD_TOO_LARGE",
          message: `request body exceeds the ${FUNCTION_BODY_LIMIT_BYTES} byte limit`,
          limit: FUNCTION_BODY_LIMIT_BYTES,
        });
      }
      const r = await opts.authApi(
        toWebRequest(req, `http://local${path}${search}`, authBody),
        path.slice("/auth/v1".length),
      );
      return await sendResponse(res, r, method === "HEAD");
    }

    if (path.startsWith("/rest/v1") || path.startsWith("/auth/v1") || path.startsWith("/realtime/v1")) {
      return sendJson(res, 501, {
        error: "not part of the local stack",
        message: "The local stack serves /functions/v1 and /storage/v1 only; use SQL over DB_URL instead of PostgREST.",
      });
    }
    sendJson(res, 404, { error: "not found" });
  }

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
