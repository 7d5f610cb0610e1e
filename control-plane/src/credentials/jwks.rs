//! Issuers' signing keys, found by OIDC discovery and cached per issuer.
//!
//! `{issuer}/.well-known/openid-configuration` names `jwks_uri`; the key set
//! found there is kept for [`JWKS_TTL`]. A token whose `kid` is not in the
//! cached set causes one refetch, so that a rotated key is picked up at once.
//!
//! Not guaranteed: an unknown `kid` costs a fetch from the issuer per
//! request; the issuer, not this cache, bears that load. Responses are capped
//! at [`MAX_DOCUMENT_BYTES`] and redirects are not followed.

use jsonwebtoken::jwk::{Jwk, JwkSet};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a fetched key set is trusted without refetching.
pub const JWKS_TTL: Duration = Duration::from_secs(300);
/// Largest discovery document or key set accepted.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the issuer's keys could not be had. Shown to the client only as
/// "cannot fetch the issuer's signing keys"; the detail goes to the log.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("no TLS crypto provider is installed")]
    NoCryptoProvider,
    #[error("{url}: {detail}")]
    Fetch { url: String, detail: String },
    #[error("{url}: {detail}")]
    Document { url: String, detail: String },
}

#[derive(Debug)]
struct Entry {
    keys: JwkSet,
    fetched: Instant,
}

/// Key sets by issuer. Shared by all requests of one replica.
#[derive(Debug, Default)]
pub struct JwksCache {
    entries: Mutex<HashMap<String, Entry>>,
    client: OnceLock<reqwest::Client>,
}

/// Whether `url` may be fetched: https, or http to a loopback host (tests and
/// `countersign dev`).
pub fn allowed_url(url: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else {
        return false;
    };
    match u.scheme() {
        "https" => u.host_str().is_some(),
        "http" => matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]")),
        _ => false,
    }
}

impl JwksCache {
    /// The key `kid` of `issuer`, or `None` if the issuer does not publish it.
    pub async fn key(&self, issuer: &str, kid: &str) -> Result<Option<Jwk>, JwksError> {
        if let Some(found) = self.cached(issuer, kid) {
            return Ok(found);
        }
        let keys = self.fetch(issuer).await?;
        let found = keys.find(kid).cloned();
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(
                issuer.to_owned(),
                Entry {
                    keys,
                    fetched: Instant::now(),
                },
            );
        }
        Ok(found)
    }

    /// `Some(key)` from a fresh cache entry holding `kid`; `None` means fetch.
    fn cached(&self, issuer: &str, kid: &str) -> Option<Option<Jwk>> {
        let entries = self.entries.lock().ok()?;
        let entry = entries.get(issuer)?;
        if entry.fetched.elapsed() > JWKS_TTL {
            return None;
        }
        entry.keys.find(kid).cloned().map(Some)
    }

    fn client(&self) -> Result<&reqwest::Client, JwksError> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        // reqwest panics without a provider; refuse instead.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            return Err(JwksError::NoCryptoProvider);
        }
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("countersign/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| JwksError::Fetch {
                url: String::new(),
                detail: e.to_string(),
            })?;
        Ok(self.client.get_or_init(|| client))
    }

    async fn fetch(&self, issuer: &str) -> Result<JwkSet, JwksError> {
        let discovery = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let doc: serde_json::Value = self.get_json(&discovery).await?;
        let bad = |detail: &str| JwksError::Document {
            url: discovery.clone(),
            detail: detail.to_owned(),
        };
        if doc.get("issuer").and_then(|v| v.as_str()) != Some(issuer) {
            return Err(bad("its issuer is not the configured issuer"));
        }
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(|v| v.as_str())
            .ok_or_else(|| bad("it names no jwks_uri"))?;
        if !allowed_url(jwks_uri) {
            return Err(bad("jwks_uri must be https"));
        }
        self.get_json(jwks_uri).await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, JwksError> {
        let fetch = |detail: String| JwksError::Fetch {
            url: url.to_owned(),
            detail,
        };
        let mut resp = self
            .client()?
            .get(url)
            .send()
            .await
            .map_err(|e| fetch(e.without_url().to_string()))?;
        if !resp.status().is_success() {
            return Err(fetch(format!("status {}", resp.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| fetch(e.without_url().to_string()))?
        {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(fetch(format!("larger than {MAX_DOCUMENT_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| JwksError::Document {
            url: url.to_owned(),
            detail: e.to_string(),
        })
    }
}
