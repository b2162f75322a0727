-- Bulk segments: the partitioned documentation_embeddings, its rights, and apply_embedding_results'
-- routing (a bulk-lane job writes into the loading segment, every other job into segment 0, and a
-- source row's chunks live in one segment). The maintenance procedure COMMITs, so it is exercised by
-- tests/embeddings.segments.test.ts, not inside this transaction.
begin;
select plan(62);

-- Shape -------------------------------------------------------------------------------------------
select is((select c.relkind::text from pg_class c where c.oid = 'public.documentation_embeddings'::regclass), 'p',
  'documentation_embeddings is a partitioned table');
select is((select pg_get_partkeydef('public.documentation_embeddings'::regclass)), 'LIST (segment)',
  'partitioned by LIST (segment)');
select is((select string_agg(c.oid::regclass::text || ' ' || pg_get_expr(c.relpartbound, c.oid), ', ')
           from pg_inherits i join pg_class c on c.oid = i.inhrelid
           where i.inhparent = 'public.documentation_embeddings'::regclass),
  'private.documentation_embeddings_s0 FOR VALUES IN (0)', 'segment 0 is the only partition, in schema private');
select is((select array_agg(a.attname::text order by k.ord) from pg_index x
           cross join unnest(x.indkey) with ordinality k(attnum, ord)
           join pg_attribute a on a.attrelid = x.indrelid and a.attnum = k.attnum
           where x.indrelid = 'public.documentation_embeddings'::regclass and x.indisprimary),
  array['id', 'segment'], 'primary key (id, segment)');
select ok(exists (select from pg_constraint where conrelid = 'public.documentation_embeddings'::regclass and contype = 'u'
                  and pg_get_constraintdef(oid) = 'UNIQUE (source_table, source_id, chunk_index, segment)'),
  'unique (source_table, source_id, chunk_index, segment)');
select is((select pg_get_expr(d.adbin, d.adrelid) from pg_attrdef d join pg_attribute a on a.attrelid = d.adrelid and a.attnum = d.adnum
           where d.adrelid = 'public.documentation_embeddings'::regclass and a.attname = 'id'),
  'nextval(''documentation_embeddings_id_seq''::regclass)', 'id comes from the sequence that kept the old name');
select is(public.embedding_dimensions(), 1536, 'embedding_dimensions() still reads the parent');
select is((select array_agg(am.amname::text order by am.amname) from pg_index x join pg_class ic on ic.oid = x.indexrelid
           join pg_am am on am.oid = ic.relam where x.indrelid = 'public.documentation_embeddings'::regclass),
  array['btree', 'btree', 'btree', 'gin', 'gin'], 'the parent has btree/GIN indexes and no HNSW index');
select ok(exists (select from pg_index x join pg_class ic on ic.oid = x.indexrelid join pg_am am on am.oid = ic.relam
                  where x.indrelid = 'private.documentation_embeddings_s0'::regclass and am.amname = 'hnsw' and x.indisvalid),
  'segment 0 has its own HNSW index');
select is((select count(*)::int from pg_index x where x.indrelid = 'private.documentation_embeddings_s0'::regclass), 6,
  'segment 0: the five partitioned indexes attached to its existing ones, plus HNSW (no duplicates)');

-- Rights ------------------------------------------------------------------------------------------
select ok((select relrowsecurity from pg_class where oid = 'public.documentation_embeddings'::regclass), 'RLS on the parent');
select ok(exists (select from pg_policy where polrelid = 'public.documentation_embeddings'::regclass
                  and polname = 'documentation_embeddings_readable_source'), 'the search-rights policy is on the parent');
select ok(not has_table_privilege('authenticated', 'private.documentation_embeddings_s0', 'select')
          and not has_table_privilege('anon', 'private.documentation_embeddings_s0', 'select'),
  'the partition itself is not readable by API roles');
select ok(has_table_privilege('authenticated', 'public.documentation_embeddings', 'select')
          and not has_table_privilege('anon', 'public.documentation_embeddings', 'select'),
  'the parent keeps its grants: authenticated reads (under RLS), anon does not');
select ok(not has_table_privilege('authenticated', 'public.embedding_segments', 'select')
          and not has_table_privilege('anon', 'public.embedding_segment_status', 'select'),
  'segments table and status view are service-only');
select ok((select relrowsecurity from pg_class where oid = 'public.embedding_segments'::regclass), 'RLS on embedding_segments');
select ok((select 'security_invoker=true' = any (reloptions) from pg_class where oid = 'public.embedding_segment_status'::regclass),
  'the status view is security_invoker');
select ok(exists (select from cron.job where jobname = 'embedding-segments-maintenance'
                  and command = 'call private.maintain_embedding_segments(false)'), 'the maintenance job is scheduled');
select ok(exists (select from cron.job where jobname = 'embedding-segments-build'
                  and command = 'call private.build_embedding_segments()'), 'the build job is scheduled apart');
select ok(not has_function_privilege('authenticated', 'private.maintain_embedding_segments(boolean)', 'execute'),
  'the maintenance procedure is not callable by API roles');
select ok(not has_function_privilege('authenticated', 'private.build_embedding_segments()', 'execute'),
  'the build procedure is not callable by API roles');

-- Routing -----------------------------------------------------------------------------------------
create table public.seg_tap (id int primary key, body text);
select register_embedding_source('seg_tap');

create function pg_temp.chunks(p_worker text) returns jsonb language sql as $$
  select coalesce(jsonb_agg(jsonb_build_object('j', q.id, 'i', 0, 'c', q.content, 'h', md5(q.content), 't', 1,
                                               'e', array_fill(q.id::real, array[1536])::extensions.vector::text)), '[]')
  from embedding_sync_queue q where q.locked_by = p_worker and q.action <> 'DELETE'
$$;
create function pg_temp.work(p_worker text) returns setof text language sql as $$
  select outcome from apply_embedding_results(p_worker, 'm',
    array(select id from claim_embedding_jobs(p_worker, 100, 60)), pg_temp.chunks(p_worker))
$$;
create function pg_temp.seg_of(p_id text) returns int[] language sql as $$
  select coalesce(array_agg(distinct segment order by segment), '{}') from documentation_embeddings
  where source_table = 'seg_tap' and source_id = p_id
$$;

-- No loading segment: a bulk job writes into segment 0.
insert into seg_tap values (1, 'one'), (2, 'two');
update embedding_sync_queue set lane = 'bulk' where source_table = 'seg_tap' and source_id = '1';
select is(private.embedding_bulk_target(), 0, 'no loading segment: bulk writes go to segment 0');
select results_eq($$ select * from pg_temp.work('w') $$, $$ values ('applied'), ('applied') $$, 'both jobs applied');
select is(pg_temp.seg_of('1'), array[0], 'a bulk job without a loading segment lands in segment 0');

-- A loading segment, made as the maintenance procedure makes it.
create table private.documentation_embeddings_s1 (like public.documentation_embeddings including defaults including generated);
alter table private.documentation_embeddings_s1 add constraint documentation_embeddings_s1_segment check (segment = 1);
alter table public.documentation_embeddings attach partition private.documentation_embeddings_s1 for values in (1);
insert into embedding_segments (id) values (1);

insert into seg_tap values (3, 'three');
update seg_tap set body = 'one, again' where id = 1;
update embedding_sync_queue set lane = 'bulk' where source_table = 'seg_tap' and status = 'pending';
insert into seg_tap values (4, 'four');                              -- live
select results_eq($$ select count(*)::int from pg_temp.work('w') $$, $$ values (3) $$, 'three jobs applied');
select is(pg_temp.seg_of('3'), array[1], 'a new bulk row lands in the loading segment');
select is(pg_temp.seg_of('1'), array[1], 'a bulk rewrite moves the row from segment 0 into the loading segment (once)');
select is(pg_temp.seg_of('4'), array[0], 'a live row lands in segment 0');

update seg_tap set body = 'three, edited' where id = 3;              -- live edit of a bulk row
select results_eq($$ select * from pg_temp.work('w') $$, $$ values ('applied') $$, 'the live edit applied');
select is(pg_temp.seg_of('3'), array[0], 'a live edit moves the row to segment 0, nowhere else');

delete from seg_tap where id = 1;
update embedding_sync_queue set lane = 'bulk' where source_table = 'seg_tap' and status = 'pending';
select results_eq($$ select * from pg_temp.work('w') $$, $$ values ('applied') $$, 'the bulk delete applied');
select is(pg_temp.seg_of('1'), '{}'::int[], 'a delete removes the row from the segment it was in');

-- A live rewrite of unchanged rows: the worker sends no vector (the hash is known) and the row moves
-- to segment 0 with its stored vector.
insert into seg_tap values (5, 'five');
update embedding_sync_queue set lane = 'bulk' where source_table = 'seg_tap' and status = 'pending';
select results_eq($$ select * from pg_temp.work('w') $$, $$ values ('applied') $$, 'the bulk insert applied');
select is(pg_temp.seg_of('5'), array[1], 'in the loading segment');
create function pg_temp.known_chunks(p_worker text) returns jsonb language sql as $$
  select coalesce(jsonb_agg(jsonb_build_object('j', q.id, 'i', 0, 'c', q.content, 'h', md5(q.content), 't', 1)), '[]')
  from embedding_sync_queue q where q.locked_by = p_worker and q.action <> 'DELETE'
$$;
select is((select enqueued::int from resync_embedding_sources('seg_tap', true)), 4, 'a forced resync enqueues every row');
-- Resync is bulk work (lanes); made live here, as a live edit of each row would be.
update embedding_sync_queue set lane = 'live' where source_table = 'seg_tap' and status = 'pending';
select results_eq($$ select count(*)::int from apply_embedding_results('k', 'm',
    array(select id from claim_embedding_jobs('k', 100, 60)), pg_temp.known_chunks('k')) where outcome = 'applied' $$,
  $$ values (4) $$, 'unchanged rows applied without vectors');
select is(pg_temp.seg_of('5'), array[0], 'an unchanged bulk row moves to segment 0 with its stored vector');
select is((select count(*)::int from documentation_embeddings where source_table = 'seg_tap'), 4, 'each row once');

update embedding_sync_settings set bulk_segments_enabled = false;
select is(private.embedding_bulk_target(), 0, 'segments switched off: bulk writes go to segment 0');

-- Merges: the size-tiered policy (factor 4, fresh segments of 100 chunks, at most 10,000) ---------------
select is(private.embedding_merge_plan('{1,2,3}', '{100,90,80}', 4, 100, 10000), null,
  'three segments in a tier: no merge');
select is(private.embedding_merge_plan('{1,2,3,4,5}', '{100,90,80,70,500}', 4, 100, 10000), '{1,2,3,4}'::int[],
  'four in tier 0 (below 400) merge; the 500 (tier 1) waits');
select is(private.embedding_merge_plan('{1,2,3,4,5,6}', '{5,60,7,8,9,99}', 4, 100, 10000), '{1,3,4,5}'::int[],
  'more than four in a tier: the four smallest');
select is(private.embedding_merge_plan('{1,2,3,4,5,6,7,8}', '{400,500,600,700,10,20,30,40}', 4, 100, 10000), '{5,6,7,8}'::int[],
  'two full tiers: the lowest first');
select is(private.embedding_merge_plan('{1,2,3,4,5,6,7}', '{400,500,600,700,10,20,30}', 4, 100, 10000), '{1,2,3,4}'::int[],
  'a full tier above a short one merges');
select is(private.embedding_merge_plan('{1,2,3,4}', '{400,400,450,400}', 4, 100, 1000), '{1,2}'::int[],
  'never above the maximum: as many of the smallest as fit');
select is(private.embedding_merge_plan('{1,2,3,4}', '{600,600,600,600}', 4, 100, 1000), null,
  'segments above half the maximum merge no more');
select is(private.embedding_merge_plan('{1,2,3,4}', '{40,0,null,100}', 4, 100, 10000), '{1,2,3,4}'::int[],
  'segments below the floor (even empty) are tier 0');
select is(private.embedding_merge_plan('{}', '{}', 4, 100, 10000), null, 'no sealed segment: no merge');
-- n segments of the floor size, merged as the build job would (one merge at a time): what is left
-- grows about as log(n), not n.
create function pg_temp.after_merges(p_n int, p_factor int) returns int language plpgsql as $$
declare
  ids int[] := array(select generate_series(1, p_n));
  sz bigint[] := array(select 100::bigint from generate_series(1, p_n));
  pick int[];
  next_id int := p_n;
begin
  loop
    pick := private.embedding_merge_plan(ids, sz, p_factor, 100, 1000000);
    exit when pick is null;
    next_id := next_id + 1;
    select array_agg(i) || next_id, array_agg(s) || (select sum(s2) from unnest(ids, sz) t2(i2, s2) where i2 = any (pick))::bigint
      into ids, sz from unnest(ids, sz) t(i, s) where not i = any (pick);
  end loop;
  return coalesce(array_length(ids, 1), 0);
end $$;
select is(array[pg_temp.after_merges(16, 4), pg_temp.after_merges(64, 4), pg_temp.after_merges(63, 4), pg_temp.after_merges(1000, 4)],
  array[1, 1, 9, 10], '16 and 64 fresh segments merge into 1; 63 leave 3 + 3 + 3 (base 4 digits); 1000: 10');

-- Merges: the segment size that fits the build memory ------------------------------------------------
select is(private.embedding_hnsw_element_bytes('vector', 1536), 6934::bigint,
  'vector(1536): 6,934 bytes an element (pgvector measured 6,941)');
select is(private.embedding_hnsw_element_bytes('halfvec', 1536), 3862::bigint,
  'halfvec(1536): 3,862 bytes an element (measured 3,856)');
select is(private.embedding_hnsw_element_bytes('halfvec', 512, 32), 2326::bigint, 'm = 32 doubles the layer-0 neighbour list');
select is(private.embedding_hnsw_index_spec(), 'using hnsw (embedding extensions.vector_cosine_ops)',
  'a small segment copies segment 0''s index as it is');
select is(private.embedding_hnsw_index_spec(100000), 'using hnsw (embedding extensions.vector_cosine_ops) with (ef_construction=128)',
  'a graph of 100,000 chunks or more is built with ef_construction 128');
select is(private.embedding_hnsw_index_spec(400000), 'using hnsw (embedding extensions.vector_cosine_ops) with (ef_construction=200)',
  'a graph of 400,000 chunks or more is built with ef_construction 200');
alter index private.documentation_embeddings_s0_embedding_hnsw set (m = 24, ef_construction = 300);
select is(private.embedding_hnsw_index_spec(500000), 'using hnsw (embedding extensions.vector_cosine_ops) with (m=24, ef_construction=300)',
  'segment 0''s own options are kept, and a larger ef_construction is not lowered');
alter index private.documentation_embeddings_s0_embedding_hnsw reset (m, ef_construction);
select is(private.embedding_segment_max_rows(),
  (select floor(0.9 * 256 * 1048576.0 / private.embedding_hnsw_element_bytes(t.typname, a.atttypmod))::bigint
   from pg_attribute a join pg_type t on t.oid = a.atttypid
   where a.attrelid = 'public.documentation_embeddings'::regclass and a.attname = 'embedding'),
  'max rows: 90% of bulk_segment_build_mem_mb over the element size of the column''s own type and dimensions');
update embedding_sync_settings set bulk_segment_build_mem_mb = 1024;
select ok(private.embedding_segment_max_rows() between 130000 and 140000 or public.embedding_dimensions() <> 1536,
  '1 GB builds segments of about 136,000 vector(1536) chunks');
select ok(exists (select from pg_constraint where conrelid = 'public.embedding_segments'::regclass
                  and pg_get_constraintdef(oid) like '%merging%merged%'), 'segment states include merging and merged');
select is((select array_agg(attname::text order by attnum) from pg_attribute
           where attrelid = 'public.embedding_segment_status'::regclass and attname in ('merged_from', 'merged_into')),
  array['merged_from', 'merged_into'], 'the status view shows what merged into what');
select ok(not has_function_privilege('authenticated', 'private.merge_embedding_segments()', 'execute')
          and not has_function_privilege('authenticated', 'private.merge_embedding_segment(boolean)', 'execute')
          and not has_function_privilege('authenticated', 'private.open_embedding_segment()', 'execute'),
  'the merge and open procedures are not callable by API roles');
select is((select (segment_merges_enabled, segment_merge_factor)::text from embedding_sync_settings), '(t,4)',
  'merges are on by default, factor 4');

select * from finish();
rollback;
