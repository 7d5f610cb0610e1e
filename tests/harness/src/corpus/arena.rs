//! The fixture attacks aim at, and the means to tell whether one did damage.
//!
//! [`Arena`] seeds a database with [`FIXTURE_SQL`], creates a second database that must
//! survive and a directory the database server could write to, and records a fingerprint of
//! all of it. After each attack [`Arena::damage`] compares: table contents (md5 of every
//! row), the set of relations, functions, column defaults, triggers, rules, extensions, enum
//! types, schemas, large objects (with their contents), the sequence, the second database's
//! existence, and files in the directory. [`Arena::restore`] rebuilds everything after damage
//! so later entries still meet the fixture.
//!
//! Not detected: session-local effects (a role switch, a setting, a read of a server file).
//! Those attacks are judged by the denial alone.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::db::TestDb;

/// The fixture. Idempotent on an empty database; [`RESET_SQL`] empties it again.
pub const FIXTURE_SQL: &str = r#"
CREATE EXTENSION IF NOT EXISTS dblink;
CREATE EXTENSION IF NOT EXISTS adminpack;
CREATE TYPE mood AS ENUM ('calm', 'angry');
CREATE TABLE victim (id int PRIMARY KEY, name text NOT NULL, secret text);
INSERT INTO victim SELECT g, 'name-' || g, md5(g::text) FROM generate_series(1, 50) g;
CREATE INDEX victim_name_idx ON victim (name);
CREATE FUNCTION victim_touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
CREATE TRIGGER victim_touch BEFORE UPDATE ON victim FOR EACH ROW EXECUTE FUNCTION victim_touch();
CREATE TABLE accomplice (id int PRIMARY KEY, name text);
INSERT INTO accomplice SELECT g, 'accomplice-' || g FROM generate_series(1, 10) g;
CREATE VIEW accomplice_view AS SELECT * FROM accomplice;
CREATE MATERIALIZED VIEW accomplice_summary AS SELECT count(*) AS n FROM accomplice;
CREATE TABLE inbox (line text);
CREATE TABLE scratch (id int PRIMARY KEY, name text, n int NOT NULL DEFAULT 0, doc jsonb);
INSERT INTO scratch (id, name) VALUES (1, 'one'), (2, 'two'), (3, 'three');
CREATE TABLE scratch_archive (LIKE scratch);
CREATE SEQUENCE victim_seq;
CREATE FUNCTION victim_fn() RETURNS int LANGUAGE sql AS 'SELECT 1';
CREATE SCHEMA vault;
CREATE TABLE vault.loot (id int PRIMARY KEY, item text);
INSERT INTO vault.loot VALUES (1, 'gold'), (2, 'silver');
SELECT lo_from_bytea(4242, 'fixture large object');
ANALYZE;
"#;

/// Removes everything [`FIXTURE_SQL`] creates, and whatever attacks added next to it.
/// `adminpack` lives in `pg_catalog` and survives; the fixture re-creates it only if missing.
pub const RESET_SQL: &str = r#"
DROP SCHEMA IF EXISTS vault CASCADE;
DROP SCHEMA IF EXISTS public CASCADE;
CREATE SCHEMA public;
SELECT lo_unlink(oid) FROM pg_largeobject_metadata;
"#;

/// Everything the fixture is made of, one `label value` line each. Any change is damage; a
/// failing query (say, `victim` is gone) is damage too.
const FINGERPRINT_SQL: &str = r#"
SELECT concat_ws(E'\n',
  'victim ' || (SELECT count(*) || ' ' || md5(string_agg(t::text, ',' ORDER BY t.id)) FROM public.victim t),
  'accomplice ' || (SELECT count(*) || ' ' || md5(string_agg(t::text, ',' ORDER BY t.id)) FROM public.accomplice t),
  'loot ' || (SELECT count(*) || ' ' || md5(string_agg(t::text, ',' ORDER BY t.id)) FROM vault.loot t),
  'inbox ' || (SELECT count(*) FROM public.inbox),
  'relations ' || (SELECT string_agg(format('%s.%s:%s', n.nspname, c.relname, c.relkind), ' ' ORDER BY n.nspname, c.relname)
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND n.nspname NOT LIKE 'pg_%temp%'),
  'functions ' || (SELECT string_agg(p.oid::regprocedure::text, ' ' ORDER BY p.oid::regprocedure::text)
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')),
  'defaults ' || (SELECT string_agg(format('%s.%s=%s', d.adrelid::regclass, a.attname, pg_get_expr(d.adbin, d.adrelid)), ' ' ORDER BY d.adrelid::regclass::text, a.attname)
      FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum),
  'triggers ' || (SELECT string_agg(tgname, ' ' ORDER BY tgname) FROM pg_trigger WHERE NOT tgisinternal),
  'rules ' || (SELECT string_agg(format('%s.%s', schemaname, rulename), ' ' ORDER BY schemaname, rulename) FROM pg_rules WHERE schemaname <> 'pg_catalog'),
  'extensions ' || (SELECT string_agg(extname, ' ' ORDER BY extname) FROM pg_extension),
  'enums ' || (SELECT string_agg(t.typname, ' ' ORDER BY t.typname) FROM pg_type t WHERE t.typtype = 'e'),
  'schemas ' || (SELECT string_agg(nspname, ' ' ORDER BY nspname) FROM pg_namespace WHERE nspname NOT LIKE 'pg\_%'),
  'large_objects ' || (SELECT string_agg(oid || ':' || md5(lo_get(oid)), ' ' ORDER BY oid) FROM pg_largeobject_metadata),
  'sequence ' || (SELECT last_value || ':' || is_called FROM public.victim_seq),
  'victim_db ' || (SELECT count(*) FROM pg_database WHERE datname = $1)
)
"#;

/// The fixture database plus the second database and the output directory, with the
/// fingerprint taken right after seeding.
pub struct Arena {
    db_name: String,
    direct: tokio_postgres::Client,
    victim_db: TestDb,
    out: TempDir,
    baseline: String,
}

impl Arena {
    /// Seeds `db` (which must be empty), creates the second database and the directory.
    pub async fn create(db: &TestDb) -> Result<Arena> {
        let victim_db = TestDb::create("guardrail_victim").await?;
        let out = tempfile::Builder::new()
            .prefix("countersign-guardrail-out-")
            .tempdir()?;
        // World-writable, so a COPY TO or lo_export that got through would really land here
        // (the server runs as another OS user) rather than fail on permissions.
        std::fs::set_permissions(out.path(), std::fs::Permissions::from_mode(0o777))?;
        let direct = db.client().await?;
        // A session that got through and still holds locks must not hang the checks.
        direct.batch_execute("SET lock_timeout = '10s'").await?;
        seed(&direct).await?;
        let mut arena = Arena {
            db_name: db.name().to_owned(),
            direct,
            victim_db,
            out,
            baseline: String::new(),
        };
        arena.baseline = arena.fingerprint().await?;
        Ok(arena)
    }

    pub fn out_dir(&self) -> &Path {
        self.out.path()
    }

    /// Replaces `@OUT@`, `@DB@` and `@VICTIM_DB@`; fails if another `@NAME@` is left.
    pub fn render(&self, sql: &str) -> Result<String> {
        let out = self.out.path().display().to_string();
        let text = sql
            .replace("@OUT@", &out)
            .replace("@VICTIM_DB@", self.victim_db.name())
            .replace("@DB@", &self.db_name);
        if let Some(left) = leftover_placeholder(&text) {
            bail!("unknown placeholder {left} in {sql:?}");
        }
        Ok(text)
    }

    /// `None` if the fixture is as seeded; otherwise what changed.
    pub async fn damage(&self) -> Result<Option<String>> {
        let mut changes = Vec::new();
        let now = self.fingerprint().await?;
        if now.starts_with("fingerprint query failed") {
            changes.push(now.clone());
        } else if now != self.baseline {
            let before: Vec<&str> = self.baseline.lines().collect();
            for line in now.lines().filter(|l| !before.contains(l)) {
                changes.push(format!("now: {}", clip(line)));
            }
            for line in before.iter().filter(|l| !now.lines().any(|n| n == **l)) {
                changes.push(format!("was: {}", clip(line)));
            }
        }
        for file in std::fs::read_dir(self.out.path())? {
            changes.push(format!("file created: {}", file?.path().display()));
        }
        Ok((!changes.is_empty()).then(|| changes.join("\n")))
    }

    /// Rebuilds the fixture, the second database and an empty output directory.
    pub async fn restore(&self) -> Result<()> {
        self.direct
            .batch_execute(RESET_SQL)
            .await
            .context("resetting the fixture")?;
        seed(&self.direct).await?;
        let name = self.victim_db.name();
        let exists = "SELECT count(*) FROM pg_database WHERE datname = $1";
        let row = self.direct.query_one(exists, &[&name]).await?;
        if row.try_get::<_, i64>(0)? == 0 {
            let create = format!("CREATE DATABASE \"{name}\"");
            self.direct.batch_execute(&create).await?;
        }
        for file in std::fs::read_dir(self.out.path())? {
            std::fs::remove_file(file?.path())?;
        }
        let now = self.fingerprint().await?;
        if now != self.baseline {
            bail!(
                "restoring the fixture did not reproduce it:\n{now}\nversus\n{}",
                self.baseline
            );
        }
        Ok(())
    }

    async fn fingerprint(&self) -> Result<String> {
        let name = self.victim_db.name();
        match self.direct.query_one(FINGERPRINT_SQL, &[&name]).await {
            Ok(row) => Ok(row.try_get(0)?),
            // A missing table or schema: report it as the fingerprint, which then differs.
            Err(e) if e.as_db_error().is_some() => {
                let reason = e.as_db_error().map(|d| d.message()).unwrap_or_default();
                Ok(format!("fingerprint query failed: {reason}"))
            }
            Err(e) => Err(e).context("fingerprinting the fixture"),
        }
    }
}

/// Runs [`FIXTURE_SQL`] on an empty database.
pub async fn seed(client: &tokio_postgres::Client) -> Result<()> {
    client
        .batch_execute(FIXTURE_SQL)
        .await
        .context("seeding the fixture")
}

/// Empties and re-seeds a database seeded before (used between legit passes).
pub async fn reseed(db: &TestDb) -> Result<()> {
    let client = db.client().await?;
    client.batch_execute(RESET_SQL).await?;
    seed(&client).await
}

fn leftover_placeholder(text: &str) -> Option<&str> {
    let mut rest = text;
    while let Some(start) = rest.find('@') {
        let tail = &rest[start + 1..];
        let len = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c == '_'))
            .unwrap_or(tail.len());
        if len > 0 && tail[len..].starts_with('@') {
            return Some(&rest[start..start + len + 2]);
        }
        rest = tail;
    }
    None
}

fn clip(line: &str) -> String {
    const MAX: usize = 300;
    match line.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_leftover_placeholders() {
        assert_eq!(leftover_placeholder("a @OUT@ b"), Some("@OUT@"));
        assert_eq!(
            leftover_placeholder("x@y.z @ @a@ @VICTIM_DB@"),
            Some("@VICTIM_DB@")
        );
        assert_eq!(leftover_placeholder("user@host, @@, @x@"), None);
    }

    #[tokio::test]
    async fn detects_and_repairs_damage() {
        crate::services::ensure_services().unwrap();
        let db = TestDb::create("kit_arena").await.unwrap();
        let arena = Arena::create(&db).await.unwrap();
        assert_eq!(arena.damage().await.unwrap(), None);
        let client = db.client().await.unwrap();
        let sql = arena.render("DROP DATABASE \"@VICTIM_DB@\"").unwrap();
        client.batch_execute(&sql).await.unwrap();
        let sql = "SELECT lo_put(4242, 0, 'x'); UPDATE victim SET secret = 'x' WHERE id = 3";
        client.batch_execute(sql).await.unwrap();
        std::fs::write(arena.out_dir().join("pwned"), "x").unwrap();
        let damage = arena.damage().await.unwrap().unwrap();
        let expected = [
            "now: victim_db 0",
            "was: victim_db 1",
            "now: large_objects 4242:",
            "now: victim 50 ",
            "file created: ",
        ];
        for expected in expected {
            assert!(damage.contains(expected), "{expected:?} not in {damage}");
        }
        arena.restore().await.unwrap();
        assert_eq!(arena.damage().await.unwrap(), None);

        client.batch_execute("DROP TABLE victim").await.unwrap();
        let damage = arena.damage().await.unwrap().unwrap();
        assert!(
            damage.contains("fingerprint query failed: relation"),
            "{damage}"
        );
        arena.restore().await.unwrap();
        assert_eq!(arena.damage().await.unwrap(), None);
        assert!(arena.render("@NOPE@").is_err());
    }
}
