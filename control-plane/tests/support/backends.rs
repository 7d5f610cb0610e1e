//! Every store-backed test runs each scenario on both backends: a fresh
//! PostgreSQL database and a fresh SQLite file, both dropped with the
//! [`Backend`] value. Included by each test file with `#[path]`.

// Each test binary includes this file and uses a different part of it.
#![allow(dead_code)]

use countersign_control_plane::Store;
use countersign_testkit::{TestDb, ensure_services};

pub enum Backend {
    Postgres { db: TestDb },
    Sqlite { _dir: tempfile::TempDir },
}

impl Backend {
    /// A migrated store on each backend; database names start with `prefix`.
    pub async fn stores(prefix: &str) -> Vec<(Backend, Store)> {
        ensure_services().unwrap();
        let pg = TestDb::create(prefix).await.unwrap();
        let pg_store = Store::connect(&pg.url()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("cs.db").display());
        let sqlite_store = Store::connect(&url).await.unwrap();
        vec![
            (Backend::Postgres { db: pg }, pg_store),
            (Backend::Sqlite { _dir: dir }, sqlite_store),
        ]
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Postgres { .. } => "postgres",
            Backend::Sqlite { .. } => "sqlite",
        }
    }
}

/// A number the query returns as `n` (PostgreSQL).
pub async fn count(store: &Store, sql: &str) -> i64 {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    store
        .db_for_tests()
        .query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap()
}

/// Counts the events that carry a text digest whose text is not in `audit_texts` (PostgreSQL):
/// text search could not find them, so there must be none.
pub const EVENTS_WITHOUT_THEIR_TEXT: &str = "SELECT count(*) AS n FROM audit_events e \
    WHERE statement_digest IS NOT NULL \
    AND NOT EXISTS (SELECT 1 FROM audit_texts t WHERE t.digest = e.statement_digest)";
