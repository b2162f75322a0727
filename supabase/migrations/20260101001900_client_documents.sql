-- Client documents: PDFs, Markdown and plain text uploaded to the private bucket
-- `client-documents` at `<client_id>/<file name>` become searchable for that client's users only.
--
-- The files queue is generalised rather than copied: each watched bucket names its handler
-- (files_queue_watched_buckets.handler), the same Storage trigger queues every watched bucket's
-- objects in the object's own transaction, and process-files-queue dispatches each claimed row to its
-- bucket's handler (packages/files-queue/handlers/). A deleted object's queue row marked 'deleted'
-- removes what its handler wrote.
--
-- The embedded unit is the page (client_document_pages, one row per page with text), so every chunk
-- carries {client_id, document_id, page, path} in its metadata and a re-upload re-embeds only the pages
-- whose text changed: an unchanged page's UPDATE changes nothing and enqueues nothing.

insert into storage.buckets (id, name, public)
values ('client-documents', 'client-documents', false)
on conflict (id) do nothing;
insert into public.files_queue_watched_buckets (bucket_id, handler) values ('client-documents', 'client-documents')
on conflict (bucket_id) do update set handler = excluded.handler;

create table public.clients (
  id uuid primary key default gen_random_uuid(),
  name text not null,
  created_at timestamptz not null default now()
);

-- Which users belong to which client, and as what. user_id is the auth user's id.
-- member: reads its client's documents; editor: also writes them; admin: an editor who also invites
-- people into the client (public.invite_to_client).
create table public.client_memberships (
  client_id uuid not null references public.clients (id) on delete cascade,
  user_id uuid not null,
  created_at timestamptz not null default now(),
  role text not null default 'member' check (role in ('member', 'editor', 'admin')),
  primary key (client_id, user_id)
);
comment on column public.client_memberships.role is
  'member: reads the client''s documents (search, Storage downloads and signed URLs); editor: also uploads, replaces and deletes them in Storage; admin: an editor who also invites people.';
create index client_memberships_user_idx on public.client_memberships (user_id, client_id);

create table public.client_documents (
  id bigint generated always as identity primary key,
  client_id uuid not null references public.clients (id) on delete cascade,
  bucket_id text not null default 'client-documents',
  path text not null unique,                    -- the object's name: <client_id>/<file name>
  title text not null,
  content text not null,                        -- all pages, separated by form feeds
  pages int not null check (pages >= 1),
  mimetype text not null check (mimetype in ('application/pdf', 'text/markdown', 'text/plain')),
  size bigint not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index client_documents_client_idx on public.client_documents (client_id);

create table public.client_document_pages (
  id bigint generated always as identity primary key,
  document_id bigint not null references public.client_documents (id) on delete cascade,
  client_id uuid not null,
  page int not null check (page >= 1),
  content text not null,
  updated_at timestamptz not null default now(),
  unique (document_id, page)
);
create index client_document_pages_client_idx on public.client_document_pages (client_id);

do $$
begin
  if to_regclass('auth.users') is not null then
    alter table public.client_memberships
      add constraint client_memberships_user_id_fkey foreign key (user_id) references auth.users (id) on delete cascade;
  end if;
end $$;

alter table public.clients enable row level security;
alter table public.client_memberships enable row level security;
alter table public.client_documents enable row level security;
alter table public.client_document_pages enable row level security;

-- A client's users see that client, its documents and their pages; nobody else's.
create policy clients_members on public.clients for select to authenticated
  using (id in (select m.client_id from public.client_memberships m where m.user_id = (select auth.uid())));
create policy client_memberships_own on public.client_memberships for select to authenticated
  using (user_id = (select auth.uid()));
create policy client_documents_members on public.client_documents for select to authenticated
  using (client_id in (select m.client_id from public.client_memberships m where m.user_id = (select auth.uid())));
create policy client_document_pages_members on public.client_document_pages for select to authenticated
  using (client_id in (select m.client_id from public.client_memberships m where m.user_id = (select auth.uid())));

revoke all on table public.clients, public.client_memberships, public.client_documents, public.client_document_pages
  from anon, authenticated;
revoke all on sequence public.client_documents_id_seq, public.client_document_pages_id_seq from anon, authenticated;
-- Granted on purpose: members read their client's rows (RLS above); writes are the service's.
grant select on table public.clients, public.client_memberships, public.client_documents, public.client_document_pages
  to authenticated;
grant all on table public.clients, public.client_memberships, public.client_documents, public.client_document_pages
  to service_role;
grant usage on sequence public.client_documents_id_seq, public.client_document_pages_id_seq to service_role;

-- The pages are the embedding source; their chunks carry the client, the document and the page.
select public.register_embedding_source(
  'public.client_document_pages'::regclass,
  content_columns => array['content'],
  chunk_tokens => 512,
  chunk_overlap_tokens => 64
);

create function private.client_page_chunk_metadata() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if new.source_table = 'client_document_pages' then
    select new.metadata || jsonb_build_object('client_id', p.client_id, 'document_id', p.document_id,
                                              'page', p.page, 'path', d.path)
      into new.metadata
      from public.client_document_pages p join public.client_documents d on d.id = p.document_id
     where p.id::text = new.source_id;
    new.metadata := coalesce(new.metadata, '{}'::jsonb);
  end if;
  return new;
end $$;
revoke all on function private.client_page_chunk_metadata() from public;

create trigger client_page_chunk_metadata
  before insert or update on public.documentation_embeddings
  for each row when (new.source_table = 'client_document_pages')
  execute function private.client_page_chunk_metadata();

-- Client documents in Storage, for the client's own members: a member reads (downloads, lists, gets
-- signed URLs for) the objects under `<client_id>/` in the `client-documents` bucket, so a page the
-- search cites can be opened; an editor also uploads, replaces and deletes them there. Nobody reaches
-- another client's folder. The service role bypasses RLS. Paths use the canonical lower-case client
-- id, the form `clients.id::text` prints.
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
