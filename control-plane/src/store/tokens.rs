//! Issued access tokens, so that any token can be revoked by id.

use super::entity::token;
use super::{Store, StoreError};
use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TokenRecord {
    pub id: String,
    pub identity_id: String,
    pub groups: Vec<String>,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_by: String,
}

impl TryFrom<token::Model> for TokenRecord {
    type Error = StoreError;

    fn try_from(m: token::Model) -> Result<Self, StoreError> {
        let groups = serde_json::from_str(&m.groups)
            .map_err(|e| StoreError::Corrupt(format!("token {} groups: {e}", m.id)))?;
        Ok(Self {
            id: m.id,
            identity_id: m.identity_id,
            groups,
            issued_at: m.issued_at,
            expires_at: m.expires_at,
            revoked_at: m.revoked_at,
            created_by: m.created_by,
        })
    }
}

impl Store {
    pub async fn insert_token(&self, record: &TokenRecord) -> Result<(), StoreError> {
        let groups = serde_json::to_string(&record.groups)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        token::Entity::insert(token::ActiveModel {
            id: Set(record.id.clone()),
            identity_id: Set(record.identity_id.clone()),
            groups: Set(groups),
            issued_at: Set(record.issued_at),
            expires_at: Set(record.expires_at),
            revoked_at: Set(record.revoked_at),
            created_by: Set(record.created_by.clone()),
        })
        .exec_without_returning(self.db())
        .await?;
        Ok(())
    }

    pub async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        token::Entity::find_by_id(id)
            .one(self.db())
            .await?
            .map(TokenRecord::try_from)
            .transpose()
    }

    /// Marks the token revoked. Returns `NotFound` for an unknown id; revoking
    /// twice keeps the first revocation time.
    pub async fn revoke_token(&self, id: &str) -> Result<TokenRecord, StoreError> {
        token::Entity::update_many()
            .col_expr(
                token::Column::RevokedAt,
                sea_orm::sea_query::Expr::value(Utc::now()),
            )
            .filter(token::Column::Id.eq(id))
            .filter(token::Column::RevokedAt.is_null())
            .exec(self.db())
            .await?;
        self.token(id).await?.ok_or(StoreError::NotFound {
            what: "token",
            key: id.to_owned(),
        })
    }

    /// Ids of revoked tokens that have not expired yet: the set gateways must
    /// end sessions for.
    pub async fn live_revoked_token_ids(&self) -> Result<Vec<String>, StoreError> {
        Ok(token::Entity::find()
            .filter(token::Column::RevokedAt.is_not_null())
            .filter(token::Column::ExpiresAt.gt(Utc::now()))
            .order_by_asc(token::Column::Id)
            .all(self.db())
            .await?
            .into_iter()
            .map(|m| m.id)
            .collect())
    }
}
