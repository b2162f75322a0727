// When the pg_cron stand-in's ticker considers a job due (pure schedule arithmetic, no database).
import { describe, expect, it } from "vitest";
import { scheduleDue } from "../packages/local-stack/cron.ts";

const at = (iso: string) => Date.parse(iso);

describe("scheduleDue", () => {
  it("5-field expressions fire once per matching minute, in UTC", () => {
    expect(scheduleDue("*/5 * * * *", at("2026-01-01T12:04:59Z"), at("2026-01-01T12:05:00Z"))).toBe(true);
    expect(scheduleDue("*/5 * * * *", at("2026-01-01T12:05:00Z"), at("2026-01-01T12:09:59Z"))).toBe(false);
    expect(scheduleDue("*/5 * * * *", at("2026-01-01T12:05:00Z"), at("2026-01-01T12:10:00.400Z"))).toBe(true);
    expect(scheduleDue("17 3 * * *", at("2026-01-01T03:16:30Z"), at("2026-01-01T03:17:01Z"))).toBe(true);
    expect(scheduleDue("17 3 * * *", at("2026-01-01T03:17:01Z"), at("2026-01-02T03:16:59Z"))).toBe(false);
    expect(scheduleDue("0 */2 * * *", at("2026-01-01T01:59:59Z"), at("2026-01-01T02:00:00Z"))).toBe(true);
  });

  it("'N seconds' fires every N seconds", () => {
    expect(scheduleDue("1 seconds", 0, 999)).toBe(true); // within the tick slack
    expect(scheduleDue("1 seconds", 0, 900)).toBe(false);
    expect(scheduleDue("30 seconds", 0, 29_000)).toBe(false);
    expect(scheduleDue("30 seconds", 0, 30_000)).toBe(true);
  });

  it("rejects what pg_cron rejects", () => {
    expect(() => scheduleDue("not a schedule", 0, 1)).toThrow();
    expect(() => scheduleDue("0 seconds", 0, 1)).toThrow();
    expect(() => scheduleDue("90 seconds", 0, 1)).toThrow();
  });
});
