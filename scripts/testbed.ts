// Finds or provisions the test PostgreSQL and rebuilds the migrated template; prints the admin URL.
import { ensureTestServer, prepareTemplate } from "../packages/testkit/testbed.ts";

const adminUrl = await ensureTestServer((m) => console.error(`[testbed] ${m}`));
const t0 = performance.now();
await prepareTemplate(adminUrl);
console.error(`[testbed] migrated template in ${Math.round(performance.now() - t0)} ms`);
console.log(adminUrl);
