// The dashboard's static files, served by the local stack's gateway at /dashboard and by
// `npm run dashboard`. A fixed table of names: no request path ever becomes a file path. uPlot comes
// from node_modules (our own copy of the npm package), never from a CDN.
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const uplot = (p: string) => fileURLToPath(new URL(`../../node_modules/uplot/dist/${p}`, import.meta.url));

const ASSETS: Record<string, { file: string; type: string }> = {
  "/dashboard": { file: here("./dashboard/index.html"), type: "text/html; charset=utf-8" },
  "/dashboard/app.js": { file: here("./dashboard/app.js"), type: "text/javascript; charset=utf-8" },
  "/dashboard/app.css": { file: here("./dashboard/app.css"), type: "text/css; charset=utf-8" },
  "/dashboard/uPlot.iife.min.js": { file: uplot("uPlot.iife.min.js"), type: "text/javascript; charset=utf-8" },
  "/dashboard/uPlot.min.css": { file: uplot("uPlot.min.css"), type: "text/css; charset=utf-8" },
};

/** The response for a /dashboard path, or null when the path is not one of the dashboard's files. */
export async function dashboardAsset(path: string): Promise<Response | null> {
  const asset = ASSETS[path === "/dashboard/" ? "/dashboard" : path];
  if (!asset) return null;
  return new Response(await readFile(asset.file), {
    headers: {
      "content-type": asset.type,
      "cache-control": "no-cache",
      // The page loads only its own files and talks only to its own origin.
      "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'",
      "x-content-type-options": "nosniff",
    },
  });
}
