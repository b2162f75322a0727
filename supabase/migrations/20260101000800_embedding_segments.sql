-- Bulk segments: the partitions of public.documentation_embeddings beyond the live segment 0, their
-- states, and where bulk writes go.

create table public.embedding_segments (
  id int primary key check (id > 0),
  -- loading -> building -> sealed; a merge adds a 'merging' segment (attached, empty to every reader
  -- until its swap commits), which then becomes 'sealed' while its sources become 'merged' (emptied,
  -- dropped by the next maintenance run).
  state text not null default 'loading' check (state in ('loading', 'building', 'sealed', 'merging', 'merged')),
  rows bigint,                                   -- chunks once sealed (a merging segment: the plan's total)
  created_at timestamptz not null default now(),
  building_at timestamptz,
  sealed_at timestamptz,
  build_ms bigint,
  build_attempts int not null default 0,
  last_error text,
  merged_from int[],                             -- a merged (or merging) segment: the segments it replaces
  merged_into int                                -- a 'merged' segment: the segment that took its rows
);
-- At most one segment takes bulk writes at a time.
create unique index embedding_segments_one_loading on public.embedding_segments ((true)) where state = 'loading';
alter table public.embedding_segments enable row level security;
revoke all on public.embedding_segments from anon, authenticated;
grant select on public.embedding_segments to service_role;

-- Where a bulk job writes now: the loading segment, or segment 0 when there is none (or segments are
-- off). FOR SHARE holds the segment's row until the caller commits, so maintenance cannot close the
-- segment (and start its build) between this choice and the write.
create function private.embedding_bulk_target() returns int
language sql
security definer
set search_path = ''
as $$
  select coalesce((
    select g.id from public.embedding_segments g, public.embedding_sync_settings s
    where g.state = 'loading' and s.bulk_segments_enabled
    order by g.id limit 1
    for share of g), 0)
$$;
revoke all on function private.embedding_bulk_target() from public, anon, authenticated;

-- Segment 0's rows are the planner's estimate (counting it could take seconds); a loading or building
-- segment is small (about bulk_segment_max_rows) and counted exactly; a sealed one was counted when
-- its build finished; a merging one shows its plan's total (its rows become visible when its swap
-- commits). `indexed`: the segment has a valid HNSW index of its own. merged_from / merged_into: a merge's
-- result and its sources.
create view public.embedding_segment_status with (security_invoker = true) as
  with seg as (
    select 0 as segment, 'live'::text as state, null::bigint as rows, null::timestamptz as created_at,
           null::timestamptz as sealed_at, null::bigint as build_ms, 0 as build_attempts, null::text as last_error,
           null::int[] as merged_from, null::int as merged_into
    union all
    select g.id, g.state, g.rows, g.created_at, g.sealed_at, g.build_ms, g.build_attempts, g.last_error,
           g.merged_from, g.merged_into
    from public.embedding_segments g
  )
  select seg.segment, seg.state,
         -- Segment 0 can hold millions of chunks: the planner's estimate, counted only while the table
         -- has never been analysed (reltuples -1, e.g. on a new project).
         case when seg.segment = 0
                then (select case when c.reltuples >= 0 then c.reltuples::bigint
                                  else (select count(*) from private.documentation_embeddings_s0) end
                      from pg_catalog.pg_class c
                      where c.oid = 'private.documentation_embeddings_s0'::regclass)
              when seg.state in ('loading', 'building')
                then (select count(*) from public.documentation_embeddings d where d.segment = seg.segment)
              else seg.rows end as rows,
         exists (select from pg_catalog.pg_index i join pg_catalog.pg_class ic on ic.oid = i.indexrelid
                 join pg_catalog.pg_am am on am.oid = ic.relam
                 where i.indrelid = to_regclass('private.documentation_embeddings_s' || seg.segment)
                   and am.amname = 'hnsw' and i.indisvalid) as indexed,
         seg.created_at, seg.sealed_at, seg.build_ms, seg.build_attempts, seg.last_error,
         seg.merged_from, seg.merged_into
  from seg;
revoke all on public.embedding_segment_status from anon, authenticated;
grant select on public.embedding_segment_status to service_role;

-- Live edits never wait for a segment's index build.
--
-- A closed bulk segment gets its HNSW index from a plain CREATE INDEX (private.build_embedding_segments),
-- which holds a SHARE lock on that segment for the whole build: tens of seconds on two idle cores,
-- minutes under load. A live edit of a row whose chunks are in that segment had to delete them there,
-- and its ROW EXCLUSIVE lock waited for the whole build (pg_locks: the worker's apply_embedding_results
-- waiting on RowExclusiveLock of private.documentation_embeddings_s<N>, the build holding ShareLock).
--
-- CREATE INDEX CONCURRENTLY would not take that lock, but it cannot run in a function or a procedure,
-- and the builds run in the database (pg_cron). So the deletes wait instead of the writer:
--   - apply_embedding_results marks the chunks it would delete in a segment under build in
--     public.embedding_pending_deletes (same transaction as the new chunks, which go to segment 0 or
--     the loading segment, never to the segment under build);
--   - searches (search_documents, and so match_documents and hybrid_search) skip marked chunks: an edit
--     is searchable at once, with its new text only, and a deleted row is gone at once;
--   - the build, once its index is built, deletes the marked chunks and the marks in the transaction
--     that seals the segment.
-- Rights: a user reads the marks of the chunks they may read (the same RLS as the chunks), so nothing
-- of another's rows shows through them.

create table public.embedding_pending_deletes (
  segment int not null,
  id bigint not null,
  created_at timestamptz not null default now(),
  primary key (segment, id)
);
alter table public.embedding_pending_deletes enable row level security;
revoke all on public.embedding_pending_deletes from anon, authenticated;
grant select on public.embedding_pending_deletes to authenticated;
grant all on public.embedding_pending_deletes to service_role;
-- A mark is visible to whoever may read its chunk: documentation_embeddings' own policy decides.
create policy embedding_pending_deletes_readable_chunk on public.embedding_pending_deletes
  for select to authenticated
  using (exists (select from public.documentation_embeddings d
                 where d.id = embedding_pending_deletes.id and d.segment = embedding_pending_deletes.segment));

