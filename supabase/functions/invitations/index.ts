// invitations: invite an email to a client (the service or an admin of the client), accept an
// invitation as the signed-in user it is for, list a client's invitations. Logic in packages/people.
import { createInvitationsHandler } from "../../../packages/people/invitations.ts";

const handle = createInvitationsHandler();

export default {
  fetch: (req: Request) => handle(req),
} satisfies Deno.ServeDefaultExport;
