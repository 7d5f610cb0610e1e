//! [`ControlPlane`]: the rules shared by the HTTP API and the gateway service.

use crate::bindings::Role;
use crate::notify::{NotificationTarget, Notifier};
use crate::store::audit::{AuditEventView, AuditFilter, NewAuditEvent};
use crate::store::identities::Identity;
use crate::store::policies::PolicyVersion;
use crate::store::resources::{Resource, ResourceSpec};
use crate::store::sessions::SessionRecord;
use crate::store::tokens::TokenRecord;
use crate::store::{Store, StoreError};
use crate::tokens::{Claims, ISSUER, TokenError, TokenSigner};
use chrono::{DateTime, Utc};
use countersign_common::Secret;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// Settings key under which the token signing key is kept when none is configured.
const SIGNING_KEY_SETTING: &str = "token_signing_key_pem";

/// Review-change notices buffered per subscriber before a slow one lags.
const REVIEW_CHANGES_CAPACITY: usize = 1024;

/// Control-plane settings (already validated by the caller's config loader).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Bootstrap admin bearer token for the HTTP API.
    pub admin_token: Secret<String>,
    /// Bearer token gateways present on every gRPC call.
    pub gateway_token: Secret<String>,
    /// Ed25519 PKCS#8 PEM. When `None`, one is generated once and kept in the store,
    /// so every replica signs with the same key.
    pub signing_key_pem: Option<Secret<String>>,
    /// Lifetime of a token when the request names none.
    pub default_token_ttl: Duration,
    /// Upper bound on any token's lifetime.
    pub max_token_ttl: Duration,
    /// Members of this group may use the admin API with their access token.
    pub admin_group: String,
    /// Members of this group may search audit.
    pub auditor_group: String,
    /// How often `WatchConfig` streams re-read the store, to see changes made
    /// through other replicas.
    pub config_poll_interval: Duration,
    /// Redis URL for change events between replicas (`redis://127.0.0.1:6379`).
    /// Without it, replicas only see each other's changes by polling.
    pub redis_url: Option<String>,
    /// Base URL of the web console, for links in reviews (`{public_url}/reviews/{id}`).
    /// Default `http://127.0.0.1:8080`.
    pub public_url: String,
    /// Members of this group may decide a review whose rule names no approvers.
    /// Default `countersign-approvers`.
    pub approver_group: String,
    /// Where review events (opened, approved, denied, expired) are sent.
    /// Default: nowhere.
    pub notifications: Vec<NotificationTarget>,
    /// How often each replica writes an audit checkpoint (and runs the
    /// retention purge). Default 60 s.
    pub audit_checkpoint_interval: Duration,
    /// Audit retention per resource name: events older than this are purged.
    /// Resources not listed keep their audit forever. Default: none listed.
    pub audit_retention: Vec<(String, Duration)>,
    /// SIEM streams of the audit trail (see [`crate::audit_stream`]). Default: none.
    pub audit_streams: Vec<crate::audit_stream::AuditStreamSettings>,
    /// Single sign-on with an OpenID Connect provider. Default: none (only
    /// tokens, API keys and workload tokens authenticate).
    pub oidc: Option<crate::sso::OidcSettings>,
    /// Mutual TLS for gateways (see [`crate::enrollment`]). When set, the gRPC
    /// listener serves TLS and every gateway call but enrollment needs a client
    /// certificate from the gateway CA; `gateway_token` is then not accepted.
    /// `None` (`countersign dev`): plain gRPC with `gateway_token`.
    pub gateway_tls: Option<crate::enrollment::GatewayTlsSettings>,
    /// After a shutdown signal, how long unary calls already running get to
    /// finish before the process stops regardless. Default 20 s.
    pub shutdown_grace: Duration,
}

impl Settings {
    pub fn new(admin_token: Secret<String>, gateway_token: Secret<String>) -> Self {
        Self {
            admin_token,
            gateway_token,
            signing_key_pem: None,
            default_token_ttl: Duration::from_secs(3600),
            max_token_ttl: Duration::from_secs(24 * 3600),
            admin_group: "countersign-admins".to_owned(),
            auditor_group: "countersign-auditors".to_owned(),
            config_poll_interval: Duration::from_millis(500),
            redis_url: None,
            public_url: "http://127.0.0.1:8080".to_owned(),
            approver_group: "countersign-approvers".to_owned(),
            notifications: Vec::new(),
            audit_checkpoint_interval: Duration::from_secs(60),
            audit_retention: Vec::new(),
            audit_streams: Vec::new(),
            oidc: None,
            gateway_tls: None,
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

/// Why a control-plane operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the policy is invalid:\n{0}")]
    InvalidPolicy(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// This replica is shutting down; the caller should use another.
    #[error("this control-plane replica is shutting down; use another replica")]
    Draining,
}

/// Who is calling the HTTP API.
#[derive(Clone, Debug)]
pub enum Principal {
    /// The bootstrap admin token.
    Bootstrap,
    /// A person or service account with a valid access token.
    Identity {
        identity: Box<Identity>,
        claims: Box<Claims>,
        /// Roles bound to the identity at any scope, read when the request
        /// was authenticated (see [`crate::bindings`]).
        bound_roles: Vec<Role>,
    },
}

impl Principal {
    pub fn name(&self) -> &str {
        match self {
            Self::Bootstrap => "bootstrap-admin",
            Self::Identity { identity, .. } => &identity.email,
        }
    }

    fn has_bound_role(&self, role: Role) -> bool {
        match self {
            Self::Bootstrap => false,
            Self::Identity { bound_roles, .. } => bound_roles.contains(&role),
        }
    }

    fn in_group(&self, group: &str) -> bool {
        match self {
            Self::Bootstrap => true,
            Self::Identity { identity, .. } => identity.groups.iter().any(|g| g == group),
        }
    }
}

/// A freshly minted token. The token text is shown once and never stored.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct IssuedToken {
    pub token: String,
    pub token_id: String,
    pub identity: String,
    pub groups: Vec<String>,
    pub expires_at: DateTime<Utc>,
}

/// What a gateway asks for when a client connects.
#[derive(Clone, Debug)]
pub struct SessionRequest {
    pub token: Secret<String>,
    pub resource: String,
    pub database: String,
    pub user: String,
    pub client_address: String,
    pub application_name: String,
    pub tls: bool,
    pub gateway_id: String,
}

/// What the gateway enforces for an authenticated session.
#[derive(Clone, Debug)]
pub struct SessionGrant {
    pub session_id: String,
    pub identity: String,
    pub groups: Vec<String>,
    pub token_id: String,
    pub token_expires_at: DateTime<Utc>,
    pub resource: String,
    pub policy_version: u64,
    /// Why the session may connect, and at which level.
    pub access: crate::grants::SessionAccess,
}

/// The control plane. Cheap to clone; all clones share one store and signer.
#[derive(Clone, Debug)]
pub struct ControlPlane {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    signer: TokenSigner,
    settings: Settings,
    /// Bumped on every change gateways must hear about (resources, revocations).
    config_version: watch::Sender<u64>,
    /// Redis for change events between replicas; `None` in `dev`.
    redis: Option<redis::Client>,
    /// Ids of reviews changed through this replica.
    review_changes: broadcast::Sender<String>,
    /// Sends review events to `settings.notifications`.
    notifier: Notifier,
    /// JWKS cache and audit sequence for credential exchanges.
    credentials: crate::credentials::Credentials,
    /// The active policy, parsed, with its version (see `grants`).
    policy_cache: std::sync::Mutex<Option<(u64, Arc<countersign_policy::Policy>)>>,
    metrics: crate::metrics::Metrics,
    /// The OIDC provider, discovered at start; `None` without `[oidc]`.
    sso: Option<crate::sso::provider::Provider>,
    /// The gateway CA, when `settings.gateway_tls` is set.
    ca: Option<crate::enrollment::ca::GatewayCa>,
    /// Set once when this replica starts to shut down (see [`ControlPlane::start_draining`]).
    draining: watch::Sender<bool>,
    /// Whether the retention job's next round should purge unused statement texts: set at
    /// start (a purge cut off by a restart) and after purging events, cleared once done.
    pub(crate) audit_texts_due: std::sync::atomic::AtomicBool,
}

impl ControlPlane {
    pub async fn new(store: Store, settings: Settings) -> Result<Self, ServiceError> {
        let pem = match &settings.signing_key_pem {
            Some(pem) => pem.expose().clone(),
            None => {
                store
                    .setting_or_insert(SIGNING_KEY_SETTING, &TokenSigner::generate_pem()?)
                    .await?
            }
        };
        let signer = TokenSigner::from_pem(&pem)?;
        let redis = match &settings.redis_url {
            Some(url) => Some(
                redis::Client::open(url.as_str())
                    .map_err(|e| ServiceError::Invalid(format!("redis_url: {e}")))?,
            ),
            None => None,
        };
        let notifier = Notifier::new(&settings.notifications)
            .map_err(|e| ServiceError::Invalid(format!("notifications: {e}")))?;
        let sso = match &settings.oidc {
            Some(oidc) => Some(
                crate::sso::provider::Provider::discover(oidc.clone())
                    .await
                    .map_err(|e| ServiceError::Invalid(e.to_string()))?,
            ),
            None => None,
        };
        let ca = match &settings.gateway_tls {
            Some(tls) => Some(crate::enrollment::load_ca(&store, tls).await?),
            None => None,
        };
        let (config_version, _) = watch::channel(0);
        let (review_changes, _) = broadcast::channel(REVIEW_CHANGES_CAPACITY);
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                signer,
                settings,
                config_version,
                redis,
                review_changes,
                notifier,
                credentials: crate::credentials::Credentials::default(),
                policy_cache: std::sync::Mutex::new(None),
                metrics: crate::metrics::Metrics::default(),
                sso,
                ca,
                draining: watch::channel(false).0,
                audit_texts_due: std::sync::atomic::AtomicBool::new(true),
            }),
        })
    }

    /// State for API-key and workload-token exchanges.
    pub(crate) fn credentials(&self) -> &crate::credentials::Credentials {
        &self.inner.credentials
    }

    pub(crate) fn policy_cache(
        &self,
    ) -> &std::sync::Mutex<Option<(u64, Arc<countersign_policy::Policy>)>> {
        &self.inner.policy_cache
    }

    /// The OIDC provider; `NotFound`-like refusal when sign-in is not configured.
    pub fn sso(&self) -> Result<&crate::sso::provider::Provider, ServiceError> {
        self.inner.sso.as_ref().ok_or_else(|| {
            ServiceError::Invalid(
                "single sign-on is not configured on this control plane (no [oidc] section)"
                    .to_owned(),
            )
        })
    }

    /// The gateway CA; `None` unless `settings.gateway_tls` is set.
    pub fn ca(&self) -> Option<&crate::enrollment::ca::GatewayCa> {
        self.inner.ca.as_ref()
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// See `Inner::audit_texts_due`.
    pub(crate) fn audit_texts_due(&self) -> &std::sync::atomic::AtomicBool {
        &self.inner.audit_texts_due
    }

    /// A receiver that changes whenever gateway-visible config changes in this replica.
    pub fn config_changes(&self) -> watch::Receiver<u64> {
        self.inner.config_version.subscribe()
    }

    pub(crate) fn config_changed(&self) {
        self.notify_config_locally();
        if let Some(redis) = &self.inner.redis {
            crate::bus::publish(redis, &crate::bus::Change::Config);
        }
    }

    /// Wakes this replica's config watchers (also called for other replicas' changes).
    pub(crate) fn notify_config_locally(&self) {
        self.inner.config_version.send_modify(|v| *v += 1);
    }

    /// Wakes this replica's watchers of review `id`.
    pub(crate) fn notify_review_locally(&self, id: &str) {
        // No subscribers is fine: nobody is waiting on this replica.
        let _ = self.inner.review_changes.send(id.to_owned());
    }

    /// Publishes a review change to every replica, this one included.
    pub(crate) fn publish_review_change(&self, id: &str) {
        self.notify_review_locally(id);
        if let Some(redis) = &self.inner.redis {
            crate::bus::publish(redis, &crate::bus::Change::Review(id.to_owned()));
        }
    }

    /// Follows other replicas' changes on Redis, when configured. Call once
    /// per process, inside the runtime.
    pub fn start_bus(&self) {
        if let Some(redis) = &self.inner.redis {
            tokio::spawn(crate::bus::subscribe(self.clone(), redis.clone()));
        }
    }

    /// Where review changes are announced; see [`ControlPlane::review_changes`].
    pub(crate) fn review_notifier(&self) -> &broadcast::Sender<String> {
        &self.inner.review_changes
    }

    /// Where review events are announced to outside systems.
    pub(crate) fn notifier(&self) -> &Notifier {
        &self.inner.notifier
    }

    /// Resolves an HTTP bearer token to a principal.
    pub async fn principal(&self, bearer: &str) -> Result<Principal, ServiceError> {
        if self.inner.settings.admin_token.matches(bearer) {
            return Ok(Principal::Bootstrap);
        }
        let (identity, claims) = self.authenticate(bearer).await?;
        let mut bound_roles = Vec::new();
        for role in [Role::Admin, Role::Auditor] {
            if self.identity_has_role(&identity, role, None, None).await? {
                bound_roles.push(role);
            }
        }
        Ok(Principal::Identity {
            identity: Box::new(identity),
            claims: Box::new(claims),
            bound_roles,
        })
    }

    pub fn require_admin(&self, p: &Principal) -> Result<(), ServiceError> {
        if p.in_group(&self.inner.settings.admin_group) || p.has_bound_role(Role::Admin) {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(
                "this needs the admin role".to_owned(),
            ))
        }
    }

    pub fn require_auditor(&self, p: &Principal) -> Result<(), ServiceError> {
        let s = &self.inner.settings;
        if p.in_group(&s.auditor_group)
            || p.in_group(&s.admin_group)
            || p.has_bound_role(Role::Auditor)
            || p.has_bound_role(Role::Admin)
        {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(
                "this needs the auditor role".to_owned(),
            ))
        }
    }

    /// Verifies a token: signature, expiry, that the control plane issued it,
    /// that it is not revoked, and that its identity exists and is enabled.
    pub async fn authenticate(&self, token: &str) -> Result<(Identity, Claims), ServiceError> {
        let claims = self.inner.signer.verify(token)?;
        let record = self
            .inner
            .store
            .token(&claims.jti)
            .await?
            .ok_or(TokenError::Unknown)?;
        if record.revoked_at.is_some() {
            return Err(TokenError::Revoked.into());
        }
        let identity = self
            .inner
            .store
            .identity_by_id(&record.identity_id)
            .await?
            .ok_or(TokenError::Unknown)?;
        if identity.disabled {
            return Err(ServiceError::Unauthenticated(format!(
                "identity {} is disabled",
                identity.email
            )));
        }
        if identity.email != claims.sub {
            return Err(TokenError::Unknown.into());
        }
        Ok((identity, claims))
    }

    /// Mints a token for `email` (creating the user if missing). The token's
    /// groups are the identity's groups plus `extra_groups`.
    pub async fn issue_token(
        &self,
        email: &str,
        extra_groups: &[String],
        ttl: Option<Duration>,
        created_by: &str,
    ) -> Result<IssuedToken, ServiceError> {
        validate_identity_name(email)?;
        for g in extra_groups {
            validate_name("group", g)?;
        }
        let s = &self.inner.settings;
        let ttl = ttl.unwrap_or(s.default_token_ttl);
        if ttl.is_zero() || ttl > s.max_token_ttl {
            return Err(ServiceError::Invalid(format!(
                "token lifetime must be between 1s and {}s",
                s.max_token_ttl.as_secs()
            )));
        }
        let identity = self.inner.store.ensure_user(email).await?;
        let mut groups = identity.groups.clone();
        groups.extend(extra_groups.iter().cloned());
        groups.sort();
        groups.dedup();
        // Groups named here become the identity's own, so that every check
        // (admin, auditor, approver, policy) sees the same membership.
        if groups != identity.groups {
            self.inner.store.set_groups(&identity.id, &groups).await?;
        }
        let issued_at = Utc::now();
        let ttl = chrono::Duration::from_std(ttl)
            .map_err(|_| ServiceError::Invalid("token lifetime is too long".to_owned()))?;
        let expires_at = issued_at + ttl;
        let record = TokenRecord {
            id: uuid::Uuid::new_v4().to_string(),
            identity_id: identity.id.clone(),
            groups: groups.clone(),
            issued_at,
            expires_at,
            revoked_at: None,
            created_by: created_by.to_owned(),
        };
        self.inner.store.insert_token(&record).await?;
        let token = self.inner.signer.sign(&Claims {
            sub: identity.email.clone(),
            uid: identity.id.clone(),
            groups: groups.clone(),
            jti: record.id.clone(),
            iat: issued_at.timestamp(),
            exp: expires_at.timestamp(),
            iss: ISSUER.to_owned(),
        })?;
        Ok(IssuedToken {
            token,
            token_id: record.id,
            identity: identity.email,
            groups,
            expires_at,
        })
    }

    /// Revokes by token id, or by the token itself (its id is read from it).
    pub async fn revoke_token(&self, id_or_token: &str) -> Result<TokenRecord, ServiceError> {
        let id = if id_or_token.contains('.') {
            // A JWT; its signature must still be ours, but it may have expired.
            self.token_id_of(id_or_token)?
        } else {
            id_or_token.to_owned()
        };
        let record = self.inner.store.revoke_token(&id).await?;
        self.config_changed();
        Ok(record)
    }

    fn token_id_of(&self, token: &str) -> Result<String, ServiceError> {
        match self.inner.signer.verify(token) {
            Ok(c) => Ok(c.jti),
            Err(TokenError::Expired) => Err(ServiceError::Invalid(
                "that token has expired already; nothing to revoke".to_owned(),
            )),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn upsert_resource(&self, spec: &ResourceSpec) -> Result<Resource, ServiceError> {
        validate_name("resource", &spec.name)?;
        validate_name("environment", &spec.environment)?;
        if spec.kind != "postgres" {
            return Err(ServiceError::Invalid(format!(
                "resource kind {:?} is not supported; use \"postgres\"",
                spec.kind
            )));
        }
        let r = self.inner.store.upsert_resource(spec).await?;
        self.config_changed();
        Ok(r)
    }

    pub async fn delete_resource(&self, name: &str) -> Result<bool, ServiceError> {
        let deleted = self.inner.store.delete_resource(name).await?;
        self.config_changed();
        Ok(deleted)
    }

    /// Authenticates a client connection for a gateway and records the session.
    pub async fn open_session(&self, req: &SessionRequest) -> Result<SessionGrant, ServiceError> {
        self.open_session_in(req, None).await
    }

    /// [`ControlPlane::open_session`] for a gateway whose client certificate
    /// names `environment`: a resource of another environment is refused.
    pub async fn open_session_in(
        &self,
        req: &SessionRequest,
        environment: Option<&str>,
    ) -> Result<SessionGrant, ServiceError> {
        if req.token.expose().is_empty() {
            return Err(ServiceError::Unauthenticated(
                "a password is required: use your Countersign access token".to_owned(),
            ));
        }
        let (identity, claims) = self.authenticate(req.token.expose()).await?;
        if req.user != identity.email {
            return Err(ServiceError::Unauthenticated(format!(
                "the access token belongs to {}, not to user {:?}",
                identity.email, req.user
            )));
        }
        let resource = self
            .inner
            .store
            .resource_by_name(&req.resource)
            .await?
            .ok_or_else(|| {
                ServiceError::Forbidden(format!("no resource named {:?}", req.resource))
            })?;
        if let Some(env) = environment
            && resource.environment != env
        {
            return Err(ServiceError::Forbidden(format!(
                "resource {:?} is not in this gateway's environment {env:?}",
                resource.name
            )));
        }
        let access = self
            .session_access(&identity.email, &claims.groups, &resource)
            .await?;
        let session = SessionRecord {
            id: uuid::Uuid::now_v7().to_string(),
            identity_id: identity.id.clone(),
            identity: identity.email.clone(),
            resource: resource.name.clone(),
            database_name: req.database.clone(),
            token_id: claims.jti.clone(),
            gateway_id: req.gateway_id.clone(),
            client_address: req.client_address.clone(),
            application_name: req.application_name.clone(),
            tls: req.tls,
            started_at: Utc::now(),
            groups: claims.groups.clone(),
        };
        self.inner.store.insert_session(&session).await?;
        self.inner.metrics.sessions_authenticated.inc();
        if let crate::grants::AccessBasis::Grant { id, .. } = &access.basis {
            // Each use of a grant (an unmasking one above all) is on the grant's record.
            let used = crate::store::reviews::ReviewEvent {
                identity: session.identity.clone(),
                action: "used",
                detail: serde_json::json!({
                    "session_id": session.id,
                    "level": access.level,
                    "database": session.database_name,
                    "client_address": session.client_address,
                    "application_name": session.application_name,
                }),
            };
            let change = crate::store::reviews::ReviewChange {
                events: vec![used],
                ..Default::default()
            };
            self.inner.store.change_review(id, |_| (change, ())).await?;
        }
        let policy_version = self
            .inner
            .store
            .latest_policy()
            .await?
            .map_or(0, |p| p.version);
        Ok(SessionGrant {
            session_id: session.id,
            identity: identity.email,
            groups: claims.groups.clone(),
            token_id: claims.jti.clone(),
            token_expires_at: claims.expires_at(),
            resource: resource.name,
            policy_version,
            access,
        })
    }

    /// Validates and stores a policy as the new active version, and tells
    /// gateways. Applying the active text again returns the active version.
    pub async fn apply_policy(&self, text: &str, by: &str) -> Result<PolicyVersion, ServiceError> {
        let policy = countersign_policy::Policy::parse(text)
            .map_err(|e| ServiceError::InvalidPolicy(e.to_string()))?;
        let bindings = crate::bindings::policy_bindings(&policy)?;
        let version = self.inner.store.insert_policy(text, by).await?;
        self.sync_policy_bindings(&bindings, version.version)
            .await?;
        self.config_changed();
        Ok(version)
    }

    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.inner.metrics
    }

    /// The metrics text, with scrape-time gauges brought up to date.
    pub async fn metrics_text(&self) -> String {
        if let Ok(Some(p)) = self.inner.store.latest_policy().await {
            self.inner
                .metrics
                .policy_version
                .set(i64::try_from(p.version).unwrap_or(i64::MAX));
        }
        self.inner.metrics.encode()
    }

    /// Whether this replica can serve: it is not draining and its store answers.
    pub async fn ready(&self) -> Result<(), ServiceError> {
        if self.is_draining() {
            return Err(ServiceError::Draining);
        }
        self.inner.store.ping().await?;
        Ok(())
    }

    /// Starts the shutdown of this replica: `/readyz` answers 503, new gateway
    /// calls are refused with `UNAVAILABLE`, and open gateway streams end with
    /// `UNAVAILABLE` so that gateways move to another replica. Unary calls
    /// already running finish.
    pub fn start_draining(&self) {
        self.inner.draining.send_replace(true);
    }

    /// Whether [`Self::start_draining`] was called.
    pub fn is_draining(&self) -> bool {
        *self.inner.draining.borrow()
    }

    /// A receiver that turns `true` when draining starts.
    pub fn draining(&self) -> watch::Receiver<bool> {
        self.inner.draining.subscribe()
    }

    pub async fn ingest_audit(&self, events: &[NewAuditEvent]) -> Result<u64, ServiceError> {
        let stored = self.inner.store.insert_audit_events(events).await?;
        self.inner.metrics.audit_events_ingested.inc_by(stored);
        Ok(stored)
    }

    pub async fn search_audit(
        &self,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEventView>, ServiceError> {
        Ok(self.inner.store.search_audit(filter).await?)
    }
}

/// Identity names: an email for people, `[a-z0-9._@+-]` in general.
pub fn validate_identity_name(name: &str) -> Result<(), ServiceError> {
    let ok = !name.is_empty()
        && name.len() <= 254
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@+-:".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::Invalid(format!(
            "identity {name:?} must be 1-254 characters of letters, digits and . _ @ + - :"
        )))
    }
}

/// Resource, group and environment names: `[A-Za-z0-9._-]`, 1-63 characters.
pub fn validate_name(what: &str, name: &str) -> Result<(), ServiceError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::Invalid(format!(
            "{what} name {name:?} must be 1-63 characters of letters, digits and . _ -"
        )))
    }
}
