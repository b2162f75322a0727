-- A Storage object that goes away takes its legal_documents row with it, in the same transaction as
-- the delete (or the move): the embedding-sync trigger on legal_documents then queues the removal of
-- its chunks, so a deleted file never stays searchable. A later upload at the same path brings it back
-- through the queue as usual.
create or replace function private.files_queue_on_object_change()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if tg_op = 'DELETE' then
    update public.files_queue
       set status = 'deleted', locked_by = null, locked_at = null, lease_expires_at = null, updated_at = now()
     where file_path = old.name and bucket_id = old.bucket_id;
    if found then
      delete from public.legal_documents where file_path = old.name;
    end if;
    return old;
  end if;

  if not exists (select 1 from public.files_queue_watched_buckets w where w.bucket_id = new.bucket_id) then
    return new;
  end if;

  if tg_op = 'UPDATE' and old.bucket_id is not distinct from new.bucket_id and old.name is not distinct from new.name
     and old.metadata is not distinct from new.metadata and old.version is not distinct from new.version then
    return new; -- e.g. last_accessed_at only: nothing new to process
  end if;

  if tg_op = 'UPDATE' and (old.bucket_id, old.name) is distinct from (new.bucket_id, new.name) then
    update public.files_queue set status = 'deleted', locked_by = null, locked_at = null, lease_expires_at = null, updated_at = now()
     where file_path = old.name and bucket_id = old.bucket_id;
    if found then
      delete from public.legal_documents where file_path = old.name;
    end if;
  end if;

  insert into public.files_queue as q (file_path, bucket_id, file_size, status, processed, created_at)
  values (new.name, new.bucket_id, (new.metadata ->> 'size')::bigint, 'pending', false, coalesce(new.created_at, now()))
  on conflict (file_path) do update
     set file_size = excluded.file_size,
         status = 'pending',
         processed = false,
         attempts = 0,
         last_error = null,
         run_at = now(),
         locked_by = null,
         locked_at = null,
         lease_expires_at = null,
         processed_at = null,
         updated_at = now()
   where q.bucket_id = excluded.bucket_id;
  return new;
end $$;

