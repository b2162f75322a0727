import { createHash } from "node:crypto";

/** sha256 hex of the UTF-8 text: the same as SQL's encode(sha256(convert_to(t, 'UTF8')), 'hex'). */
export function contentHash(text: string): string {
  return createHash("sha256").update(text, "utf8").digest("hex");
}

/** pgvector's text form; 7 significant digits keep the payload small at no measurable loss. */
export function vectorLiteral(v: Float32Array): string {
  const parts = new Array<string>(v.length);
  for (let i = 0; i < v.length; i++) parts[i] = String(Number(v[i].toPrecision(7)));
  return `[${parts.join(",")}]`;
}
