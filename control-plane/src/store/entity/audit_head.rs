//! The `audit_heads` table: each session's chain head, and its row lock.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_heads")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub session_id: String,
    /// Seq of the event chained last (`None` while the session has none).
    pub last_seq: Option<i64>,
    /// That event's `chain_hash`, hex.
    pub last_hash: Option<String>,
    /// Highest seq stored in the session.
    pub max_seq: Option<i64>,
    /// Events chained so far in the session.
    pub events: i64,
    /// `events` when the last checkpoint covered this head.
    pub checkpointed_events: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
