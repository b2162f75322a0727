-- Failed files, visible: a file the worker gave up on (corrupt, empty, mislabelled, wrong path, or
-- out of attempts) stays in files_queue as 'failed' with its error, the files' dead letter. Health,
-- doctor, the alerts and the dashboard count them per watched bucket, show their reasons, and the
-- service role can send chosen ones back to the queue.

alter table public.ops_settings
  add column failed_files_warn int not null default 1 check (failed_files_warn > 0),
  add column failed_files_fail int not null default 100 check (failed_files_fail > 0);

-- Counting and listing failed files reads only this index, never the (large) completed rows.
create index files_queue_failed_idx on public.files_queue (bucket_id, updated_at desc, id desc) where status = 'failed';

alter table public.ops_alerts drop constraint ops_alerts_kind_check;
alter table public.ops_alerts add constraint ops_alerts_kind_check
  check (kind in ('files_drift', 'dead_letters', 'stuck_jobs', 'queue_age', 'cron_failed', 'empty_knowledge_base', 'failed_files'));

-- Failed files per watched bucket (0 for a bucket without any).
create or replace function public.ops_failed_files_count()
returns table (bucket_id text, failed bigint)
language sql stable
security invoker
set search_path = public
as $$
  select w.bucket_id, (select count(*) from public.files_queue q where q.bucket_id = w.bucket_id and q.status = 'failed')
    from public.files_queue_watched_buckets w
   order by w.bucket_id
$$;

-- The most recently failed files, newest first, with the worker's reason.
create or replace function public.ops_failed_files(p_limit int default 100)
returns table (id bigint, bucket_id text, file_path text, attempts int, last_error text, failed_at timestamptz)
language sql stable
security invoker
set search_path = public
as $$
  select q.id, q.bucket_id, q.file_path, q.attempts, left(q.last_error, 300), q.updated_at
    from public.files_queue q
   where q.status = 'failed'
   order by q.updated_at desc, q.id desc
   limit least(greatest(p_limit, 1), 500)
$$;

-- Retry: chosen failed files back to pending with fresh attempts, picked up by the next dispatch
-- (process-files-queue, every minute). Only 'failed' rows move: a file re-uploaded or deleted since
-- is already pending or deleted and stays as it is. Returns how many moved.
create or replace function public.retry_failed_files(p_ids bigint[]) returns int
language plpgsql
security definer
set search_path = public
as $$
declare n int;
begin
  update public.files_queue q
     set status = 'pending', attempts = 0, last_error = null, run_at = now(), updated_at = now(),
         locked_by = null, locked_at = null, lease_expires_at = null
   where q.id = any(p_ids) and q.status = 'failed';
  get diagnostics n = row_count;
  return n;
end $$;

revoke all on function public.ops_failed_files_count(), public.ops_failed_files(int), public.retry_failed_files(bigint[])
  from public, anon, authenticated;
grant execute on function public.ops_failed_files_count(), public.ops_failed_files(int), public.retry_failed_files(bigint[])
  to service_role;
