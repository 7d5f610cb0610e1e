//! Per-statement reviews and their decisions, with segregation of duties
//! enforced by the database itself.
//!
//! `approvals` holds one row per (review, approver): approvals *and* denials,
//! so nobody can decide a review twice. Triggers refuse any row whose approver
//! is the review's requester, and refuse changing a review's requester, so
//! that no code path, bug or hand-written SQL gets around the invariant.
//!
//! Not guaranteed: a database superuser can disable triggers
//! (`session_replication_role = replica`) or drop them.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Reviews {
    Table,
    Id,
    SessionId,
    Requester,
    Resource,
    Statement,
    Kinds,
    Rule,
    Message,
    Status,
    ApprovalsRequired,
    Approvers,
    CreatedAt,
    ExpiresAt,
    DecidedAt,
}

#[derive(DeriveIden)]
enum Approvals {
    Table,
    ReviewId,
    Approver,
    Decision,
    Comment,
    At,
}

/// PostgreSQL: one function serves both triggers' checks on `approvals`.
/// Emails are compared case-insensitively, like the service layer does.
const POSTGRES_UP: &str = r#"
CREATE FUNCTION countersign_approvals_sod() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM reviews r
               WHERE r.id = NEW.review_id AND lower(r.requester) = lower(NEW.approver)) THEN
        RAISE EXCEPTION 'segregation of duties: the requester cannot approve or deny their own review (review %)', NEW.review_id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER approvals_segregation_of_duties
    BEFORE INSERT OR UPDATE ON approvals
    FOR EACH ROW EXECUTE FUNCTION countersign_approvals_sod();

CREATE FUNCTION countersign_reviews_requester_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.requester IS DISTINCT FROM OLD.requester THEN
        RAISE EXCEPTION 'segregation of duties: a review''s requester cannot be changed (review %)', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER reviews_requester_fixed
    BEFORE UPDATE ON reviews
    FOR EACH ROW EXECUTE FUNCTION countersign_reviews_requester_fixed();
"#;

const POSTGRES_DOWN: &str = r#"
DROP TRIGGER IF EXISTS reviews_requester_fixed ON reviews;
DROP FUNCTION IF EXISTS countersign_reviews_requester_fixed();
DROP TRIGGER IF EXISTS approvals_segregation_of_duties ON approvals;
DROP FUNCTION IF EXISTS countersign_approvals_sod();
"#;

/// SQLite: triggers cannot share a function, so each statement gets its own.
const SQLITE_UP: &str = r#"
CREATE TRIGGER approvals_sod_insert BEFORE INSERT ON approvals
WHEN lower(NEW.approver) = (SELECT lower(requester) FROM reviews WHERE id = NEW.review_id)
BEGIN
    SELECT RAISE(ABORT, 'segregation of duties: the requester cannot approve or deny their own review');
END;
CREATE TRIGGER approvals_sod_update BEFORE UPDATE ON approvals
WHEN lower(NEW.approver) = (SELECT lower(requester) FROM reviews WHERE id = NEW.review_id)
BEGIN
    SELECT RAISE(ABORT, 'segregation of duties: the requester cannot approve or deny their own review');
END;
CREATE TRIGGER reviews_requester_fixed BEFORE UPDATE OF requester ON reviews
WHEN NEW.requester IS NOT OLD.requester
BEGIN
    SELECT RAISE(ABORT, 'segregation of duties: a review''s requester cannot be changed');
END;
"#;

const SQLITE_DOWN: &str = r#"
DROP TRIGGER IF EXISTS reviews_requester_fixed;
DROP TRIGGER IF EXISTS approvals_sod_update;
DROP TRIGGER IF EXISTS approvals_sod_insert;
"#;

fn timestamp(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Reviews::Table)
                    .col(
                        ColumnDef::new(Reviews::Id)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Reviews::SessionId).string().not_null())
                    .col(ColumnDef::new(Reviews::Requester).string().not_null())
                    .col(ColumnDef::new(Reviews::Resource).string().not_null())
                    .col(ColumnDef::new(Reviews::Statement).text().not_null())
                    .col(ColumnDef::new(Reviews::Kinds).text().not_null())
                    .col(ColumnDef::new(Reviews::Rule).string().not_null())
                    .col(ColumnDef::new(Reviews::Message).text().null())
                    .col(
                        ColumnDef::new(Reviews::Status).string().not_null().check(
                            Expr::col(Reviews::Status)
                                .is_in(["pending", "approved", "denied", "expired"]),
                        ),
                    )
                    .col(
                        ColumnDef::new(Reviews::ApprovalsRequired)
                            .integer()
                            .not_null()
                            .check(Expr::col(Reviews::ApprovalsRequired).gte(1)),
                    )
                    .col(ColumnDef::new(Reviews::Approvers).text().not_null())
                    .col(timestamp(Reviews::CreatedAt))
                    .col(timestamp(Reviews::ExpiresAt))
                    .col(
                        ColumnDef::new(Reviews::DecidedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, col) in [
            ("reviews_status_created", Reviews::Status),
            ("reviews_requester_created", Reviews::Requester),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Reviews::Table)
                        .col(col)
                        .col(Reviews::CreatedAt)
                        .to_owned(),
                )
                .await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(Approvals::Table)
                    .col(ColumnDef::new(Approvals::ReviewId).string().not_null())
                    .col(ColumnDef::new(Approvals::Approver).string().not_null())
                    .col(
                        ColumnDef::new(Approvals::Decision)
                            .string()
                            .not_null()
                            .check(Expr::col(Approvals::Decision).is_in(["approve", "deny"])),
                    )
                    .col(ColumnDef::new(Approvals::Comment).text().null())
                    .col(timestamp(Approvals::At))
                    // One decision per approver and review: nobody counts twice.
                    .primary_key(
                        Index::create()
                            .col(Approvals::ReviewId)
                            .col(Approvals::Approver),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Approvals::Table, Approvals::ReviewId)
                            .to(Reviews::Table, Reviews::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        let sql = match manager.get_database_backend() {
            DbBackend::Postgres => POSTGRES_UP,
            DbBackend::Sqlite => SQLITE_UP,
            other => {
                return Err(DbErr::Migration(format!(
                    "reviews need PostgreSQL or SQLite, not {other:?}"
                )));
            }
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
            .drop_table(Table::drop().table(Approvals::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Reviews::Table).to_owned())
            .await
    }
}
