//! A test OIDC issuer, as a CI system runs one: a discovery document and a
//! JWKS served on `127.0.0.1:0`, and pipeline tokens signed with its keys.

use anyhow::{Context, Result};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// An issuer publishing one Ed25519 key (`kid` "ed1") and one P-256 key ("ec1").
pub struct Issuer {
    pub url: String,
    pub ed: EncodingKey,
    pub ec: EncodingKey,
    /// Same kid as `ed`, different key: an impostor's signature.
    pub other: EncodingKey,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Issuer {
    pub async fn start() -> Result<Issuer> {
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        let ec_raw = ec.public_key_raw();
        anyhow::ensure!(ec_raw.len() == 65, "unexpected P-256 public key length");
        let jwks = json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed1", "alg": "EdDSA", "use": "sig",
             "x": URL_SAFE_NO_PAD.encode(ed.public_key_raw())},
            {"kty": "EC", "crv": "P-256", "kid": "ec1", "alg": "ES256", "use": "sig",
             "x": URL_SAFE_NO_PAD.encode(&ec_raw[1..33]),
             "y": URL_SAFE_NO_PAD.encode(&ec_raw[33..65])},
        ]});
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let discovery = json!({"issuer": url, "jwks_uri": format!("{url}/jwks")});
        let router = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || async move { axum::Json(discovery) }),
            )
            .route(
                "/jwks",
                axum::routing::get(move || async move { axum::Json(jwks) }),
            );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Issuer {
            url,
            ed: EncodingKey::from_ed_pem(ed.serialize_pem().as_bytes())?,
            ec: EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes())?,
            other: EncodingKey::from_ed_pem(other.serialize_pem().as_bytes())?,
            task,
        })
    }

    /// Claims a GitHub-like pipeline token carries for acme/app on main.
    pub fn claims(&self) -> Value {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        json!({
            "iss": self.url,
            "aud": "countersign",
            "sub": "repo:acme/app:ref:refs/heads/main",
            "repository": "acme/app",
            "ref": "refs/heads/main",
            "jti": "run-1",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
        })
    }

    pub fn sign_with(
        &self,
        key: &EncodingKey,
        alg: Algorithm,
        kid: &str,
        claims: &Value,
    ) -> Result<String> {
        let mut header = Header::new(alg);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, key).context("signing a test token")
    }

    /// `claims` signed with the Ed25519 key.
    pub fn sign(&self, claims: &Value) -> Result<String> {
        self.sign_with(&self.ed, Algorithm::EdDSA, "ed1", claims)
    }
}
