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
  updated_at timestamptz not null default now()
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
    (select coalesce(jsonb_object_agg(status, n), '{}'::jsonb)
       from (select status, count(*) as n from public.embedding_sync_queue where status <> 'completed' group by status) s),
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
  kind text not null check (kind in ('files_drift', 'dead_letters', 'stuck_jobs', 'queue_age', 'cron_failed', 'empty_knowledge_base')),
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

  return query
    select 'files_drift'::text, c.bucket_id,
           format('files_queue drifts from Storage in %s: %s missing in queue, %s queued without object',
                  c.bucket_id, c.missing_in_queue, c.queued_without_object)
      from public.files_queue_coherence c
     where c.missing_in_queue + c.queued_without_object > 1000
        or (c.missing_in_queue + c.queued_without_object) > 0.10 * greatest(c.storage_count, 1);

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
      from public.embedding_coverage() c
     where c.rows = 0;
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

-- Dead letter retry (the runbook's statement, for chosen ids): back to pending unless the row already
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
