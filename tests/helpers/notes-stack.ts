// The local stack (gateway + pg_net stand-in + the real functions) with the fake OpenAI server, on a
// test database holding one registered source table `notes(id, body)` and no active cron job, so
// only what a test does itself (a webhook, an invoke) starts a worker.
import type { SupabaseClient } from "@supabase/supabase-js";
import { afterAll, beforeAll } from "vitest";
import { createNodeClient } from "../../packages/connection/node-client.ts";
import type { LocalStack } from "../../packages/local-stack/index.ts";
import { startTestStack } from "../../packages/testkit/stack.ts";
import { type FakeOpenAI, startFakeOpenAI } from "../../packages/testkit/fake-openai.ts";
import { type TestDatabase, useTestDatabase } from "./db.ts";

export interface NotesStack {
  db: TestDatabase;
  /** A service-role supabase-js client of the running stack (set once beforeAll has run). */
  admin(): SupabaseClient;
  /** Calls made to process-embedding-queue so far: answered, plus still queued or in flight. */
  functionCalls(): Promise<number>;
}

export function useNotesStack(functionEnv: Record<string, string> = {}): NotesStack {
  const db = useTestDatabase();
  let fake: FakeOpenAI | undefined;
  let stack: LocalStack | undefined;
  let admin: SupabaseClient | undefined;

  beforeAll(async () => {
    fake = await startFakeOpenAI({ latencyMs: 20 });
    stack = await startTestStack({
      databaseUrl: db.url,
      functionEnv: {
        EMBEDDING_PROVIDER: "openai",
        OPENAI_API_KEY: fake.apiKey,
        OPENAI_BASE_URL: fake.url,
        ...functionEnv,
      },
    });
    admin = createNodeClient(stack.apiUrl, stack.secretKey);
    await db.sql`update cron.job set active = false`;
    await db.sql`create table notes (id bigint primary key, body text not null)`;
    await db.sql`select register_embedding_source('notes', array['body'])`;
  }, 90_000);

  afterAll(async () => {
    await stack?.stop();
    await fake?.stop();
  });

  return {
    db,
    admin: () => {
      if (!admin) throw new Error("the stack is not started yet");
      return admin;
    },
    async functionCalls() {
      const [r] = await db.sql<{ n: number }[]>`
        select (select count(*) from net.http_request_queue where url like '%/process-embedding-queue')::int
             + (select count(*) from net._http_response)::int as n`;
      return r.n;
    },
  };
}
