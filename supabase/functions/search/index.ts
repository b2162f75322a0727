// search: a question in plain text -> the chunks the caller may read (the source tables' RLS decides),
// optionally with the live source rows; each query is logged (conversations). Logic in packages/search.
import { createSearchHandler } from "../../../packages/search/handler.ts";

const handle = createSearchHandler();

export default {
  fetch: (req: Request) => handle(req),
} satisfies Deno.ServeDefaultExport;
