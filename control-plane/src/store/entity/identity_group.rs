//! The `identity_groups` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "identity_groups")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub identity_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub group_name: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
