//! The `approvals` table: one decision (approve or deny) per review and approver.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "approvals")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub review_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub approver: String,
    /// `approve` or `deny`.
    pub decision: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub comment: Option<String>,
    pub at: DateTimeUtc,
    /// Approvals only: `None` covers this execution; `Some(n)` also covers the
    /// same statement shape for n minutes from the review's `decided_at`.
    pub scope_minutes: Option<i32>,
    /// JSON array: the named approver groups the approver was in when deciding.
    #[sea_orm(column_type = "Text", nullable)]
    pub approver_groups: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
