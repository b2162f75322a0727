-- What the API roles may reach in public, by name.
--
-- Hosted Supabase's default privileges grant ALL on every new table, view, sequence and function in
-- public to anon and authenticated. `revoke … from public` does not undo an explicit grant to a role,
-- so without this file anon could EXECUTE the queue functions (claim_files_queue,
-- files_queue_repair_missing, legifrance_start_run, …) and SELECT the operator views. The tables'
-- own grants and RLS blocked the damage so far; the next SECURITY DEFINER function would not.
-- Granted on purpose (supabase/tests/010_api_roles.test.sql holds the exact allow-list):
--   match_documents, hybrid_search  to authenticated (search; the caller's rights apply)
--   embedding_dimensions()          to anon, authenticated (a constant the clients need)
-- Every later migration revokes its own new objects the same way.

revoke all on function
  public.add_to_embedding_queue(),
  public.claim_files_queue(text, int, int),
  public.complete_files_queue(text, bigint[]),
  public.fail_files_queue(text, bigint, text, boolean),
  public.files_queue_drift_alert(text),
  public.files_queue_repair_missing(text),
  public.files_queue_repopulate_batch(text, text, int, boolean),
  public.legal_document_embedding_content(jsonb),
  public.legifrance_advance_plan(uuid, text, int, int, int, int, int),
  public.legifrance_finish_run(uuid, text, text),
  public.legifrance_record_failure(uuid, text, text, text, text),
  public.legifrance_resolve_failures(text, text[]),
  public.legifrance_run_error(uuid, text),
  public.legifrance_start_run(text, uuid, int),
  public.recover_stuck_files_queue()
from public, anon, authenticated;

revoke all on sequence
  public.documentation_embeddings_id_seq,
  public.embedding_sync_queue_id_seq,
  public.files_queue_coherence_checks_id_seq,
  public.files_queue_id_seq
from anon, authenticated;

revoke all on
  public.files_queue_coherence,
  public.files_queue_insertion_rate,
  public.files_queue_status,
  public.legifrance_collector_status
from anon, authenticated;

-- Search: authenticated only, never anon (match_documents / hybrid_search are created with the table's
-- dimension in a dynamic statement, so they are revoked here by name whatever that dimension is).
do $$
declare
  f regprocedure;
begin
  for f in select p.oid::regprocedure from pg_proc p
           where p.pronamespace = 'public'::regnamespace and p.proname in ('match_documents', 'hybrid_search') loop
    execute format('revoke all on function %s from public, anon', f);
  end loop;
end $$;
