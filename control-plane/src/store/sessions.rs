//! Gateway sessions: one row per authenticated client connection.

use super::entity::session;
use super::{Store, StoreError};
use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, EntityTrait};
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SessionRecord {
    pub id: String,
    pub identity_id: String,
    pub identity: String,
    pub resource: String,
    pub database_name: String,
    pub token_id: String,
    pub gateway_id: String,
    pub client_address: String,
    pub application_name: String,
    pub tls: bool,
    pub started_at: DateTime<Utc>,
    pub groups: Vec<String>,
}

impl From<session::Model> for SessionRecord {
    fn from(m: session::Model) -> Self {
        Self {
            id: m.id,
            identity_id: m.identity_id,
            identity: m.identity,
            resource: m.resource,
            database_name: m.database_name,
            token_id: m.token_id,
            gateway_id: m.gateway_id,
            client_address: m.client_address,
            application_name: m.application_name,
            tls: m.tls,
            started_at: m.started_at,
            groups: serde_json::from_str(&m.groups).unwrap_or_default(),
        }
    }
}

impl Store {
    pub async fn insert_session(&self, s: &SessionRecord) -> Result<(), StoreError> {
        session::Entity::insert(session::ActiveModel {
            id: Set(s.id.clone()),
            identity_id: Set(s.identity_id.clone()),
            identity: Set(s.identity.clone()),
            resource: Set(s.resource.clone()),
            database_name: Set(s.database_name.clone()),
            token_id: Set(s.token_id.clone()),
            gateway_id: Set(s.gateway_id.clone()),
            client_address: Set(s.client_address.clone()),
            application_name: Set(s.application_name.clone()),
            tls: Set(s.tls),
            started_at: Set(s.started_at),
            groups: Set(serde_json::Value::from(s.groups.clone()).to_string()),
        })
        .exec_without_returning(self.db())
        .await?;
        Ok(())
    }

    pub async fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        Ok(session::Entity::find_by_id(id)
            .one(self.db())
            .await?
            .map(SessionRecord::from))
    }
}
