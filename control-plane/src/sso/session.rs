//! Console sessions, their CSRF tokens, and the CLI's one-time login codes.
//!
//! A console session is a random 256-bit id in the `__Host-countersign`
//! cookie; the store keeps only its SHA-256, so reading the database does not
//! give anyone a session. Each session has its own random CSRF token
//! (synchronizer token), which every state-changing console request must
//! carry and which is compared in constant time.
//!
//! Not guaranteed: a session is as strong as the browser that holds it;
//! it ends at logout or expiry, not when the person is removed at the
//! identity provider.

use super::{hash, random_token, s256_challenge};
use crate::bindings::Role;
use crate::service::{ControlPlane, IssuedToken, Principal, ServiceError};
use crate::store::identities::Identity;
use crate::tokens::{Claims, ISSUER};
use chrono::{DateTime, Utc};
use subtle::ConstantTimeEq;

/// A session just created: the cookie value is only ever here, never stored.
#[derive(Debug)]
pub struct NewConsoleSession {
    pub cookie_value: String,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
    pub identity: String,
}

/// An active console session, resolved from its cookie.
#[derive(Clone, Debug)]
pub struct ConsoleSession {
    pub(crate) id_hash: String,
    pub identity: Identity,
    pub csrf_token: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl ConsoleSession {
    /// Whether `presented` is this session's CSRF token (constant time).
    pub fn csrf_matches(&self, presented: &str) -> bool {
        bool::from(self.csrf_token.as_bytes().ct_eq(presented.as_bytes()))
    }
}

impl ControlPlane {
    pub(crate) async fn create_console_session(
        &self,
        identity: &Identity,
    ) -> Result<NewConsoleSession, ServiceError> {
        let ttl = self.sso()?.settings().session_ttl;
        let cookie_value = random_token();
        let csrf_token = random_token();
        let now = Utc::now();
        let expires_at = now
            + chrono::Duration::from_std(ttl)
                .map_err(|_| ServiceError::Invalid("oidc.session_ttl is too long".to_owned()))?;
        self.store()
            .insert_console_session(
                &hash(&cookie_value),
                &identity.id,
                &csrf_token,
                now,
                expires_at,
            )
            .await?;
        Ok(NewConsoleSession {
            cookie_value,
            csrf_token,
            expires_at,
            identity: identity.email.clone(),
        })
    }

    /// The active session for a cookie value: known, not ended, not expired,
    /// and its identity still enabled.
    pub async fn console_session(
        &self,
        cookie_value: &str,
    ) -> Result<ConsoleSession, ServiceError> {
        let gone = || {
            ServiceError::Unauthenticated("the console session has ended; sign in again".to_owned())
        };
        let id_hash = hash(cookie_value);
        let record = self
            .store()
            .console_session(&id_hash)
            .await?
            .ok_or_else(gone)?;
        if record.ended_at.is_some() || record.expires_at <= Utc::now() {
            return Err(gone());
        }
        let identity = self
            .store()
            .identity_by_id(&record.identity_id)
            .await?
            .ok_or_else(gone)?;
        if identity.disabled {
            return Err(ServiceError::Unauthenticated(format!(
                "identity {} is disabled",
                identity.email
            )));
        }
        Ok(ConsoleSession {
            id_hash,
            identity,
            csrf_token: record.csrf_token,
            created_at: record.created_at,
            expires_at: record.expires_at,
        })
    }

    /// Ends a console session (logout).
    pub async fn end_console_session(&self, session: &ConsoleSession) -> Result<(), ServiceError> {
        self.store()
            .end_console_session(&session.id_hash, Utc::now())
            .await?;
        self.audit_auth(
            &session.identity.email,
            "logout",
            serde_json::json!({ "method": "console_session" }),
        )
        .await?;
        Ok(())
    }

    /// The API principal of a console session, with the same roles a token
    /// of the identity would get.
    pub async fn session_principal(
        &self,
        session: &ConsoleSession,
    ) -> Result<Principal, ServiceError> {
        let identity = session.identity.clone();
        let mut bound_roles = Vec::new();
        for role in [Role::Admin, Role::Auditor] {
            if self.identity_has_role(&identity, role, None, None).await? {
                bound_roles.push(role);
            }
        }
        let claims = Claims {
            sub: identity.email.clone(),
            uid: identity.id.clone(),
            groups: identity.groups.clone(),
            // Not a token: a session cannot be revoked through the token API.
            jti: String::new(),
            iat: session.created_at.timestamp(),
            exp: session.expires_at.timestamp(),
            iss: ISSUER.to_owned(),
        };
        Ok(Principal::Identity {
            identity: Box::new(identity),
            claims: Box::new(claims),
            bound_roles,
        })
    }

    /// Trades a CLI's one-time code and PKCE verifier for an access token
    /// (default lifetime, capped like every token). Refusals are audited.
    pub async fn redeem_cli_code(
        &self,
        code: &str,
        verifier: &str,
    ) -> Result<IssuedToken, ServiceError> {
        self.sso()?;
        let refuse = |reason: &'static str, account: String| async move {
            let detail = serde_json::json!({ "method": "oidc_cli", "reason": reason });
            tracing::warn!(account, reason, "CLI login code refused");
            if let Err(e) = self.audit_auth(&account, "refused", detail).await {
                return e;
            }
            ServiceError::Unauthenticated(
                "the login code is unknown, used or expired; run `countersign login` again"
                    .to_owned(),
            )
        };
        let Some((identity_id, challenge)) = self
            .store()
            .take_cli_login_code(&hash(code), Utc::now())
            .await?
        else {
            return Err(refuse("unknown_cli_code", "oidc".to_owned()).await);
        };
        let identity = self
            .store()
            .identity_by_id(&identity_id)
            .await?
            .ok_or_else(|| ServiceError::Unauthenticated("the identity is gone".to_owned()))?;
        let expected = s256_challenge(verifier);
        if !bool::from(expected.as_bytes().ct_eq(challenge.as_bytes())) {
            return Err(refuse("cli_verifier_mismatch", identity.email.clone()).await);
        }
        if identity.disabled {
            return Err(refuse("identity_disabled", identity.email.clone()).await);
        }
        let issued = self
            .issue_token(&identity.email, &[], None, "oidc-cli-login")
            .await?;
        self.audit_auth(
            &identity.email,
            "cli_token_issued",
            serde_json::json!({ "token_id": issued.token_id, "expires_at": issued.expires_at }),
        )
        .await?;
        Ok(issued)
    }
}
