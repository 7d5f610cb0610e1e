//! The `audit_checkpoints` table: append-only, HMAC-chained checkpoints.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_checkpoints")]
pub struct Model {
    /// 1, 2, 3…: the primary key makes concurrent writers agree on one.
    #[sea_orm(primary_key, auto_increment = false)]
    pub number: i64,
    /// `periodic` or `purge`.
    pub kind: String,
    pub created_at: DateTimeUtc,
    /// The previous checkpoint's `hash`, hex (empty for number 1).
    pub prev_hash: String,
    /// JSON array of entries (see `store::audit::checkpoint`).
    #[sea_orm(column_type = "Text")]
    pub entries: String,
    /// HMAC over the fields above, hex.
    pub hash: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
