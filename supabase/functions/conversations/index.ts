// conversations: answer / feedback / list / archive on the caller's own logged questions (RLS decides).
// Logic in packages/search/conversations.ts.
import { createConversationsHandler } from "../../../packages/search/conversations.ts";

const handle = createConversationsHandler();

export default {
  fetch: (req: Request) => handle(req),
} satisfies Deno.ServeDefaultExport;
