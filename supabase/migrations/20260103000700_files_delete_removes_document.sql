-- A Storage object that goes away takes its legal_documents row with it, in the same transaction:
-- whenever its queue row is marked 'deleted' (the object was deleted or moved, or the hourly
-- coherence check found it missing). The embedding-sync trigger on legal_documents then queues the
-- removal of its chunks, so a deleted file never stays searchable. A later upload at the same path
-- brings it back through the queue as usual.
create function private.files_queue_deleted_removes_document() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  delete from public.legal_documents where file_path = new.file_path;
  return null;
end $$;

create trigger files_queue_deleted_removes_document
  after update of status on public.files_queue
  for each row when (new.status = 'deleted' and old.status is distinct from 'deleted')
  execute function private.files_queue_deleted_removes_document();
