//! Access tokens: short-lived EdDSA-signed JWTs with a revocable id.
//!
//! A token names an identity (email and id), its groups at issue time, an
//! expiry and a token id (`jti`). The signature and expiry are checked here;
//! revocation and identity state are checked against the store by
//! [`crate::ControlPlane::authenticate`], because a valid signature alone
//! does not mean the token is still good.
//!
//! Not guaranteed: a token is a bearer credential. Whoever holds it can use it
//! until it expires or is revoked, so keep lifetimes short.

use chrono::{DateTime, TimeZone, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

/// Issuer claim written into and required from every token.
pub const ISSUER: &str = "countersign";

/// The claims of a Countersign access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The identity's login name (email).
    pub sub: String,
    /// The identity's id.
    pub uid: String,
    pub groups: Vec<String>,
    /// The token id, used for revocation.
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
}

impl Claims {
    pub fn expires_at(&self) -> DateTime<Utc> {
        Utc.timestamp_opt(self.exp, 0).single().unwrap_or_default()
    }
}

/// Why a token was refused. Messages are safe to show to the client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("access token is malformed")]
    Malformed,
    #[error("access token signature is invalid")]
    BadSignature,
    #[error("access token has expired")]
    Expired,
    #[error("access token has been revoked")]
    Revoked,
    #[error("access token is not known to this control plane")]
    Unknown,
    #[error("signing key is unusable: {0}")]
    Key(String),
}

/// Signs and verifies tokens with one Ed25519 key.
pub struct TokenSigner {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSigner(<secret>)")
    }
}

impl TokenSigner {
    /// A new Ed25519 private key in PKCS#8 PEM.
    pub fn generate_pem() -> Result<String, TokenError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .map_err(|e| TokenError::Key(e.to_string()))?;
        Ok(key.serialize_pem())
    }

    /// Builds a signer from an Ed25519 private key in PKCS#8 PEM.
    pub fn from_pem(private_pem: &str) -> Result<Self, TokenError> {
        let key =
            rcgen::KeyPair::from_pem(private_pem).map_err(|e| TokenError::Key(e.to_string()))?;
        if key.algorithm() != &rcgen::PKCS_ED25519 {
            return Err(TokenError::Key(
                "the signing key must be Ed25519".to_owned(),
            ));
        }
        let encoding = EncodingKey::from_ed_pem(private_pem.as_bytes())
            .map_err(|e| TokenError::Key(e.to_string()))?;
        let decoding = DecodingKey::from_ed_pem(key.public_key_pem().as_bytes())
            .map_err(|e| TokenError::Key(e.to_string()))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = 0;
        validation.set_issuer(&[ISSUER]);
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        Ok(Self {
            encoding,
            decoding,
            validation,
        })
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &self.encoding)
            .map_err(|e| TokenError::Key(e.to_string()))
    }

    /// Checks signature, issuer and expiry (no leeway).
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) => Ok(data.claims),
            Err(e) => Err(match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                _ => TokenError::Malformed,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp_in: i64) -> Claims {
        let now = Utc::now().timestamp();
        Claims {
            sub: "alice@example.com".into(),
            uid: "u1".into(),
            groups: vec!["dba".into()],
            jti: "t1".into(),
            iat: now,
            exp: now + exp_in,
            iss: ISSUER.into(),
        }
    }

    #[test]
    fn sign_and_verify_round_trip() {
        let signer = TokenSigner::from_pem(&TokenSigner::generate_pem().unwrap()).unwrap();
        let token = signer.sign(&claims(60)).unwrap();
        assert_eq!(signer.verify(&token).unwrap(), claims(60));
    }

    #[test]
    fn refuses_expired_foreign_and_garbage_tokens() {
        let signer = TokenSigner::from_pem(&TokenSigner::generate_pem().unwrap()).unwrap();
        let other = TokenSigner::from_pem(&TokenSigner::generate_pem().unwrap()).unwrap();
        assert_eq!(
            signer.verify(&signer.sign(&claims(-5)).unwrap()),
            Err(TokenError::Expired)
        );
        assert_eq!(
            signer.verify(&other.sign(&claims(60)).unwrap()),
            Err(TokenError::BadSignature)
        );
        assert_eq!(signer.verify("not-a-token"), Err(TokenError::Malformed));
        assert_eq!(signer.verify(""), Err(TokenError::Malformed));
    }

    #[test]
    fn refuses_non_ed25519_key() {
        let ecdsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        assert!(TokenSigner::from_pem(&ecdsa.serialize_pem()).is_err());
    }
}
