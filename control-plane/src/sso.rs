//! Single sign-on for people: OpenID Connect authorization code flow with
//! PKCE, console sessions, and the CLI's loopback login.
//!
//! Layout:
//! - [`provider`]: discovery and the `openidconnect` client: the authorization
//!   URL, the code exchange and the ID token checks.
//! - [`login`]: the flow on [`ControlPlane`]: pending logins kept in the store
//!   (state, nonce, PKCE verifier; single use, 10 minutes), the callback,
//!   identity upsert and group mapping, audit of every refusal and login.
//! - [`session`]: console sessions (an opaque cookie, stored hashed) and their
//!   CSRF tokens; one-time codes that `countersign login` trades for an access
//!   token.
//!
//! Guarantees: a callback is accepted only for a state this control plane
//! issued, once, within 10 minutes; the code is redeemed with that login's
//! PKCE verifier; the ID token's signature, issuer, audience, expiry and
//! nonce are checked before anything is written. Group memberships of a
//! signed-in person are exactly the mapped groups of their latest login.
//!
//! Not guaranteed: group changes at the provider reach Countersign only at
//! the person's next login; sessions and tokens issued before keep working
//! until they end or are revoked. Countersign trusts the provider's `email`
//! claim (unless `email_verified` is false) as the identity's name.

pub mod login;
pub mod provider;
pub mod session;

use countersign_common::Secret;
use std::collections::BTreeMap;
use std::time::Duration;

/// How long a started login may wait for its callback.
pub const LOGIN_TTL: Duration = Duration::from_secs(10 * 60);
/// How long the CLI has to redeem its one-time code.
pub const CLI_CODE_TTL: Duration = Duration::from_secs(2 * 60);
/// Name of the console session cookie. The `__Host-` prefix makes browsers
/// refuse it unless it is `Secure`, has `Path=/` and no `Domain`, so no
/// sibling host can set or overwrite it.
pub const SESSION_COOKIE: &str = "__Host-countersign";
/// Name of the cookie that ties a started login to its browser: the
/// callback is accepted only from the browser that holds it, so a callback
/// URL captured by someone else (login CSRF) signs nobody in.
pub const LOGIN_COOKIE: &str = "__Host-countersign-login";
/// Header carrying the console session's CSRF token on API calls.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The `[oidc]` settings, validated by the config loader.
#[derive(Clone, Debug)]
pub struct OidcSettings {
    /// The provider's issuer URL; discovery reads `<issuer>/.well-known/openid-configuration`.
    pub issuer_url: String,
    pub client_id: String,
    pub client_secret: Secret<String>,
    /// Where the provider sends the browser back: `<public_url>/auth/callback`.
    pub redirect_url: String,
    /// Scopes asked for besides `openid`.
    pub scopes: Vec<String>,
    /// ID token claim holding the person's groups (an array of strings).
    pub groups_claim: String,
    /// Provider group name to Countersign group name. Groups not listed are ignored.
    pub group_map: BTreeMap<String, String>,
    /// When not empty, only emails in these domains may sign in.
    pub allowed_domains: Vec<String>,
    /// Lifetime of a console session.
    pub session_ttl: Duration,
}

/// Why a sign-in step was refused. The reason code goes to the audit and,
/// with the message, to the caller; nothing else about the cause does.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// Short machine-readable reason, e.g. `replayed_state`.
    pub reason: &'static str,
    pub message: String,
    pub kind: RefusalKind,
    /// More for the audit (for example the provider's error); never secrets.
    pub detail: Option<String>,
}

/// How a refusal maps to HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalKind {
    /// The request itself is wrong (400).
    BadRequest,
    /// The provider's answer did not authenticate anyone (401).
    Unauthenticated,
    /// Someone authenticated but may not sign in (403).
    Forbidden,
}

impl Refusal {
    pub(crate) fn new(reason: &'static str, kind: RefusalKind, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            kind,
            detail: None,
        }
    }

    pub(crate) fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// Hex SHA-256: how states, session ids and CLI codes are stored.
pub(crate) fn hash(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// 32 random bytes, base64url without padding.
pub(crate) fn random_token() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The S256 code challenge of a verifier (RFC 7636).
pub fn s256_challenge(verifier: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()))
}
