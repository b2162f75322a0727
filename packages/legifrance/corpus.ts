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

function articleDoc(a: {
  id: string; num: string; text: string; codeId: string; codeTitle: string; sectionId: string; sectionTitle: string;
  dateDebut: number; dateFin?: number; etat?: string; fond?: Fond;
}): CorpusDocument {
  const etat = a.etat ?? "VIGUEUR";
  const fond = a.fond ?? "CODE_DATE";
  return {
    id: a.id,
    fond,
    date: a.dateDebut,
    title: `${a.codeTitle} - Article ${a.num}`,
    text: a.text,
    searchResult: {
      titles: [{ id: `${a.codeId}_${ymd(a.dateDebut).split("-").reverse().join("-")}`, cid: a.codeId, title: a.codeTitle, legalStatus: etat }],
      sections: [{
        id: a.sectionId,
        title: a.sectionTitle,
        legalStatus: etat,
        extracts: [{ id: a.id, num: a.num, legalStatus: etat, type: "articles", dateVersion: a.dateDebut, values: [a.text.slice(0, 120)] }],
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
          texteHtml: `<p>${a.text}</p>`,
          etat,
          dateDebut: a.dateDebut,
          dateFin: a.dateFin ?? OPEN_END,
          type: "AUTONOME",
          nature: "Article",
          idTexte: null,
          textTitles: [{ id: a.codeId, cid: a.codeId, titre: a.codeTitle, titreLong: a.codeTitle, etat: "VIGUEUR", nature: "CODE" }],
          context: { titreTxt: [{ cid: a.codeId, titre: a.codeTitle, etat: "VIGUEUR" }], titresTM: [{ id: a.sectionId, titre: a.sectionTitle }] },
          nota: "",
        },
      },
    },
  };
}

function juriDoc(a: {
  id: string; fond: "JURI" | "CNIL"; title: string; text: string; date: number; juridiction: string; numero: string; solution?: string;
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
          texteHtml: `<p>${a.text}</p>`,
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
  id: string; fond: "JORF" | "KALI"; title: string; nor?: string; textNumber?: string; date: number;
  articles: { id: string; num: string; content: string }[];
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
        articles: a.articles.map((x, i) => ({ id: x.id, num: x.num, content: `<p>${x.content}</p>`, etat: "VIGUEUR", intOrdre: i + 1 })),
        sections: [],
      },
    },
  };
}

/** Hand-written sample documents, one or two per fond. */
export function sampleDocuments(): CorpusDocument[] {
  return [
    articleDoc({
      id: "LEGIARTI000032041571", num: "1240", codeId: "LEGITEXT000006070721", codeTitle: "Code civil",
      sectionId: "LEGISCTA000032021488", sectionTitle: "De la responsabilité extracontractuelle en général",
      text: "Tout fait quelconque de l'homme, qui cause à autrui un dommage, oblige celui par la faute duquel il est arrivé à le réparer.",
      dateDebut: day(2016, 10, 1),
    }),
    articleDoc({
      id: "LEGIARTI000006419292", num: "1382", codeId: "LEGITEXT000006070721", codeTitle: "Code civil",
      sectionId: "LEGISCTA000006136352", sectionTitle: "Des délits et des quasi-délits",
      text: "Tout fait quelconque de l'homme, qui cause à autrui un dommage, oblige celui par la faute duquel il est arrivé, à le réparer.",
      dateDebut: day(1804, 2, 19), dateFin: day(2016, 10, 1), etat: "MODIFIE",
    }),
    articleDoc({
      id: "LEGIARTI000006900785", num: "L1221-1", codeId: "LEGITEXT000006072050", codeTitle: "Code du travail",
      sectionId: "LEGISCTA000006177836", sectionTitle: "Dispositions générales",
      text: "Le contrat de travail est soumis aux règles du droit commun. Il peut être établi selon les formes que les parties contractantes décident d'adopter.",
      dateDebut: day(2008, 5, 1),
    }),
    juriDoc({
      id: "JURITEXT000007022837", fond: "JURI", title: "Cour de cassation, civile, Chambre civile 2, 14 juin 2007",
      text: "Attendu que la responsabilité du gardien de la chose est engagée dès lors que la chose a été l'instrument du dommage ; que l'arrêt attaqué, qui retient le contraire, encourt la cassation.",
      date: day(2007, 6, 14), juridiction: "Cour de cassation", numero: "06-14.557", solution: "Cassation",
    }),
    juriDoc({
      id: "CNILTEXT000017652361", fond: "CNIL", title: "Délibération n° 2007-001 portant avis sur un traitement de données",
      text: "La Commission nationale de l'informatique et des libertés émet un avis favorable au traitement, sous réserve que la durée de conservation des données soit limitée.",
      date: day(2007, 1, 11), juridiction: "CNIL", numero: "2007-001",
    }),
    consolidatedTextDoc({
      id: "JORFTEXT000000465978", fond: "JORF", title: "Décret n° 2002-1 relatif à la publication des textes",
      nor: "JUSX0200001D", textNumber: "2002-1", date: day(2002, 1, 2),
      articles: [
        { id: "JORFARTI000002113456", num: "1", content: "Les textes sont publiés au Journal officiel de la République française." },
        { id: "JORFARTI000002113457", num: "2", content: "Le présent décret entre en vigueur le lendemain de sa publication." },
      ],
    }),
    consolidatedTextDoc({
      id: "KALITEXT000005680010", fond: "KALI", title: "Convention collective nationale des bureaux d'études techniques",
      date: day(1987, 12, 15),
      articles: [{ id: "KALIARTI000005781234", num: "1", content: "La présente convention règle les rapports entre les employeurs et les salariés des bureaux d'études techniques." }],
    }),
  ];
}

const WORDS = [
  "contrat", "responsabilité", "dommage", "travail", "salarié", "employeur", "bail", "propriété", "obligation", "preuve",
  "société", "donnée", "traitement", "délai", "nullité", "prescription", "succession", "consommateur", "assurance", "procédure",
];

/** `perFond` generated documents per fond, deterministic, with dates spread so "newest first" is well defined. */
export function generatedDocuments(perFond: number): CorpusDocument[] {
  const out: CorpusDocument[] = [];
  const pad = (n: number) => String(900_000_000_000 + n).padStart(12, "0");
  const words = (i: number, n: number) => Array.from({ length: n }, (_, k) => WORDS[(i * 7 + k * 3) % WORDS.length]).join(" ");
  const base = day(2020, 1, 1);
  for (let i = 0; i < perFond; i++) {
    const date = base + i * 3_600_000 * 7;
    const body = (kind: string) =>
      `${kind} n° ${i}. Dispositions relatives à ${words(i, 3)}. ` +
      `Le présent texte précise les règles applicables en matière de ${words(i + 1, 4)}, ` +
      `sous réserve des dispositions relatives à ${words(i + 2, 2)}.`;
    out.push(articleDoc({
      id: `LEGIARTI${pad(i)}`, num: `L${100 + (i % 900)}-${1 + (i % 9)}`, codeId: "LEGITEXT000006072050", codeTitle: "Code du travail",
      sectionId: `LEGISCTA${pad(Math.floor(i / 10))}`, sectionTitle: `Section ${Math.floor(i / 10) + 1}`, text: body("Article"), dateDebut: date,
    }));
    out.push(juriDoc({
      id: `JURITEXT${pad(i)}`, fond: "JURI", title: `Cour de cassation, chambre sociale, décision ${i}`,
      text: body("Arrêt"), date, juridiction: "Cour de cassation", numero: `${20 + (i % 5)}-${10000 + i}`, solution: i % 2 ? "Rejet" : "Cassation",
    }));
    out.push(consolidatedTextDoc({
      id: `JORFTEXT${pad(i)}`, fond: "JORF", title: `Décret n° 2024-${i} relatif à ${words(i, 2)}`, nor: `TRAX24${String(i).padStart(5, "0")}D`,
      textNumber: `2024-${i}`, date, articles: [{ id: `JORFARTI${pad(i)}`, num: "1", content: body("Décret") }],
    }));
    out.push(juriDoc({
      id: `CNILTEXT${pad(i)}`, fond: "CNIL", title: `Délibération n° 2024-${i}`, text: body("Délibération"), date, juridiction: "CNIL", numero: `2024-${i}`,
    }));
  }
  return out;
}
