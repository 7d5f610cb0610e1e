//! A fresh database per test on the shared cluster, dropped when the test ends.

use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use tokio_postgres::NoTls;

use crate::conn::ConnParams;

const ADMIN_CONNINFO: &str =
    "host=127.0.0.1 port=5432 user=postgres dbname=postgres sslmode=disable connect_timeout=10";

/// A database named `<prefix>_<uuid>` on 127.0.0.1:5432. Dropped `WITH (FORCE)` on drop, so
/// stray sessions (for instance a gateway that is still up) do not keep it alive.
pub struct TestDb {
    name: String,
}

impl TestDb {
    /// Creates the database. `prefix` is reduced to `[a-z0-9_]` and cut to 24 characters.
    pub async fn create(prefix: &str) -> Result<TestDb> {
        let prefix: String = prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(24)
            .collect();
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let (client, connection) = tokio_postgres::connect(ADMIN_CONNINFO, NoTls)
            .await
            .context("connecting to the shared cluster as postgres")?;
        let task = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .with_context(|| format!("creating database {name}"))?;
        drop(client);
        let _ = task.await;
        Ok(TestDb { name })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `postgres://postgres@127.0.0.1:5432/NAME`
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }

    /// The URL with `?sslmode=disable`, as given to `countersign dev --upstream`.
    pub fn upstream_url(&self) -> String {
        format!("{}?sslmode=disable", self.url())
    }

    /// Direct connection parameters (user postgres, trust auth, no TLS).
    pub fn params(&self) -> ConnParams {
        ConnParams::new("127.0.0.1", 5432, "postgres", &self.name)
    }

    /// A direct tokio-postgres client.
    pub async fn client(&self) -> Result<tokio_postgres::Client> {
        Ok(self.params().connect().await?.0)
    }

    /// Runs SQL (possibly several statements) directly, e.g. to seed data.
    pub async fn execute(&self, sql: &str) -> Result<()> {
        self.client()
            .await?
            .batch_execute(sql)
            .await
            .with_context(|| format!("running {sql}"))
    }

    /// Fails unless tables `a` and `b` hold the same multiset of rows; returns the count.
    pub async fn ensure_same_rows(&self, a: &str, b: &str) -> Result<i64> {
        let sql = format!(
            "SELECT (SELECT count(*) FROM {a}), (SELECT count(*) FROM {b}), \
             (SELECT count(*) FROM (SELECT * FROM {a} EXCEPT ALL SELECT * FROM {b}) x), \
             (SELECT count(*) FROM (SELECT * FROM {b} EXCEPT ALL SELECT * FROM {a}) y)"
        );
        let row = self.client().await?.query_one(&sql, &[]).await?;
        let counts: [i64; 4] = [row.get(0), row.get(1), row.get(2), row.get(3)];
        if counts[0] != counts[1] || counts[2] != 0 || counts[3] != 0 {
            bail!(
                "{a} and {b} differ: counts {} vs {}, {} rows only in {a}, {} only in {b}",
                counts[0],
                counts[1],
                counts[2],
                counts[3]
            );
        }
        Ok(counts[0])
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Synchronous psql so Drop works from any context, runtime or not.
        if let Err(e) = drop_database(&self.name) {
            eprintln!("warning: could not drop test database {}: {e:#}", self.name);
        }
    }
}

fn drop_database(name: &str) -> Result<()> {
    let out = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", ADMIN_CONNINFO, "-c"])
        .arg(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .env_remove("PGPASSWORD")
        .stdin(Stdio::null())
        .output()
        .context("running psql")?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn exists(name: &str) -> bool {
        let (client, connection) = tokio_postgres::connect(ADMIN_CONNINFO, NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let row = client
            .query_one(
                "SELECT count(*) FROM pg_database WHERE datname = $1",
                &[&name],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0) == 1
    }

    #[tokio::test]
    async fn creates_and_drops_a_database() {
        crate::services::ensure_services().unwrap();
        let db = TestDb::create("Kit-Db").await.unwrap();
        let name = db.name().to_owned();
        assert!(name.starts_with("kit_db_"), "{name}");
        assert!(exists(&name).await);
        assert_eq!(
            db.url(),
            format!("postgres://postgres@127.0.0.1:5432/{name}")
        );
        db.execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
            .await
            .unwrap();
        // An open session must not keep the database from being dropped.
        let client = db.client().await.unwrap();
        drop(db);
        assert!(!exists(&name).await);
        assert!(client.query_one("SELECT 1", &[]).await.is_err());
    }
}
