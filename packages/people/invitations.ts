// The invitations function: invite an email to a client, accept an invitation as the signed-in user
// holding its token, list a client's invitations. The rules (who may invite, single use, expiry, the
// same email, the membership in the same transaction) live in SQL: invite_to_client and
// accept_invitation, which this calls with the id of the user it authenticated, never one from the body.
import { z } from "zod";
import type postgres from "postgres";
import type { Caller } from "../core/auth.ts";
import { readEnv } from "../core/env.ts";
import { errorResponse, guardRequest, json, type RequiredRole } from "../core/http.ts";
import { lazyRuntime } from "../search/handler.ts";
import { withCallerRights } from "../search/rights.ts";
import { userIdOf } from "../search/search.ts";

export const invitationsBodySchema = z.discriminatedUnion("action", [
  z.object({
    action: z.literal("invite"),
    email: z.email().max(320),
    clientId: z.uuid(),
    role: z.enum(["member", "editor", "admin"]).default("member"),
    validForHours: z.number().int().min(1).max(720).default(168),
  }).strict(),
  z.object({ action: z.literal("accept"), token: z.string().regex(/^[0-9a-f]{64}$/, "not an invitation token") })
    .strict(),
  z.object({
    action: z.literal("list"),
    clientId: z.uuid().optional(),
    status: z.enum(["pending", "accepted", "expired", "all"]).default("pending"),
  }).strict(),
]);
export type InvitationsBody = z.infer<typeof invitationsBodySchema>;

const ACTIONS = ["invite", "accept", "list"];
/** Every action needs a signed-in user or the service; the database then decides what that caller may do. */
const signedIn: RequiredRole = (raw) => {
  const a = raw && typeof raw === "object" ? (raw as Record<string, unknown>).action : undefined;
  return typeof a === "string" && ACTIONS.includes(a) ? "authenticated" : "service_role";
};

/** SQLSTATEs raised by invite_to_client / accept_invitation, as HTTP answers. */
const SQL_ERRORS: Record<string, number> = {
  "22023": 400, // bad email, role or validity
  "P0002": 404, // no such client / invitation (a replaced invitation's token included)
  "42501": 403, // not an admin of the client
  "PI003": 403, // the invitation is for another email
  "23505": 409, // already a member
  "PI001": 409, // already used
  "PI002": 410, // expired
};

export async function runInvitationAction(sql: postgres.Sql, caller: Caller, body: InvitationsBody): Promise<Response> {
  const userId = userIdOf(caller);
  switch (body.action) {
    case "invite": {
      const [inv] = await sql<
        { invitation_id: string; email: string; client_id: string; role: string; token: string; expires_at: Date }[]
      >`
        select * from public.invite_to_client(${body.email}, ${body.clientId}::uuid, ${body.role},
                                              ${caller.role === "service_role" ? null : userId}::uuid,
                                              make_interval(hours => ${body.validForHours}))`;
      return json({
        invitationId: inv.invitation_id,
        email: inv.email,
        clientId: inv.client_id,
        role: inv.role,
        // Shown once: only its hash is stored.
        token: inv.token,
        expiresAt: inv.expires_at.toISOString(),
      }, 201);
    }
    case "accept": {
      if (!userId) return errorResponse(403, "forbidden", "accept is done by the signed-in user the invitation is for");
      const [m] = await sql<
        { client_id: string; role: string }[]
      >`select * from public.accept_invitation(${userId}::uuid, ${body.token})`;
      return json({ clientId: m.client_id, role: m.role });
    }
    case "list": {
      // With the caller's rights: a client admin sees their clients' invitations, the service all.
      const rows = await withCallerRights(sql, caller, (tx) =>
        tx`
        select id as "invitationId", email, client_id as "clientId", role, invited_by as "invitedBy",
               created_at as "createdAt", expires_at as "expiresAt", accepted_at as "acceptedAt", accepted_by as "acceptedBy",
               case when accepted_at is not null then 'accepted' when expires_at <= now() then 'expired' else 'pending' end as status
          from public.invitations
         where (${body.clientId ?? null}::uuid is null or client_id = ${body.clientId ?? null}::uuid)
           and (${body.status} = 'all'
                or ${body.status} = case when accepted_at is not null then 'accepted' when expires_at <= now() then 'expired' else 'pending' end)
         order by created_at desc, id
         limit 500`);
      return json({ invitations: rows });
    }
  }
}

export function createInvitationsHandler(source: Record<string, string | undefined> = readEnv()) {
  const getRuntime = lazyRuntime(source, false);
  return async function handle(req: Request): Promise<Response> {
    const guarded = await guardRequest(req, invitationsBodySchema, signedIn, source);
    if (!guarded.ok) return guarded.response;
    try {
      const { sql } = await getRuntime();
      return await runInvitationAction(sql, guarded.value.caller, guarded.value.body);
    } catch (e) {
      const err = e as { code?: string; message?: string };
      const status = err.code ? SQL_ERRORS[err.code] : undefined;
      if (status) return errorResponse(status, err.message ?? "refused");
      console.error(`invitations: ${err.message ?? e}`);
      return errorResponse(500, "invitations failed");
    }
  };
}
