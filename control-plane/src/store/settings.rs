//! Small key/value settings shared by all replicas (for example the token signing key).

use super::entity::setting;
use super::{Store, StoreError};
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait};

impl Store {
    pub async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(setting::Entity::find_by_id(key)
            .one(self.db())
            .await?
            .map(|m| m.value))
    }

    /// Stores `value` under `key` unless a value is already there, and returns
    /// the stored value. Replicas racing on first start all end up with the winner's value.
    pub async fn setting_or_insert(&self, key: &str, value: &str) -> Result<String, StoreError> {
        setting_or_insert(self.db(), key, value).await
    }
}

/// [`Store::setting_or_insert`] on a bare connection, for use while the
/// store is being built.
pub(super) async fn setting_or_insert(
    db: &impl ConnectionTrait,
    key: &str,
    value: &str,
) -> Result<String, StoreError> {
    setting::Entity::insert(setting::ActiveModel {
        key: Set(key.to_owned()),
        value: Set(value.to_owned()),
    })
    .on_conflict_do_nothing_on([setting::Column::Key])
    .exec_without_returning(db)
    .await?;
    Ok(setting::Entity::find_by_id(key)
        .one(db)
        .await?
        .ok_or(StoreError::NotFound {
            what: "setting",
            key: key.to_owned(),
        })?
        .value)
}
