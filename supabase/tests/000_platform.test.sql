-- The platform the migrations rely on: hosted Supabase's, or the local bootstrap's stand-ins.
begin;
select plan(9);

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

select * from finish();
rollback;
