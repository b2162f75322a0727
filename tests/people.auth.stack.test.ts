// Sign-in on the local stack, with supabase-js itself: sign up (accepting an invitation to a client),
// sign in, search as that user, refresh, sign out, the admin API, and hosted's error shapes. Against
// the local stack (gateway /auth/v1 + Deno functions) on the real PostgreSQL.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthApiError, type SupabaseClient } from "@supabase/supabase-js";
import { decodeJwt, decodeProtectedHeader, importJWK, SignJWT } from "jose";
import { authConfigFromEnv, verifyJwt } from "../packages/core/auth.ts";
import { createNodeClient } from "../packages/connection/node-client.ts";
import type { LocalStack } from "../packages/local-stack/index.ts";
import { functionKeyEnv } from "../packages/local-stack/keys.ts";
import { startTestStack } from "../packages/testkit/stack.ts";
import { useTestDatabase, waitFor } from "./helpers/db.ts";

const db = useTestDatabase();
let stack: LocalStack;
let admin: SupabaseClient;
const acme = crypto.randomUUID();
const PASSWORD = "correct horse battery";

const client = () => createNodeClient(stack.apiUrl, stack.publishableKey);

async function invite(email: string, clientId = acme): Promise<string> {
  const { data, error } = await admin.functions.invoke("invitations", { body: { action: "invite", email, clientId } });
  expect(error).toBeNull();
  return data.token;
}

async function membershipsOf(email: string) {
  return await db
    .sql`select m.client_id::text, m.role from client_memberships m join auth.users u on u.id = m.user_id where u.email = ${email}`;
}

beforeAll(async () => {
  stack = await startTestStack({
    databaseUrl: db.url,
    functionEnv: { EMBEDDING_PROVIDER: "offline", EMBEDDING_DIMENSIONS: "1536" },
  });
  admin = createNodeClient(stack.apiUrl, stack.secretKey);
  await db.sql`update cron.job set active = false`;
  // One client with one document page, embedded by process-embedding-queue (woken through pg_net).
  await db.sql`insert into clients (id, name) values (${acme}, 'ACME')`;
  const [doc] = await db.sql`insert into client_documents (client_id, path, title, content, pages, mimetype, size)
    values (${acme}, ${`${acme}/bail.md`}, 'Bail', 'Le préavis du bail ACME est de trois mois.', 1, 'text/markdown', 40) returning id`;
  await db.sql`insert into client_document_pages (document_id, client_id, page, content)
               values (${doc.id}, ${acme}, 1, 'Le préavis du bail ACME est de trois mois.')`;
  await waitFor(
    "the page embedded",
    async () =>
      (await db.sql`select 1 from documentation_embeddings where source_table = 'client_document_pages'`).length > 0,
    60_000,
    200,
  );
}, 120_000);
afterAll(async () => {
  await stack?.stop();
});

describe("sign-up, sign-in and search as that user", () => {
  let alice: SupabaseClient;
  let firstRefresh: string;

  it("signs up with an invitation: a session with an ES256 token the functions verify, a profile, the membership", async () => {
    const token = await invite("alice@example.com");
    alice = client();
    const { data, error } = await alice.auth.signUp({
      email: "Alice@Example.com",
      password: PASSWORD,
      options: { data: { first_name: "Alice", last_name: "Martin", invitation_token: token } },
    });
    expect(error).toBeNull();
    expect(data.user).toMatchObject({ email: "alice@example.com", role: "authenticated", aud: "authenticated" });
    expect(data.user!.email_confirmed_at).toBeTruthy(); // confirmation is off locally
    expect(data.user!.user_metadata).toEqual({ first_name: "Alice", last_name: "Martin" }); // the spent token is gone
    const session = data.session!;
    firstRefresh = session.refresh_token;

    expect(decodeProtectedHeader(session.access_token)).toEqual({
      alg: "ES256",
      typ: "JWT",
      kid: stack.keys.signingJwk.kid,
    });
    const claims = decodeJwt(session.access_token);
    expect(claims).toMatchObject({
      sub: data.user!.id,
      role: "authenticated",
      aud: "authenticated",
      email: "alice@example.com",
      iss: `${stack.apiUrl}/auth/v1`,
      aal: "aal1",
      is_anonymous: false,
    });
    expect(claims.session_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(claims.exp! - claims.iat!).toBe(3600);
    // The functions' own check, from the variables the platform gives them (the JWKS).
    const v = await verifyJwt(session.access_token, authConfigFromEnv(functionKeyEnv(stack.keys)));
    expect(v).toMatchObject({ ok: true, caller: { role: "authenticated", via: "user_jwt", userId: data.user!.id } });

    const [profile] = await db
      .sql`select email, email_verified, first_name, last_name, plan from public.users where id = ${data.user!.id}`;
    expect(profile).toEqual({
      email: "alice@example.com",
      email_verified: true,
      first_name: "Alice",
      last_name: "Martin",
      plan: "free",
    });
    expect(await membershipsOf("alice@example.com")).toEqual([{ client_id: acme, role: "member" }]);
    const [hash] = await db.sql`select encrypted_password from auth.users where id = ${data.user!.id}`;
    expect(hash.encrypted_password).toMatch(/^\$2[aby]\$10\$/);
  });

  it("searches as that user through supabase-js: the client's document, and the log is theirs", async () => {
    const { data: { user } } = await alice.auth.getUser();
    const { data, error } = await alice.functions.invoke("search", {
      body: { query: "préavis du bail", mode: "text" },
    });
    expect(error).toBeNull();
    expect(data.results.map((r: { metadata: { client_id: string } }) => r.metadata.client_id)).toEqual([acme]);
    const [log] = await db.sql`select user_id::text from conversations where id = ${data.logId}`;
    expect(log.user_id).toBe(user!.id);
  });

  it("signs in with the password; a wrong password is hosted's 400 invalid_credentials", async () => {
    const bad = await client().auth.signInWithPassword({ email: "alice@example.com", password: "wrong password" });
    expect(bad.error).toBeInstanceOf(AuthApiError);
    expect(bad.error).toMatchObject({ status: 400, code: "invalid_credentials", message: "Invalid login credentials" });
    const unknown = await client().auth.signInWithPassword({ email: "nobody@example.com", password: PASSWORD });
    expect(unknown.error).toMatchObject({ status: 400, code: "invalid_credentials" });

    const again = client();
    const { data, error } = await again.auth.signInWithPassword({ email: "alice@example.com", password: PASSWORD });
    expect(error).toBeNull();
    expect(data.user!.email).toBe("alice@example.com");
    const search = await again.functions.invoke("search", { body: { query: "préavis du bail", mode: "text" } });
    expect(search.data.results).toHaveLength(1);
  });

  it("refresh rotates the refresh token; the spent one is refused and ends that session", async () => {
    const { data, error } = await alice.auth.refreshSession();
    expect(error).toBeNull();
    const next = data.session!;
    expect(next.refresh_token).not.toBe(firstRefresh);
    expect((await alice.auth.getUser(next.access_token)).data.user!.email).toBe("alice@example.com");
    const [stored] = await db.sql`select count(*)::int as n from auth.refresh_tokens where token = ${firstRefresh}`;
    expect(stored.n).toBe(0); // only hashes are kept

    const thief = client();
    const reused = await thief.auth.refreshSession({ refresh_token: firstRefresh });
    expect(reused.error).toMatchObject({
      status: 400,
      code: "refresh_token_already_used",
      message: "Invalid Refresh Token: Already Used",
    });
    // Reuse detection: the session that token belonged to is over, for its holder too.
    const after = await alice.auth.getUser(next.access_token);
    expect(after.error?.name).toBe("AuthSessionMissingError");
    const gone = await thief.auth.refreshSession({ refresh_token: next.refresh_token });
    expect(gone.error).toMatchObject({ status: 400, code: "refresh_token_not_found" });
  });

  it("sign-out ends the session: its access token no longer gets the user, its refresh token no longer refreshes", async () => {
    const c = client();
    const { data } = await c.auth.signInWithPassword({ email: "alice@example.com", password: PASSWORD });
    const { access_token, refresh_token } = data.session!;
    expect((await c.auth.signOut()).error).toBeNull();
    expect((await c.auth.getUser(access_token)).error?.name).toBe("AuthSessionMissingError");
    expect((await client().auth.refreshSession({ refresh_token })).error).toMatchObject({
      status: 400,
      code: "refresh_token_not_found",
    });
    const [s] = await db.sql`select count(*)::int as n from auth.sessions where id = ${decodeJwt(access_token)
      .session_id as string}`;
    expect(s.n).toBe(0);
  });

  it("the profile follows a metadata update", async () => {
    const c = client();
    await c.auth.signInWithPassword({ email: "alice@example.com", password: PASSWORD });
    const { data, error } = await c.auth.updateUser({ data: { first_name: "Alicia" } });
    expect(error).toBeNull();
    expect(data.user!.user_metadata).toMatchObject({ first_name: "Alicia", last_name: "Martin" });
    const [p] = await db.sql`select first_name, last_name from public.users where email = 'alice@example.com'`;
    expect(p).toEqual({ first_name: "Alicia", last_name: "Martin" });
  });
});

describe("hosted's errors", () => {
  it("an existing email is 422 user_already_exists; a weak password is 422 weak_password with its reason", async () => {
    const dup = await client().auth.signUp({ email: "alice@example.com", password: PASSWORD });
    expect(dup.error).toMatchObject({ status: 422, code: "user_already_exists", message: "User already registered" });
    const weak = await client().auth.signUp({ email: "weak@example.com", password: "12345" });
    expect(weak.error).toMatchObject({
      name: "AuthWeakPasswordError",
      status: 422,
      code: "weak_password",
      reasons: ["length"],
    });
    const [n] = await db.sql`select count(*)::int as n from auth.users where email = 'weak@example.com'`;
    expect(n.n).toBe(0);
  });

  it("an expired access token is 403 bad_jwt; the bodies have the 2024-01-01 shape, and the older one without the header", async () => {
    const [u] = await db.sql`select id::text from auth.users where email = 'alice@example.com'`;
    const now = Math.floor(Date.now() / 1000);
    const expired = await new SignJWT({ role: "authenticated", aud: "authenticated", session_id: crypto.randomUUID() })
      .setProtectedHeader({ alg: "ES256", typ: "JWT", kid: stack.keys.signingJwk.kid })
      .setSubject(u.id).setIssuedAt(now - 7200).setExpirationTime(now - 3600)
      .sign(await importJWK(stack.keys.signingJwk, "ES256"));
    const r = await client().auth.getUser(expired);
    expect(r.error).toMatchObject({ status: 403, code: "bad_jwt" });
    expect(r.error!.message).toMatch(/token is expired/);

    const raw = (headers: Record<string, string>) =>
      fetch(`${stack.apiUrl}/auth/v1/token?grant_type=password`, {
        method: "POST",
        headers: { apikey: stack.publishableKey, "content-type": "application/json", ...headers },
        body: JSON.stringify({ email: "alice@example.com", password: "nope nope" }),
      });
    const v2024 = await raw({ "x-supabase-api-version": "2024-01-01" });
    expect(v2024.status).toBe(400);
    expect(await v2024.json()).toEqual({ code: "invalid_credentials", message: "Invalid login credentials" });
    const legacy = await raw({});
    expect(await legacy.json()).toEqual({
      code: 400,
      error_code: "invalid_credentials",
      msg: "Invalid login credentials",
    });
    const noKey = await fetch(`${stack.apiUrl}/auth/v1/user`);
    expect(noKey.status).toBe(401);
  });

  it("says what is not served: confirmation is off (settings), magic links answer 501", async () => {
    const s = await fetch(`${stack.apiUrl}/auth/v1/settings`, { headers: { apikey: stack.publishableKey } });
    expect(await s.json()).toMatchObject({ mailer_autoconfirm: true, external: { email: true, phone: false } });
    const otp = await client().auth.signInWithOtp({ email: "alice@example.com" });
    expect(otp.error?.message).toMatch(/not served by the local stack's Auth/);
  });
});

describe("admin API with the secret key", () => {
  it("createUser, listUsers (paged), deleteUser; the profile comes and goes with the user", async () => {
    const created = await admin.auth.admin.createUser({
      email: "bob@example.com",
      password: PASSWORD,
      email_confirm: true,
      user_metadata: { first_name: "Bob" },
    });
    expect(created.error).toBeNull();
    const bob = created.data.user!;
    const [p] = await db.sql`select first_name, email_verified from public.users where id = ${bob.id}`;
    expect(p).toEqual({ first_name: "Bob", email_verified: true });
    expect((await client().auth.signInWithPassword({ email: "bob@example.com", password: PASSWORD })).error).toBeNull();
    const dup = await admin.auth.admin.createUser({ email: "bob@example.com", password: PASSWORD });
    expect(dup.error).toMatchObject({ status: 422, code: "email_exists" });

    const [{ n }] = await db.sql`select count(*)::int as n from auth.users`;
    const page1 = await admin.auth.admin.listUsers({ page: 1, perPage: 1 });
    expect(page1.error).toBeNull();
    expect(page1.data.users).toHaveLength(1);
    expect(page1.data).toMatchObject({ total: n, nextPage: 2, lastPage: n });
    const all = await admin.auth.admin.listUsers();
    expect(all.data.users.map((u) => u.email)).toContain("bob@example.com");

    const del = await admin.auth.admin.deleteUser(bob.id);
    expect(del.error).toBeNull();
    expect(del.data.user!.id).toBe(bob.id);
    expect(await db.sql`select 1 from auth.users where id = ${bob.id}`).toHaveLength(0);
    expect(await db.sql`select 1 from public.users where id = ${bob.id}`).toHaveLength(0);
  });

  it("an unconfirmed user made by the admin cannot sign in; a publishable key or a user's token is not admin", async () => {
    await admin.auth.admin.createUser({ email: "carol@example.com", password: PASSWORD });
    const r = await client().auth.signInWithPassword({ email: "carol@example.com", password: PASSWORD });
    expect(r.error).toMatchObject({ status: 400, code: "email_not_confirmed" });

    const anon = await client().auth.admin.listUsers();
    expect(anon.error).toMatchObject({ status: 403, code: "not_admin" });
    const c = client();
    const { data } = await c.auth.signInWithPassword({ email: "alice@example.com", password: PASSWORD });
    const res = await fetch(`${stack.apiUrl}/auth/v1/admin/users`, {
      headers: { apikey: stack.publishableKey, authorization: `Bearer ${data.session!.access_token}` },
    });
    expect(res.status).toBe(403);
  });
});

describe("invitations at sign-up and by explicit accept", () => {
  it("an expired or used token at sign-up gives no membership, and that user's search finds nothing of the client", async () => {
    // Used: alice's token, already spent. Expired: a fresh one, aged in SQL.
    const used = await db.sql`select 1 from invitations where email = 'alice@example.com' and accepted_at is not null`;
    expect(used).toHaveLength(1);
    const expiredToken = await invite("dave@example.com");
    await db.sql`update invitations set expires_at = now() - interval '1 minute' where email = 'dave@example.com'`;
    const dave = client();
    const { error } = await dave.auth.signUp({
      email: "dave@example.com",
      password: PASSWORD,
      options: { data: { invitation_token: expiredToken } },
    });
    expect(error).toBeNull(); // the sign-up itself succeeds
    expect(await membershipsOf("dave@example.com")).toEqual([]);
    const s = await dave.functions.invoke("search", { body: { query: "préavis du bail", mode: "text" } });
    expect(s.data.results).toEqual([]);

    const replay = await invite("erin@example.com");
    await db.sql`update invitations set accepted_at = now() where email = 'erin@example.com'`;
    expect(
      (await client().auth.signUp({
        email: "erin@example.com",
        password: PASSWORD,
        options: { data: { invitation_token: replay } },
      })).error,
    ).toBeNull();
    expect(await membershipsOf("erin@example.com")).toEqual([]);
  });

  it("a signed-in user accepts with the token: once, and only for their own email", async () => {
    const frank = client();
    await frank.auth.signUp({ email: "frank@example.com", password: PASSWORD });
    const forGrace = await invite("grace@example.com");
    const wrong = await frank.functions.invoke("invitations", { body: { action: "accept", token: forGrace } });
    expect(wrong.error?.context?.status).toBe(403);
    const token = await invite("frank@example.com");
    const ok = await frank.functions.invoke("invitations", { body: { action: "accept", token } });
    expect(ok.error).toBeNull();
    expect(ok.data).toEqual({ clientId: acme, role: "member" });
    expect(await membershipsOf("frank@example.com")).toEqual([{ client_id: acme, role: "member" }]);
    const twice = await frank.functions.invoke("invitations", { body: { action: "accept", token } });
    expect(twice.error?.context?.status).toBe(409);
    const s = await frank.functions.invoke("search", { body: { query: "préavis du bail", mode: "text" } });
    expect(s.data.results).toHaveLength(1);
  });
});
