//! Identities, groups, resources, tokens, sessions, audit events and settings.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Identities {
    Table,
    Id,
    Email,
    Kind,
    DisplayName,
    Disabled,
    CreatedAt,
}

#[derive(DeriveIden)]
enum IdentityGroups {
    Table,
    IdentityId,
    GroupName,
}

#[derive(DeriveIden)]
enum Resources {
    Table,
    Id,
    Name,
    Kind,
    Environment,
    StrictAudit,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Tokens {
    Table,
    Id,
    IdentityId,
    Groups,
    IssuedAt,
    ExpiresAt,
    RevokedAt,
    CreatedBy,
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    Id,
    IdentityId,
    Identity,
    Resource,
    DatabaseName,
    TokenId,
    GatewayId,
    ClientAddress,
    ApplicationName,
    Tls,
    StartedAt,
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    SessionId,
    Seq,
    At,
    Event,
    Identity,
    Resource,
    Statement,
    Kinds,
    Protocol,
    ParameterCount,
    DurationUs,
    CommandTag,
    Rows,
    Error,
    Decision,
    Rule,
    Detail,
    ReceivedAt,
}

#[derive(DeriveIden)]
enum Settings {
    Table,
    Key,
    Value,
}

fn text_pk(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .string()
        .not_null()
        .primary_key()
        .to_owned()
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
                    .table(Identities::Table)
                    .col(text_pk(Identities::Id))
                    .col(
                        ColumnDef::new(Identities::Email)
                            .string()
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(Identities::Kind).string().not_null())
                    .col(ColumnDef::new(Identities::DisplayName).string().null())
                    .col(
                        ColumnDef::new(Identities::Disabled)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .col(timestamp(Identities::CreatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(IdentityGroups::Table)
                    .col(
                        ColumnDef::new(IdentityGroups::IdentityId)
                            .string()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(IdentityGroups::GroupName)
                            .string()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(IdentityGroups::IdentityId)
                            .col(IdentityGroups::GroupName),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(IdentityGroups::Table, IdentityGroups::IdentityId)
                            .to(Identities::Table, Identities::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Resources::Table)
                    .col(text_pk(Resources::Id))
                    .col(
                        ColumnDef::new(Resources::Name)
                            .string()
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(Resources::Kind).string().not_null())
                    .col(ColumnDef::new(Resources::Environment).string().not_null())
                    .col(
                        ColumnDef::new(Resources::StrictAudit)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .col(timestamp(Resources::CreatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Tokens::Table)
                    .col(text_pk(Tokens::Id))
                    .col(ColumnDef::new(Tokens::IdentityId).string().not_null())
                    .col(ColumnDef::new(Tokens::Groups).text().not_null())
                    .col(timestamp(Tokens::IssuedAt))
                    .col(timestamp(Tokens::ExpiresAt))
                    .col(
                        ColumnDef::new(Tokens::RevokedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(ColumnDef::new(Tokens::CreatedBy).string().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .from(Tokens::Table, Tokens::IdentityId)
                            .to(Identities::Table, Identities::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("tokens_revoked_expires")
                    .table(Tokens::Table)
                    .col(Tokens::RevokedAt)
                    .col(Tokens::ExpiresAt)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Sessions::Table)
                    .col(text_pk(Sessions::Id))
                    .col(ColumnDef::new(Sessions::IdentityId).string().not_null())
                    .col(ColumnDef::new(Sessions::Identity).string().not_null())
                    .col(ColumnDef::new(Sessions::Resource).string().not_null())
                    .col(ColumnDef::new(Sessions::DatabaseName).string().not_null())
                    .col(ColumnDef::new(Sessions::TokenId).string().not_null())
                    .col(ColumnDef::new(Sessions::GatewayId).string().not_null())
                    .col(ColumnDef::new(Sessions::ClientAddress).string().not_null())
                    .col(
                        ColumnDef::new(Sessions::ApplicationName)
                            .string()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Sessions::Tls).boolean().not_null())
                    .col(timestamp(Sessions::StartedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(AuditEvents::Table)
                    .col(ColumnDef::new(AuditEvents::SessionId).string().not_null())
                    .col(ColumnDef::new(AuditEvents::Seq).big_integer().not_null())
                    .col(timestamp(AuditEvents::At))
                    .col(ColumnDef::new(AuditEvents::Event).string().not_null())
                    .col(ColumnDef::new(AuditEvents::Identity).string().not_null())
                    .col(ColumnDef::new(AuditEvents::Resource).string().not_null())
                    .col(ColumnDef::new(AuditEvents::Statement).text().null())
                    .col(ColumnDef::new(AuditEvents::Kinds).text().not_null())
                    .col(ColumnDef::new(AuditEvents::Protocol).string().null())
                    .col(ColumnDef::new(AuditEvents::ParameterCount).integer().null())
                    .col(ColumnDef::new(AuditEvents::DurationUs).big_integer().null())
                    .col(ColumnDef::new(AuditEvents::CommandTag).string().null())
                    .col(ColumnDef::new(AuditEvents::Rows).big_integer().null())
                    .col(ColumnDef::new(AuditEvents::Error).text().null())
                    .col(ColumnDef::new(AuditEvents::Decision).string().null())
                    .col(ColumnDef::new(AuditEvents::Rule).string().null())
                    .col(ColumnDef::new(AuditEvents::Detail).text().null())
                    .col(timestamp(AuditEvents::ReceivedAt))
                    .primary_key(
                        Index::create()
                            .col(AuditEvents::SessionId)
                            .col(AuditEvents::Seq),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, col) in [
            ("audit_events_identity_at", AuditEvents::Identity),
            ("audit_events_resource_at", AuditEvents::Resource),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(AuditEvents::Table)
                        .col(col)
                        .col(AuditEvents::At)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("audit_events_at")
                    .table(AuditEvents::Table)
                    .col(AuditEvents::At)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Settings::Table)
                    .col(text_pk(Settings::Key))
                    .col(ColumnDef::new(Settings::Value).text().not_null())
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            AuditEvents::Table.into_iden(),
            Sessions::Table.into_iden(),
            Tokens::Table.into_iden(),
            Resources::Table.into_iden(),
            IdentityGroups::Table.into_iden(),
            Identities::Table.into_iden(),
            Settings::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
