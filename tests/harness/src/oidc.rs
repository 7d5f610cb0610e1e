//! A test OIDC issuer, as a CI system runs one: a discovery document and a
//! JWKS served on `127.0.0.1:0`, and pipeline tokens signed with its keys.

use anyhow::{Context, Result};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// An issuer publishing one Ed25519 key (`kid` "ed1"), one P-256 key ("ec1")
/// and one RSA-2048 key ("rs1").
pub struct Issuer {
    pub url: String,
    pub ed: EncodingKey,
    pub ec: EncodingKey,
    pub rs: EncodingKey,
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
        let rsa = RsaKey::generate()?;
        let jwks = json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed1", "alg": "EdDSA", "use": "sig",
             "x": URL_SAFE_NO_PAD.encode(ed.public_key_raw())},
            {"kty": "EC", "crv": "P-256", "kid": "ec1", "alg": "ES256", "use": "sig",
             "x": URL_SAFE_NO_PAD.encode(&ec_raw[1..33]),
             "y": URL_SAFE_NO_PAD.encode(&ec_raw[33..65])},
            {"kty": "RSA", "kid": "rs1", "alg": "RS256", "use": "sig",
             "n": URL_SAFE_NO_PAD.encode(&rsa.modulus), "e": "AQAB"},
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
            rs: EncodingKey::from_rsa_pem(&rsa.pem)?,
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

/// An RSA key pair made by the `openssl` command (the test script installs
/// it): rcgen with ring cannot generate RSA keys.
struct RsaKey {
    pem: Vec<u8>,
    /// Big-endian modulus; the public exponent is 65537.
    modulus: Vec<u8>,
}

impl RsaKey {
    fn generate() -> Result<RsaKey> {
        let out = std::process::Command::new("openssl")
            .args(["genrsa", "2048"])
            .output()
            .context("running openssl genrsa (install the openssl package)")?;
        anyhow::ensure!(out.status.success(), "openssl genrsa failed");
        let pem = out.stdout;
        let mut child = std::process::Command::new("openssl")
            .args(["rsa", "-noout", "-modulus"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("running openssl rsa")?;
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().context("openssl stdin")?;
            stdin.write_all(&pem)?;
        }
        let out = child.wait_with_output()?;
        anyhow::ensure!(out.status.success(), "openssl rsa -modulus failed");
        let text = String::from_utf8(out.stdout)?;
        let hex = text
            .trim()
            .strip_prefix("Modulus=")
            .context("openssl printed no modulus")?;
        let modulus = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
            .collect::<Result<Vec<u8>, _>>()
            .context("openssl printed a modulus that is not hex")?;
        Ok(RsaKey { pem, modulus })
    }
}
