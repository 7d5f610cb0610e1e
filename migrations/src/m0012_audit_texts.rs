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
//! no step holds an exclusive lock on `audit_events` for longer than a catalog
//! change (adding the column and the `NOT VALID` constraint, each of which
//! still waits for the readers and writers in progress): the two indexes over
//! it are built `CONCURRENTLY` (the new trigram index under a new name, then
//! the old one dropped and the new one renamed), while ingest and search go
//! on; each build holds a lock that keeps out only vacuum and other schema
//! changes. On a large store the builds take a while (minutes per few million
//! events): see `docs/deploy.md`, "Upgrades". Each step looks at the catalog
//! first and skips what is already done, and an index left invalid by a build
//! that was cut off is built again, so a migration cut off halfway completes
//! when it is run again, without redoing a finished index.
//!
//! SQLite (`countersign dev`) has no trigram index, so it keeps neither.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend, Statement};

#[derive(DeriveMigrationName)]
pub struct Migration;

const ADD_COLUMN: &str = "ALTER TABLE audit_events ADD COLUMN statement_digest bytea";

const CREATE_TEXTS: &str = "CREATE TABLE IF NOT EXISTS audit_texts (
    digest bytea PRIMARY KEY,
    statement text NOT NULL,
    CONSTRAINT audit_texts_digest_of_statement CHECK (digest = sha256(convert_to(statement, 'UTF8')))
)";

const ADD_CHECK: &str = "ALTER TABLE audit_events ADD CONSTRAINT audit_events_digest_of_statement
    CHECK (statement_digest IS NULL OR statement_digest = sha256(convert_to(statement, 'UTF8')))
    NOT VALID";

/// The guards on `audit_texts` (its own locks only).
const TEXTS_GUARDS: &[&str] = &[
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
];

const CREATE_DIGEST_INDEX: &str = "CREATE INDEX CONCURRENTLY audit_events_statement_digest
    ON audit_events (statement_digest, at) WHERE statement_digest IS NOT NULL";

const CREATE_INLINE_TRGM: &str = "CREATE INDEX CONCURRENTLY audit_events_statement_trgm_inline
    ON audit_events USING gin (statement gin_trgm_ops) WHERE statement_digest IS NULL";

const CREATE_TEXTS_TRGM: &str = "CREATE INDEX IF NOT EXISTS audit_texts_statement_trgm
    ON audit_texts USING gin (statement gin_trgm_ops)";

const CREATE_EVERY_TRGM: &str = "CREATE INDEX CONCURRENTLY audit_events_statement_trgm_all
    ON audit_events USING gin (statement gin_trgm_ops)";

async fn run(manager: &SchemaManager<'_>, statements: &[&str]) -> Result<(), DbErr> {
    let db = manager.get_connection();
    for sql in statements {
        db.execute_unprepared(sql).await?;
    }
    Ok(())
}

/// Whether `sql`, given `name` as `$1`, returns a row.
async fn exists(manager: &SchemaManager<'_>, sql: &str, name: &str) -> Result<bool, DbErr> {
    let found = manager
        .get_connection()
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            [name.into()],
        ))
        .await?;
    Ok(found.is_some())
}

/// Whether `pg_trgm` is installed (migration m0009 creates it where it can).
async fn trigram(manager: &SchemaManager<'_>) -> Result<bool, DbErr> {
    exists(
        manager,
        "SELECT 1 FROM pg_extension WHERE extname = $1",
        "pg_trgm",
    )
    .await
}

/// Whether the index `name` exists and is valid (`partial`: and has a predicate).
async fn valid_index(
    manager: &SchemaManager<'_>,
    name: &str,
    partial: bool,
) -> Result<bool, DbErr> {
    let sql = format!(
        "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE c.relname = $1 AND i.indisvalid{}",
        if partial {
            " AND i.indpred IS NOT NULL"
        } else {
            ""
        }
    );
    exists(manager, &sql, name).await
}

/// Builds the index `name` with `create` (`CREATE INDEX CONCURRENTLY`), unless it exists and
/// is valid; an invalid one (a build that was cut off) is dropped first.
async fn build_index(manager: &SchemaManager<'_>, name: &str, create: &str) -> Result<(), DbErr> {
    if valid_index(manager, name, false).await? {
        return Ok(());
    }
    let drop = format!("DROP INDEX CONCURRENTLY IF EXISTS {name}");
    run(manager, &[&drop, create]).await
}

/// Replaces the trigram index on the events with one built by `create` under the name `new`,
/// unless it is already `partial` or not.
async fn replace_trigram(
    manager: &SchemaManager<'_>,
    partial: bool,
    new: &str,
    create: &str,
) -> Result<(), DbErr> {
    const NAME: &str = "audit_events_statement_trgm";
    let current = valid_index(manager, NAME, partial).await?
        && (partial || !valid_index(manager, NAME, true).await?);
    if current {
        return Ok(());
    }
    build_index(manager, new, create).await?;
    let rename = format!("ALTER INDEX {new} RENAME TO {NAME}");
    run(
        manager,
        &[
            "DROP INDEX CONCURRENTLY IF EXISTS audit_events_statement_trgm",
            &rename,
        ],
    )
    .await
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
        let column = "SELECT 1 FROM information_schema.columns \
            WHERE table_name = 'audit_events' AND column_name = $1";
        if !exists(manager, column, "statement_digest").await? {
            run(manager, &[ADD_COLUMN]).await?;
        }
        run(manager, &[CREATE_TEXTS]).await?;
        let check = "SELECT 1 FROM pg_constraint WHERE conname = $1";
        if !exists(manager, check, "audit_events_digest_of_statement").await? {
            run(manager, &[ADD_CHECK]).await?;
        }
        run(manager, TEXTS_GUARDS).await?;
        build_index(
            manager,
            "audit_events_statement_digest",
            CREATE_DIGEST_INDEX,
        )
        .await?;
        if trigram(manager).await? {
            replace_trigram(
                manager,
                true,
                "audit_events_statement_trgm_inline",
                CREATE_INLINE_TRGM,
            )
            .await?;
            run(manager, &[CREATE_TEXTS_TRGM]).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        if trigram(manager).await? {
            replace_trigram(
                manager,
                false,
                "audit_events_statement_trgm_all",
                CREATE_EVERY_TRGM,
            )
            .await?;
        }
        run(
            manager,
            &[
                "DROP TABLE IF EXISTS audit_texts",
                "DROP FUNCTION IF EXISTS countersign_audit_texts_guard()",
                "DROP INDEX CONCURRENTLY IF EXISTS audit_events_statement_digest",
                "ALTER TABLE audit_events DROP CONSTRAINT IF EXISTS audit_events_digest_of_statement",
                "ALTER TABLE audit_events DROP COLUMN IF EXISTS statement_digest",
            ],
        )
        .await
    }
}
