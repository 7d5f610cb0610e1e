//! The identity provider, through `openidconnect`: discovery, the
//! authorization URL, the code exchange and the ID token checks.
//!
//! The provider's metadata and signing keys are fetched at start (a failure
//! stops the control plane) and fetched again when older than
//! [`REDISCOVER_AFTER`], or when an ID token's signature matches no held key
//! (at most once per [`KEY_REFRESH_MIN_INTERVAL`]), so that key rotation at
//! the provider is picked up; if a later fetch fails, the keys already held
//! stay in use and the failure is logged.

use super::{OidcSettings, Refusal, RefusalKind};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
    CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthorizationCode, ClaimsVerificationError, Client, ClientId, ClientSecret,
    CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdToken,
    IdTokenFields, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    StandardErrorResponse, StandardTokenResponse, TokenResponse,
};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// How old the provider's metadata and keys may get before they are fetched again.
pub const REDISCOVER_AFTER: Duration = Duration::from_secs(15 * 60);
/// A signature that no held key verifies makes the keys be fetched again,
/// but not more often than this (a flood of bad tokens must not become a
/// flood of requests to the provider).
pub const KEY_REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(60);

/// Claims of the ID token beyond the standard ones; the groups claim is
/// looked up here by its configured name.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
pub struct ExtraClaims {
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
}

impl AdditionalClaims for ExtraClaims {}

type IdpTokenResponse = StandardTokenResponse<
    IdTokenFields<
        ExtraClaims,
        EmptyExtraTokenFields,
        CoreGenderClaim,
        CoreJweContentEncryptionAlgorithm,
        CoreJwsSigningAlgorithm,
    >,
    CoreTokenType,
>;

type IdpIdToken = IdToken<
    ExtraClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

type IdpClient = Client<
    ExtraClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    IdpTokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Why discovery failed at start.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("oidc.{field}: {message}")]
    Config {
        field: &'static str,
        message: String,
    },
    #[error("OIDC discovery at {issuer} failed: {message}")]
    Fetch { issuer: String, message: String },
}

/// A new authorization request: the URL to send the browser to, and what
/// stays server-side to check the answer.
#[derive(Debug)]
pub struct AuthorizationRequest {
    pub url: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

/// What a verified ID token says about the person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedLogin {
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    pub name: Option<String>,
    /// The groups claim as sent, `None` when absent.
    pub groups: Option<serde_json::Value>,
}

/// The configured provider, with its metadata and keys.
#[derive(Debug)]
pub struct Provider {
    settings: OidcSettings,
    issuer: IssuerUrl,
    redirect: RedirectUrl,
    http: reqwest::Client,
    metadata: RwLock<(Instant, Arc<CoreProviderMetadata>)>,
}

impl Provider {
    /// Checks the settings and runs discovery; fails with the reason when the
    /// issuer is unreachable or its document does not match.
    pub async fn discover(settings: OidcSettings) -> Result<Self, DiscoveryError> {
        let issuer =
            IssuerUrl::new(settings.issuer_url.clone()).map_err(|e| DiscoveryError::Config {
                field: "issuer_url",
                message: e.to_string(),
            })?;
        let redirect = RedirectUrl::new(settings.redirect_url.clone()).map_err(|e| {
            DiscoveryError::Config {
                field: "redirect_url",
                message: e.to_string(),
            }
        })?;
        // No redirects: a provider endpoint that redirects is misconfigured,
        // and following one would let it point the control plane anywhere.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| DiscoveryError::Fetch {
                issuer: settings.issuer_url.clone(),
                message: format!("building the HTTP client: {e}"),
            })?;
        let metadata = fetch(&issuer, &http).await?;
        if metadata.token_endpoint().is_none() {
            return Err(DiscoveryError::Fetch {
                issuer: settings.issuer_url.clone(),
                message: "the discovery document names no token_endpoint".to_owned(),
            });
        }
        Ok(Self {
            settings,
            issuer,
            redirect,
            http,
            metadata: RwLock::new((Instant::now(), Arc::new(metadata))),
        })
    }

    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    pub fn issuer(&self) -> &str {
        self.issuer.as_str()
    }

    fn held(&self) -> (Instant, Arc<CoreProviderMetadata>) {
        match self.metadata.read() {
            Ok(guard) => (guard.0, guard.1.clone()),
            Err(poisoned) => {
                let guard = poisoned.into_inner();
                (guard.0, guard.1.clone())
            }
        }
    }

    /// The current metadata, fetched again first when it is older than `max_age`.
    async fn metadata_within(&self, max_age: Duration) -> Arc<CoreProviderMetadata> {
        let (at, current) = self.held();
        if at.elapsed() < max_age {
            return current;
        }
        match fetch(&self.issuer, &self.http).await {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                let mut guard = match self.metadata.write() {
                    Ok(g) => g,
                    Err(poisoned) => poisoned.into_inner(),
                };
                *guard = (Instant::now(), fresh.clone());
                fresh
            }
            Err(e) => {
                tracing::warn!(error = %e, "OIDC rediscovery failed; keeping the keys held");
                current
            }
        }
    }

    async fn metadata(&self) -> Arc<CoreProviderMetadata> {
        self.metadata_within(REDISCOVER_AFTER).await
    }

    async fn client(&self) -> IdpClient {
        self.client_for(self.metadata().await.as_ref())
    }

    fn client_for(&self, metadata: &CoreProviderMetadata) -> IdpClient {
        IdpClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(self.settings.client_id.clone()),
            Some(ClientSecret::new(
                self.settings.client_secret.expose().clone(),
            )),
        )
        .set_redirect_uri(self.redirect.clone())
    }

    /// A new authorization request, with a random state, nonce and PKCE
    /// verifier (S256).
    pub async fn authorize(&self) -> AuthorizationRequest {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let client = self.client().await;
        let mut request = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for scope in &self.settings.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        AuthorizationRequest {
            url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        }
    }

    /// Redeems `code` with the login's PKCE verifier and checks the ID token
    /// (signature, issuer, audience, expiry, nonce).
    pub async fn redeem(
        &self,
        code: &str,
        verifier: &str,
        nonce: &str,
    ) -> Result<VerifiedLogin, Refusal> {
        let client = self.client().await;
        let request = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| {
                Refusal::new(
                    "provider_misconfigured",
                    RefusalKind::Unauthenticated,
                    format!("the provider has no token endpoint: {e}"),
                )
            })?;
        let response = request
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()))
            .request_async(&self.http)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, detail = ?e, "OIDC code exchange failed");
                Refusal::new(
                    "code_exchange_failed",
                    RefusalKind::Unauthenticated,
                    "the identity provider did not accept the authorization code",
                )
                .with_detail(error_chain(&e))
            })?;
        let id_token = response.id_token().ok_or_else(|| {
            Refusal::new(
                "no_id_token",
                RefusalKind::Unauthenticated,
                "the identity provider returned no ID token",
            )
        })?;
        self.verify(&client, id_token, nonce).await
    }

    /// Checks an ID token given as text (signature, issuer, audience,
    /// expiry, nonce), as [`Provider::redeem`] does with the one it receives.
    pub async fn verify_id_token(
        &self,
        id_token: &str,
        nonce: &str,
    ) -> Result<VerifiedLogin, Refusal> {
        let parsed: IdpIdToken = id_token.parse().map_err(|e: serde_json::Error| {
            Refusal::new(
                "id_token_invalid",
                RefusalKind::Unauthenticated,
                "the ID token is not valid",
            )
            .with_detail(e.to_string())
        })?;
        let client = self.client().await;
        self.verify(&client, &parsed, nonce).await
    }

    async fn verify(
        &self,
        client: &IdpClient,
        id_token: &IdpIdToken,
        nonce: &str,
    ) -> Result<VerifiedLogin, Refusal> {
        let nonce = Nonce::new(nonce.to_owned());
        let claims = match id_token.claims(&client.id_token_verifier(), &nonce) {
            Ok(claims) => claims.clone(),
            // A key the provider rotated in since the last discovery: fetch
            // the keys again (at most once a minute) and check once more.
            Err(ClaimsVerificationError::SignatureVerification(_))
                if self.held().0.elapsed() >= KEY_REFRESH_MIN_INTERVAL =>
            {
                let metadata = self.metadata_within(KEY_REFRESH_MIN_INTERVAL).await;
                let client = self.client_for(&metadata);
                id_token
                    .claims(&client.id_token_verifier(), &nonce)
                    .map_err(id_token_refusal)?
                    .clone()
            }
            Err(e) => return Err(id_token_refusal(e)),
        };
        let email_verified = claims.email_verified();
        Ok(VerifiedLogin {
            issuer: claims.issuer().as_str().to_owned(),
            subject: claims.subject().as_str().to_owned(),
            email: claims.email().map(|e| e.as_str().to_owned()),
            email_verified,
            name: claims
                .name()
                .and_then(|n| n.get(None))
                .map(|n| n.as_str().to_owned()),
            groups: claims
                .additional_claims()
                .other
                .get(&self.settings.groups_claim)
                .cloned(),
        })
    }
}

async fn fetch(
    issuer: &IssuerUrl,
    http: &reqwest::Client,
) -> Result<CoreProviderMetadata, DiscoveryError> {
    CoreProviderMetadata::discover_async(issuer.clone(), http)
        .await
        .map_err(|e| DiscoveryError::Fetch {
            issuer: issuer.as_str().to_owned(),
            message: error_chain(&e),
        })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn id_token_refusal(e: ClaimsVerificationError) -> Refusal {
    let (reason, message) = match &e {
        ClaimsVerificationError::Expired(_) => ("id_token_expired", "the ID token has expired"),
        ClaimsVerificationError::InvalidNonce(_) => (
            "nonce_mismatch",
            "the ID token was not issued for this login (nonce mismatch)",
        ),
        ClaimsVerificationError::InvalidIssuer(_) => {
            ("wrong_issuer", "the ID token comes from another issuer")
        }
        ClaimsVerificationError::InvalidAudience(_) => (
            "wrong_audience",
            "the ID token was issued for another client",
        ),
        ClaimsVerificationError::SignatureVerification(_) => {
            ("bad_signature", "the ID token's signature does not verify")
        }
        _ => ("id_token_invalid", "the ID token is not valid"),
    };
    tracing::warn!(error = %e, reason, "ID token refused");
    Refusal::new(reason, RefusalKind::Unauthenticated, message).with_detail(e.to_string())
}
