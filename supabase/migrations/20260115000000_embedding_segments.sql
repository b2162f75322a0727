-- Bulk segments (issue 9, deliverable 3): a backfill is written without paying one HNSW insert per row.
--
-- Measured on the 2-core test machine: 5,000 incremental inserts into an HNSW index (m=16,
-- ef_construction=64, 1536-d) take 60.8 s; 6,000 rows into an unindexed table take 0.2 s and
-- CREATE INDEX on them 7.9 s. So bulk rows land in a segment with no vector index, whose HNSW index is
-- built once, after the load.
--
-- public.documentation_embeddings becomes LIST-partitioned by `segment`:
--   segment 0          the live segment, with its HNSW index as before; every live write goes here;
--   segment 1, 2, ...  bulk segments (private.documentation_embeddings_s<N>): 'loading' (no vector
--                      index: searched by an exact scan), 'building' (the index is being built),
--                      'sealed' (indexed like segment 0).
-- The btree/GIN indexes (fts, metadata, content hash, keys) are partitioned indexes on the parent; the
-- HNSW index is not: it lives on each partition, so a loading segment may have none. Searches over
-- the parent use each partition's HNSW index where there is one and an exact scan where there is not
-- (a Merge Append of both), and a source row's chunks live in exactly one segment: found once, never
-- missing, never twice.
--
-- Existing deployments are migrated in place: the old table is moved to private and ATTACHed as
-- segment 0 (its HNSW, GIN and hash indexes are reused as they are; only the two key indexes, which
-- must now include `segment`, are rebuilt), never copied (a copy would rebuild the HNSW index).
-- PostgreSQL 15 has no identity column on a partitioned table, so `id` takes its default from a
-- sequence that keeps the old name and continues the old numbering.

-- The lanes migration (20260113...) adds the queue's lane; added here too so this migration stands on
-- its own whichever lands first.
alter table public.embedding_sync_queue add column if not exists lane text not null default 'live';

alter table public.embedding_sync_settings
  -- Off: every write goes to segment 0 and no segment is opened (the benchmark's baseline).
  add column bulk_segments_enabled boolean not null default true,
  -- A loading segment is opened when at least this many bulk jobs are ready...
  add column bulk_segment_min_rows int not null default 10000 check (bulk_segment_min_rows >= 1),
  -- ...and closed for its build at this many chunks (or when no bulk job is left). Measured with
  -- npm run bench:scale (2 cores): a 50,000-chunk segment took 194 s to build (3.9 ms a row, no better
  -- than per-row inserts) because its graph (~330 MB) did not fit in 256 MB; 10,000-chunk graphs fit.
  add column bulk_segment_max_rows int not null default 10000 check (bulk_segment_max_rows >= 1),
  -- maintenance_work_mem for a segment's build: the HNSW graph of a full segment should fit in it.
  add column bulk_segment_build_mem_mb int not null default 256 check (bulk_segment_build_mem_mb between 16 and 8192);

-- 1. The old table becomes segment 0 -------------------------------------------------------------

alter table public.documentation_embeddings rename to documentation_embeddings_s0;
alter table public.documentation_embeddings_s0 set schema private;   -- its identity sequence moves along

create sequence public.documentation_embeddings_id_seq;
select setval('public.documentation_embeddings_id_seq',
              greatest(coalesce(pg_sequence_last_value('private.documentation_embeddings_id_seq'), 0),
                       coalesce((select max(id) from private.documentation_embeddings_s0), 0), 1),
              pg_sequence_last_value('private.documentation_embeddings_id_seq') is not null
                or exists (select from private.documentation_embeddings_s0));
alter table private.documentation_embeddings_s0 alter column id drop identity;

alter table private.documentation_embeddings_s0
  add column segment int not null default 0,
  -- Lets ATTACH PARTITION skip its validation scan.
  add constraint documentation_embeddings_s0_segment check (segment = 0),
  drop constraint documentation_embeddings_pkey,
  drop constraint documentation_embeddings_source_table_source_id_chunk_index_key,
  add constraint documentation_embeddings_s0_pkey primary key (id, segment),
  add constraint documentation_embeddings_s0_chunk_key unique (source_table, source_id, chunk_index, segment);
alter index private.documentation_embeddings_embedding_hnsw rename to documentation_embeddings_s0_embedding_hnsw;

drop trigger client_page_chunk_metadata on private.documentation_embeddings_s0;
drop policy documentation_embeddings_readable_source on private.documentation_embeddings_s0;

-- 2. The partitioned table, same columns in the same order, plus segment -----------------------------

do $$
declare
  dims constant int := (select a.atttypmod from pg_catalog.pg_attribute a
                        where a.attrelid = 'private.documentation_embeddings_s0'::regclass and a.attname = 'embedding');
begin
  execute format($t$
    create table public.documentation_embeddings (
      id bigint not null default nextval('public.documentation_embeddings_id_seq'),
      source_table text not null,
      source_id text not null,
      chunk_index int not null,
      content text not null,
      content_hash text not null,
      embedding extensions.vector(%s) not null,
      model text not null,
      token_count int not null,
      metadata jsonb not null default '{}'::jsonb,
      source_version bigint not null,
      fts tsvector generated always as (to_tsvector('french'::regconfig, content)) stored,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      segment int not null default 0,
      constraint documentation_embeddings_pkey primary key (id, segment),
      constraint documentation_embeddings_chunk_key unique (source_table, source_id, chunk_index, segment)
    ) partition by list (segment)$t$, dims);
end $$;
alter sequence public.documentation_embeddings_id_seq owned by public.documentation_embeddings.id;

create index documentation_embeddings_fts on public.documentation_embeddings using gin (fts);
create index documentation_embeddings_hash on public.documentation_embeddings (content_hash, model);
create index documentation_embeddings_metadata on public.documentation_embeddings using gin (metadata jsonb_path_ops);

create trigger client_page_chunk_metadata
  before insert or update on public.documentation_embeddings
  for each row when (new.source_table = 'client_document_pages')
  execute function private.client_page_chunk_metadata();

alter table public.documentation_embeddings enable row level security;
create policy documentation_embeddings_readable_source on public.documentation_embeddings
  for select to authenticated, anon
  using (false);
select private.refresh_embedding_read_policy();

-- The same rights as the old table: a project that opened search to anon keeps it.
revoke all on public.documentation_embeddings from anon, authenticated;
grant select on public.documentation_embeddings to authenticated;
grant all on public.documentation_embeddings to service_role;
do $$
begin
  if has_table_privilege('anon', 'private.documentation_embeddings_s0', 'select') then
    grant select on public.documentation_embeddings to anon;
  end if;
end $$;
revoke all on sequence public.documentation_embeddings_id_seq from anon, authenticated;
grant usage on sequence public.documentation_embeddings_id_seq to service_role;
-- The partitions are reached through the parent only (its RLS policy decides).
revoke all on private.documentation_embeddings_s0 from anon, authenticated, service_role;

-- Matches the parent's indexes to the existing ones (no rebuild) and skips the scan (the CHECK).
alter table public.documentation_embeddings attach partition private.documentation_embeddings_s0 for values in (0);

-- 3. The segments --------------------------------------------------------------------------------

create table public.embedding_segments (
  id int primary key check (id > 0),
  state text not null default 'loading' check (state in ('loading', 'building', 'sealed')),
  rows bigint,                                   -- chunks once sealed
  created_at timestamptz not null default now(),
  building_at timestamptz,
  sealed_at timestamptz,
  build_ms bigint,
  build_attempts int not null default 0,
  last_error text
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
-- its build finished. `indexed`: the segment has a valid HNSW index of its own.
create view public.embedding_segment_status with (security_invoker = true) as
  with seg as (
    select 0 as segment, 'live'::text as state, null::bigint as rows, null::timestamptz as created_at,
           null::timestamptz as sealed_at, null::bigint as build_ms, 0 as build_attempts, null::text as last_error
    union all
    select g.id, g.state, g.rows, g.created_at, g.sealed_at, g.build_ms, g.build_attempts, g.last_error
    from public.embedding_segments g
  )
  select seg.segment, seg.state,
         -- Segment 0 can hold millions of chunks: the planner's estimate, counted only while the table
         -- has never been analysed (reltuples -1, e.g. just after the migration).
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
         seg.created_at, seg.sealed_at, seg.build_ms, seg.build_attempts, seg.last_error
  from seg;
revoke all on public.embedding_segment_status from anon, authenticated;
grant select on public.embedding_segment_status to service_role;

-- 4. The worker's write, routed ------------------------------------------------------------------
-- Same contract and outcomes as before (20260106000000). New: each applied job writes into one
-- segment, its target (a bulk-lane job: the loading segment, else 0; any other job: 0), and the row's
-- chunks in every other segment are deleted, so a source row lives in exactly one segment.
-- A segment whose HNSW index is being built is SHARE-locked (reads go on, writes wait): the write
-- never touches a segment the batch's rows have no chunks in. The segments they have chunks in are
-- read first (a plain SELECT), and each delete names its segment as a literal, so the planner prunes
-- every other partition and never locks it. The insert locks only the partitions its rows go to.
create or replace function public.apply_embedding_results(
  p_worker text, p_model text, p_job_ids bigint[], p_chunks jsonb
) returns table (job_id bigint, outcome text)
language plpgsql
security definer
set search_path = public, extensions
as $$
#variable_conflict use_column
declare
  held bigint[];
  missing bigint[];
  applied bigint[];
  c_j bigint[]; c_i int[]; c_c text[]; c_h text[]; c_t int[]; c_e text[];
  bulk_target int;
  t_job bigint[]; t_seg int[]; t_cnt int[];
  segs int[];
  seg int;
begin
  select coalesce(array_agg(q.id order by q.id), '{}') into held
  from (select q.id from embedding_sync_queue q
        where q.id = any (p_job_ids) and q.status = 'processing' and q.locked_by = p_worker
        order by q.id for update) q;

  select coalesce(array_agg(x.j), '{}'), coalesce(array_agg(x.i), '{}'), coalesce(array_agg(x.c), '{}'),
         coalesce(array_agg(x.h), '{}'), coalesce(array_agg(x.t), '{}'), coalesce(array_agg(x.e), '{}')
    into c_j, c_i, c_c, c_h, c_t, c_e
  from jsonb_to_recordset(coalesce(p_chunks, '[]'::jsonb)) as x(j bigint, i int, c text, h text, t int, e text);

  select coalesce(array_agg(distinct c.j), '{}') into missing
  from unnest(c_j, c_h, c_e) as c(j, h, e)
  where c.j = any (held) and c.e is null
    and not exists (select from documentation_embeddings d where d.content_hash = c.h and d.model = p_model);

  with cand as (
    select distinct on (q.source_table, q.source_id) q.id, q.source_table, q.source_id, q.version, q.action,
           q.content_hash, q.metadata
    from embedding_sync_queue q
    left join embedding_sources s on s.source_table = q.source_table
    where q.id = any (held) and not q.id = any (missing) and q.version >= coalesce(s.truncated_below_version, 0)
    order by q.source_table, q.source_id, q.version desc
  ), bumped as (
    insert into embedding_sync_versions as v (source_table, source_id, version, deleted, updated_at,
      content_hash, metadata_hash)
    select cand.source_table, cand.source_id, cand.version, cand.action = 'DELETE', now(),
           case when cand.action <> 'DELETE' then cand.content_hash end,
           case when cand.action <> 'DELETE' then private.embedding_metadata_hash(cand.metadata) end
    from cand
    on conflict (source_table, source_id) do update
      set version = excluded.version, deleted = excluded.deleted, updated_at = excluded.updated_at,
          content_hash = excluded.content_hash, metadata_hash = excluded.metadata_hash
      where v.version <= excluded.version
    returning v.source_table, v.source_id
  )
  select coalesce(array_agg(cand.id), '{}') into applied
  from cand join bumped using (source_table, source_id);

  if exists (select from embedding_sync_queue q where q.id = any (applied) and q.lane = 'bulk' and q.action <> 'DELETE') then
    bulk_target := private.embedding_bulk_target();
  end if;

  -- Each applied job: its target segment and how many chunks it now has (0 for a delete).
  select coalesce(array_agg(q.id), '{}'),
         coalesce(array_agg(case when q.lane = 'bulk' and q.action <> 'DELETE' then bulk_target else 0 end), '{}'),
         coalesce(array_agg(case when q.action = 'DELETE' then 0
                                 else (select count(*) from unnest(c_j) x(j) where x.j = q.id) end), '{}')
    into t_job, t_seg, t_cnt
  from embedding_sync_queue q where q.id = any (applied);

  -- The segments these rows have chunks in now (ACCESS SHARE only: never waits for a build).
  select coalesce(array_agg(distinct d.segment), '{}') into segs
  from embedding_sync_queue q
  join documentation_embeddings d on d.source_table = q.source_table and d.source_id = q.source_id
  where q.id = any (applied);

  -- An unchanged chunk (same index, hash, model and metadata) is left as is; a metadata-only change
  -- rewrites the metadata and reuses the stored vector.
  with chunks as (
    select c.j, c.i, c.c, c.h, c.t, c.e, count(*) over (partition by c.j) as cnt
    from unnest(c_j, c_i, c_c, c_h, c_t, c_e) as c(j, i, c, h, t, e)
    where c.j = any (applied)
  )
  insert into documentation_embeddings as d (source_table, source_id, chunk_index, content, content_hash,
    embedding, model, token_count, metadata, source_version, updated_at, segment)
  select q.source_table, q.source_id, c.i, c.c, c.h,
         coalesce(c.e::vector, (select x.embedding from documentation_embeddings x
                                where x.content_hash = c.h and x.model = p_model limit 1)),
         p_model, c.t, coalesce(q.metadata, '{}'::jsonb) || jsonb_build_object('chunk_count', c.cnt),
         q.version, now(), t.seg
  from chunks c
  join embedding_sync_queue q on q.id = c.j
  join unnest(t_job, t_seg) t(j, seg) on t.j = c.j
  where q.action <> 'DELETE'
  on conflict (source_table, source_id, chunk_index, segment) do update set
    content = excluded.content, content_hash = excluded.content_hash, embedding = excluded.embedding,
    model = excluded.model, token_count = excluded.token_count, metadata = excluded.metadata,
    source_version = excluded.source_version, updated_at = excluded.updated_at
  where d.content_hash is distinct from excluded.content_hash or d.model is distinct from excluded.model
     or d.metadata is distinct from excluded.metadata;

  -- Then deleted rows, rows that moved to another segment, and chunks past a row's new chunk count
  -- (after the insert: a chunk sent without a vector reuses the stored one, maybe this row's own).
  foreach seg in array segs loop
    execute format($d$
      delete from public.documentation_embeddings d
      using public.embedding_sync_queue q, unnest($1::bigint[], $2::int[], $3::int[]) t(j, seg, cnt)
      where d.segment = %1$s and q.id = t.j
        and d.source_table = q.source_table and d.source_id = q.source_id
        and (t.seg <> %1$s or d.chunk_index >= t.cnt)
      $d$, seg) using t_job, t_seg, t_cnt;
  end loop;

  update embedding_sync_queue q
  set status = 'completed', processed_at = clock_timestamp(), updated_at = clock_timestamp(),
      locked_by = null, locked_at = null, lease_until = null,
      last_error = case when q.id = any (applied) then null else 'superseded by a newer version' end
  where q.id = any (held) and not q.id = any (missing);

  return query
    select j.id, case when not j.id = any (held) then 'lost'
                      when j.id = any (missing) then 'missing'
                      when j.id = any (applied) then 'applied'
                      else 'superseded' end
    from unnest(p_job_ids) as j(id);
end $$;

revoke all on function public.apply_embedding_results(text, text, bigint[], jsonb) from public, anon, authenticated;
grant execute on function public.apply_embedding_results(text, text, bigint[], jsonb) to service_role;
