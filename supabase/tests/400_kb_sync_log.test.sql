-- kb_sync_log: what `npm run kb -- push` records on the target; operators only.
begin;
select plan(9);

select has_table('public', 'kb_sync_log', 'kb_sync_log exists');
select columns_are('public', 'kb_sync_log', array[
  'id', 'pushed_at', 'from_env', 'mode', 'tables', 'rows_inserted', 'rows_updated', 'rows_deleted', 'per_table',
  'chunks_copied', 'backup_file']);
select ok((select c.relrowsecurity from pg_class c where c.oid = 'public.kb_sync_log'::regclass), 'RLS is enabled on kb_sync_log');
select ok(not has_table_privilege('anon', 'public.kb_sync_log', 'select'), 'anon cannot read kb_sync_log');
select ok(not has_table_privilege('authenticated', 'public.kb_sync_log', 'insert'), 'authenticated cannot write kb_sync_log');
select ok(not has_sequence_privilege('anon', 'public.kb_sync_log_id_seq', 'usage'), 'anon cannot use its sequence');

select lives_ok($$insert into public.kb_sync_log (from_env, mode, tables, rows_inserted) values ('dev', 'replace', '{kb_articles}', 3)$$,
  'a push is recorded');
select throws_ok($$insert into public.kb_sync_log (from_env, mode, tables) values ('dev', 'merge', '{}')$$,
  '23514', null, 'an unknown mode is refused');
select throws_ok($$insert into public.kb_sync_log (from_env, mode, tables, rows_deleted) values ('dev', 'upsert', '{}', -1)$$,
  '23514', null, 'a negative count is refused');

select * from finish();
rollback;
