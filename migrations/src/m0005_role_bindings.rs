//! Role bindings: who holds `requester`, `approver`, `admin` or `auditor`, and on what scope.
//!
//! `member` is `group:NAME` or `user:EMAIL`; `resources` and `environments` are JSON arrays
//! of globs, empty meaning any. A binding is unique by all four, so applying the same policy
//! twice, or adding the same binding twice, cannot duplicate it.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum RoleBindings {
    Table,
    Id,
    Role,
    Member,
    Resources,
    Environments,
    CreatedBy,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RoleBindings::Table)
                    .col(
                        ColumnDef::new(RoleBindings::Id)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(RoleBindings::Role)
                            .string()
                            .not_null()
                            .check(Expr::col(RoleBindings::Role).is_in([
                                "requester",
                                "approver",
                                "admin",
                                "auditor",
                            ])),
                    )
                    .col(ColumnDef::new(RoleBindings::Member).text().not_null())
                    .col(ColumnDef::new(RoleBindings::Resources).text().not_null())
                    .col(ColumnDef::new(RoleBindings::Environments).text().not_null())
                    .col(ColumnDef::new(RoleBindings::CreatedBy).string().not_null())
                    .col(
                        ColumnDef::new(RoleBindings::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("role_bindings_unique")
                    .table(RoleBindings::Table)
                    .col(RoleBindings::Role)
                    .col(RoleBindings::Member)
                    .col(RoleBindings::Resources)
                    .col(RoleBindings::Environments)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(RoleBindings::Table).to_owned())
            .await
    }
}
