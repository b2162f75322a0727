// Rebuilds or repairs files_queue from storage.objects: { bucket, batchSize?, cursor?, dryRun? }.
import { lazyContext } from "../../../packages/storage/context.ts";
import { repopulateHandler } from "../../../packages/files-queue/repopulate.ts";

const fetch = repopulateHandler(lazyContext());

export default { fetch } satisfies Deno.ServeDefaultExport;
