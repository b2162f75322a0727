-- Relational -> vector sync, part 1: the tables.
--
-- embedding_sources     which tables are embedded, and how (columns or content function, publish
--                       filter, chunking). Filled by register_embedding_source(), or with defaults
--                       the first time the trigger fires on a table nobody registered.
-- embedding_sync_queue  one job per change (lease, backoff, lane).
-- embedding_sync_versions  the newest version applied per source row, deletes included: the guard
--                       that keeps a slower, older job from overwriting a newer one.
-- documentation_embeddings  one row per chunk, HNSW cosine + French full text, partitioned in segments.
--
-- The vector dimension is set in ONE place: `dims` in the block below. The edge function reads it
-- back with public.embedding_dimensions() and refuses to start when EMBEDDING_DIMENSIONS differs.

create table public.embedding_sources (
  source_table text primary key,                 -- rendered like regclass::text with public first
  relid oid not null,
  pk_column text not null,
  content_columns text[],
  content_function regprocedure,
  publish_filter text,
  chunk_tokens int not null default 512 check (chunk_tokens between 16 and 8191),
  chunk_overlap_tokens int not null default 64 check (chunk_overlap_tokens >= 0),
  -- One SQL select list over `r` (the row): its id, then its content or null when unpublished.
  -- Cached at registration so the trigger runs one EXECUTE per row instead of reading the catalog.
  row_sql text not null,
  -- Jobs with a version below this were queued before a TRUNCATE and must not write anything.
  truncated_below_version bigint not null default 0,
  registered boolean not null default true,      -- false: defaults taken by a bare trigger
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  -- Columns whose values every chunk carries in its metadata (register_embedding_source's
  -- metadata_columns), and their jsonb expression over `r`, cached like row_sql; null when none.
  metadata_columns text[],
  metadata_sql text,
  check (chunk_overlap_tokens < chunk_tokens)
);

-- Versions are global and monotonic; per source row they follow commit order because the source
-- row's lock is held while its AFTER trigger takes the next value.
create sequence public.embedding_sync_version_seq;

create table public.embedding_sync_queue (
  id bigint generated always as identity primary key,
  source_table text not null,
  source_id text not null,
  action text not null check (action in ('INSERT', 'UPDATE', 'DELETE')),
  content text,
  content_hash text,
  status text not null default 'pending' check (status in ('pending', 'processing', 'completed', 'failed')),
  retry_count int not null default 0,
  max_attempts int not null default 3,
  version bigint not null default nextval('public.embedding_sync_version_seq'),
  last_error text,
  run_at timestamptz not null default now(),
  locked_by text,
  locked_at timestamptz,
  lease_until timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  processed_at timestamptz,
  metadata jsonb,                                -- the row's metadata columns, for every chunk
  -- live: a change made by a row trigger in an ordinary transaction; bulk: work made in bulk. Every way
  -- a job is inserted (the trigger, resync's set-based inserts, an operator's INSERT) takes the lane
  -- from the transaction's embedding_sync.lane setting (see private.embedding_lane_begin_bulk).
  lane text not null default (case when current_setting('embedding_sync.lane', true) = 'bulk'
                                   then 'bulk' else 'live' end) check (lane in ('live', 'bulk'))
);

-- At most one pending job per source row: a newer change replaces its content (newest wins).
create unique index embedding_sync_queue_one_pending
  on public.embedding_sync_queue (source_table, source_id) where status = 'pending';
create index embedding_sync_queue_ready on public.embedding_sync_queue (run_at, id) where status = 'pending';
create index embedding_sync_queue_leases on public.embedding_sync_queue (lease_until) where status = 'processing';
create index embedding_sync_queue_done on public.embedding_sync_queue (processed_at) where status = 'completed';
create index embedding_sync_queue_failed on public.embedding_sync_queue (source_table) where status = 'failed';
-- Each lane's claim order; the (run_at, id) index keeps serving FIFO and the backlog counts.
create index embedding_sync_queue_ready_lane on public.embedding_sync_queue (lane, run_at, id) where status = 'pending';

create table public.embedding_sync_versions (
  source_table text not null,
  source_id text not null,
  version bigint not null,
  deleted boolean not null default false,
  updated_at timestamptz not null default now(),
  -- What was last applied (its text's and metadata's hashes): resync compares the current row
  -- against these, set-based, and skips the unchanged rows.
  content_hash text,
  metadata_hash text,
  primary key (source_table, source_id)
);

-- Tunables read by the scheduling functions and the worker SQL (a single row).
create table public.embedding_sync_settings (
  id boolean primary key default true check (id),
  batch_size int not null default 100 check (batch_size between 1 and 500),
  max_workers int not null default 4 check (max_workers between 1 and 32),
  lease_seconds int not null default 180 check (lease_seconds >= 5),
  wake_window_ms int not null default 1000 check (wake_window_ms >= 0),
  backoff_base_seconds double precision not null default 10,
  backoff_max_seconds double precision not null default 3600,
  -- Lanes: off restores plain FIFO claims; bulk_share is the part of a mixed claim kept for bulk jobs.
  lanes_enabled boolean not null default true,
  bulk_share double precision not null default 0.2 check (bulk_share >= 0 and bulk_share <= 1),
  -- Bulk segments (public.embedding_segments). Off: every write goes to segment 0 and no segment is
  -- opened (the benchmark's baseline).
  bulk_segments_enabled boolean not null default true,
  -- A loading segment is opened when at least this many bulk jobs are ready...
  bulk_segment_min_rows int not null default 10000 check (bulk_segment_min_rows >= 1),
  -- ...and closed for its build at this many chunks (or when no bulk job is left). Measured with
  -- npm run bench:scale (2 cores): a 50,000-chunk segment took 194 s to build (3.9 ms a row, no better
  -- than per-row inserts) because its graph (~330 MB) did not fit in 256 MB; 10,000-chunk graphs fit.
  bulk_segment_max_rows int not null default 10000 check (bulk_segment_max_rows >= 1),
  -- maintenance_work_mem for a segment's build: the HNSW graph of a full segment should fit in it.
  -- It also caps every segment, loading or merged: see private.embedding_segment_max_rows().
  bulk_segment_build_mem_mb int not null default 256 check (bulk_segment_build_mem_mb between 16 and 8192),
  -- Sealed segments merge in the background (size-tiered: see private.embedding_merge_plan): when this
  -- many fall in one size tier, they become one. Off: segments are only ever built, never merged.
  segment_merges_enabled boolean not null default true,
  segment_merge_factor int not null default 4 check (segment_merge_factor between 2 and 64),
  -- How many parallel maintenance workers a segment's HNSW build may use beside its own backend. A
  -- build runs for tens of seconds while live edits keep arriving, and PostgreSQL plans parallel
  -- workers for it (2 by default) once the segment's heap passes min_parallel_table_scan_size: on a
  -- 2-core instance that is every core, and the live lane's claims and writes queue behind the build.
  -- (Vectors are stored out of line, so a 10,000-chunk segment's heap stays under that size and builds
  -- on one backend anyway; larger segments, or a table with a parallel_workers option, would not.)
  -- 0 keeps a build on one core; an instance with cores to spare can raise it.
  bulk_segment_build_workers int not null default 0 check (bulk_segment_build_workers between 0 and 64)
);
insert into public.embedding_sync_settings default values;

-- The last time the queue's insert trigger woke the workers (coalescing; see private.wake_embedding_workers):
-- the bulk fan-out's row, and the live lane's own row, so a long bulk transaction holding the bulk
-- wake row never delays a live wake.
create table private.embedding_sync_wake (
  id boolean primary key default true check (id),
  last_wake_at timestamptz not null default '-infinity'
);
insert into private.embedding_sync_wake default values;
create table private.embedding_sync_live_wake (
  id boolean primary key default true check (id),
  last_wake_at timestamptz not null default '-infinity'
);
insert into private.embedding_sync_live_wake default values;

-- documentation_embeddings is LIST-partitioned by `segment`, so that a backfill is written without
-- paying one HNSW insert per row. Measured on a 2-core machine: 5,000 incremental inserts into an HNSW
-- index (m=16, ef_construction=64, 1536-d) take 60.8 s; 6,000 rows into an unindexed table take 0.2 s
-- and CREATE INDEX on them 7.9 s. So bulk rows land in a segment with no vector index, whose HNSW
-- index is built once, after the load:
--   segment 0          the live segment (private.documentation_embeddings_s0), with its HNSW index;
--                      every live write goes here;
--   segment 1, 2, ...  bulk segments (private.documentation_embeddings_s<N>, listed in
--                      public.embedding_segments): 'loading' (no vector index: searched by an exact
--                      scan), 'building' (the index is being built), 'sealed' (indexed like segment 0).
-- The btree/GIN indexes (fts, metadata, content hash, keys) are partitioned indexes on the parent; the
-- HNSW index is not: it lives on each partition, so a loading segment may have none. Searches over the
-- parent use each partition's HNSW index where there is one and an exact scan where there is not (a
-- Merge Append of both), and a source row's chunks live in exactly one segment: found once, never
-- missing, never twice. PostgreSQL 15 has no identity column on a partitioned table, so `id` takes
-- its default from a sequence.
create sequence public.documentation_embeddings_id_seq;

do $$
declare
  dims constant int := 1536;  -- THE embedding dimension (text-embedding-3-small's default)
begin
  execute format($t$
    create table public.documentation_embeddings (
      id bigint not null default nextval('public.documentation_embeddings_id_seq'),
      source_table text not null,
      source_id text not null,
      chunk_index int not null,
      content text not null,
      content_hash text not null,
      embedding extensions.vector(%1$s) not null,
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
  execute format($t$
    create table private.documentation_embeddings_s0 (
      id bigint not null,
      source_table text not null,
      source_id text not null,
      chunk_index int not null,
      content text not null,
      content_hash text not null,
      embedding extensions.vector(%1$s) not null,
      model text not null,
      token_count int not null,
      metadata jsonb not null default '{}'::jsonb,
      source_version bigint not null,
      fts tsvector generated always as (to_tsvector('french'::regconfig, content)) stored,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      segment int not null default 0,
      -- Lets ATTACH PARTITION skip its validation scan.
      constraint documentation_embeddings_s0_segment check (segment = 0),
      constraint documentation_embeddings_s0_pkey primary key (id, segment),
      constraint documentation_embeddings_s0_chunk_key unique (source_table, source_id, chunk_index, segment)
    )$t$, dims);
end $$;
alter sequence public.documentation_embeddings_id_seq owned by public.documentation_embeddings.id;

create index documentation_embeddings_fts on public.documentation_embeddings using gin (fts);
-- "Is this text already embedded with this model?": the lookup that saves provider calls.
create index documentation_embeddings_hash on public.documentation_embeddings (content_hash, model);
-- `filter` containment on metadata.
create index documentation_embeddings_metadata on public.documentation_embeddings using gin (metadata jsonb_path_ops);

-- Segment 0's indexes, made before it is attached so that they keep these names.
create index documentation_embeddings_s0_embedding_hnsw
  on private.documentation_embeddings_s0 using hnsw (embedding extensions.vector_cosine_ops);
create index documentation_embeddings_fts on private.documentation_embeddings_s0 using gin (fts);
create index documentation_embeddings_hash on private.documentation_embeddings_s0 (content_hash, model);
create index documentation_embeddings_metadata on private.documentation_embeddings_s0 using gin (metadata jsonb_path_ops);
alter table public.documentation_embeddings attach partition private.documentation_embeddings_s0 for values in (0);

create function public.embedding_dimensions() returns int
language sql stable
set search_path = ''
as $$
  select a.atttypmod from pg_catalog.pg_attribute a
  where a.attrelid = 'public.documentation_embeddings'::regclass and a.attname = 'embedding'
$$;

-- RLS everywhere; no policies: only the service role (bypassrls) and definer functions get in.
alter table public.embedding_sources enable row level security;
alter table public.embedding_sync_queue enable row level security;
alter table public.embedding_sync_versions enable row level security;
alter table public.embedding_sync_settings enable row level security;
alter table public.documentation_embeddings enable row level security;
alter table private.embedding_sync_wake enable row level security;
alter table private.embedding_sync_live_wake enable row level security;
alter table private.documentation_embeddings_s0 enable row level security;
revoke all on private.embedding_sync_live_wake from public;
-- The partitions are reached through the parent only (its RLS policy decides).
revoke all on private.documentation_embeddings_s0 from anon, authenticated, service_role;

revoke all on public.embedding_sources, public.embedding_sync_queue, public.embedding_sync_versions,
  public.embedding_sync_settings, public.documentation_embeddings from anon, authenticated;
revoke all on sequence public.embedding_sync_version_seq, public.embedding_sync_queue_id_seq,
  public.documentation_embeddings_id_seq from anon, authenticated;
grant all on public.embedding_sources, public.embedding_sync_queue, public.embedding_sync_versions,
  public.embedding_sync_settings, public.documentation_embeddings to service_role;
grant usage on sequence public.embedding_sync_version_seq, public.documentation_embeddings_id_seq to service_role;
grant execute on function public.embedding_dimensions() to anon, authenticated, service_role;
