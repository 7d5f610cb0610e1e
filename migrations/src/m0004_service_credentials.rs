//! Credentials for service accounts: API keys and workload-identity trust.
//!
//! `api_keys` keeps only a SHA-256 hash of each key's secret part; the key
//! itself is shown once at creation. `workload_trust` holds, per service
//! account, the OIDC issuer, audience and exact claim values a pipeline's
//! token must carry to be exchanged for an access token.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Identities {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    IdentityId,
    Hash,
    CreatedAt,
    LastUsedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum WorkloadTrust {
    Table,
    IdentityId,
    Issuer,
    Audience,
    Claims,
    UpdatedAt,
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
                    .table(ApiKeys::Table)
                    .col(
                        ColumnDef::new(ApiKeys::Id)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(ApiKeys::IdentityId).string().not_null())
                    .col(ColumnDef::new(ApiKeys::Hash).string().not_null())
                    .col(timestamp(ApiKeys::CreatedAt))
                    .col(
                        ColumnDef::new(ApiKeys::LastUsedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(ApiKeys::RevokedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(ApiKeys::Table, ApiKeys::IdentityId)
                            .to(Identities::Table, Identities::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("api_keys_identity")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::IdentityId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WorkloadTrust::Table)
                    .col(
                        ColumnDef::new(WorkloadTrust::IdentityId)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(WorkloadTrust::Issuer).string().not_null())
                    .col(ColumnDef::new(WorkloadTrust::Audience).string().not_null())
                    .col(ColumnDef::new(WorkloadTrust::Claims).text().not_null())
                    .col(timestamp(WorkloadTrust::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(WorkloadTrust::Table, WorkloadTrust::IdentityId)
                            .to(Identities::Table, Identities::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(WorkloadTrust::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(ApiKeys::Table).to_owned())
            .await
    }
}
