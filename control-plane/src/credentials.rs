//! Credentials a CI pipeline trades for a short-lived access token.
//!
//! - [`keys`]: service-account API keys, `csk_<id>_<secret>`. Only a SHA-256
//!   of the secret is stored; keys are 256-bit random, so a plain hash is
//!   enough (no password stretching) and the check is constant-time.
//! - [`workload`]: a pipeline's OIDC token (GitHub Actions, GitLab, …) checked
//!   against the service account's trust: issuer, audience and exact claims.
//! - [`jwks`]: the issuers' signing keys, fetched by OIDC discovery and cached.
//!
//! Every exchange of a known service account is audited (event `auth`,
//! session id `auth:<service account>`), accepted or refused.
//!
//! Not guaranteed: an exchanged access token is a bearer credential like any
//! other; revoking a key or changing the trust does not revoke tokens already
//! issued (revoke those by id).

pub mod jwks;
pub mod keys;
pub mod workload;

use crate::service::{ControlPlane, ServiceError};
use crate::store::StoreError;
use crate::store::audit::{AuditBody, NewAuditEvent};
use crate::store::identities::{Identity, IdentityKind};
use chrono::Utc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Lifetime of an exchanged token when the request names none.
pub const DEFAULT_EXCHANGE_TTL: Duration = Duration::from_secs(15 * 60);
/// Upper bound on an exchanged token's lifetime.
pub const MAX_EXCHANGE_TTL: Duration = Duration::from_secs(3600);

/// Per-replica state of the exchanges.
#[derive(Debug, Default)]
pub struct Credentials {
    pub(crate) jwks: jwks::JwksCache,
    /// Low digits of audit sequence numbers, so that two exchanges in the
    /// same microsecond do not collide on `(session_id, seq)`.
    audit_counter: AtomicU64,
}

/// Validates the requested lifetime of an exchanged token.
pub fn exchange_ttl(ttl_seconds: Option<u64>) -> Result<Duration, ServiceError> {
    match ttl_seconds {
        None => Ok(DEFAULT_EXCHANGE_TTL),
        Some(s) if s >= 1 && s <= MAX_EXCHANGE_TTL.as_secs() => Ok(Duration::from_secs(s)),
        Some(_) => Err(ServiceError::Invalid(format!(
            "ttl_seconds must be between 1 and {}",
            MAX_EXCHANGE_TTL.as_secs()
        ))),
    }
}

impl ControlPlane {
    /// The service account `name`; `NotFound` for a missing one or a person.
    pub async fn service_account(&self, name: &str) -> Result<Identity, ServiceError> {
        crate::service::validate_identity_name(name)?;
        match self.store().identity_by_email(name).await? {
            Some(i) if i.kind == IdentityKind::Service => Ok(i),
            _ => Err(StoreError::NotFound {
                what: "service account",
                key: name.to_owned(),
            }
            .into()),
        }
    }

    /// Records an exchange, accepted or refused. A failure to record is
    /// returned: an exchange that cannot be audited does not happen.
    pub(crate) async fn audit_auth(
        &self,
        account: &str,
        action: &str,
        detail: serde_json::Value,
    ) -> Result<(), ServiceError> {
        let now = Utc::now();
        let micros = u64::try_from(now.timestamp_micros()).unwrap_or_default();
        let low = self
            .credentials()
            .audit_counter
            .fetch_add(1, Ordering::Relaxed)
            % 1000;
        let event = NewAuditEvent {
            session_id: format!("auth:{account}"),
            seq: micros.saturating_mul(1000).saturating_add(low),
            at: now,
            identity: account.to_owned(),
            resource: "control-plane".to_owned(),
            body: AuditBody::Auth {
                action: action.to_owned(),
                detail,
            },
        };
        self.store().insert_audit_events(&[event]).await?;
        Ok(())
    }

    /// Audits a refusal and returns it as a 401.
    pub(crate) async fn refuse(
        &self,
        account: &str,
        method: &str,
        reason: &str,
        mut detail: serde_json::Map<String, serde_json::Value>,
    ) -> ServiceError {
        detail.insert("method".to_owned(), method.into());
        detail.insert("reason".to_owned(), reason.into());
        tracing::warn!(
            service_account = account,
            method,
            reason,
            "credential exchange refused"
        );
        if let Err(e) = self
            .audit_auth(account, "refused", serde_json::Value::Object(detail))
            .await
        {
            return e;
        }
        ServiceError::Unauthenticated(reason.to_owned())
    }
}
