-- Operations: which environment this is, the thresholds health and alerts share, per-minute metrics
-- and hourly alerts (with a webhook through pg_net). Read by the `health` function, `npm run doctor`
-- and the dashboard (packages/ops/).

-- One row: the environment label and the thresholds. SQL is the source of truth for them, so the
-- hourly alert check and the health checks warn and fail on the same numbers.
create table public.ops_settings (
  id boolean primary key default true check (id),
  environment_label text check (environment_label ~ '^[A-Za-z0-9][A-Za-z0-9 ._-]{0,62}$'),
  queue_age_warn_seconds int not null default 900 check (queue_age_warn_seconds > 0),
  queue_age_fail_seconds int not null default 3600 check (queue_age_fail_seconds > 0),
  dead_letters_warn int not null default 1 check (dead_letters_warn > 0),
  dead_letters_fail int not null default 100 check (dead_letters_fail > 0),
  stuck_warn int not null default 1 check (stuck_warn > 0),
  stuck_fail int not null default 50 check (stuck_fail > 0),
  pg_net_window_minutes int not null default 15 check (pg_net_window_minutes > 0),
  pg_net_failure_warn double precision not null default 0.10 check (pg_net_failure_warn between 0 and 1),
  pg_net_failure_fail double precision not null default 0.50 check (pg_net_failure_fail between 0 and 1),
  updated_at timestamptz not null default now(),
  failed_files_warn int not null default 1 check (failed_files_warn > 0),
  failed_files_fail int not null default 100 check (failed_files_fail > 0),
  -- When the operations schema (and with it every schedule) was installed. Health judges "not yet due"
  -- against it: no coherence check in the first two hours is not a warning, and a job that never ran
  -- fails only once it was due twice since. An upgrade starts the clock again, which errs on the calm
  -- side for at most two intervals. Tests and operators may set it.
  installed_at timestamptz not null default now()
);
insert into public.ops_settings default values;
alter table public.ops_settings enable row level security;
revoke all on table public.ops_settings from anon, authenticated;
grant select, update on table public.ops_settings to service_role;

-- environment_label(): 'development', 'staging', 'production' or a free name; null when unset.
-- Shown by health, the dashboard and `npm run kb`. Not a secret, but granted to service_role only.
create or replace function public.environment_label() returns text
language sql stable
security definer
set search_path = ''
as $$ select s.environment_label from public.ops_settings s $$;

-- set_environment_label(label): service role (and postgres) only. Null or '' clears it.
create or replace function public.set_environment_label(label text) returns text
language plpgsql
security definer
set search_path = ''
as $$
begin
  update public.ops_settings set environment_label = nullif(btrim(label), ''), updated_at = now();
  return public.environment_label();
end $$;

revoke all on function public.environment_label() from public, anon, authenticated;
revoke all on function public.set_environment_label(text) from public, anon, authenticated;
grant execute on function public.environment_label(), public.set_environment_label(text) to service_role;

-- Metrics: one sample a minute, kept 7 days ----------------------------------------------------------

create table public.ops_metrics (
  sampled_at timestamptz primary key default date_trunc('minute', now()),
  -- {"pending": n, "processing": n, "failed": n, ...} over embedding_sync_queue
  queue_by_status jsonb not null,
  -- {"<lane>": {"pending": n, ...}} when the queue has a lane column, else {}
  queue_by_lane jsonb not null default '{}'::jsonb,
  -- {"<bucket>": {"storage": n, "queue": n}}
  files_coherence jsonb not null,
  files_inserted int not null,      -- files_queue rows created in the previous minute
  jobs_completed int not null       -- embedding jobs completed in the previous minute
);
alter table public.ops_metrics enable row level security;
revoke all on table public.ops_metrics from anon, authenticated;
grant select on table public.ops_metrics to service_role;

-- The embedding backlog by status, without counting completed jobs (kept 7 days, the bulk of the
-- table): each count goes through its status's partial index. Statuses with no job are left out.
create or replace function public.ops_queue_backlog() returns jsonb
language sql stable
security invoker
set search_path = public
as $$
  select coalesce(jsonb_object_agg(k, v) filter (where v > 0), '{}'::jsonb)
    from (values ('pending', (select count(*) from public.embedding_sync_queue where status = 'pending')),
                 ('processing', (select count(*) from public.embedding_sync_queue where status = 'processing')),
                 ('failed', (select count(*) from public.embedding_sync_queue where status = 'failed'))) as x(k, v)
$$;

-- Rows per registered source and how many have chunks: a count of the table and an index scan of
-- documentation_embeddings, cheap enough for health at any size. (embedding_coverage() evaluates each
-- row's content for the publish filter: exact, but too slow to run on every health call.)
-- "Empty knowledge base" means an application pointed at a database whose knowledge base is empty, or
-- a source that was emptied. A source that never held a row (the
-- client-documents pages of a project that does not use them yet, a table registered before its first
-- import) is not that, and warning about it forever would teach operators to ignore the warning.
-- So a source warns when it has 0 rows and either it held rows before (it has sync versions) or every
-- registered source is empty. health, doctor, the dashboard and the hourly alert read the same column.
create or replace function public.ops_knowledge_base()
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
create or replace function public.ops_source_counts(p_source_table text, p_relid oid)
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


-- Storage <-> files_queue per watched bucket, cheaply: live counts (index scans) next to the latest
-- hourly coherence check (its anti-join counts and drift alert). The live anti-joins of
-- files_queue_coherence take seconds on a million objects, too slow for health.
create or replace function public.ops_files_overview()
returns table (bucket_id text, storage_count bigint, queue_count bigint, last_check_at timestamptz,
               missing_in_queue bigint, queued_without_object bigint, drift_alert boolean, repaired bigint, marked_deleted bigint)
language sql stable
security invoker
set search_path = public
as $$
  select w.bucket_id,
         (select count(*) from storage.objects o where o.bucket_id = w.bucket_id),
         (select count(*) from public.files_queue q where q.bucket_id = w.bucket_id and q.status <> 'deleted'),
         c.checked_at, c.missing_in_queue, c.queued_without_object, coalesce(c.alert, false), c.repaired, c.marked_deleted
    from public.files_queue_watched_buckets w
    left join lateral (select * from public.files_queue_coherence_checks k where k.bucket_id = w.bucket_id
                        order by k.checked_at desc, k.id desc limit 1) c on true
   order by w.bucket_id
$$;

revoke all on function public.ops_queue_backlog(), public.ops_knowledge_base(), public.ops_source_counts(text, oid),
  public.ops_files_overview() from public, anon, authenticated;
grant execute on function public.ops_queue_backlog(), public.ops_knowledge_base(), public.ops_source_counts(text, oid),
  public.ops_files_overview() to service_role;

-- Failed files, visible: a file the worker gave up on (corrupt, empty, mislabelled, wrong path, or
-- out of attempts) stays in files_queue as 'failed' with its error, the files' dead letter. Health,
-- doctor, the alerts and the dashboard count them per watched bucket, show their reasons, and the
-- service role can send chosen ones back to the queue.
-- Counting and listing failed files reads only this index, never the (large) completed rows.
create index files_queue_failed_idx on public.files_queue (bucket_id, updated_at desc, id desc) where status = 'failed';

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

-- Samples the minute that just ended. Cheap: counts over indexed statuses and one minute of rows;
-- the Storage side is a plain count per watched bucket (the anti-joins stay in the hourly check).
create or replace function private.ops_sample_metrics() returns public.ops_metrics
language plpgsql
security definer
set search_path = public, extensions
as $$
declare
  v_to timestamptz := date_trunc('minute', now());
  v_from timestamptz := v_to - interval '1 minute';
  v_lanes jsonb := '{}'::jsonb;
  v_row public.ops_metrics;
begin
  if exists (select from pg_attribute where attrelid = 'public.embedding_sync_queue'::regclass
                and attname = 'lane' and not attisdropped) then
    execute $q$
      select coalesce(jsonb_object_agg(lane, counts), '{}'::jsonb)
        from (select lane::text as lane, jsonb_object_agg(status, n) as counts
                from (select lane, status, count(*) as n from public.embedding_sync_queue
                       where status <> 'completed' group by lane, status) s
               group by lane) l $q$ into v_lanes;
  end if;
  insert into public.ops_metrics (sampled_at, queue_by_status, queue_by_lane, files_coherence, files_inserted, jobs_completed)
  values (
    v_to,
    public.ops_queue_backlog(),
    v_lanes,
    (select coalesce(jsonb_object_agg(w.bucket_id, jsonb_build_object(
              'storage', (select count(*) from storage.objects o where o.bucket_id = w.bucket_id),
              'queue', (select count(*) from public.files_queue q where q.bucket_id = w.bucket_id and q.status <> 'deleted'))), '{}'::jsonb)
       from public.files_queue_watched_buckets w),
    (select count(*) from public.files_queue q where q.created_at >= v_from and q.created_at < v_to),
    (select count(*) from public.embedding_sync_queue q
      where q.status = 'completed' and q.processed_at >= v_from and q.processed_at < v_to)
  )
  on conflict (sampled_at) do update
    set queue_by_status = excluded.queue_by_status, queue_by_lane = excluded.queue_by_lane,
        files_coherence = excluded.files_coherence, files_inserted = excluded.files_inserted,
        jobs_completed = excluded.jobs_completed
  returning * into v_row;
  return v_row;
end $$;

create or replace function private.ops_cleanup_metrics() returns int
language plpgsql
security definer
set search_path = public
as $$
declare n int;
begin
  delete from public.ops_metrics where sampled_at < now() - interval '7 days';
  get diagnostics n = row_count;
  return n;
end $$;

revoke all on function private.ops_sample_metrics(), private.ops_cleanup_metrics() from public;

-- Alerts ------------------------------------------------------------------------------------------

create table public.ops_alerts (
  id bigint generated always as identity primary key,
  kind text not null check (kind in ('files_drift', 'dead_letters', 'stuck_jobs', 'queue_age', 'cron_failed', 'empty_knowledge_base',
                                     'failed_files')),
  subject text not null,            -- the bucket, job or table concerned ('' when global)
  message text not null,
  opened_at timestamptz not null default now(),
  last_seen_at timestamptz not null default now(),
  resolved_at timestamptz,
  notify_request_id bigint,         -- the pg_net request that posted it to the webhook, if any
  notified_at timestamptz
);
-- One open alert per condition: the check re-finding it only refreshes last_seen_at.
create unique index ops_alerts_one_open on public.ops_alerts (kind, subject) where resolved_at is null;
alter table public.ops_alerts enable row level security;
revoke all on table public.ops_alerts from anon, authenticated;
revoke all on sequence public.ops_alerts_id_seq from anon, authenticated;
grant select on table public.ops_alerts to service_role;

-- The conditions that hold right now, one row each. Shared by the hourly check and by health.
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

-- The hourly check: opens an alert per new condition (posting it once to the Vault entry
-- `alert_webhook_url` when there is one, Slack-compatible {"text": ...}), refreshes the ones still
-- true, and resolves the ones whose condition cleared. Returns the alerts opened by this run.
create or replace function private.ops_check_alerts()
returns setof public.ops_alerts
language plpgsql
security definer
set search_path = public, extensions
as $$
declare
  v_url text;
  v_label text := coalesce(public.environment_label(), 'unlabelled environment');
  v_now jsonb;
  a public.ops_alerts;
begin
  select coalesce(jsonb_agg(to_jsonb(c)), '[]'::jsonb) into v_now from public.ops_current_alerts() c;

  update public.ops_alerts o set resolved_at = now()
   where o.resolved_at is null
     and not exists (select from jsonb_to_recordset(v_now) n(kind text, subject text) where n.kind = o.kind and n.subject = o.subject);
  update public.ops_alerts o set last_seen_at = now(), message = n.message
    from jsonb_to_recordset(v_now) n(kind text, subject text, message text)
   where o.resolved_at is null and n.kind = o.kind and n.subject = o.subject;

  select decrypted_secret into v_url from vault.decrypted_secrets where name = 'alert_webhook_url' limit 1;
  for a in
    insert into public.ops_alerts (kind, subject, message)
    select n.kind, n.subject, n.message from jsonb_to_recordset(v_now) n(kind text, subject text, message text)
    on conflict (kind, subject) where resolved_at is null do nothing
    returning *
  loop
    if v_url is not null then
      update public.ops_alerts
         set notify_request_id = net.http_post(
               url := v_url,
               body := jsonb_build_object('text', format('[%s] %s', v_label, a.message)),
               headers := '{"Content-Type": "application/json"}'::jsonb,
               timeout_milliseconds := 5000),
             notified_at = now()
       where id = a.id
      returning * into a;
    end if;
    return next a;
  end loop;
end $$;
revoke all on function private.ops_check_alerts() from public;

-- Dead letter retry (for chosen ids): back to pending unless the row already
-- has a newer pending job, which wins. Service role only (the dashboard's "retry" goes through health).
create or replace function public.retry_embedding_dead_letter(p_ids bigint[]) returns int
language plpgsql
security definer
set search_path = public
as $$
declare n int;
begin
  update public.embedding_sync_queue q
     set status = 'pending', retry_count = 0, run_at = now(), last_error = null, updated_at = now(),
         locked_by = null, locked_at = null, lease_until = null
   where q.id = any(p_ids) and q.status = 'failed'
     and not exists (select 1 from public.embedding_sync_queue p
                      where p.status = 'pending' and p.source_table = q.source_table and p.source_id = q.source_id);
  get diagnostics n = row_count;
  return n;
end $$;
revoke all on function public.retry_embedding_dead_letter(bigint[]) from public, anon, authenticated;
grant execute on function public.retry_embedding_dead_letter(bigint[]) to service_role;

select cron.schedule('ops-metrics-sample', '* * * * *', $$select private.ops_sample_metrics()$$);
select cron.schedule('ops-metrics-cleanup', '41 4 * * *', $$select private.ops_cleanup_metrics()$$);
-- After files-queue-coherence (minute 7), so a drift it repaired is not reported.
select cron.schedule('ops-alerts', '12 * * * *', $$select count(*) from private.ops_check_alerts()$$);
