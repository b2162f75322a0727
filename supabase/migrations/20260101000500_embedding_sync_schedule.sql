-- Relational -> vector sync, part 5: what wakes process-embedding-queue. All calls go through
-- private.invoke_edge_function, which reads the project URL and key from Vault.
--
-- 1. A database webhook on INSERT into embedding_sync_queue, coalesced: a statement trigger
--    claims the single wake row only when the last wake is older than wake_window_ms, with a
--    conditional UPDATE that skips the row when another transaction holds it. A burst of 10,000
--    inserts therefore makes about one call per window, not 10,000, and never makes writers wait
--    on each other. The woken function keeps polling until a window after the last wake, so a
--    change that was coalesced into an earlier wake is still picked up. The wake is per lane: a
--    statement that queued live jobs wakes ONE worker for the live lane, on its own wake row; a bulk
--    statement fans out by backlog.
-- 2. pg_cron every 5 minutes: k = min(max_workers, ceil(pending / batch_size)) parallel calls;
--    the safety net for anything a webhook missed (and for retries whose backoff expired).
-- 3. pg_cron daily: cleanup (completed jobs > 7 days) and stuck-lease recovery.

-- Calls the function k times in parallel (k from the ready backlog, see private.fan_out_edge_function),
-- each with the configured batch size, less the workers already running: a worker holding a lease is
-- already draining the backlog (and continues itself when its time runs out), so only the difference
-- is started, and the wake's guaranteed call (min_calls) is only made when nothing runs. Otherwise,
-- under a backlog, an insert a second (a live edit, a collected document) would start up to
-- max_workers new workers a second, each draining until its time budget ends, and the pool would grow
-- without bound. Live-only workers (lane 'live') do not take bulk jobs, so they are not counted
-- against the pool. Returns k.
create function private.fan_out_embedding_workers(min_calls int default 0)
returns int
language plpgsql
security definer
set search_path = public, extensions
as $$
declare
  st embedding_sync_settings;
  ready bigint;
  running int;
begin
  select * into st from embedding_sync_settings;
  -- Expired leases count as ready work: a worker that died (or lost its database) holding jobs leaves
  -- nothing pending, and only a started worker returns them (recover_stuck_embedding_jobs).
  select count(*) into ready from (
    select 1 from embedding_sync_queue q
    where (q.status = 'pending' and q.run_at <= now()) or (q.status = 'processing' and q.lease_until < now())
    limit st.max_workers * st.batch_size
  ) r;
  select count(distinct q.locked_by) into running from embedding_sync_queue q
  where q.status = 'processing' and q.lease_until > now() and (q.lane = 'bulk' or not st.lanes_enabled);
  return private.fan_out_edge_function('process-embedding-queue', ready, st.batch_size,
    greatest(st.max_workers - running, 0),
    jsonb_build_object('action', 'process', 'batchSize', st.batch_size), 10000,
    case when running = 0 then min_calls else 0 end);
end $$;

-- One live worker, coalesced per wake window on the live wake row. Returns whether it called.
create function private.wake_live_embedding_worker() returns boolean
language plpgsql
security definer
set search_path = public, extensions
as $$
declare
  st embedding_sync_settings;
  woke boolean;
begin
  select * into st from embedding_sync_settings;
  if not st.lanes_enabled then
    return private.wake_embedding_fan_out();  -- lanes off: the FIFO baseline's fan-out wake
  end if;
  update private.embedding_sync_live_wake w set last_wake_at = clock_timestamp()
  where w.id = (select x.id from private.embedding_sync_live_wake x
                where x.last_wake_at < clock_timestamp() - make_interval(secs => st.wake_window_ms / 1000.0)
                for update skip locked)
  returning true into woke;
  if woke then
    perform private.invoke_edge_function('process-embedding-queue',
      jsonb_build_object('action', 'process', 'lane', 'live', 'batchSize', st.batch_size), 10000);
  end if;
  return coalesce(woke, false);
end $$;

-- The bulk (and lanes-off) wake: coalesced per wake window, fan out by backlog.
create function private.wake_embedding_fan_out() returns boolean
language plpgsql
security definer
set search_path = public, extensions
as $$
declare
  window_ms int := (select s.wake_window_ms from embedding_sync_settings s);
  woke boolean;
begin
  update private.embedding_sync_wake w set last_wake_at = clock_timestamp()
  where w.id = (select x.id from private.embedding_sync_wake x
                where x.last_wake_at < clock_timestamp() - make_interval(secs => window_ms / 1000.0)
                for update skip locked)
  returning true into woke;
  if woke then
    perform private.fan_out_embedding_workers(1);
  end if;
  return coalesce(woke, false);
end $$;

-- The insert webhook, per lane. A statement's jobs take
-- their lane from embedding_sync.lane (the column's default), which is still in force when the
-- statement's AFTER trigger runs: under 'bulk' it queued bulk jobs and fans out by backlog; otherwise it
-- queued live jobs and wakes one live worker. Statement triggers fire even when every row landed on a
-- pending job (ON CONFLICT DO UPDATE), so a live edit that upgrades a bulk job wakes too. Reading the setting rather than a transition table
-- matters at scale: capturing the inserted rows made a 200,000-row bulk insert about 35% slower
-- (measured). A job inserted with an explicit lane against the setting waits for the next wake or cron.
create function private.wake_embedding_workers() returns trigger
language plpgsql
security definer
set search_path = public, extensions
as $$
begin
  if current_setting('embedding_sync.lane', true) = 'bulk' then
    perform private.wake_embedding_fan_out();
  else
    perform private.wake_live_embedding_worker();
  end if;
  return null;
end $$;


create trigger embedding_sync_queue_webhook
  after insert on public.embedding_sync_queue
  for each statement execute function private.wake_embedding_workers();

-- The last wake, so a running worker knows how long to keep polling (see the header).
create function public.embedding_last_wake() returns timestamptz
language sql stable
security definer
set search_path = ''
as $$ select w.last_wake_at from private.embedding_sync_wake w $$;

-- The last live wake: a live-woken worker keeps polling live jobs a few seconds after it.
create function public.embedding_last_live_wake() returns timestamptz
language sql stable
security definer
set search_path = ''
as $$ select w.last_wake_at from private.embedding_sync_live_wake w $$;

-- Continuation: an invocation that ran out of time while jobs of its lane are still ready asks for
-- one successor with the same body, so a large backlog drains without waiting for the 5-minute cron.
-- Each cron run starts new workers, and each would otherwise continue for as long as the backlog
-- lasts: a successor is only asked for while fewer than max_workers workers hold jobs, so the chains
-- never outgrow the configured parallelism. Returns the pg_net request id, or null when nothing is
-- ready, enough workers run, or Vault is not set up.
create function private.continue_embedding_worker(p_body jsonb) returns bigint
language plpgsql
security definer
set search_path = public, extensions
as $$
declare
  st embedding_sync_settings;
  v_lane text := p_body->>'lane';
begin
  select * into st from embedding_sync_settings;
  if not exists (select from embedding_sync_queue q
                 where q.status = 'pending' and q.run_at <= now()
                   and (v_lane is null or not st.lanes_enabled or q.lane = v_lane)) then
    return null;
  end if;
  if (select count(distinct q.locked_by) from embedding_sync_queue q
      where q.status = 'processing' and q.lease_until > now()) >= st.max_workers then
    return null;
  end if;
  return private.invoke_edge_function('process-embedding-queue', p_body, 10000);
end $$;

create function private.embedding_daily_maintenance() returns void
language sql
security definer
set search_path = ''
as $$
  select private.invoke_edge_function('process-embedding-queue', '{"action": "cleanup"}'::jsonb, 30000);
$$;

revoke all on function private.fan_out_embedding_workers(int), private.wake_embedding_workers(),
  private.wake_live_embedding_worker(), private.wake_embedding_fan_out(), private.continue_embedding_worker(jsonb),
  private.embedding_daily_maintenance() from public;
revoke all on function public.embedding_last_wake(), public.embedding_last_live_wake() from public, anon, authenticated;
grant execute on function public.embedding_last_wake(), public.embedding_last_live_wake() to service_role;

select cron.schedule('process-embedding-queue', '*/5 * * * *',
                     'select private.fan_out_embedding_workers()');
select cron.schedule('embedding-sync-maintenance', '17 3 * * *',
                     'select private.embedding_daily_maintenance()');
