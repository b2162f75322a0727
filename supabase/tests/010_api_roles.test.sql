-- The exact allow-list of what anon and authenticated may reach in schema public, under hosted
-- Supabase's default privileges (ALL to both on new objects; the platform bootstrap applies them).
-- A grant not listed here fails the test and is named in its diagnostics.
begin;
select plan(2);

create temp view api_reach as
  select 'function' as kind, p.proname::text as name, r.rolname::text as role
  from pg_proc p cross join (values ('anon'), ('authenticated')) r(rolname)
  where p.pronamespace = 'public'::regnamespace
    and not exists (select from pg_depend d where d.objid = p.oid and d.deptype = 'e')
    and has_function_privilege(r.rolname, p.oid, 'execute')
  union
  select case c.relkind when 'v' then 'view' when 'm' then 'view' when 'S' then 'sequence' else 'table' end,
         c.relname::text, r.rolname::text
  from pg_class c cross join (values ('anon'), ('authenticated')) r(rolname)
  where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p', 'v', 'm', 'S', 'f')
    and not exists (select from pg_depend d where d.objid = c.oid and d.deptype = 'e')
    and case when c.relkind = 'S' then has_sequence_privilege(r.rolname, c.oid, 'usage,select,update')
             else has_table_privilege(r.rolname, c.oid, 'select,insert,update,delete,truncate,references,trigger') end;

create temp table api_allowed (kind text, name text, role text);
insert into api_allowed values
  ('function', 'embedding_dimensions', 'anon'),
  ('function', 'embedding_dimensions', 'authenticated'),
  ('function', 'embedding_question_tsquery', 'authenticated'),  -- hybrid_search's text branch, as the caller
  ('function', 'hybrid_search', 'authenticated'),
  -- their candidates, chosen with the indexes (ids only); the caller's RLS decides on them
  ('function', 'embedding_filter_candidates', 'authenticated'),
  ('function', 'embedding_text_candidates', 'authenticated'),
  ('function', 'match_documents', 'authenticated'),
  -- issue 12: search with each reader's rights (RLS of documentation_embeddings delegates to the
  -- source tables), the user's own conversation log, and client documents for the client's members.
  ('function', 'search_documents', 'authenticated'),
  ('function', 'can_read_source_row', 'authenticated'),
  ('function', 'read_source_row', 'authenticated'),
  ('function', 'embedding_source_key', 'authenticated'),
  ('table', 'documentation_embeddings', 'authenticated'),
  ('table', 'conversations', 'authenticated'),
  ('table', 'feedback', 'authenticated'),
  ('view', 'user_questions_complete', 'authenticated'),
  ('table', 'clients', 'authenticated'),
  ('table', 'client_memberships', 'authenticated'),
  ('table', 'client_documents', 'authenticated'),
  ('table', 'client_document_pages', 'authenticated'),
  -- a user's own profile (names editable). (invitations: column grants only, every column but
  -- token_hash, to its client's admins; column grants are not table privileges, so not listed here.)
  ('table', 'users', 'authenticated');

select is_empty(
  $$ select kind || ' ' || name || ' to ' || role from api_reach
     except select kind || ' ' || name || ' to ' || role from api_allowed $$,
  'anon and authenticated reach nothing in public beyond the allow-list'
);
select is_empty(
  $$ select kind || ' ' || name || ' to ' || role from api_allowed
     except select kind || ' ' || name || ' to ' || role from api_reach $$,
  'everything on the allow-list is granted (search works for signed-in users)'
);

select * from finish();
rollback;
