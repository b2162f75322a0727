// The shape of a health report: what the `health` function answers, what `doctor --json` prints and
// what the dashboard reads. One zod schema, so every reader validates the same contract.
import { z } from "zod";

export const checkStatusSchema = z.enum(["ok", "warn", "fail"]);
export type CheckStatus = z.infer<typeof checkStatusSchema>;

export const checkResultSchema = z.object({
  name: z.string(),
  status: checkStatusSchema,
  /** One line for people; null when the caller may not see details. */
  detail: z.string().nullable(),
  /** The numbers behind the line (dashboard, --json); absent when the caller may not see details. */
  data: z.record(z.string(), z.unknown()).optional(),
  /** How long the check took; absent when the caller may not see details. */
  ms: z.number().optional(),
});
export type CheckResult = z.infer<typeof checkResultSchema>;

export const healthReportSchema = z.object({
  status: checkStatusSchema,
  environment: z.string().nullable(),
  checked_at: z.string(),
  duration_ms: z.number().optional(),
  checks: z.array(checkResultSchema),
});
export type HealthReport = z.infer<typeof healthReportSchema>;

const rank: Record<CheckStatus, number> = { ok: 0, warn: 1, fail: 2 };

/** The worst of the statuses (ok when there is none). */
export function worst(statuses: CheckStatus[]): CheckStatus {
  return statuses.reduce<CheckStatus>((w, s) => (rank[s] > rank[w] ? s : w), "ok");
}

/** 200 when nothing fails (warnings included), 503 otherwise. */
export function httpStatusOf(report: HealthReport): number {
  return report.status === "fail" ? 503 : 200;
}

/** What a caller without the service role sees: the overall status, the environment, check names and statuses. */
export function redact(report: HealthReport): HealthReport {
  return { ...report, checks: report.checks.map((c) => ({ name: c.name, status: c.status, detail: null })) };
}
