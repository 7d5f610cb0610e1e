//! Gateway enrollment tokens (hash only) and enrolled gateways.

use super::entity::{enrollment_token, gateway};
use super::{Store, StoreError};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde::Serialize;

/// An enrollment token as stored: never the token itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct EnrollmentTokenRecord {
    pub environment: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    /// The gateway that spent the token.
    pub used_by: Option<String>,
}

/// An enrolled gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct GatewayRecord {
    pub id: String,
    pub environment: String,
    /// Hex serial of its current client certificate.
    pub cert_serial: String,
    /// When its current client certificate ends.
    pub not_after: DateTime<Utc>,
    pub enrolled_at: DateTime<Utc>,
    /// The last enrollment, renewal or config watch.
    pub last_seen: DateTime<Utc>,
    /// The gateway's software version, as it reported it.
    pub version: String,
}

/// Why a token could not be spent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpendRefusal {
    Unknown,
    AlreadyUsed,
    Expired,
}

fn token_record(m: enrollment_token::Model) -> EnrollmentTokenRecord {
    EnrollmentTokenRecord {
        environment: m.environment,
        created_by: m.created_by,
        created_at: m.created_at,
        expires_at: m.expires_at,
        used_at: m.used_at,
        used_by: m.used_by,
    }
}

fn gateway_record(m: gateway::Model) -> GatewayRecord {
    GatewayRecord {
        id: m.id,
        environment: m.environment,
        cert_serial: m.cert_serial,
        not_after: m.not_after,
        enrolled_at: m.enrolled_at,
        last_seen: m.last_seen,
        version: m.version,
    }
}

impl Store {
    /// Stores a new enrollment token's hash.
    pub async fn insert_enrollment_token(
        &self,
        hash: &str,
        environment: &str,
        created_by: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<EnrollmentTokenRecord, StoreError> {
        let model = enrollment_token::Model {
            hash: hash.to_owned(),
            environment: environment.to_owned(),
            created_by: created_by.to_owned(),
            created_at: Utc::now(),
            expires_at,
            used_at: None,
            used_by: None,
        };
        enrollment_token::Entity::insert(enrollment_token::ActiveModel {
            hash: Set(model.hash.clone()),
            environment: Set(model.environment.clone()),
            created_by: Set(model.created_by.clone()),
            created_at: Set(model.created_at),
            expires_at: Set(model.expires_at),
            used_at: Set(None),
            used_by: Set(None),
        })
        .exec_without_returning(self.db())
        .await
        .map_err(|e| super::conflict_or(e, "enrollment token", "(hash)"))?;
        Ok(token_record(model))
    }

    /// Spends the token with hash `hash` for gateway `gateway_id`: one
    /// conditional update, so of two concurrent callers exactly one wins.
    /// Returns the token on success, or why it could not be spent.
    pub async fn spend_enrollment_token(
        &self,
        hash: &str,
        gateway_id: &str,
    ) -> Result<Result<EnrollmentTokenRecord, SpendRefusal>, StoreError> {
        let now = Utc::now();
        let updated = enrollment_token::Entity::update_many()
            .col_expr(enrollment_token::Column::UsedAt, Expr::value(now))
            .col_expr(enrollment_token::Column::UsedBy, Expr::value(gateway_id))
            .filter(enrollment_token::Column::Hash.eq(hash))
            .filter(enrollment_token::Column::UsedAt.is_null())
            .filter(enrollment_token::Column::ExpiresAt.gt(now))
            .exec(self.db())
            .await?;
        let row = enrollment_token::Entity::find_by_id(hash)
            .one(self.db())
            .await?;
        Ok(match (updated.rows_affected, row) {
            (1, Some(m)) => Ok(token_record(m)),
            (_, None) => Err(SpendRefusal::Unknown),
            (_, Some(m)) if m.used_at.is_some() => Err(SpendRefusal::AlreadyUsed),
            (_, Some(_)) => Err(SpendRefusal::Expired),
        })
    }

    /// The token with hash `hash`, spent or not.
    pub async fn enrollment_token(
        &self,
        hash: &str,
    ) -> Result<Option<EnrollmentTokenRecord>, StoreError> {
        Ok(enrollment_token::Entity::find_by_id(hash)
            .one(self.db())
            .await?
            .map(token_record))
    }

    /// Enrollment tokens, newest first.
    pub async fn enrollment_tokens(&self) -> Result<Vec<EnrollmentTokenRecord>, StoreError> {
        Ok(enrollment_token::Entity::find()
            .order_by_desc(enrollment_token::Column::CreatedAt)
            .all(self.db())
            .await?
            .into_iter()
            .map(token_record)
            .collect())
    }

    /// Records a gateway's new certificate (enrollment or renewal).
    pub async fn upsert_gateway(&self, g: &GatewayRecord) -> Result<(), StoreError> {
        gateway::Entity::insert(gateway::ActiveModel {
            id: Set(g.id.clone()),
            environment: Set(g.environment.clone()),
            cert_serial: Set(g.cert_serial.clone()),
            not_after: Set(g.not_after),
            enrolled_at: Set(g.enrolled_at),
            last_seen: Set(g.last_seen),
            version: Set(g.version.clone()),
        })
        .on_conflict(
            OnConflict::column(gateway::Column::Id)
                .update_columns([
                    gateway::Column::Environment,
                    gateway::Column::CertSerial,
                    gateway::Column::NotAfter,
                    gateway::Column::LastSeen,
                    gateway::Column::Version,
                ])
                .to_owned(),
        )
        .exec_without_returning(self.db())
        .await?;
        Ok(())
    }

    pub async fn gateway(&self, id: &str) -> Result<Option<GatewayRecord>, StoreError> {
        Ok(gateway::Entity::find_by_id(id)
            .one(self.db())
            .await?
            .map(gateway_record))
    }

    /// Enrolled gateways, by id.
    pub async fn gateways(&self) -> Result<Vec<GatewayRecord>, StoreError> {
        Ok(gateway::Entity::find()
            .order_by_asc(gateway::Column::Id)
            .all(self.db())
            .await?
            .into_iter()
            .map(gateway_record)
            .collect())
    }

    /// Notes that gateway `id` was heard from, with its reported version.
    pub async fn touch_gateway(&self, id: &str, version: &str) -> Result<(), StoreError> {
        gateway::Entity::update_many()
            .col_expr(gateway::Column::LastSeen, Expr::value(Utc::now()))
            .col_expr(gateway::Column::Version, Expr::value(version))
            .filter(gateway::Column::Id.eq(id))
            .exec(self.db())
            .await?;
        Ok(())
    }
}
