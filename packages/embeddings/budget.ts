// Pacing provider requests through the budget every invocation shares (embedding_provider_budget).
// The arithmetic (reservation bucket, learned limits, Retry-After pauses) is SQL; this module only
// calls it around each request: reserve before sending, learn from the response after.
import type postgres from "postgres";
import type { ProviderBudget, RateLimitHeaders } from "./provider.ts";

/** The budget is spent further ahead than the caller may wait: its reservation was refunded. */
export class BudgetDeferredError extends Error {
  constructor(readonly waitMs: number) {
    super(`provider budget spent for the next ${(waitMs / 1000).toFixed(1)} s (tokens/requests per minute); deferred`);
    this.name = "BudgetDeferredError";
  }
}

// Headers are fed back at most this often per invocation: at steady pace they change little, and
// each note is a round trip. A 429 is always noted, so every worker pauses at once.
const NOTE_INTERVAL_MS = 1_000;

/** One invocation's view of the shared budget for (provider, model). */
export class ProviderPacer {
  /** Time spent waiting for the budget, in total. */
  waitedMs = 0;
  private lastNoteAt = 0;

  constructor(
    private readonly sql: postgres.Sql,
    private readonly provider: string,
    private readonly model: string,
    private readonly configured: ProviderBudget,
    private readonly log?: (line: string) => void,
  ) {}

  /**
   * Reserves one request of `tokens` and waits until it may be sent. When that would be past
   * `sendBy` (epoch ms), refunds the reservation and throws BudgetDeferredError with the wait.
   */
  async reserve(tokens: number, sendBy: number): Promise<void> {
    const [{ wait }] = await this.sql<{ wait: number }[]>`
      select public.acquire_embedding_budget(${this.provider}, ${this.model}, ${tokens}::int, 1,
        ${this.configured.tpm ?? null}::bigint, ${this.configured.rpm ?? null}::bigint) as wait`;
    const waitMs = Math.ceil(wait * 1000);
    if (waitMs <= 0) return;
    if (Date.now() + waitMs >= sendBy) {
      await this.sql`select public.refund_embedding_budget(${this.provider}, ${this.model}, ${tokens}::int, 1)`;
      throw new BudgetDeferredError(waitMs);
    }
    this.waitedMs += waitMs;
    await new Promise<void>((r) => setTimeout(r, waitMs));
  }

  /**
   * Feeds a response's rate-limit headers back, throttled unless `rateLimited` (a 429, whose
   * Retry-After then pauses every worker). Best effort: a failed note costs accuracy, not the batch.
   */
  async learn(headers: RateLimitHeaders | undefined, rateLimited = false, retryAfterMs?: number): Promise<void> {
    const now = Date.now();
    const pause = rateLimited && retryAfterMs !== undefined && retryAfterMs > 0;
    if (!rateLimited && (!headers || now - this.lastNoteAt < NOTE_INTERVAL_MS)) return;
    if (!pause && !headers) return;
    this.lastNoteAt = now;
    try {
      await this.sql`select public.note_embedding_rate_limits(${this.provider}, ${this.model},
        ${JSON.stringify(headers ?? {})}::text::jsonb, ${pause ? retryAfterMs / 1000 : null}::float8)`;
    } catch (e) {
      this.log?.(`provider budget: could not note rate limits: ${e instanceof Error ? e.message : e}`);
    }
  }
}
