// Collects Légifrance documents into Storage: { mode: 'massive' | 'maintenance' | 'stop' | 'status' }.
import { lazyContext } from "../../../packages/storage/context.ts";
import { collectorHandler } from "../../../packages/legifrance/handler.ts";

const fetch = collectorHandler(lazyContext());

export default { fetch } satisfies Deno.ServeDefaultExport;
