import { createHash } from "node:crypto";

/** sha256 hex of the UTF-8 text: the same as SQL's encode(sha256(convert_to(t, 'UTF8')), 'hex'). */
export function contentHash(text: string): string {
  return createHash("sha256").update(text, "utf8").digest("hex");
}

// Scratch buffer for vectorLiteral: a float is at most "-0." + 8 digits + "," = 12 bytes.
let scratch = new Uint8Array(0);
const decoder = new TextDecoder();

/**
 * pgvector's text form, with 8 decimals (embedding components are within [-1, 1], so that keeps 6-7
 * significant digits, as many as float32 has). Written byte by byte into a reused buffer: formatting
 * 1536 numbers with toString() allocates thousands of short strings per vector, and at batchSize 500
 * that garbage alone grows the function's heap by tens of megabytes.
 */
export function vectorLiteral(v: Float32Array): string {
  const need = 2 + v.length * 13;
  if (scratch.length < need) scratch = new Uint8Array(need);
  const b = scratch;
  let p = 0;
  b[p++] = 91; // [
  for (let i = 0; i < v.length; i++) {
    if (i > 0) b[p++] = 44; // ,
    let x = v[i];
    if (!Number.isFinite(x)) throw new Error(`vector component ${i} is not finite`);
    if (x < 0) {
      b[p++] = 45; // -
      x = -x;
    }
    let n = Math.round(x * 1e8);
    const whole = Math.floor(n / 1e8);
    n -= whole * 1e8;
    // whole is 0 or 1 for unit vectors; larger values still print correctly.
    const ws = String(whole);
    for (let k = 0; k < ws.length; k++) b[p++] = ws.charCodeAt(k);
    if (n > 0) {
      b[p++] = 46; // .
      let digits = 8;
      while (n % 10 === 0) {
        n /= 10;
        digits--;
      }
      for (let d = digits - 1; d >= 0; d--) {
        b[p + d] = 48 + (n % 10);
        n = Math.floor(n / 10);
      }
      p += digits;
    }
  }
  b[p++] = 93; // ]
  return decoder.decode(b.subarray(0, p));
}
