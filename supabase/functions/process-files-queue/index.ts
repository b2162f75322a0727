// The files worker: files_queue rows -> Storage download -> parse -> legal_documents.
import { lazyContext } from "../../../packages/storage/context.ts";
import { workerHandler } from "../../../packages/files-queue/worker.ts";

const fetch = workerHandler(lazyContext());

export default { fetch } satisfies Deno.ServeDefaultExport;
