//! Grants: time-boxed access to a resource, requested by one person and
//! approved by others. A grant is stored as a row of `reviews` with `subject`
//! = `grant`, so it shares the review's decisions table (`approvals`) and with
//! it the database's segregation-of-duties backstops of `m0003_reviews`: one
//! decision per approver, and never one by the requester.
//!
//! New `reviews` columns (NULL or default for statement reviews): `subject`
//! (`statement` or `grant`), `access_level`, `duration_secs` (the grant's
//! length once approved, counted from `decided_at`), `reason`, `ticket`,
//! `one_from_each` (each approver group named must be represented),
//! `revoked_at` and `revoked_by`. `approvals.approver_groups` records which of
//! the named approver groups the approver belonged to when deciding (JSON).
//!
//! A trigger refuses un-revoking a grant or changing its terms after the fact.
//! One column per `ALTER TABLE`: SQLite adds no more at a time.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Reviews {
    Table,
    Subject,
    AccessLevel,
    DurationSecs,
    Reason,
    Ticket,
    OneFromEach,
    RevokedAt,
    RevokedBy,
    Requester,
    Resource,
}

#[derive(DeriveIden)]
enum Approvals {
    Table,
    ApproverGroups,
}

const POSTGRES_UP: &str = r#"
CREATE FUNCTION countersign_grant_terms_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.subject IS DISTINCT FROM OLD.subject
       OR NEW.access_level IS DISTINCT FROM OLD.access_level
       OR NEW.duration_secs IS DISTINCT FROM OLD.duration_secs
       OR (OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS DISTINCT FROM OLD.revoked_at) THEN
        RAISE EXCEPTION 'a grant''s terms and revocation cannot be changed (review %)', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER reviews_grant_terms_fixed
    BEFORE UPDATE ON reviews
    FOR EACH ROW EXECUTE FUNCTION countersign_grant_terms_fixed();
"#;

const POSTGRES_DOWN: &str = r#"
DROP TRIGGER IF EXISTS reviews_grant_terms_fixed ON reviews;
DROP FUNCTION IF EXISTS countersign_grant_terms_fixed();
"#;

const SQLITE_UP: &str = r#"
CREATE TRIGGER reviews_grant_terms_fixed BEFORE UPDATE ON reviews
WHEN NEW.subject IS NOT OLD.subject
  OR NEW.access_level IS NOT OLD.access_level
  OR NEW.duration_secs IS NOT OLD.duration_secs
  OR (OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS NOT OLD.revoked_at)
BEGIN
    SELECT RAISE(ABORT, 'a grant''s terms and revocation cannot be changed');
END;
"#;

const SQLITE_DOWN: &str = "DROP TRIGGER IF EXISTS reviews_grant_terms_fixed;";

async fn add(
    manager: &SchemaManager<'_>,
    table: impl IntoIden,
    col: ColumnDef,
) -> Result<(), DbErr> {
    manager
        .alter_table(Table::alter().table(table).add_column(col).to_owned())
        .await
}

async fn drop(
    manager: &SchemaManager<'_>,
    table: impl IntoIden,
    col: impl IntoIden,
) -> Result<(), DbErr> {
    manager
        .alter_table(Table::alter().table(table).drop_column(col).to_owned())
        .await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let columns = [
            ColumnDef::new(Reviews::Subject)
                .string()
                .not_null()
                .default("statement")
                .check(Expr::col(Reviews::Subject).is_in(["statement", "grant"]))
                .to_owned(),
            ColumnDef::new(Reviews::AccessLevel)
                .string()
                .null()
                .to_owned(),
            ColumnDef::new(Reviews::DurationSecs)
                .big_integer()
                .null()
                .to_owned(),
            ColumnDef::new(Reviews::Reason).text().null().to_owned(),
            ColumnDef::new(Reviews::Ticket).string().null().to_owned(),
            ColumnDef::new(Reviews::OneFromEach)
                .boolean()
                .not_null()
                .default(false)
                .to_owned(),
            ColumnDef::new(Reviews::RevokedAt)
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
            ColumnDef::new(Reviews::RevokedBy)
                .string()
                .null()
                .to_owned(),
        ];
        for col in columns {
            add(manager, Reviews::Table, col).await?;
        }
        add(
            manager,
            Approvals::Table,
            ColumnDef::new(Approvals::ApproverGroups)
                .text()
                .null()
                .to_owned(),
        )
        .await?;
        manager
            .create_index(
                Index::create()
                    .name("reviews_subject_requester_resource")
                    .table(Reviews::Table)
                    .col(Reviews::Subject)
                    .col(Reviews::Requester)
                    .col(Reviews::Resource)
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
        manager
            .drop_index(
                Index::drop()
                    .name("reviews_subject_requester_resource")
                    .table(Reviews::Table)
                    .to_owned(),
            )
            .await?;
        drop(manager, Approvals::Table, Approvals::ApproverGroups).await?;
        for col in [
            Reviews::RevokedBy,
            Reviews::RevokedAt,
            Reviews::OneFromEach,
            Reviews::Ticket,
            Reviews::Reason,
            Reviews::DurationSecs,
            Reviews::AccessLevel,
            Reviews::Subject,
        ] {
            drop(manager, Reviews::Table, col).await?;
        }
        Ok(())
    }
}
