//! Resources: the databases and hosts that gateways serve, by name.

use super::entity::resource;
use super::{Store, StoreError};
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, sea_query::OnConflict,
};
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Resource {
    pub id: String,
    pub name: String,
    /// The protocol: `postgres`.
    pub kind: String,
    pub environment: String,
    /// Audit-strict resources wait for the audit fsync before forwarding a statement.
    pub strict_audit: bool,
    pub created_at: DateTime<Utc>,
}

/// What an operator supplies to create or update a resource.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    pub name: String,
    #[serde(default = "default_kind")]
    pub kind: String,
    #[serde(default = "default_environment")]
    pub environment: String,
    #[serde(default)]
    pub strict_audit: bool,
}

fn default_kind() -> String {
    "postgres".to_owned()
}

fn default_environment() -> String {
    "default".to_owned()
}

impl From<resource::Model> for Resource {
    fn from(m: resource::Model) -> Self {
        Self {
            id: m.id,
            name: m.name,
            kind: m.kind,
            environment: m.environment,
            strict_audit: m.strict_audit,
            created_at: m.created_at,
        }
    }
}

impl Store {
    /// Creates the resource, or updates kind, environment and strictness of an
    /// existing one with the same name.
    pub async fn upsert_resource(&self, spec: &ResourceSpec) -> Result<Resource, StoreError> {
        resource::Entity::insert(resource::ActiveModel {
            id: Set(uuid::Uuid::now_v7().to_string()),
            name: Set(spec.name.clone()),
            kind: Set(spec.kind.clone()),
            environment: Set(spec.environment.clone()),
            strict_audit: Set(spec.strict_audit),
            created_at: Set(Utc::now()),
        })
        .on_conflict(
            OnConflict::column(resource::Column::Name)
                .update_columns([
                    resource::Column::Kind,
                    resource::Column::Environment,
                    resource::Column::StrictAudit,
                ])
                .to_owned(),
        )
        .exec_without_returning(self.db())
        .await?;
        self.resource_by_name(&spec.name)
            .await?
            .ok_or(StoreError::NotFound {
                what: "resource",
                key: spec.name.clone(),
            })
    }

    pub async fn resource_by_name(&self, name: &str) -> Result<Option<Resource>, StoreError> {
        Ok(resource::Entity::find()
            .filter(resource::Column::Name.eq(name))
            .one(self.db())
            .await?
            .map(Resource::from))
    }

    pub async fn list_resources(&self) -> Result<Vec<Resource>, StoreError> {
        Ok(resource::Entity::find()
            .order_by_asc(resource::Column::Name)
            .all(self.db())
            .await?
            .into_iter()
            .map(Resource::from)
            .collect())
    }

    /// Deletes a resource by name; returns whether it existed.
    pub async fn delete_resource(&self, name: &str) -> Result<bool, StoreError> {
        let res = resource::Entity::delete_many()
            .filter(resource::Column::Name.eq(name))
            .exec(self.db())
            .await?;
        Ok(res.rows_affected > 0)
    }
}
