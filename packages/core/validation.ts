// Input rules shared by every function's body schema: what PostgreSQL itself will accept, checked at
// the boundary so a bad value is a 400 naming its field instead of an error from the database.
import { z } from "zod";

/**
 * A UUID in any spelling PostgreSQL's `uuid` input accepts: upper or lower case, with or without
 * braces, with all, some or none of the hyphens (a hyphen may follow any group of four digits). The
 * value is given back in the canonical lower-case 8-4-4-4-12 form. Unlike `z.uuid()`, the version and
 * variant digits are not checked: PostgreSQL stores any 128-bit value, so any id it holds can be named.
 */
export const pgUuid = z.string().transform((s, ctx) => {
  const inner = s.startsWith("{") && s.endsWith("}") ? s.slice(1, -1) : s;
  if (!/^[0-9a-fA-F]{4}(?:-?[0-9a-fA-F]{4}){7}$/.test(inner)) {
    ctx.addIssue({ code: "custom", message: "Invalid UUID (32 hex digits, hyphens optional)" });
    return z.NEVER;
  }
  const hex = inner.replaceAll("-", "").toLowerCase();
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
});

/**
 * Where a parsed JSON value holds a NUL character (U+0000), in a string or in an object key, as zod
 * issue paths. PostgreSQL's text and jsonb types cannot store NUL ("invalid byte sequence for encoding
 * UTF8: 0x00"), so such a value must never reach SQL: every body is checked before its schema runs.
 */
export function nulPaths(value: unknown, path: PropertyKey[] = [], found: PropertyKey[][] = []): PropertyKey[][] {
  if (typeof value === "string") {
    if (value.includes("\u0000")) found.push(path);
  } else if (Array.isArray(value)) {
    value.forEach((v, i) => nulPaths(v, [...path, i], found));
  } else if (value && typeof value === "object") {
    for (const [k, v] of Object.entries(value)) {
      if (k.includes("\u0000")) found.push([...path, k]);
      else nulPaths(v, [...path, k], found);
    }
  }
  return found;
}

export const NUL_MESSAGE = "contains a NUL character (\\u0000), which PostgreSQL text cannot hold";
