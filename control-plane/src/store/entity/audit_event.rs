//! The `audit_events` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub session_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i64,
    pub at: DateTimeUtc,
    pub event: String,
    pub identity: String,
    pub resource: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub statement: Option<String>,
    /// JSON array of statement kind names.
    #[sea_orm(column_type = "Text")]
    pub kinds: String,
    pub protocol: Option<String>,
    pub parameter_count: Option<i32>,
    pub duration_us: Option<i64>,
    pub command_tag: Option<String>,
    pub rows: Option<i64>,
    #[sea_orm(column_type = "Text", nullable)]
    pub error: Option<String>,
    pub decision: Option<String>,
    pub rule: Option<String>,
    /// JSON object with event-specific detail (session start/end).
    #[sea_orm(column_type = "Text", nullable)]
    pub detail: Option<String>,
    pub received_at: DateTimeUtc,
    /// The session's event this one is chained to (`None` for the first).
    pub prev_seq: Option<i64>,
    /// `chain_hash` of that event, hex (`None` for the first).
    pub prev_hash: Option<String>,
    /// HMAC over `prev_hash` and this row's fields, hex. `None` only for rows
    /// stored before chaining and not yet sealed.
    pub chain_hash: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
