// Token counting and token-aware chunking with cl100k_base, the tokenizer of OpenAI's
// text-embedding-3 models. gpt-tokenizer ships its ranks in the package: nothing is downloaded.
import { decode, encode } from "gpt-tokenizer/encoding/cl100k_base";

export function countTokens(text: string): number {
  return encode(text).length;
}

export interface Chunk {
  index: number;
  text: string;
  tokens: number;
}

/**
 * Splits text into chunks of at most `maxTokens` tokens, consecutive chunks sharing
 * `overlapTokens`. A text that fits is one chunk, unchanged (so its hash is the text's own).
 * Windows are cut on token boundaries; each chunk is re-counted after decoding, and a window whose
 * decoded text grew past the limit (a multi-byte character split across tokens) is shrunk.
 */
export function chunkText(text: string, maxTokens: number, overlapTokens: number): Chunk[] {
  if (maxTokens < 1) throw new Error("maxTokens must be >= 1");
  const overlap = Math.max(0, Math.min(overlapTokens, maxTokens - 1));
  const ids = encode(text);
  if (ids.length <= maxTokens) return [{ index: 0, text, tokens: ids.length }];
  const chunks: Chunk[] = [];
  const step = maxTokens - overlap;
  for (let start = 0; start < ids.length; start += step) {
    let end = Math.min(start + maxTokens, ids.length);
    let piece = decode(ids.slice(start, end));
    let n = countTokens(piece);
    while (n > maxTokens && end > start + 1) {
      end -= 1;
      piece = decode(ids.slice(start, end));
      n = countTokens(piece);
    }
    chunks.push({ index: chunks.length, text: piece, tokens: n });
    if (end >= ids.length) break;
  }
  return chunks;
}
