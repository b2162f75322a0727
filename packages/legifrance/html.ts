// Légifrance HTML (texteHtml, article contents) to the plain text a lawyer reads and full text indexes.
// htmlparser2 tokenizes the markup and decodes every entity (named, decimal, hex) with `entities`;
// this module only decides where lines break:
// - paragraphs, headings, lists and tables are separated by a blank line;
// - each list item is a line with a marker ("- ", or "1. " in an ordered list), nested lists indented;
// - each table row is a line, its cells separated by " | ";
// - <br> is a line break; scripts, styles and comments are dropped.
// No-break spaces (French typography puts them before ; : ? ! and inside numbers) become plain spaces,
// so "maître ;" tokenizes like "maître ;" typed on a keyboard.
import { Parser } from "htmlparser2";
import { decodeHTML } from "entities";

const SKIPPED = new Set(["script", "style", "noscript", "template", "head", "title", "iframe", "object"]);
const PARAGRAPH = new Set([
  "p",
  "h1",
  "h2",
  "h3",
  "h4",
  "h5",
  "h6",
  "blockquote",
  "pre",
  "table",
  "ul",
  "ol",
  "dl",
  "section",
  "article",
  "header",
  "footer",
  "figure",
  "hr",
  "address",
]);
const LINE = new Set(["div", "dt", "dd", "caption", "center", "tr", "li"]);
const CELL = new Set(["td", "th"]);

function spaces(s: string): string {
  return s.replace(/[\u00a0\u202f\u2007]/g, " ");
}

/** Plain text with entities (the API's `texte` fields, titles): decoded, no-break spaces made plain. */
export function decodeText(s: string): string {
  return spaces(decodeHTML(s)).replace(/[ \t]+\n/g, "\n").trim();
}

/** HTML to plain text that keeps paragraphs, list items, table rows and line breaks. */
export function htmlToText(html: string): string {
  // Output as pieces, never rescanned: a JORF text can be megabytes, and re-reading the whole string
  // on every tag made the conversion quadratic.
  const out: string[] = [];
  let pending = 0; // newlines owed before the next text
  let skip = 0;
  let pre = 0;
  let cell = 0; // depth of table cells: breaks inside a cell become spaces, so a row stays one line
  let cellsInRow = 0;
  let afterMarker = false; // right after a list marker, a <p> inside the <li> must not break the line
  const lists: { ordered: boolean; n: number }[] = [];
  let items = 0; // depth of open <li>

  const last = () => {
    for (let i = out.length - 1; i >= 0; i--) if (out[i]) return out[i][out[i].length - 1];
    return "";
  };
  const trimEnd = () => {
    while (out.length) {
      const t = out[out.length - 1].replace(/[ \t]+$/, "");
      if (t) return void (out[out.length - 1] = t);
      out.pop();
    }
  };
  const brk = (n: number) => {
    if (cell) return void (/\S/.test(last()) && out.push(" "));
    if (afterMarker || !out.length) return;
    // Inside a list item, paragraphs are lines: the item stays one block.
    pending = Math.max(pending, items > 0 ? 1 : n);
  };
  const emit = (s: string) => {
    if (pending) {
      trimEnd();
      out.push("\n".repeat(pending));
      pending = 0;
    }
    out.push(s);
  };

  const parser = new Parser({
    onopentag(name) {
      if (SKIPPED.has(name)) return void skip++;
      if (skip) return;
      if (name === "pre") pre++;
      if (name === "br") {
        if (cell) return brk(1);
        if (pending) pending = Math.max(pending, 1);
        else if (out.length) {
          trimEnd();
          out.push("\n");
        }
        return;
      }
      if (name === "ul" || name === "ol") {
        brk(lists.length ? 1 : 2);
        afterMarker = false;
        lists.push({ ordered: name === "ol", n: 0 });
        return;
      }
      if (name === "li") {
        afterMarker = false;
        brk(1);
        const list = lists.at(-1);
        const marker = list?.ordered ? `${++list.n}. ` : "- ";
        emit("  ".repeat(Math.max(lists.length - 1, 0)) + marker);
        afterMarker = true;
        items++;
        return;
      }
      if (name === "tr") {
        brk(1);
        cellsInRow = 0;
        return;
      }
      if (CELL.has(name)) {
        if (cellsInRow++ > 0) emit(" | ");
        else if (pending || !out.length) emit("");
        cell++;
        return;
      }
      if (PARAGRAPH.has(name)) brk(2);
      else if (LINE.has(name)) brk(1);
    },
    ontext(raw) {
      if (skip) return;
      let s = spaces(raw);
      if (!pre) s = s.replace(/\s+/g, " ");
      const end = last();
      if (!pre && (pending || end === "" || end === "\n" || end === " ")) s = s.replace(/^ /, "");
      if (!s) return;
      afterMarker = false;
      emit(s);
    },
    onclosetag(name) {
      if (SKIPPED.has(name)) return void (skip = Math.max(skip - 1, 0));
      if (skip) return;
      if (name === "pre") pre = Math.max(pre - 1, 0);
      if (name === "ul" || name === "ol") {
        lists.pop();
        afterMarker = false;
        return brk(lists.length ? 1 : 2);
      }
      if (CELL.has(name)) {
        cell = Math.max(cell - 1, 0);
        trimEnd();
        return;
      }
      if (name === "li") {
        afterMarker = false;
        items = Math.max(items - 1, 0);
        return brk(1);
      }
      if (PARAGRAPH.has(name)) brk(2);
      else if (LINE.has(name)) brk(1);
    },
  }, { decodeEntities: true, lowerCaseTags: true });
  parser.write(html);
  parser.end();

  return out.join("")
    .split("\n").map((l) => l.replace(/[ \t]+$/, "")).join("\n")
    .replace(/\n{3,}/g, "\n\n")
    .trim();
}
