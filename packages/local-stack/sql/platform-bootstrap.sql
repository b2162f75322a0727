-- Platform bootstrap: the parts of a database that HOSTED SUPABASE ALREADY PROVIDES.
--
-- On a hosted project (or `supabase start`) none of this runs: the roles, the `extensions`,
-- `vault`, `storage` and `net` schemas and pg_cron already exist there. This file only stands in
-- for them on a plain PostgreSQL or on PGlite, so that supabase/migrations apply unchanged to both.
-- Every statement is guarded and applied only where the real thing is missing; running it twice
-- changes nothing.
--
-- LOCAL ONLY: the vault stand-in below keeps secrets unencrypted. It exists so the pg_cron jobs
-- can read the project URL and key the same way they do on Supabase; never use it in production.

-- Roles -------------------------------------------------------------------------------------------
do $$
begin
  if not exists (select from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
end $$;

-- Extensions live in their own schema, as on Supabase; roles see them through search_path.
create schema if not exists extensions;
grant usage on schema extensions to anon, authenticated, service_role;
grant usage on schema public to anon, authenticated, service_role;

-- Hosted Supabase's default privileges: whatever postgres creates in public is granted in full to
-- anon, authenticated and service_role. Tests must see what hosted exposes, so every migration
-- revokes by name what the API roles must not have (the pgTAP allow-list test checks the result).
do $$
declare
  kind record;
begin
  for kind in select * from (values ('r', 'tables'), ('f', 'functions'), ('S', 'sequences')) as k(code, noun) loop
    if not exists (
      select from pg_default_acl d
      where d.defaclrole = 'postgres'::regrole and d.defaclnamespace = 'public'::regnamespace
        and d.defaclobjtype = kind.code::"char"
    ) then
      execute format('alter default privileges for role postgres in schema public grant all on %s to anon, authenticated, service_role', kind.noun);
    end if;
  end loop;
end $$;

do $$
begin
  if not exists (select from pg_extension where extname = 'vector') then
    create extension vector with schema extensions;
  end if;
end $$;

-- Hosted Supabase sets this search_path on its roles; our SQL functions still pin their own.
do $$
begin
  execute format('alter database %I set search_path = "$user", public, extensions', current_database());
end $$;

-- pg_cron -----------------------------------------------------------------------------------------
-- The real extension where this database can have it (it is bound to one database per cluster by
-- cron.database_name). Otherwise a stand-in with pg_cron's tables and functions; the local stack's
-- ticker runs the jobs it holds.
do $$
begin
  if exists (select from pg_namespace where nspname = 'cron') then
    return;
  end if;
  if exists (select from pg_available_extensions where name = 'pg_cron')
     and current_database() = coalesce(current_setting('cron.database_name', true), 'postgres') then
    create extension pg_cron;
    return;
  end if;

  create schema cron;
  create table cron.job (
    jobid bigserial primary key,
    schedule text not null,
    command text not null,
    nodename text not null default 'localhost',
    nodeport int not null default 5432,
    database text not null default current_database(),
    username text not null default current_user,
    active boolean not null default true,
    jobname text unique
  );
  create table cron.job_run_details (
    jobid bigint,
    runid bigserial primary key,
    job_pid int,
    database text,
    username text,
    command text,
    status text,
    return_message text,
    start_time timestamptz,
    end_time timestamptz
  );
  -- Marks the schema as the stand-in so the local stack knows to run a ticker for it.
  comment on schema cron is 'local-stack pg_cron stand-in';

  create function cron.schedule(job_name text, schedule text, command text) returns bigint
  language plpgsql as $f$
  declare id bigint;
  begin
    insert into cron.job (jobname, schedule, command) values (job_name, schedule, command)
    on conflict (jobname) do update set schedule = excluded.schedule, command = excluded.command, active = true
    returning jobid into id;
    return id;
  end $f$;

  create function cron.schedule(schedule text, command text) returns bigint
  language sql as $f$
    insert into cron.job (schedule, command) values (schedule, command) returning jobid
  $f$;

  create function cron.unschedule(job_name text) returns boolean
  language plpgsql as $f$
  begin
    delete from cron.job where jobname = job_name;
    if not found then raise exception 'could not find valid entry for job ''%''', job_name; end if;
    return true;
  end $f$;

  create function cron.unschedule(job_id bigint) returns boolean
  language plpgsql as $f$
  begin
    delete from cron.job where jobid = job_id;
    if not found then raise exception 'could not find valid entry for job %', job_id; end if;
    return true;
  end $f$;
end $$;

-- cron.alter_job, pg_cron's way to pause a job (active => false) or change it in place; null leaves a
-- field as it is. A block of its own, so a stand-in created before it gained the function gets it too.
do $$
begin
  if not exists (select from pg_namespace
                 where nspname = 'cron' and obj_description(oid, 'pg_namespace') = 'local-stack pg_cron stand-in') then
    return;
  end if;
  create or replace function cron.alter_job(
    job_id bigint,
    schedule text default null,
    command text default null,
    database text default null,
    username text default null,
    active boolean default null
  ) returns void
  language plpgsql as $f$
  begin
    update cron.job j set
      schedule = coalesce(alter_job.schedule, j.schedule),
      command = coalesce(alter_job.command, j.command),
      database = coalesce(alter_job.database, j.database),
      username = coalesce(alter_job.username, j.username),
      active = coalesce(alter_job.active, j.active)
    where j.jobid = job_id;
    if not found then raise exception 'could not find valid entry for job %', job_id; end if;
  end $f$;
end $$;

-- Vault -------------------------------------------------------------------------------------------
do $$
begin
  if exists (select from pg_namespace where nspname = 'vault') then
    return;
  end if;
  create schema vault;
  create table vault.secrets (
    id uuid primary key default gen_random_uuid(),
    name text unique,
    description text not null default '',
    secret text not null,
    key_id uuid,
    nonce bytea,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
  );
  comment on table vault.secrets is 'LOCAL-ONLY vault stand-in: secrets are not encrypted here';
  create view vault.decrypted_secrets as
    select id, name, description, secret, secret as decrypted_secret, key_id, nonce, created_at, updated_at
    from vault.secrets;

  create function vault.create_secret(new_secret text, new_name text default null,
                                      new_description text default '', new_key_id uuid default null)
  returns uuid language sql as $f$
    insert into vault.secrets (secret, name, description, key_id)
    values (new_secret, new_name, coalesce(new_description, ''), new_key_id)
    returning id
  $f$;

  create function vault.update_secret(secret_id uuid, new_secret text default null, new_name text default null,
                                      new_description text default null, new_key_id uuid default null)
  returns void language sql as $f$
    update vault.secrets set
      secret = coalesce(new_secret, secret),
      name = coalesce(new_name, name),
      description = coalesce(new_description, description),
      key_id = coalesce(new_key_id, key_id),
      updated_at = now()
    where id = secret_id
  $f$;
  revoke all on schema vault from public;
end $$;

-- Storage -----------------------------------------------------------------------------------------
-- The tables and columns of Supabase Storage that SQL (and our triggers) see. The files themselves
-- are served by the local stack's /storage/v1 gateway.
do $$
begin
  if exists (select from pg_namespace where nspname = 'storage') then
    return;
  end if;
  create schema storage;
  grant usage on schema storage to anon, authenticated, service_role;

  create table storage.buckets (
    id text primary key,
    name text not null unique,
    owner uuid,
    owner_id text,
    public boolean not null default false,
    avif_autodetection boolean default false,
    file_size_limit bigint,
    allowed_mime_types text[],
    created_at timestamptz default now(),
    updated_at timestamptz default now()
  );

  create table storage.objects (
    id uuid primary key default gen_random_uuid(),
    bucket_id text references storage.buckets (id),
    name text,
    owner uuid,
    owner_id text,
    created_at timestamptz default now(),
    updated_at timestamptz default now(),
    last_accessed_at timestamptz default now(),
    metadata jsonb,
    path_tokens text[] generated always as (string_to_array(name, '/')) stored,
    version text,
    user_metadata jsonb
  );
  create unique index bucketid_objname on storage.objects (bucket_id, name);
  create index name_prefix_search on storage.objects (name text_pattern_ops);

  alter table storage.buckets enable row level security;
  alter table storage.objects enable row level security;
  grant all on storage.buckets, storage.objects to service_role;
  -- As on Supabase: the API roles hold table privileges and RLS policies decide. The local gateway
  -- runs every Storage request as the caller's role, so with no policy anon can do nothing.
  grant select, insert, update, delete on storage.objects to anon, authenticated;
  grant select on storage.buckets to anon, authenticated;
  comment on schema storage is 'local-stack storage stand-in';

  create function storage.foldername(name text) returns text[] language sql immutable as $f$
    select (string_to_array(name, '/'))[1:array_length(string_to_array(name, '/'), 1) - 1]
  $f$;
  create function storage.filename(name text) returns text language sql immutable as $f$
    select (string_to_array(name, '/'))[array_length(string_to_array(name, '/'), 1)]
  $f$;
  create function storage.extension(name text) returns text language sql immutable as $f$
    select reverse(split_part(reverse(storage.filename(name)), '.', 1))
  $f$;
end $$;

-- Auth --------------------------------------------------------------------------------------------
-- The SQL helpers that RLS policies use (auth.jwt/uid/role over request.jwt.claims, which the local
-- gateway sets per Storage request), and below them the tables Supabase Auth keeps its users in.
do $$
begin
  if exists (select from pg_namespace where nspname = 'auth') then
    return;
  end if;
  create schema auth;
  grant usage on schema auth to anon, authenticated, service_role;
  comment on schema auth is 'local-stack auth stand-in (JWT claim helpers only)';
  create function auth.jwt() returns jsonb language sql stable as $f$
    select coalesce(nullif(current_setting('request.jwt.claims', true), ''), '{}')::jsonb
  $f$;
  create function auth.role() returns text language sql stable as $f$
    select coalesce(nullif(current_setting('request.jwt.claim.role', true), ''), auth.jwt() ->> 'role')
  $f$;
  create function auth.uid() returns uuid language sql stable as $f$
    select nullif(auth.jwt() ->> 'sub', '')::uuid
  $f$;
  grant execute on function auth.jwt(), auth.role(), auth.uid() to anon, authenticated, service_role;
end $$;

-- Supabase Auth's users, sessions and refresh tokens, with hosted's names and types for the columns
-- the local Auth stand-in (packages/local-stack/auth) uses, so our migrations' triggers and foreign
-- keys on auth.users behave the same locally and hosted. As on hosted, the API roles get nothing here.
-- One difference: hosted keeps a refresh token as issued; this stand-in keeps only its SHA-256.
do $$
begin
  if to_regclass('auth.users') is not null then
    return;
  end if;
  create table auth.users (
    instance_id uuid,
    id uuid primary key,
    aud varchar(255),
    role varchar(255),
    email varchar(255),
    encrypted_password varchar(255),
    email_confirmed_at timestamptz,
    invited_at timestamptz,
    confirmation_token varchar(255),
    confirmation_sent_at timestamptz,
    recovery_token varchar(255),
    recovery_sent_at timestamptz,
    email_change_token_new varchar(255),
    email_change varchar(255),
    email_change_sent_at timestamptz,
    last_sign_in_at timestamptz,
    raw_app_meta_data jsonb,
    raw_user_meta_data jsonb,
    is_super_admin boolean,
    created_at timestamptz,
    updated_at timestamptz,
    phone text unique default null,
    phone_confirmed_at timestamptz,
    confirmed_at timestamptz generated always as (least(email_confirmed_at, phone_confirmed_at)) stored,
    banned_until timestamptz,
    is_sso_user boolean not null default false,
    deleted_at timestamptz,
    is_anonymous boolean not null default false
  );
  create unique index users_email_partial_key on auth.users (email) where (is_sso_user = false);
  create table auth.sessions (
    id uuid primary key,
    user_id uuid not null references auth.users (id) on delete cascade,
    created_at timestamptz,
    updated_at timestamptz,
    aal text,
    not_after timestamptz,
    refreshed_at timestamp,
    user_agent text
  );
  create index sessions_user_id_idx on auth.sessions (user_id);
  create table auth.refresh_tokens (
    instance_id uuid,
    id bigserial primary key,
    token varchar(255) unique,
    user_id varchar(255),
    revoked boolean,
    created_at timestamptz,
    updated_at timestamptz,
    parent varchar(255),
    session_id uuid references auth.sessions (id) on delete cascade
  );
  create index refresh_tokens_session_id_revoked_idx on auth.refresh_tokens (session_id, revoked);
  revoke all on auth.users, auth.sessions, auth.refresh_tokens from public;
end $$;

-- pg_net ------------------------------------------------------------------------------------------
-- Same tables and function signatures as pg_net. Requests wait in net.http_request_queue; as with
-- pg_net's background worker, the local stack only sees a row once its transaction commits, sends
-- it, and records the answer in net._http_response under the same id. The NOTIFY (delivered on
-- commit only) wakes the sender without polling.
do $$
begin
  if exists (select from pg_namespace where nspname = 'net') then
    return;
  end if;
  create schema net;
  grant usage on schema net to service_role;

  create table net.http_request_queue (
    id bigserial primary key,
    method text not null,
    url text not null,
    headers jsonb,
    body bytea,
    timeout_milliseconds int not null
  );

  create unlogged table net._http_response (
    id bigint,
    status_code int,
    content_type text,
    headers jsonb,
    content text,
    timed_out boolean,
    error_msg text,
    created timestamptz not null default now()
  );
  create index _http_response_created_idx on net._http_response (created);
  comment on schema net is 'local-stack pg_net stand-in';

  create function net._enqueue(method text, url text, headers jsonb, body bytea, timeout_milliseconds int)
  returns bigint language plpgsql as $f$
  declare request_id bigint;
  begin
    insert into net.http_request_queue (method, url, headers, body, timeout_milliseconds)
    values (method, url, headers, body, timeout_milliseconds)
    returning id into request_id;
    perform pg_notify('net_http_request', request_id::text);
    return request_id;
  end $f$;

  create function net._url_with_params(url text, params jsonb) returns text language sql immutable as $f$
    select case when params is null or params = '{}'::jsonb then url
      else url || case when position('?' in url) > 0 then '&' else '?' end ||
        (select string_agg(key || '=' || value, '&') from jsonb_each_text(params))
    end
  $f$;

  create function net.http_post(
    url text,
    body jsonb default '{}'::jsonb,
    params jsonb default '{}'::jsonb,
    headers jsonb default '{"Content-Type": "application/json"}'::jsonb,
    timeout_milliseconds int default 5000
  ) returns bigint language sql as $f$
    select net._enqueue('POST', net._url_with_params(url, params), headers,
                        convert_to(body::text, 'UTF8'), timeout_milliseconds)
  $f$;

  create function net.http_get(
    url text,
    params jsonb default '{}'::jsonb,
    headers jsonb default '{}'::jsonb,
    timeout_milliseconds int default 5000
  ) returns bigint language sql as $f$
    select net._enqueue('GET', net._url_with_params(url, params), headers, null, timeout_milliseconds)
  $f$;

  create function net.http_delete(
    url text,
    params jsonb default '{}'::jsonb,
    headers jsonb default '{}'::jsonb,
    timeout_milliseconds int default 5000
  ) returns bigint language sql as $f$
    select net._enqueue('DELETE', net._url_with_params(url, params), headers, null, timeout_milliseconds)
  $f$;
end $$;
