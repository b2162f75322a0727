// The local stack's Auth: the part of Supabase Auth (GoTrue) that supabase-js uses for people with an
// email and a password, served by the gateway under /auth/v1 against the auth.users, auth.sessions and
// auth.refresh_tokens tables of the platform bootstrap (hosted's names and types).
//
//   POST /signup                         sign up (email confirmation is off: the user is confirmed at once)
//   POST /token?grant_type=password      sign in
//   POST /token?grant_type=refresh_token refresh: the token is single-use and rotates; reusing a spent one
//                                        ends its whole session (hosted's reuse detection, without the
//                                        10-second grace it gives concurrent refreshes)
//   GET  /user, PUT /user                the signed-in user; update its metadata or password
//   POST /logout?scope=global|local|others
//   GET|POST /admin/users, GET|PUT|DELETE /admin/users/<id>   service role only
//   GET  /settings                       says what is served (mailer_autoconfirm: true)
//
// Access tokens are ES256 JWTs signed with the stack's key (its public half is the JWKS the functions
// verify against) and carry hosted's claims. Passwords are bcrypt hashes (cost 10, as hosted), made
// with bcryptjs outside any transaction: a hash costs tens of milliseconds of CPU. Errors have hosted's
// statuses and bodies, in the 2024-01-01 API shape ({code, message}) that supabase-js asks for, or the
// older one ({code: status, error_code, msg}) for a client that does not send X-Supabase-Api-Version.
import { createHash, randomBytes, randomUUID } from "node:crypto";
import bcrypt from "bcryptjs";
import { createLocalJWKSet, importJWK, type JSONWebKeySet, type JWK, type JWTPayload, jwtVerify, SignJWT } from "jose";
import type postgres from "postgres";
import { z } from "zod";
import { type AuthConfig, authenticate } from "../core/auth.ts";

export interface AuthApiOptions {
  sql: postgres.Sql;
  /** Credentials accepted as apikey, and the service role's for /admin (keys.ts gatewayAuthConfig). */
  auth: AuthConfig;
  signingJwk: JWK;
  jwks: JSONWebKeySet;
  /** The issuer, `<API URL>/auth/v1`, known once the gateway listens. */
  issuer: () => string;
  accessTokenTtlSeconds?: number;
}

const API_VERSION = "2024-01-01";
const BCRYPT_COST = 10;
const MIN_PASSWORD = 6;
/** bcrypt reads at most 72 bytes; hosted refuses longer passwords rather than truncating them. */
const MAX_PASSWORD_BYTES = 72;

interface UserRow {
  id: string;
  aud: string | null;
  role: string | null;
  email: string | null;
  encrypted_password: string | null;
  email_confirmed_at: Date | null;
  confirmed_at: Date | null;
  last_sign_in_at: Date | null;
  raw_app_meta_data: Record<string, unknown> | null;
  raw_user_meta_data: Record<string, unknown> | null;
  created_at: Date;
  updated_at: Date;
  banned_until: Date | null;
  is_anonymous: boolean;
}

class AuthError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

const err = {
  badJson: () => new AuthError(400, "bad_json", "Could not parse request body as JSON"),
  validation: (m: string) => new AuthError(400, "validation_failed", m),
  invalidCredentials: () => new AuthError(400, "invalid_credentials", "Invalid login credentials"),
  emailNotConfirmed: () => new AuthError(400, "email_not_confirmed", "Email not confirmed"),
  userExists: () => new AuthError(422, "user_already_exists", "User already registered"),
  emailExists: () => new AuthError(422, "email_exists", "A user with this email address has already been registered"),
  weakPassword: () =>
    new AuthError(422, "weak_password", `Password should be at least ${MIN_PASSWORD} characters.`, {
      weak_password: { reasons: ["length"] },
    }),
  longPassword: () =>
    new AuthError(422, "validation_failed", `Password cannot be longer than ${MAX_PASSWORD_BYTES} characters`),
  noAuthorization: () => new AuthError(401, "no_authorization", "This endpoint requires a valid Bearer token"),
  badJwt: (why: string) => new AuthError(403, "bad_jwt", `invalid JWT: unable to parse or verify signature, ${why}`),
  sessionNotFound: () => new AuthError(403, "session_not_found", "Session from session_id claim in JWT does not exist"),
  userFromJwtMissing: () => new AuthError(403, "user_not_found", "User from sub claim in JWT does not exist"),
  refreshNotFound: () =>
    new AuthError(400, "refresh_token_not_found", "Invalid Refresh Token: Refresh Token Not Found"),
  refreshUsed: () => new AuthError(400, "refresh_token_already_used", "Invalid Refresh Token: Already Used"),
  userNotFound: () => new AuthError(404, "user_not_found", "User not found"),
  notAdmin: () => new AuthError(403, "not_admin", "User not allowed"),
  banned: () => new AuthError(400, "user_banned", "User is banned"),
  grantType: () => new AuthError(400, "unsupported_grant_type", "unsupported_grant_type"),
  notFound: () => new AuthError(404, "not_found", "Not Found"),
  notServed: (what: string) =>
    new AuthError(
      501,
      "not_served_locally",
      `${what} is not served by the local stack's Auth (email + password sign-in only)`,
    ),
  noApiKey: () => new AuthError(401, "no_api_key", "No API key found in request"),
  badApiKey: () => new AuthError(401, "invalid_api_key", "Invalid API key"),
};

const email = z.string().trim().toLowerCase().pipe(
  z.email({ error: "Unable to validate email address: invalid format" }),
);
const metadata = z.record(z.string(), z.unknown());
const signUpBody = z.object({ email, password: z.string(), data: metadata.optional() }).loose();
const passwordGrantBody = z.object({ email, password: z.string() }).loose();
const refreshGrantBody = z.object({ refresh_token: z.string().min(1).max(255) }).loose();
const updateUserBody = z.object({
  data: metadata.optional(),
  password: z.string().optional(),
  email: z.string().optional(),
}).loose();
const adminCreateBody = z.object({
  email,
  password: z.string().optional(),
  email_confirm: z.boolean().optional(),
  user_metadata: metadata.optional(),
  app_metadata: metadata.optional(),
  id: z.uuid().optional(),
}).loose();
const adminUpdateBody = z.object({
  password: z.string().optional(),
  email_confirm: z.boolean().optional(),
  user_metadata: metadata.optional(),
  app_metadata: metadata.optional(),
  ban_duration: z.string().optional(),
}).loose();
const listQuery = z.object({
  page: z.coerce.number().int().min(1).catch(1),
  per_page: z.coerce.number().int().min(1).max(1000).catch(50),
});
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Refresh tokens are kept as their SHA-256: a leaked table row cannot be replayed. */
const tokenHash = (token: string) => createHash("sha256").update(token).digest("hex");

function checkPassword(password: string): void {
  if (password.length < MIN_PASSWORD) throw err.weakPassword();
  if (Buffer.byteLength(password) > MAX_PASSWORD_BYTES) throw err.longPassword();
}

/** A user as Supabase Auth answers it. */
function userJson(u: UserRow): Record<string, unknown> {
  return {
    id: u.id,
    aud: u.aud ?? "authenticated",
    role: u.role ?? "authenticated",
    email: u.email ?? "",
    email_confirmed_at: u.email_confirmed_at?.toISOString(),
    phone: "",
    confirmed_at: u.confirmed_at?.toISOString(),
    last_sign_in_at: u.last_sign_in_at?.toISOString(),
    app_metadata: u.raw_app_meta_data ?? {},
    user_metadata: u.raw_user_meta_data ?? {},
    identities: [],
    created_at: u.created_at.toISOString(),
    updated_at: u.updated_at.toISOString(),
    is_anonymous: u.is_anonymous,
  };
}

const jwksCache = new WeakMap<JSONWebKeySet, ReturnType<typeof createLocalJWKSet>>();

export function createAuthApi(opts: AuthApiOptions): (req: Request, path: string) => Promise<Response> {
  const { sql } = opts;
  const ttl = opts.accessTokenTtlSeconds ?? 3600;
  let signingKey: Promise<CryptoKey | Uint8Array> | null = null;
  // Checking a password against this for an unknown email keeps sign-in's timing the same for both answers.
  let dummyHash: Promise<string> | null = null;

  async function accessToken(
    u: UserRow,
    sessionId: string,
    amr: { method: string; timestamp: number }[],
  ): Promise<{ token: string; exp: number }> {
    signingKey ??= importJWK(opts.signingJwk, "ES256");
    const now = Math.floor(Date.now() / 1000);
    const exp = now + ttl;
    const token = await new SignJWT({
      aud: "authenticated",
      email: u.email ?? "",
      phone: "",
      app_metadata: u.raw_app_meta_data ?? {},
      user_metadata: u.raw_user_meta_data ?? {},
      role: u.role ?? "authenticated",
      aal: "aal1",
      amr,
      session_id: sessionId,
      is_anonymous: u.is_anonymous,
    })
      .setProtectedHeader({ alg: "ES256", typ: "JWT", kid: opts.signingJwk.kid })
      .setIssuer(opts.issuer())
      .setSubject(u.id)
      .setIssuedAt(now)
      .setExpirationTime(exp)
      .sign(await signingKey);
    return { token, exp };
  }

  async function sessionJson(
    u: UserRow,
    sessionId: string,
    refreshToken: string,
    amr: { method: string; timestamp: number }[],
  ) {
    const { token, exp } = await accessToken(u, sessionId, amr);
    return {
      access_token: token,
      token_type: "bearer",
      expires_in: ttl,
      expires_at: exp,
      refresh_token: refreshToken,
      user: userJson(u),
    };
  }

  /** A new session and its first refresh token, in the caller's transaction. */
  async function newSession(
    tx: postgres.TransactionSql,
    userId: string,
  ): Promise<{ sessionId: string; refreshToken: string }> {
    const sessionId = randomUUID();
    const refreshToken = randomBytes(24).toString("base64url");
    await tx`insert into auth.sessions (id, user_id, created_at, updated_at, aal) values (${sessionId}, ${userId}, now(), now(), 'aal1')`;
    await tx`insert into auth.refresh_tokens (token, user_id, revoked, created_at, updated_at, session_id)
             values (${tokenHash(refreshToken)}, ${userId}, false, now(), now(), ${sessionId})`;
    return { sessionId, refreshToken };
  }

  async function userById(id: string, tx: postgres.Sql | postgres.TransactionSql = sql): Promise<UserRow | null> {
    const [u] = await tx<UserRow[]>`select * from auth.users where id = ${id} and deleted_at is null`;
    return u ?? null;
  }

  /** The verified claims of the Bearer access token (signature, expiry, audience). */
  async function bearerClaims(req: Request): Promise<JWTPayload & { session_id?: string }> {
    const token = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.get("authorization") ?? "")?.[1];
    if (!token) throw err.noAuthorization();
    let keySet = jwksCache.get(opts.jwks);
    if (!keySet) jwksCache.set(opts.jwks, keySet = createLocalJWKSet(opts.jwks));
    try {
      const { payload } = await jwtVerify(token, keySet, { algorithms: ["ES256"], audience: "authenticated" });
      if (typeof payload.sub !== "string" || !UUID.test(payload.sub)) {
        throw err.badJwt("token has invalid claims: missing sub claim");
      }
      return payload;
    } catch (e) {
      if (e instanceof AuthError) throw e;
      const code = (e as { code?: string }).code;
      throw err.badJwt(
        code === "ERR_JWT_EXPIRED" ? "token has invalid claims: token is expired" : "token signature is invalid",
      );
    }
  }

  /** The signed-in user behind the Bearer token, whose session still exists. */
  async function currentUser(req: Request): Promise<{ user: UserRow; claims: JWTPayload & { session_id?: string } }> {
    const claims = await bearerClaims(req);
    const sid = typeof claims.session_id === "string" && UUID.test(claims.session_id) ? claims.session_id : null;
    if (!sid) throw err.sessionNotFound();
    const [s] = await sql`select 1 from auth.sessions where id = ${sid} and user_id = ${claims.sub!}`;
    if (!s) throw err.sessionNotFound();
    const user = await userById(claims.sub!);
    if (!user) throw err.userFromJwtMissing();
    return { user, claims };
  }

  async function requireServiceRole(req: Request): Promise<void> {
    const r = await authenticate(req, opts.auth);
    if (!r.ok || r.caller.role !== "service_role") throw err.notAdmin();
  }

  /**
   * Creates a user and, in the same transaction, runs `then` (a sign-up opens its session there).
   * `taken` is the error for an email already registered (sign-up and admin answer differently).
   */
  async function createUser<T>(
    fields: {
      id?: string;
      email: string;
      password: string | null;
      confirmed: boolean;
      userMeta: Record<string, unknown>;
      appMeta: Record<string, unknown>;
    },
    taken: () => AuthError,
    then: (tx: postgres.TransactionSql, u: UserRow) => Promise<T>,
  ): Promise<T> {
    const hash = fields.password === null ? null : await bcrypt.hash(fields.password, BCRYPT_COST);
    const appMeta = { provider: "email", providers: ["email"], ...fields.appMeta };
    try {
      return await sql.begin(async (tx) => {
        const [dup] = await tx`select 1 from auth.users where email = ${fields.email}`;
        if (dup) throw taken();
        const [row] = await tx<{ id: string }[]>`
          insert into auth.users (instance_id, id, aud, role, email, encrypted_password, email_confirmed_at,
                                  raw_app_meta_data, raw_user_meta_data, is_super_admin, created_at, updated_at)
          values ('00000000-0000-0000-0000-000000000000', ${
          fields.id ?? randomUUID()
        }, 'authenticated', 'authenticated',
                  ${fields.email}, ${hash}, ${fields.confirmed ? new Date() : null}, ${
          tx.json(appMeta as postgres.JSONValue)
        },
                  ${tx.json(fields.userMeta as postgres.JSONValue)}, false, now(), now())
          returning id`;
        // Read back after the row triggers: a project's triggers may have changed the row.
        return await then(tx, (await userById(row.id, tx))!);
      }) as T;
    } catch (e) {
      if ((e as { code?: string }).code === "23505") throw taken();
      throw e;
    }
  }

  const routes = {
    async signup(req: Request) {
      const body = parse(signUpBody, await readBody(req));
      checkPassword(body.password);
      const session = await createUser(
        { email: body.email, password: body.password, confirmed: true, userMeta: body.data ?? {}, appMeta: {} },
        err.userExists,
        async (tx, u) => {
          const s = await newSession(tx, u.id);
          await tx`update auth.users set last_sign_in_at = now() where id = ${u.id}`;
          const fresh = (await userById(u.id, tx))!;
          return await sessionJson(fresh, s.sessionId, s.refreshToken, [{
            method: "password",
            timestamp: Math.floor(Date.now() / 1000),
          }]);
        },
      );
      return ok(session);
    },

    async token(req: Request, url: URL) {
      const grant = url.searchParams.get("grant_type");
      if (grant === "password") {
        const body = parse(passwordGrantBody, await readBody(req));
        const [u] = await sql<UserRow[]>`select * from auth.users where email = ${body.email} and deleted_at is null`;
        const matches = await bcrypt.compare(
          body.password,
          u?.encrypted_password ?? await (dummyHash ??= bcrypt.hash(randomUUID(), BCRYPT_COST)),
        );
        if (!u || !u.encrypted_password || !matches) throw err.invalidCredentials();
        if (!u.email_confirmed_at) throw err.emailNotConfirmed();
        if (u.banned_until && u.banned_until > new Date()) throw err.banned();
        return ok(
          await sql.begin(async (tx) => {
            const s = await newSession(tx, u.id);
            await tx`update auth.users set last_sign_in_at = now() where id = ${u.id}`;
            const fresh = (await userById(u.id, tx))!;
            return await sessionJson(fresh, s.sessionId, s.refreshToken, [{
              method: "password",
              timestamp: Math.floor(Date.now() / 1000),
            }]);
          }),
        );
      }
      if (grant === "refresh_token") {
        const body = parse(refreshGrantBody, await readBody(req));
        const outcome = await sql.begin(async (tx) => {
          const [t] = await tx<{ id: string; revoked: boolean; session_id: string; user_id: string }[]>`
            select id::text, revoked, session_id, user_id from auth.refresh_tokens where token = ${
            tokenHash(body.refresh_token)
          } for update`;
          if (!t || !t.session_id) return { error: err.refreshNotFound() };
          if (t.revoked) {
            // A spent token presented again: someone else may hold a copy, so the session ends.
            await tx`delete from auth.sessions where id = ${t.session_id}`;
            return { error: err.refreshUsed() };
          }
          const u = await userById(t.user_id, tx);
          if (!u) return { error: err.refreshNotFound() };
          const next = randomBytes(24).toString("base64url");
          await tx`update auth.refresh_tokens set revoked = true, updated_at = now() where id = ${t.id}`;
          await tx`insert into auth.refresh_tokens (token, user_id, revoked, created_at, updated_at, parent, session_id)
                   values (${tokenHash(next)}, ${u.id}, false, now(), now(), ${
            tokenHash(body.refresh_token)
          }, ${t.session_id})`;
          await tx`update auth.sessions set refreshed_at = now() at time zone 'utc', updated_at = now() where id = ${t.session_id}`;
          return {
            session: await sessionJson(u, t.session_id, next, [{
              method: "password",
              timestamp: Math.floor(Date.now() / 1000),
            }]),
          };
        });
        // Committed either way: a reused token's session stays ended.
        if ("error" in outcome) throw outcome.error;
        return ok(outcome.session);
      }
      if (grant && ["pkce", "id_token", "web3", "anonymous"].includes(grant)) {
        throw err.notServed(`grant_type=${grant}`);
      }
      throw err.grantType();
    },

    async getUser(req: Request) {
      const { user } = await currentUser(req);
      return ok(userJson(user));
    },

    async putUser(req: Request) {
      const { user } = await currentUser(req);
      const body = parse(updateUserBody, await readBody(req));
      if (body.email !== undefined && body.email.trim().toLowerCase() !== user.email) {
        throw err.notServed("Changing a user's email");
      }
      if (body.password !== undefined) checkPassword(body.password);
      const hash = body.password === undefined ? null : await bcrypt.hash(body.password, BCRYPT_COST);
      const [u] = await sql<UserRow[]>`
        update auth.users set
          raw_user_meta_data = case when ${body.data === undefined}::boolean then raw_user_meta_data
                                    else coalesce(raw_user_meta_data, '{}'::jsonb) || ${
        sql.json((body.data ?? {}) as postgres.JSONValue)
      } end,
          encrypted_password = coalesce(${hash}, encrypted_password),
          updated_at = now()
        where id = ${user.id} returning *`;
      return ok(userJson(u));
    },

    async logout(req: Request, url: URL) {
      const claims = await bearerClaims(req);
      const scope = url.searchParams.get("scope") ?? "global";
      if (!["global", "local", "others"].includes(scope)) throw err.validation("Unsupported logout scope");
      const sid = typeof claims.session_id === "string" && UUID.test(claims.session_id) ? claims.session_id : null;
      if (scope === "global") await sql`delete from auth.sessions where user_id = ${claims.sub!}`;
      else if (scope === "local" && sid) await sql`delete from auth.sessions where id = ${sid}`;
      else if (scope === "others" && sid) {
        await sql`delete from auth.sessions where user_id = ${claims.sub!} and id <> ${sid}`;
      }
      return new Response(null, { status: 204 });
    },

    async adminCreate(req: Request) {
      const body = parse(adminCreateBody, await readBody(req));
      if (body.password !== undefined) checkPassword(body.password);
      const user = await createUser(
        {
          id: body.id,
          email: body.email,
          password: body.password ?? null,
          confirmed: body.email_confirm === true,
          userMeta: body.user_metadata ?? {},
          appMeta: body.app_metadata ?? {},
        },
        err.emailExists,
        (_tx, u) => Promise.resolve(u),
      );
      return ok(userJson(user));
    },

    async adminList(url: URL) {
      const q = listQuery.parse(Object.fromEntries(url.searchParams));
      const [{ n }] = await sql<{ n: number }[]>`select count(*)::int as n from auth.users where deleted_at is null`;
      const rows = await sql<UserRow[]>`
        select * from auth.users where deleted_at is null order by created_at, id
        limit ${q.per_page} offset ${(q.page - 1) * q.per_page}`;
      const last = Math.max(1, Math.ceil(n / q.per_page));
      const links = [];
      if (q.page < last) links.push(`</admin/users?page=${q.page + 1}&per_page=${q.per_page}>; rel="next"`);
      links.push(`</admin/users?page=${last}&per_page=${q.per_page}>; rel="last"`);
      return ok({ users: rows.map(userJson), aud: "authenticated" }, 200, {
        "x-total-count": String(n),
        link: links.join(", "),
      });
    },

    async adminGet(id: string) {
      const u = await userById(id);
      if (!u) throw err.userNotFound();
      return ok(userJson(u));
    },

    async adminUpdate(req: Request, id: string) {
      const body = parse(adminUpdateBody, await readBody(req));
      if (body.ban_duration !== undefined) throw err.notServed("Banning a user");
      if (body.password !== undefined) checkPassword(body.password);
      const hash = body.password === undefined ? null : await bcrypt.hash(body.password, BCRYPT_COST);
      const [u] = await sql<UserRow[]>`
        update auth.users set
          raw_user_meta_data = case when ${body.user_metadata === undefined}::boolean then raw_user_meta_data
                                    else coalesce(raw_user_meta_data, '{}'::jsonb) || ${
        sql.json((body.user_metadata ?? {}) as postgres.JSONValue)
      } end,
          raw_app_meta_data = case when ${body.app_metadata === undefined}::boolean then raw_app_meta_data
                                   else coalesce(raw_app_meta_data, '{}'::jsonb) || ${
        sql.json((body.app_metadata ?? {}) as postgres.JSONValue)
      } end,
          encrypted_password = coalesce(${hash}, encrypted_password),
          email_confirmed_at = case when ${
        body.email_confirm === true
      }::boolean then coalesce(email_confirmed_at, now())
                                    else email_confirmed_at end,
          updated_at = now()
        where id = ${id} and deleted_at is null returning *`;
      if (!u) throw err.userNotFound();
      return ok(userJson(u));
    },

    async adminDelete(id: string) {
      const rows = await sql`delete from auth.users where id = ${id} returning id`;
      if (!rows.length) throw err.userNotFound();
      return ok({});
    },
  };

  return async function handle(req: Request, path: string): Promise<Response> {
    const newShape = (req.headers.get("x-supabase-api-version") ?? "") >= API_VERSION;
    try {
      await requireApiKey(req, opts.auth);
      const url = new URL(req.url);
      const m = req.method.toUpperCase();
      if (path === "/settings" && m === "GET") return ok(SETTINGS);
      if (path === "/health" && m === "GET") {
        return ok({ name: "GoTrue", version: "local-stack", description: "local-stack Auth stand-in" });
      }
      if (path === "/signup" && m === "POST") return await routes.signup(req);
      if (path === "/token" && m === "POST") return await routes.token(req, url);
      if (path === "/user" && m === "GET") return await routes.getUser(req);
      if (path === "/user" && m === "PUT") return await routes.putUser(req);
      if (path === "/logout" && m === "POST") return await routes.logout(req, url);
      if (path === "/admin/users" || path.startsWith("/admin/users/")) {
        await requireServiceRole(req);
        if (path === "/admin/users") {
          if (m === "GET") return await routes.adminList(url);
          if (m === "POST") return await routes.adminCreate(req);
          throw err.notFound();
        }
        const id = path.slice("/admin/users/".length);
        if (!UUID.test(id)) throw err.userNotFound();
        if (m === "GET") return await routes.adminGet(id);
        if (m === "PUT") return await routes.adminUpdate(req, id);
        if (m === "DELETE") return await routes.adminDelete(id);
        throw err.notFound();
      }
      const served = NOT_SERVED.find(([prefix]) => path === prefix || path.startsWith(prefix + "/"));
      if (served) throw err.notServed(served[1]);
      throw err.notFound();
    } catch (e) {
      if (!(e instanceof AuthError)) throw e;
      const body = newShape
        ? { code: e.code, message: e.message, ...e.extra }
        : { code: e.status, error_code: e.code, msg: e.message, ...e.extra };
      return ok(body, e.status);
    }
  };
}

/** What hosted's GET /settings says, for this stand-in: email + password only, confirmation off. */
const SETTINGS = {
  external: { email: true, phone: false, anonymous_users: false },
  disable_signup: false,
  mailer_autoconfirm: true,
  phone_autoconfirm: false,
  sms_provider: "",
  saml_enabled: false,
};

const NOT_SERVED: [string, string][] = [
  ["/otp", "Magic links and one-time passwords"],
  ["/magiclink", "Magic links"],
  ["/recover", "Password recovery by email"],
  ["/verify", "Email verification links"],
  ["/resend", "Resending confirmation emails"],
  ["/invite", "GoTrue's email invitations (use the invitations function)"],
  ["/authorize", "OAuth providers"],
  ["/callback", "OAuth providers"],
  ["/sso", "SSO"],
  ["/factors", "Multi-factor authentication"],
  ["/reauthenticate", "Reauthentication"],
  ["/admin/generate_link", "Generated links"],
];

async function requireApiKey(req: Request, cfg: AuthConfig): Promise<void> {
  const apikey = req.headers.get("apikey") ?? new URL(req.url).searchParams.get("apikey");
  if (!apikey) throw err.noApiKey();
  const r = await authenticate(new Request(req.url, { headers: { apikey } }), cfg);
  if (!r.ok) throw err.badApiKey();
}

async function readBody(req: Request): Promise<unknown> {
  const text = await req.text();
  if (text.trim() === "") return {};
  try {
    return JSON.parse(text);
  } catch {
    throw err.badJson();
  }
}

function parse<T>(schema: z.ZodType<T>, raw: unknown): T {
  const r = schema.safeParse(raw);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const field = issue.path.join(".");
  if (field === "email" && issue.code !== "invalid_type") {
    throw err.validation("Unable to validate email address: invalid format");
  }
  throw err.validation(field ? `${field}: ${issue.message}` : issue.message);
}

function ok(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", "x-supabase-api-version": API_VERSION, ...headers },
  });
}
