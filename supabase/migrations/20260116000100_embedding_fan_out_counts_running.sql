-- The fan-out (cron, and the bulk / lanes-off webhook) counts the workers already running. Before,
-- every wake started k = min(max_workers, ready / batch) new invocations whatever was running: under a
-- backlog, an insert a second (a live edit, a collected document) started up to max_workers new
-- workers a second, each draining until its time budget ends, so the pool grew without bound. A
-- worker holding a lease is already draining the backlog (and continues itself when its time runs
-- out), so only the difference is started, and the wake's guaranteed call is only made when nothing
-- runs. Live-only workers (lane 'live') do not take bulk jobs, so they are not counted against the pool.
create or replace function private.fan_out_embedding_workers(min_calls int default 0)
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
revoke all on function private.fan_out_embedding_workers(int) from public;
