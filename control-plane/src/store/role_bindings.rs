//! Role bindings: `member` holds `role` on the resources and environments that
//! match the binding's globs (an empty list matches any).
//!
//! Globs are stored as canonical JSON arrays (sorted, deduplicated), so the
//! unique index on (role, member, resources, environments) sees two spellings
//! of the same scope as one binding.

use super::entity::role_binding;
use super::{Store, StoreError, conflict_or};
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, TransactionTrait,
};
use serde::{Deserialize, Serialize};

/// Prefix of `created_by` for bindings a policy declared.
pub const POLICY_CREATOR_PREFIX: &str = "policy:";

/// What an operator (or a policy) supplies to create a binding.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleBindingSpec {
    /// requester | approver | admin | auditor
    pub role: String,
    /// `group:NAME` or `user:EMAIL`.
    pub member: String,
    /// Resource globs (`*`, `?`). Default: empty, meaning any resource.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Environment globs. Default: empty, meaning any environment.
    #[serde(default)]
    pub environments: Vec<String>,
}

impl RoleBindingSpec {
    /// Sorts and deduplicates the globs, so equal scopes compare (and store) equal.
    pub fn canonical(mut self) -> Self {
        for list in [&mut self.resources, &mut self.environments] {
            list.sort();
            list.dedup();
        }
        self
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RoleBinding {
    pub id: String,
    pub role: String,
    pub member: String,
    pub resources: Vec<String>,
    pub environments: Vec<String>,
    /// An identity, or `policy:<version>` for a binding a policy declared.
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

impl RoleBinding {
    fn spec(&self) -> RoleBindingSpec {
        RoleBindingSpec {
            role: self.role.clone(),
            member: self.member.clone(),
            resources: self.resources.clone(),
            environments: self.environments.clone(),
        }
    }

    /// Whether a policy created this binding (and so may remove it).
    pub fn from_policy(&self) -> bool {
        self.created_by.starts_with(POLICY_CREATOR_PREFIX)
    }
}

impl TryFrom<role_binding::Model> for RoleBinding {
    type Error = StoreError;

    fn try_from(m: role_binding::Model) -> Result<Self, StoreError> {
        let list = |text: &str| {
            serde_json::from_str::<Vec<String>>(text)
                .map_err(|e| StoreError::Corrupt(format!("role binding {}: {e}", m.id)))
        };
        Ok(Self {
            resources: list(&m.resources)?,
            environments: list(&m.environments)?,
            id: m.id,
            role: m.role,
            member: m.member,
            created_by: m.created_by,
            created_at: m.created_at,
        })
    }
}

fn active(
    id: &str,
    spec: &RoleBindingSpec,
    created_by: &str,
) -> Result<role_binding::ActiveModel, StoreError> {
    let json =
        |v: &Vec<String>| serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()));
    Ok(role_binding::ActiveModel {
        id: Set(id.to_owned()),
        role: Set(spec.role.clone()),
        member: Set(spec.member.clone()),
        resources: Set(json(&spec.resources)?),
        environments: Set(json(&spec.environments)?),
        created_by: Set(created_by.to_owned()),
        created_at: Set(Utc::now()),
    })
}

fn key(spec: &RoleBindingSpec) -> String {
    format!(
        "{} {} {:?} {:?}",
        spec.role, spec.member, spec.resources, spec.environments
    )
}

impl Store {
    /// Creates a binding; `Conflict` if the same one exists already.
    pub async fn insert_role_binding(
        &self,
        spec: &RoleBindingSpec,
        created_by: &str,
    ) -> Result<RoleBinding, StoreError> {
        let spec = spec.clone().canonical();
        let id = uuid::Uuid::now_v7().to_string();
        let model = active(&id, &spec, created_by)?;
        role_binding::Entity::insert(model)
            .exec_without_returning(self.db())
            .await
            .map_err(|e| conflict_or(e, "role binding", &key(&spec)))?;
        self.role_binding(&id).await?.ok_or(StoreError::NotFound {
            what: "role binding",
            key: id,
        })
    }

    pub async fn role_binding(&self, id: &str) -> Result<Option<RoleBinding>, StoreError> {
        role_binding::Entity::find_by_id(id.to_owned())
            .one(self.db())
            .await?
            .map(RoleBinding::try_from)
            .transpose()
    }

    /// Every binding, oldest first.
    pub async fn role_bindings(&self) -> Result<Vec<RoleBinding>, StoreError> {
        role_binding::Entity::find()
            .order_by_asc(role_binding::Column::CreatedAt)
            .order_by_asc(role_binding::Column::Id)
            .all(self.db())
            .await?
            .into_iter()
            .map(RoleBinding::try_from)
            .collect()
    }

    /// The bindings of one role.
    pub async fn role_bindings_for(&self, role: &str) -> Result<Vec<RoleBinding>, StoreError> {
        role_binding::Entity::find()
            .filter(role_binding::Column::Role.eq(role))
            .all(self.db())
            .await?
            .into_iter()
            .map(RoleBinding::try_from)
            .collect()
    }

    /// Deletes a binding; `false` if there was none.
    pub async fn delete_role_binding(&self, id: &str) -> Result<bool, StoreError> {
        let res = role_binding::Entity::delete_by_id(id.to_owned())
            .exec(self.db())
            .await?;
        Ok(res.rows_affected > 0)
    }

    /// Makes the policy-created bindings exactly `wanted`, as `created_by`
    /// (`policy:<version>`): removes policy bindings no longer declared, adds
    /// the missing ones, and re-labels the kept ones. Bindings created any
    /// other way are never touched; a wanted binding that already exists that
    /// way is left as it is.
    pub async fn sync_policy_bindings(
        &self,
        wanted: &[RoleBindingSpec],
        created_by: &str,
    ) -> Result<(), StoreError> {
        let wanted: Vec<RoleBindingSpec> = wanted.iter().cloned().map(|s| s.canonical()).collect();
        let txn = self.db().begin().await?;
        let existing: Vec<RoleBinding> = role_binding::Entity::find()
            .all(&txn)
            .await?
            .into_iter()
            .map(RoleBinding::try_from)
            .collect::<Result<_, _>>()?;
        for b in &existing {
            if b.from_policy() && !wanted.contains(&b.spec()) {
                role_binding::Entity::delete_by_id(b.id.clone())
                    .exec(&txn)
                    .await?;
            }
        }
        let mut done = Vec::new();
        for spec in &wanted {
            if done.contains(&spec) {
                continue;
            }
            done.push(spec);
            match existing.iter().find(|b| &b.spec() == spec) {
                Some(b) if b.from_policy() => {
                    role_binding::Entity::update_many()
                        .col_expr(
                            role_binding::Column::CreatedBy,
                            sea_orm::sea_query::Expr::value(created_by),
                        )
                        .filter(role_binding::Column::Id.eq(b.id.clone()))
                        .exec(&txn)
                        .await?;
                }
                Some(_) => {}
                None => {
                    role_binding::Entity::insert(active(
                        &uuid::Uuid::now_v7().to_string(),
                        spec,
                        created_by,
                    )?)
                    .exec_without_returning(&txn)
                    .await?;
                }
            }
        }
        txn.commit().await?;
        Ok(())
    }
}
