//! The control plane's store: sea-orm over PostgreSQL (production) or SQLite
//! (`countersign dev`), with one migration set for both.
//!
//! Every query here is written once and runs on both backends; the store tests
//! run against each. Nothing outside this module names a table or a column.

pub mod audit;
pub mod credentials;
pub mod entity;
pub mod identities;
pub mod policies;
pub mod resources;
pub mod reviews;
pub mod role_bindings;
pub mod sessions;
pub mod settings;
pub mod tokens;

use countersign_migrations::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};
use std::time::Duration;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    #[error("{what} {key:?} was not found")]
    NotFound { what: &'static str, key: String },
    #[error("{what} {key:?} already exists")]
    Conflict { what: &'static str, key: String },
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
}

/// A handle on the control-plane database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
}

impl Store {
    /// Connects to `url` (`postgres://…` or `sqlite://PATH?mode=rwc`) and applies
    /// pending migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .max_connections(if url.starts_with("sqlite") { 1 } else { 16 })
            .connect_timeout(Duration::from_secs(10))
            .sqlx_logging(false);
        let db = Database::connect(options).await?;
        if url.starts_with("sqlite") {
            // WAL lets audit search read while the uploader writes.
            use sea_orm::ConnectionTrait;
            db.execute_unprepared("PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON;")
                .await?;
        }
        Migrator::up(&db, None).await?;
        Ok(Self { db })
    }

    pub(crate) fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The raw connection, for tests that must bypass the store (for example
    /// to show that the database itself refuses a self-approval).
    #[doc(hidden)]
    pub fn db_for_tests(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Closes the pool; used by tests and at shutdown.
    pub async fn close(self) -> Result<(), StoreError> {
        self.db.close().await?;
        Ok(())
    }
}

/// Maps a unique-constraint violation to [`StoreError::Conflict`].
fn conflict_or(err: DbErr, what: &'static str, key: &str) -> StoreError {
    match err.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => StoreError::Conflict {
            what,
            key: key.to_owned(),
        },
        _ => StoreError::Db(err),
    }
}
