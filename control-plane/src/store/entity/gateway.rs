//! The `gateways` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "gateways")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub environment: String,
    /// Hex serial of the gateway's current client certificate.
    pub cert_serial: String,
    pub not_after: DateTimeUtc,
    pub enrolled_at: DateTimeUtc,
    pub last_seen: DateTimeUtc,
    pub version: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
