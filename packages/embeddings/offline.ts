// The offline embeddings provider: deterministic and LEXICAL, not semantic. A text's vector is the
// L2-normalised sum of hashed features (lower-cased words, and character 3-grams inside words),
// each added with a hash-chosen sign to a hash-chosen dimension. Texts sharing words or word
// fragments get a high cosine similarity; synonyms do not. It needs no network and no model, so
// the whole system runs (and its search returns sensible lexical matches) without any key.
import type { EmbeddingLimits, EmbeddingProvider, EmbeddingResult } from "./provider.ts";
import { countTokens } from "./tokens.ts";

export const OFFLINE_MODEL = "offline-lexical-v1";

// FNV-1a, 32-bit: fast, stable across runtimes.
function fnv1a(s: string, seed = 0x811c9dc5): number {
  let h = seed;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

function addFeature(v: Float32Array, feature: string, weight: number): void {
  const h = fnv1a(feature);
  const sign = (fnv1a(feature, 0x9747b28c) & 1) === 0 ? 1 : -1;
  v[h % v.length] += sign * weight;
}

/** The offline vector of one text: deterministic for (text, dimensions). */
export function offlineEmbedding(text: string, dimensions: number): Float32Array {
  const v = new Float32Array(dimensions);
  const words = text.toLowerCase().normalize("NFKD").replace(/[\u0300-\u036f]/g, "").match(/[\p{L}\p{N}]+/gu) ?? [];
  for (const w of words) {
    addFeature(v, `w:${w}`, 1);
    const padded = `^${w}$`;
    for (let i = 0; i + 3 <= padded.length; i++) addFeature(v, `c:${padded.slice(i, i + 3)}`, 0.25);
  }
  let norm = 0;
  for (let i = 0; i < v.length; i++) norm += v[i] * v[i];
  norm = Math.sqrt(norm);
  if (norm === 0) {
    v[0] = 1; // the empty text still gets a valid unit vector
  } else {
    for (let i = 0; i < v.length; i++) v[i] /= norm;
  }
  return v;
}

export class OfflineEmbeddingProvider implements EmbeddingProvider {
  readonly name = "offline";
  readonly model = OFFLINE_MODEL;
  readonly limits: EmbeddingLimits = { maxInputs: 2048, maxTokensPerRequest: 300_000, maxTokensPerInput: 8191 };
  constructor(readonly dimensions: number) {}

  embed(inputs: string[]): Promise<EmbeddingResult> {
    let tokens = 0;
    const vectors = inputs.map((t) => {
      tokens += countTokens(t);
      return offlineEmbedding(t, this.dimensions);
    });
    return Promise.resolve({ vectors, tokens });
  }
}
