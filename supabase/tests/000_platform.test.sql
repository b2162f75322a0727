-- The platform the migrations rely on: hosted Supabase's, or the local bootstrap's stand-ins.
begin;
select plan(19);

select has_role('anon');
select has_role('authenticated');
select has_role('service_role');
select has_extension('vector');
select has_table('storage', 'objects', 'storage.objects exists');
select has_view('vault', 'decrypted_secrets', 'vault.decrypted_secrets exists');
select has_function('net', 'http_post', array['text', 'jsonb', 'jsonb', 'jsonb', 'integer'], 'net.http_post has pg_net''s signature');
select has_function('private', 'invoke_edge_function', array['text', 'jsonb', 'integer']);
select throws_ok(
  $$ select private.invoke_edge_function('../etc', '{}') $$,
  '22023', null, 'a function name that is not a slug is refused'
);

-- The dispatchers' fan-out rule: k = least(max_calls, ceil(backlog / batch_size)), at least min_calls.
select vault.create_secret('http://127.0.0.1:9', 'project_url');
select vault.create_secret('local-test-key', 'service_role_key');
delete from net.http_request_queue;
select is(private.fan_out_edge_function('probe', 0, 50, 4, '{}', 1000), 0, 'fan-out: no backlog, no call');
select is(private.fan_out_edge_function('probe', 0, 50, 4, '{}', 1000, 1), 1, 'fan-out: min_calls is honoured when idle');
select is(private.fan_out_edge_function('probe', 101, 50, 4, '{"n":1}', 1000), 3, 'fan-out: ceil(101 / 50) = 3 calls');
select is(private.fan_out_edge_function('probe', 1000000, 50, 4, '{}', 1000), 4, 'fan-out: capped at max_calls');
select is((select count(*)::int from net.http_request_queue where url = 'http://127.0.0.1:9/functions/v1/probe'), 8,
  'fan-out: one pg_net request per call');
select is((select count(*)::int from net.http_request_queue where convert_from(body, 'UTF8')::jsonb = '{"n":1}'::jsonb), 3,
  'fan-out: each call carries the body');

-- The key goes in the header it belongs in: a legacy JWT as Bearer, a secret key as apikey (preferred).
delete from net.http_request_queue;
select private.invoke_edge_function('probe', '{}');
select is((select headers->>'Authorization' from net.http_request_queue), 'Bearer local-test-key',
  'legacy service_role_key in Vault: sent as Authorization: Bearer');
select ok((select not headers ? 'apikey' from net.http_request_queue), 'legacy key: no apikey header');
select vault.create_secret('sb_secret_local_test_only', 'secret_key');
delete from net.http_request_queue;
select private.invoke_edge_function('probe', '{}');
select is((select headers->>'apikey' from net.http_request_queue), 'sb_secret_local_test_only',
  'secret_key in Vault: sent as apikey');
select ok((select not headers ? 'Authorization' from net.http_request_queue),
  'secret key: never sent as a Bearer JWT (the gateway would refuse it)');

select * from finish();
rollback;
