-- Search with each reader's rights: the policy on documentation_embeddings lets the source
-- table's RLS decide; a table without a grant is invisible, not an error; the service role sees all.
begin;
select plan(9);

create table public.t_notes (id int primary key, owner uuid not null, body text not null);
alter table public.t_notes enable row level security;
create policy own on public.t_notes for select to authenticated using (owner = auth.uid());
grant select on public.t_notes to authenticated;
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

select * from finish();
rollback;
