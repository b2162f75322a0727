// postinstall: records which package-lock.json node_modules was installed from, so that
// scripts/ensure-deps.sh does not install again after `npm ci` or `npm install`.
import { createHash } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";

if (existsSync("node_modules") && existsSync("package-lock.json")) {
  const hash = createHash("sha256").update(readFileSync("package-lock.json")).digest("hex");
  writeFileSync("node_modules/.deps-stamp", `${hash}\n`);
}
