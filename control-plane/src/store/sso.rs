//! Single sign-on state: pending OIDC logins, subject bindings, console
//! sessions and one-time CLI login codes. Secrets (state, session id, CLI
//! code) are stored only as SHA-256 hashes; the caller hashes them.

use super::entity::{cli_login_code, console_session, oidc_login, oidc_subject};
use super::{Store, StoreError};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};

/// A login started at `GET /auth/login`, waiting for the provider's callback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingLogin {
    pub state_hash: String,
    pub nonce: String,
    pub pkce_verifier: String,
    /// Hash of the login cookie of the browser that started the login.
    pub browser_hash: String,
    /// The console path to land on after a browser login (`/…`).
    pub return_to: Option<String>,
    /// Set when `countersign login` started the login.
    pub cli: Option<CliLogin>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Where a CLI login returns to, and the CLI's code challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CliLogin {
    pub redirect: String,
    pub challenge: String,
}

/// The outcome of claiming a pending login by its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TakenLogin {
    /// First use, before expiry: the login is now consumed.
    Fresh(PendingLogin),
    /// No login was started with this state.
    Unknown,
    /// The state was used before.
    Replayed,
    /// The login was started too long ago (it is consumed all the same).
    Expired,
}

/// A console session as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleSessionRecord {
    pub identity_id: String,
    pub csrf_token: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
}

impl Store {
    pub async fn insert_pending_login(&self, login: &PendingLogin) -> Result<(), StoreError> {
        oidc_login::Entity::insert(oidc_login::ActiveModel {
            state_hash: Set(login.state_hash.clone()),
            nonce: Set(login.nonce.clone()),
            pkce_verifier: Set(login.pkce_verifier.clone()),
            browser_hash: Set(login.browser_hash.clone()),
            return_to: Set(login.return_to.clone()),
            cli_redirect: Set(login.cli.as_ref().map(|c| c.redirect.clone())),
            cli_challenge: Set(login.cli.as_ref().map(|c| c.challenge.clone())),
            created_at: Set(login.created_at),
            expires_at: Set(login.expires_at),
            consumed_at: Set(None),
        })
        .exec_without_returning(self.db())
        .await?;
        Ok(())
    }

    /// Claims the login started with `state_hash`. Only one caller can ever
    /// get [`TakenLogin::Fresh`]: the row is marked consumed by a conditional
    /// update, so two concurrent callbacks with the same state cannot both win.
    pub async fn take_pending_login(
        &self,
        state_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<TakenLogin, StoreError> {
        let claimed = oidc_login::Entity::update_many()
            .col_expr(oidc_login::Column::ConsumedAt, Expr::value(now))
            .filter(oidc_login::Column::StateHash.eq(state_hash))
            .filter(oidc_login::Column::ConsumedAt.is_null())
            .exec(self.db())
            .await?
            .rows_affected
            == 1;
        let Some(m) = oidc_login::Entity::find_by_id(state_hash)
            .one(self.db())
            .await?
        else {
            return Ok(TakenLogin::Unknown);
        };
        if !claimed {
            return Ok(TakenLogin::Replayed);
        }
        if m.expires_at <= now {
            return Ok(TakenLogin::Expired);
        }
        let cli = match (m.cli_redirect, m.cli_challenge) {
            (Some(redirect), Some(challenge)) => Some(CliLogin {
                redirect,
                challenge,
            }),
            (None, None) => None,
            _ => {
                return Err(StoreError::Corrupt(
                    "a pending login has half of its CLI fields".to_owned(),
                ));
            }
        };
        Ok(TakenLogin::Fresh(PendingLogin {
            state_hash: m.state_hash,
            nonce: m.nonce,
            pkce_verifier: m.pkce_verifier,
            browser_hash: m.browser_hash,
            return_to: m.return_to,
            cli,
            created_at: m.created_at,
            expires_at: m.expires_at,
        }))
    }

    /// Deletes pending logins and CLI codes that expired before `before`.
    /// Keeping them a while after expiry lets a late replay be told apart
    /// from an unknown state in the audit.
    pub async fn purge_sso_leftovers(&self, before: DateTime<Utc>) -> Result<(), StoreError> {
        oidc_login::Entity::delete_many()
            .filter(oidc_login::Column::ExpiresAt.lt(before))
            .exec(self.db())
            .await?;
        cli_login_code::Entity::delete_many()
            .filter(cli_login_code::Column::ExpiresAt.lt(before))
            .exec(self.db())
            .await?;
        console_session::Entity::delete_many()
            .filter(console_session::Column::ExpiresAt.lt(before))
            .exec(self.db())
            .await?;
        Ok(())
    }

    /// The identity an issuer's subject signed in as before, if any.
    pub async fn oidc_subject_identity(
        &self,
        issuer: &str,
        subject: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(
            oidc_subject::Entity::find_by_id((issuer.to_owned(), subject.to_owned()))
                .one(self.db())
                .await?
                .map(|m| m.identity_id),
        )
    }

    /// Binds an issuer's subject to an identity. `Conflict` when the subject
    /// or the identity is bound already (one subject per identity and issuer).
    pub async fn bind_oidc_subject(
        &self,
        issuer: &str,
        subject: &str,
        identity_id: &str,
    ) -> Result<(), StoreError> {
        oidc_subject::Entity::insert(oidc_subject::ActiveModel {
            issuer: Set(issuer.to_owned()),
            subject: Set(subject.to_owned()),
            identity_id: Set(identity_id.to_owned()),
            created_at: Set(Utc::now()),
        })
        .exec_without_returning(self.db())
        .await
        .map_err(|e| super::conflict_or(e, "oidc subject binding", subject))?;
        Ok(())
    }

    pub async fn insert_console_session(
        &self,
        id_hash: &str,
        identity_id: &str,
        csrf_token: &str,
        created_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        console_session::Entity::insert(console_session::ActiveModel {
            id_hash: Set(id_hash.to_owned()),
            identity_id: Set(identity_id.to_owned()),
            csrf_token: Set(csrf_token.to_owned()),
            created_at: Set(created_at),
            expires_at: Set(expires_at),
            ended_at: Set(None),
        })
        .exec_without_returning(self.db())
        .await?;
        Ok(())
    }

    pub async fn console_session(
        &self,
        id_hash: &str,
    ) -> Result<Option<ConsoleSessionRecord>, StoreError> {
        Ok(console_session::Entity::find_by_id(id_hash)
            .one(self.db())
            .await?
            .map(|m| ConsoleSessionRecord {
                identity_id: m.identity_id,
                csrf_token: m.csrf_token,
                created_at: m.created_at,
                expires_at: m.expires_at,
                ended_at: m.ended_at,
            }))
    }

    /// Ends a console session; `false` when it was not active.
    pub async fn end_console_session(
        &self,
        id_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Ok(console_session::Entity::update_many()
            .col_expr(console_session::Column::EndedAt, Expr::value(now))
            .filter(console_session::Column::IdHash.eq(id_hash))
            .filter(console_session::Column::EndedAt.is_null())
            .exec(self.db())
            .await?
            .rows_affected
            == 1)
    }

    pub async fn insert_cli_login_code(
        &self,
        code_hash: &str,
        identity_id: &str,
        challenge: &str,
        created_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        cli_login_code::Entity::insert(cli_login_code::ActiveModel {
            code_hash: Set(code_hash.to_owned()),
            identity_id: Set(identity_id.to_owned()),
            challenge: Set(challenge.to_owned()),
            created_at: Set(created_at),
            expires_at: Set(expires_at),
            used_at: Set(None),
        })
        .exec_without_returning(self.db())
        .await?;
        Ok(())
    }

    /// Uses a CLI login code once: returns its identity id and challenge when
    /// it was unused and unexpired, and marks it used either way.
    pub async fn take_cli_login_code(
        &self,
        code_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<(String, String)>, StoreError> {
        let claimed = cli_login_code::Entity::update_many()
            .col_expr(cli_login_code::Column::UsedAt, Expr::value(now))
            .filter(cli_login_code::Column::CodeHash.eq(code_hash))
            .filter(cli_login_code::Column::UsedAt.is_null())
            .exec(self.db())
            .await?
            .rows_affected
            == 1;
        if !claimed {
            return Ok(None);
        }
        Ok(cli_login_code::Entity::find_by_id(code_hash)
            .one(self.db())
            .await?
            .filter(|m| m.expires_at > now)
            .map(|m| (m.identity_id, m.challenge)))
    }
}
