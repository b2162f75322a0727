-- "Empty knowledge base" means what the operators' incident meant: an application pointed at a database
-- whose knowledge base is empty, or a source that was emptied. A source that never held a row (the
-- client-documents pages of a project that does not use them yet, a table registered before its first
-- import) is not that, and warning about it forever would teach operators to ignore the warning.
-- So a source warns when it has 0 rows and either it held rows before (it has sync versions) or every
-- registered source is empty. health, doctor, the dashboard and the hourly alert read the same column.
drop function public.ops_knowledge_base();
create function public.ops_knowledge_base()
returns table (source_table text, rows bigint, rows_with_embeddings bigint, empty_warning boolean)
language plpgsql stable
security invoker
set search_path = public, extensions
as $$
begin
  return query
  with counts as (
    select c.* from public.embedding_sources s,
      lateral public.ops_source_counts(s.source_table, s.relid) c
  )
  select c.source_table, c.rows, c.rows_with_embeddings,
         c.rows = 0 and (c.held_rows or not exists (select from counts o where o.rows > 0))
    from counts c
   order by c.source_table;
end $$;

-- One source's counts: a count of the table, an index scan of documentation_embeddings, and whether
-- any of its rows was ever synced (embedding_sync_versions keeps a row per synced source row).
create function public.ops_source_counts(p_source_table text, p_relid oid)
returns table (source_table text, rows bigint, rows_with_embeddings bigint, held_rows boolean)
language plpgsql stable
security invoker
set search_path = public, extensions
as $$
begin
  return query execute format(
    'select %L::text, (select count(*) from %s), (select count(distinct e.source_id) from public.documentation_embeddings e where e.source_table = %L),
            exists (select from public.embedding_sync_versions v where v.source_table = %L)',
    p_source_table, p_relid::regclass, p_source_table, p_source_table);
end $$;

revoke all on function public.ops_knowledge_base(), public.ops_source_counts(text, oid) from public, anon, authenticated;
grant execute on function public.ops_knowledge_base(), public.ops_source_counts(text, oid) to service_role;

create or replace function public.ops_current_alerts()
returns table (kind text, subject text, message text)
language plpgsql
stable
security definer
set search_path = public, extensions
as $$
declare
  s public.ops_settings;
  n bigint;
  age interval;
begin
  select * into s from public.ops_settings;

  -- Drift as the latest hourly coherence check found it (that check also repairs it).
  return query
    select 'files_drift'::text, f.bucket_id,
           format('files_queue drifted from Storage in %s: %s missing in queue, %s queued without object (checked %s)',
                  f.bucket_id, f.missing_in_queue, f.queued_without_object, to_char(f.last_check_at, 'YYYY-MM-DD HH24:MI TZ'))
      from public.ops_files_overview() f
     where f.drift_alert;

  -- Files the worker gave up on, per bucket (ops_settings.failed_files_warn; reasons on the dashboard).
  return query
    select 'failed_files'::text, f.bucket_id,
           format('%s failed file(s) in %s (select file_path, last_error from files_queue where status = ''failed'')', f.failed, f.bucket_id)
      from public.ops_failed_files_count() f
     where f.failed >= s.failed_files_warn;

  select count(*) into n from public.embedding_sync_queue where status = 'failed';
  if n >= s.dead_letters_warn then
    return query select 'dead_letters'::text, ''::text, format('%s embedding job(s) in the dead letter', n);
  end if;

  select count(*) into n from public.embedding_sync_queue where status = 'processing' and lease_until < now();
  if n >= s.stuck_warn then
    return query select 'stuck_jobs'::text, ''::text, format('%s embedding job(s) held past their lease', n);
  end if;

  select now() - min(created_at) into age from public.embedding_sync_queue where status = 'pending';
  if age > make_interval(secs => s.queue_age_warn_seconds) then
    return query select 'queue_age'::text, ''::text,
      format('oldest pending embedding job is %s min old', floor(extract(epoch from age) / 60));
  end if;

  return query
    select 'cron_failed'::text, j.jobname::text, format('cron job %s: last run failed (%s)', j.jobname, left(d.return_message, 200))
      from cron.job j
      join lateral (select r.status, r.return_message from cron.job_run_details r
                     where r.jobid = j.jobid order by r.start_time desc nulls last, r.runid desc limit 1) d on true
     where d.status = 'failed';

  return query
    select 'empty_knowledge_base'::text, c.source_table, format('empty knowledge base: %s has 0 rows', c.source_table)
      from public.ops_knowledge_base() c
     where c.empty_warning;
end $$;
revoke all on function public.ops_current_alerts() from public, anon, authenticated;
grant execute on function public.ops_current_alerts() to service_role;
