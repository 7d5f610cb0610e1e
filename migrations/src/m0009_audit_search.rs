//! Indexes for audit search and the SIEM stream (see `docs/audit.md`).
//!
//! - `audit_events_received`: `(received_at, session_id, seq)`, the order in
//!   which the SIEM stream reads events as they arrive.
//! - PostgreSQL only, `audit_events_statement_trgm`: a trigram GIN index on the
//!   statement text, so that a text search (`ILIKE '%…%'`) narrows by index
//!   instead of reading every event of a busy identity. It needs the `pg_trgm`
//!   extension (shipped with PostgreSQL's contrib package, trusted since
//!   PostgreSQL 13, so a database owner may create it). Where the extension
//!   cannot be created the migration still succeeds, with a warning: search
//!   stays correct and only gets slower. The control plane logs the index's
//!   absence at every start (`Store::audit_text_index`).
//!
//! SQLite (`countersign dev`) gets only the first index; its LIKE scans.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES_UP: &str = r#"
CREATE INDEX audit_events_received ON audit_events (received_at, session_id, seq);
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'pg_trgm could not be created (%): audit text search will not be indexed', SQLERRM;
END
$$;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        CREATE INDEX audit_events_statement_trgm ON audit_events USING gin (statement gin_trgm_ops);
    END IF;
END
$$;
"#;

const POSTGRES_DOWN: &str = r#"
DROP INDEX IF EXISTS audit_events_statement_trgm;
DROP INDEX IF EXISTS audit_events_received;
"#;

const SQLITE_UP: &str =
    "CREATE INDEX audit_events_received ON audit_events (received_at, session_id, seq);";

const SQLITE_DOWN: &str = "DROP INDEX IF EXISTS audit_events_received;";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let sql = match manager.get_database_backend() {
            DbBackend::Postgres => POSTGRES_UP,
            _ => SQLITE_UP,
        };
        manager.get_connection().execute_unprepared(sql).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let sql = match manager.get_database_backend() {
            DbBackend::Postgres => POSTGRES_DOWN,
            _ => SQLITE_DOWN,
        };
        manager.get_connection().execute_unprepared(sql).await?;
        Ok(())
    }
}
