// A fake OpenAI embeddings server for tests and benchmarks. It speaks POST /v1/embeddings like the
// real API (bearer auth, `input` as string or array, `dimensions`, `encoding_format` float or
// base64 -- the openai SDK asks for base64 by default -- usage, and OpenAI's error bodies), checks
// the real limits (2048 inputs, 300k tokens per request, 8191 tokens per input) and can inject the
// real failures: 401, 429 with Retry-After, 5xx, a 400 for a poisoned input, and latency.
// With a `quota` it meters tokens and requests per minute as OpenAI does: a bucket per limit that
// holds a minute's worth and refills continuously, x-ratelimit-* headers on every answer, and a
// 429 with Retry-After and OpenAI's message when a request does not fit.
// Vectors come from the offline provider, so search over fake-embedded rows is lexically sensible.
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { offlineEmbedding } from "../embeddings/offline.ts";
import { OPENAI_LIMITS } from "../embeddings/provider.ts";
import { countTokens } from "../embeddings/tokens.ts";

export const FAKE_OPENAI_KEY = "sk-local-fake-openai-key"; // local-only: accepted by the fake server only

export interface FakeOpenAIFaults {
  /** Added to every request (the benchmark uses 300 ms). */
  latencyMs?: number;
  /** The next `count` requests get 429 with `Retry-After: retryAfterSeconds`. */
  rateLimit?: { count: number; retryAfterSeconds: number };
  /** Every request in the next `ms` gets 429 with `Retry-After: retryAfterSeconds` (a storm). */
  rateLimitFor?: { ms: number; retryAfterSeconds: number };
  /** Tokens and requests per minute (setting it refills both buckets). */
  quota?: { tpm: number; rpm: number } | null;
  /** The next `count` requests get `status` (default 500). */
  serverErrors?: { count: number; status?: number };
  /** A request with an input containing one of these strings gets a 400 (as OpenAI does). */
  poison?: string[];
  /** Every request gets 401 (a revoked key). */
  unauthorized?: boolean;
}

export interface FakeOpenAIStats {
  /** Every HTTP request to /v1/embeddings, whatever its answer. */
  requests: number;
  /** Requests answered 200. */
  ok: number;
  byStatus: Record<number, number>;
  /** Inputs embedded (200 answers only). */
  inputs: number;
  tokens: number;
  /** Input count of each successful request. */
  batchSizes: number[];
  /** How often each exact input text was embedded (200 answers only). */
  inputCounts: Map<string, number>;
  /** Largest input seen, in tokens. */
  maxInputTokens: number;
  /** 429 answers (quota and injected alike). */
  rateLimited: number;
  /** Tokens accepted (200 answers), by epoch second: a benchmark's utilization of the quota. */
  tokensBySecond: Map<number, number>;
  /** The size of the vectors each 200 answer carried (the request's `dimensions`, else the model's). */
  dimensions: number[];
}

export interface FakeOpenAI {
  url: string; // base URL for the SDK's baseURL, ending in /v1
  apiKey: string;
  stats: FakeOpenAIStats;
  setFaults(f: FakeOpenAIFaults): void;
  resetStats(): void;
  stop(): Promise<void>;
}

export interface FakeOpenAIOptions extends FakeOpenAIFaults {
  port?: number;
  apiKey?: string;
}

const MODEL_DIMS: Record<string, number> = {
  "text-embedding-3-small": 1536,
  "text-embedding-3-large": 3072,
  "text-embedding-ada-002": 1536,
};

const newStats = (): FakeOpenAIStats => ({
  requests: 0,
  ok: 0,
  byStatus: {},
  inputs: 0,
  tokens: 0,
  batchSizes: [],
  inputCounts: new Map(),
  maxInputTokens: 0,
  rateLimited: 0,
  tokensBySecond: new Map(),
  dimensions: [],
});

/** Tokens accepted per minute between two instants (epoch ms), from `stats.tokensBySecond`. */
export function acceptedTokensPerMinute(stats: FakeOpenAIStats, fromMs: number, toMs: number): number {
  let tokens = 0;
  for (const [second, n] of stats.tokensBySecond) {
    if (second * 1000 >= fromMs - 999 && second * 1000 <= toMs) tokens += n;
  }
  return (tokens * 60_000) / Math.max(1, toMs - fromMs);
}

/** A duration the way OpenAI's x-ratelimit-reset-* headers write it (Go's format): 20ms, 1s, 6m0s, 1m30.5s. */
export function formatRateLimitDuration(seconds: number): string {
  if (!(seconds > 0)) return "0s";
  if (seconds < 1) return `${Math.max(1, Math.round(seconds * 1000))}ms`;
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds - h * 3600) / 60);
  const sec = `${Number((seconds - h * 3600 - m * 60).toFixed(3))}s`;
  return h > 0 ? `${h}h${m}m${sec}` : m > 0 ? `${m}m${sec}` : sec;
}

/** OpenAI's per-minute buckets: a minute's worth at most, refilled continuously. */
class QuotaBuckets {
  private tokens: number;
  private requests: number;
  private at = Date.now();
  constructor(readonly tpm: number, readonly rpm: number) {
    this.tokens = tpm;
    this.requests = rpm;
  }
  private refill() {
    const now = Date.now();
    const secs = (now - this.at) / 1000;
    this.at = now;
    this.tokens = Math.min(this.tpm, this.tokens + (this.tpm / 60) * secs);
    this.requests = Math.min(this.rpm, this.requests + (this.rpm / 60) * secs);
  }
  /** Takes the request when it fits; otherwise says which limit refused it and for how long. */
  take(tokens: number): { ok: true } | { ok: false; kind: "tokens" | "requests"; waitSeconds: number; used: number } {
    this.refill();
    if (this.requests < 1) {
      return {
        ok: false,
        kind: "requests",
        waitSeconds: (1 - this.requests) / (this.rpm / 60),
        used: Math.ceil(this.rpm - this.requests),
      };
    }
    if (this.tokens < tokens) {
      return {
        ok: false,
        kind: "tokens",
        waitSeconds: (tokens - this.tokens) / (this.tpm / 60),
        used: Math.ceil(this.tpm - this.tokens),
      };
    }
    this.tokens -= tokens;
    this.requests -= 1;
    return { ok: true };
  }
  headers(): Record<string, string> {
    this.refill();
    return {
      "x-ratelimit-limit-requests": String(this.rpm),
      "x-ratelimit-limit-tokens": String(this.tpm),
      "x-ratelimit-remaining-requests": String(Math.max(0, Math.floor(this.requests))),
      "x-ratelimit-remaining-tokens": String(Math.max(0, Math.floor(this.tokens))),
      "x-ratelimit-reset-requests": formatRateLimitDuration((this.rpm - this.requests) / (this.rpm / 60)),
      "x-ratelimit-reset-tokens": formatRateLimitDuration((this.tpm - this.tokens) / (this.tpm / 60)),
    };
  }
}

function openaiError(
  res: ServerResponse,
  status: number,
  message: string,
  type: string,
  extraHeaders: Record<string, string> = {},
  code: string | null = null,
) {
  res.writeHead(status, { "content-type": "application/json", ...extraHeaders });
  res.end(JSON.stringify({ error: { message, type, param: null, code } }));
}

async function readBody(req: IncomingMessage): Promise<string> {
  const parts: Buffer[] = [];
  for await (const c of req) parts.push(c as Buffer);
  return Buffer.concat(parts).toString("utf8");
}

export async function startFakeOpenAI(opts: FakeOpenAIOptions = {}): Promise<FakeOpenAI> {
  const apiKey = opts.apiKey ?? FAKE_OPENAI_KEY;
  let faults: FakeOpenAIFaults = {
    ...opts,
    rateLimit: opts.rateLimit && { ...opts.rateLimit },
    serverErrors: opts.serverErrors && { ...opts.serverErrors },
  };
  let current = newStats();
  let quota = opts.quota ? new QuotaBuckets(opts.quota.tpm, opts.quota.rpm) : undefined;
  let stormUntil = opts.rateLimitFor ? Date.now() + opts.rateLimitFor.ms : 0;

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? "").split("?")[0];
    if (path !== "/v1/embeddings") {
      return openaiError(res, 404, `Unknown request URL: ${req.method} ${path}`, "invalid_request_error");
    }
    if (req.method !== "POST") return openaiError(res, 405, "Method not allowed", "invalid_request_error");
    // A request counts in the statistics of the moment it arrived: one answered after a reset (a slow
    // answer its client gave up on) does not leak into the next measurement.
    const stats = current;
    const raw = await readBody(req);
    stats.requests += 1;
    const fail = (
      status: number,
      message: string,
      type: string,
      headers: Record<string, string> = {},
      code: string | null = null,
    ) => {
      stats.byStatus[status] = (stats.byStatus[status] ?? 0) + 1;
      if (status === 429) stats.rateLimited += 1;
      openaiError(res, status, message, type, headers, code);
    };
    if (faults.latencyMs) await new Promise((r) => setTimeout(r, faults.latencyMs));

    const auth = req.headers.authorization ?? "";
    if (faults.unauthorized || auth !== `Bearer ${apiKey}`) {
      return fail(
        401,
        "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
        "invalid_request_error",
        {},
        "invalid_api_key",
      );
    }
    const injected429 = faults.rateLimit && faults.rateLimit.count > 0
      ? faults.rateLimit.retryAfterSeconds
      : Date.now() < stormUntil
      ? faults.rateLimitFor?.retryAfterSeconds
      : undefined;
    if (injected429 !== undefined) {
      if (faults.rateLimit && faults.rateLimit.count > 0) faults.rateLimit.count -= 1;
      return fail(
        429,
        "Rate limit reached for text-embedding-3-small on tokens per min (TPM). Please try again later.",
        "tokens",
        { ...quota?.headers(), "retry-after": String(injected429), "x-ratelimit-remaining-requests": "0" },
        "rate_limit_exceeded",
      );
    }
    if (faults.serverErrors && faults.serverErrors.count > 0) {
      faults.serverErrors.count -= 1;
      return fail(
        faults.serverErrors.status ?? 500,
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
      );
    }

    let body: { input?: unknown; model?: unknown; dimensions?: unknown; encoding_format?: unknown };
    try {
      body = JSON.parse(raw);
    } catch {
      return fail(400, "We could not parse the JSON body of your request.", "invalid_request_error");
    }
    const model = typeof body.model === "string" ? body.model : "";
    if (!MODEL_DIMS[model]) {
      return fail(
        404,
        `The model \`${model}\` does not exist or you do not have access to it.`,
        "invalid_request_error",
        {},
        "model_not_found",
      );
    }
    const inputs = typeof body.input === "string" ? [body.input] : body.input;
    if (!Array.isArray(inputs) || inputs.length === 0 || !inputs.every((s) => typeof s === "string")) {
      return fail(
        400,
        "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
        "invalid_request_error",
      );
    }
    if (inputs.length > OPENAI_LIMITS.maxInputs) {
      return fail(
        400,
        `'$.input' is invalid: array too long, max ${OPENAI_LIMITS.maxInputs}.`,
        "invalid_request_error",
      );
    }
    const dims = body.dimensions === undefined ? MODEL_DIMS[model] : Number(body.dimensions);
    if (
      !Number.isInteger(dims) || dims < 1 || dims > MODEL_DIMS[model] ||
      (model === "text-embedding-ada-002" && body.dimensions !== undefined)
    ) {
      return fail(400, "This model does not support specifying dimensions.", "invalid_request_error");
    }
    let total = 0;
    const tokenCounts: number[] = [];
    for (const s of inputs as string[]) {
      if (s.length === 0) return fail(400, "'$.input' is invalid: empty string.", "invalid_request_error");
      const n = countTokens(s);
      if (n > OPENAI_LIMITS.maxTokensPerInput) {
        return fail(
          400,
          `This model's maximum context length is 8192 tokens, however you requested ${n} tokens in your input. Please reduce your input.`,
          "invalid_request_error",
        );
      }
      tokenCounts.push(n);
      total += n;
    }
    if (total > OPENAI_LIMITS.maxTokensPerRequest) {
      return fail(
        400,
        `Requested ${total} tokens, max ${OPENAI_LIMITS.maxTokensPerRequest} tokens per request`,
        "max_tokens_per_request",
      );
    }
    if (quota) {
      const taken = quota.take(total);
      if (!taken.ok) {
        const limit = taken.kind === "tokens" ? quota.tpm : quota.rpm;
        const per = taken.kind === "tokens" ? "tokens per min (TPM)" : "requests per min (RPM)";
        const wait = formatRateLimitDuration(taken.waitSeconds);
        return fail(
          429,
          `Rate limit reached for ${model} in organization org-fake on ${per}: Limit ${limit}, Used ${taken.used}, ` +
            `Requested ${taken.kind === "tokens" ? total : 1}. Please try again in ${wait}. ` +
            "Visit https://platform.openai.com/account/rate-limits to learn more.",
          taken.kind,
          { ...quota.headers(), "retry-after": String(Math.max(1, Math.ceil(taken.waitSeconds))) },
          "rate_limit_exceeded",
        );
      }
    }
    if (faults.poison?.some((p) => (inputs as string[]).some((s) => s.includes(p)))) {
      return fail(400, "Invalid 'input': the input was rejected.", "invalid_request_error");
    }

    const base64 = body.encoding_format === "base64";
    const data = (inputs as string[]).map((s, index) => {
      const v = offlineEmbedding(s, dims);
      return {
        object: "embedding",
        index,
        embedding: base64 ? Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("base64") : Array.from(v),
      };
    });
    stats.ok += 1;
    stats.byStatus[200] = (stats.byStatus[200] ?? 0) + 1;
    stats.inputs += inputs.length;
    stats.tokens += total;
    stats.batchSizes.push(inputs.length);
    stats.dimensions.push(dims);
    for (const s of inputs as string[]) stats.inputCounts.set(s, (stats.inputCounts.get(s) ?? 0) + 1);
    stats.maxInputTokens = Math.max(stats.maxInputTokens, ...tokenCounts);
    const second = Math.floor(Date.now() / 1000);
    stats.tokensBySecond.set(second, (stats.tokensBySecond.get(second) ?? 0) + total);
    res.writeHead(200, {
      "content-type": "application/json",
      "openai-model": model,
      "x-request-id": `req_fake_${stats.requests}`,
      ...quota?.headers(),
    });
    res.end(JSON.stringify({ object: "list", data, model, usage: { prompt_tokens: total, total_tokens: total } }));
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((e) => {
      if (!res.headersSent) openaiError(res, 500, String(e), "server_error");
      else res.destroy();
    });
  });
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve) => server.listen(opts.port ?? 0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/v1`,
    apiKey,
    get stats() {
      return current;
    },
    setFaults(f: FakeOpenAIFaults) {
      if (f.quota !== undefined) quota = f.quota ? new QuotaBuckets(f.quota.tpm, f.quota.rpm) : undefined;
      if (f.rateLimitFor) stormUntil = Date.now() + f.rateLimitFor.ms;
      // Copied, so the counters the server decrements are its own.
      faults = {
        ...faults,
        ...f,
        ...(f.rateLimit ? { rateLimit: { ...f.rateLimit } } : {}),
        ...(f.serverErrors ? { serverErrors: { ...f.serverErrors } } : {}),
      };
    },
    resetStats() {
      current = newStats();
    },
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
