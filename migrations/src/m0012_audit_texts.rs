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
//! - `audit_events_statement_trgm` is rebuilt partial, over the events
//!   without a digest. On an existing store this reads `audit_events` once.
//!
//! Triggers refuse changing a text, and deleting one outside the retention
//! purge (the same `audit_purge_permits` row as for events).
//!
//! SQLite (`countersign dev`) has no trigram index, so it keeps neither.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES_UP: &str = r#"
ALTER TABLE audit_events ADD COLUMN statement_digest bytea;
CREATE TABLE audit_texts (
    digest bytea PRIMARY KEY CHECK (octet_length(digest) = 32),
    statement text NOT NULL
);
CREATE INDEX audit_events_statement_digest ON audit_events (statement_digest, at)
    WHERE statement_digest IS NOT NULL;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        DROP INDEX IF EXISTS audit_events_statement_trgm;
        CREATE INDEX audit_events_statement_trgm ON audit_events USING gin (statement gin_trgm_ops)
            WHERE statement_digest IS NULL;
        CREATE INDEX audit_texts_statement_trgm ON audit_texts USING gin (statement gin_trgm_ops);
    END IF;
END
$$;

CREATE FUNCTION countersign_audit_texts_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND EXISTS (SELECT 1 FROM audit_purge_permits) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit texts are append-only: only the retention purge deletes them (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_texts_append_only
    BEFORE UPDATE OR DELETE ON audit_texts
    FOR EACH ROW EXECUTE FUNCTION countersign_audit_texts_guard();
CREATE TRIGGER audit_texts_no_truncate
    BEFORE TRUNCATE ON audit_texts
    FOR EACH STATEMENT EXECUTE FUNCTION countersign_audit_refuse_change();
"#;

const POSTGRES_DOWN: &str = r#"
DROP TABLE IF EXISTS audit_texts;
DROP FUNCTION IF EXISTS countersign_audit_texts_guard();
DROP INDEX IF EXISTS audit_events_statement_digest;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        DROP INDEX IF EXISTS audit_events_statement_trgm;
        CREATE INDEX audit_events_statement_trgm ON audit_events USING gin (statement gin_trgm_ops);
    END IF;
END
$$;
ALTER TABLE audit_events DROP COLUMN statement_digest;
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared(POSTGRES_UP)
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared(POSTGRES_DOWN)
                .await?;
        }
        Ok(())
    }
}
