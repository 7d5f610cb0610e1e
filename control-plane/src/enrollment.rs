//! Gateway enrollment and mutual TLS between gateways and the control plane.
//!
//! An admin creates a one-time enrollment token bound to an environment. A
//! new gateway generates its key pair locally and sends the token with a CSR
//! to `GatewayEnrollment.Enroll` (the one RPC that needs no client
//! certificate); the control plane spends the token atomically and returns a
//! short-lived client certificate from its gateway CA ([`ca`]) that names the
//! gateway and the token's environment. Every other RPC needs that
//! certificate, and the environment it names (never the gateway's own claim)
//! scopes what the gateway may see and do. Before the certificate ends the
//! gateway calls `Renew` with a new CSR, authenticated by its current one.
//!
//! Tokens are `cse_` followed by 32 random bytes in unpadded base64url; the
//! store keeps `hex(sha256(token))`. Every refusal is audited (kind `auth`,
//! under `auth:gateway-enrollment`).

pub mod ca;

use crate::service::{ControlPlane, Principal, ServiceError};
use crate::store::gateways::{GatewayRecord, SpendRefusal};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ca::{GatewayCa, GatewayIdentity, IssuedCert};
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Prefix of every enrollment token, so that scanners and people recognise one.
pub const TOKEN_PREFIX: &str = "cse_";

/// Settings key of the generated CA (JSON: `{"cert": PEM, "key": PEM}`), one
/// value so that replicas racing on first start agree on a matching pair.
const CA_SETTING: &str = "gateway_ca";

/// Longest an enrollment token may stay usable.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Longest CSR accepted, in bytes.
const MAX_CSR_BYTES: usize = 16 * 1024;

/// Audit identity of enrollment events.
const AUDIT_ACCOUNT: &str = "gateway-enrollment";

/// Mutual TLS on the gateway gRPC listener.
#[derive(Clone, Debug)]
pub struct GatewayTlsSettings {
    /// DNS names and IP addresses of the gRPC server certificate.
    pub server_names: Vec<String>,
    /// The CA as PEM (certificate, key). `None`: generated once and kept in
    /// the store, so that every replica shares it.
    pub ca_pem: Option<(String, countersign_common::Secret<String>)>,
    /// Lifetime of gateway client certificates. Default 24 h.
    pub gateway_cert_lifetime: Duration,
    /// Lifetime of the gRPC server certificate, issued at each start. Default 90 days.
    pub server_cert_lifetime: Duration,
}

impl GatewayTlsSettings {
    pub fn new(server_names: Vec<String>) -> Self {
        Self {
            server_names,
            ca_pem: None,
            gateway_cert_lifetime: Duration::from_secs(24 * 3600),
            server_cert_lifetime: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

/// A token as created: the only time its text is shown.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct CreatedEnrollmentToken {
    /// The token itself; shown once and never stored.
    pub token: String,
    pub environment: String,
    pub expires_at: DateTime<Utc>,
}

/// What an enrolled or renewed gateway receives.
#[derive(Clone, Debug)]
pub struct EnrolledCert {
    pub gateway_id: String,
    pub environment: String,
    pub cert_pem: String,
    pub ca_pem: String,
    pub not_after: DateTime<Utc>,
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Loads the configured CA, or the one kept in the store (generating it on first start).
pub(crate) async fn load_ca(
    store: &crate::Store,
    tls: &GatewayTlsSettings,
) -> Result<GatewayCa, ServiceError> {
    let ca_err = |e: ca::CaError| ServiceError::Invalid(e.to_string());
    if let Some((cert, key)) = &tls.ca_pem {
        return GatewayCa::from_pem(cert, key.expose()).map_err(ca_err);
    }
    let (cert, key) = GatewayCa::generate_pem().map_err(ca_err)?;
    let fresh = serde_json::json!({ "cert": cert, "key": key }).to_string();
    let stored: serde_json::Value =
        serde_json::from_str(&store.setting_or_insert(CA_SETTING, &fresh).await?)
            .map_err(|e| crate::StoreError::Corrupt(format!("{CA_SETTING}: {e}")))?;
    match (stored["cert"].as_str(), stored["key"].as_str()) {
        (Some(cert), Some(key)) => GatewayCa::from_pem(cert, key).map_err(ca_err),
        _ => Err(crate::StoreError::Corrupt(format!("{CA_SETTING}: missing cert or key")).into()),
    }
}

fn check_csr(csr_pem: &str) -> Result<(), ServiceError> {
    if csr_pem.is_empty() || csr_pem.len() > MAX_CSR_BYTES {
        return Err(ServiceError::Invalid(format!(
            "a CSR (PEM, at most {MAX_CSR_BYTES} bytes) is required"
        )));
    }
    GatewayCa::check_csr(csr_pem).map_err(|e| ServiceError::Invalid(e.to_string()))
}

impl ControlPlane {
    fn gateway_ca(&self) -> Result<&GatewayCa, ServiceError> {
        self.ca().ok_or_else(|| {
            ServiceError::Invalid(
                "this control plane has no gateway CA: configure [grpc_tls] to enroll gateways"
                    .to_owned(),
            )
        })
    }

    fn gateway_cert_lifetime(&self) -> Duration {
        self.settings()
            .gateway_tls
            .as_ref()
            .map_or(Duration::from_secs(24 * 3600), |t| t.gateway_cert_lifetime)
    }

    /// Creates a one-time enrollment token for `environment`, usable for `ttl`.
    pub async fn create_enrollment_token(
        &self,
        by: &Principal,
        environment: &str,
        ttl: Duration,
    ) -> Result<CreatedEnrollmentToken, ServiceError> {
        self.require_admin(by)?;
        crate::service::validate_name("environment", environment)?;
        if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
            return Err(ServiceError::Invalid(format!(
                "an enrollment token lives between 1 s and {} h",
                MAX_TOKEN_TTL.as_secs() / 3600
            )));
        }
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
        let expires_at = Utc::now()
            + chrono::Duration::from_std(ttl)
                .map_err(|_| ServiceError::Invalid("ttl is too long".to_owned()))?;
        let record = self
            .store()
            .insert_enrollment_token(&hash(&token), environment, by.name(), expires_at)
            .await?;
        self.audit_auth(
            AUDIT_ACCOUNT,
            "enrollment_token_created",
            serde_json::json!({
                "environment": environment,
                "by": by.name(),
                "expires_at": record.expires_at,
            }),
        )
        .await?;
        Ok(CreatedEnrollmentToken {
            token,
            environment: record.environment,
            expires_at: record.expires_at,
        })
    }

    /// Enrolls gateway `gateway_id`: spends `token` and signs `csr_pem`.
    pub async fn enroll_gateway(
        &self,
        token: &str,
        csr_pem: &str,
        gateway_id: &str,
        version: &str,
    ) -> Result<EnrolledCert, ServiceError> {
        let ca = self.gateway_ca()?;
        crate::service::validate_name("gateway", gateway_id)?;
        check_csr(csr_pem)?;
        let detail = |reason: &str| {
            let mut m = serde_json::Map::new();
            m.insert("gateway_id".to_owned(), gateway_id.into());
            m.insert("reason".to_owned(), reason.into());
            m
        };
        let well_formed = token.strip_prefix(TOKEN_PREFIX).is_some_and(|s| {
            s.len() == 43
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
        if well_formed
            && let Some(unspent) = self.store().enrollment_token(&hash(token)).await?
            && let Some(existing) = self.store().gateway(gateway_id).await?
            && existing.environment != unspent.environment
        {
            // Checked before spending, so that the token stays usable under another id.
            let reason = format!(
                "gateway id {gateway_id:?} is enrolled in environment {:?}; choose another gateway_id for {:?}",
                existing.environment, unspent.environment
            );
            return Err(self
                .refuse(
                    AUDIT_ACCOUNT,
                    "gateway_enrollment",
                    &reason,
                    detail(&reason),
                )
                .await);
        }
        let spent = if well_formed {
            self.store()
                .spend_enrollment_token(&hash(token), gateway_id)
                .await?
        } else {
            Err(SpendRefusal::Unknown)
        };
        let record = match spent {
            Ok(r) => r,
            Err(refusal) => {
                let reason = match refusal {
                    SpendRefusal::Unknown => "the enrollment token is not valid",
                    SpendRefusal::AlreadyUsed => "the enrollment token has already been used",
                    SpendRefusal::Expired => "the enrollment token has expired",
                };
                return Err(self
                    .refuse(AUDIT_ACCOUNT, "gateway_enrollment", reason, detail(reason))
                    .await);
            }
        };
        // The CSR was checked before the token was spent.
        let issued = ca
            .issue_gateway_cert(
                csr_pem,
                gateway_id,
                &record.environment,
                self.gateway_cert_lifetime(),
            )
            .map_err(|e| ServiceError::Invalid(e.to_string()))?;
        self.record_gateway(gateway_id, &record.environment, &issued, version, true)
            .await?;
        self.audit_auth(
            AUDIT_ACCOUNT,
            "gateway_enrolled",
            serde_json::json!({
                "gateway_id": gateway_id,
                "environment": record.environment,
                "serial": issued.serial,
                "not_after": issued.not_after,
            }),
        )
        .await?;
        Ok(EnrolledCert {
            gateway_id: gateway_id.to_owned(),
            environment: record.environment,
            cert_pem: issued.cert_pem,
            ca_pem: ca.cert_pem().to_owned(),
            not_after: issued.not_after,
        })
    }

    /// Signs a new certificate for the gateway that `current` (its verified
    /// client certificate) names: same id, same environment. Only the
    /// gateway's latest certificate may renew: once a renewal has replaced a
    /// certificate, a copy of the old one (a stolen key, say) cannot renew
    /// itself, and whichever of two holders renews second is refused, which
    /// shows in its log and in the audit.
    pub async fn renew_gateway(
        &self,
        current: &GatewayIdentity,
        csr_pem: &str,
        version: &str,
    ) -> Result<EnrolledCert, ServiceError> {
        let ca = self.gateway_ca()?;
        check_csr(csr_pem)?;
        let latest = self.store().gateway(&current.id).await?;
        if latest.as_ref().map(|g| g.cert_serial.as_str()) != Some(current.serial.as_str()) {
            let reason = format!(
                "the certificate of gateway {} has been superseded by a later enrollment or renewal; enroll the gateway again",
                current.id
            );
            let mut detail = serde_json::Map::new();
            detail.insert("gateway_id".to_owned(), current.id.clone().into());
            detail.insert("serial".to_owned(), current.serial.clone().into());
            return Err(
                match self
                    .refuse(AUDIT_ACCOUNT, "gateway_renewal", &reason, detail)
                    .await
                {
                    ServiceError::Unauthenticated(m) => ServiceError::Forbidden(m),
                    other => other,
                },
            );
        }
        let issued = ca
            .issue_gateway_cert(
                csr_pem,
                &current.id,
                &current.environment,
                self.gateway_cert_lifetime(),
            )
            .map_err(|e| ServiceError::Invalid(e.to_string()))?;
        self.record_gateway(&current.id, &current.environment, &issued, version, false)
            .await?;
        self.audit_auth(
            AUDIT_ACCOUNT,
            "gateway_renewed",
            serde_json::json!({
                "gateway_id": current.id,
                "environment": current.environment,
                "previous_serial": current.serial,
                "serial": issued.serial,
                "not_after": issued.not_after,
            }),
        )
        .await?;
        Ok(EnrolledCert {
            gateway_id: current.id.clone(),
            environment: current.environment.clone(),
            cert_pem: issued.cert_pem,
            ca_pem: ca.cert_pem().to_owned(),
            not_after: issued.not_after,
        })
    }

    async fn record_gateway(
        &self,
        id: &str,
        environment: &str,
        issued: &IssuedCert,
        version: &str,
        enrolled: bool,
    ) -> Result<(), ServiceError> {
        let now = Utc::now();
        let enrolled_at = match (enrolled, self.store().gateway(id).await?) {
            (false, Some(existing)) => existing.enrolled_at,
            _ => now,
        };
        self.store()
            .upsert_gateway(&GatewayRecord {
                id: id.to_owned(),
                environment: environment.to_owned(),
                cert_serial: issued.serial.clone(),
                not_after: issued.not_after,
                enrolled_at,
                last_seen: now,
                version: version.to_owned(),
            })
            .await?;
        Ok(())
    }

    /// Enrolled gateways, for admins.
    pub async fn list_gateways(&self, by: &Principal) -> Result<Vec<GatewayRecord>, ServiceError> {
        self.require_admin(by)?;
        Ok(self.store().gateways().await?)
    }
}
