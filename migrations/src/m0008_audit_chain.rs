//! The tamper-evident audit chain (see `docs/audit.md`).
//!
//! - `audit_events` gains `prev_seq`, `prev_hash` and `chain_hash`: each event
//!   is HMAC-chained to the event stored before it in the same session.
//! - `audit_heads` holds each session's chain head. Its row is the per-session
//!   lock that orders inserts into one session; different sessions never wait
//!   on each other.
//! - `audit_checkpoints` is an append-only, HMAC-chained list of checkpoints:
//!   periodic ones commit to the heads of the sessions that changed, purge ones
//!   record what the retention purge removed.
//! - `audit_purge_permits` holds a row only inside the purge transaction: the
//!   delete trigger on `audit_events` lets deletes through only while that row
//!   is visible, so only the purge's own transaction can delete.
//!
//! Triggers refuse updating or deleting checkpoints, updating a chained event,
//! and deleting an event outside the purge. Rows stored before this migration
//! have no chain yet; the control plane chains ("seals") them once, which is
//! the one update the trigger allows.
//!
//! Not guaranteed: the triggers stop mistakes and casual edits, not a database
//! owner (who can drop them, or on PostgreSQL set `session_replication_role`).
//! Detecting such edits is the chain's job, not the triggers'.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    PrevSeq,
    PrevHash,
    ChainHash,
}

#[derive(DeriveIden)]
enum AuditHeads {
    Table,
    SessionId,
    LastSeq,
    LastHash,
    MaxSeq,
    Events,
    CheckpointedEvents,
}

#[derive(DeriveIden)]
enum AuditCheckpoints {
    Table,
    Number,
    Kind,
    CreatedAt,
    PrevHash,
    Entries,
    Hash,
}

#[derive(DeriveIden)]
enum AuditPurgePermits {
    Table,
    Id,
}

const POSTGRES_UP: &str = r#"
CREATE INDEX audit_heads_dirty ON audit_heads (session_id) WHERE events > checkpointed_events;
CREATE INDEX audit_events_unchained ON audit_events (session_id) WHERE chain_hash IS NULL;

CREATE FUNCTION countersign_audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF EXISTS (SELECT 1 FROM audit_purge_permits) THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION 'audit events are append-only: only the retention purge deletes them (% %)', OLD.session_id, OLD.seq
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF OLD.chain_hash IS NULL THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit events are append-only: a chained event cannot be changed (% %)', OLD.session_id, OLD.seq
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION countersign_audit_events_append_only();

CREATE FUNCTION countersign_audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_checkpoints_append_only
    BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION countersign_audit_refuse_change();
CREATE TRIGGER audit_checkpoints_no_truncate
    BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION countersign_audit_refuse_change();
CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION countersign_audit_refuse_change();
"#;

const POSTGRES_DOWN: &str = r#"
DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events;
DROP TRIGGER IF EXISTS audit_checkpoints_no_truncate ON audit_checkpoints;
DROP TRIGGER IF EXISTS audit_checkpoints_append_only ON audit_checkpoints;
DROP FUNCTION IF EXISTS countersign_audit_refuse_change();
DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events;
DROP FUNCTION IF EXISTS countersign_audit_events_append_only();
DROP INDEX IF EXISTS audit_events_unchained;
"#;

const SQLITE_UP: &str = r#"
CREATE INDEX audit_heads_dirty ON audit_heads (session_id) WHERE events > checkpointed_events;
CREATE INDEX audit_events_unchained ON audit_events (session_id) WHERE chain_hash IS NULL;
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
WHEN OLD.chain_hash IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only: a chained event cannot be changed');
END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
WHEN NOT EXISTS (SELECT 1 FROM audit_purge_permits)
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only: only the retention purge deletes them');
END;
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit_checkpoints is append-only: UPDATE refused');
END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit_checkpoints is append-only: DELETE refused');
END;
"#;

const SQLITE_DOWN: &str = r#"
DROP TRIGGER IF EXISTS audit_checkpoints_no_delete;
DROP TRIGGER IF EXISTS audit_checkpoints_no_update;
DROP TRIGGER IF EXISTS audit_events_no_delete;
DROP TRIGGER IF EXISTS audit_events_no_update;
DROP INDEX IF EXISTS audit_events_unchained;
"#;

/// SQLite adds one column per `ALTER TABLE`.
async fn add(manager: &SchemaManager<'_>, col: ColumnDef) -> Result<(), DbErr> {
    manager
        .alter_table(
            Table::alter()
                .table(AuditEvents::Table)
                .add_column(col)
                .to_owned(),
        )
        .await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        add(
            manager,
            ColumnDef::new(AuditEvents::PrevSeq)
                .big_integer()
                .null()
                .to_owned(),
        )
        .await?;
        add(
            manager,
            ColumnDef::new(AuditEvents::PrevHash)
                .string()
                .null()
                .to_owned(),
        )
        .await?;
        add(
            manager,
            ColumnDef::new(AuditEvents::ChainHash)
                .string()
                .null()
                .to_owned(),
        )
        .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditHeads::Table)
                    .col(
                        ColumnDef::new(AuditHeads::SessionId)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(AuditHeads::LastSeq).big_integer().null())
                    .col(ColumnDef::new(AuditHeads::LastHash).string().null())
                    .col(ColumnDef::new(AuditHeads::MaxSeq).big_integer().null())
                    .col(
                        ColumnDef::new(AuditHeads::Events)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .col(
                        ColumnDef::new(AuditHeads::CheckpointedEvents)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditCheckpoints::Table)
                    .col(
                        ColumnDef::new(AuditCheckpoints::Number)
                            .big_integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(AuditCheckpoints::Kind).string().not_null())
                    .col(
                        ColumnDef::new(AuditCheckpoints::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuditCheckpoints::PrevHash)
                            .string()
                            .not_null(),
                    )
                    .col(ColumnDef::new(AuditCheckpoints::Entries).text().not_null())
                    .col(ColumnDef::new(AuditCheckpoints::Hash).string().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditPurgePermits::Table)
                    .col(
                        ColumnDef::new(AuditPurgePermits::Id)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .to_owned(),
            )
            .await?;
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
        for table in [
            AuditPurgePermits::Table.into_iden(),
            AuditCheckpoints::Table.into_iden(),
            AuditHeads::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        for col in [
            AuditEvents::ChainHash,
            AuditEvents::PrevHash,
            AuditEvents::PrevSeq,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(AuditEvents::Table)
                        .drop_column(col)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
