-- Schedules of the files pipeline, through pg_cron + pg_net (private.invoke_edge_function reads the
-- project URL and key from Vault): the collector's maintenance mode every 2 h, the files worker every
-- minute fanned out by backlog (and a webhook that wakes it within a second of an upload), and an
-- hourly coherence check that repairs drift when the alert is on.

-- k = least(p_max_workers, ceil(backlog / p_batch)) parallel calls of the worker (see
-- private.fan_out_edge_function); 0 when idle. The backlog is ready jobs plus expired leases.
create or replace function private.dispatch_files_workers(p_max_workers int default 4, p_batch int default 50)
returns int
language plpgsql
security definer
set search_path = public, extensions
as $$
declare
  v_cap int := p_max_workers * p_batch;
  v_backlog bigint;
begin
  select (select count(*) from (select 1 from public.files_queue
                                 where status = 'pending' and run_at <= now() limit v_cap) p)
       + (select count(*) from (select 1 from public.files_queue
                                 where status = 'processing' and lease_expires_at < now() limit v_cap) e)
    into v_backlog;
  return private.fan_out_edge_function('process-files-queue', v_backlog, p_batch, p_max_workers,
    jsonb_build_object('batchSize', p_batch), 60000);
end $$;
revoke all on function private.dispatch_files_workers(int, int) from public;

create table public.files_queue_coherence_checks (
  id bigint generated always as identity primary key,
  checked_at timestamptz not null default now(),
  bucket_id text not null,
  storage_count bigint not null,
  queue_count bigint not null,
  missing_in_queue bigint not null,
  queued_without_object bigint not null,
  alert boolean not null,
  repaired bigint not null default 0,
  marked_deleted bigint not null default 0
);
alter table public.files_queue_coherence_checks enable row level security;
revoke all on public.files_queue_coherence_checks from anon, authenticated;
grant all on public.files_queue_coherence_checks to service_role;
revoke all on sequence public.files_queue_coherence_checks_id_seq from anon, authenticated;

-- The hourly check: one row per watched bucket in files_queue_coherence_checks. When the alert is
-- on, the missing rows are inserted with the anti-join repair, and rows whose object is gone are
-- marked deleted (the "enqueued, then the upload failed" case of the old micro-service).
create or replace function private.files_queue_check_coherence()
returns setof public.files_queue_coherence_checks
language plpgsql
security definer
set search_path = public, extensions
as $$
declare
  c record;
  v_alert boolean;
  v_repaired bigint;
  v_marked bigint;
begin
  for c in select * from public.files_queue_coherence loop
    v_alert := c.missing_in_queue + c.queued_without_object > 1000
            or (c.missing_in_queue + c.queued_without_object) > 0.10 * greatest(c.storage_count, 1);
    v_repaired := 0;
    v_marked := 0;
    if v_alert then
      v_repaired := public.files_queue_repair_missing(c.bucket_id);
      update public.files_queue fq
         set status = 'deleted', locked_by = null, locked_at = null, lease_expires_at = null, updated_at = now()
       where fq.bucket_id = c.bucket_id and fq.status <> 'deleted'
         and not exists (select 1 from storage.objects o where o.bucket_id = fq.bucket_id and o.name = fq.file_path);
      get diagnostics v_marked = row_count;
    end if;
    return query
      insert into public.files_queue_coherence_checks
        (bucket_id, storage_count, queue_count, missing_in_queue, queued_without_object, alert, repaired, marked_deleted)
      values (c.bucket_id, c.storage_count, c.queue_count, c.missing_in_queue, c.queued_without_object, v_alert, v_repaired, v_marked)
      returning *;
  end loop;
end $$;
revoke all on function private.files_queue_check_coherence() from public;

-- A database webhook for the files worker, like the embedding queue's: files_queue rows inserted by
-- the storage.objects trigger wake process-files-queue within a second instead of at the next
-- minute's cron dispatch, so the files worker keeps up with a running collection (a MASSIVE run
-- uploads ~17 documents a second). Coalesced the same way: a statement trigger claims the single
-- wake row only when the last wake is older than the window, with a conditional UPDATE that skips
-- the row when another transaction holds it, so uploads never wait on each other.
create table private.files_queue_wake (
  id boolean primary key default true check (id),
  last_wake_at timestamptz not null default '-infinity'
);
insert into private.files_queue_wake default values;
alter table private.files_queue_wake enable row level security;

create function private.wake_files_workers() returns trigger
language plpgsql
security definer
set search_path = public, extensions
as $$
declare
  window_ms int := (select s.wake_window_ms from public.embedding_sync_settings s);
  woke boolean;
begin
  update private.files_queue_wake w set last_wake_at = clock_timestamp()
  where w.id = (select x.id from private.files_queue_wake x
                where x.last_wake_at < clock_timestamp() - make_interval(secs => window_ms / 1000.0)
                for update skip locked)
  returning true into woke;
  if woke then
    -- The same fan-out as the minute's cron job (k from the ready backlog, at most 4 workers).
    perform private.dispatch_files_workers(4, 50);
  end if;
  return null;
end $$;
revoke all on function private.wake_files_workers() from public;

create trigger files_queue_webhook
  after insert on public.files_queue
  for each statement execute function private.wake_files_workers();

-- Was the files worker woken less than a window (plus a second) ago? A woken worker that finds the
-- queue empty keeps polling while this holds: uploads that commit inside the window of the wake that
-- covered them make no call of their own (the webhook for embeddings does the same).
create function public.files_queue_recently_woken() returns boolean
language sql stable
security definer
set search_path = ''
as $$
  select clock_timestamp() < w.last_wake_at + make_interval(secs => (s.wake_window_ms + 1000) / 1000.0)
  from private.files_queue_wake w, public.embedding_sync_settings s
$$;
revoke all on function public.files_queue_recently_woken() from public, anon, authenticated;
grant execute on function public.files_queue_recently_woken() to service_role;

select cron.schedule('legifrance-collector-maintenance', '0 */2 * * *',
  $$select private.invoke_edge_function('legifrance-collector', '{"mode":"maintenance"}'::jsonb, 5000)$$);
select cron.schedule('process-files-queue', '* * * * *', $$select private.dispatch_files_workers(4, 50)$$);
select cron.schedule('files-queue-coherence', '7 * * * *', $$select private.files_queue_check_coherence()$$);
