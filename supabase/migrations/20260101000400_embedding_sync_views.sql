-- Relational -> vector sync, part 4: what operators read.
-- Views are security_invoker: they show only what the caller may see in the underlying tables
-- (the service role everything; anon/authenticated nothing, RLS has no policy for them).

-- The queue at a glance, per source table: SELECT * FROM embedding_sync_status;
create view public.embedding_sync_status with (security_invoker = true) as
select q.source_table,
       count(*) filter (where q.status = 'pending') as pending,
       count(*) filter (where q.status = 'processing') as processing,
       count(*) filter (where q.status = 'completed') as completed,
       count(*) filter (where q.status = 'failed') as failed,
       now() - min(q.created_at) filter (where q.status = 'pending') as oldest_pending_age,
       max(q.processed_at) as last_processed_at,
       count(*) filter (where q.status = 'pending' and q.lane = 'live') as pending_live,
       count(*) filter (where q.status = 'pending' and q.lane = 'bulk') as pending_bulk,
       now() - min(q.created_at) filter (where q.status = 'pending' and q.lane = 'live') as oldest_pending_live_age
from public.embedding_sync_queue q
group by q.source_table;

-- Jobs a worker holds past its lease: recover_stuck_embedding_jobs() will return them.
create view public.embedding_sync_stuck with (security_invoker = true) as
select q.id, q.source_table, q.source_id, q.action, q.locked_by, q.locked_at, q.lease_until,
       now() - q.lease_until as overdue, q.retry_count, q.last_error, q.lane
from public.embedding_sync_queue q
where q.status = 'processing' and q.lease_until < now();

-- The dead letter, for operators: failed jobs with their error.
create view public.embedding_sync_dead_letter with (security_invoker = true) as
select q.id, q.source_table, q.source_id, q.action, q.retry_count, q.last_error, q.created_at, q.processed_at,
       q.lane
from public.embedding_sync_queue q
where q.status = 'failed';

-- Coverage needs one count per registered table, so a function reads them (as the caller) and
-- the view exposes it. Rows counted are the ones the publish filter keeps. A source whose table is
-- gone is reported (table_exists = false, its chunks as orphans) instead of breaking the view for
-- every table.
create function public.embedding_coverage()
returns table (source_table text, rows bigint, rows_with_embeddings bigint, rows_missing bigint,
               orphan_embeddings bigint, table_exists boolean)
language plpgsql
stable
security invoker
set search_path = public, extensions
as $$
#variable_conflict use_column
declare
  src embedding_sources;
begin
  for src in select * from embedding_sources s order by s.source_table loop
    if not exists (select from pg_class c where c.oid = src.relid) then
      return query
        select src.source_table, null::bigint, null::bigint, null::bigint,
               (select count(distinct e.source_id) from documentation_embeddings e where e.source_table = src.source_table),
               false;
      continue;
    end if;
    return query execute format($q$
      with x as (select %2$s from %3$s r), src_rows as (select x.* from x as x(id, content) where x.content is not null),
           emb as (select distinct e.source_id from documentation_embeddings e where e.source_table = %1$L)
      select %1$L::text,
             (select count(*) from src_rows),
             (select count(*) from src_rows s join emb on emb.source_id = s.id),
             (select count(*) from src_rows s where not exists (select from emb where emb.source_id = s.id)),
             (select count(*) from emb where not exists (select from src_rows s where s.id = emb.source_id)),
             true
      $q$, src.source_table, src.row_sql, src.relid::regclass);
  end loop;
end $$;

create view public.embedding_sync_coverage with (security_invoker = true) as
select * from public.embedding_coverage();

revoke all on public.embedding_sync_status, public.embedding_sync_stuck, public.embedding_sync_dead_letter,
  public.embedding_sync_coverage from anon, authenticated;
grant select on public.embedding_sync_status, public.embedding_sync_stuck, public.embedding_sync_dead_letter,
  public.embedding_sync_coverage to service_role;
revoke all on function public.embedding_coverage() from public, anon, authenticated;
grant execute on function public.embedding_coverage() to service_role;
