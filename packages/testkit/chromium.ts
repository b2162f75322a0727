// The browser for the dashboard test: Debian's `chromium`, found on the PATH or installed here the way
// the test bed provisions PostgreSQL (as root on Debian, idempotently), else a clear error. Nothing
// downloads a browser build of its own: puppeteer-core only drives this one.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";

const CANDIDATES = ["/usr/bin/chromium", "/usr/bin/chromium-browser"];

function found(): string | null {
  if (process.env.CHROMIUM_PATH && existsSync(process.env.CHROMIUM_PATH)) return process.env.CHROMIUM_PATH;
  return CANDIDATES.find((p) => existsSync(p)) ?? null;
}

/** The path of a chromium executable; installs Debian's package first when it is missing and we may. */
export function ensureChromium(log: (m: string) => void = () => {}): string {
  const have = found();
  if (have) return have;
  if (process.getuid?.() === 0 && existsSync("/etc/debian_version")) {
    log("installing Debian's chromium (first run only)");
    const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
    execFileSync("apt-get", ["update", "-qq"], { stdio: ["ignore", 2, 2], env });
    execFileSync("apt-get", ["install", "-y", "-qq", "chromium"], { stdio: ["ignore", 2, 2], env });
    const after = found();
    if (after) return after;
    throw new Error("apt-get installed chromium but no chromium executable was found in /usr/bin");
  }
  throw new Error(
    [
      "No chromium for the dashboard's browser test.",
      "Run the tests as root on Debian (they install Debian's `chromium` package themselves),",
      "or install it (`apt-get install chromium`), or set CHROMIUM_PATH to a Chromium/Chrome executable.",
    ].join("\n"),
  );
}
