-- files_queue: one row per object of a watched Storage bucket, kept in step with storage.objects by a
-- trigger that runs in the object row's own transaction. An upload that commits has its queue row; one
-- that rolls back has none. The columns operators query by hand keep their names and meaning:
--   file_path (UNIQUE on its own), bucket_id, file_size, status, processed, created_at.
-- file_path is the object's name inside its bucket; two watched buckets holding
-- the same name therefore share one queue row (the first one wins), which is why the default watches
-- a single bucket.

create table public.files_queue (
  id bigint generated always as identity primary key,
  file_path text not null unique,
  bucket_id text not null,
  file_size bigint,
  status text not null default 'pending'
    check (status in ('pending', 'processing', 'completed', 'failed', 'deleted')),
  processed boolean not null default false,
  created_at timestamptz not null default now(),
  attempts int not null default 0,
  max_attempts int not null default 3,
  last_error text,
  run_at timestamptz not null default now(),
  locked_by text,
  locked_at timestamptz,
  lease_expires_at timestamptz,
  processed_at timestamptz,
  updated_at timestamptz not null default now(),
  -- See "Lanes" below.
  lane text not null default 'live' check (lane in ('live', 'bulk'))
);

comment on table public.files_queue is
  'One row per object of a watched bucket (see files_queue_watched_buckets); filled by a trigger on storage.objects.';

-- The worker's claim: due pending rows in order, and expired leases.
create index files_queue_claim_idx on public.files_queue (run_at, id) where status = 'pending';
create index files_queue_lease_idx on public.files_queue (lease_expires_at) where status = 'processing';
create index files_queue_created_idx on public.files_queue (created_at);
create index files_queue_claim_lane_idx on public.files_queue (lane, run_at, id) where status = 'pending';

-- Each watched bucket names its handler: process-files-queue dispatches each claimed row to its
-- bucket's handler (packages/files-queue/handlers/).
create table public.files_queue_watched_buckets (
  bucket_id text primary key check (bucket_id ~ '^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$'),
  created_at timestamptz not null default now(),
  handler text not null default 'legifrance' check (handler in ('legifrance', 'client-documents'))
);
comment on table public.files_queue_watched_buckets is
  'Buckets whose objects get a files_queue row. Add a row to watch another bucket, then run the repair.';
comment on column public.files_queue_watched_buckets.handler is
  'What process-files-queue does with this bucket''s files: legifrance (collected JSON -> legal_documents) '
  'or client-documents (PDF/Markdown/text -> client_documents + pages).';
insert into public.files_queue_watched_buckets (bucket_id) values ('agentbasic-legifrance-raw');

alter table public.files_queue enable row level security;
alter table public.files_queue_watched_buckets enable row level security;
revoke all on public.files_queue, public.files_queue_watched_buckets from anon, authenticated;
grant all on public.files_queue, public.files_queue_watched_buckets to service_role;
revoke all on sequence public.files_queue_id_seq from anon, authenticated;

-- Lanes: the priority lanes of embedding_sync_queue, here where the collector's MAINTENANCE mode (live)
-- and its MASSIVE mode (bulk) share the queue.
--
-- An object's lane is its Storage user metadata `lane` ('bulk', anything else live): supabase-js
-- `upload(path, body, { metadata: { lane: 'bulk' } })`. The storage trigger copies it into the row; a
-- live upload upgrades a queued bulk row, a bulk upload never downgrades a queued live one. The files
-- worker writes a bulk file's rows with embedding_sync.lane = 'bulk', so their embedding jobs are bulk
-- as well. claim_files_queue takes live rows first with the same bulk share (embedding_sync_settings).

-- The lane an object asks for. Storage keeps upload metadata in storage.objects.user_metadata; an older
-- self-hosted Storage without that column gets a function that says live. (Reading the column directly,
-- not through to_jsonb(o): that serialised every row and made repopulating 1.3 million objects twice as slow.)
do $$
begin
  if exists (select from pg_catalog.pg_attribute
             where attrelid = 'storage.objects'::regclass and attname = 'user_metadata' and not attisdropped) then
    -- No SET clause, so the planner inlines it into the 100,000-row repopulate batches (it names no
    -- relation or function, only the row's column and built-in operators).
    create function private.files_queue_object_lane(o storage.objects) returns text
    language sql immutable
    as $f$ select case when o.user_metadata ->> 'lane' = 'bulk' then 'bulk' else 'live' end $f$;
  else
    create function private.files_queue_object_lane(o storage.objects) returns text
    language sql immutable
    as $f$ select 'live'::text $f$;
  end if;
end $$;
revoke all on function private.files_queue_object_lane(storage.objects) from public;

-- Enqueue from Storage ---------------------------------------------------------------------------
-- Security definer: Storage writes as its own role (service_role, authenticated, supabase_storage_admin)
-- which has no right on files_queue. A re-upload (upsert) of an object resets its row to pending, so
-- new content is processed again; a worker still holding the old lease can then no longer complete it.
create or replace function private.files_queue_on_object_change()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if tg_op = 'DELETE' then
    update public.files_queue
       set status = 'deleted', locked_by = null, locked_at = null, lease_expires_at = null, updated_at = now()
     where file_path = old.name and bucket_id = old.bucket_id;
    return old;
  end if;

  if not exists (select 1 from public.files_queue_watched_buckets w where w.bucket_id = new.bucket_id) then
    return new;
  end if;

  if tg_op = 'UPDATE' and old.bucket_id is not distinct from new.bucket_id and old.name is not distinct from new.name
     and old.metadata is not distinct from new.metadata and old.version is not distinct from new.version then
    return new; -- e.g. last_accessed_at only: nothing new to process
  end if;

  if tg_op = 'UPDATE' and (old.bucket_id, old.name) is distinct from (new.bucket_id, new.name) then
    update public.files_queue set status = 'deleted', locked_by = null, locked_at = null, lease_expires_at = null, updated_at = now()
     where file_path = old.name and bucket_id = old.bucket_id;
  end if;

  insert into public.files_queue as q (file_path, bucket_id, file_size, status, processed, created_at, lane)
  values (new.name, new.bucket_id, (new.metadata ->> 'size')::bigint, 'pending', false, coalesce(new.created_at, now()),
          private.files_queue_object_lane(new))
  on conflict (file_path) do update
     set file_size = excluded.file_size,
         status = 'pending',
         processed = false,
         attempts = 0,
         last_error = null,
         run_at = now(),
         locked_by = null,
         locked_at = null,
         lease_expires_at = null,
         processed_at = null,
         lane = case when q.status in ('pending', 'processing') and q.lane = 'live' then 'live' else excluded.lane end,
         updated_at = now()
   where q.bucket_id = excluded.bucket_id;
  return new;
end $$;

revoke all on function private.files_queue_on_object_change() from public;

create trigger files_queue_enqueue
  after insert or update or delete on storage.objects
  for each row execute function private.files_queue_on_object_change();

-- Worker queue rules -----------------------------------------------------------------------------

-- claim: up to p_batch due rows (processing with an expired lease first, then pending and due), locked
-- with SKIP LOCKED so concurrent workers never claim the same row, leased for p_lease_seconds. Pending
-- rows go live first, with bulk's share of the batch (see claim_embedding_jobs), or FIFO when lanes are
-- off. Each scan reads its own partial index in order: with one OR condition PostgreSQL sorted the
-- whole pending backlog on every claim (about 1 s behind 1.3 million rows, measured).
create or replace function public.claim_files_queue(p_worker text, p_batch int default 20, p_lease_seconds int default 120)
returns setof public.files_queue
language plpgsql
set search_path = public, extensions
as $$
declare
  v_ids bigint[];
  v_bulk bigint[] := '{}';
  v_left int;
  v_reserve int;
  v_enabled boolean;
  v_share double precision;
begin
  select s.lanes_enabled, s.bulk_share into v_enabled, v_share from public.embedding_sync_settings s;
  select coalesce(array_agg(id), '{}') into v_ids from (
    select id from public.files_queue
     where status = 'processing' and lease_expires_at < now()
     order by lease_expires_at
     limit greatest(p_batch, 0)
     for update skip locked
  ) e;
  v_left := greatest(p_batch, 0) - cardinality(v_ids);
  if v_left > 0 and not coalesce(v_enabled, true) then
    select v_ids || coalesce(array_agg(id), '{}') into v_ids from (
      select id from public.files_queue
       where status = 'pending' and run_at <= now()
       order by run_at, id
       limit v_left
       for update skip locked
    ) p;
  elsif v_left > 0 then
    v_reserve := case when v_share > 0 and v_left > 1 then least(v_left - 1, greatest(1, floor(v_left * v_share)::int)) else 0 end;
    select coalesce(array_agg(id), '{}') into v_bulk from (
      select id from public.files_queue
       where status = 'pending' and lane = 'bulk' and run_at <= now()
       order by run_at, id limit v_reserve for update skip locked
    ) b;
    select v_ids || coalesce(array_agg(id), '{}') into v_ids from (
      select id from public.files_queue
       where status = 'pending' and lane = 'live' and run_at <= now()
       order by run_at, id limit v_left - cardinality(v_bulk) for update skip locked
    ) l;
    v_left := greatest(p_batch, 0) - cardinality(v_ids) - cardinality(v_bulk);
    if v_left > 0 then
      select v_bulk || coalesce(array_agg(id), '{}') into v_bulk from (
        select id from public.files_queue
         where status = 'pending' and lane = 'bulk' and run_at <= now() and not id = any (v_bulk)
         order by run_at, id limit v_left for update skip locked
      ) b;
    end if;
    v_ids := v_ids || v_bulk;
  end if;
  return query
    update public.files_queue q
       set status = 'processing',
           attempts = q.attempts + 1,
           locked_by = p_worker,
           locked_at = now(),
           lease_expires_at = now() + make_interval(secs => p_lease_seconds),
           updated_at = now()
     where q.id = any(v_ids)
    returning q.*;
end $$;

-- complete: only the lease holder's rows, still processing, are completed. Returns the completed ids;
-- a row re-uploaded meanwhile (reset to pending) is left for the next claim.
create or replace function public.complete_files_queue(p_worker text, p_ids bigint[])
returns setof bigint
language sql
set search_path = public, extensions
as $$
  update public.files_queue
     set status = 'completed', processed = true, processed_at = now(), last_error = null,
         locked_by = null, locked_at = null, lease_expires_at = null, updated_at = now()
   where id = any(p_ids) and status = 'processing' and locked_by = p_worker
  returning id;
$$;

-- fail: back to pending after an exponential backoff with jitter (base 10 s, capped at 1 h); once
-- attempts reach max_attempts, or when p_permanent (a malformed file will not parse better later),
-- the row stays 'failed' with its error: the dead letter. Returns the new status, or null when the
-- caller no longer holds the lease.
create or replace function public.fail_files_queue(p_worker text, p_id bigint, p_error text, p_permanent boolean default false)
returns text
language sql
set search_path = public, extensions
as $$
  update public.files_queue
     set status = case when p_permanent or attempts >= max_attempts then 'failed' else 'pending' end,
         last_error = left(p_error, 2000),
         run_at = now() + make_interval(secs => least(3600, 10 * power(2, greatest(attempts - 1, 0))) * (0.5 + random())),
         locked_by = null, locked_at = null, lease_expires_at = null, updated_at = now()
   where id = p_id and status = 'processing' and locked_by = p_worker
  returning status;
$$;

-- recover: rows whose lease expired go back to pending (claim also takes them; this makes them visible
-- as pending in the views and counts).
create or replace function public.recover_stuck_files_queue()
returns bigint
language sql
set search_path = public, extensions
as $$
  with r as (
    update public.files_queue
       set status = 'pending', locked_by = null, locked_at = null, lease_expires_at = null, updated_at = now()
     where status = 'processing' and lease_expires_at < now()
    returning 1
  )
  select count(*) from r;
$$;

-- Repopulate / repair ----------------------------------------------------------------------------

-- One keyset batch over storage.objects in (bucket_id, name) order, starting after p_after (null =
-- from the start). Never OFFSET: the batches partition the bucket, so concurrent objects cannot make
-- one skip or repeat rows. Inserts with ON CONFLICT DO NOTHING (rows already queued keep their state)
-- and returns the inserted count, the scanned count, the cursor (last name scanned) and done. Each row
-- takes its object's lane.
-- p_dry_run counts what is missing in the batch without inserting.
create or replace function public.files_queue_repopulate_batch(
  p_bucket text, p_after text default null, p_batch int default 10000, p_dry_run boolean default false
) returns table (inserted bigint, scanned bigint, cursor text, done boolean)
language plpgsql
set search_path = public, extensions
as $$
declare
  v_upper text;
  v_scanned bigint;
  v_inserted bigint;
begin
  if p_batch is null or p_batch < 1 or p_batch > 100000 then
    raise exception 'batch size must be between 1 and 100000' using errcode = '22023';
  end if;
  -- `name > coalesce(p_after, '')` rather than `p_after is null or name > p_after`: plpgsql reuses a
  -- generic plan after a few calls, and only the former stays an index bound in it.
  -- The batch's upper bound comes from the (bucket_id, name) index alone; the batch is then the key
  -- range (p_after, v_upper], which the planner may read in physical order (bitmap heap scan).
  select count(*), max(k.name) into v_scanned, v_upper
    from (select o.name from storage.objects o
           where o.bucket_id = p_bucket and o.name > coalesce(p_after, '')
           order by o.name limit p_batch) k;
  if v_scanned = 0 then
    return query select 0::bigint, 0::bigint, p_after, true;
    return;
  end if;

  if p_dry_run then
    select count(*) into v_inserted
      from storage.objects o
     where o.bucket_id = p_bucket and o.name > coalesce(p_after, '') and o.name <= v_upper
       and not exists (select 1 from public.files_queue q where q.file_path = o.name);
  else
    insert into public.files_queue (file_path, bucket_id, file_size, status, processed, created_at, lane)
    select o.name, o.bucket_id, (o.metadata ->> 'size')::bigint, 'pending', false, coalesce(o.created_at, now()),
           private.files_queue_object_lane(o)
      from storage.objects o
     where o.bucket_id = p_bucket and o.name > coalesce(p_after, '') and o.name <= v_upper
    on conflict (file_path) do nothing;
    get diagnostics v_inserted = row_count;
  end if;
  return query select v_inserted, v_scanned, v_upper, v_scanned < p_batch;
end $$;

-- Drift repair: inserts only the objects that have no queue row, with one anti-join over the bucket.
-- A hash anti-join reads each side once, so it costs about one scan whatever the drift.
create or replace function public.files_queue_repair_missing(p_bucket text)
returns bigint
language plpgsql
set search_path = public, extensions
as $$
declare v_inserted bigint;
begin
  insert into public.files_queue (file_path, bucket_id, file_size, status, processed, created_at, lane)
  select o.name, o.bucket_id, (o.metadata ->> 'size')::bigint, 'pending', false, coalesce(o.created_at, now()),
         private.files_queue_object_lane(o)
    from storage.objects o
   where o.bucket_id = p_bucket
     and not exists (select 1 from public.files_queue q where q.file_path = o.name)
  on conflict (file_path) do nothing;
  get diagnostics v_inserted = row_count;
  return v_inserted;
end $$;

-- Views ------------------------------------------------------------------------------------------

-- Coherence per watched bucket: Storage vs queue, and both directions of drift. Rows marked 'deleted'
-- are the queue's memory of removed objects and are left out of the queue side.
create view public.files_queue_coherence with (security_invoker = true) as
select w.bucket_id,
       coalesce(s.storage_count, 0) as storage_count,
       coalesce(s.storage_size, 0) as storage_size,
       coalesce(q.queue_count, 0) as queue_count,
       coalesce(q.queue_size, 0) as queue_size,
       (select count(*) from storage.objects o
         where o.bucket_id = w.bucket_id
           and not exists (select 1 from public.files_queue fq where fq.file_path = o.name)) as missing_in_queue,
       (select count(*) from public.files_queue fq
         where fq.bucket_id = w.bucket_id and fq.status <> 'deleted'
           and not exists (select 1 from storage.objects o where o.bucket_id = fq.bucket_id and o.name = fq.file_path)) as queued_without_object
  from public.files_queue_watched_buckets w
  left join lateral (select count(*) as storage_count, sum((o.metadata ->> 'size')::bigint) as storage_size
                       from storage.objects o where o.bucket_id = w.bucket_id) s on true
  left join lateral (select count(*) as queue_count, sum(fq.file_size) as queue_size
                       from public.files_queue fq where fq.bucket_id = w.bucket_id and fq.status <> 'deleted') q on true;

-- Insertion rate per minute over the last 10 minutes (empty minutes included, so a stall shows as 0).
create view public.files_queue_insertion_rate with (security_invoker = true) as
select m.minute,
       coalesce(count(fq.id), 0) as inserted
  from generate_series(date_trunc('minute', now()) - interval '9 minutes', date_trunc('minute', now()), interval '1 minute') as m(minute)
  left join public.files_queue fq
    on fq.created_at >= m.minute and fq.created_at < m.minute + interval '1 minute'
 group by m.minute
 order by m.minute desc;

create view public.files_queue_status with (security_invoker = true) as
select bucket_id, status, count(*) as files, sum(file_size) as bytes,
       min(created_at) filter (where status = 'pending') as oldest_pending,
       max(attempts) as max_attempts_seen,
       count(*) filter (where status = 'pending' and lane = 'live') as pending_live,
       count(*) filter (where status = 'pending' and lane = 'bulk') as pending_bulk
  from public.files_queue
 group by bucket_id, status;

-- Alert: true when the gap between Storage and the queue (missing rows plus rows without an object)
-- is over 1,000 files or over 10% of the bucket.
create or replace function public.files_queue_drift_alert(p_bucket text default 'agentbasic-legifrance-raw')
returns boolean
language sql
stable
set search_path = public, extensions
as $$
  select coalesce(bool_or(c.missing_in_queue + c.queued_without_object > 1000
           or (c.missing_in_queue + c.queued_without_object) > 0.10 * greatest(c.storage_count, 1)), false)
    from public.files_queue_coherence c
   where c.bucket_id = p_bucket;
$$;

revoke all on public.files_queue_coherence, public.files_queue_insertion_rate, public.files_queue_status from anon, authenticated;
grant select on public.files_queue_coherence, public.files_queue_insertion_rate, public.files_queue_status to service_role;
revoke all on function public.claim_files_queue(text, int, int), public.complete_files_queue(text, bigint[]),
  public.fail_files_queue(text, bigint, text, boolean), public.recover_stuck_files_queue(),
  public.files_queue_repopulate_batch(text, text, int, boolean), public.files_queue_repair_missing(text),
  public.files_queue_drift_alert(text) from public, anon, authenticated;
grant execute on function public.claim_files_queue(text, int, int), public.complete_files_queue(text, bigint[]),
  public.fail_files_queue(text, bigint, text, boolean), public.recover_stuck_files_queue(),
  public.files_queue_repopulate_batch(text, text, int, boolean), public.files_queue_repair_missing(text),
  public.files_queue_drift_alert(text) to service_role;

-- A Storage object that goes away takes what its bucket's handler wrote (its legal_documents or
-- client_documents row) with it, in the same transaction: whenever its queue row is marked 'deleted'
-- (the object was deleted or moved, or the hourly coherence check found it missing). The embedding-sync
-- triggers then queue the removal of its chunks, so a deleted file never stays searchable. A later upload at the same path
-- brings it back through the queue as usual.
create function private.files_queue_deleted_removes_document() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  delete from public.legal_documents where file_path = new.file_path;
  delete from public.client_documents where bucket_id = new.bucket_id and path = new.file_path;
  return null;
end $$;
revoke all on function private.files_queue_deleted_removes_document() from public, anon, authenticated;

create trigger files_queue_deleted_removes_document
  after update of status on public.files_queue
  for each row when (new.status = 'deleted' and old.status is distinct from 'deleted')
  execute function private.files_queue_deleted_removes_document();
