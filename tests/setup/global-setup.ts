import type { TestProject } from "vitest/node";
import { ensureTestServer, prepareTemplate } from "../../packages/testkit/testbed.ts";

declare module "vitest" {
  export interface ProvidedContext {
    adminUrl: string;
  }
}

// `npm test` has already built the template (TEST_TEMPLATE_READY); a bare `vitest` builds it here.
export default async function setup(project: TestProject) {
  const adminUrl = await ensureTestServer((m) => console.error(`[testbed] ${m}`));
  if (!process.env.TEST_TEMPLATE_READY) await prepareTemplate(adminUrl);
  project.provide("adminUrl", adminUrl);
}
