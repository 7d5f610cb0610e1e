//! Approval scope: an approval may cover one execution (the default) or, for a
//! while, every statement of the same shape by the same requester on the same
//! resource.
//!
//! `reviews.fingerprint` is the statement's shape (NULL when it does not
//! parse; such a review is never reused) and `reviews.max_approval_minutes` the
//! policy rule's cap (0: once only). `approvals.scope_minutes` is what the
//! approver chose: NULL for this execution only, else the window in minutes
//! from the review's `decided_at`.
//!
//! One column per `ALTER TABLE`: SQLite adds no more at a time.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Reviews {
    Table,
    Fingerprint,
    MaxApprovalMinutes,
}

#[derive(DeriveIden)]
enum Approvals {
    Table,
    ScopeMinutes,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Reviews::Table)
                    .add_column(ColumnDef::new(Reviews::Fingerprint).text().null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Reviews::Table)
                    .add_column(
                        ColumnDef::new(Reviews::MaxApprovalMinutes)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Approvals::Table)
                    .add_column(ColumnDef::new(Approvals::ScopeMinutes).integer().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Approvals::Table)
                    .drop_column(Approvals::ScopeMinutes)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Reviews::Table)
                    .drop_column(Reviews::MaxApprovalMinutes)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Reviews::Table)
                    .drop_column(Reviews::Fingerprint)
                    .to_owned(),
            )
            .await
    }
}
