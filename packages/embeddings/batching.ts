// Packs inputs into as few provider requests as the provider's limits allow.
import type { EmbeddingLimits } from "./provider.ts";

export interface PackItem {
  text: string;
  tokens: number;
}

/**
 * Greedy, order-preserving packing: each request holds at most `maxInputs` inputs and at most
 * `maxTokensPerRequest` tokens. Items over `maxTokensPerInput` must have been chunked before;
 * they are refused here rather than sent to fail. Returns the item indexes of each request.
 */
export function packRequests(items: PackItem[], limits: EmbeddingLimits): number[][] {
  const requests: number[][] = [];
  let current: number[] = [];
  let tokens = 0;
  for (let i = 0; i < items.length; i++) {
    const t = items[i].tokens;
    if (t > limits.maxTokensPerInput) {
      throw new Error(`input ${i} has ${t} tokens, over the provider's ${limits.maxTokensPerInput} per input`);
    }
    if (current.length > 0 && (current.length >= limits.maxInputs || tokens + t > limits.maxTokensPerRequest)) {
      requests.push(current);
      current = [];
      tokens = 0;
    }
    current.push(i);
    tokens += t;
  }
  if (current.length > 0) requests.push(current);
  return requests;
}
