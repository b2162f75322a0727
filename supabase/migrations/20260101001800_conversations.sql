-- The assistant's log: every question asked through the `search` function, the sources it
-- returned, the answer the assistant gave, and the user's feedback. One conversations row per question
-- (its id is the search's logId); rows of one chat share conversation_id.
--
-- user_id is the Supabase auth user's id (the JWT's sub). It references auth.users where that table
-- exists (hosted Supabase and the local stack); a plain PostgreSQL without Auth gets no constraint.
-- Users read and write only their own rows (RLS); the service role reads everything.

create table public.conversations (
  id uuid primary key default gen_random_uuid(),
  conversation_id uuid not null default gen_random_uuid(),
  user_id uuid,                                   -- null for service callers
  question text not null check (length(question) between 1 and 2000),
  response text check (length(response) <= 100000),
  sources jsonb not null default '[]'::jsonb,     -- [{source_table, source_id, chunk_index, score, similarity}]
  mode text not null default 'hybrid' check (mode in ('hybrid', 'vector', 'text')),
  result_count int not null default 0,
  best_score double precision,
  best_similarity double precision,               -- cosine similarity of the closest chunk returned
  status text not null default 'active' check (status in ('active', 'archived')),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  answered_at timestamptz
);
create index conversations_user_idx on public.conversations (user_id, created_at desc);
create index conversations_conversation_idx on public.conversations (conversation_id, created_at);

create table public.feedback (
  id bigint generated always as identity primary key,
  conversation_entry_id uuid not null unique references public.conversations (id) on delete cascade,
  user_id uuid,
  rating smallint not null check (rating in (-1, 1)),   -- thumbs down / thumbs up
  comment text check (length(comment) <= 4000),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

do $$
begin
  if to_regclass('auth.users') is not null then
    alter table public.conversations
      add constraint conversations_user_id_fkey foreign key (user_id) references auth.users (id) on delete cascade;
    alter table public.feedback
      add constraint feedback_user_id_fkey foreign key (user_id) references auth.users (id) on delete cascade;
  end if;
end $$;

-- Operators' threshold for "unanswered" questions (a single row).
create table public.search_settings (
  id boolean primary key default true check (id),
  unanswered_similarity_threshold double precision not null default 0.3
    check (unanswered_similarity_threshold between -1 and 1)
);
insert into public.search_settings default values;

alter table public.conversations enable row level security;
alter table public.feedback enable row level security;
alter table public.search_settings enable row level security;

-- Users: their own rows. Entries are created by the search function (service connection), so users
-- only read and update them (answer, archive); the columns they may update are listed.
create policy conversations_own_select on public.conversations for select to authenticated
  using (user_id = (select auth.uid()));
create policy conversations_own_update on public.conversations for update to authenticated
  using (user_id = (select auth.uid())) with check (user_id = (select auth.uid()));
create policy feedback_own_select on public.feedback for select to authenticated
  using (user_id = (select auth.uid()));
create policy feedback_own_insert on public.feedback for insert to authenticated
  with check (user_id = (select auth.uid())
              and exists (select 1 from public.conversations c
                          where c.id = conversation_entry_id and c.user_id = (select auth.uid())));
create policy feedback_own_update on public.feedback for update to authenticated
  using (user_id = (select auth.uid())) with check (user_id = (select auth.uid()));

revoke all on table public.conversations, public.feedback, public.search_settings from anon, authenticated;
revoke all on sequence public.feedback_id_seq from anon, authenticated;
-- Granted on purpose to signed-in users (RLS limits them to their own rows):
grant select on table public.conversations, public.feedback to authenticated;
grant update (response, status, answered_at, updated_at) on table public.conversations to authenticated;
grant insert (conversation_entry_id, user_id, rating, comment) on table public.feedback to authenticated;
grant update (rating, comment, updated_at) on table public.feedback to authenticated;
grant all on table public.conversations, public.feedback, public.search_settings to service_role;
grant usage on sequence public.feedback_id_seq to service_role;  -- identity columns need no sequence grant for inserts

-- Each question with its answer, its feedback and its sources. A user sees their own (RLS of the
-- tables underneath); the service role sees all.
create view public.user_questions_complete with (security_invoker = true) as
select c.id as log_id, c.conversation_id, c.user_id, c.question, c.response, c.sources, c.mode,
       c.result_count, c.best_score, c.best_similarity, c.status,
       f.rating as feedback_rating, f.comment as feedback_comment, f.created_at as feedback_at,
       c.created_at, c.answered_at
from public.conversations c
left join public.feedback f on f.conversation_entry_id = c.id;

-- Retrieval quality, for operators: questions that got a thumbs down, with what was returned.
create view public.search_negative_feedback with (security_invoker = true) as
select c.id as log_id, c.conversation_id, c.user_id, c.question, c.response, c.sources, c.best_similarity,
       f.rating, f.comment, f.created_at as feedback_at, c.created_at
from public.conversations c
join public.feedback f on f.conversation_entry_id = c.id
where f.rating < 0;

-- Questions the knowledge base could not answer: nothing returned, or the closest chunk under the
-- threshold in search_settings.
create view public.search_unanswered_questions with (security_invoker = true) as
select c.id as log_id, c.conversation_id, c.user_id, c.question, c.mode, c.result_count, c.best_similarity,
       s.unanswered_similarity_threshold as threshold, c.created_at
from public.conversations c
cross join public.search_settings s
where c.result_count = 0 or c.best_similarity is null and c.mode <> 'text'
   or c.best_similarity < s.unanswered_similarity_threshold;

revoke all on table public.user_questions_complete, public.search_negative_feedback,
  public.search_unanswered_questions from anon, authenticated;
grant select on table public.user_questions_complete to authenticated;  -- own rows only, via RLS
grant select on table public.user_questions_complete, public.search_negative_feedback,
  public.search_unanswered_questions to service_role;

-- A conversation has one user: every entry of a conversation_id has the user_id of its first entry.
-- Without this, anyone holding another user's conversation id could write their questions into it.
-- The search function answers such a call with 404 before writing; this trigger holds the rule for
-- every writer. Security definer: it must see the conversation's other entries whoever writes.
create function private.conversations_owner_guard() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  -- Two first entries of one new conversation, written at once, would both pass the check.
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(new.conversation_id::text, 1306521731));
  if exists (select from public.conversations c
             where c.conversation_id = new.conversation_id and c.user_id is distinct from new.user_id) then
    raise exception 'no such conversation' using errcode = 'P0002';
  end if;
  return new;
end $$;
revoke all on function private.conversations_owner_guard() from public, anon, authenticated;

create trigger conversations_owner_guard
  before insert or update of conversation_id, user_id on public.conversations
  for each row execute function private.conversations_owner_guard();
