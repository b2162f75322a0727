// npm run db:migrate — platform bootstrap (only what is missing), then supabase/migrations via the CLI.
import { migrate } from "../packages/local-stack/migrate.ts";

const url = process.env.DATABASE_URL;
if (!url) {
  console.error(
    "DATABASE_URL is not set. Example: DATABASE_URL=postgres://postgres:postgres@127.0.0.1:5432/postgres npm run db:migrate",
  );
  process.exit(2);
}
process.stdout.write(await migrate(url));
