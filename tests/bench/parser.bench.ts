// npm run bench:parser -- the Légifrance parser on its own (no database): htmlToText on texts from
// 10 KB to 4 MB (a long JORF text or code is megabytes; the conversion must stay linear), and
// parseCollectedFile on every hand-written sample of the stand-in. Writes .bench/parser.json, prints a table.
// Target: at least 1 MB/s of HTML at every size on the shared 2-core machine (a 1 MB text in under 1 s
// of CPU, inside an Edge Function's 2 s), and flat: throughput must not fall as texts grow.
import { mkdirSync, writeFileSync } from "node:fs";
import { htmlToText } from "../../packages/legifrance/html.ts";
import { ENVELOPE_FORMAT, parseCollectedFile } from "../../packages/legifrance/parser.ts";
import { sampleDocuments } from "../../packages/testkit/legifrance-corpus.ts";

const TARGET_MB_S = 1;
const unit =
  "<p>I. &#8211; Le pr&eacute;sent article s&#39;applique aux contrats conclus par le ma&icirc;tre de l'ouvrage&nbsp;:</p>" +
  "<ul><li>de bail&nbsp;;</li><li>de vente&nbsp;;</li><li>d'entreprise.</li></ul>" +
  "<table><tr><th>Tranche</th><th>Taux</th></tr><tr><td>Jusqu'&agrave; 11&nbsp;294&nbsp;&euro;</td><td>0&nbsp;%</td></tr></table>";

function best(f: () => void, rounds = 7): number {
  let min = Infinity;
  for (let i = 0; i < rounds; i++) {
    const t = performance.now();
    f();
    min = Math.min(min, performance.now() - t);
  }
  return min;
}

htmlToText(unit.repeat(2000)); // warm-up
const rows: { input: string; bytes: number; ms: number; mb_s: number; ok: boolean }[] = [];
for (const kb of [10, 100, 1000, 4000]) {
  const html = unit.repeat(Math.ceil((kb * 1000) / unit.length));
  const ms = best(() => htmlToText(html));
  const mbs = html.length / 1e6 / (ms / 1000);
  rows.push({
    input: `htmlToText ${kb} KB`,
    bytes: html.length,
    ms: +ms.toFixed(2),
    mb_s: +mbs.toFixed(1),
    ok: mbs >= TARGET_MB_S,
  });
}
const files = sampleDocuments().map((d) =>
  JSON.stringify({
    format: ENVELOPE_FORMAT,
    id: d.id,
    category: "c",
    fond: d.fond,
    endpoint: d.consult.endpoint,
    data: d.consult.response,
  })
);
const bytes = files.reduce((n, f) => n + f.length, 0);
const ms = best(() => {
  for (let i = 0; i < 100; i++) {
    for (const f of files) if (!parseCollectedFile(f).ok) throw new Error("sample did not parse");
  }
}) / 100;
rows.push({
  input: `parseCollectedFile ${files.length} samples`,
  bytes,
  ms: +ms.toFixed(3),
  mb_s: +(bytes / 1e6 / (ms / 1000)).toFixed(1),
  ok: true,
});

console.table(rows);
mkdirSync(".bench", { recursive: true });
writeFileSync(
  ".bench/parser.json",
  JSON.stringify({ at: new Date().toISOString(), target_mb_s: TARGET_MB_S, rows }, null, 2),
);
if (rows.some((r) => !r.ok)) {
  console.error(`below ${TARGET_MB_S} MB/s`);
  process.exit(1);
}
