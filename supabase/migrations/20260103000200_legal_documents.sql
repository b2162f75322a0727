-- legal_documents: the relational form of each collected Légifrance document, written by the files
-- worker (process-files-queue) from the JSON file in Storage. It is an embedding source (registered in
-- a later migration), so a collected document becomes searchable with no manual step.
create table public.legal_documents (
  id text primary key check (id ~ '^[A-Z]{8}[0-9]{12}$'),
  category text not null,
  fond text,
  doc_type text not null check (doc_type in ('article', 'decision', 'text')),
  title text,
  number text,
  legal_status text,
  start_date date,
  end_date date,
  parent_id text,
  parent_title text,
  url text,
  content text not null,
  file_path text not null,
  collected_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on column public.legal_documents.end_date is 'null when Légifrance says 2999-01-01 (no end date)';
create index legal_documents_parent_idx on public.legal_documents (parent_id);
create index legal_documents_file_path_idx on public.legal_documents (file_path);

alter table public.legal_documents enable row level security;
revoke all on public.legal_documents from anon, authenticated;
grant all on public.legal_documents to service_role;
