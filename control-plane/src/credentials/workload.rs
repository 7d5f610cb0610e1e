//! Workload identity: a pipeline's OIDC token traded for an access token.
//!
//! The token must be signed (RS256, ES256 or EdDSA) by a key the configured
//! issuer publishes, carry exactly that `iss`, list the configured audience
//! in `aud`, be within `exp`/`nbf` (with [`LEEWAY_SECS`] of clock skew), and
//! carry every configured claim with exactly the configured string value.
//! Each refusal names the first check that failed.
//!
//! Not guaranteed: replay. A pipeline token stays usable until it expires,
//! so whoever copies one from a job's logs can exchange it too; keep the
//! audience specific to Countersign and the claims narrow.

use super::exchange_ttl;
use super::jwks::allowed_url;
use crate::service::{ControlPlane, IssuedToken, ServiceError};
use crate::store::StoreError;
use crate::store::credentials::WorkloadTrust;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde_json::{Map, Value};

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;

/// Refuses a trust that could never match or that names a non-https issuer.
pub fn validate_trust(trust: &WorkloadTrust) -> Result<(), ServiceError> {
    let mut errors = Vec::new();
    if !allowed_url(&trust.issuer) {
        errors.push("issuer must be an https URL (http only for localhost)".to_owned());
    }
    if trust.audience.is_empty() || trust.audience.len() > 255 {
        errors.push("audience must be 1-255 characters".to_owned());
    }
    for (k, v) in &trust.claims {
        if k.is_empty() || k.len() > 128 || v.len() > 1024 {
            errors.push(format!(
                "claim {k:?} must have a 1-128 character name and a value of at most 1024"
            ));
        }
        if matches!(k.as_str(), "iss" | "aud" | "exp" | "nbf" | "iat") {
            errors.push(format!(
                "claim {k:?} is checked already; set issuer or audience instead"
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ServiceError::Invalid(errors.join("; ")))
    }
}

/// Whether `jwk` is a key for `alg`, so that a key of one kind is never used
/// with another algorithm (no HMAC with a public key as the secret).
fn key_fits(jwk: &Jwk, alg: Algorithm) -> bool {
    let declared_ok = match jwk.common.key_algorithm {
        Some(a) => a.to_string() == format!("{alg:?}"),
        None => true,
    };
    let kind_ok = match (&jwk.algorithm, alg) {
        (AlgorithmParameters::RSA(_), Algorithm::RS256) => true,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => p.curve == EllipticCurve::P256,
        (AlgorithmParameters::OctetKeyPair(p), Algorithm::EdDSA) => {
            p.curve == EllipticCurve::Ed25519
        }
        _ => false,
    };
    declared_ok && kind_ok
}

impl ControlPlane {
    /// Sets the workload trust of service account `name`.
    pub async fn set_workload_trust(
        &self,
        name: &str,
        trust: &WorkloadTrust,
    ) -> Result<(), ServiceError> {
        validate_trust(trust)?;
        let account = self.service_account(name).await?;
        Ok(self.store().set_workload_trust(&account.id, trust).await?)
    }

    /// Checks `token` against the trust of `name`: `Ok(claims)` or the reason.
    async fn verify_workload(
        &self,
        trust: &WorkloadTrust,
        token: &str,
    ) -> Result<Map<String, Value>, String> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| "token malformed".to_owned())?;
        if !matches!(
            header.alg,
            Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA
        ) {
            return Err(format!("algorithm {:?} not accepted", header.alg));
        }
        let kid = header.kid.ok_or("token names no key (kid)")?;
        let jwk = match self.credentials().jwks.key(&trust.issuer, &kid).await {
            Ok(Some(k)) => k,
            Ok(None) => return Err("unknown signing key".to_owned()),
            Err(e) => {
                tracing::warn!(error = %e, "fetching an issuer's keys failed");
                return Err("cannot fetch the issuer's signing keys".to_owned());
            }
        };
        if !key_fits(&jwk, header.alg) {
            return Err("signing key does not fit the token's algorithm".to_owned());
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| "signing key unusable".to_owned())?;
        let mut v = Validation::new(header.alg);
        v.leeway = LEEWAY_SECS;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.set_issuer(&[trust.issuer.as_str()]);
        v.set_audience(&[trust.audience.as_str()]);
        let data =
            jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v).map_err(|e| {
                match e.kind() {
                    ErrorKind::InvalidSignature => "signature invalid".to_owned(),
                    ErrorKind::ExpiredSignature => "token expired".to_owned(),
                    ErrorKind::ImmatureSignature => "token not yet valid".to_owned(),
                    ErrorKind::InvalidIssuer => "issuer mismatch".to_owned(),
                    ErrorKind::InvalidAudience => "audience mismatch".to_owned(),
                    ErrorKind::MissingRequiredClaim(c) => format!("claim {c} missing"),
                    _ => "token malformed".to_owned(),
                }
            })?;
        for (name, want) in &trust.claims {
            match data.claims.get(name) {
                None => return Err(format!("claim {name} missing")),
                Some(Value::String(got)) if got == want => {}
                Some(_) => return Err(format!("claim {name} mismatch")),
            }
        }
        Ok(data.claims)
    }

    /// Trades a pipeline's OIDC token for an access token of `name`.
    pub async fn exchange_workload(
        &self,
        name: &str,
        token: &str,
        ttl_seconds: Option<u64>,
    ) -> Result<IssuedToken, ServiceError> {
        let ttl = exchange_ttl(ttl_seconds)?;
        let no_trust = "no workload trust is configured for this service account";
        // The same refusal as for an account without trust: this endpoint
        // takes no credentials, so it must not tell which accounts exist.
        let account = match self.service_account(name).await {
            Ok(a) => a,
            Err(ServiceError::Store(StoreError::NotFound { .. })) => {
                return Err(self.refuse(name, "workload", no_trust, Map::new()).await);
            }
            Err(e) => return Err(e),
        };
        let name = account.email.clone();
        if account.disabled {
            let reason = format!("service account {name} is disabled");
            return Err(self.refuse(&name, "workload", &reason, Map::new()).await);
        }
        let Some(trust) = self.store().workload_trust(&account.id).await? else {
            return Err(self.refuse(&name, "workload", no_trust, Map::new()).await);
        };
        let issuer_detail = || Map::from_iter([("issuer".to_owned(), trust.issuer.clone().into())]);
        let claims = match self.verify_workload(&trust, token).await {
            Ok(c) => c,
            Err(reason) => {
                return Err(self
                    .refuse(&name, "workload", &reason, issuer_detail())
                    .await);
            }
        };
        let issued = self
            .issue_token(&name, &[], Some(ttl), &format!("workload:{}", trust.issuer))
            .await?;
        let mut detail = issuer_detail();
        for k in ["sub", "jti"] {
            if let Some(Value::String(v)) = claims.get(k) {
                detail.insert(format!("token_{k}"), v.clone().into());
            }
        }
        detail.insert("token_id".to_owned(), issued.token_id.clone().into());
        self.audit_auth(&name, "workload_exchanged", Value::Object(detail))
            .await?;
        Ok(issued)
    }
}
