//! The sign-in flow on [`ControlPlane`]: start, callback, identity upsert.

use super::provider::VerifiedLogin;
use super::session::NewConsoleSession;
use super::{CLI_CODE_TTL, LOGIN_TTL, Refusal, RefusalKind, hash, random_token};
use crate::service::{ControlPlane, ServiceError, validate_identity_name, validate_name};
use crate::store::StoreError;
use crate::store::identities::{Identity, IdentityKind};
use crate::store::sso::{CliLogin, PendingLogin, TakenLogin};
use chrono::Utc;
use serde_json::json;

/// Audit account of refusals that happen before anyone is identified.
const ANONYMOUS: &str = "oidc";

/// The provider's redirect back to `/auth/callback`, as received.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct Callback {
    pub state: Option<String>,
    pub code: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    /// RFC 9207: the issuer that sent the response, when the provider says so.
    pub iss: Option<String>,
}

/// A started sign-in.
#[derive(Debug)]
pub struct StartedLogin {
    /// Where to send the browser: the provider's authorization endpoint.
    pub url: String,
    /// The value of the login cookie to set in that browser.
    pub browser_binding: String,
}

/// A finished sign-in.
#[derive(Debug)]
pub enum LoginDone {
    /// A browser login: a console session to set as a cookie, and the
    /// console path to go to (`/auth/session` when the login named none).
    Console {
        session: NewConsoleSession,
        return_to: String,
    },
    /// A CLI login: where to send the browser (the CLI's loopback listener,
    /// with a one-time code).
    Cli { redirect: String },
}

/// Why the callback did not sign anyone in.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Refused (and audited).
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<StoreError> for LoginError {
    fn from(e: StoreError) -> Self {
        Self::Service(e.into())
    }
}

/// Where a browser login lands when it named no `return_to`.
pub const DEFAULT_LANDING: &str = "/auth/session";

/// Checks a console path to return to after sign-in: a path on this
/// control plane (`/…`), never another site (`//host`, `/\host`, a scheme).
pub fn check_return_to(path: &str) -> Result<String, ServiceError> {
    let ok = path.starts_with('/')
        && !path.starts_with("//")
        && !path.starts_with("/\\")
        && path.len() <= 2048
        && path.chars().all(|c| c.is_ascii_graphic());
    if ok {
        Ok(path.to_owned())
    } else {
        Err(ServiceError::Invalid(
            "return_to must be a path on this control plane, like /reviews/ID".to_owned(),
        ))
    }
}

/// Checks a CLI's loopback redirect: `http://127.0.0.1:PORT/…`,
/// `http://[::1]:PORT/…` or `http://localhost:PORT/…` (RFC 8252), and its
/// S256 challenge.
pub fn check_cli_login(redirect: &str, challenge: &str) -> Result<CliLogin, ServiceError> {
    let url = openidconnect::url::Url::parse(redirect)
        .map_err(|e| ServiceError::Invalid(format!("cli_redirect: {e}")))?;
    let loopback = url.scheme() == "http"
        && url.port().is_some()
        && url.username().is_empty()
        && url.password().is_none()
        && matches!(url.host_str(), Some("127.0.0.1" | "[::1]" | "localhost"));
    if !loopback {
        return Err(ServiceError::Invalid(
            "cli_redirect must be http://127.0.0.1:PORT/… (a loopback listener)".to_owned(),
        ));
    }
    let ok = challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        return Err(ServiceError::Invalid(
            "cli_challenge must be an S256 code challenge (43 base64url characters)".to_owned(),
        ));
    }
    Ok(CliLogin {
        redirect: redirect.to_owned(),
        challenge: challenge.to_owned(),
    })
}

impl ControlPlane {
    /// Starts a login: stores its state, nonce, PKCE verifier and browser
    /// binding, and returns the provider URL to send the browser to.
    /// `return_to` must come from [`check_return_to`].
    pub async fn begin_login(
        &self,
        cli: Option<CliLogin>,
        return_to: Option<String>,
    ) -> Result<StartedLogin, ServiceError> {
        let provider = self.sso()?;
        let request = provider.authorize().await;
        let browser_binding = random_token();
        let now = Utc::now();
        let expires_at = now + chrono::Duration::from_std(LOGIN_TTL).unwrap_or_default();
        self.store()
            .insert_pending_login(&PendingLogin {
                state_hash: hash(&request.state),
                nonce: request.nonce,
                pkce_verifier: request.pkce_verifier,
                browser_hash: hash(&browser_binding),
                return_to,
                cli,
                created_at: now,
                expires_at,
            })
            .await?;
        // Leftovers a day past expiry go; failing to clean up is not a reason
        // to refuse a login.
        if let Err(e) = self
            .store()
            .purge_sso_leftovers(now - chrono::Duration::days(1))
            .await
        {
            tracing::warn!(error = %e, "purging expired sign-in state failed");
        }
        Ok(StartedLogin {
            url: request.url,
            browser_binding,
        })
    }

    /// Handles the provider's redirect. Every refusal is audited (event
    /// `auth`, action `refused`, with the reason), and so is every login
    /// (action `oidc_login`). `browser_binding` is the login cookie the
    /// request carried.
    pub async fn finish_login(
        &self,
        callback: &Callback,
        browser_binding: Option<&str>,
    ) -> Result<LoginDone, LoginError> {
        let mut account = ANONYMOUS.to_owned();
        match self
            .try_finish(callback, browser_binding, &mut account)
            .await
        {
            Err(LoginError::Refused(refusal)) => {
                let mut detail = serde_json::Map::new();
                detail.insert("method".to_owned(), "oidc".into());
                detail.insert("reason".to_owned(), refusal.reason.into());
                if let Some(d) = &refusal.detail {
                    detail.insert("detail".to_owned(), d.clone().into());
                }
                tracing::warn!(account, reason = refusal.reason, "sign-in refused");
                self.audit_auth(&account, "refused", serde_json::Value::Object(detail))
                    .await?;
                Err(LoginError::Refused(refusal))
            }
            other => other,
        }
    }

    async fn try_finish(
        &self,
        callback: &Callback,
        browser_binding: Option<&str>,
        account: &mut String,
    ) -> Result<LoginDone, LoginError> {
        let provider = self.sso()?;
        let bad = |reason, message: &str| Refusal::new(reason, RefusalKind::BadRequest, message);
        let state = callback
            .state
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("missing_state", "the callback carries no state"))?;
        let now = Utc::now();
        let login = match self.store().take_pending_login(&hash(state), now).await? {
            TakenLogin::Fresh(login) => login,
            TakenLogin::Unknown => {
                return Err(bad("unknown_state", "this sign-in was not started here").into());
            }
            TakenLogin::Replayed => {
                return Err(bad(
                    "replayed_state",
                    "this sign-in was completed already; start again",
                )
                .into());
            }
            TakenLogin::Expired => {
                return Err(bad(
                    "expired_state",
                    "this sign-in took longer than 10 minutes; start again",
                )
                .into());
            }
        };
        let same_browser = browser_binding.is_some_and(|b| {
            use subtle::ConstantTimeEq;
            bool::from(hash(b).as_bytes().ct_eq(login.browser_hash.as_bytes()))
        });
        if !same_browser {
            return Err(bad(
                "browser_mismatch",
                "this sign-in was started in another browser; start again here",
            )
            .into());
        }
        if let Some(error) = &callback.error {
            let refusal = Refusal::new(
                "provider_error",
                RefusalKind::Unauthenticated,
                format!("the identity provider refused the sign-in: {error}"),
            );
            let detail = match &callback.error_description {
                Some(d) => format!("{error}: {d}"),
                None => error.clone(),
            };
            return Err(refusal.with_detail(detail).into());
        }
        if let Some(iss) = &callback.iss
            && iss != provider.issuer()
        {
            return Err(Refusal::new(
                "wrong_issuer",
                RefusalKind::Unauthenticated,
                "the response comes from another issuer",
            )
            .with_detail(format!("iss {iss:?}"))
            .into());
        }
        let code = callback
            .code
            .as_deref()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| bad("missing_code", "the callback carries no code"))?;
        let verified = provider
            .redeem(code, &login.pkce_verifier, &login.nonce)
            .await?;
        let email = self.check_email(&verified, account)?;
        let groups = self.map_groups(&verified)?;
        let identity = self.upsert_oidc_identity(&verified, &email).await?;
        self.store().set_groups(&identity.id, &groups).await?;
        self.audit_auth(
            &identity.email,
            "oidc_login",
            json!({
                "issuer": verified.issuer,
                "subject": verified.subject,
                "groups": groups,
                "client": if login.cli.is_some() { "cli" } else { "console" },
            }),
        )
        .await?;
        tracing::info!(identity = %identity.email, ?groups, "signed in with OIDC");
        match login.cli {
            Some(cli) => {
                let code = random_token();
                let expires_at = now + chrono::Duration::from_std(CLI_CODE_TTL).unwrap_or_default();
                self.store()
                    .insert_cli_login_code(
                        &hash(&code),
                        &identity.id,
                        &cli.challenge,
                        now,
                        expires_at,
                    )
                    .await?;
                let mut redirect = openidconnect::url::Url::parse(&cli.redirect)
                    .map_err(|e| ServiceError::Invalid(format!("stored cli_redirect: {e}")))?;
                redirect.query_pairs_mut().append_pair("code", &code);
                Ok(LoginDone::Cli {
                    redirect: redirect.to_string(),
                })
            }
            None => Ok(LoginDone::Console {
                session: self.create_console_session(&identity).await?,
                return_to: login
                    .return_to
                    .unwrap_or_else(|| DEFAULT_LANDING.to_owned()),
            }),
        }
    }

    /// The identity's name: the provider's email, lowercased, verified unless
    /// the provider says otherwise, in an allowed domain.
    /// From the moment the email is known, refusals are audited under it
    /// (`account`).
    fn check_email(
        &self,
        verified: &VerifiedLogin,
        account: &mut String,
    ) -> Result<String, Refusal> {
        let forbidden =
            |reason, message: String| Refusal::new(reason, RefusalKind::Forbidden, message);
        let email = verified
            .email
            .as_deref()
            .map(str::to_ascii_lowercase)
            .ok_or_else(|| {
                forbidden(
                    "no_email",
                    "the ID token carries no email; ask for the `email` scope".to_owned(),
                )
            })?;
        if verified.email_verified == Some(false) {
            return Err(forbidden(
                "email_not_verified",
                format!("the identity provider has not verified {email}"),
            ));
        }
        if validate_identity_name(&email).is_err() {
            return Err(forbidden(
                "bad_email",
                format!("{email:?} cannot be a Countersign identity name"),
            ));
        }
        account.clone_from(&email);
        let settings = self.sso().map_err(|_| {
            Refusal::new(
                "not_configured",
                RefusalKind::BadRequest,
                "sign-in is not configured",
            )
        })?;
        let domains = &settings.settings().allowed_domains;
        if !domains.is_empty() {
            let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
            if !domains.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
                return Err(forbidden(
                    "domain_not_allowed",
                    format!("{email} is not in a domain allowed to sign in"),
                ));
            }
        }
        Ok(email)
    }

    /// The Countersign groups of the login: the mapped names of the groups
    /// claim. Unmapped provider groups give nothing.
    fn map_groups(&self, verified: &VerifiedLogin) -> Result<Vec<String>, Refusal> {
        let provider = self.sso().map_err(|_| {
            Refusal::new(
                "not_configured",
                RefusalKind::BadRequest,
                "sign-in is not configured",
            )
        })?;
        let settings = provider.settings();
        let claimed: Vec<&str> = match &verified.groups {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::String(one)) => vec![one.as_str()],
            Some(serde_json::Value::Array(items)) => {
                let mut names = Vec::with_capacity(items.len());
                for item in items {
                    let name = item.as_str().ok_or_else(|| {
                        Refusal::new(
                            "malformed_groups_claim",
                            RefusalKind::Unauthenticated,
                            format!("the {:?} claim must hold strings", settings.groups_claim),
                        )
                    })?;
                    names.push(name);
                }
                names
            }
            Some(_) => {
                return Err(Refusal::new(
                    "malformed_groups_claim",
                    RefusalKind::Unauthenticated,
                    format!(
                        "the {:?} claim must be an array of strings",
                        settings.groups_claim
                    ),
                ));
            }
        };
        let mut groups: Vec<String> = claimed
            .into_iter()
            .filter_map(|g| settings.group_map.get(g).cloned())
            .collect();
        groups.sort();
        groups.dedup();
        for g in &groups {
            if validate_name("group", g).is_err() {
                return Err(Refusal::new(
                    "bad_group_map",
                    RefusalKind::Forbidden,
                    format!("oidc.group_map maps to an invalid group name {g:?}"),
                ));
            }
        }
        Ok(groups)
    }

    /// Finds the identity this subject signed in as before, or the person
    /// with this email (binding the subject to it), or creates one.
    async fn upsert_oidc_identity(
        &self,
        verified: &VerifiedLogin,
        email: &str,
    ) -> Result<Identity, LoginError> {
        let store = self.store();
        let forbidden =
            |reason, message: String| Refusal::new(reason, RefusalKind::Forbidden, message);
        let identity = match store
            .oidc_subject_identity(&verified.issuer, &verified.subject)
            .await?
        {
            Some(id) => store
                .identity_by_id(&id)
                .await?
                .ok_or(StoreError::NotFound {
                    what: "identity",
                    key: id,
                })?,
            None => {
                let identity = match store.identity_by_email(email).await? {
                    Some(found) => found,
                    None => match store
                        .create_identity(email, IdentityKind::User, verified.name.as_deref(), &[])
                        .await
                    {
                        Err(StoreError::Conflict { .. }) => store
                            .identity_by_email(email)
                            .await?
                            .ok_or(StoreError::NotFound {
                            what: "identity",
                            key: email.to_owned(),
                        })?,
                        other => other?,
                    },
                };
                if identity.kind == IdentityKind::Service {
                    return Err(forbidden(
                        "service_account",
                        format!("{email} is a service account; it cannot sign in"),
                    )
                    .into());
                }
                match store
                    .bind_oidc_subject(&verified.issuer, &verified.subject, &identity.id)
                    .await
                {
                    Ok(()) => identity,
                    Err(StoreError::Conflict { .. }) => {
                        return Err(forbidden(
                            "email_bound_to_other_subject",
                            format!(
                                "{email} signed in before as another account of this identity provider"
                            ),
                        )
                        .into());
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        if identity.disabled {
            return Err(forbidden(
                "identity_disabled",
                format!("identity {} is disabled", identity.email),
            )
            .into());
        }
        Ok(identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn cli_redirects_must_be_loopback_listeners() {
        for ok in [
            "http://127.0.0.1:4711/callback",
            "http://[::1]:4711/callback",
            "http://localhost:4711/",
        ] {
            let cli = check_cli_login(ok, CHALLENGE).unwrap();
            assert_eq!(cli.redirect, ok);
        }
        for bad in [
            "https://127.0.0.1:4711/callback",
            "http://127.0.0.1/callback",
            "http://evil.example.com:4711/callback",
            "http://127.0.0.1.evil.example.com:4711/",
            "http://user:pw@127.0.0.1:4711/",
            "http://10.0.0.1:4711/",
            "not a url",
        ] {
            assert!(check_cli_login(bad, CHALLENGE).is_err(), "{bad}");
        }
        for bad in [
            "",
            "short",
            &"a".repeat(44),
            &format!("{}=", &CHALLENGE[..42]),
        ] {
            assert!(
                check_cli_login("http://127.0.0.1:4711/", bad).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn return_to_stays_on_this_site() {
        for ok in ["/", "/reviews/r-1", "/grants?mine=true"] {
            assert_eq!(check_return_to(ok).unwrap(), ok);
        }
        for bad in [
            "",
            "reviews",
            "//evil.example.com/",
            "/\\evil.example.com/",
            "https://evil.example.com/",
            "/a b",
            "/\u{e9}",
        ] {
            assert!(check_return_to(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn s256_matches_rfc7636() {
        // RFC 7636, appendix B.
        assert_eq!(
            crate::sso::s256_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            CHALLENGE
        );
    }
}
