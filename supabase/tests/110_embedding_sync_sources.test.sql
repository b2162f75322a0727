-- Embedding sync, issue 13: metadata columns, unregister, drop/rename, the CREATE TRIGGER guard,
-- the question tsquery, and who may call the new functions.
begin;
select plan(17);

-- Local-only Vault entries so the queue's wake-up has somewhere to go (nothing sends in this test).
select vault.create_secret('http://127.0.0.1:9', 'project_url');
select vault.create_secret('local-test-key', 'service_role_key');

create table public.kb_notes (id int primary key, title text, body text, url text, hits int default 0);
select lives_ok($$ select register_embedding_source('kb_notes', content_columns => array['body'],
                     metadata_columns => array['title', 'url']) $$, 'register with metadata_columns');
insert into kb_notes (id, title, body, url) values (1, 'Titre', 'Corps', 'https://example.test/1');
select is((select metadata from embedding_sync_queue where source_table = 'kb_notes' and source_id = '1'),
  '{"title": "Titre", "url": "https://example.test/1"}'::jsonb, 'the job carries the metadata columns');
delete from embedding_sync_queue where source_table = 'kb_notes';
update kb_notes set title = 'Nouveau titre' where id = 1;
select is((select content || '|' || (metadata->>'title') from embedding_sync_queue where source_table = 'kb_notes' and status = 'pending'),
  'body: Corps|Nouveau titre', 'a metadata-only change enqueues the same text with the new metadata');
delete from embedding_sync_queue where source_table = 'kb_notes';
update kb_notes set hits = hits + 1;
select is((select count(*)::int from embedding_sync_queue where source_table = 'kb_notes'), 0,
  'a column neither embedded nor in the metadata enqueues nothing');
select throws_ok($$ select register_embedding_source('kb_notes', metadata_columns => array['nope']) $$, '42703', null,
  'an unknown metadata column is refused');
select ok(exists (select from pg_indexes where indexname = 'documentation_embeddings_metadata'
                    and indexdef like '%gin (metadata jsonb_path_ops)%'), 'metadata containment is indexed (GIN jsonb_path_ops)');

-- The CREATE TRIGGER guard.
create table public.kb_pairs (a int, b int, body text, primary key (a, b));
select throws_ok($$ create trigger s after insert on kb_pairs for each row execute function add_to_embedding_queue() $$,
  '42P16', 'embedding sync needs a single-column primary key on public.kb_pairs', 'a composite key is refused at CREATE TRIGGER time');

-- Rename, drop, unregister.
alter table kb_notes rename to kb_notes_v2;
select is((select count(*)::int from embedding_sources where source_table = 'kb_notes_v2'), 1, 'a rename follows');
create table public.kb_gone (id int primary key, body text);
select register_embedding_source('kb_gone');
insert into kb_gone values (1, 'x');
drop table kb_gone;
select is((select count(*)::int from embedding_sources where source_table = 'kb_gone')
        + (select count(*)::int from embedding_sync_queue where source_table = 'kb_gone'), 0, 'a drop forgets the source and its jobs');
select is(unregister_embedding_source('kb_notes_v2'), 0::bigint, 'unregister returns the chunks removed');
select is((select count(*)::int from pg_trigger where tgrelid = 'kb_notes_v2'::regclass and not tgisinternal), 0,
  'unregister drops the sync triggers');

-- Question tsquery.
select is(embedding_question_tsquery('combien de jours de congé par mois ?')::text, '''cong'' | ''jour'' | ''mois''',
  'question words and stop words dropped, any word matches');

-- Who may call what.
select ok(not has_function_privilege('anon', 'public.unregister_embedding_source(text)', 'execute')
      and not has_function_privilege('authenticated', 'public.unregister_embedding_source(text)', 'execute'),
  'unregister_embedding_source: service role only');
select ok(not has_function_privilege('authenticated', 'public.resync_embedding_sources(text, boolean)', 'execute')
      and not has_function_privilege('anon', 'public.resync_embedding_sources(text, boolean)', 'execute'),
  'resync_embedding_sources: service role only');
select ok(not has_function_privilege('authenticated', 'public.register_embedding_source(regclass, text[], regprocedure, text, int, int, text[])', 'execute'),
  'register_embedding_source: service role only');
select ok(has_function_privilege('authenticated', 'public.embedding_question_tsquery(text)', 'execute')
      and not has_function_privilege('anon', 'public.embedding_question_tsquery(text)', 'execute'),
  'embedding_question_tsquery: like the searches (authenticated, not anon)');
select ok(not has_function_privilege('authenticated', 'public.legifrance_record_maintenance_page(uuid, text, int, int)', 'execute'),
  'legifrance_record_maintenance_page: service role only');

select * from finish();
rollback;
