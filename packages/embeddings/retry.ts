// Retrying a provider call: 429, 5xx, timeouts and connection errors are retried with exponential
// backoff and full jitter, or exactly after the provider's Retry-After when it sends one, and never
// past the caller's deadline (the worker's wall-clock budget and lease). Anything else is thrown at
// once.
import { EmbeddingProviderError } from "./provider.ts";

export interface RetryOptions {
  maxAttempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
  /** Epoch ms after which no new attempt starts. */
  deadline: number;
  sleep?: (ms: number) => Promise<void>;
  onRetry?: (error: EmbeddingProviderError, delayMs: number, attempt: number) => void;
}

export const defaultSleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Thrown when retries ran out (attempts or time); carries the last error and its Retry-After. */
export class RetriesExhaustedError extends Error {
  constructor(readonly last: EmbeddingProviderError, readonly attempts: number) {
    super(`provider still failing after ${attempts} attempt(s): ${last.message}`);
    this.name = "RetriesExhaustedError";
  }
}

export async function withRetry<T>(fn: () => Promise<T>, o: RetryOptions): Promise<T> {
  const sleep = o.sleep ?? defaultSleep;
  for (let attempt = 1;; attempt++) {
    try {
      return await fn();
    } catch (e) {
      if (!(e instanceof EmbeddingProviderError) || !e.retryable) throw e;
      const backoff = Math.random() * Math.min(o.maxDelayMs, o.baseDelayMs * 2 ** (attempt - 1));
      const delay = e.retryAfterMs !== undefined ? e.retryAfterMs : backoff;
      if (attempt >= o.maxAttempts || Date.now() + delay >= o.deadline) throw new RetriesExhaustedError(e, attempt);
      o.onRetry?.(e, delay, attempt);
      await sleep(delay);
    }
  }
}
