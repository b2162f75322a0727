// A local stand-in for the Légifrance API behind PISTE: the OAuth2 token endpoint, POST /search and the
// /consult endpoints the collector uses, answering in the real API's shapes from a sample corpus.
// It never pretends to be the real service (every answer carries `x-piste-stand-in: 1`) and it can
// inject PISTE's real failures: tokens that die before their announced expiry (401), 429 with
// Retry-After, 500, slow answers, and an enforced requests-per-second quota.
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { randomBytes } from "node:crypto";
import { type CorpusDocument, type Fond, generatedDocuments, sampleDocuments } from "./legifrance-corpus.ts";

// LOCAL-ONLY credentials: the stand-in accepts exactly these; they grant nothing anywhere else.
export const STAND_IN_CLIENT_ID = "local-stand-in-client";
export const STAND_IN_CLIENT_SECRET = "local-stand-in-secret-not-a-real-credential";

export const OAUTH_PATH = "/api/oauth/token";
export const API_PATH = "/dila/legifrance/lf-engine-app";

export interface PisteFaults {
  /** Extra latency added to every API request (ms). */
  latencyMs?: number;
  /** Tokens stop working after this many ms although `expires_in` still announces 3600 s. */
  tokenTtlMs?: number;
  /** Tokens stop working after serving this many API requests (a death that no clock decides). */
  tokenUses?: number;
  /** Probability (0..1) that an API request gets 429 with Retry-After. */
  rate429?: number;
  /** The next N API requests get 429. */
  burst429?: number;
  /** Retry-After in seconds sent with injected 429s (default 1). */
  retryAfterS?: number;
  /** Probability (0..1) / next N API requests answered with 500. */
  rate500?: number;
  burst500?: number;
  /** Probability (0..1) that a request is slowed by `slowMs` more. */
  slowRate?: number;
  slowMs?: number;
  /** Documents whose consult always answers 500 (a document that keeps failing). */
  failIds?: string[];
  /** Requests per second allowed over any 1 s window (PISTE's quota); beyond it, 429 + Retry-After: 1. */
  quotaRps?: number;
}

export interface PisteStandInOptions extends PisteFaults {
  port?: number;
  /** Generated documents per fond on top of the hand-written samples (default 25). */
  generatedPerFond?: number;
  /** Adds search results whose ids are not valid Légifrance ids (to test that they never become paths). */
  includeBadIds?: boolean;
  /** Seed of the fault injector's PRNG, so a failing run can be replayed. */
  seed?: number;
}

export interface PisteStandInStats {
  tokensIssued: number;
  requests: Record<string, number>;
  status: Record<string, number>;
  /** Highest number of API requests seen in any 1 s window. */
  peakRps: number;
}

export interface PisteStandIn {
  oauthUrl: string;
  apiUrl: string;
  clientId: string;
  clientSecret: string;
  /** Ids of every document search can return (valid ids only), for assertions. */
  documentIds(fond?: Fond): string[];
  setFaults(f: PisteFaults): void;
  /** Invalidates every token issued so far (the next API call with one gets 401). */
  revokeTokens(): void;
  stats(): PisteStandInStats;
  stop(): Promise<void>;
}

const SORTS_NEWEST = new Set([
  "SIGNATURE_DATE_DESC",
  "DATE_DESC",
  "PUBLICATION_DATE_DESC",
  "DATE_DECISION_DESC",
  "DATE_PUBLI_DESC",
]);

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function startPisteStandIn(opts: PisteStandInOptions = {}): Promise<PisteStandIn> {
  let faults: PisteFaults = { ...opts };
  const rand = mulberry32(opts.seed ?? 42);
  const docs = [...sampleDocuments(), ...generatedDocuments(opts.generatedPerFond ?? 25)];
  const byId = new Map(docs.map((d) => [d.id, d]));
  const badResults: Record<string, unknown>[] = opts.includeBadIds
    ? ["../../etc/passwd", "LEGIARTI00000641929", "legiarti000006419292", "JURITEXT000007022837/../x"].map((id) => ({
      titles: [{ id, cid: id, title: "identifiant invalide", legalStatus: null }],
      nature: "ARRET",
      date: Date.UTC(2030, 0, 1),
      origin: "JURI",
      sections: [],
    }))
    : [];

  const tokens = new Map<string, number>(); // token -> dies at (epoch ms)
  const usesLeft = new Map<string, number>(); // token -> API requests it may still serve
  const stats: PisteStandInStats = { tokensIssued: 0, requests: {}, status: {}, peakRps: 0 };
  const window: number[] = []; // arrival times of API requests in the last second
  let burst429 = 0;
  let burst500 = 0;
  const applyBursts = (f: PisteFaults) => {
    burst429 = f.burst429 ?? 0;
    burst500 = f.burst500 ?? 0;
  };
  applyBursts(faults);

  const send = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    stats.status[status] = (stats.status[status] ?? 0) + 1;
    res.writeHead(status, { "content-type": "application/json", "x-piste-stand-in": "1", ...headers });
    res.end(JSON.stringify(body));
  };

  const readBody = (req: IncomingMessage) =>
    new Promise<string>((resolve, reject) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
      req.on("error", reject);
    });

  const handleToken = async (req: IncomingMessage, res: ServerResponse) => {
    const form = new URLSearchParams(await readBody(req));
    let id = form.get("client_id");
    let secret = form.get("client_secret");
    const basic = /^Basic\s+(.+)$/i.exec(req.headers.authorization ?? "");
    if (basic) [id, secret] = Buffer.from(basic[1], "base64").toString("utf8").split(":");
    if (form.get("grant_type") !== "client_credentials") {
      return send(res, 400, {
        error: "unsupported_grant_type",
        error_description: "grant_type must be client_credentials",
      });
    }
    if (id !== STAND_IN_CLIENT_ID || secret !== STAND_IN_CLIENT_SECRET) {
      return send(res, 401, { error: "invalid_client", error_description: "Client authentication failed" });
    }
    const token = randomBytes(24).toString("base64url");
    const announced = 3600;
    tokens.set(token, Date.now() + (faults.tokenTtlMs ?? announced * 1000));
    if (faults.tokenUses !== undefined) usesLeft.set(token, faults.tokenUses);
    stats.tokensIssued++;
    send(res, 200, { access_token: token, token_type: "Bearer", expires_in: announced, scope: "openid" });
  };

  const search = (body: any, res: ServerResponse) => {
    const fond = body?.fond as Fond | undefined;
    const r = body?.recherche;
    if (!fond || !r || typeof r !== "object") {
      return send(res, 400, { error: "Bad Request", message: "fond and recherche are required" });
    }
    const pageSize = Number(r.pageSize ?? 10);
    const pageNumber = Number(r.pageNumber ?? 1);
    if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > 100) {
      return send(res, 400, { error: "Bad Request", message: "pageSize must be between 1 and 100" });
    }
    if (!Number.isInteger(pageNumber) || pageNumber < 1) {
      return send(res, 400, { error: "Bad Request", message: "pageNumber must be >= 1" });
    }
    const words: string[] = [];
    for (const champ of Array.isArray(r.champs) ? r.champs : []) {
      for (const c of Array.isArray(champ?.criteres) ? champ.criteres : []) {
        if (typeof c?.valeur === "string" && c.valeur.trim() && c.valeur.trim() !== "*") {
          words.push(...c.valeur.toLowerCase().split(/\s+/));
        }
      }
    }
    let hits: { date: number; id: string; result: Record<string, unknown> }[] = docs
      .filter((d) => d.fond === fond)
      .filter((d) => words.length === 0 || words.some((w) => (d.title + " " + d.text).toLowerCase().includes(w)))
      .map((d) => ({ date: d.date, id: d.id, result: d.searchResult }));
    if (fond === "JURI") {
      hits = hits.concat(badResults.map((b, i) => ({ date: b.date as number, id: `~bad${i}`, result: b })));
    }
    const newest = SORTS_NEWEST.has(String(r.sort ?? ""));
    hits.sort((a, b) => (newest ? b.date - a.date || (a.id < b.id ? -1 : 1) : a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const page = hits.slice((pageNumber - 1) * pageSize, pageNumber * pageSize).map((h) => h.result);
    send(res, 200, {
      executionTime: 15,
      results: page,
      totalResultNumber: hits.length,
      typePagination: r.typePagination ?? "DEFAUT",
      facets: [],
    });
  };

  const consult = (endpoint: string, body: any, res: ServerResponse) => {
    const key: Record<string, string> = {
      getArticle: "id",
      juri: "textId",
      cnil: "textId",
      jorf: "textCid",
      kaliText: "id",
    };
    const field = key[endpoint];
    if (!field) return send(res, 404, { error: "Not Found", message: `unknown endpoint /consult/${endpoint}` });
    const id = body?.[field];
    if (typeof id !== "string") return send(res, 400, { error: "Bad Request", message: `${field} is required` });
    const doc: CorpusDocument | undefined = byId.get(id);
    if (!doc || doc.consult.endpoint !== endpoint) {
      return send(res, 404, { error: "Not Found", message: `no document ${id}` });
    }
    if (faults.failIds?.includes(id)) {
      return send(res, 500, { error: "Internal Server Error", message: "injected failure for this document" });
    }
    send(res, 200, doc.consult.response);
  };

  const handleApi = async (route: string, req: IncomingMessage, res: ServerResponse) => {
    const now = Date.now();
    window.push(now);
    while (window.length && window[0] <= now - 1000) window.shift();
    stats.peakRps = Math.max(stats.peakRps, window.length);
    const raw = await readBody(req);
    const latency = (faults.latencyMs ?? 0) +
      (faults.slowRate && rand() < faults.slowRate ? (faults.slowMs ?? 2000) : 0);
    if (latency > 0) await sleep(latency);

    const token = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? "")?.[1];
    const diesAt = token ? tokens.get(token) : undefined;
    const uses = token ? usesLeft.get(token) : undefined;
    if (token && uses !== undefined) usesLeft.set(token, uses - 1);
    if (!diesAt || diesAt <= Date.now() || (uses !== undefined && uses <= 0)) {
      return send(
        res,
        401,
        { error: "invalid_token", error_description: "The access token is invalid or has expired" },
        {
          "www-authenticate": 'Bearer error="invalid_token"',
        },
      );
    }
    if (faults.quotaRps && window.length > faults.quotaRps) {
      return send(res, 429, { error: "Too Many Requests", message: "Quota exceeded" }, { "retry-after": "1" });
    }
    if (burst429 > 0 || (faults.rate429 && rand() < faults.rate429)) {
      if (burst429 > 0) burst429--;
      return send(res, 429, { error: "Too Many Requests", message: "Rate limit exceeded" }, {
        "retry-after": String(faults.retryAfterS ?? 1),
      });
    }
    if (burst500 > 0 || (faults.rate500 && rand() < faults.rate500)) {
      if (burst500 > 0) burst500--;
      return send(res, 500, { error: "Internal Server Error", message: "injected failure" });
    }
    let body: unknown;
    try {
      body = raw ? JSON.parse(raw) : {};
    } catch {
      return send(res, 400, { error: "Bad Request", message: "invalid JSON" });
    }
    if (route === "/search") return search(body, res);
    const m = /^\/consult\/([A-Za-z]+)$/.exec(route);
    if (m) return consult(m[1], body, res);
    send(res, 404, { error: "Not Found" });
  };

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://stand-in");
    const path = url.pathname;
    stats.requests[path] = (stats.requests[path] ?? 0) + 1;
    const run = (): Promise<void> => {
      if (req.method !== "POST") {
        return Promise.resolve(send(res, 405, { error: "Method Not Allowed" }, { allow: "POST" }));
      }
      if (path === OAUTH_PATH) return handleToken(req, res);
      if (path.startsWith(API_PATH + "/")) return handleApi(path.slice(API_PATH.length), req, res);
      return Promise.resolve(send(res, 404, { error: "Not Found" }));
    };
    run().catch((e) => {
      if (!res.headersSent) send(res, 500, { error: "stand-in error", message: String(e) });
    });
  });
  server.keepAliveTimeout = 5000;

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const origin = `http://127.0.0.1:${port}`;

  return {
    oauthUrl: origin + OAUTH_PATH,
    apiUrl: origin + API_PATH,
    clientId: STAND_IN_CLIENT_ID,
    clientSecret: STAND_IN_CLIENT_SECRET,
    documentIds: (fond) => docs.filter((d) => !fond || d.fond === fond).map((d) => d.id),
    setFaults(f) {
      faults = { ...faults, ...f };
      applyBursts({ burst429: f.burst429 ?? burst429, burst500: f.burst500 ?? burst500 });
    },
    revokeTokens() {
      tokens.clear();
      usesLeft.clear();
    },
    stats: () => structuredClone(stats),
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}

// `tsx packages/testkit/legifrance-stand-in.ts [port]` serves the stand-in on its own, for manual trials.
const g = globalThis as { process?: { argv: string[] } };
if (g.process?.argv[1]?.endsWith("testkit/legifrance-stand-in.ts")) {
  const s = await startPisteStandIn({ port: Number(g.process.argv[2] ?? 0) || 0 });
  console.log(
    `PISTE_OAUTH_URL=${s.oauthUrl}\nPISTE_API_URL=${s.apiUrl}\nPISTE_CLIENT_ID=${s.clientId}\nPISTE_CLIENT_SECRET=${s.clientSecret}`,
  );
}
