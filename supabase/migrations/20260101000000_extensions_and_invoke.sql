-- Extensions the project needs, and one way for SQL (pg_cron jobs, webhooks) to call an edge function.
-- On hosted Supabase these create the real extensions. Where the platform bootstrap already provides
-- a schema (the local stack's pg_net and pg_cron stand-ins), the guard leaves it alone.
create extension if not exists vector with schema extensions;

do $$
begin
  if not exists (select from pg_namespace where nspname = 'cron') then
    create extension if not exists pg_cron;
  end if;
  if not exists (select from pg_namespace where nspname = 'net') then
    create extension if not exists pg_net;
  end if;
end $$;

-- What the API roles may reach, by name: hosted Supabase's default privileges grant ALL on every new
-- table, view, sequence and function in public to anon and authenticated, and `revoke … from public`
-- does not undo an explicit grant to a role. So every object is revoked from anon and authenticated
-- where it is created, and granted back only on purpose (supabase/tests/010_api_roles.test.sql holds
-- the exact allow-list: search to authenticated, embedding_dimensions() to both).
create schema if not exists private;
revoke all on schema private from public;

-- invoke_edge_function: fire-and-forget POST to /functions/v1/<name> through pg_net.
-- The project URL and the key come from Vault, so no secret is ever written in a migration, a job or
-- a table. Supabase has two key schemes, and the key goes in the header it belongs in:
--   secret_key        (sb_secret_…, preferred)  ->  apikey: <key>
--   service_role_key  (legacy service_role JWT) ->  Authorization: Bearer <key>
-- (an sb_secret_ key sent as `Authorization: Bearer` is not a JWT and would be refused, and every
-- scheduled call would fail in silence while the queues fill), plus project_url. The functions
-- authenticate both in code (packages/core/auth.ts).
-- Returns the pg_net request id, or null (with a warning) while the Vault entries are not set,
-- so a fresh project's cron jobs do nothing instead of failing every few minutes.
create or replace function private.invoke_edge_function(
  function_name text,
  body jsonb default '{}'::jsonb,
  timeout_milliseconds int default 5000
) returns bigint
language plpgsql
security definer
set search_path = ''
as $$
declare
  base_url text;
  secret_key text;
  legacy_key text;
begin
  if function_name !~ '^[a-z0-9][a-z0-9_-]{0,62}$' then
    raise exception 'invalid edge function name: %', function_name using errcode = '22023';
  end if;
  select decrypted_secret into base_url from vault.decrypted_secrets where name = 'project_url';
  select decrypted_secret into secret_key from vault.decrypted_secrets where name = 'secret_key';
  select decrypted_secret into legacy_key from vault.decrypted_secrets where name = 'service_role_key';
  if base_url is null or (secret_key is null and legacy_key is null) then
    raise warning 'invoke_edge_function(%): vault secrets project_url and secret_key (or the legacy service_role_key) are not set', function_name;
    return null;
  end if;
  return net.http_post(
    url := rtrim(base_url, '/') || '/functions/v1/' || function_name,
    body := body,
    headers := case when secret_key is not null
      then jsonb_build_object('Content-Type', 'application/json', 'apikey', secret_key)
      else jsonb_build_object('Content-Type', 'application/json', 'Authorization', 'Bearer ' || legacy_key)
    end,
    timeout_milliseconds := timeout_milliseconds
  );
end $$;

revoke all on function private.invoke_edge_function(text, jsonb, int) from public;

-- fan_out_edge_function: the dispatchers' one rule for parallel workers. From a backlog count it makes
-- k = least(max_calls, ceil(backlog / batch_size)) calls, but at least min_calls, each with the same
-- body, so each call drains about one batch. Returns k. Callers cap their backlog count at
-- max_calls * batch_size, so a million-row backlog costs no more than a small one.
create or replace function private.fan_out_edge_function(
  function_name text,
  backlog bigint,
  batch_size int,
  max_calls int,
  body jsonb,
  timeout_milliseconds int,
  min_calls int default 0
) returns int
language plpgsql
security definer
set search_path = ''
as $$
declare
  k int := greatest(min_calls, least(max_calls, ceil(backlog::numeric / greatest(batch_size, 1))::int));
begin
  for i in 1..k loop
    perform private.invoke_edge_function(function_name, body, timeout_milliseconds);
  end loop;
  return k;
end $$;

revoke all on function private.fan_out_edge_function(text, bigint, int, int, jsonb, int, int) from public;
