-- Invitations to a client: the way a person joins a client and so gets its documents in search.
--
-- The service, or an admin of the client (client_memberships.role = 'admin'), invites an email with a
-- role. The token is returned once and stored only as its SHA-256, so a read of the table cannot be
-- replayed. Accepting creates the membership in the same transaction as it marks the invitation used;
-- it happens either at sign-up (the new user's metadata carries `invitation_token`) or when a
-- signed-in user presents the token (the `invitations` function, action "accept"). Either way the
-- invitation must be for that user's email, unused and unexpired. Inviting an email again replaces
-- its pending invitation, whose token then stops working.
--
-- Why the token is needed at sign-up, not just the email: a sign-up's email is not yet verified, so
-- "this email was invited" alone would let anyone sign up as an invited address and walk in.
--
-- The functions below are SECURITY DEFINER for the service path only: they are executable by
-- service_role alone, and the invitations function calls them with the id of the user its own JWT
-- check authenticated. Client admins read their client's invitations with their own rights (RLS).

-- client_memberships.role (member, editor, admin) is defined with the client documents' Storage policies.

create table public.invitations (
  id uuid primary key default gen_random_uuid(),
  email text not null check (email = lower(btrim(email)) and email ~ '^[^@\s]+@[^@\s]+$' and length(email) <= 320),
  client_id uuid not null references public.clients (id) on delete cascade,
  role text not null default 'member' check (role in ('member', 'editor', 'admin')),
  token_hash text not null unique check (token_hash ~ '^[0-9a-f]{64}$'),
  invited_by uuid references auth.users (id) on delete set null,   -- null: invited by a service
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  accepted_at timestamptz,
  accepted_by uuid references auth.users (id) on delete set null,   -- null after that user is deleted
  check (accepted_by is null or accepted_at is not null)
);
-- At most one pending invitation per client and email (re-inviting replaces it).
create unique index invitations_pending_key on public.invitations (client_id, email) where accepted_at is null;
create index invitations_email_idx on public.invitations (email) where accepted_at is null;

alter table public.invitations enable row level security;
-- An admin of the client sees its invitations (never the token: only its hash is stored, and that
-- column is not granted).
create policy invitations_client_admins on public.invitations for select to authenticated
  using (client_id in (select m.client_id from public.client_memberships m
                        where m.user_id = (select auth.uid()) and m.role = 'admin'));
revoke all on table public.invitations from anon, authenticated;
grant select (id, email, client_id, role, invited_by, created_at, expires_at, accepted_at, accepted_by)
  on table public.invitations to authenticated;
grant all on table public.invitations to service_role;

create function private.invitation_token_hash(p_token text) returns text
language sql
immutable
set search_path = ''
as $$
  select encode(pg_catalog.sha256(convert_to(p_token, 'UTF8')), 'hex')
$$;
revoke all on function private.invitation_token_hash(text) from public;

-- invite_to_client: a new invitation, replacing the pending one for the same client and email.
-- p_invited_by is the inviting user (who must be an admin of the client), or null for a service.
-- Returns the token: the only time it exists outside the inviter's hands.
-- Errors: 22023 bad email/role/validity, P0002 no such client, 42501 not an admin of the client,
-- 23505 the email's user is already a member.
create function public.invite_to_client(
  p_email text,
  p_client_id uuid,
  p_role text default 'member',
  p_invited_by uuid default null,
  p_valid_for interval default interval '7 days'
) returns table (invitation_id uuid, email text, client_id uuid, role text, token text, expires_at timestamptz)
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_email text := lower(btrim(p_email));
  v_token text;
  v_id uuid;
  v_expires timestamptz := now() + p_valid_for;
begin
  if v_email is null or v_email !~ '^[^@\s]+@[^@\s]+$' or length(v_email) > 320 then
    raise exception 'invalid email address' using errcode = '22023';
  end if;
  if p_role is null or p_role not in ('member', 'editor', 'admin') then
    raise exception 'role must be member, editor or admin' using errcode = '22023';
  end if;
  if p_valid_for is null or p_valid_for < interval '5 minutes' or p_valid_for > interval '30 days' then
    raise exception 'an invitation is valid for 5 minutes to 30 days' using errcode = '22023';
  end if;
  perform 1 from public.clients c where c.id = p_client_id;
  if not found then
    raise exception 'no such client' using errcode = 'P0002';
  end if;
  if p_invited_by is not null and not exists (
    select 1 from public.client_memberships m
     where m.client_id = p_client_id and m.user_id = p_invited_by and m.role = 'admin'
  ) then
    raise exception 'only the service or an admin of this client may invite to it' using errcode = '42501';
  end if;
  if exists (
    select 1 from public.client_memberships m join auth.users a on a.id = m.user_id
     where m.client_id = p_client_id and lower(a.email) = v_email
  ) then
    raise exception 'this email''s user is already a member of the client' using errcode = '23505';
  end if;

  delete from public.invitations i where i.client_id = p_client_id and i.email = v_email and i.accepted_at is null;
  -- Two v4 UUIDs: 244 bits from the server's strong random source (no extension needed).
  v_token := replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '');
  insert into public.invitations (email, client_id, role, token_hash, invited_by, expires_at)
  values (v_email, p_client_id, p_role, private.invitation_token_hash(v_token), p_invited_by, v_expires)
  returning id into v_id;
  return query select v_id, v_email, p_client_id, p_role, v_token, v_expires;
end $$;
revoke all on function public.invite_to_client(text, uuid, text, uuid, interval) from public, anon, authenticated;
grant execute on function public.invite_to_client(text, uuid, text, uuid, interval) to service_role;

-- accept_invitation: the user holding the token joins the client, in this transaction.
-- Errors: P0002 no such invitation (or a replaced one), PI001 already used, PI002 expired,
-- PI003 the invitation is for another email.
create function public.accept_invitation(p_user_id uuid, p_token text)
returns table (client_id uuid, role text)
language plpgsql
security definer
set search_path = ''
as $$
declare
  inv public.invitations;
  v_email text;
begin
  select * into inv from public.invitations i
   where i.token_hash = private.invitation_token_hash(coalesce(p_token, ''))
   for update;
  if not found then
    raise exception 'no such invitation' using errcode = 'P0002';
  end if;
  if inv.accepted_at is not null then
    raise exception 'this invitation has already been used' using errcode = 'PI001';
  end if;
  if inv.expires_at <= now() then
    raise exception 'this invitation has expired' using errcode = 'PI002';
  end if;
  select lower(a.email) into v_email from auth.users a where a.id = p_user_id;
  if v_email is distinct from inv.email then
    raise exception 'this invitation is for another email' using errcode = 'PI003';
  end if;

  insert into public.client_memberships as m (client_id, user_id, role)
  values (inv.client_id, p_user_id, inv.role)
  on conflict on constraint client_memberships_pkey do update
     set role = case when excluded.role = 'admin' then 'admin' else m.role end;
  update public.invitations i set accepted_at = now(), accepted_by = p_user_id where i.id = inv.id;
  return query select inv.client_id, inv.role;
end $$;
revoke all on function public.accept_invitation(uuid, text) from public, anon, authenticated;
grant execute on function public.accept_invitation(uuid, text) to service_role;

-- At sign-up: a token in the new user's metadata is accepted, then removed from the metadata (a
-- spent token has no business staying on the user). Like the profile trigger, it never fails the
-- sign-up: a refused token (expired, used, another email) is logged as a WARNING and the user simply
-- joins no client.
create function private.accept_invitation_on_sign_up() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  begin
    perform public.accept_invitation(new.id, new.raw_user_meta_data ->> 'invitation_token');
  exception when others then
    raise warning 'invitation not accepted at sign-up of auth user %: % (SQLSTATE %)', new.id, sqlerrm, sqlstate;
  end;
  update auth.users set raw_user_meta_data = raw_user_meta_data - 'invitation_token' where id = new.id;
  return null;
end $$;
revoke all on function private.accept_invitation_on_sign_up() from public;

create trigger on_auth_user_created_accept_invitation
  after insert on auth.users
  for each row when (new.raw_user_meta_data ? 'invitation_token')
  execute function private.accept_invitation_on_sign_up();
