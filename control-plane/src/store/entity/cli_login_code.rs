//! The `cli_login_codes` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "cli_login_codes")]
pub struct Model {
    /// Hex SHA-256 of the one-time code.
    #[sea_orm(primary_key, auto_increment = false)]
    pub code_hash: String,
    pub identity_id: String,
    /// The CLI's S256 code challenge (base64url, no padding).
    pub challenge: String,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    pub used_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
