-- The assistant's users: one public.users profile per auth.users row, kept in step by triggers.
--
-- auth.users belongs to Supabase Auth (hosted; the local stack's platform bootstrap creates the same
-- table). Auth writes it; these triggers copy what the assistant shows (email, whether it is verified,
-- first and last name from raw_user_meta_data) into public.users, where RLS lets each user read their
-- own profile and change their names, never their plan or email_verified. The service sees all.
--
-- A trigger on auth.users runs inside Auth's own statement: an error there would fail the sign-up.
-- So the copy runs in its own subtransaction and an error is logged as a WARNING (with the user's id
-- and the reason) instead of raised; the profile then catches up on the user's next update, or with
-- private.backfill_user_profiles().

create table public.users (
  id uuid primary key references auth.users (id) on delete cascade,
  email text,
  email_verified boolean not null default false,
  first_name text check (length(first_name) <= 200),
  last_name text check (length(last_name) <= 200),
  plan text not null default 'free' check (plan ~ '^[a-z][a-z0-9_-]{0,39}$'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index users_email_idx on public.users (lower(email));
comment on table public.users is
  'Profiles of auth.users (one row each, kept in step by on_auth_user_created / on_auth_user_updated). '
  'plan is set by the service only.';

-- A name from the user's metadata: first_name/last_name as the app signs up with, else the OpenID
-- given_name/family_name that OAuth providers fill in. Blank is no name; overlong is cut, never refused.
create function private.metadata_name(meta jsonb, key text, fallback text) returns text
language sql
immutable
set search_path = ''
as $$
  select left(nullif(btrim(coalesce(meta ->> key, meta ->> fallback)), ''), 200)
$$;
revoke all on function private.metadata_name(jsonb, text, text) from public;

-- Definer: Auth's role (supabase_auth_admin on hosted) has no rights on public.users.
create function private.sync_user_profile() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  names_changed boolean := tg_op = 'INSERT'
    or private.metadata_name(old.raw_user_meta_data, 'first_name', 'given_name')
       is distinct from private.metadata_name(new.raw_user_meta_data, 'first_name', 'given_name')
    or private.metadata_name(old.raw_user_meta_data, 'last_name', 'family_name')
       is distinct from private.metadata_name(new.raw_user_meta_data, 'last_name', 'family_name');
begin
  begin
    insert into public.users as u (id, email, email_verified, first_name, last_name, created_at, updated_at)
    values (new.id, new.email, new.email_confirmed_at is not null,
            private.metadata_name(new.raw_user_meta_data, 'first_name', 'given_name'),
            private.metadata_name(new.raw_user_meta_data, 'last_name', 'family_name'),
            coalesce(new.created_at, now()), now())
    on conflict (id) do update set
      email = excluded.email,
      email_verified = excluded.email_verified,
      -- Names a user edited in their profile stay, unless the metadata's names themselves changed.
      first_name = case when names_changed then excluded.first_name else u.first_name end,
      last_name = case when names_changed then excluded.last_name else u.last_name end,
      updated_at = now()
    where (u.email, u.email_verified) is distinct from (excluded.email, excluded.email_verified)
       or (names_changed and (u.first_name, u.last_name) is distinct from (excluded.first_name, excluded.last_name));
  exception when others then
    raise warning 'public.users: profile of auth user % not written: % (SQLSTATE %)', new.id, sqlerrm, sqlstate;
  end;
  return null;
end $$;
revoke all on function private.sync_user_profile() from public;

create trigger on_auth_user_created
  after insert on auth.users
  for each row execute function private.sync_user_profile();
create trigger on_auth_user_updated
  after update of email, email_confirmed_at, raw_user_meta_data on auth.users
  for each row execute function private.sync_user_profile();

-- Backfill: a profile for every user that has none (users from before these triggers, or whose
-- profile write failed and was logged). Idempotent; returns how many profiles it created. Run once
-- here; an operator may run it again.
create function private.backfill_user_profiles() returns int
language sql
security definer
set search_path = ''
as $$
  with added as (
    insert into public.users (id, email, email_verified, first_name, last_name, created_at, updated_at)
    select a.id, a.email, a.email_confirmed_at is not null,
           private.metadata_name(a.raw_user_meta_data, 'first_name', 'given_name'),
           private.metadata_name(a.raw_user_meta_data, 'last_name', 'family_name'),
           coalesce(a.created_at, now()), now()
    from auth.users a
    on conflict (id) do nothing
    returning 1
  )
  select count(*)::int from added
$$;
revoke all on function private.backfill_user_profiles() from public;
select private.backfill_user_profiles();

alter table public.users enable row level security;
create policy users_own_select on public.users for select to authenticated
  using (id = (select auth.uid()));
create policy users_own_update on public.users for update to authenticated
  using (id = (select auth.uid())) with check (id = (select auth.uid()));

revoke all on table public.users from anon, authenticated;
-- Granted on purpose: a user reads their own profile and changes their names (RLS: that row only).
grant select on table public.users to authenticated;
grant update (first_name, last_name, updated_at) on table public.users to authenticated;
grant all on table public.users to service_role;
