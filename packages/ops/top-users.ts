// The dashboard's "top users": usage_by_user's daily rows over the last days, summed per user, most
// questions first. Read as the service (the view is the service's only). A project whose migrations
// predate the view answers an empty list rather than breaking the page.
import type postgres from "postgres";

export interface TopUser {
  user_id: string;
  email: string | null;
  first_name: string | null;
  last_name: string | null;
  questions: number;
  answered: number;
  negative_feedback: number;
  unanswered: number;
  first_activity: string;
  last_activity: string;
}

export async function topUsers(sql: postgres.Sql, days = 30, limit = 10): Promise<TopUser[]> {
  const [{ present }] = await sql<
    { present: boolean }[]
  >`select to_regclass('public.usage_by_user') is not null as present`;
  if (!present) return [];
  const rows = await sql<
    (Omit<TopUser, "first_activity" | "last_activity"> & { first_activity: Date; last_activity: Date })[]
  >`
    select user_id::text, email, first_name, last_name,
           sum(questions)::int as questions, sum(answered)::int as answered,
           sum(negative_feedback)::int as negative_feedback, sum(unanswered)::int as unanswered,
           min(first_activity) as first_activity, max(last_activity) as last_activity
      from public.usage_by_user
     where period = 'day' and period_start >= date_trunc('day', now()) - make_interval(days => ${days - 1})
     group by user_id, email, first_name, last_name
     order by questions desc, last_activity desc, user_id
     limit ${limit}`;
  return rows.map((r) => ({
    ...r,
    first_activity: r.first_activity.toISOString(),
    last_activity: r.last_activity.toISOString(),
  }));
}
