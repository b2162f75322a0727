// Environments for `npm run kb`: a name resolves to <NAME>_DB_URL (and, for --files, <NAME>_URL plus
// <NAME>_SECRET_KEY or <NAME>_SERVICE_ROLE_KEY); `local` is the running local stack (.local/stack.json).
// Messages name an environment by its host and database, never by its URL or key.
import { z } from "zod";
import { localDataDir, readState } from "../connection/stack-state.ts";

export class KbError extends Error {
  constructor(message: string, readonly exitCode = 2) {
    super(message);
    this.name = "KbError";
  }
}

export interface KbEnvironment {
  name: string;
  dbUrl: string;
  /** Storage API base URL and a service key, when resolved for --files. */
  apiUrl?: string;
  serviceKey?: string;
  host: string;
  database: string;
  /** Loopback host (or the local stack): writes need no --yes. */
  isLocal: boolean;
  /** Supabase project ref, read from the host (db.<ref>.supabase.co) or the pooler user (postgres.<ref>). */
  projectRef: string | null;
}

const envName = z.string().regex(/^[A-Za-z][A-Za-z0-9_]{0,40}$/, "an environment name is letters, digits and _");
const dbUrl = z.string().url().refine((u) => /^postgres(ql)?:$/.test(new URL(u).protocol), "a postgres:// URL");
const httpUrl = z.string().url().refine((u) => /^https?:$/.test(new URL(u).protocol), "an http(s):// URL");

const LOOPBACK = new Set(["localhost", "127.0.0.1", "::1", "[::1]"]);

export function resolveEnvironment(
  nameIn: string,
  opts: { files?: boolean; env?: NodeJS.ProcessEnv; localDataDir?: string } = {},
): KbEnvironment {
  const env = opts.env ?? process.env;
  const parsed = envName.safeParse(nameIn);
  if (!parsed.success) throw new KbError(`unknown environment "${nameIn}": ${parsed.error.issues[0].message}`);
  const name = parsed.data.toLowerCase();
  const NAME = name.toUpperCase();
  let url: string | undefined;
  let apiUrl: string | undefined;
  let key: string | undefined;
  if (name === "local" && !env.LOCAL_DB_URL) {
    const { state, reason } = readState(opts.localDataDir ?? localDataDir(env));
    if (!state) {
      throw new KbError(
        `environment "local" is the running local stack, which is not running (${reason}); start it with npm start or set LOCAL_DB_URL`,
      );
    }
    url = state.dbUrl;
    apiUrl = state.apiUrl;
    key = state.serviceRoleKey;
  } else {
    url = env[`${NAME}_DB_URL`];
    if (!url) throw new KbError(`unknown environment "${name}": ${NAME}_DB_URL is not set`);
    apiUrl = env[`${NAME}_URL`];
    key = env[`${NAME}_SECRET_KEY`] || env[`${NAME}_SERVICE_ROLE_KEY`];
  }
  const checked = dbUrl.safeParse(url);
  if (!checked.success) throw new KbError(`${NAME}_DB_URL is not ${checked.error.issues[0].message}`);
  if (opts.files) {
    if (!apiUrl) throw new KbError(`--files needs ${NAME}_URL (the project's API URL) for environment "${name}"`);
    if (!httpUrl.safeParse(apiUrl).success) throw new KbError(`${NAME}_URL is not an http(s):// URL`);
    if (!key) {
      throw new KbError(`--files needs ${NAME}_SECRET_KEY or ${NAME}_SERVICE_ROLE_KEY for environment "${name}"`);
    }
  }
  const u = new URL(checked.data);
  const host = u.hostname;
  const user = decodeURIComponent(u.username);
  const ref = host.match(/^db\.([a-z0-9]{20})\.supabase\.co$/)?.[1] ?? user.match(/^postgres\.([a-z0-9]{20})$/)?.[1] ??
    null;
  return {
    name,
    dbUrl: checked.data,
    apiUrl: opts.files ? apiUrl : undefined,
    serviceKey: opts.files ? key : undefined,
    host,
    database: decodeURIComponent(u.pathname.replace(/^\//, "")) || "postgres",
    isLocal: LOOPBACK.has(host),
    projectRef: ref,
  };
}
