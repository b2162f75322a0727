// Which functions exist and whether the gateway checks their JWT (supabase/config.toml's
// [functions.<name>] verify_jwt, default true as on the platform). Only the keys the stack needs are
// read; a full TOML parser would be a dependency for two lines of syntax.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

export const FUNCTION_NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/;

export function listFunctions(functionsDir: string): string[] {
  if (!existsSync(functionsDir)) return [];
  return readdirSync(functionsDir, { withFileTypes: true })
    .filter((d) => d.isDirectory() && FUNCTION_NAME.test(d.name) && existsSync(join(functionsDir, d.name, "index.ts")))
    .map((d) => d.name)
    .sort();
}

/** verify_jwt per function from config.toml; functions not mentioned are absent (meaning true). */
export function readVerifyJwt(configFile: string): Map<string, boolean> {
  const out = new Map<string, boolean>();
  if (!existsSync(configFile)) return out;
  let section: string | null = null;
  for (const raw of readFileSync(configFile, "utf8").split(/\r?\n/)) {
    const line = raw.replace(/\s+#.*$/, "").trim();
    const header = /^\[functions\.("?)([A-Za-z0-9_-]+)\1\]$/.exec(line);
    if (header) {
      section = header[2];
      continue;
    }
    if (line.startsWith("[")) {
      section = null;
      continue;
    }
    const kv = /^verify_jwt\s*=\s*(true|false)$/.exec(line);
    if (section && kv) out.set(section, kv[1] === "true");
  }
  return out;
}

/** The env file of function secrets (KEY=value lines, # comments, optional quotes). */
export function readEnvFile(file: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (!existsSync(file)) return out;
  for (const raw of readFileSync(file, "utf8").split(/\r?\n/)) {
    const m = /^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$/.exec(raw);
    if (!m || raw.trim().startsWith("#")) continue;
    let v = m[2];
    if ((v.startsWith('"') && v.endsWith('"')) || (v.startsWith("'") && v.endsWith("'"))) v = v.slice(1, -1);
    out[m[1]] = v;
  }
  return out;
}
