// The conversations function: save the assistant's answer for a logged query, give feedback, list the
// caller's conversations, archive one. Every statement runs with the caller's rights (RLS: a user
// reaches only their own rows; the service role all of them), so "not found" also covers "not yours".
import { z } from "zod";
import type postgres from "postgres";
import type { Caller } from "../core/auth.ts";
import { readEnv } from "../core/env.ts";
import { errorResponse, guardRequest, json, readsNeedAuthenticated } from "../core/http.ts";
import { pgUuid } from "../core/validation.ts";
import { lazyRuntime } from "./handler.ts";
import { withCallerRights } from "./rights.ts";
import { userIdOf } from "./search.ts";

export const conversationsBodySchema = z.discriminatedUnion("action", [
  z.object({ action: z.literal("answer"), logId: pgUuid, response: z.string().min(1).max(100_000) }).strict(),
  z.object({
    action: z.literal("feedback"),
    logId: pgUuid,
    rating: z.union([z.literal(1), z.literal(-1)]),
    comment: z.string().max(4000).optional(),
  }).strict(),
  z.object({
    action: z.literal("list"),
    status: z.enum(["active", "archived", "all"]).default("active"),
    conversationId: pgUuid.optional(),
    limit: z.number().int().min(1).max(200).default(50),
  }).strict(),
  z.object({ action: z.literal("archive"), conversationId: pgUuid }).strict(),
]);
export type ConversationsBody = z.infer<typeof conversationsBodySchema>;

const ACTIONS = ["answer", "feedback", "list", "archive"];

export async function runConversationAction(
  sql: postgres.Sql,
  caller: Caller,
  body: ConversationsBody,
): Promise<Response> {
  return await withCallerRights(sql, caller, async (tx) => {
    switch (body.action) {
      case "answer": {
        const rows = await tx`
          update public.conversations set response = ${body.response}, answered_at = now(), updated_at = now()
           where id = ${body.logId} returning id as "logId", conversation_id as "conversationId", answered_at as "answeredAt"`;
        return rows.length ? json(rows[0]) : errorResponse(404, "no such logged query");
      }
      case "feedback": {
        const [entry] = await tx<
          { user_id: string | null }[]
        >`select user_id from public.conversations where id = ${body.logId}`;
        if (!entry) return errorResponse(404, "no such logged query");
        // The feedback belongs to the entry's user (null for a service's own query).
        const owner = userIdOf(caller) ?? entry.user_id;
        const rows = await tx`
          insert into public.feedback (conversation_entry_id, user_id, rating, comment)
          values (${body.logId}, ${owner}::uuid, ${body.rating}, ${body.comment ?? null})
          on conflict (conversation_entry_id) do update
             set rating = excluded.rating, comment = excluded.comment, updated_at = now()
          returning id::text, conversation_entry_id as "logId", rating, comment`;
        return json(rows[0]);
      }
      case "list": {
        const rows = await tx`
          select log_id as "logId", conversation_id as "conversationId", user_id as "userId", question, response,
                 sources, status, feedback_rating as "feedbackRating", feedback_comment as "feedbackComment",
                 created_at as "createdAt", answered_at as "answeredAt"
            from public.user_questions_complete
           where (${body.status} = 'all' or status = ${body.status})
             and (${body.conversationId ?? null}::uuid is null or conversation_id = ${
          body.conversationId ?? null
        }::uuid)
           order by created_at desc, log_id
           limit ${body.limit}`;
        return json({ entries: rows });
      }
      case "archive": {
        const rows = await tx`
          update public.conversations set status = 'archived', updated_at = now()
           where conversation_id = ${body.conversationId} and status = 'active' returning id`;
        const [{ n }] = await tx<{ n: number }[]>`
          select count(*)::int as n from public.conversations where conversation_id = ${body.conversationId}`;
        return n === 0
          ? errorResponse(404, "no such conversation")
          : json({ conversationId: body.conversationId, archived: rows.length });
      }
    }
  });
}

export function createConversationsHandler(source: Record<string, string | undefined> = readEnv()) {
  const getRuntime = lazyRuntime(source, false);
  return async function handle(req: Request): Promise<Response> {
    const guarded = await guardRequest(req, conversationsBodySchema, readsNeedAuthenticated("action", ACTIONS), source);
    if (!guarded.ok) return guarded.response;
    try {
      const { sql } = await getRuntime();
      return await runConversationAction(sql, guarded.value.caller, guarded.value.body);
    } catch (e) {
      const err = e as { code?: string; message?: string };
      console.error(`conversations: ${err.message ?? e}`);
      return errorResponse(500, "conversations failed", err.message);
    }
  };
}
