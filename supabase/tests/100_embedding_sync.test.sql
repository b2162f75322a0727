-- Embedding sync SQL: queue rules, trigger behaviour, guards, RLS and views.
begin;
select plan(51);

-- Local-only Vault entries so the webhook has somewhere to go (nothing sends in this test).
select vault.create_secret('http://127.0.0.1:9', 'project_url');
select vault.create_secret('local-test-key', 'service_role_key');

create table public.faq_items (id bigint primary key, question text, answer text,
                               is_published boolean not null default true, views int not null default 0);
create trigger sync_faq_embeddings after insert or update or delete on public.faq_items
  for each row execute function add_to_embedding_queue();

-- Bare runbook trigger: defaults (labelled text columns in column order).
insert into faq_items (id, question, answer) values (1, 'Q1', 'A1');
select is((select content from embedding_sync_queue where source_id = '1'), E'question: Q1\nanswer: A1',
  'default content: labelled text columns, in column order');
select is((select registered from embedding_sources where source_table = 'faq_items'), false,
  'an unregistered table gets default settings');

-- Dedup + newest wins.
update faq_items set answer = 'A1 v2' where id = 1;
update faq_items set answer = 'A1 v3' where id = 1;
select is((select count(*)::int from embedding_sync_queue where source_id = '1' and status = 'pending'), 1,
  'one pending job per source row');
select is((select content from embedding_sync_queue where source_id = '1' and status = 'pending'), E'question: Q1\nanswer: A1 v3',
  'the newest content wins');
select is((select action from embedding_sync_queue where source_id = '1'), 'UPDATE', 'the newest action wins');

-- An UPDATE that does not change the embedded text enqueues nothing.
create temp table v_before as select version from embedding_sync_queue where source_id = '1';
update faq_items set views = views + 1 where id = 1;
select is((select version from embedding_sync_queue where source_id = '1'), (select version from v_before),
  'an update of a non-embedded column enqueues nothing');

-- Registration: publish filter and explicit columns; idempotent.
select lives_ok($$ select register_embedding_source('faq_items', array['question', 'answer'], null, 'is_published', 256, 32) $$,
  'register_embedding_source works');
select lives_ok($$ select register_embedding_source('faq_items', array['question', 'answer'], null, 'is_published', 256, 32) $$,
  'calling it again is fine');
select is((select count(*)::int from pg_trigger where tgrelid = 'faq_items'::regclass and not tgisinternal), 2,
  'the runbook trigger is kept, only the TRUNCATE trigger is added');
select is((select chunk_tokens from embedding_sources where source_table = 'faq_items'), 256, 'settings stored');
select throws_ok($$ select register_embedding_source('faq_items', publish_filter => 'no_such_column') $$,
  '42703', null, 'a bad publish filter is refused at registration');

update faq_items set is_published = false where id = 1;
select is((select action from embedding_sync_queue where source_id = '1' and status = 'pending'), 'DELETE',
  'a row that stops matching the publish filter is removed from the index');
insert into faq_items (id, question, is_published) values (2, 'hidden', false);
select is((select count(*)::int from embedding_sync_queue where source_id = '2'), 0, 'an unpublished insert enqueues nothing');

-- Claim / complete / fail / recover.
select is((select count(*)::int from claim_embedding_jobs('w1', 10, 60)), 1, 'claim takes the ready job');
select is((select count(*)::int from claim_embedding_jobs('w2', 10, 60)), 0, 'a claimed job is not claimed again');
update faq_items set is_published = true where id = 1;
select is((select count(*)::int from embedding_sync_queue where source_id = '1' and status = 'pending'), 1,
  'a change during processing becomes a new pending job');
select is((select count(*)::int from embedding_sync_queue where source_id = '1'), 2, 'the processing job is kept as is');
select is(complete_embedding_jobs('w2', array(select id from embedding_sync_queue where status = 'processing')), 0,
  'only the lease holder completes');

-- The older job (processing) fails while a newer one is pending: superseded, not retried.
select is((select status from fail_embedding_jobs('w1', array(select id from embedding_sync_queue where status = 'processing'), 'x')),
  'completed', 'a failed job with a newer pending change is superseded');

-- Backoff and dead letter.
update embedding_sync_settings set backoff_base_seconds = 10, backoff_max_seconds = 3600;
select ok((select count(*) = 1 from claim_embedding_jobs('w1', 10, 60)), 'claim the new job');
select ok((select run_at > now() + interval '4 seconds' and run_at < now() + interval '16 seconds'
           from fail_embedding_jobs('w1', array(select id from embedding_sync_queue where status = 'processing'), 'e1')),
  'first failure: backoff 10 s with jitter');
select is((select count(*)::int from claim_embedding_jobs('w1', 10, 60)), 0, 'a backing-off job is not claimed');
update embedding_sync_queue set run_at = now() where status = 'pending';
select ok((select count(*) = 1 from claim_embedding_jobs('w1', 10, 60)), 'claimed again after the backoff');
select ok((select run_at > now() + interval '9 seconds'
           from fail_embedding_jobs('w1', array(select id from embedding_sync_queue where status = 'processing'), 'e2', 5)),
  'second failure: longer backoff');
update embedding_sync_queue set run_at = now() where status = 'pending';
select ok((select count(*) = 1 from claim_embedding_jobs('w1', 10, 60)), 'claimed a third time');
select is((select status from fail_embedding_jobs('w1', array(select id from embedding_sync_queue where status = 'processing'), 'e3')),
  'failed', 'after max attempts (3) the job is dead-lettered');
select is((select last_error from embedding_sync_dead_letter), 'e3', 'the dead letter keeps its error');

-- Recovery of an expired lease.
insert into faq_items (id, question) values (3, 'Q3');
select ok((select count(*) = 1 from claim_embedding_jobs('crashed', 10, 60)), 'a worker claims and dies');
update embedding_sync_queue set lease_until = now() - interval '1 second' where status = 'processing';
select is((select count(*)::int from embedding_sync_stuck), 1, 'the stuck view shows it');
select is(recover_stuck_embedding_jobs(), 1, 'recovery returns it');
select is((select status || '/' || retry_count from embedding_sync_queue where source_id = '3'), 'pending/1',
  'pending again, attempt counted');

-- apply guard: an older version cannot overwrite a newer one; a delete leaves nothing.
select ok((select count(*) = 1 from claim_embedding_jobs('w1', 10, 60)), 'claim row 3');
update faq_items set question = 'Q3 newer' where id = 3;
select ok((select count(*) = 1 from claim_embedding_jobs('w2', 10, 60)), 'a second worker claims the newer job');
select is((select outcome from apply_embedding_results('w2', 'm', array(select id from embedding_sync_queue where locked_by = 'w2'),
  (select jsonb_agg(jsonb_build_object('j', id, 'i', 0, 'c', content, 'h', content_hash, 't', 3,
     'e', (select array_agg(0.5)::real[]::vector::text from generate_series(1, embedding_dimensions()))))
   from embedding_sync_queue where locked_by = 'w2'))), 'applied', 'the newer job writes');
select is((select outcome from apply_embedding_results('w1', 'm', array(select id from embedding_sync_queue where locked_by = 'w1'),
  (select jsonb_agg(jsonb_build_object('j', id, 'i', 0, 'c', content, 'h', 'old', 't', 3,
     'e', (select array_agg(0.1)::real[]::vector::text from generate_series(1, embedding_dimensions()))))
   from embedding_sync_queue where locked_by = 'w1'))), 'superseded', 'the older, slower job is refused');
select is((select content from documentation_embeddings where source_id = '3'), 'question: Q3 newer', 'the newer content stays');

-- TRUNCATE removes the table's embeddings.
truncate faq_items;
select is((select count(*)::int from documentation_embeddings where source_table = 'faq_items'), 0,
  'TRUNCATE removes the embeddings');

-- A table wired only with the runbook's bare trigger gets the TRUNCATE trigger too (event trigger).
create table public.notes (id int primary key, body text);
create trigger sync_notes after insert or update or delete on public.notes
  for each row execute function add_to_embedding_queue();
select ok(exists (select from pg_trigger where tgrelid = 'public.notes'::regclass
                    and tgfoid = 'private.embedding_source_truncated()'::regprocedure),
  'a bare add_to_embedding_queue() trigger gets a TRUNCATE trigger alongside');
insert into notes values (1, 'first'), (2, 'second');
select is((select count(*)::int from embedding_sync_queue where source_table = 'notes' and status = 'pending'), 2,
  'bare trigger: two pending jobs');
truncate notes;
select is((select count(*)::int from embedding_sync_queue where source_table = 'notes' and status = 'pending'), 0,
  'TRUNCATE of a bare-trigger table drops its pending jobs');

-- A content function takes the row as jsonb and returns the text.
create table public.laws (code text primary key, title text, articles jsonb);
create function public.law_text(r jsonb) returns text language sql immutable
  as $$ select (r->>'title') || ': ' || (select string_agg(a, ' / ') from jsonb_array_elements_text(r->'articles') a) $$;
select lives_ok($$ select register_embedding_source('laws', content_function => 'public.law_text(jsonb)'::regprocedure) $$,
  'register with a content function');
insert into laws values ('L1', 'Code civil', '["art. 1", "art. 2"]');
select is((select content from embedding_sync_queue where source_table = 'laws'), 'Code civil: art. 1 / art. 2',
  'the content function''s text is queued');

-- Webhook coalescing and schedules.
create table public.burst_items (id int primary key, body text);
select register_embedding_source('burst_items');
update private.embedding_sync_wake set last_wake_at = '-infinity';
update private.embedding_sync_live_wake set last_wake_at = '-infinity';  -- row triggers' jobs are live (issue 9)
-- A window longer than the burst, so a loaded machine (1,000 inserts over 1 s) cannot split it in two.
update embedding_sync_settings set wake_window_ms = 60000;
delete from net.http_request_queue;
do $$ begin for i in 1..1000 loop insert into burst_items values (i, 'ligne ' || i); end loop; end $$;
select is((select count(*)::int from net.http_request_queue where url like '%/functions/v1/process-embedding-queue'), 1,
  'a burst of 1,000 single-row inserts makes one webhook call');
select is((select headers->>'Authorization' from net.http_request_queue limit 1), 'Bearer local-test-key',
  'the webhook authenticates with the Vault key');
select is((select count(*)::int from cron.job where jobname = 'process-embedding-queue' and schedule = '*/5 * * * *'), 1,
  'cron every 5 minutes');
update embedding_sync_settings set batch_size = 100, max_workers = 4;
delete from net.http_request_queue;
select is(private.fan_out_embedding_workers(), 4, 'fan-out: k = min(max_workers, ceil(pending / batch_size))');
select is((select count(*)::int from net.http_request_queue), 4, 'k calls made');

-- RLS and grants.
select ok((select bool_and(relrowsecurity) from pg_class
           where oid in ('embedding_sync_queue'::regclass, 'documentation_embeddings'::regclass, 'embedding_sources'::regclass,
                         'embedding_sync_versions'::regclass, 'embedding_sync_settings'::regclass)), 'RLS on every table');
select ok((select bool_and(coalesce(reloptions::text like '%security_invoker=true%', false)) from pg_class
           where oid in ('embedding_sync_status'::regclass, 'embedding_sync_stuck'::regclass,
                         'embedding_sync_coverage'::regclass, 'embedding_sync_dead_letter'::regclass)), 'views are security_invoker');
select ok(has_function_privilege('authenticated', 'match_documents(extensions.vector, int, jsonb)', 'execute')
          and not has_function_privilege('anon', 'match_documents(extensions.vector, int, jsonb)', 'execute'),
  'search is granted to authenticated on purpose, not to anon');
set local role authenticated;
select throws_ok($$ select * from embedding_sync_status $$, '42501', null, 'authenticated cannot read the dashboard');
reset role;

select * from finish();
rollback;
