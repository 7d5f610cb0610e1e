//! Service-account API keys: `csk_<id>_<secret>`.
//!
//! `id` is a simple (hex) UUID and names the key in lists and revocations;
//! `secret` is 32 random bytes in unpadded base64url. The store keeps
//! `hex(sha256(secret))`.

use super::exchange_ttl;
use crate::service::{ControlPlane, IssuedToken, ServiceError};
use crate::store::credentials::ApiKeyRecord;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of every key, so that scanners and people recognise one.
pub const KEY_PREFIX: &str = "csk_";

/// A key as created: the only time its text is shown.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct CreatedApiKey {
    pub id: String,
    /// The key itself; shown once and never stored.
    pub key: String,
    pub created_at: DateTime<Utc>,
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Splits `csk_<id>_<secret>`; `None` if it is not shaped like a key.
pub fn parse_key(key: &str) -> Option<(&str, &str)> {
    let (id, secret) = key.strip_prefix(KEY_PREFIX)?.split_once('_')?;
    let id_ok = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    // 32 bytes are 43 base64url characters.
    let secret_ok = secret.len() == 43
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (id_ok && secret_ok).then_some((id, secret))
}

impl ControlPlane {
    /// Creates a key for service account `name`.
    pub async fn create_api_key(&self, name: &str) -> Result<CreatedApiKey, ServiceError> {
        let account = self.service_account(name).await?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let secret = URL_SAFE_NO_PAD.encode(bytes);
        let record = self
            .store()
            .insert_api_key(&id, &account.id, &hash(&secret))
            .await?;
        Ok(CreatedApiKey {
            key: format!("{KEY_PREFIX}{id}_{secret}"),
            id: record.id,
            created_at: record.created_at,
        })
    }

    pub async fn list_api_keys(&self, name: &str) -> Result<Vec<ApiKeyRecord>, ServiceError> {
        let account = self.service_account(name).await?;
        Ok(self.store().api_keys_of(&account.id).await?)
    }

    pub async fn revoke_api_key(&self, name: &str, id: &str) -> Result<ApiKeyRecord, ServiceError> {
        let account = self.service_account(name).await?;
        Ok(self.store().revoke_api_key(&account.id, id).await?)
    }

    /// Trades an API key for an access token of its service account.
    pub async fn exchange_api_key(
        &self,
        key: &str,
        ttl_seconds: Option<u64>,
    ) -> Result<IssuedToken, ServiceError> {
        let ttl = exchange_ttl(ttl_seconds)?;
        let invalid = || ServiceError::Unauthenticated("API key is not valid".to_owned());
        let (id, secret) = parse_key(key).ok_or_else(invalid)?;
        let Some((record, stored)) = self.store().api_key(id).await? else {
            tracing::warn!(key_id = id, "exchange with an unknown API key");
            return Err(invalid());
        };
        let Some(account) = self.store().identity_by_id(&record.identity_id).await? else {
            return Err(invalid());
        };
        let name = account.email.clone();
        let detail = |extra: &[(&str, &str)]| {
            let mut m = serde_json::Map::new();
            m.insert("key_id".to_owned(), id.into());
            for (k, v) in extra {
                m.insert((*k).to_owned(), (*v).into());
            }
            m
        };
        let matches: bool = hash(secret).as_bytes().ct_eq(stored.as_bytes()).into();
        if !matches {
            return Err(self
                .refuse(&name, "api_key", "API key is not valid", detail(&[]))
                .await);
        }
        if record.revoked_at.is_some() {
            return Err(self
                .refuse(&name, "api_key", "API key has been revoked", detail(&[]))
                .await);
        }
        if account.disabled {
            let reason = format!("service account {name} is disabled");
            return Err(self.refuse(&name, "api_key", &reason, detail(&[])).await);
        }
        let issued = self
            .issue_token(&name, &[], Some(ttl), &format!("api-key:{id}"))
            .await?;
        self.store().touch_api_key(id).await?;
        self.audit_auth(
            &name,
            "api_key_exchanged",
            serde_json::Value::Object(detail(&[("token_id", &issued.token_id)])),
        )
        .await?;
        Ok(issued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_well_formed_keys() {
        let secret = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let id = "0123456789abcdef0123456789abcdef";
        let key = format!("csk_{id}_{secret}");
        assert_eq!(parse_key(&key), Some((id, secret.as_str())));
        assert_eq!(parse_key(&key[1..]), None);
        assert_eq!(parse_key(&format!("csk_{id}_{secret}x")), None);
        assert_eq!(parse_key(&format!("csk_{id}x_{secret}")), None);
        assert_eq!(parse_key("csk_"), None);
        assert_eq!(parse_key(""), None);
    }
}
