-- Relational -> vector sync, part 5: what wakes process-embedding-queue. All calls go through
-- private.invoke_edge_function, which reads the project URL and key from Vault.
--
-- 1. A database webhook on INSERT into embedding_sync_queue, coalesced: a statement trigger
--    claims the single wake row only when the last wake is older than wake_window_ms, with a
--    conditional UPDATE that skips the row when another transaction holds it. A burst of 10,000
--    inserts therefore makes about one call per window, not 10,000, and never makes writers wait
--    on each other. The woken function keeps polling until a window after the last wake, so a
--    change that was coalesced into an earlier wake is still picked up.
-- 2. pg_cron every 5 minutes: k = min(max_workers, ceil(pending / batch_size)) parallel calls;
--    the safety net for anything a webhook missed (and for retries whose backoff expired).
-- 3. pg_cron daily: cleanup (completed jobs > 7 days) and stuck-lease recovery.

-- Calls the function k times in parallel (k from the ready backlog, see private.fan_out_edge_function),
-- each with the configured batch size. Returns k.
create function private.fan_out_embedding_workers(min_calls int default 0)
returns int
language plpgsql
security definer
set search_path = public, extensions
as $$
declare
  st embedding_sync_settings;
  ready bigint;
begin
  select * into st from embedding_sync_settings;
  select count(*) into ready from (
    select 1 from embedding_sync_queue q where q.status = 'pending' and q.run_at <= now()
    limit st.max_workers * st.batch_size
  ) r;
  return private.fan_out_edge_function('process-embedding-queue', ready, st.batch_size, st.max_workers,
    jsonb_build_object('action', 'process', 'batchSize', st.batch_size), 10000, min_calls);
end $$;

create function private.wake_embedding_workers() returns trigger
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

create function private.embedding_daily_maintenance() returns void
language sql
security definer
set search_path = ''
as $$
  select private.invoke_edge_function('process-embedding-queue', '{"action": "cleanup"}'::jsonb, 30000);
$$;

revoke all on function private.fan_out_embedding_workers(int), private.wake_embedding_workers(),
  private.embedding_daily_maintenance() from public;
revoke all on function public.embedding_last_wake() from public, anon, authenticated;
grant execute on function public.embedding_last_wake() to service_role;

select cron.schedule('process-embedding-queue', '*/5 * * * *',
                     'select private.fan_out_embedding_workers()');
select cron.schedule('embedding-sync-maintenance', '17 3 * * *',
                     'select private.embedding_daily_maintenance()');
