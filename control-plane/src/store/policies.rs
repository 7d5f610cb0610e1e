//! Policy versions. A version is immutable once stored; the newest is active.

use super::entity::policy;
use super::{Store, StoreError};
use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, EntityTrait, QueryOrder, QuerySelect};
use serde::Serialize;
use sha2::Digest;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PolicyVersion {
    pub version: u64,
    pub text: String,
    pub digest: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

impl From<policy::Model> for PolicyVersion {
    fn from(m: policy::Model) -> Self {
        Self {
            version: u64::try_from(m.version).unwrap_or(0),
            text: m.text,
            digest: m.digest,
            created_by: m.created_by,
            created_at: m.created_at,
        }
    }
}

pub fn digest(text: &str) -> String {
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

impl Store {
    /// Stores `text` as the next version, unless it equals the active version,
    /// which is then returned unchanged. Retries when another replica took the
    /// same version number first.
    pub async fn insert_policy(
        &self,
        text: &str,
        created_by: &str,
    ) -> Result<PolicyVersion, StoreError> {
        let digest = digest(text);
        for _ in 0..5 {
            let latest = self.latest_policy().await?;
            if let Some(l) = &latest
                && l.digest == digest
            {
                return Ok(l.clone());
            }
            let version = latest.map_or(1, |l| l.version + 1);
            let model = policy::ActiveModel {
                version: Set(i64::try_from(version)
                    .map_err(|_| StoreError::Corrupt("policy version".into()))?),
                text: Set(text.to_owned()),
                digest: Set(digest.clone()),
                created_by: Set(created_by.to_owned()),
                created_at: Set(Utc::now()),
            };
            match policy::Entity::insert(model)
                .exec_without_returning(self.db())
                .await
            {
                Ok(_) => {
                    return self.policy(version).await?.ok_or(StoreError::NotFound {
                        what: "policy version",
                        key: version.to_string(),
                    });
                }
                Err(e)
                    if matches!(
                        e.sql_err(),
                        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Conflict {
            what: "policy version",
            key: "next".to_owned(),
        })
    }

    pub async fn latest_policy(&self) -> Result<Option<PolicyVersion>, StoreError> {
        Ok(policy::Entity::find()
            .order_by_desc(policy::Column::Version)
            .limit(1)
            .one(self.db())
            .await?
            .map(PolicyVersion::from))
    }

    pub async fn policy(&self, version: u64) -> Result<Option<PolicyVersion>, StoreError> {
        let v = i64::try_from(version).map_err(|_| StoreError::NotFound {
            what: "policy version",
            key: version.to_string(),
        })?;
        Ok(policy::Entity::find_by_id(v)
            .one(self.db())
            .await?
            .map(PolicyVersion::from))
    }

    /// All versions, newest first, without their text.
    pub async fn list_policies(&self) -> Result<Vec<PolicyVersion>, StoreError> {
        Ok(policy::Entity::find()
            .order_by_desc(policy::Column::Version)
            .all(self.db())
            .await?
            .into_iter()
            .map(|m| PolicyVersion {
                text: String::new(),
                ..PolicyVersion::from(m)
            })
            .collect())
    }
}
