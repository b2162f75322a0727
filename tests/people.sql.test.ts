// Profiles, invitations and usage per user, in SQL on the real PostgreSQL: the auth.users triggers
// (which must never fail a sign-up), the backfill, RLS on public.users, the invitation rules, and the
// usage_by_user numbers.
import { beforeAll, describe, expect, it } from "vitest";
import postgres from "postgres";
import { useTestDatabase } from "./helpers/db.ts";

const db = useTestDatabase();
const warnings: string[] = [];
let sql: postgres.Sql;

async function signUp(email: string, meta: Record<string, unknown> = {}): Promise<string> {
  const id = crypto.randomUUID();
  await sql`insert into auth.users (id, aud, role, email, email_confirmed_at, raw_user_meta_data, created_at, updated_at)
            values (${id}, 'authenticated', 'authenticated', ${email}, now(), ${
    sql.json(meta as postgres.JSONValue)
  }, now(), now())`;
  return id;
}

/** Runs `fn` as a signed-in user (role authenticated, the JWT's claims), rolled back after. */
async function asUser<T>(id: string, fn: (tx: postgres.TransactionSql) => Promise<T>): Promise<T> {
  let out: T;
  await sql.begin(async (tx) => {
    await tx`set local role authenticated`;
    await tx`select set_config('request.jwt.claims', ${JSON.stringify({ sub: id, role: "authenticated" })}, true)`;
    out = await fn(tx);
    throw Object.assign(new Error("rollback"), { rollback: true });
  }).catch((e) => {
    if (!e.rollback) throw e;
  });
  return out!;
}

const sqlState = async (p: Promise<unknown>) => {
  try {
    await p;
    return "ok";
  } catch (e) {
    return (e as { code?: string }).code;
  }
};

beforeAll(() => {
  sql = postgres(db.url, { max: 4, onnotice: (n) => warnings.push(String(n.message)) });
});

describe("profiles", () => {
  it("a sign-up makes the profile from the metadata; a metadata update follows; a name edited in the profile stays", async () => {
    const id = await signUp("ana@example.com", { first_name: " Ana ", last_name: "Lopez" });
    const profile = async () =>
      (await sql`select email, email_verified, first_name, last_name, plan from public.users where id = ${id}`)[0];
    expect(await profile()).toEqual({
      email: "ana@example.com",
      email_verified: true,
      first_name: "Ana",
      last_name: "Lopez",
      plan: "free",
    });
    await sql`update auth.users set raw_user_meta_data = raw_user_meta_data || '{"first_name": "Anna"}' where id = ${id}`;
    expect((await profile()).first_name).toBe("Anna");
    await sql`update public.users set last_name = 'López' where id = ${id}`;
    await sql`update auth.users set raw_user_meta_data = raw_user_meta_data || '{"theme": "dark"}', email = 'ana@example.org' where id = ${id}`;
    expect(await profile()).toMatchObject({ email: "ana@example.org", first_name: "Anna", last_name: "López" });
    // OpenID names, as OAuth providers fill them in.
    const oid = await signUp("oid@example.com", { given_name: "Olga", family_name: "Ivanova" });
    expect((await sql`select first_name, last_name from public.users where id = ${oid}`)[0]).toEqual({
      first_name: "Olga",
      last_name: "Ivanova",
    });
  });

  it("a failing profile write never fails the sign-up: it is logged, and the backfill catches up", async () => {
    await sql`alter table public.users add constraint no_bob check (first_name is distinct from 'Bob')`;
    warnings.length = 0;
    const id = await signUp("bob@example.com", { first_name: "Bob" });
    expect(await sql`select 1 from auth.users where id = ${id}`).toHaveLength(1);
    expect(await sql`select 1 from public.users where id = ${id}`).toHaveLength(0);
    expect(warnings.join("\n")).toMatch(new RegExp(`profile of auth user ${id} not written: .*no_bob.*SQLSTATE 23514`));
    await sql`alter table public.users drop constraint no_bob`;
    expect((await sql`select private.backfill_user_profiles() as n`)[0].n).toBe(1);
    expect((await sql`select private.backfill_user_profiles() as n`)[0].n).toBe(0);
    expect((await sql`select first_name from public.users where id = ${id}`)[0].first_name).toBe("Bob");
  });

  it("RLS: a user reads only their own profile and changes only their names", async () => {
    const me = await signUp("me@example.com", { first_name: "Me" });
    const other = await signUp("other@example.com");
    const seen = await asUser(me, (tx) => tx`select id::text from public.users`);
    expect(seen).toEqual([{ id: me }]);
    expect(
      await asUser(me, (tx) => tx`update public.users set first_name = 'Moi' where id = ${me} returning first_name`),
    ).toEqual([{ first_name: "Moi" }]);
    expect(await asUser(me, (tx) => tx`update public.users set first_name = 'X' where id = ${other} returning id`))
      .toEqual([]);
    expect(await sqlState(asUser(me, (tx) => tx`update public.users set plan = 'pro' where id = ${me}`))).toBe("42501");
    expect(await sqlState(asUser(me, (tx) => tx`update public.users set email_verified = false where id = ${me}`)))
      .toBe("42501");
    expect(await sqlState(asUser(me, (tx) => tx`insert into public.users (id) values (gen_random_uuid())`))).toBe(
      "42501",
    );
    expect(await sqlState(asUser(me, (tx) => tx`select * from public.usage_by_user`))).toBe("42501");
    // Deleting the auth user deletes the profile.
    await sql`delete from auth.users where id = ${other}`;
    expect(await sql`select 1 from public.users where id = ${other}`).toHaveLength(0);
  });
});

describe("invitations", () => {
  let clientId: string;
  let adminId: string;
  let memberId: string;
  const invite = (email: string, by: string | null = null, role = "member") =>
    sql`select * from public.invite_to_client(${email}, ${clientId}::uuid, ${role}, ${by}::uuid)`.then((r) => r[0]);
  const accept = (user: string, token: string) => sql`select * from public.accept_invitation(${user}::uuid, ${token})`;

  beforeAll(async () => {
    [{ id: clientId }] = await sql`insert into clients (name) values ('Initech') returning id::text`;
    adminId = await signUp("boss@initech.test");
    memberId = await signUp("staff@initech.test");
    await sql`insert into client_memberships (client_id, user_id, role) values (${clientId}, ${adminId}, 'admin'), (${clientId}, ${memberId}, 'member')`;
  });

  it("the service or a client admin invites; a member or a stranger may not; the token is stored only as its hash", async () => {
    const byService = await invite("Peter@Initech.test");
    expect(byService).toMatchObject({ email: "peter@initech.test", client_id: clientId, role: "member" });
    expect(byService.token).toMatch(/^[0-9a-f]{64}$/);
    const [row] = await sql`select token_hash, invited_by from invitations where id = ${byService.invitation_id}`;
    expect(row.token_hash).toBe((await sql`select encode(sha256(${byService.token}::bytea), 'hex') as h`)[0].h);
    expect(row.invited_by).toBeNull();
    expect((await invite("milton@initech.test", adminId, "admin")).role).toBe("admin");
    expect(await sqlState(invite("x@initech.test", memberId))).toBe("42501");
    expect(await sqlState(invite("not an email"))).toBe("22023");
    expect(await sqlState(invite("staff@initech.test"))).toBe("23505"); // already a member
    // A client admin sees the client's invitations, without the hash; a member sees none.
    const adminView = await asUser(adminId, (tx) => tx`select email from invitations order by email`);
    expect(adminView.map((r) => r.email)).toEqual(["milton@initech.test", "peter@initech.test"]);
    expect(await asUser(memberId, (tx) => tx`select email from invitations`)).toEqual([]);
    expect(await sqlState(asUser(adminId, (tx) => tx`select token_hash from invitations`))).toBe("42501");
  });

  it("accepting makes the membership with the invitation's role; the token is single-use, for that email, and expires", async () => {
    const inv = await invite("samir@initech.test", null, "admin");
    const samir = await signUp("samir@initech.test");
    const stranger = await signUp("stranger@example.com");
    expect(await sqlState(accept(stranger, inv.token))).toBe("PI003");
    expect(await accept(samir, inv.token)).toEqual([{ client_id: clientId, role: "admin" }]);
    expect(await sql`select role from client_memberships where user_id = ${samir}`).toEqual([{ role: "admin" }]);
    expect(await sqlState(accept(samir, inv.token))).toBe("PI001");
    expect(await sqlState(accept(samir, "0".repeat(64)))).toBe("P0002");

    const late = await invite("michael@initech.test");
    const michael = await signUp("michael@initech.test");
    await sql`update invitations set expires_at = now() - interval '1 second' where id = ${late.invitation_id}`;
    expect(await sqlState(accept(michael, late.token))).toBe("PI002");
    expect(await sql`select 1 from client_memberships where user_id = ${michael}`).toHaveLength(0);
  });

  it("re-inviting replaces the pending invitation: the first token stops working", async () => {
    const first = await invite("bill@initech.test");
    const second = await invite("bill@initech.test", adminId);
    expect(await sql`select id::text from invitations where email = 'bill@initech.test'`).toEqual([{
      id: second.invitation_id,
    }]);
    const bill = await signUp("bill@initech.test");
    expect(await sqlState(accept(bill, first.token))).toBe("P0002");
    expect(await accept(bill, second.token)).toHaveLength(1);
  });

  it("at sign-up the token in the metadata is accepted in the same transaction, then removed from the metadata", async () => {
    const inv = await invite("joanna@initech.test");
    // A sign-up rolled back leaves neither the user, nor the membership, nor the invitation used.
    await sql.begin(async (tx) => {
      await tx`insert into auth.users (id, email, raw_user_meta_data, created_at, updated_at)
               values (gen_random_uuid(), 'joanna@initech.test', ${
        tx.json({ invitation_token: inv.token })
      }, now(), now())`;
      throw Object.assign(new Error("rollback"), { rollback: true });
    }).catch((e) => {
      if (!e.rollback) throw e;
    });
    expect((await sql`select accepted_at from invitations where id = ${inv.invitation_id}`)[0].accepted_at).toBeNull();
    const joanna = await signUp("joanna@initech.test", { first_name: "Joanna", invitation_token: inv.token });
    expect(await sql`select role from client_memberships where user_id = ${joanna}`).toEqual([{ role: "member" }]);
    expect((await sql`select raw_user_meta_data from auth.users where id = ${joanna}`)[0].raw_user_meta_data).toEqual({
      first_name: "Joanna",
    });
    expect((await sql`select first_name from public.users where id = ${joanna}`)[0].first_name).toBe("Joanna");
    // Someone else's token at sign-up: the sign-up succeeds, with no membership, and the refusal is logged.
    const other = await invite("lumbergh@initech.test");
    warnings.length = 0;
    const intruder = await signUp("intruder@example.com", { invitation_token: other.token });
    expect(await sql`select 1 from client_memberships where user_id = ${intruder}`).toHaveLength(0);
    expect(warnings.join("\n")).toMatch(/invitation not accepted at sign-up .* another email/);
  });
});

describe("usage_by_user", () => {
  it("counts questions, answers, negative feedback and unanswered per user and period, with the profile's names", async () => {
    const u1 = await signUp("heavy@example.com", { first_name: "Heavy", last_name: "User" });
    const u2 = await signUp("light@example.com");
    // u1: 3 questions today (2 answered, 1 thumbs down, 1 with nothing found), 1 question 40 days ago.
    const rows =
      await sql`insert into conversations (user_id, question, result_count, best_similarity, answered_at, created_at) values
      (${u1}, 'q1', 3, 0.9, now(), now()), (${u1}, 'q2', 2, 0.8, now(), now()), (${u1}, 'q3', 0, null, null, now()),
      (${u1}, 'old', 1, 0.9, null, now() - interval '40 days'), (${u2}, 'q', 1, 0.1, null, now())
      returning id, question`;
    await sql`insert into feedback (conversation_entry_id, user_id, rating) values (${rows[1].id}, ${u1}, -1), (${
      rows[0].id
    }, ${u1}, 1)`;
    const usage =
      await sql`select period, questions, answered, negative_feedback, unanswered, email, first_name, last_name
                              from usage_by_user where user_id = ${u1} and period_start = date_trunc(period, now()) order by period`;
    expect(usage).toEqual(["day", "month", "week"].map((period) => ({
      period,
      questions: 3,
      answered: 2,
      negative_feedback: 1,
      unanswered: 1,
      email: "heavy@example.com",
      first_name: "Heavy",
      last_name: "User",
    })));
    const months =
      await sql`select sum(questions)::int as n from usage_by_user where user_id = ${u1} and period = 'month'`;
    expect(months[0].n).toBe(4);
    // u2's one question is under the similarity threshold: unanswered.
    const [l] = await sql`select questions, unanswered from usage_by_user where user_id = ${u2} and period = 'day'`;
    expect(l).toEqual({ questions: 1, unanswered: 1 });
  });
});
