-- Search with each reader's rights: the policy on documentation_embeddings lets the source table's RLS
-- decide; a table without a grant is invisible, not an error; the service role sees all. A table the
-- role may read is checked inline, and GRANT, REVOKE, ALTER TABLE and DROP TABLE keep that policy valid.
begin;
select plan(19);

create table public.t_notes (id int primary key, owner uuid not null, body text not null);
alter table public.t_notes enable row level security;
create policy own on public.t_notes for select to authenticated using (owner = auth.uid());
grant select on public.t_notes to authenticated;
revoke all on public.t_notes from anon;
select public.register_embedding_source('public.t_notes', content_columns => array['body']);
create table public.t_hidden (id int primary key, body text);
revoke all on public.t_hidden from anon, authenticated;
select public.register_embedding_source('public.t_hidden', content_columns => array['body']);

-- Chunks written directly (the worker's job is not under test here).
insert into public.documentation_embeddings (source_table, source_id, chunk_index, content, content_hash, embedding, model, token_count, source_version)
select t, i::text, 0, 'préavis ' || t || ' ' || i, md5(t || i), array_fill(0.01::real, array[public.embedding_dimensions()])::extensions.vector, 'm', 3, 1
from (values ('t_notes'), ('t_hidden')) s(t), generate_series(1, 4) i;
insert into public.t_notes values (1, '00000000-0000-0000-0000-00000000000a', 'a'), (2, '00000000-0000-0000-0000-00000000000a', 'a'),
                                  (3, '00000000-0000-0000-0000-00000000000b', 'b'), (4, '00000000-0000-0000-0000-00000000000b', 'b');
insert into public.t_hidden select g, 'h' from generate_series(1, 4) g;

select is((select count(*)::int from public.documentation_embeddings), 8, 'the owner sees every chunk');

set local role authenticated;
select set_config('request.jwt.claims', '{"sub": "00000000-0000-0000-0000-00000000000a", "role": "authenticated"}', true);
select is((select array_agg(source_id order by source_id) from public.documentation_embeddings), array['1', '2'],
  'user a reads only the chunks of their own rows');
select ok(public.can_read_source_row('t_notes', '1') and not public.can_read_source_row('t_notes', '3'), 'the source table''s RLS answers');
select ok(not public.can_read_source_row('t_hidden', '1'), 'no grant on the table: invisible, no error');
select ok(not public.can_read_source_row('no_such_table', '1'), 'an unregistered source: invisible');
select is((select count(*)::int from public.search_documents('préavis', null, 50, 'text', '{}')), 2, 'search_documents (text) as user a: two rows');
select is((select public.read_source_row('t_notes', '3')), null, 'the live row of another user is null');
select set_config('request.jwt.claims', '{"sub": "00000000-0000-0000-0000-00000000000b", "role": "authenticated"}', true);
select is((select array_agg(source_id order by source_id) from public.match_documents(array_fill(0.01::real, array[public.embedding_dimensions()])::extensions.vector, 50, '{}')),
  array['3', '4'], 'match_documents as user b: their rows only');
reset role;
set local role service_role;
select is((select count(*)::int from public.search_documents('préavis', null, 50, 'text', '{}')), 8, 'the service role sees everything');
reset role;

-- Which branch each policy takes for a table: 'inline', 'guarded' or null (no branch).
create function pg_temp.branch(p_role text, p_table regclass) returns text language sql as $$
  select case when e ~ ('embedding_rights\.rows_' || p_table::oid || '\M') then 'inline'
              when e ~ ('embedding_rights\.can_read_' || p_table::oid || '\M') then 'guarded' end
  from (select pg_get_expr(polqual, polrelid) as e from pg_policy
        where polrelid = 'public.documentation_embeddings'::regclass
          and polname = case p_role when 'anon' then 'documentation_embeddings_readable_source_anon'
                                    else 'documentation_embeddings_readable_source' end) p $$;
create function pg_temp.as_user_a() returns text[] language plpgsql as $$
declare ids text[];
begin
  set local role authenticated;
  perform set_config('request.jwt.claims', '{"sub": "00000000-0000-0000-0000-00000000000a", "role": "authenticated"}', true);
  select array_agg(source_id order by source_id) into ids from public.search_documents('préavis', null, 50, 'text', '{}');
  reset role;
  return ids;
end $$;

select is(array[pg_temp.branch('authenticated', 'public.t_notes'), pg_temp.branch('anon', 'public.t_notes'),
                pg_temp.branch('authenticated', 'public.t_hidden')],
  array['inline', 'guarded', 'guarded'], 'a table the role may read is checked inline; one it may not, through the guarded call');

select ctid as policy_ctid from pg_policy where polname = 'documentation_embeddings_readable_source' \gset
grant select on public.t_hidden to service_role;
select is((select ctid::text from pg_policy where polname = 'documentation_embeddings_readable_source'), :'policy_ctid',
  'a GRANT that changes no inlining leaves the policy untouched');

revoke select on public.t_notes from authenticated;
select is(pg_temp.branch('authenticated', 'public.t_notes'), 'guarded', 'REVOKE: the table is checked through the guarded call again');
select is(pg_temp.as_user_a(), null, 'REVOKE: user a''s search answers, without the rows they may no longer read');
grant select on public.t_notes to authenticated;
revoke all on public.t_notes from anon;
select is(pg_temp.branch('authenticated', 'public.t_notes'), 'inline', 'GRANT: checked inline again');
select is(pg_temp.as_user_a(), array['1', '2'], 'GRANT: user a reads their rows again');

alter table public.t_notes alter column id type bigint;
select is(pg_temp.as_user_a(), array['1', '2'], 'ALTER TABLE of the key''s type: the inline check follows');
alter table public.t_notes rename to t_notes_renamed;
select is(pg_temp.as_user_a(), array['1', '2'], 'RENAME: the inline check follows');

grant select on public.t_hidden to authenticated;
select is(pg_temp.branch('authenticated', 'public.t_hidden'), 'inline', 'a table granted after it was registered is checked inline');
drop table public.t_hidden;
select is(pg_temp.as_user_a(), array['1', '2'], 'DROP TABLE of an inlined source: searches still answer');

select * from finish();
rollback;
