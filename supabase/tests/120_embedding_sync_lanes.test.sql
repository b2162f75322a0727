-- Embedding sync, issue 9: priority lanes. The lane column and its rule (live from row triggers, bulk
-- under embedding_sync.lane = 'bulk', upgrade never downgrade), the claim's shares, the settings, the
-- views' lane columns, files_queue's lane from Storage user metadata, and who may call what.
begin;
select plan(24);

select vault.create_secret('http://127.0.0.1:9', 'project_url');
select vault.create_secret('local-test-key', 'secret_key');

select has_column('public', 'embedding_sync_queue', 'lane', 'embedding_sync_queue has a lane');
select col_not_null('public', 'embedding_sync_queue', 'lane', 'lane is not null');
select throws_ok($$ insert into embedding_sync_queue (source_table, source_id, action, lane) values ('x', '1', 'DELETE', 'urgent') $$,
  '23514', null, 'lane is live or bulk');
select results_eq($$ select lanes_enabled, bulk_share from embedding_sync_settings $$,
  $$ values (true, 0.2::double precision) $$, 'lanes are on by default, bulk gets 20%');
select ok(exists (select from pg_indexes where indexname = 'embedding_sync_queue_ready_lane'
                    and indexdef like '%(lane, run_at, id) WHERE (status = ''pending''::text)%'), 'each lane''s claim order is indexed');

create table public.lane_notes (id int primary key, body text);
select register_embedding_source('lane_notes', content_columns => array['body']);

insert into lane_notes values (1, 'live');
select is((select lane from embedding_sync_queue where source_table = 'lane_notes' and source_id = '1'), 'live',
  'a row trigger queues a live job');
set local embedding_sync.lane = 'bulk';
insert into lane_notes select g, 'bulk ' || g from generate_series(2, 21) g;
update lane_notes set body = 'bulk again' where id = 1;
select is((select lane from embedding_sync_queue where source_table = 'lane_notes' and source_id = '1'), 'live',
  'a bulk change never downgrades a pending live job');
set local embedding_sync.lane = '';
select is((select count(*)::int from embedding_sync_queue where source_table = 'lane_notes' and lane = 'bulk'), 20,
  'writes under embedding_sync.lane = bulk queue bulk jobs');
update lane_notes set body = 'by hand' where id = 2;
select results_eq($$ select lane, count(*)::int from embedding_sync_queue where source_table = 'lane_notes' and source_id = '2' group by lane $$,
  $$ values ('live', 1) $$, 'a live edit upgrades the pending bulk job (still one pending job per row)');

-- resync is bulk and gives the caller its own lane back.
delete from embedding_sync_queue where source_table = 'lane_notes';
select lives_ok($$ select * from resync_embedding_sources('lane_notes', true) $$, 'resync (forced) runs');
select is((select count(*)::int from embedding_sync_queue where source_table = 'lane_notes' and lane = 'bulk' and status = 'pending'), 21,
  'resync queues bulk jobs');
select is(coalesce(current_setting('embedding_sync.lane', true), ''), '', 'resync restores the caller''s lane');

-- Claims: live first, bulk's share, p_lane, lanes off.
insert into lane_notes values (100, 'urgent');
select results_eq($$ select lane, count(*)::int from claim_embedding_jobs('w1', 10) group by lane order by lane $$,
  $$ values ('bulk', 9), ('live', 1) $$, 'a mixed claim takes the live job, bulk its share and what live left');
select is((select count(*)::int from claim_embedding_jobs('w2', 5, null, 'live')), 0, 'p_lane live claims no bulk job');
select is((select count(*)::int from claim_embedding_jobs('w3', 5, 60, 'bulk')), 5, 'p_lane bulk claims bulk jobs');
update embedding_sync_settings set lanes_enabled = false;
insert into lane_notes values (101, 'late');
select is((select string_agg(lane, ',' order by id) from claim_embedding_jobs('w4', 8, null, 'live')), 'bulk,bulk,bulk,bulk,bulk,bulk,bulk,live',
  'lanes off: FIFO, p_lane ignored');
update embedding_sync_settings set lanes_enabled = true;

-- Views: appended columns, the runbook's first.
select is((select array_agg(attname::text order by attnum) from pg_attribute
            where attrelid = 'public.embedding_sync_status'::regclass and attnum > 0),
  array['source_table', 'pending', 'processing', 'completed', 'failed', 'oldest_pending_age', 'last_processed_at',
        'pending_live', 'pending_bulk', 'oldest_pending_live_age'], 'embedding_sync_status: the runbook''s columns, then per lane');
select has_column('public', 'embedding_sync_stuck', 'lane', 'embedding_sync_stuck shows the lane');
select has_column('public', 'embedding_sync_dead_letter', 'lane', 'embedding_sync_dead_letter shows the lane');

-- files_queue: the lane from the object's user metadata.
insert into storage.objects (bucket_id, name, metadata, user_metadata) values
  ('agentbasic-legifrance-raw', 'lanes/a.json', '{"size": 1}', '{"lane": "bulk"}'),
  ('agentbasic-legifrance-raw', 'lanes/b.json', '{"size": 1}', null);
select results_eq($$ select file_path, lane from files_queue where file_path like 'lanes/%' order by 1 $$,
  $$ values ('lanes/a.json', 'bulk'), ('lanes/b.json', 'live') $$, 'files_queue takes the lane from user_metadata.lane');
update storage.objects set version = 'v2', user_metadata = null where name = 'lanes/a.json';
select is((select lane from files_queue where file_path = 'lanes/a.json'), 'live', 'a live re-upload upgrades a queued bulk file');
select is((select pending_bulk::int + pending_live::int from files_queue_status where status = 'pending' and bucket_id = 'agentbasic-legifrance-raw'),
  (select count(*)::int from files_queue where status = 'pending'), 'files_queue_status counts pending files per lane');

-- Who may call what.
select ok(not has_function_privilege('anon', 'public.claim_embedding_jobs(text, int, int, text)', 'execute')
          and not has_function_privilege('authenticated', 'public.embedding_last_live_wake()', 'execute'),
  'anon and authenticated cannot claim or read the wake');
select ok(has_function_privilege('service_role', 'public.claim_embedding_jobs(text, int, int, text)', 'execute')
          and has_function_privilege('service_role', 'public.resync_embedding_sources(text, boolean)', 'execute'),
  'the service role claims and resyncs');

select * from finish();
rollback;
