-- How many parallel maintenance workers a segment's HNSW build may use beside its own backend.
--
-- A build runs for tens of seconds while live edits keep arriving, and PostgreSQL plans parallel
-- workers for it (2 by default) once the segment's heap passes min_parallel_table_scan_size: on a
-- 2-core instance that is every core, and the live lane's claims and writes queue behind the build.
-- (Vectors are stored out of line, so a 10,000-chunk segment's heap stays under that size and builds
-- on one backend anyway; larger segments, or a table with a parallel_workers option, would not.)
-- 0, the default, keeps a build on one core; an instance with cores to spare can raise it.
alter table public.embedding_sync_settings
  add column bulk_segment_build_workers int not null default 0
    check (bulk_segment_build_workers between 0 and 64);
