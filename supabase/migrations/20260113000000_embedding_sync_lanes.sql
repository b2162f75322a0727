-- Relational -> vector sync: priority lanes (issue 9, deliverable 1).
--
-- Every job is in one of two lanes:
--   live  a change made by a row trigger in an ordinary transaction (an editor's FAQ edit);
--   bulk  work made in bulk: resync_embedding_sources, resync_legal_documents and the files worker's
--         writes for a bulk files_queue job, kb push and restore.
-- The lane comes from the transaction-local setting embedding_sync.lane ('bulk', or anything else for
-- live), read when the job is queued. Bulk code sets it with set_config(..., true) (or `set local`):
-- a function-level SET clause on a custom setting needs a superuser, which hosted projects do not have.
--
-- Claims take live jobs first, but while bulk jobs are ready a mixed claim reserves
-- floor(p_limit * bulk_share) of the batch (at least 1) for them, so bulk work never starves; a lane
-- that cannot fill its share leaves it to the other. lanes_enabled = false restores plain FIFO.
--
-- Wakes: a statement that queues live jobs wakes ONE worker for the live lane (coalesced per wake
-- window, on its own row so a long bulk transaction holding the bulk wake row never delays it); bulk
-- statements keep the fan-out. A live change landing on a pending bulk job (an upgrade) wakes too.

alter table public.embedding_sync_settings
  add column lanes_enabled boolean not null default true,
  add column bulk_share double precision not null default 0.2 check (bulk_share >= 0 and bulk_share <= 1);

-- Added with a constant default (no table rewrite), then defaulted to the session's lane, so every way
-- a job is inserted (the trigger, resync's set-based inserts, an operator's INSERT) follows the setting.
alter table public.embedding_sync_queue
  add column lane text not null default 'live' check (lane in ('live', 'bulk'));
alter table public.embedding_sync_queue
  alter column lane set default (case when current_setting('embedding_sync.lane', true) = 'bulk'
                                      then 'bulk' else 'live' end);

-- Each lane's claim order; the (run_at, id) index keeps serving FIFO and the backlog counts.
create index embedding_sync_queue_ready_lane on public.embedding_sync_queue (lane, run_at, id) where status = 'pending';

-- The live lane's own wake row (see the header).
create table private.embedding_sync_live_wake (
  id boolean primary key default true check (id),
  last_wake_at timestamptz not null default '-infinity'
);
insert into private.embedding_sync_live_wake default values;
alter table private.embedding_sync_live_wake enable row level security;
revoke all on private.embedding_sync_live_wake from public;

-- Bulk SQL paths call begin_bulk (sets embedding_sync.lane = 'bulk' for the transaction, returns the
-- caller's value) and restore it before returning. An error rolls the setting back with the statement.
create function private.embedding_lane_begin_bulk() returns text
language plpgsql
set search_path = ''
as $$
declare
  prev text := coalesce(pg_catalog.current_setting('embedding_sync.lane', true), '');
begin
  perform pg_catalog.set_config('embedding_sync.lane', 'bulk', true);
  return prev;
end $$;

create function private.embedding_lane_restore(prev text) returns void
language sql
set search_path = ''
as $$ select pg_catalog.set_config('embedding_sync.lane', coalesce(prev, ''), true) $$;

revoke all on function private.embedding_lane_begin_bulk(), private.embedding_lane_restore(text) from public;

-- Newest wins, as before (20260106000000); the lane: a live change upgrades a pending bulk job, a bulk
-- change never downgrades a pending live one.
create or replace function private.enqueue_embedding_job(
  p_source_table text, p_source_id text, p_action text, p_content text, p_metadata jsonb
) returns void
language sql
security definer
set search_path = public, extensions
as $$
  insert into embedding_sync_queue as q (source_table, source_id, action, content, content_hash, metadata)
  values (p_source_table, p_source_id, p_action, p_content,
          case when p_content is null then null else encode(sha256(convert_to(p_content, 'UTF8')), 'hex') end,
          case when p_content is null then null else coalesce(p_metadata, '{}'::jsonb) end)
  on conflict (source_table, source_id) where status = 'pending' do update set
    action = excluded.action,
    content = excluded.content,
    content_hash = excluded.content_hash,
    metadata = excluded.metadata,
    version = excluded.version,
    lane = case when excluded.lane = 'live' then 'live' else q.lane end,
    retry_count = 0,
    last_error = null,
    run_at = now(),
    updated_at = now()
$$;

-- claim_embedding_jobs: as before (FOR UPDATE SKIP LOCKED, leases), plus lanes.
--   p_lane null   live first; while bulk jobs are ready, floor(p_limit * bulk_share) of the batch (at
--                 least 1, never the whole batch when live jobs wait) goes to bulk; whatever one lane
--                 leaves unused goes to the other.
--   p_lane 'live' / 'bulk'  that lane only.
--   lanes_enabled = false   plain FIFO (run_at, id), whatever p_lane says.
-- Each lane's scan reads embedding_sync_queue_ready_lane in order (one OR across lanes would sort the
-- whole backlog). Returns the same columns as before, plus lane.
drop function public.claim_embedding_jobs(text, int, int);
create function public.claim_embedding_jobs(p_worker text, p_limit int, p_lease_seconds int default null,
                                            p_lane text default null)
returns table (
  id bigint, source_table text, source_id text, action text, content text, content_hash text,
  version bigint, retry_count int, chunk_tokens int, chunk_overlap_tokens int, lease_until timestamptz,
  lane text
)
language plpgsql
security definer
set search_path = public, extensions
as $$
#variable_conflict use_column
declare
  st embedding_sync_settings;
  lease interval;
  n int := greatest(coalesce(p_limit, 0), 0);
  reserve int;
  ids bigint[] := '{}';
  bulk_ids bigint[] := '{}';
begin
  if p_lane is not null and p_lane not in ('live', 'bulk') then
    raise exception 'p_lane must be live, bulk or null, not %', p_lane using errcode = '22023';
  end if;
  select * into st from embedding_sync_settings;
  lease := make_interval(secs => coalesce(p_lease_seconds, st.lease_seconds));

  if not st.lanes_enabled then
    select coalesce(array_agg(r.id), '{}') into ids from (
      select q.id from embedding_sync_queue q
      where q.status = 'pending' and q.run_at <= now()
      order by q.run_at, q.id limit n for update skip locked) r;
  elsif p_lane is not null then
    select coalesce(array_agg(r.id), '{}') into ids from (
      select q.id from embedding_sync_queue q
      where q.status = 'pending' and q.lane = p_lane and q.run_at <= now()
      order by q.run_at, q.id limit n for update skip locked) r;
  else
    reserve := case when st.bulk_share > 0 and n > 1 then least(n - 1, greatest(1, floor(n * st.bulk_share)::int))
                    else 0 end;
    select coalesce(array_agg(r.id), '{}') into bulk_ids from (
      select q.id from embedding_sync_queue q
      where q.status = 'pending' and q.lane = 'bulk' and q.run_at <= now()
      order by q.run_at, q.id limit reserve for update skip locked) r;
    select coalesce(array_agg(r.id), '{}') into ids from (
      select q.id from embedding_sync_queue q
      where q.status = 'pending' and q.lane = 'live' and q.run_at <= now()
      order by q.run_at, q.id limit n - cardinality(bulk_ids) for update skip locked) r;
    if cardinality(ids) + cardinality(bulk_ids) < n then
      -- Live left part of its share unused: more bulk.
      select bulk_ids || coalesce(array_agg(r.id), '{}') into bulk_ids from (
        select q.id from embedding_sync_queue q
        where q.status = 'pending' and q.lane = 'bulk' and q.run_at <= now() and not q.id = any (bulk_ids)
        order by q.run_at, q.id limit n - cardinality(ids) - cardinality(bulk_ids) for update skip locked) r;
    end if;
    ids := ids || bulk_ids;
  end if;

  return query
  with claimed as (
    update embedding_sync_queue q
    set status = 'processing', locked_by = p_worker, locked_at = clock_timestamp(),
        lease_until = clock_timestamp() + lease, updated_at = clock_timestamp()
    where q.id = any (ids)
    returning q.*
  )
  select c.id, c.source_table, c.source_id, c.action, c.content, c.content_hash, c.version, c.retry_count,
         coalesce(s.chunk_tokens, 512), coalesce(s.chunk_overlap_tokens, 64), c.lease_until, c.lane
  from claimed c left join embedding_sources s on s.source_table = c.source_table
  order by c.id;
end $$;

revoke all on function public.claim_embedding_jobs(text, int, int, text) from public, anon, authenticated;
grant execute on function public.claim_embedding_jobs(text, int, int, text) to service_role;

-- Bulk paths ------------------------------------------------------------------------------------------

-- resync_embedding_sources (20260106000000), every mode, queues bulk jobs. The body is unchanged; it
-- moves to private and this wrapper sets the lane around it.
alter function public.resync_embedding_sources(text, boolean) rename to resync_embedding_sources_body;
alter function public.resync_embedding_sources_body(text, boolean) set schema private;
revoke all on function private.resync_embedding_sources_body(text, boolean) from public, anon, authenticated, service_role;

create function public.resync_embedding_sources(p_source_table text default null, p_force boolean default false)
returns table (source_table text, enqueued bigint, deletes bigint)
language plpgsql
security definer
set search_path = public, extensions
as $$
declare
  prev text := private.embedding_lane_begin_bulk();
begin
  return query select * from private.resync_embedding_sources_body(p_source_table, p_force);
  perform private.embedding_lane_restore(prev);
end $$;
revoke all on function public.resync_embedding_sources(text, boolean) from public, anon, authenticated;
grant execute on function public.resync_embedding_sources(text, boolean) to service_role;

-- Wakes -----------------------------------------------------------------------------------------------

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
    return private.wake_embedding_fan_out();  -- lanes off: the FIFO baseline wakes as before
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

-- The bulk (and lanes-off) wake of 20260102000400: coalesced per wake window, fan out by backlog.
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

-- The insert webhook (20260102000400, its trigger unchanged), now per lane. A statement's jobs take
-- their lane from embedding_sync.lane (the column's default), which is still in force when the
-- statement's AFTER trigger runs: under 'bulk' it queued bulk jobs and fans out as before; otherwise it
-- queued live jobs and wakes one live worker. Statement triggers fire even when every row landed on a
-- pending job (ON CONFLICT DO UPDATE), so a live edit that upgrades a bulk job wakes too. Reading the setting rather than a transition table
-- matters at scale: capturing the inserted rows made a 200,000-row bulk insert about 35% slower
-- (measured). A job inserted with an explicit lane against the setting waits for the next wake or cron.
create or replace function private.wake_embedding_workers() returns trigger
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

revoke all on function private.wake_live_embedding_worker(), private.wake_embedding_workers(), private.wake_embedding_fan_out(),
  private.continue_embedding_worker(jsonb) from public;
revoke all on function public.embedding_last_live_wake() from public, anon, authenticated;
grant execute on function public.embedding_last_live_wake() to service_role;

-- Views (columns appended; the runbook's columns are unchanged) ----------------------------------------

create or replace view public.embedding_sync_status with (security_invoker = true) as
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

create or replace view public.embedding_sync_stuck with (security_invoker = true) as
select q.id, q.source_table, q.source_id, q.action, q.locked_by, q.locked_at, q.lease_until,
       now() - q.lease_until as overdue, q.retry_count, q.last_error, q.lane
from public.embedding_sync_queue q
where q.status = 'processing' and q.lease_until < now();

create or replace view public.embedding_sync_dead_letter with (security_invoker = true) as
select q.id, q.source_table, q.source_id, q.action, q.retry_count, q.last_error, q.created_at, q.processed_at,
       q.lane
from public.embedding_sync_queue q
where q.status = 'failed';
