//! Parameterized statement texts kept once, for text search (PostgreSQL only;
//! see `docs/audit.md`, "Text search").
//!
//! A statement sent with its values as separate parameters (the extended
//! protocol with one or more parameters) repeats by construction: a prepared
//! `SELECT … WHERE id = $1` is the same text for every execution. Its events
//! still hold the whole text (the chain, verify and every view read it there),
//! but the trigram index no longer indexes it once per event:
//!
//! - `audit_events.statement_digest`: the SHA-256 of the statement's UTF-8
//!   text for a parameterized statement, NULL for every other event.
//! - `audit_texts`: each such text once, keyed by that digest, with its own
//!   trigram index. A text is stored in the same transaction as the first
//!   event that points to it; the retention purge removes the texts no event
//!   points to any more.
//! - `audit_events_statement_digest`: `(statement_digest, at)` over the
//!   events that have a digest, the way from a matching text to its events,
//!   newest first.
//! - `audit_events_statement_trgm` is built again, partial, over the events
//!   without a digest (on an existing store, all of them: its contents do not
//!   change until parameterized events arrive).
//!
//! CHECK constraints hold each digest to its text: in `audit_texts` always,
//! in `audit_events` for every event stored from now on (`NOT VALID`: the
//! events stored before have no digest). Triggers refuse changing a text, and
//! deleting one outside the retention purge (the same `audit_purge_permits`
//! row as for events).
//!
//! Events stored before this migration keep a NULL digest, and the inline
//! index covers them as before.
//!
//! The migration runs outside a transaction, one statement at a time, so that
//! no step holds a lock on `audit_events` for longer than a catalog change:
//! the two indexes over it are built `CONCURRENTLY` (the new trigram index
//! under a new name, then the old one dropped and the new one renamed), while
//! ingest and search go on. Each step can run again, so a migration cut off
//! halfway completes when it is run again.
//!
//! SQLite (`countersign dev`) has no trigram index, so it keeps neither.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend, Statement};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Before the indexes: the column, the table, the constraints and the guards.
const POSTGRES_SCHEMA: &[&str] = &[
    "ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS statement_digest bytea",
    "CREATE TABLE IF NOT EXISTS audit_texts (
        digest bytea PRIMARY KEY,
        statement text NOT NULL,
        CONSTRAINT audit_texts_digest_of_statement CHECK (digest = sha256(convert_to(statement, 'UTF8')))
    )",
    "ALTER TABLE audit_events DROP CONSTRAINT IF EXISTS audit_events_digest_of_statement",
    "ALTER TABLE audit_events ADD CONSTRAINT audit_events_digest_of_statement
        CHECK (statement_digest IS NULL OR statement_digest = sha256(convert_to(statement, 'UTF8')))
        NOT VALID",
    r#"CREATE OR REPLACE FUNCTION countersign_audit_texts_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND EXISTS (SELECT 1 FROM audit_purge_permits) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit texts are append-only: only the retention purge deletes them (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$"#,
    "DROP TRIGGER IF EXISTS audit_texts_append_only ON audit_texts",
    "CREATE TRIGGER audit_texts_append_only
        BEFORE UPDATE OR DELETE ON audit_texts
        FOR EACH ROW EXECUTE FUNCTION countersign_audit_texts_guard()",
    "DROP TRIGGER IF EXISTS audit_texts_no_truncate ON audit_texts",
    "CREATE TRIGGER audit_texts_no_truncate
        BEFORE TRUNCATE ON audit_texts
        FOR EACH STATEMENT EXECUTE FUNCTION countersign_audit_refuse_change()",
    // An index left invalid by a build that was cut off is built again.
    "DROP INDEX CONCURRENTLY IF EXISTS audit_events_statement_digest",
    "CREATE INDEX CONCURRENTLY audit_events_statement_digest ON audit_events (statement_digest, at)
        WHERE statement_digest IS NOT NULL",
];

/// With `pg_trgm`: the trigram indexes, the one over the events replaced by a partial one.
const POSTGRES_TRIGRAM: &[&str] = &[
    "DROP INDEX CONCURRENTLY IF EXISTS audit_events_statement_trgm_inline",
    "CREATE INDEX CONCURRENTLY audit_events_statement_trgm_inline ON audit_events
        USING gin (statement gin_trgm_ops) WHERE statement_digest IS NULL",
    "DROP INDEX CONCURRENTLY IF EXISTS audit_events_statement_trgm",
    "ALTER INDEX audit_events_statement_trgm_inline RENAME TO audit_events_statement_trgm",
    "CREATE INDEX IF NOT EXISTS audit_texts_statement_trgm ON audit_texts
        USING gin (statement gin_trgm_ops)",
];

const POSTGRES_DOWN: &[&str] = &[
    "DROP TABLE IF EXISTS audit_texts",
    "DROP FUNCTION IF EXISTS countersign_audit_texts_guard()",
    "DROP INDEX CONCURRENTLY IF EXISTS audit_events_statement_digest",
    "ALTER TABLE audit_events DROP CONSTRAINT IF EXISTS audit_events_digest_of_statement",
];

const POSTGRES_DOWN_TRIGRAM: &[&str] = &[
    "DROP INDEX CONCURRENTLY IF EXISTS audit_events_statement_trgm_all",
    "CREATE INDEX CONCURRENTLY audit_events_statement_trgm_all ON audit_events
        USING gin (statement gin_trgm_ops)",
    "DROP INDEX CONCURRENTLY IF EXISTS audit_events_statement_trgm",
    "ALTER INDEX audit_events_statement_trgm_all RENAME TO audit_events_statement_trgm",
];

async fn run(manager: &SchemaManager<'_>, statements: &[&str]) -> Result<(), DbErr> {
    let db = manager.get_connection();
    for sql in statements {
        db.execute_unprepared(sql).await?;
    }
    Ok(())
}

/// Whether `pg_trgm` is installed (migration m0009 creates it where it can).
async fn trigram(manager: &SchemaManager<'_>) -> Result<bool, DbErr> {
    let found = manager
        .get_connection()
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT 1 AS found FROM pg_extension WHERE extname = 'pg_trgm'",
        ))
        .await?;
    Ok(found.is_some())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// Outside a transaction: `CREATE INDEX CONCURRENTLY` cannot run in one.
    fn use_transaction(&self) -> Option<bool> {
        Some(false)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        run(manager, POSTGRES_SCHEMA).await?;
        if trigram(manager).await? {
            run(manager, POSTGRES_TRIGRAM).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        if trigram(manager).await? {
            run(manager, POSTGRES_DOWN_TRIGRAM).await?;
        }
        run(manager, POSTGRES_DOWN).await?;
        run(
            manager,
            &["ALTER TABLE audit_events DROP COLUMN IF EXISTS statement_digest"],
        )
        .await
    }
}
