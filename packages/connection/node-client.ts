// supabase-js for Node 20 tools and tests, against a hosted project or the local stack. createClient()
// builds a Realtime client eagerly and Node 20 has no global WebSocket, so it throws before any call;
// none of these callers uses Realtime, so this hands it a transport that refuses to connect.
// (Deno and Node 22+ have WebSocket: plain createClient works there.)
import { createClient, type SupabaseClient } from "@supabase/supabase-js";

class NoRealtime {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSING = 2;
  static readonly CLOSED = 3;
  constructor() {
    throw new Error("Realtime is not used by the Node tools (Node 20 has no WebSocket)");
  }
}

/** `accessToken`: a signed-in user's JWT, sent as Authorization beside the (publishable) key. */
export function createNodeClient(apiUrl: string, key: string, opts: { accessToken?: string } = {}): SupabaseClient {
  const g = globalThis as { WebSocket?: unknown };
  const token = opts.accessToken;
  return createClient(apiUrl, key, {
    ...(token
      ? { accessToken: () => Promise.resolve(token) }
      : { auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false } }),
    ...(g.WebSocket ? {} : { realtime: { transport: NoRealtime as never } }),
  });
}
