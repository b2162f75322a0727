-- files_queue and the collector's SQL: schema kept for the runbook, the Storage trigger, keyset
-- repopulate, anti-join repair, alert, queue rules, RLS and security_invoker views.
begin;
select plan(50);

-- The runbook's columns, and file_path unique on its own.
select has_table('public', 'files_queue', 'files_queue exists');
select columns_are('public', 'files_queue', array[
  'id', 'file_path', 'bucket_id', 'file_size', 'status', 'processed', 'created_at', 'attempts', 'max_attempts',
  'last_error', 'run_at', 'locked_by', 'locked_at', 'lease_expires_at', 'processed_at', 'updated_at', 'lane']);
select col_is_unique('public', 'files_queue', array['file_path'], 'file_path is UNIQUE on its own');
select col_type_is('public', 'files_queue', 'file_size', 'bigint', 'file_size is bigint');
select col_type_is('public', 'files_queue', 'processed', 'boolean', 'processed is boolean');
select trigger_is('storage', 'objects', 'files_queue_enqueue', 'private', 'files_queue_on_object_change');

-- RLS on every table, nothing for anon/authenticated, views security_invoker.
select ok((select bool_and(c.relrowsecurity) from pg_class c
            where c.relnamespace = 'public'::regnamespace and c.relkind = 'r'
              and c.relname in ('files_queue', 'files_queue_watched_buckets', 'files_queue_coherence_checks',
                                'legal_documents', 'legifrance_crawl_plan', 'legifrance_collector_runs', 'legifrance_failed_documents')),
          'RLS is enabled on every files/Légifrance table');
select ok(not has_table_privilege('anon', 'public.files_queue', 'select'), 'anon cannot read files_queue');
select ok(not has_table_privilege('authenticated', 'public.legal_documents', 'select'), 'authenticated cannot read legal_documents directly');
select ok(not has_function_privilege('anon', 'public.claim_files_queue(text, int, int)', 'execute'), 'anon cannot claim');
select ok((select bool_and(coalesce(c.reloptions @> array['security_invoker=true'], false)) from pg_class c
            where c.relnamespace = 'public'::regnamespace and c.relkind = 'v'
              and c.relname in ('files_queue_coherence', 'files_queue_insertion_rate', 'files_queue_status', 'legifrance_collector_status')),
          'every files view is security_invoker');

-- The trigger: watched bucket only, same transaction, size from metadata.
select ok(exists (select from storage.buckets where id = 'agentbasic-legifrance-raw' and not public), 'the collector''s bucket exists and is private');
insert into storage.buckets (id, name) values ('elsewhere', 'elsewhere');
insert into storage.objects (bucket_id, name, metadata)
select 'agentbasic-legifrance-raw', 'p/' || lpad(g::text, 4, '0') || '.json', jsonb_build_object('size', g) from generate_series(1, 250) g;
insert into storage.objects (bucket_id, name, metadata) values ('elsewhere', 'e.json', '{"size": 1}');
select is((select count(*)::int from files_queue), 250, 'each object of the watched bucket is enqueued, and only those');
select is((select sum(file_size)::int from files_queue), (250 * 251) / 2, 'file_size comes from metadata.size');
select is((select status from files_queue where file_path = 'p/0001.json'), 'pending', 'new rows are pending');

update files_queue set status = 'completed', processed = true where file_path = 'p/0001.json';
update storage.objects set metadata = '{"size": 999}' where name = 'p/0001.json';
select is((select status || ':' || file_size from files_queue where file_path = 'p/0001.json'), 'pending:999', 'a re-upload re-queues with the new size');
delete from storage.objects where name = 'p/0002.json';
select is((select status from files_queue where file_path = 'p/0002.json'), 'deleted', 'deleting the object marks its row');

-- Coherence and alert.
select is((select missing_in_queue::int from files_queue_coherence where bucket_id = 'agentbasic-legifrance-raw'), 0, 'no drift');
select is(files_queue_drift_alert('agentbasic-legifrance-raw'), false, 'no alert without drift');
delete from files_queue where file_path in ('p/0010.json', 'p/0020.json', 'p/0030.json');
select is((select missing_in_queue::int from files_queue_coherence where bucket_id = 'agentbasic-legifrance-raw'), 3, 'missing_in_queue counts the drift');
select is(files_queue_drift_alert('agentbasic-legifrance-raw'), false, '3 of 249 (1.2%) is under both thresholds');
delete from files_queue where file_path like 'p/00%';
select is(files_queue_drift_alert('agentbasic-legifrance-raw'), true, 'over 10% missing raises the alert');
insert into files_queue (file_path, bucket_id) values ('ghost.json', 'agentbasic-legifrance-raw');
select is((select queued_without_object::int from files_queue_coherence where bucket_id = 'agentbasic-legifrance-raw'), 1, 'queued_without_object counts rows with no object');

-- Repair by anti-join: exactly the missing rows.
select is(files_queue_repair_missing('agentbasic-legifrance-raw'), 98::bigint, 'the repair inserts exactly the missing rows');
select is((select missing_in_queue::int from files_queue_coherence where bucket_id = 'agentbasic-legifrance-raw'), 0, 'nothing missing after repair');

-- Keyset repopulate: batches partition the bucket, cursor is the last name, no OFFSET anywhere.
truncate files_queue;
select results_eq($$ select inserted, scanned, cursor, done from files_queue_repopulate_batch('agentbasic-legifrance-raw', null, 100) $$,
  $$ values (100::bigint, 100::bigint, 'p/0101.json', false) $$, 'first batch: 100 rows, cursor at the 100th name (p/0002 was deleted)');
select results_eq($$ select inserted, scanned, cursor, done from files_queue_repopulate_batch('agentbasic-legifrance-raw', 'p/0101.json', 100, true) $$,
  $$ values (100::bigint, 100::bigint, 'p/0201.json', false) $$, 'dry run counts the missing rows of the next batch');
select is((select count(*)::int from files_queue), 100, 'a dry run inserts nothing');
select results_eq($$ select inserted, scanned, cursor, done from files_queue_repopulate_batch('agentbasic-legifrance-raw', 'p/0201.json', 100) $$,
  $$ values (49::bigint, 49::bigint, 'p/0250.json', true) $$, 'the last batch is short and done');
select results_eq($$ select inserted, scanned, done from files_queue_repopulate_batch('agentbasic-legifrance-raw', null, 1000) $$,
  $$ values (100::bigint, 249::bigint, true) $$, 'a second pass only inserts what the first skipped');
select throws_ok($$ select * from files_queue_repopulate_batch('agentbasic-legifrance-raw', null, 100001) $$, '22023', null, 'batch size is capped at 100000');
select ok(pg_get_functiondef('public.files_queue_repopulate_batch(text, text, int, boolean)'::regprocedure) !~* '\moffset\M',
          'repopulate never uses OFFSET');

-- Queue rules: claim/lease, complete by holder only, backoff, dead letter.
truncate files_queue;
insert into files_queue (file_path, bucket_id) values ('q/1', 'agentbasic-legifrance-raw'), ('q/2', 'agentbasic-legifrance-raw');
select is((select count(*)::int from claim_files_queue('w1', 1, 60)), 1, 'claim takes up to the batch size');
select is((select count(*)::int from complete_files_queue('w2', array(select id from files_queue where locked_by = 'w1'))), 0, 'only the lease holder completes');
select is(fail_files_queue('w1', (select id from files_queue where locked_by = 'w1'), 'boom'), 'pending', 'a first failure backs off');
select ok((select run_at > now() from files_queue where last_error = 'boom'), 'the retry is scheduled later');
update files_queue set attempts = 3, status = 'processing', locked_by = 'w1' where last_error = 'boom';
select is(fail_files_queue('w1', (select id from files_queue where last_error = 'boom'), 'boom again'), 'failed', 'at max attempts the row is dead-lettered');
update files_queue set status = 'processing', locked_by = 'gone', lease_expires_at = now() - interval '1 minute' where file_path = 'q/2';
select is(recover_stuck_files_queue(), 1::bigint, 'an expired lease is recovered');

-- The collector's single active MASSIVE run.
select ok((select acquired from legifrance_start_run('massive')), 'a first massive run starts');
select ok(not (select acquired from legifrance_start_run('massive')), 'a second one while the first holds its lease does not');
select ok((select acquired from legifrance_start_run('massive', (select id from legifrance_collector_runs where status = 'running'))),
          'the continuation (same run id) takes the run over');
update legifrance_collector_runs set lease_until = now() - interval '1 second' where status = 'running';
select ok((select acquired from legifrance_start_run('massive')), 'after the lease lapses a new run starts...');
select is((select count(*)::int from legifrance_collector_runs where status = 'failed' and last_error like 'lease expired%'), 1,
          '...and the dead one is closed as failed');

-- The plan cursor advances once per page, even when a page is replayed after a crash.
select ok(legifrance_advance_plan((select id from legifrance_collector_runs where status = 'running'), 'codes', 1, 250, 100, 0),
          'page 1 advances the cursor');
select ok(not legifrance_advance_plan((select id from legifrance_collector_runs where status = 'running'), 'codes', 1, 250, 100, 0),
          'a replay of page 1 does not advance it again');
select is((select next_page || ':' || docs_collected || ':' || done from legifrance_crawl_plan where category = 'codes'), '2:100:false',
          'cursor at page 2, documents counted once');
select legifrance_advance_plan((select id from legifrance_collector_runs where status = 'running'), 'codes', 2, 250, 100, 0);
select legifrance_advance_plan((select id from legifrance_collector_runs where status = 'running'), 'codes', 3, 250, 50, 0);
select ok((select done from legifrance_crawl_plan where category = 'codes'), 'the last page closes the category');
select is(legifrance_run_error((select id from legifrance_collector_runs where status = 'running'), 'PISTE 503'), 1, 'a failing invocation is counted');
select is(legifrance_run_error((select id from legifrance_collector_runs where status = 'running'), 'PISTE 503'), 2, 'consecutive failures add up');
select legifrance_advance_plan((select id from legifrance_collector_runs where status = 'running'), 'jorf', 1, 10, 10, 0);
select is((select consecutive_errors from legifrance_collector_runs where status = 'running'), 0, 'a completed page resets the count');

select * from finish();
rollback;
