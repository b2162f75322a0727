// PISTE client for the Légifrance API: OAuth2 client credentials with a cached token, a token-bucket
// rate limit shared by every request, and retries that honour Retry-After.
//
// - The token is reused until 60 s before its announced expiry. Concurrent callers share one refresh.
// - A 401 means the token died early (PISTE revokes tokens on its side): refresh once and replay; a
//   second 401 in a row is a real authorisation error.
// - 429 waits Retry-After (or backoff) plus jitter; 5xx, timeouts and network errors back off
//   exponentially with jitter. 4xx other than 401/429 are not retried: the request itself is wrong.
import { z } from "zod";
import { createRateLimiter, type RateLimiter, sleep } from "./rate-limit.ts";

export interface PisteConfig {
  oauthUrl: string;
  apiUrl: string;
  clientId: string;
  clientSecret: string;
  /** Requests per second across all callers of this client (default 18, below a 20 req/s quota). */
  rps?: number;
  /** Retries after the first try for 429/5xx/network errors (default 6). */
  maxRetries?: number;
  /** Per-request timeout (default 30 s). */
  timeoutMs?: number;
  fetch?: typeof fetch;
  /** Backoff base in ms (default 250); tests shorten it. */
  backoffBaseMs?: number;
}

export class PisteHttpError extends Error {
  constructor(readonly status: number, readonly body: string, readonly path: string) {
    super(`PISTE ${path} answered ${status}: ${body.slice(0, 200)}`);
  }
}

export interface LegifranceApi {
  search(body: unknown, signal?: AbortSignal): Promise<unknown>;
  consult(endpoint: string, body: unknown, signal?: AbortSignal): Promise<unknown>;
}

export interface PisteClientStats {
  requests: number;
  retries: number;
  tokenRefreshes: number;
  status: Record<number, number>;
}

const tokenSchema = z.object({
  access_token: z.string().min(1),
  token_type: z.string().optional(),
  expires_in: z.coerce.number().positive().default(3600),
});

export class PisteClient implements LegifranceApi {
  readonly stats: PisteClientStats = { requests: 0, retries: 0, tokenRefreshes: 0, status: {} };
  private token: { value: string; refreshAt: number } | null = null;
  private refreshing: Promise<string> | null = null;
  private readonly limiter: RateLimiter;
  private readonly doFetch: typeof fetch;

  constructor(private readonly cfg: PisteConfig) {
    this.limiter = createRateLimiter(cfg.rps ?? 18);
    this.doFetch = cfg.fetch ?? fetch;
  }

  search(body: unknown, signal?: AbortSignal): Promise<unknown> {
    return this.post("/search", body, signal);
  }

  consult(endpoint: string, body: unknown, signal?: AbortSignal): Promise<unknown> {
    if (!/^[A-Za-z]+(\/[A-Za-z]+)?$/.test(endpoint)) throw new Error(`invalid consult endpoint ${endpoint}`);
    return this.post(`/consult/${endpoint}`, body, signal);
  }

  /** A valid access token: the cached one until 60 s before expiry, else one shared refresh. */
  async accessToken(): Promise<string> {
    if (this.token && performance.now() < this.token.refreshAt) return this.token.value;
    this.refreshing ??= this.fetchToken().finally(() => {
      this.refreshing = null;
    });
    return await this.refreshing;
  }

  private async fetchToken(): Promise<string> {
    this.stats.tokenRefreshes++;
    const res = await this.withRetries("/oauth/token", async (signal) => {
      const r = await this.doFetch(this.cfg.oauthUrl, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded", accept: "application/json" },
        body: new URLSearchParams({
          grant_type: "client_credentials",
          client_id: this.cfg.clientId,
          client_secret: this.cfg.clientSecret,
          scope: "openid",
        }),
        signal,
      });
      return r;
    });
    const parsed = tokenSchema.safeParse(JSON.parse(res));
    if (!parsed.success) throw new Error("PISTE token endpoint returned an unexpected body");
    const { access_token, expires_in } = parsed.data;
    this.token = { value: access_token, refreshAt: performance.now() + Math.max(0, expires_in - 60) * 1000 };
    return access_token;
  }

  private async post(path: string, body: unknown, signal?: AbortSignal): Promise<unknown> {
    let refreshedAfter401 = false;
    for (;;) {
      let token = "";
      try {
        const text = await this.withRetries(path, async (s) => {
          // The token is read after the rate limiter's wait, so a queued request never leaves with a
          // token that aged in the queue.
          await this.limiter.acquire(signal);
          token = await this.accessToken();
          return await this.doFetch(this.cfg.apiUrl + path, {
            method: "POST",
            headers: {
              "content-type": "application/json",
              accept: "application/json",
              authorization: `Bearer ${token}`,
            },
            body: JSON.stringify(body),
            signal: s,
          });
        }, signal);
        return JSON.parse(text);
      } catch (e) {
        if (e instanceof PisteHttpError && e.status === 401 && !refreshedAfter401) {
          refreshedAfter401 = true;
          // Drop the token only if nobody has replaced it already, so a burst of 401s costs one refresh.
          if (this.token?.value === token) this.token = null;
          continue;
        }
        throw e;
      }
    }
  }

  /** Runs one HTTP exchange with retries; returns the body text of a 2xx answer. */
  private async withRetries(
    path: string,
    send: (signal: AbortSignal) => Promise<Response>,
    outer?: AbortSignal,
  ): Promise<string> {
    const maxRetries = this.cfg.maxRetries ?? 6;
    const base = this.cfg.backoffBaseMs ?? 250;
    for (let attempt = 0;; attempt++) {
      const timeout = AbortSignal.timeout(this.cfg.timeoutMs ?? 30_000);
      const signal = outer ? AbortSignal.any([outer, timeout]) : timeout;
      let waitMs: number;
      let lastError: Error;
      try {
        this.stats.requests++;
        const res = await send(signal);
        this.stats.status[res.status] = (this.stats.status[res.status] ?? 0) + 1;
        const text = await res.text();
        if (res.ok) return text;
        lastError = new PisteHttpError(res.status, text, path);
        if (res.status !== 429 && res.status < 500) throw lastError;
        const retryAfter = parseRetryAfter(res.headers.get("retry-after"));
        waitMs = retryAfter ?? backoff(base, attempt);
      } catch (e) {
        if (outer?.aborted) throw e;
        if (e instanceof PisteHttpError && e.status !== 429 && e.status < 500) throw e;
        lastError = e as Error;
        waitMs = backoff(base, attempt);
      }
      if (attempt >= maxRetries) throw lastError;
      this.stats.retries++;
      // Jitter spreads the retries of concurrent requests so they do not hit the quota together.
      await sleep(waitMs + Math.random() * Math.min(1000, waitMs / 2 + 50), outer);
    }
  }
}

function backoff(base: number, attempt: number): number {
  return Math.min(30_000, base * 2 ** attempt);
}

/** Retry-After as seconds or an HTTP date, in ms; null when absent or unreadable. */
export function parseRetryAfter(v: string | null): number | null {
  if (!v) return null;
  const s = Number(v);
  if (Number.isFinite(s) && s >= 0) return Math.min(s * 1000, 120_000);
  const d = Date.parse(v);
  return Number.isNaN(d) ? null : Math.min(Math.max(0, d - Date.now()), 120_000);
}
