//! The `reviews` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "reviews")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub session_id: String,
    /// The identity (email) whose statement is held; never an approver.
    pub requester: String,
    pub resource: String,
    #[sea_orm(column_type = "Text")]
    pub statement: String,
    /// JSON array of statement kind names.
    #[sea_orm(column_type = "Text")]
    pub kinds: String,
    pub rule: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub message: Option<String>,
    /// `pending`, `approved`, `denied` or `expired`.
    pub status: String,
    pub approvals_required: i32,
    /// JSON array of `group:NAME` / `user:EMAIL`.
    #[sea_orm(column_type = "Text")]
    pub approvers: String,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    pub decided_at: Option<DateTimeUtc>,
    /// The statement's shape (`countersign_policy::fingerprint`); `None` if it does not parse.
    #[sea_orm(column_type = "Text", nullable)]
    pub fingerprint: Option<String>,
    /// The policy rule's cap on an approval's scope, in minutes; 0: once only.
    pub max_approval_minutes: i32,
    /// `statement` (a held statement) or `grant` (time-boxed access).
    pub subject: String,
    /// Grants: the access level requested.
    pub access_level: Option<String>,
    /// Grants: how long the grant lasts once approved, from `decided_at`.
    pub duration_secs: Option<i64>,
    /// Grants: why the requester needs access.
    #[sea_orm(column_type = "Text", nullable)]
    pub reason: Option<String>,
    /// Grants: an optional ticket reference.
    pub ticket: Option<String>,
    /// Each `group:` approver entry must be represented by a different approver.
    pub one_from_each: bool,
    /// Grants: when and by whom an approved grant was revoked.
    pub revoked_at: Option<DateTimeUtc>,
    pub revoked_by: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
