// kb's pure parts: environment resolution, the credential-name rule, what each mode writes, and the
// row comparison.
import { describe, expect, it } from "vitest";
import { compare } from "../packages/kb/diff.ts";
import { KbError, resolveEnvironment } from "../packages/kb/env.ts";
import { plannedChanges } from "../packages/kb/push.ts";
import { looksLikeCredential } from "../packages/kb/credentials.ts";
import { normalizeTableName } from "../packages/kb/catalog.ts";
import { guidedDemoEnabled } from "../packages/local-stack/demo.ts";

describe("environments", () => {
  it("reads <NAME>_DB_URL and, for files, <NAME>_URL with a secret or service-role key", () => {
    const env = {
      PROD_DB_URL: "postgresql://postgres:pw@db.abcdefghijklmnopqrst.supabase.co:5432/postgres",
      PROD_URL: "https://abcdefghijklmnopqrst.supabase.co",
      PROD_SERVICE_ROLE_KEY: "service-role-jwt",
    };
    const e = resolveEnvironment("prod", { env, files: true });
    expect(e).toMatchObject({
      name: "prod",
      host: "db.abcdefghijklmnopqrst.supabase.co",
      database: "postgres",
      isLocal: false,
      projectRef: "abcdefghijklmnopqrst",
      apiUrl: env.PROD_URL,
      serviceKey: "service-role-jwt",
    });
    const pooled = resolveEnvironment("Prod", {
      env: {
        PROD_DB_URL: "postgres://postgres.zyxwvutsrqponmlkjihg:pw@aws-0-eu-west-3.pooler.supabase.com:5432/postgres",
      },
    });
    expect(pooled.projectRef).toBe("zyxwvutsrqponmlkjihg");
    expect(resolveEnvironment("dev", { env: { DEV_DB_URL: "postgres://u:p@127.0.0.1:5432/kb" } })).toMatchObject({
      isLocal: true,
      projectRef: null,
      database: "kb",
    });
  });

  it("says which variable is missing or wrong, without echoing a URL", () => {
    expect(() => resolveEnvironment("staging", { env: {} })).toThrow("STAGING_DB_URL is not set");
    expect(() => resolveEnvironment("../x", { env: {} })).toThrow(KbError);
    expect(() => resolveEnvironment("dev", { env: { DEV_DB_URL: "mysql://u:secretpw@h/db" } })).toThrow(
      /DEV_DB_URL is not a postgres:\/\/ URL/,
    );
    try {
      resolveEnvironment("dev", { env: { DEV_DB_URL: "mysql://u:secretpw@h/db" } });
    } catch (e) {
      expect(String(e)).not.toContain("secretpw");
    }
    expect(() =>
      resolveEnvironment("dev", { env: { DEV_DB_URL: "postgres://h/db", DEV_URL: "http://h" }, files: true })
    )
      .toThrow("--files needs DEV_SECRET_KEY or DEV_SERVICE_ROLE_KEY");
  });
});

describe("tables", () => {
  it("credential-looking column names", () => {
    for (
      const c of [
        "api_key",
        "openai_api_key",
        "apiKey",
        "secret",
        "client_secret",
        "access_token",
        "password",
        "service_role_key",
        "jwt",
        "openai_key",
        "stripe_api_key",
        "webhook_url",
        "slack_webhook",
        "dsn",
        "sentry_dsn",
        "database_url",
        "db_url",
        "refresh_token",
        "key",
      ]
    ) {
      expect(looksLikeCredential(c), c).toBe(true);
    }
    for (const c of ["title", "body", "content_hash", "category_id", "keywords", "url", "source_id", "keyword"]) {
      expect(looksLikeCredential(c), c).toBe(false);
    }
  });

  it("table names: public by default, platform schemas refused", () => {
    expect(normalizeTableName("FAQ_items")).toBe("faq_items");
    expect(normalizeTableName("public.faq_items")).toBe("faq_items");
    expect(normalizeTableName("app.docs")).toBe("app.docs");
    expect(() => normalizeTableName("vault.secrets")).toThrow("kb does not copy tables of schema vault");
    expect(() => normalizeTableName("faq; drop table x")).toThrow(KbError);
  });
});

describe("modes", () => {
  const d = compare("t", new Map([["1", "a"], ["2", "b"], ["3", "c"]]), new Map([["2", "b"], ["3", "X"], ["4", "d"]]));
  it("compares by key and row hash", () => {
    expect([d.onlySource, d.onlyTarget, d.changed]).toEqual([["1"], ["4"], ["3"]]);
    expect(d.sourceChecksum).not.toBe(d.targetChecksum);
    expect(compare("t", new Map([["1", "a"]]), new Map([["1", "a"]])).sourceChecksum)
      .toBe(compare("t", new Map([["1", "a"]]), new Map()).sourceChecksum);
  });
  it("replace inserts, updates and deletes; overwrite keeps extras; upsert only inserts", () => {
    expect(plannedChanges("replace", d)).toEqual({ copy: ["1", "3"], inserted: 1, updated: 1, deleted: ["4"] });
    expect(plannedChanges("overwrite", d)).toEqual({ copy: ["1", "3"], inserted: 1, updated: 1, deleted: [] });
    expect(plannedChanges("upsert", d)).toEqual({ copy: ["1"], inserted: 1, updated: 0, deleted: [] });
  });
});

describe("npm start's guided demo", () => {
  it("never runs in a user's DATABASE_URL unless LOCAL_STACK_DEMO=1; in the embedded database unless LOCAL_STACK_DEMO=0", () => {
    const url = "postgres://u:p@127.0.0.1:5432/mine";
    expect(guidedDemoEnabled({ DATABASE_URL: url })).toBe(false);
    expect(guidedDemoEnabled({ DATABASE_URL: url, LOCAL_STACK_DEMO: "0" })).toBe(false);
    expect(guidedDemoEnabled({ DATABASE_URL: url, LOCAL_STACK_DEMO: "1" })).toBe(true);
    expect(guidedDemoEnabled({})).toBe(true);
    expect(guidedDemoEnabled({ LOCAL_STACK_DEMO: "0" })).toBe(false);
  });
});
