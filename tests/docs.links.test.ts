// README is the guide and docs/ holds one page per topic: every relative link between them must land on
// a file that exists and, when it names an anchor, on a heading of that file (GitHub's heading ids).
// README must link every page of docs/ and stay short enough to read as a guide.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const repo = fileURLToPath(new URL("..", import.meta.url));
const pages = [
  join(repo, "README.md"),
  ...readdirSync(join(repo, "docs")).filter((f) => f.endsWith(".md")).map((f) => join(repo, "docs", f)),
];

/** The text outside fenced code blocks: a `#` line inside a shell block is not a heading. */
function prose(markdown: string): string {
  return markdown.split(/^```.*$/m).filter((_, i) => i % 2 === 0).join("\n");
}

/** GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens, -1, -2 for repeats. */
function anchors(file: string): Set<string> {
  const seen = new Map<string, number>();
  const ids = new Set<string>();
  for (const m of prose(readFileSync(file, "utf8")).matchAll(/^#{1,6}\s+(.+?)\s*#*$/gm)) {
    const base = m[1].toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, "").replace(/\s/g, "-");
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    ids.add(n === 0 ? base : `${base}-${n}`);
  }
  return ids;
}

/** Relative links of a page: [text](target), without web addresses or mail links. */
function links(file: string): string[] {
  const targets = [...prose(readFileSync(file, "utf8")).matchAll(/\]\(([^)\s]+)\)/g)].map((m) => m[1]);
  return targets.filter((t) => !/^[a-z][a-z0-9+.-]*:/i.test(t));
}

describe("docs: README and docs/ link to one another", () => {
  it("every relative link resolves, anchors included", () => {
    const broken: string[] = [];
    for (const page of pages) {
      for (const link of links(page)) {
        const [path, anchor] = link.split("#");
        const target = path ? resolve(dirname(page), path) : page;
        const where = `${relative(repo, page)} -> ${link}`;
        if (!existsSync(target)) broken.push(`${where}: no such file`);
        else if (anchor !== undefined && target.endsWith(".md") && !anchors(target).has(anchor)) {
          broken.push(`${where}: no such heading`);
        }
      }
    }
    expect(broken).toEqual([]);
  });

  it("README links every page of docs/ and stays a short guide", () => {
    const readme = join(repo, "README.md");
    const linked = new Set(links(readme).map((l) => resolve(repo, l.split("#")[0])));
    const unlinked = pages.filter((p) => p !== readme && !linked.has(p)).map((p) => relative(repo, p));
    expect(unlinked).toEqual([]);
    expect(readFileSync(readme, "utf8").split("\n").length).toBeLessThanOrEqual(150);
  });
});
