//! The `oidc_logins` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "oidc_logins")]
pub struct Model {
    /// Hex SHA-256 of the `state` parameter.
    #[sea_orm(primary_key, auto_increment = false)]
    pub state_hash: String,
    pub nonce: String,
    pub pkce_verifier: String,
    /// Hex SHA-256 of the login cookie set in the browser that started the login.
    pub browser_hash: String,
    /// Console path to land on after a browser login.
    #[sea_orm(column_type = "Text", nullable)]
    pub return_to: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub cli_redirect: Option<String>,
    pub cli_challenge: Option<String>,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    pub consumed_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
