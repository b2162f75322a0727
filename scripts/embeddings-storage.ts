// npm run embeddings:storage -- [--type vector|halfvec] [--dimensions N] [--yes]
// Shows, or changes, how the embeddings are stored (public.set_embedding_storage does the work).
// A type change converts the stored vectors in place; a dimension change clears them and queues every
// row to be embedded again, so it asks for --yes. Exit codes: 0 done, 2 bad input (nothing changed).
import { parseArgs } from "node:util";
import postgres from "postgres";
import { z } from "zod";

const usage =
  `usage: DATABASE_URL=postgres://... npm run embeddings:storage -- [--type vector|halfvec] [--dimensions N] [--yes]
  no option       prints the current type and dimensions
  --type          vector (4 bytes a component) or halfvec (2 bytes): converted in place, nothing re-embedded
  --dimensions    a dimension change clears every chunk and re-embeds every row (needs --yes); set the
                  functions' EMBEDDING_DIMENSIONS to the same value first`;

const argsSchema = z
  .object({
    DATABASE_URL: z.string().regex(/^postgres(ql)?:\/\//, "must be a postgres:// URL"),
    type: z.enum(["vector", "halfvec"]).optional(),
    dimensions: z.coerce.number().int().min(1).max(4000).optional(),
    yes: z.boolean().default(false),
  })
  .refine((a) => !(a.type === "vector" && a.dimensions !== undefined && a.dimensions > 2000), {
    message: "an HNSW index on vector takes at most 2000 dimensions (halfvec: 4000)",
    path: ["dimensions"],
  });

interface Storage {
  vector_type: string;
  dimensions: number;
  pending_index_rebuilds: number;
}

async function main(argv: string[]): Promise<number> {
  let raw;
  try {
    raw = parseArgs({
      args: argv,
      options: {
        type: { type: "string" },
        dimensions: { type: "string" },
        yes: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    }).values;
  } catch (e) {
    console.error(`${e instanceof Error ? e.message : e}\n${usage}`);
    return 2;
  }
  if (raw.help) {
    console.log(usage);
    return 0;
  }
  const parsed = argsSchema.safeParse({ ...raw, DATABASE_URL: process.env.DATABASE_URL });
  if (!parsed.success) {
    console.error(
      `${parsed.error.issues.map((i) => `${i.path.join(".") || "arguments"}: ${i.message}`).join("\n")}\n${usage}`,
    );
    return 2;
  }
  const a = parsed.data;
  const sql = postgres(a.DATABASE_URL, { max: 1, onnotice: (n) => console.log(n.message) });
  try {
    const show = async () => {
      const [s] = await sql<
        Storage[]
      >`select vector_type, dimensions, pending_index_rebuilds from public.embedding_storage()`;
      return s;
    };
    const before = await show();
    const type = a.type ?? before.vector_type;
    const dims = a.dimensions ?? before.dimensions;
    if (type === "vector" && dims > 2000) {
      console.error(
        `an HNSW index on vector takes at most 2000 dimensions; the table has ${dims} (use --type halfvec)`,
      );
      return 2;
    }
    if (dims !== before.dimensions && !a.yes) {
      console.error(
        `changing the dimensions from ${before.dimensions} to ${dims} deletes every stored embedding and ` +
          `re-embeds every row with the provider; run again with --yes to go ahead`,
      );
      return 2;
    }
    if (a.type !== undefined || a.dimensions !== undefined || before.pending_index_rebuilds > 0) {
      await sql`call public.set_embedding_storage(${dims}, ${type})`;
    }
    const after = await show();
    console.log(
      `embeddings stored as ${after.vector_type}(${after.dimensions})` +
        (after.pending_index_rebuilds
          ? `; ${after.pending_index_rebuilds} segment indexes still to rebuild (run again)`
          : ""),
    );
    return 0;
  } finally {
    await sql.end({ timeout: 5 });
  }
}

process.exitCode = await main(process.argv.slice(2)).catch((e) => {
  console.error(`embeddings:storage failed: ${e instanceof Error ? e.message : e}`);
  return 1;
});
