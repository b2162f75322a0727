-- Client documents in Storage, for the client's own members: a member reads (downloads, lists, gets
-- signed URLs for) the objects under `<client_id>/` in the `client-documents` bucket, so a page the
-- search cites can be opened; an editor also uploads, replaces and deletes them there. Nobody reaches
-- another client's folder. The service role bypasses RLS, as before. Paths use the canonical
-- lower-case client id, the form `clients.id::text` prints.

-- member: reads its client's documents; editor: also writes them; admin: an editor who also invites
-- people into the client (20260122000100_invitations.sql).
alter table public.client_memberships
  add column role text not null default 'member' check (role in ('member', 'editor', 'admin'));
comment on column public.client_memberships.role is
  'member: reads the client''s documents (search, Storage downloads and signed URLs); editor: also uploads, replaces and deletes them in Storage; admin: an editor who also invites people.';

-- The clients whose folder the caller may read (any role) or write (editor). Security invoker: the
-- caller's own membership rows are what client_memberships' RLS shows them.
create policy client_documents_members_read on storage.objects for select to authenticated
  using (bucket_id = 'client-documents'
         and (storage.foldername(name))[1] in (select m.client_id::text from public.client_memberships m
                                                where m.user_id = (select auth.uid())));
-- Writes: one file directly under the client's folder (the files worker reads nothing deeper).
create policy client_documents_editors_insert on storage.objects for insert to authenticated
  with check (bucket_id = 'client-documents'
              and cardinality(storage.foldername(name)) = 1
              and (storage.foldername(name))[1] in (select m.client_id::text from public.client_memberships m
                                                     where m.user_id = (select auth.uid()) and m.role in ('editor', 'admin')));
create policy client_documents_editors_update on storage.objects for update to authenticated
  using (bucket_id = 'client-documents'
         and (storage.foldername(name))[1] in (select m.client_id::text from public.client_memberships m
                                                where m.user_id = (select auth.uid()) and m.role in ('editor', 'admin')))
  with check (bucket_id = 'client-documents'
              and cardinality(storage.foldername(name)) = 1
              and (storage.foldername(name))[1] in (select m.client_id::text from public.client_memberships m
                                                     where m.user_id = (select auth.uid()) and m.role in ('editor', 'admin')));
create policy client_documents_editors_delete on storage.objects for delete to authenticated
  using (bucket_id = 'client-documents'
         and (storage.foldername(name))[1] in (select m.client_id::text from public.client_memberships m
                                                where m.user_id = (select auth.uid()) and m.role in ('editor', 'admin')));
