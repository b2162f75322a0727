// A token bucket of one token refilled every 1000/rps ms: each acquire() takes the next free slot.
// With a burst of one, any 1 s window holds at most rps + 1 requests, so rps = quota - 2 never trips
// a per-second quota even with timing jitter.
export interface RateLimiter {
  acquire(signal?: AbortSignal): Promise<void>;
}

export function createRateLimiter(rps: number): RateLimiter {
  if (!(rps > 0)) throw new Error("rps must be > 0");
  const interval = 1000 / rps;
  let next = 0;
  return {
    async acquire(signal) {
      const now = performance.now();
      const slot = Math.max(now, next);
      next = slot + interval;
      const wait = slot - now;
      if (wait > 0) await sleep(wait, signal);
    },
  };
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason ?? new Error("aborted"));
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal?.reason ?? new Error("aborted"));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
