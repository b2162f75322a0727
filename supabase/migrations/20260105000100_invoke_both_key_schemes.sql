-- invoke_edge_function, for both of Supabase's key schemes.
--
-- Projects created since the opaque API keys have sb_secret_… keys, which are not JWTs: sent as
-- `Authorization: Bearer` they would be refused, and every scheduled call would fail in silence while
-- the queues fill. So the key goes in the header it belongs in, read from Vault:
--   secret_key        (sb_secret_…, preferred)  ->  apikey: <key>
--   service_role_key  (legacy service_role JWT) ->  Authorization: Bearer <key>
-- plus project_url. The functions authenticate both in code (packages/core/auth.ts).
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
