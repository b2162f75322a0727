// The stand-in's corpus: a few documents written for this project in the shapes the Légifrance API
// returns, plus deterministic generated ones so benchmarks have enough volume. SAMPLE DATA: the ids of
// generated documents start at 9000... so they can never be mistaken for real Légifrance ids.

export type Fond = "CODE_DATE" | "LODA_DATE" | "JURI" | "JORF" | "CNIL" | "KALI";

export interface CorpusDocument {
  id: string;
  fond: Fond;
  /** Epoch ms: signature / decision date, used for the "newest first" sorts. */
  date: number;
  title: string;
  /** The search result as /search returns it (one entry of `results`). */
  searchResult: Record<string, unknown>;
  /** Which /consult endpoint serves it, and the body it answers with. */
  consult: { endpoint: string; response: Record<string, unknown> };
  text: string;
}

const OPEN_END = Date.UTC(2999, 0, 1); // Légifrance's "no end date" sentinel (2999-01-01)

function day(y: number, m: number, d: number): number {
  return Date.UTC(y, m - 1, d);
}

function ymd(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

/** What getArticle answers beyond the basics, as the real API does for some articles. */
interface ArticleExtras {
  /** texteHtml as served (entities, lists, tables); default `<p>${text}</p>`. */
  html?: string;
  /** dateDebut / dateFin as the API sends them when not epoch ms (ISO strings). */
  rawDateDebut?: number | string;
  rawDateFin?: number | string;
  codeTitleLong?: string;
  fullSectionsTitre?: string;
  sectionParentTitre?: string;
  lienModifications?: Record<string, unknown>[];
}

function articleDoc(
  a: {
    id: string;
    num: string;
    text: string;
    codeId: string;
    codeTitle: string;
    sectionId: string;
    sectionTitle: string;
    dateDebut: number;
    dateFin?: number;
    etat?: string;
    fond?: Fond;
  } & ArticleExtras,
): CorpusDocument {
  const etat = a.etat ?? "VIGUEUR";
  const fond = a.fond ?? "CODE_DATE";
  return {
    id: a.id,
    fond,
    date: a.dateDebut,
    title: `${a.codeTitle} - Article ${a.num}`,
    text: a.text,
    searchResult: {
      titles: [{
        id: `${a.codeId}_${ymd(a.dateDebut).split("-").reverse().join("-")}`,
        cid: a.codeId,
        title: a.codeTitle,
        legalStatus: etat,
      }],
      sections: [{
        id: a.sectionId,
        title: a.sectionTitle,
        legalStatus: etat,
        extracts: [{
          id: a.id,
          num: a.num,
          legalStatus: etat,
          type: "articles",
          dateVersion: a.dateDebut,
          values: [a.text.slice(0, 120)],
        }],
      }],
      nature: fond === "CODE_DATE" ? "CODE" : "LOI",
      etat,
      date: a.dateDebut,
      origin: "LEGI",
    },
    consult: {
      endpoint: "getArticle",
      response: {
        executionTime: 12,
        dereferenced: false,
        article: {
          id: a.id,
          cid: a.id,
          num: a.num,
          texte: a.text,
          texteHtml: a.html ?? `<p>${a.text}</p>`,
          etat,
          dateDebut: a.rawDateDebut ?? a.dateDebut,
          dateFin: a.rawDateFin ?? a.dateFin ?? OPEN_END,
          type: "AUTONOME",
          nature: "Article",
          idTexte: null,
          textTitles: [{
            id: a.codeId,
            cid: a.codeId,
            titre: a.codeTitle,
            titreLong: a.codeTitleLong ?? a.codeTitle,
            etat: "VIGUEUR",
            nature: "CODE",
          }],
          context: {
            titreTxt: [{ cid: a.codeId, titre: a.codeTitle, etat: "VIGUEUR" }],
            titresTM: [{ id: a.sectionId, titre: a.sectionTitle }],
          },
          ...(a.fullSectionsTitre ? { fullSectionsTitre: a.fullSectionsTitre } : {}),
          ...(a.sectionParentTitre ? { sectionParentTitre: a.sectionParentTitre } : {}),
          lienModifications: a.lienModifications ?? [],
          nota: "",
        },
      },
    },
  };
}

function juriDoc(a: {
  id: string;
  fond: "JURI" | "CNIL";
  title: string;
  text: string;
  date: number;
  juridiction: string;
  numero: string;
  solution?: string;
  html?: string;
}): CorpusDocument {
  const nature = a.fond === "CNIL" ? "DELIBERATION" : "ARRET";
  return {
    id: a.id,
    fond: a.fond,
    date: a.date,
    title: a.title,
    text: a.text,
    searchResult: {
      titles: [{ id: a.id, cid: a.id, title: a.title, legalStatus: null }],
      nature,
      date: a.date,
      origin: a.fond,
      text: a.text.slice(0, 200),
      sections: [],
    },
    consult: {
      endpoint: a.fond === "CNIL" ? "cnil" : "juri",
      response: {
        executionTime: 9,
        dereferenced: false,
        text: {
          id: a.id,
          cid: a.id,
          titre: a.title,
          texte: a.text,
          texteHtml: a.html ?? `<p>${a.text}</p>`,
          dateTexte: a.date,
          juridiction: a.juridiction,
          formation: a.fond === "JURI" ? "CHAMBRE_CIVILE_2" : null,
          numeroAffaire: [a.numero],
          num: a.numero,
          solution: a.solution ?? null,
          nature,
          natureJuridiction: a.fond === "JURI" ? "JUDICIAIRE" : "ADMINISTRATIVE",
          etat: null,
        },
      },
    },
  };
}

function consolidatedTextDoc(a: {
  id: string;
  fond: "JORF" | "KALI";
  title: string;
  nor?: string;
  textNumber?: string;
  date: number;
  articles: { id: string; num: string; content: string; html?: string }[];
}): CorpusDocument {
  const text = a.articles.map((x) => x.content).join("\n");
  const nature = a.fond === "JORF" ? "DECRET" : "CONVENTION COLLECTIVE";
  return {
    id: a.id,
    fond: a.fond,
    date: a.date,
    title: a.title,
    text,
    searchResult: {
      titles: [{ id: a.id, cid: a.id, title: a.title, legalStatus: "VIGUEUR" }],
      nature,
      date: a.date,
      datePublication: a.date + 86_400_000,
      origin: a.fond,
      nor: a.nor ?? null,
      sections: [],
    },
    consult: {
      endpoint: a.fond === "JORF" ? "jorf" : "kaliText",
      response: {
        executionTime: 20,
        dereferenced: false,
        id: a.id,
        cid: a.id,
        title: a.title,
        nor: a.nor ?? null,
        textNumber: a.textNumber ?? null,
        nature,
        etat: "VIGUEUR",
        dateTexte: a.date,
        dateDebutVersion: a.date,
        dateFinVersion: OPEN_END,
        visa: "",
        articles: a.articles.map((x, i) => ({
          id: x.id,
          num: x.num,
          content: x.html ?? `<p>${x.content}</p>`,
          etat: "VIGUEUR",
          intOrdre: i + 1,
        })),
        sections: [],
      },
    },
  };
}

/** Hand-written sample documents, one or two per fond. */
export function sampleDocuments(): CorpusDocument[] {
  return [
    articleDoc({
      id: "LEGIARTI000032041571",
      num: "1240",
      codeId: "LEGITEXT000006070721",
      codeTitle: "Code civil",
      sectionId: "LEGISCTA000032021488",
      sectionTitle: "De la responsabilité extracontractuelle en général",
      text:
        "Tout fait quelconque de l'homme, qui cause à autrui un dommage, oblige celui par la faute duquel il est arrivé à le réparer.",
      dateDebut: day(2016, 10, 1),
    }),
    articleDoc({
      id: "LEGIARTI000006419292",
      num: "1382",
      codeId: "LEGITEXT000006070721",
      codeTitle: "Code civil",
      sectionId: "LEGISCTA000006136352",
      sectionTitle: "Des délits et des quasi-délits",
      text:
        "Tout fait quelconque de l'homme, qui cause à autrui un dommage, oblige celui par la faute duquel il est arrivé, à le réparer.",
      dateDebut: day(1804, 2, 19),
      dateFin: day(2016, 10, 1),
      etat: "MODIFIE",
    }),
    articleDoc({
      id: "LEGIARTI000006900785",
      num: "L1221-1",
      codeId: "LEGITEXT000006072050",
      codeTitle: "Code du travail",
      sectionId: "LEGISCTA000006177836",
      sectionTitle: "Dispositions générales",
      text:
        "Le contrat de travail est soumis aux règles du droit commun. Il peut être établi selon les formes que les parties contractantes décident d'adopter.",
      dateDebut: day(2008, 5, 1),
    }),
    juriDoc({
      id: "JURITEXT000007022837",
      fond: "JURI",
      title: "Cour de cassation, civile, Chambre civile 2, 14 juin 2007",
      text:
        "Attendu que la responsabilité du gardien de la chose est engagée dès lors que la chose a été l'instrument du dommage ; que l'arrêt attaqué, qui retient le contraire, encourt la cassation.",
      date: day(2007, 6, 14),
      juridiction: "Cour de cassation",
      numero: "06-14.557",
      solution: "Cassation",
      html:
        "<div><p>Attendu que la responsabilit&eacute; du gardien de la chose est engag&eacute;e d&egrave;s lors que la chose a &eacute;t&eacute; " +
        "l&#39;instrument du dommage&nbsp;; que l&#x27;arr&ecirc;t attaqu&eacute;, qui retient le contraire, encourt la cassation.</p></div>",
    }),
    juriDoc({
      id: "CNILTEXT000017652361",
      fond: "CNIL",
      title: "Délibération n° 2007-001 portant avis sur un traitement de données",
      text:
        "La Commission nationale de l'informatique et des libertés émet un avis favorable au traitement, sous réserve que la durée de conservation des données soit limitée.",
      date: day(2007, 1, 11),
      juridiction: "CNIL",
      numero: "2007-001",
      html:
        "<p>La Commission nationale de l&#39;informatique et des libert&eacute;s &eacute;met un avis favorable au traitement,<br/>" +
        "sous r&eacute;serve que la dur&eacute;e de conservation des donn&eacute;es soit limit&eacute;e.</p>",
    }),
    consolidatedTextDoc({
      id: "JORFTEXT000000465978",
      fond: "JORF",
      title: "Décret n° 2002-1 relatif à la publication des textes",
      nor: "JUSX0200001D",
      textNumber: "2002-1",
      date: day(2002, 1, 2),
      articles: [
        {
          id: "JORFARTI000002113456",
          num: "1",
          content: "Les textes sont publiés au Journal officiel de la République française.",
          html:
            "<p>Les textes sont publi&eacute;s au <i>Journal officiel</i> de la R&eacute;publique fran&ccedil;aise.</p>",
        },
        {
          id: "JORFARTI000002113457",
          num: "2",
          content: "Le présent décret entre en vigueur le lendemain de sa publication.",
        },
      ],
    }),
    consolidatedTextDoc({
      id: "KALITEXT000005680010",
      fond: "KALI",
      title: "Convention collective nationale des bureaux d'études techniques",
      date: day(1987, 12, 15),
      articles: [{
        id: "KALIARTI000005781234",
        num: "1",
        content:
          "La présente convention règle les rapports entre les employeurs et les salariés des bureaux d'études techniques.",
        html: "<p>La pr&eacute;sente convention r&egrave;gle les rapports entre&nbsp;:</p>" +
          "<ul><li>les employeurs&nbsp;;</li><li>les salari&eacute;s des bureaux d&#39;&eacute;tudes techniques.</li></ul>",
      }],
    }),
    // The shapes the parser must get right for a citation: named and numeric entities, a list, a
    // table, ISO and epoch dates, ABROGE_DIFF and VIGUEUR_DIFF versions, lienModifications.
    articleDoc({
      id: "LEGIARTI000006438937",
      num: "1792",
      codeId: "LEGITEXT000006070721",
      codeTitle: "Code civil",
      codeTitleLong: "Code civil",
      sectionId: "LEGISCTA000006150268",
      sectionTitle: "Section 3 : Des devis et des marchés",
      fullSectionsTitre:
        "Livre III : Des différentes manières dont on acquiert la propriété > Titre VIII : Du contrat de louage > " +
        "Chapitre III : Du louage d'ouvrage et d'industrie > Section 3 : Des devis et des marchés",
      sectionParentTitre: "Section 3 : Des devis et des marchés",
      text:
        "Tout constructeur d'un ouvrage est responsable de plein droit, envers le maître ou l'acquéreur de l'ouvrage, des dommages, " +
        "même résultant d'un vice du sol, qui compromettent la solidité de l'ouvrage. Une telle responsabilité n'a point lieu si le " +
        "constructeur prouve que les dommages proviennent d'une cause étrangère, du fait du maître de l'ouvrage ou d'un vice apparent.",
      html:
        "<p>Tout constructeur d'un ouvrage est responsable de plein droit, envers le ma&icirc;tre ou l'acqu&eacute;reur de l'ouvrage, " +
        "des dommages, m&ecirc;me r&eacute;sultant d'un vice du sol, qui compromettent la solidit&eacute; de l'ouvrage.</p>\n" +
        "<p>Une telle responsabilit&eacute; n'a point lieu si le constructeur prouve que les dommages proviennent&nbsp;:</p>\n" +
        "<ul>\n<li>d'une cause &eacute;trang&egrave;re&nbsp;;</li>\n<li>du fait du ma&icirc;tre de l'ouvrage&nbsp;;</li>\n" +
        "<li>d'un &laquo;&#160;vice apparent&#160;&raquo; accept&#xE9; &#224; la r&#233;ception.</li>\n</ul><!-- fin -->",
      dateDebut: day(1979, 1, 1),
      rawDateDebut: "1979-01-01",
      rawDateFin: "2999-01-01",
      lienModifications: [{
        textCid: "JORFTEXT000000522207",
        textTitle: "Loi n&#176;78-12 du 4 janvier 1978 - art. 1",
        linkType: "MODIFIE",
        linkOrientation: "cible",
        articleNum: "1",
        natureText: "LOI",
        datePubliTexte: "1978-01-05",
        dateDebutCible: "1979-01-01",
      }],
    }),
    articleDoc({
      id: "LEGIARTI000048831929",
      num: "197",
      codeId: "LEGITEXT000006069577",
      codeTitle: "Code général des impôts",
      codeTitleLong: "Code général des impôts, CGI",
      sectionId: "LEGISCTA000006179573",
      sectionTitle: "Calcul de l'impôt",
      sectionParentTitre: "1 : Calcul de l'impôt",
      etat: "ABROGE_DIFF",
      text: "I. – L'impôt est calculé en appliquant à la fraction de chaque part de revenu le taux du barème.",
      html:
        "<p>I. &#8211; En ce qui concerne les contribuables vis&eacute;s &agrave; l'article 4 B, l'imp&ocirc;t est calcul&eacute; " +
        "en appliquant &agrave; la fraction de chaque part de revenu le taux de&nbsp;:</p>" +
        "<table><tbody><tr><th>Fraction du revenu imposable (une part)</th><th>Taux</th></tr>" +
        "<tr><td>N'exc&eacute;dant pas 11&nbsp;294&nbsp;&euro;</td><td>0&nbsp;%</td></tr>" +
        "<tr><td>Sup&eacute;rieure &agrave; 11&nbsp;294&nbsp;&euro; et inf&eacute;rieure ou &eacute;gale &agrave; 28&nbsp;797&nbsp;&euro;</td><td>11&nbsp;%</td></tr>" +
        "<tr><td>Sup&eacute;rieure &agrave; 28&nbsp;797&nbsp;&euro;</td><td>30&nbsp;%</td></tr></tbody></table>",
      dateDebut: day(2024, 2, 18),
      dateFin: day(2099, 1, 1),
      lienModifications: [{
        textCid: "JORFTEXT000048727345",
        textTitle: "LOI n°2023-1322 du 29 décembre 2023 - art. 2 (V)",
        linkType: "MODIFIE",
        linkOrientation: "cible",
        articleNum: "2",
        natureText: "LOI",
        datePubliTexte: day(2023, 12, 30),
        dateDebutCible: day(2024, 2, 18),
      }],
    }),
    articleDoc({
      id: "LEGIARTI000032227301",
      num: "L217-4",
      codeId: "LEGITEXT000006069565",
      codeTitle: "Code de la consommation",
      sectionId: "LEGISCTA000032227295",
      sectionTitle: "Garantie légale de conformité",
      etat: "ABROGE_DIFF",
      text:
        "Le vendeur livre un bien conforme au contrat et répond des défauts de conformité existant lors de la délivrance.",
      html:
        "<p>Le vendeur livre un bien conforme au contrat et r&eacute;pond des d&eacute;fauts de conformit&eacute; existant lors de la " +
        "d&eacute;livrance.</p><p>Il r&eacute;pond &eacute;galement des d&eacute;fauts de conformit&eacute; r&eacute;sultant&nbsp;:</p>" +
        "<ol><li>de l'emballage&nbsp;;</li><li>des instructions de montage&nbsp;;</li><li>de l'installation.</li></ol>",
      dateDebut: day(2016, 7, 1),
      dateFin: day(2022, 1, 1),
    }),
    // Made up: a version that starts in the future, with ISO date-times.
    articleDoc({
      id: "LEGIARTI000051234567",
      num: "L3121-99",
      codeId: "LEGITEXT000006072050",
      codeTitle: "Code du travail",
      sectionId: "LEGISCTA000051234500",
      sectionTitle: "Durée du travail",
      etat: "VIGUEUR_DIFF",
      text:
        "La durée légale du travail effectif des salariés à temps complet est fixée à trente-cinq heures par semaine.",
      html:
        "<p>La dur&eacute;e l&eacute;gale du travail effectif des salari&eacute;s &agrave; temps complet est fix&eacute;e &agrave; " +
        "trente-cinq heures par semaine.<br>Elle s'appr&eacute;cie sur la semaine civile.</p>",
      dateDebut: day(2099, 1, 1),
      rawDateDebut: "2099-01-01T00:00:00.000+0000",
      rawDateFin: "2999-01-01T00:00:00.000+0000",
    }),
  ];
}

const WORDS = [
  "contrat",
  "responsabilité",
  "dommage",
  "travail",
  "salarié",
  "employeur",
  "bail",
  "propriété",
  "obligation",
  "preuve",
  "société",
  "donnée",
  "traitement",
  "délai",
  "nullité",
  "prescription",
  "succession",
  "consommateur",
  "assurance",
  "procédure",
];

/** `perFond` generated documents per fond, deterministic, with dates spread so "newest first" is well defined. */
export function generatedDocuments(perFond: number): CorpusDocument[] {
  const out: CorpusDocument[] = [];
  const pad = (n: number) => String(900_000_000_000 + n).padStart(12, "0");
  const words = (i: number, n: number) =>
    Array.from({ length: n }, (_, k) => WORDS[(i * 7 + k * 3) % WORDS.length]).join(" ");
  const base = day(2020, 1, 1);
  for (let i = 0; i < perFond; i++) {
    const date = base + i * 3_600_000 * 7;
    const body = (kind: string) =>
      `${kind} n° ${i}. Dispositions relatives à ${words(i, 3)}. ` +
      `Le présent texte précise les règles applicables en matière de ${words(i + 1, 4)}, ` +
      `sous réserve des dispositions relatives à ${words(i + 2, 2)}.`;
    out.push(articleDoc({
      id: `LEGIARTI${pad(i)}`,
      num: `L${100 + (i % 900)}-${1 + (i % 9)}`,
      codeId: "LEGITEXT000006072050",
      codeTitle: "Code du travail",
      sectionId: `LEGISCTA${pad(Math.floor(i / 10))}`,
      sectionTitle: `Section ${Math.floor(i / 10) + 1}`,
      text: body("Article"),
      dateDebut: date,
    }));
    out.push(juriDoc({
      id: `JURITEXT${pad(i)}`,
      fond: "JURI",
      title: `Cour de cassation, chambre sociale, décision ${i}`,
      text: body("Arrêt"),
      date,
      juridiction: "Cour de cassation",
      numero: `${20 + (i % 5)}-${10000 + i}`,
      solution: i % 2 ? "Rejet" : "Cassation",
    }));
    out.push(consolidatedTextDoc({
      id: `JORFTEXT${pad(i)}`,
      fond: "JORF",
      title: `Décret n° 2024-${i} relatif à ${words(i, 2)}`,
      nor: `TRAX24${String(i).padStart(5, "0")}D`,
      textNumber: `2024-${i}`,
      date,
      articles: [{ id: `JORFARTI${pad(i)}`, num: "1", content: body("Décret") }],
    }));
    out.push(juriDoc({
      id: `CNILTEXT${pad(i)}`,
      fond: "CNIL",
      title: `Délibération n° 2024-${i}`,
      text: body("Délibération"),
      date,
      juridiction: "CNIL",
      numero: `2024-${i}`,
    }));
  }
  return out;
}
