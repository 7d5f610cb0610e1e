//! The `role_bindings` table: who holds which role, on what scope.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "role_bindings")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// requester | approver | admin | auditor
    pub role: String,
    /// `group:NAME` or `user:EMAIL`.
    #[sea_orm(column_type = "Text")]
    pub member: String,
    /// JSON array of resource globs; empty means any.
    #[sea_orm(column_type = "Text")]
    pub resources: String,
    /// JSON array of environment globs; empty means any.
    #[sea_orm(column_type = "Text")]
    pub environments: String,
    /// Who created it: an identity, or `policy:<version>` for bindings a policy declared.
    pub created_by: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
