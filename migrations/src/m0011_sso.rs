//! Single sign-on with OpenID Connect: pending logins, subject bindings,
//! console sessions and one-time CLI login codes.
//!
//! - `oidc_logins`: one row per started login, keyed by a SHA-256 of the
//!   `state` sent to the identity provider. It keeps the nonce and the PKCE
//!   verifier server-side (they never reach the browser), a SHA-256 of the
//!   random value in the browser's login cookie (so the callback must come
//!   back to the browser that started the login), the console page to return
//!   to, and, for a CLI login, the loopback redirect and the CLI's code
//!   challenge. A row is used once
//!   (`consumed_at`) and refused after `expires_at`.
//! - `oidc_subjects`: which identity an issuer's subject (`sub`) signed in
//!   as, so that an email later given to someone else at the provider cannot
//!   take over the identity.
//! - `console_sessions`: web console sessions, keyed by a SHA-256 of the
//!   cookie value, with the session's CSRF token.
//! - `cli_login_codes`: one-time codes handed to `countersign login` on its
//!   loopback redirect, keyed by a SHA-256 of the code.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Identities {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum OidcLogins {
    Table,
    StateHash,
    Nonce,
    PkceVerifier,
    BrowserHash,
    ReturnTo,
    CliRedirect,
    CliChallenge,
    CreatedAt,
    ExpiresAt,
    ConsumedAt,
}

#[derive(DeriveIden)]
enum OidcSubjects {
    Table,
    Issuer,
    Subject,
    IdentityId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ConsoleSessions {
    Table,
    IdHash,
    IdentityId,
    CsrfToken,
    CreatedAt,
    ExpiresAt,
    EndedAt,
}

#[derive(DeriveIden)]
enum CliLoginCodes {
    Table,
    CodeHash,
    IdentityId,
    Challenge,
    CreatedAt,
    ExpiresAt,
    UsedAt,
}

fn timestamp(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

fn optional_timestamp(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .null()
        .to_owned()
}

fn identity_fk(table: impl IntoIden, col: impl IntoIden) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from(table, col)
        .to(Identities::Table, Identities::Id)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(OidcLogins::Table)
                    .col(
                        ColumnDef::new(OidcLogins::StateHash)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(OidcLogins::Nonce).string().not_null())
                    .col(ColumnDef::new(OidcLogins::PkceVerifier).string().not_null())
                    .col(ColumnDef::new(OidcLogins::BrowserHash).string().not_null())
                    .col(ColumnDef::new(OidcLogins::ReturnTo).text().null())
                    .col(ColumnDef::new(OidcLogins::CliRedirect).text().null())
                    .col(ColumnDef::new(OidcLogins::CliChallenge).string().null())
                    .col(timestamp(OidcLogins::CreatedAt))
                    .col(timestamp(OidcLogins::ExpiresAt))
                    .col(optional_timestamp(OidcLogins::ConsumedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(OidcSubjects::Table)
                    .col(ColumnDef::new(OidcSubjects::Issuer).text().not_null())
                    .col(ColumnDef::new(OidcSubjects::Subject).text().not_null())
                    .col(ColumnDef::new(OidcSubjects::IdentityId).string().not_null())
                    .col(timestamp(OidcSubjects::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(OidcSubjects::Issuer)
                            .col(OidcSubjects::Subject),
                    )
                    .foreign_key(&mut identity_fk(
                        OidcSubjects::Table,
                        OidcSubjects::IdentityId,
                    ))
                    .to_owned(),
            )
            .await?;
        // One subject per issuer and identity: a second subject claiming the
        // same email is refused rather than merged.
        manager
            .create_index(
                Index::create()
                    .name("oidc_subjects_identity")
                    .table(OidcSubjects::Table)
                    .col(OidcSubjects::Issuer)
                    .col(OidcSubjects::IdentityId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ConsoleSessions::Table)
                    .col(
                        ColumnDef::new(ConsoleSessions::IdHash)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(ConsoleSessions::IdentityId)
                            .string()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ConsoleSessions::CsrfToken)
                            .string()
                            .not_null(),
                    )
                    .col(timestamp(ConsoleSessions::CreatedAt))
                    .col(timestamp(ConsoleSessions::ExpiresAt))
                    .col(optional_timestamp(ConsoleSessions::EndedAt))
                    .foreign_key(&mut identity_fk(
                        ConsoleSessions::Table,
                        ConsoleSessions::IdentityId,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("console_sessions_identity")
                    .table(ConsoleSessions::Table)
                    .col(ConsoleSessions::IdentityId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(CliLoginCodes::Table)
                    .col(
                        ColumnDef::new(CliLoginCodes::CodeHash)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(CliLoginCodes::IdentityId)
                            .string()
                            .not_null(),
                    )
                    .col(ColumnDef::new(CliLoginCodes::Challenge).string().not_null())
                    .col(timestamp(CliLoginCodes::CreatedAt))
                    .col(timestamp(CliLoginCodes::ExpiresAt))
                    .col(optional_timestamp(CliLoginCodes::UsedAt))
                    .foreign_key(&mut identity_fk(
                        CliLoginCodes::Table,
                        CliLoginCodes::IdentityId,
                    ))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            CliLoginCodes::Table.into_iden(),
            ConsoleSessions::Table.into_iden(),
            OidcSubjects::Table.into_iden(),
            OidcLogins::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
