// `npm ci` installs exactly what package-lock.json lists and refuses a lock that lacks any optional
// dependency a package declares ("Missing: @deno/darwin-arm64@… from lock file"), on every platform,
// even one that would never install it. npm can write such a lock when it updates one from an existing
// node_modules, keeping only this machine's binaries. This test reads the lock the way npm ci does:
// every declared optional dependency must resolve, by Node's lookup from the declaring package, to an
// entry of the lock, so a lock made on one OS still installs on the others.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

interface LockEntry {
  version?: string;
  optionalDependencies?: Record<string, string>;
  os?: string[];
  cpu?: string[];
}

const lock = JSON.parse(readFileSync(fileURLToPath(new URL("../package-lock.json", import.meta.url)), "utf8")) as {
  lockfileVersion: number;
  packages: Record<string, LockEntry>;
};

/** The lock entry Node's lookup reaches for `name` from the package installed at `from`. */
function resolveFrom(from: string, name: string): string | undefined {
  let dir = from;
  for (;;) {
    const candidate = dir ? `${dir}/node_modules/${name}` : `node_modules/${name}`;
    if (lock.packages[candidate]) return candidate;
    if (!dir) return undefined;
    const cut = dir.lastIndexOf("/node_modules/");
    dir = cut < 0 ? "" : dir.slice(0, cut);
  }
}

describe("package-lock.json", () => {
  it("is a lockfileVersion 3 lock, the format npm ci reads here", () => {
    expect(lock.lockfileVersion).toBe(3);
  });

  it("carries every platform's optional binaries (deno, rollup, esbuild, the Supabase CLI…)", () => {
    const missing: string[] = [];
    let platformSpecific = 0;
    for (const [at, entry] of Object.entries(lock.packages)) {
      for (const name of Object.keys(entry.optionalDependencies ?? {})) {
        const found = resolveFrom(at, name);
        if (!found) missing.push(`${name} (optional dependency of ${at || "the root package"})`);
        else if (lock.packages[found].os || lock.packages[found].cpu) platformSpecific++;
      }
    }
    expect(missing).toEqual([]);
    // The check above must have had something to check: deno alone has six platform builds.
    expect(platformSpecific).toBeGreaterThanOrEqual(6);
  });

  it("has deno's build for each of Linux, macOS and Windows on x64 and arm64", () => {
    const builds = Object.entries(lock.packages)
      .filter(([at]) => at.startsWith("node_modules/@deno/"))
      .map(([, e]) => `${e.os?.join(",")}-${e.cpu?.join(",")}`)
      .sort();
    expect(builds).toEqual(["darwin-arm64", "darwin-x64", "linux-arm64", "linux-x64", "win32-arm64", "win32-x64"]);
  });
});
