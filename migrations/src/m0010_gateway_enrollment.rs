//! Gateway enrollment: one-time enrollment tokens and enrolled gateways.
//!
//! `gateway_enrollment_tokens` keeps only the SHA-256 hash of each token; the
//! token is shown once when it is created. A token is bound to one
//! environment, expires, and is spent by setting `used_at` in one conditional
//! update, so two gateways racing with the same token cannot both enroll.
//! `gateways` records each enrolled gateway with the serial and end of its
//! current client certificate (renewals update them).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum GatewayEnrollmentTokens {
    Table,
    Hash,
    Environment,
    CreatedBy,
    CreatedAt,
    ExpiresAt,
    UsedAt,
    UsedBy,
}

#[derive(DeriveIden)]
enum Gateways {
    Table,
    Id,
    Environment,
    CertSerial,
    NotAfter,
    EnrolledAt,
    LastSeen,
    Version,
}

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
                    .table(GatewayEnrollmentTokens::Table)
                    .col(
                        ColumnDef::new(GatewayEnrollmentTokens::Hash)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(GatewayEnrollmentTokens::Environment)
                            .string()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(GatewayEnrollmentTokens::CreatedBy)
                            .string()
                            .not_null(),
                    )
                    .col(timestamp(GatewayEnrollmentTokens::CreatedAt))
                    .col(timestamp(GatewayEnrollmentTokens::ExpiresAt))
                    .col(
                        ColumnDef::new(GatewayEnrollmentTokens::UsedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(GatewayEnrollmentTokens::UsedBy)
                            .string()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Gateways::Table)
                    .col(
                        ColumnDef::new(Gateways::Id)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Gateways::Environment).string().not_null())
                    .col(ColumnDef::new(Gateways::CertSerial).string().not_null())
                    .col(timestamp(Gateways::NotAfter))
                    .col(timestamp(Gateways::EnrolledAt))
                    .col(timestamp(Gateways::LastSeen))
                    .col(ColumnDef::new(Gateways::Version).string().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("gateways_environment")
                    .table(Gateways::Table)
                    .col(Gateways::Environment)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Gateways::Table).to_owned())
            .await?;
        manager
            .drop_table(
                Table::drop()
                    .table(GatewayEnrollmentTokens::Table)
                    .to_owned(),
            )
            .await
    }
}
