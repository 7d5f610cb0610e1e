//! Service-account credentials: API keys (hash only) and workload trust.

use super::entity::{api_key, workload_trust};
use super::{Store, StoreError};
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, sea_query::OnConflict,
};
use serde::Serialize;
use std::collections::BTreeMap;

/// An API key as listed: never the key or its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ApiKeyRecord {
    pub id: String,
    pub identity_id: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What a pipeline's OIDC token must carry to act as a service account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct WorkloadTrust {
    /// The OIDC issuer, compared exactly with the token's `iss`.
    pub issuer: String,
    /// Must be one of the token's `aud` values.
    pub audience: String,
    /// Claims the token must carry with exactly these string values.
    #[serde(default)]
    pub claims: BTreeMap<String, String>,
}

fn record(m: api_key::Model) -> ApiKeyRecord {
    ApiKeyRecord {
        id: m.id,
        identity_id: m.identity_id,
        created_at: m.created_at,
        last_used_at: m.last_used_at,
        revoked_at: m.revoked_at,
    }
}

impl Store {
    /// Stores a new key's hash.
    pub async fn insert_api_key(
        &self,
        id: &str,
        identity_id: &str,
        hash: &str,
    ) -> Result<ApiKeyRecord, StoreError> {
        let model = api_key::Model {
            id: id.to_owned(),
            identity_id: identity_id.to_owned(),
            hash: hash.to_owned(),
            created_at: Utc::now(),
            last_used_at: None,
            revoked_at: None,
        };
        api_key::Entity::insert(api_key::ActiveModel {
            id: Set(model.id.clone()),
            identity_id: Set(model.identity_id.clone()),
            hash: Set(model.hash.clone()),
            created_at: Set(model.created_at),
            last_used_at: Set(None),
            revoked_at: Set(None),
        })
        .exec_without_returning(self.db())
        .await
        .map_err(|e| super::conflict_or(e, "api key", id))?;
        Ok(record(model))
    }

    /// The key record and its stored hash.
    pub async fn api_key(&self, id: &str) -> Result<Option<(ApiKeyRecord, String)>, StoreError> {
        Ok(api_key::Entity::find_by_id(id)
            .one(self.db())
            .await?
            .map(|m| {
                let hash = m.hash.clone();
                (record(m), hash)
            }))
    }

    pub async fn api_keys_of(&self, identity_id: &str) -> Result<Vec<ApiKeyRecord>, StoreError> {
        Ok(api_key::Entity::find()
            .filter(api_key::Column::IdentityId.eq(identity_id))
            .order_by_asc(api_key::Column::CreatedAt)
            .order_by_asc(api_key::Column::Id)
            .all(self.db())
            .await?
            .into_iter()
            .map(record)
            .collect())
    }

    /// Revokes the key if it belongs to `identity_id`; revoking twice keeps
    /// the first time. `NotFound` for another identity's key.
    pub async fn revoke_api_key(
        &self,
        identity_id: &str,
        id: &str,
    ) -> Result<ApiKeyRecord, StoreError> {
        api_key::Entity::update_many()
            .col_expr(
                api_key::Column::RevokedAt,
                sea_orm::sea_query::Expr::value(Utc::now()),
            )
            .filter(api_key::Column::Id.eq(id))
            .filter(api_key::Column::IdentityId.eq(identity_id))
            .filter(api_key::Column::RevokedAt.is_null())
            .exec(self.db())
            .await?;
        match self.api_key(id).await? {
            Some((r, _)) if r.identity_id == identity_id => Ok(r),
            _ => Err(StoreError::NotFound {
                what: "api key",
                key: id.to_owned(),
            }),
        }
    }

    pub async fn touch_api_key(&self, id: &str) -> Result<(), StoreError> {
        api_key::Entity::update_many()
            .col_expr(
                api_key::Column::LastUsedAt,
                sea_orm::sea_query::Expr::value(Utc::now()),
            )
            .filter(api_key::Column::Id.eq(id))
            .exec(self.db())
            .await?;
        Ok(())
    }

    /// Sets (replaces) the service account's workload trust.
    pub async fn set_workload_trust(
        &self,
        identity_id: &str,
        trust: &WorkloadTrust,
    ) -> Result<(), StoreError> {
        let claims =
            serde_json::to_string(&trust.claims).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        workload_trust::Entity::insert(workload_trust::ActiveModel {
            identity_id: Set(identity_id.to_owned()),
            issuer: Set(trust.issuer.clone()),
            audience: Set(trust.audience.clone()),
            claims: Set(claims),
            updated_at: Set(Utc::now()),
        })
        .on_conflict(
            OnConflict::column(workload_trust::Column::IdentityId)
                .update_columns([
                    workload_trust::Column::Issuer,
                    workload_trust::Column::Audience,
                    workload_trust::Column::Claims,
                    workload_trust::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(self.db())
        .await?;
        Ok(())
    }

    pub async fn workload_trust(
        &self,
        identity_id: &str,
    ) -> Result<Option<WorkloadTrust>, StoreError> {
        let Some(m) = workload_trust::Entity::find_by_id(identity_id)
            .one(self.db())
            .await?
        else {
            return Ok(None);
        };
        let claims = serde_json::from_str(&m.claims)
            .map_err(|e| StoreError::Corrupt(format!("workload trust {identity_id}: {e}")))?;
        Ok(Some(WorkloadTrust {
            issuer: m.issuer,
            audience: m.audience,
            claims,
        }))
    }
}
