// The parser as a lawyer reads its output: every entity decoded, structure kept, citation metadata,
// and the files already in Storage (legifrance-document/v1) still parsing.
import { readdirSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { htmlToText } from "../packages/legifrance/html.ts";
import {
  documentHash,
  ENVELOPE_FORMAT,
  type LegalDocument,
  legifranceUrl,
  parseCollectedFile,
  toDate,
} from "../packages/legifrance/parser.ts";
import { sampleDocuments } from "../packages/testkit/legifrance-corpus.ts";

const envelope = (endpoint: string, id: string, data: unknown, fond: string | null = null, category = "cat") =>
  JSON.stringify({ format: ENVELOPE_FORMAT, id, category, fond, endpoint, data });

function parsed(text: string): LegalDocument {
  const r = parseCollectedFile(text);
  if (!r.ok) throw new Error(r.reason);
  return r.doc;
}

describe("htmlToText", () => {
  it("decodes every named, decimal and hex entity (the issue's input)", () => {
    expect(
      htmlToText(
        "le ma&icirc;tre ou l'acqu&eacute;reur … cause &eacute;trang&egrave;re, &#233;t&#xE9; &laquo;ok&raquo; &hellip;",
      ),
    )
      .toBe("le maître ou l'acquéreur … cause étrangère, été «ok» …");
    expect(
      htmlToText(
        "&oelig;uvre &OElig; &euro; &sect; &deg; n&#176; &#x2013; &rsquo; &amp;lt; &lt;b&gt; &quot;x&quot; &apos;y&#39;",
      ),
    )
      .toBe("œuvre Œ € § ° n° – ’ &lt; <b> \"x\" 'y'");
  });

  it("makes no-break spaces plain spaces and collapses source whitespace", () => {
    expect(htmlToText("<p>  article\n   premier&nbsp;;\u00a0suite&#8239;:   fin </p>")).toBe(
      "article premier ; suite : fin",
    );
  });

  it("keeps paragraphs, list items with markers, nested and ordered lists, and <br>", () => {
    const html = "<p>Premier alin&eacute;a.</p><p>Il comprend&nbsp;:</p>" +
      "<ul><li><p>un&nbsp;;</p></li><li>deux, dont&nbsp;:<ol><li>a</li><li>b</li></ol></li><li>trois.</li></ul>" +
      "<p>Ligne 1<br>Ligne 2<br/>Ligne 3</p>";
    expect(htmlToText(html)).toBe(
      "Premier alinéa.\n\nIl comprend :\n\n- un ;\n- deux, dont :\n  1. a\n  2. b\n- trois.\n\nLigne 1\nLigne 2\nLigne 3",
    );
  });

  it("makes each table row a line with its cells separated", () => {
    const html = "<p>Bar&egrave;me&nbsp;:</p><table><thead><tr><th>Tranche</th><th>Taux</th></tr></thead>" +
      "<tbody><tr><td><p>Jusqu'&agrave; 11&nbsp;294&nbsp;&euro;</p></td><td>0&nbsp;%</td></tr>" +
      "<tr><td>Au-del&agrave;</td><td></td></tr></tbody></table><p>Apr&egrave;s.</p>";
    expect(htmlToText(html)).toBe("Barème :\n\nTranche | Taux\nJusqu'à 11 294 € | 0 %\nAu-delà |\n\nAprès.");
  });

  it("drops scripts, styles and comments, and survives broken markup", () => {
    expect(
      htmlToText("<style>p{color:red}</style><p>a<!-- commentaire --> b</p><script>alert('x')</script><p>c &amp; d"),
    ).toBe("a b\n\nc & d");
    expect(htmlToText("<p>texte <b>non ferm&eacute; <i>du tout")).toBe("texte non fermé du tout");
    expect(htmlToText("")).toBe("");
  });
});

describe("one real-shaped answer per consult endpoint", () => {
  it("getArticle (code article): text from texteHtml with its list, and the citation metadata", () => {
    const doc = parsed(envelope(
      "getArticle",
      "LEGIARTI000006438937",
      {
        executionTime: 11,
        article: {
          id: "LEGIARTI000006438937",
          cid: "LEGIARTI000006438937",
          num: "1792",
          etat: "VIGUEUR",
          texte: "Tout constructeur d'un ouvrage est responsable de plein droit, envers le ma&icirc;tre ...",
          texteHtml:
            "<p>Tout constructeur d'un ouvrage est responsable de plein droit, envers le ma&icirc;tre ou l'acqu&eacute;reur " +
            "de l'ouvrage.</p><p>Exceptions&nbsp;:</p><ul><li>cause &eacute;trang&egrave;re&nbsp;;</li><li>fait du ma&icirc;tre.</li></ul>",
          dateDebut: 283996800000,
          dateFin: 32472144000000,
          textTitles: [{
            id: "LEGITEXT000006070721",
            cid: "LEGITEXT000006070721",
            titre: "Code civil",
            titreLong: "Code civil (version consolid&eacute;e)",
          }],
          context: {
            titreTxt: [{ cid: "LEGITEXT000006070721", titre: "Code civil" }],
            titresTM: [{ id: "LEGISCTA1", titre: "Section 3" }],
          },
          fullSectionsTitre:
            "Livre III : Des diff&eacute;rentes mani&egrave;res > Section 3 : Des devis et des march&eacute;s",
          sectionParentTitre: "Section 3 : Des devis et des marchés",
          lienModifications: [
            {
              textCid: "JORFTEXT000000522207",
              textTitle: "Loi n&#176;78-12 du 4 janvier 1978 - art. 1",
              linkType: "MODIFIE",
              linkOrientation: "cible",
              articleNum: "1",
              datePubliTexte: 252806400000,
            },
            { textCid: "../x", textTitle: "Ordonnance", linkType: "CREATION", dateDebutCible: "2016-10-01" },
          ],
        },
      },
      "CODE_DATE",
      "codes",
    ));
    expect(doc).toMatchObject({
      doc_type: "article",
      title: "Code civil - Article 1792",
      number: "1792",
      legal_status: "VIGUEUR",
      start_date: "1979-01-01",
      end_date: null,
      parent_id: "LEGITEXT000006070721",
      parent_title: "Code civil",
      parent_title_long: "Code civil (version consolidée)",
      section_path: "Livre III : Des différentes manières > Section 3 : Des devis et des marchés",
      url: "https://www.legifrance.gouv.fr/codes/article_lc/LEGIARTI000006438937",
      modifications: [
        {
          title: "Loi n°78-12 du 4 janvier 1978 - art. 1",
          link_type: "MODIFIE",
          text_id: "JORFTEXT000000522207",
          article_num: "1",
          date: "1978-01-05",
        },
        { title: "Ordonnance", link_type: "CREATION", text_id: null, article_num: null, date: "2016-10-01" },
      ],
    });
    expect(doc.content).toBe(
      "Tout constructeur d'un ouvrage est responsable de plein droit, envers le maître ou l'acquéreur de l'ouvrage.\n\n" +
        "Exceptions :\n\n- cause étrangère ;\n- fait du maître.",
    );
  });

  it("drops NUL characters (PostgreSQL text cannot hold them) from every string of the API's answer", () => {
    const doc = parsed(envelope("getArticle", "LEGIARTI000000000042", {
      article: {
        id: "LEGIARTI000000000042",
        num: "4\u00002",
        etat: "VIG\u0000UEUR",
        texte: "Le bail\u0000 est conclu.",
      },
    }));
    expect(JSON.stringify(doc)).not.toContain("\\u0000");
    expect(doc).toMatchObject({ number: "42", legal_status: "VIGUEUR", content: "Le bail est conclu." });
  });

  it("getArticle without texteHtml falls back to texte, decoded; a LODA article links under /loda", () => {
    const doc = parsed(envelope(
      "getArticle",
      "LEGIARTI000006419300",
      {
        article: {
          id: "LEGIARTI000006419300",
          num: "3",
          texte: "L&#39;&eacute;tat est d&eacute;fini.",
          texteHtml: null,
          etat: "ABROGE",
          dateDebut: "2004-06-22T00:00:00.000+0000",
          dateFin: "2010-01-01",
        },
      },
      "LODA_DATE",
      "lois",
    ));
    expect(doc).toMatchObject({
      content: "L'état est défini.",
      title: "Article 3",
      legal_status: "ABROGE",
      start_date: "2004-06-22",
      end_date: "2010-01-01",
      url: "https://www.legifrance.gouv.fr/loda/article_lc/LEGIARTI000006419300",
      section_path: null,
      modifications: null,
    });
  });

  it("jorf (JORF text): articles in order, entities decoded, a list kept", () => {
    const doc = parsed(envelope(
      "jorf",
      "JORFTEXT000000465978",
      {
        id: "JORFTEXT000000465978",
        title: "D&eacute;cret n&#176; 2002-1 du 2 janvier 2002",
        nor: "JUSX0200001D",
        textNumber: "2002-1",
        etat: "VIGUEUR",
        dateTexte: 1009929600000,
        dateDebutVersion: 1009929600000,
        dateFinVersion: 32472144000000,
        articles: [
          {
            id: "JORFARTI000002113456",
            num: "1",
            content: "<p>Sont publi&eacute;s&nbsp;:</p><ul><li>les lois&nbsp;;</li><li>les d&eacute;crets.</li></ul>",
          },
          {
            id: "JORFARTI000002113457",
            num: "2",
            content: "<p>Le pr&eacute;sent d&eacute;cret entre en vigueur le lendemain.</p>",
          },
        ],
        sections: [{
          title: "Titre II &#8211; Dispositions finales",
          articles: [{ id: "JORFARTI000002113458", num: "3", content: "<p>Ex&eacute;cution.</p>" }],
        }],
      },
      "JORF",
      "jorf",
    ));
    expect(doc).toMatchObject({
      doc_type: "text",
      title: "Décret n° 2002-1 du 2 janvier 2002",
      number: "2002-1",
      start_date: "2002-01-02",
      end_date: null,
      url: "https://www.legifrance.gouv.fr/jorf/id/JORFTEXT000000465978",
    });
    expect(doc.content).toBe(
      "Article 1\nSont publiés :\n\n- les lois ;\n- les décrets.\n\nArticle 2\nLe présent décret entre en vigueur le lendemain.\n\n" +
        "Titre II – Dispositions finales\n\nArticle 3\nExécution.",
    );
  });

  it("kaliText (collective agreement): a table of minimum wages, row by row", () => {
    const doc = parsed(envelope(
      "kaliText",
      "KALITEXT000005680010",
      {
        id: "KALITEXT000005680010",
        title: "Convention collective nationale des bureaux d'&eacute;tudes techniques",
        etat: "VIGUEUR_ETEN",
        dateTexte: "1987-12-15",
        articles: [{
          id: "KALIARTI000005781234",
          num: "1",
          content:
            "<p>Salaires minima&nbsp;:</p><table><tr><th>Coefficient</th><th>Salaire (&euro;)</th></tr><tr><td>230</td><td>1&nbsp;850</td></tr></table>",
        }],
      },
      "KALI",
      "conventions",
    ));
    expect(doc).toMatchObject({
      title: "Convention collective nationale des bureaux d'études techniques",
      legal_status: "VIGUEUR_ETEN",
      start_date: "1987-12-15",
      url: "https://www.legifrance.gouv.fr/conv_coll/id/KALITEXT000005680010",
    });
    expect(doc.content).toBe("Article 1\nSalaires minima :\n\nCoefficient | Salaire (€)\n230 | 1 850");
  });

  it("juri (court decision): texteHtml with <br> and entities", () => {
    const doc = parsed(envelope(
      "juri",
      "JURITEXT000007022837",
      {
        text: {
          id: "JURITEXT000007022837",
          titre: "Cour de cassation, civile, Chambre civile 2, 14 juin 2007, 06-14.557",
          texte: "plain fallback",
          texteHtml: "<div>R&Eacute;PUBLIQUE FRAN&Ccedil;AISE<br/><br/>AU NOM DU PEUPLE FRAN&Ccedil;AIS<br/>" +
            "<p>Attendu que la responsabilit&eacute; du gardien est engag&eacute;e&nbsp;;</p><p>PAR CES MOTIFS&nbsp;: CASSE</p></div>",
          dateTexte: 1181779200000,
          numeroAffaire: ["06-14.557"],
          juridiction: "Cour de cassation",
          solution: "Cassation",
          etat: null,
        },
      },
      "JURI",
      "jurisprudence",
    ));
    expect(doc).toMatchObject({
      doc_type: "decision",
      number: "06-14.557",
      legal_status: "Cassation",
      start_date: "2007-06-14",
      parent_title: "Cour de cassation",
      url: "https://www.legifrance.gouv.fr/juri/id/JURITEXT000007022837",
    });
    expect(doc.content).toBe(
      "RÉPUBLIQUE FRANÇAISE\n\nAU NOM DU PEUPLE FRANÇAIS\n\nAttendu que la responsabilité du gardien est engagée ;\n\nPAR CES MOTIFS : CASSE",
    );
  });

  it("cnil (deliberation): numeric entities and a list of decisions", () => {
    const doc = parsed(envelope(
      "cnil",
      "CNILTEXT000017652361",
      {
        text: {
          id: "CNILTEXT000017652361",
          titre: "D&#233;lib&#233;ration n&#176; 2007-001",
          texteHtml:
            "<p>La Commission nationale de l&#39;informatique et des libert&#xe9;s&nbsp;:</p><ol><li>&#233;met un avis favorable&nbsp;;</li>" +
            "<li>demande que la dur&#233;e de conservation soit limit&#233;e.</li></ol>",
          dateTexte: "2007-01-11",
          num: "2007-001",
          juridiction: "CNIL",
        },
      },
      "CNIL",
      "cnil",
    ));
    expect(doc).toMatchObject({
      title: "Délibération n° 2007-001",
      number: "2007-001",
      url: "https://www.legifrance.gouv.fr/cnil/id/CNILTEXT000017652361",
    });
    expect(doc.content).toBe(
      "La Commission nationale de l'informatique et des libertés :\n\n1. émet un avis favorable ;\n2. demande que la durée de conservation soit limitée.",
    );
  });
});

describe("dates, URLs, hash", () => {
  it("reads epoch ms (also negative, also as digits) and ISO dates; 2999-01-01 is no end", () => {
    expect(toDate(1475280000000)).toBe("2016-10-01");
    expect(toDate(Date.UTC(1804, 1, 19))).toBe("1804-02-19");
    expect(toDate("1475280000000")).toBe("2016-10-01");
    expect(toDate("2016-10-01")).toBe("2016-10-01");
    expect(toDate("2016-10-01T00:00:00.000+0000")).toBe("2016-10-01");
    expect(toDate("2016-10-01T00:00:00Z")).toBe("2016-10-01");
    expect(toDate("2016-10-01T00:00:00.000+0200")).toBe("2016-10-01"); // the day as written, whatever the offset
    expect(toDate(Date.UTC(2016, 8, 30, 22))).toBe("2016-10-01"); // Paris midnight in epoch ms
    expect(toDate(Date.UTC(2016, 0, 31, 23))).toBe("2016-02-01"); // Paris midnight in winter
    expect(toDate("2016-13-45")).toBeNull();
    expect(toDate("2999-01-01")).toBeNull();
    expect(toDate(32472144000000)).toBeNull();
    expect(toDate("not a date")).toBeNull();
    expect(toDate(null)).toBeNull();
  });

  it("builds URLs from validated ids only", () => {
    expect(legifranceUrl("KALIARTI000005781234")).toBe(
      "https://www.legifrance.gouv.fr/conv_coll/article/KALIARTI000005781234",
    );
    expect(legifranceUrl("JORFARTI000002113456")).toBe(
      "https://www.legifrance.gouv.fr/jorf/article_jo/JORFARTI000002113456",
    );
    expect(legifranceUrl("LEGIARTI000006438937/../x")).toBeNull();
    expect(legifranceUrl("ABCDEFGH000000000001")).toBeNull();
  });

  it("hashes the parsed result: same input same hash, any change of output a new one", () => {
    const d = sampleDocuments().find((x) => x.id === "LEGIARTI000006438937")!;
    const file = envelope(d.consult.endpoint, d.id, d.consult.response, d.fond, "codes");
    const a = parsed(file);
    expect(documentHash(parsed(file))).toBe(documentHash(a));
    expect(documentHash({ ...a, content: a.content + " " })).not.toBe(documentHash(a));
    expect(documentHash({ ...a, section_path: null })).not.toBe(documentHash(a));
  });
});

describe("files already in Storage (legifrance-document/v1) keep parsing", () => {
  const dir = new URL("./fixtures/legifrance-v1/", import.meta.url);
  const files = readdirSync(dir).filter((f) => f.endsWith(".json"));

  it("every v1 file written by the collector before this change parses, with decoded text", () => {
    expect(files.length).toBe(7);
    for (const f of files) {
      const text = readFileSync(new URL(f, dir), "utf8");
      expect(JSON.parse(text).format).toBe("legifrance-document/v1");
      const doc = parsed(text);
      expect(doc.id).toBe(f.replace(/\.json$/, ""));
      expect(doc.content.length).toBeGreaterThan(20);
      expect(doc.content).not.toMatch(/&[a-z#0-9]+;|<\/?[a-z]/i);
      expect(doc.url).toMatch(/^https:\/\/www\.legifrance\.gouv\.fr\//);
    }
    const art = parsed(readFileSync(new URL("LEGIARTI000032041571.json", dir), "utf8"));
    expect(art).toMatchObject({
      title: "Code civil - Article 1240",
      start_date: "2016-10-01",
      end_date: null,
      section_path: "De la responsabilité extracontractuelle en général",
    });
  });

  it("citation fields of an unexpected type are dropped, never a reason to refuse a file", () => {
    const text = readFileSync(new URL("LEGIARTI000032041571.json", dir), "utf8");
    const env = JSON.parse(text);
    Object.assign(env.data.article, {
      fullSectionsTitre: 42,
      sectionParentTitre: { x: 1 },
      lienModifications: "MODIFIE",
    });
    env.data.article.context.titresTM = [{ id: 1, titre: ["x"] }];
    expect(parsed(JSON.stringify(env))).toMatchObject({ number: "1240", section_path: null, modifications: null });
    env.data.article.lienModifications = [{ textCid: 7, textTitle: "Loi", linkType: null, dateDebutCible: { y: 1 } }];
    expect(parsed(JSON.stringify(env)).modifications).toEqual([{
      title: "Loi",
      link_type: null,
      text_id: null,
      article_num: null,
      date: null,
    }]);
  });

  it("an unknown envelope format is refused with the reason, not misread", () => {
    const text = readFileSync(new URL(files[0], dir), "utf8").replace(
      "legifrance-document/v1",
      "legifrance-document/v9",
    );
    expect(parseCollectedFile(text)).toMatchObject({ ok: false, reason: expect.stringMatching(/format/) });
  });
});
