-- The exact allow-list of what anon and authenticated may reach in schema public, under hosted
-- Supabase's default privileges (ALL to both on new objects; the platform bootstrap applies them).
-- A grant not listed here fails the test and is named in its diagnostics.
begin;
select plan(3);

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
  -- Search with each reader's rights (RLS of documentation_embeddings delegates to the source tables;
  -- every one of these is security invoker), the user's own conversation log, and client documents
  -- for the client's members.
  ('function', 'hybrid_search', 'authenticated'),
  ('function', 'match_documents', 'authenticated'),
  ('function', 'search_documents', 'authenticated'),
  ('function', 'search_exact_max_rows', 'authenticated'),
  ('function', 'search_reader_is_broad', 'authenticated'),
  ('function', 'can_read_source_row', 'authenticated'),
  ('function', 'read_source_row', 'authenticated'),
  ('table', 'documentation_embeddings', 'authenticated'),
  -- chunks whose delete waits for their segment's index build: search skips them (RLS: the caller's
  -- readable chunks only, as documentation_embeddings)
  ('table', 'embedding_pending_deletes', 'authenticated'),
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

-- SECURITY DEFINER runs with its owner's rights, past every RLS policy: a user-executable one could
-- answer with ids, counts or flags computed over rows the caller cannot read. So none is reachable by
-- anon or authenticated, in any schema, unless it is listed here with the reason it cannot disclose.
-- (Trigger functions are included: revoke them too, rather than rely on their return type.)
create temp table definer_allowed (fn text, role text, why text);
insert into definer_allowed values
  -- none: every user-reachable function runs with the caller's rights
  (null, null, null);
select is_empty(
  $$ select p.oid::regprocedure::text || ' to ' || r.rolname
     from pg_proc p cross join (values ('anon'), ('authenticated')) r(rolname)
     where p.prosecdef
       and p.pronamespace not in ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
       and not exists (select from pg_depend d where d.objid = p.oid and d.deptype = 'e')
       and has_function_privilege(r.rolname, p.oid, 'execute')
     except select fn || ' to ' || role from definer_allowed where fn is not null $$,
  'no SECURITY DEFINER function is executable by anon or authenticated unless allowed with its reason'
);

select * from finish();
rollback;
