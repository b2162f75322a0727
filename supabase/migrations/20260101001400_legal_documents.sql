-- legal_documents: the relational form of each collected Légifrance document, written by the files
-- worker (process-files-queue) from the JSON file in Storage, as a lawyer cites it: the legal status
-- as of today (in_force, kept current by a daily job), the citation metadata the files worker extracts
-- (long title of the parent text, section path, modifying texts) and the hash of the parsed result, so
-- re-deriving a document from Storage writes the row (and so re-embeds it) only when the parser's
-- output actually changed. It is an embedding source, so a collected document becomes searchable with
-- no manual step.
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
  updated_at timestamptz not null default now(),
  parent_title_long text,
  section_path text,
  modifications jsonb check (modifications is null or jsonb_typeof(modifications) = 'array'),
  in_force boolean,
  parse_hash text
);
comment on column public.legal_documents.end_date is 'null when Légifrance says 2999-01-01 (no end date)';
create index legal_documents_parent_idx on public.legal_documents (parent_id);
create index legal_documents_file_path_idx on public.legal_documents (file_path);

alter table public.legal_documents enable row level security;
revoke all on public.legal_documents from anon, authenticated;
grant all on public.legal_documents to service_role;
comment on column public.legal_documents.legal_status is 'Légifrance''s raw etat (VIGUEUR, ABROGE_DIFF, MODIFIE, ...), as collected';
comment on column public.legal_documents.in_force is
  'In force as of today, from legal_status and the dates (public.legal_document_in_force); null when the status says nothing (decisions)';
comment on column public.legal_documents.section_path is 'fullSectionsTitre (or the section titles, or sectionParentTitre) of an article';
comment on column public.legal_documents.modifications is 'lienModifications: [{title, link_type, text_id, article_num, date}], null when none';
comment on column public.legal_documents.parse_hash is 'sha256 of the parsed document; the worker skips the write when it is unchanged';

-- In force as of p_as_of, from Légifrance's etat and the version's dates (start inclusive, end
-- exclusive; a null end is Légifrance's 2999-01-01, "no end").
-- - VIGUEUR (and the conventions' VIGUEUR_ETEN / VIGUEUR_NON_ETEN): in force within its dates, so
--   a version whose end has passed stops being in force even before Légifrance re-labels it.
-- - ABROGE_DIFF: in force until its dateFin. VIGUEUR_DIFF: in force from its dateDebut.
-- - ABROGE, MODIFIE, PERIME, ANNULE, TRANSFERE (and the *_MORT_NE variants): not in force.
-- - Anything else, or no etat (court decisions): null, "not a question of being in force".
create or replace function public.legal_document_in_force(p_etat text, p_start date, p_end date, p_as_of date)
returns boolean
language sql
immutable
parallel safe
set search_path = ''
as $$
  select case
    when p_etat in ('VIGUEUR', 'VIGUEUR_ETEN', 'VIGUEUR_NON_ETEN', 'ABROGE_DIFF', 'VIGUEUR_DIFF')
      then (p_start is null or p_start <= p_as_of) and (p_end is null or p_as_of < p_end)
    when p_etat in ('ABROGE', 'MODIFIE', 'PERIME', 'ANNULE', 'TRANSFERE', 'MODIFIE_MORT_NE', 'ABROGE_MORT_NE')
      then false
  end
$$;
-- Pure and harmless, but nothing in public is granted unless meant: service_role only.
revoke all on function public.legal_document_in_force(text, date, date, date) from public, anon, authenticated;
grant execute on function public.legal_document_in_force(text, date, date, date) to service_role;

-- Every writer gets in_force computed the same way, as of the day it writes.
create or replace function private.legal_documents_set_in_force()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.in_force := public.legal_document_in_force(new.legal_status, new.start_date, new.end_date, current_date);
  return new;
end $$;
revoke all on function private.legal_documents_set_in_force() from public;

create trigger legal_documents_set_in_force
  before insert or update of legal_status, start_date, end_date on public.legal_documents
  for each row execute function private.legal_documents_set_in_force();

-- The rows whose in_force a new day can flip: in force with an end date (it may have passed), and
-- not yet in force with a status that has dates to wait for. Partial indexes keep the daily job off
-- the million versions that are settled for good (ABROGE, MODIFIE, ...).
create index legal_documents_in_force_end_idx on public.legal_documents (end_date)
  where in_force and end_date is not null;
create index legal_documents_awaiting_start_idx on public.legal_documents (start_date)
  where in_force is not true and legal_status in ('VIGUEUR', 'VIGUEUR_ETEN', 'VIGUEUR_NON_ETEN', 'ABROGE_DIFF', 'VIGUEUR_DIFF');

-- Recomputes in_force for the documents whose dates crossed p_as_of; returns how many changed.
-- Only changed rows are written, and in_force is not embedded text, so no provider call follows.
create or replace function public.refresh_legal_documents_in_force(p_as_of date default current_date)
returns bigint
language plpgsql
set search_path = ''
as $$
declare
  v_changed bigint;
begin
  with due as (
    select id from public.legal_documents where in_force and end_date is not null and end_date <= p_as_of
    union
    select id from public.legal_documents
     where in_force is not true and start_date <= p_as_of
       and legal_status in ('VIGUEUR', 'VIGUEUR_ETEN', 'VIGUEUR_NON_ETEN', 'ABROGE_DIFF', 'VIGUEUR_DIFF')
  )
  update public.legal_documents d
     set in_force = public.legal_document_in_force(d.legal_status, d.start_date, d.end_date, p_as_of),
         updated_at = now()
    from due
   where d.id = due.id
     and d.in_force is distinct from public.legal_document_in_force(d.legal_status, d.start_date, d.end_date, p_as_of);
  get diagnostics v_changed = row_count;
  return v_changed;
end $$;
revoke all on function public.refresh_legal_documents_in_force(date) from public, anon, authenticated;
grant execute on function public.refresh_legal_documents_in_force(date) to service_role;

-- Re-derive legal_documents from Storage (after a parser improvement): every processed or failed
-- file of the bucket goes back to pending. The worker re-parses each one and writes a row only when
-- its parse_hash changed, so only documents whose parsed result changed are re-embedded. Re-deriving
-- the whole bucket is bulk work: the files go to the bulk lane. Returns the number of files queued again.
create or replace function public.resync_legal_documents(p_bucket text default 'agentbasic-legifrance-raw')
returns bigint
language plpgsql
set search_path = ''
as $$
declare
  v_n bigint;
begin
  update public.files_queue
     set status = 'pending', processed = false, attempts = 0, last_error = null, run_at = now(),
         locked_by = null, locked_at = null, lease_expires_at = null, processed_at = null, updated_at = now(),
         lane = 'bulk'
   where bucket_id = p_bucket and status in ('completed', 'failed');
  get diagnostics v_n = row_count;
  return v_n;
end $$;

revoke all on function public.resync_legal_documents(text) from public, anon, authenticated;
grant execute on function public.resync_legal_documents(text) to service_role;

-- Daily, just after midnight UTC (the same calendar day as in Paris).
select cron.schedule('legal-documents-in-force', '5 0 * * *', $$select public.refresh_legal_documents_in_force()$$);

-- The embedding source: every upsert by the files worker lands in embedding_sync_queue through the
-- embedding-sync trigger, so collected law becomes searchable. The embedded text is labelled (title, number, status, parent text) so a search for "Code civil
-- article 1240" finds the article even though its body never says so.
create or replace function public.legal_document_embedding_content(doc jsonb)
returns text
language sql
immutable
set search_path = ''
as $$
  select concat_ws(E'\n',
    case when doc ->> 'title' is not null then 'Titre: ' || (doc ->> 'title') end,
    case when doc ->> 'number' is not null then 'Numéro: ' || (doc ->> 'number') end,
    case when doc ->> 'parent_title' is not null then 'Texte: ' || (doc ->> 'parent_title') end,
    case when doc ->> 'legal_status' is not null then 'État: ' || (doc ->> 'legal_status') end,
    doc ->> 'content')
$$;
revoke all on function public.legal_document_embedding_content(jsonb) from public, anon, authenticated;

-- Citation metadata on every chunk (metadata_columns): the assistant can cite "Code civil, art. 1792,
-- version en vigueur depuis le 1979-01-01" with the link to that exact version, and search can filter
-- on it, e.g. hybrid_search(..., filter => '{"in_force": true}'). A change to these columns alone (the
-- daily in_force job) rewrites only the chunks' metadata, with no provider call.
select public.register_embedding_source(
  'public.legal_documents'::regclass,
  content_function => 'public.legal_document_embedding_content(jsonb)'::regprocedure,
  chunk_tokens => 512,
  chunk_overlap_tokens => 64,
  metadata_columns => array[
    'category', 'doc_type', 'title', 'parent_title', 'parent_title_long', 'number', 'section_path', 'url',
    'legal_status', 'in_force', 'start_date', 'end_date', 'modifications']
);
