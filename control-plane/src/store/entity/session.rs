//! The `sessions` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sessions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub identity_id: String,
    pub identity: String,
    pub resource: String,
    pub database_name: String,
    pub token_id: String,
    pub gateway_id: String,
    pub client_address: String,
    pub application_name: String,
    pub tls: bool,
    pub started_at: DateTimeUtc,
    /// JSON array of the groups the session was opened with.
    #[sea_orm(column_type = "Text")]
    pub groups: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
