-- legal_documents' legal status as of a date: the in_force rule for every Légifrance etat, the
-- trigger that applies it on write, the daily job that flips rows whose dates crossed, the resync
-- of files, and who may call what.
begin;
select plan(36);

-- The rule, status by status (start inclusive, end exclusive, null end = 2999-01-01 = no end).
select is(legal_document_in_force('VIGUEUR', '2000-01-01', null, '2026-01-01'), true, 'VIGUEUR without end: in force');
select is(legal_document_in_force('VIGUEUR', '2000-01-01', '2025-01-01', '2026-01-01'), false, 'VIGUEUR whose end has passed: no longer in force');
select is(legal_document_in_force('VIGUEUR', '2030-01-01', null, '2026-01-01'), false, 'VIGUEUR not started yet: not in force');
select is(legal_document_in_force('VIGUEUR_ETEN', '2000-01-01', null, '2026-01-01'), true, 'VIGUEUR_ETEN (extended agreement): in force');
select is(legal_document_in_force('ABROGE_DIFF', '2000-01-01', '2030-01-01', '2026-01-01'), true, 'ABROGE_DIFF before its dateFin: in force');
select is(legal_document_in_force('ABROGE_DIFF', '2000-01-01', '2026-01-01', '2026-01-01'), false, 'ABROGE_DIFF on its dateFin: not in force (end exclusive)');
select is(legal_document_in_force('ABROGE_DIFF', '2000-01-01', '2024-01-01', '2026-01-01'), false, 'ABROGE_DIFF after its dateFin: not in force');
select is(legal_document_in_force('VIGUEUR_DIFF', '2030-01-01', null, '2026-01-01'), false, 'VIGUEUR_DIFF before its dateDebut: not in force');
select is(legal_document_in_force('VIGUEUR_DIFF', '2026-01-01', null, '2026-01-01'), true, 'VIGUEUR_DIFF on its dateDebut: in force (start inclusive)');
select is(legal_document_in_force('ABROGE', '2000-01-01', null, '2026-01-01'), false, 'ABROGE: not in force');
select is(legal_document_in_force('MODIFIE', '2000-01-01', '2030-01-01', '2026-01-01'), false, 'MODIFIE: not in force');
select is(legal_document_in_force('PERIME', null, null, '2026-01-01'), false, 'PERIME: not in force');
select is(legal_document_in_force('ANNULE', null, null, '2026-01-01'), false, 'ANNULE: not in force');
select is(legal_document_in_force('TRANSFERE', null, null, '2026-01-01'), false, 'TRANSFERE: not in force');
select is(legal_document_in_force(null, '2007-06-14', null, '2026-01-01'), null::boolean, 'no etat (a decision): null');
select is(legal_document_in_force('Cassation', '2007-06-14', null, '2026-01-01'), null::boolean, 'an unknown etat: null, never a guess');

-- The trigger: every writer gets in_force as of today.
insert into legal_documents (id, category, doc_type, legal_status, start_date, end_date, content, file_path) values
  ('LEGIARTI000000000101', 'codes', 'article', 'ABROGE_DIFF', current_date - 100, current_date + 1, 'a', 'legifrance/codes/LEGIARTI000000000101.json'),
  ('LEGIARTI000000000102', 'codes', 'article', 'ABROGE_DIFF', current_date - 100, current_date - 1, 'b', 'legifrance/codes/LEGIARTI000000000102.json'),
  ('LEGIARTI000000000103', 'codes', 'article', 'VIGUEUR_DIFF', current_date + 1, null, 'c', 'legifrance/codes/LEGIARTI000000000103.json'),
  ('LEGIARTI000000000104', 'codes', 'article', 'VIGUEUR', current_date - 100, null, 'd', 'legifrance/codes/LEGIARTI000000000104.json'),
  ('LEGIARTI000000000105', 'codes', 'article', 'MODIFIE', current_date - 100, current_date - 50, 'e', 'legifrance/codes/LEGIARTI000000000105.json'),
  ('JURITEXT000000000106', 'jurisprudence', 'decision', null, current_date - 100, null, 'f', 'legifrance/jurisprudence/JURITEXT000000000106.json');
select results_eq(
  $$select id, in_force from legal_documents where id like '%00000000010_' order by id$$,
  $$values ('JURITEXT000000000106', null::boolean), ('LEGIARTI000000000101', true), ('LEGIARTI000000000102', false),
           ('LEGIARTI000000000103', false), ('LEGIARTI000000000104', true), ('LEGIARTI000000000105', false)$$,
  'in_force is computed on insert, as of today');
update legal_documents set end_date = current_date + 10 where id = 'LEGIARTI000000000102';
select is((select in_force from legal_documents where id = 'LEGIARTI000000000102'), true, 'a changed date recomputes in_force');
update legal_documents set end_date = current_date - 1 where id = 'LEGIARTI000000000102';
update legal_documents set in_force = null where id = 'LEGIARTI000000000104';
select is((select in_force from legal_documents where id = 'LEGIARTI000000000104'), null::boolean, 'in_force alone can be written (the daily job does)');
update legal_documents set in_force = true where id = 'LEGIARTI000000000104';

-- The daily job: as of tomorrow, the ABROGE_DIFF ending tomorrow leaves force and the VIGUEUR_DIFF
-- starting tomorrow enters it; nothing else is written.
update legal_documents set updated_at = '2000-01-01' where id like '%00000000010_';
select is(refresh_legal_documents_in_force(current_date + 1), 2::bigint, 'the job changes exactly the two rows whose dates crossed');
select results_eq(
  $$select id, in_force, updated_at > '2000-01-01' from legal_documents where id like '%00000000010_' order by id$$,
  $$values ('JURITEXT000000000106', null::boolean, false), ('LEGIARTI000000000101', false, true), ('LEGIARTI000000000102', false, false),
           ('LEGIARTI000000000103', true, true), ('LEGIARTI000000000104', true, false), ('LEGIARTI000000000105', false, false)$$,
  'ABROGE_DIFF ended, VIGUEUR_DIFF started; the other rows were not touched');
select is(refresh_legal_documents_in_force(current_date + 1), 0::bigint, 'a second run the same day changes nothing');
select is(refresh_legal_documents_in_force(current_date + 1000), 0::bigint, 'rows without a date to cross are never flipped');
select is((select count(*)::int from cron.job where jobname = 'legal-documents-in-force' and schedule = '5 0 * * *'
             and command like '%refresh_legal_documents_in_force()%'), 1, 'the daily job is scheduled');

-- The job's two scans have partial indexes, so it never reads the settled versions.
select ok((select count(*) from pg_indexes where tablename = 'legal_documents'
            and indexname in ('legal_documents_in_force_end_idx', 'legal_documents_awaiting_start_idx')) = 2,
          'the rows a new day can flip are indexed');

-- Resync: processed and failed files go back to pending, others stay.
insert into storage.objects (bucket_id, name, metadata) values
  ('agentbasic-legifrance-raw', 'legifrance/codes/LEGIARTI000000000101.json', '{"size": 1}'),
  ('agentbasic-legifrance-raw', 'legifrance/codes/LEGIARTI000000000102.json', '{"size": 1}'),
  ('agentbasic-legifrance-raw', 'legifrance/codes/LEGIARTI000000000103.json', '{"size": 1}');
update files_queue set status = 'completed', processed = true, attempts = 1 where file_path like '%101.json';
update files_queue set status = 'failed', attempts = 3, last_error = 'unknown getArticle shape' where file_path like '%102.json';
select is(resync_legal_documents('agentbasic-legifrance-raw'), 2::bigint, 'resync re-queues the completed and the failed file');
select results_eq(
  $$select status, processed, attempts, last_error from files_queue where file_path like 'legifrance/codes/LEGIARTI00000000010_.json' order by file_path$$,
  $$values ('pending', false, 0, null::text), ('pending', false, 0, null::text), ('pending', false, 0, null::text)$$,
  'every re-queued file is pending with a fresh attempt count');
select is(resync_legal_documents('no-such-bucket'), 0::bigint, 'another bucket re-queues nothing');

-- Columns, and nothing granted to anon/authenticated.
select has_column('public', 'legal_documents', 'in_force', 'legal_documents.in_force exists');
select col_type_is('public', 'legal_documents', 'in_force', 'boolean', 'in_force is boolean');
select col_type_is('public', 'legal_documents', 'modifications', 'jsonb', 'modifications is jsonb');
select throws_ok($$insert into legal_documents (id, category, doc_type, content, file_path, modifications)
                   values ('LEGIARTI000000000199', 'c', 'article', 'x', 'x', '{"a": 1}')$$, '23514', null,
                 'modifications must be an array');
select ok(not has_function_privilege('anon', 'public.refresh_legal_documents_in_force(date)', 'execute')
          and not has_function_privilege('authenticated', 'public.refresh_legal_documents_in_force(date)', 'execute'),
          'anon and authenticated cannot run the daily job');
select ok(not has_function_privilege('anon', 'public.resync_legal_documents(text)', 'execute')
          and not has_function_privilege('authenticated', 'public.resync_legal_documents(text)', 'execute')
          and has_function_privilege('service_role', 'public.resync_legal_documents(text)', 'execute'),
          'only service_role may resync');
select ok(not has_function_privilege('anon', 'public.legal_document_in_force(text, date, date, date)', 'execute')
          and not has_function_privilege('authenticated', 'public.legal_document_in_force(text, date, date, date)', 'execute'),
          'the rule is not exposed to anon/authenticated');
select is((select metadata_columns @> array['title', 'parent_title_long', 'number', 'section_path', 'url', 'in_force',
                                           'start_date', 'end_date', 'modifications']
             from embedding_sources where source_table = 'legal_documents'), true,
          'legal_documents carries its citation columns into chunk metadata');

select * from finish();
rollback;
