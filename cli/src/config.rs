//! Config files for `countersign control-plane` and `countersign gateway`.
//!
//! TOML, typed, with unknown fields rejected. Environment variables
//! `COUNTERSIGN_<FIELD>` override top-level fields. `validate()` reports every
//! problem at once. Secrets are [`Secret`]s and never print.

use anyhow::{Context, bail};
use countersign_common::{Secret, parse_duration};
use countersign_control_plane::audit_stream::AuditStreamSettings;
use countersign_control_plane::notify::{self, NotificationTarget};
use countersign_control_plane::sso::OidcSettings;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// `countersign control-plane --config FILE`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlPlaneConfig {
    /// PostgreSQL URL of the store (`COUNTERSIGN_DATABASE_URL`). Required.
    #[schemars(with = "String")]
    pub database_url: Secret<String>,
    /// HTTP API address. Default `0.0.0.0:8080`.
    #[serde(default = "default_http")]
    pub http_addr: SocketAddr,
    /// gRPC address for gateways. Default `0.0.0.0:8081`.
    #[serde(default = "default_grpc")]
    pub grpc_addr: SocketAddr,
    /// Bootstrap admin bearer token (`COUNTERSIGN_ADMIN_TOKEN`). Required, at least 32 characters.
    #[schemars(with = "String")]
    pub admin_token: Secret<String>,
    /// Token gateways present on plain gRPC (`COUNTERSIGN_GATEWAY_TOKEN`), at least 32
    /// characters. Required without `[grpc_tls]`; not allowed with it (gateways then
    /// authenticate with enrolled client certificates only).
    #[schemars(with = "Option<String>")]
    pub gateway_token: Option<Secret<String>>,
    /// Mutual TLS for gateways: the gRPC listener serves TLS with a certificate from the
    /// gateway CA and every gateway needs a client certificate from it, obtained with a
    /// one-time enrollment token (see docs/enrollment.md). Default: not set (plain gRPC
    /// with `gateway_token`).
    pub grpc_tls: Option<GrpcTlsEntry>,
    /// Redis URL for change events between replicas (`COUNTERSIGN_REDIS_URL`), e.g.
    /// `redis://127.0.0.1:6379`. Optional: without it replicas poll the store.
    pub redis_url: Option<String>,
    /// Base URL of the web console, used in review links. Default: `http://<http_addr>`.
    pub public_url: Option<String>,
    /// Ed25519 PKCS#8 PEM file for signing access tokens. Default: a key kept in the store.
    pub signing_key_file: Option<PathBuf>,
    /// Lifetime of a token whose request names none. Default `1h`.
    #[serde(default = "default_ttl")]
    pub default_token_ttl: String,
    /// Longest token lifetime. Default `24h`.
    #[serde(default = "default_max_ttl")]
    pub max_token_ttl: String,
    /// Resources created or updated at start.
    #[serde(default, rename = "resource")]
    pub resources: Vec<ResourceEntry>,
    /// Where review events are sent (`[[notify]]`). Default: nowhere.
    #[serde(default, rename = "notify")]
    pub notify: Vec<NotifyEntry>,
    /// SIEM streams of the whole audit trail (`[[audit_stream]]`, see
    /// docs/audit.md). Default: none.
    #[serde(default, rename = "audit_stream")]
    pub audit_streams: Vec<AuditStreamEntry>,
    /// How often each replica writes an audit checkpoint and runs the
    /// retention purge. Default `60s`.
    #[serde(default = "default_checkpoint_interval")]
    pub audit_checkpoint_interval: String,
    /// After `SIGTERM`, how long requests already running get to finish before the
    /// replica exits regardless (`COUNTERSIGN_SHUTDOWN_GRACE`). The replica first
    /// answers 503 on `/readyz`, refuses new calls and ends gateway streams, so
    /// gateways move to another replica. Keep it below the orchestrator's kill
    /// timeout (Kubernetes: `terminationGracePeriodSeconds`, 30 s). Default `20s`.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: String,
    /// File holding the audit chain's HMAC key as hex (at least 32 bytes).
    /// Default: a key generated once and kept in the store. Keeping it outside
    /// the database means someone with only database access cannot re-chain
    /// what they changed (see docs/audit.md).
    pub audit_key_file: Option<PathBuf>,
    /// Single sign-on for people with an OpenID Connect provider
    /// (docs/sso.md). Default: none.
    pub oidc: Option<OidcEntry>,
}

/// `[oidc]`: sign-in with an OpenID Connect provider (authorization code
/// flow with PKCE).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OidcEntry {
    /// The provider's issuer URL, exactly as its discovery document states it
    /// (e.g. `https://login.example.com/realms/acme`). Required; `https://`,
    /// or `http://` on a loopback address for testing.
    pub issuer_url: String,
    /// The client id registered at the provider. Required.
    pub client_id: String,
    /// The client secret (`COUNTERSIGN_OIDC_CLIENT_SECRET`). Required.
    #[schemars(with = "String")]
    pub client_secret: Secret<String>,
    /// The redirect URI registered at the provider. Default
    /// `<public_url>/auth/callback`.
    pub redirect_url: Option<String>,
    /// Scopes asked for besides `openid`. Default `["email", "profile"]`.
    #[serde(default = "default_oidc_scopes")]
    pub scopes: Vec<String>,
    /// The ID token claim holding the person's groups (an array of strings).
    /// Default `groups`.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Provider group name to Countersign group name, e.g.
    /// `{ "db-admins" = "dba" }`. Provider groups not listed give no group.
    /// Default: empty (nobody gets a group from the provider).
    #[serde(default)]
    pub group_map: std::collections::BTreeMap<String, String>,
    /// When set, only emails in these domains may sign in. Default: any.
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    /// Lifetime of a web console session. Default `8h`.
    #[serde(default = "default_session_ttl")]
    pub session_ttl: String,
}

fn default_oidc_scopes() -> Vec<String> {
    vec!["email".to_owned(), "profile".to_owned()]
}
fn default_groups_claim() -> String {
    "groups".to_owned()
}
fn default_session_ttl() -> String {
    "8h".to_owned()
}

/// Whether `url` is `https://…`, or `http://` to a loopback host (where
/// browsers still keep `Secure` cookies).
fn https_or_loopback(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}

impl OidcEntry {
    /// Every problem with this section; `public_url` is the control plane's.
    fn errors(&self, public_url: &str) -> Vec<String> {
        let mut errors = Vec::new();
        if !https_or_loopback(&self.issuer_url) {
            errors.push(
                "oidc.issuer_url must be https:// (http:// only on a loopback address)".to_owned(),
            );
        }
        if self.client_id.trim().is_empty() {
            errors.push("oidc.client_id is required".to_owned());
        }
        if self.client_secret.expose().is_empty() {
            errors.push("oidc.client_secret is required".to_owned());
        }
        let redirect = self.redirect_url(public_url);
        if !https_or_loopback(&redirect) {
            errors.push(format!(
                "oidc.redirect_url {redirect:?} must be https:// (http:// only on a loopback \
                 address): the session cookie is Secure, so browsers drop it elsewhere; set \
                 public_url or oidc.redirect_url"
            ));
        }
        for scope in &self.scopes {
            if scope.is_empty() || scope.contains(char::is_whitespace) || scope == "openid" {
                errors.push(format!(
                    "oidc.scopes: {scope:?} is not a scope (one word; `openid` is always sent)"
                ));
            }
        }
        if self.groups_claim.is_empty() {
            errors.push("oidc.groups_claim must not be empty".to_owned());
        }
        for (from, to) in &self.group_map {
            if let Err(e) = countersign_control_plane::service::validate_name("group", to) {
                errors.push(format!("oidc.group_map[{from:?}]: {e}"));
            }
        }
        for d in &self.allowed_domains {
            if d.is_empty() || d.contains('@') || d.contains(char::is_whitespace) {
                errors.push(format!("oidc.allowed_domains: {d:?} is not a domain"));
            }
        }
        match parse_duration(&self.session_ttl) {
            Ok(ttl) if ttl < std::time::Duration::from_secs(60) => {
                errors.push("oidc.session_ttl must be at least 1m".to_owned());
            }
            Ok(_) => {}
            Err(e) => errors.push(format!("oidc.session_ttl: {e}")),
        }
        errors
    }

    fn redirect_url(&self, public_url: &str) -> String {
        self.redirect_url
            .clone()
            .unwrap_or_else(|| format!("{}/auth/callback", public_url.trim_end_matches('/')))
    }

    /// The control plane's settings for this section. Call after `validate`.
    pub fn settings(&self, public_url: &str) -> anyhow::Result<OidcSettings> {
        Ok(OidcSettings {
            issuer_url: self.issuer_url.clone(),
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            redirect_url: self.redirect_url(public_url),
            scopes: self.scopes.clone(),
            groups_claim: self.groups_claim.clone(),
            group_map: self.group_map.clone(),
            allowed_domains: self.allowed_domains.clone(),
            session_ttl: parse_duration(&self.session_ttl).map_err(anyhow::Error::msg)?,
        })
    }
}

/// `[grpc_tls]`: mutual TLS between gateways and the control plane.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrpcTlsEntry {
    /// DNS names and IP addresses in the gRPC server certificate: every name gateways
    /// use in `control_plane_url`. Required, e.g. `["countersign-cp.internal", "10.0.0.2"]`.
    pub names: Vec<String>,
    /// PEM file of the gateway CA certificate. Default: a CA generated once and kept in
    /// the store, shared by every replica. Give it with `ca_key_file`, or neither.
    pub ca_cert_file: Option<PathBuf>,
    /// PEM file of the gateway CA's private key (PKCS#8). See `ca_cert_file`.
    pub ca_key_file: Option<PathBuf>,
    /// Lifetime of gateway client certificates; gateways renew at two thirds of it.
    /// Default `24h`.
    #[serde(default = "default_gateway_cert_lifetime")]
    pub gateway_cert_lifetime: String,
    /// Lifetime of the gRPC server certificate, issued anew at each start. Default `90d`.
    #[serde(default = "default_server_cert_lifetime")]
    pub server_cert_lifetime: String,
}

/// A `[[notify]]` entry: a target for review events (opened, approved,
/// denied, expired).
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyEntry {
    /// `webhook` (JSON POST signed with HMAC-SHA256) or `slack` (an incoming
    /// webhook). Required.
    pub kind: NotifyKind,
    /// Where to POST: an `http://` or `https://` URL. Required. Never printed
    /// beyond its host: a Slack webhook URL is a credential.
    pub url: String,
    /// Signing key of a `webhook`: required there, at least 16 characters;
    /// not allowed for `slack`.
    #[schemars(with = "Option<String>")]
    pub secret: Option<Secret<String>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NotifyKind {
    Webhook,
    Slack,
}

impl std::fmt::Debug for NotifyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyEntry")
            .field("kind", &self.kind)
            .field("url", &notify::redact(&self.url))
            .field("secret", &self.secret)
            .finish()
    }
}

impl NotifyEntry {
    /// Every problem with this entry.
    fn errors(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if let Err(e) = notify::check_url(&self.url) {
            errors.push(format!("url: {e}"));
        }
        match (self.kind, &self.secret) {
            (NotifyKind::Webhook, None) => {
                errors.push("secret is required for kind = \"webhook\"".to_owned());
            }
            (NotifyKind::Webhook, Some(secret)) => {
                if let Err(e) = notify::check_secret(secret) {
                    errors.push(format!("secret: {e}"));
                }
            }
            (NotifyKind::Slack, Some(_)) => {
                errors.push("secret is only for kind = \"webhook\"".to_owned());
            }
            (NotifyKind::Slack, None) => {}
        }
        errors
    }

    /// The control plane's target for this entry.
    fn target(&self) -> anyhow::Result<NotificationTarget> {
        Ok(match (self.kind, &self.secret) {
            (NotifyKind::Webhook, Some(secret)) => NotificationTarget::Webhook {
                url: self.url.clone(),
                secret: secret.clone(),
            },
            (NotifyKind::Webhook, None) => bail!("a webhook needs a secret"),
            (NotifyKind::Slack, _) => NotificationTarget::Slack {
                url: self.url.clone(),
            },
        })
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceEntry {
    pub name: String,
    /// Default `postgres`.
    #[serde(default = "default_kind")]
    pub kind: String,
    /// Default `default`.
    #[serde(default = "default_env")]
    pub environment: String,
    /// Default false.
    #[serde(default)]
    pub strict_audit: bool,
    /// How long this resource's audit events are kept, e.g. `90d`; older
    /// ones are purged. Default: kept forever.
    pub audit_retention: Option<String>,
}

/// `countersign gateway --config FILE`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// This gateway's name. Default: the host name, or `gateway`.
    #[serde(default = "default_gateway_id")]
    // The default depends on the host: the schema says so rather than baking one in.
    #[schemars(extend("default" = "$HOSTNAME"))]
    pub gateway_id: String,
    /// The environment served. Default `default`.
    #[serde(default = "default_env")]
    pub environment: String,
    /// Control plane gRPC URL (`COUNTERSIGN_CONTROL_PLANE_URL`), e.g.
    /// `https://countersign-cp.internal:8081`. Set this or `control_plane_urls`.
    pub control_plane_url: Option<String>,
    /// Several control-plane replicas (`COUNTERSIGN_CONTROL_PLANE_URLS`, comma-separated),
    /// all `http://` or all `https://`. The gateway uses one at a time and moves to the
    /// next when it is unreachable or shutting down; a statement held for review is
    /// then watched on the next one. Set this or `control_plane_url`.
    #[serde(default)]
    pub control_plane_urls: Vec<String>,
    /// Shared token for a control plane on plain gRPC (`COUNTERSIGN_GATEWAY_TOKEN`).
    /// Required with an `http://` `control_plane_url`; not allowed with `https://`,
    /// where the gateway authenticates with its enrolled client certificate.
    #[schemars(with = "Option<String>")]
    pub gateway_token: Option<Secret<String>>,
    /// One-time enrollment token (`COUNTERSIGN_ENROLLMENT_TOKEN`) from
    /// `countersign gateway enroll-token create`. Used with an `https://`
    /// `control_plane_url` when `state_dir` holds no valid certificate; unused afterwards.
    #[schemars(with = "Option<String>")]
    pub enrollment_token: Option<Secret<String>>,
    /// A file holding the one-time enrollment token (`COUNTERSIGN_ENROLLMENT_TOKEN_FILE`),
    /// e.g. a mounted Kubernetes Secret: read only when `state_dir` holds no valid
    /// certificate, so it may be gone afterwards. Not together with `enrollment_token`.
    pub enrollment_token_file: Option<PathBuf>,
    /// PEM file of the control plane's gateway CA (`COUNTERSIGN_CONTROL_PLANE_CA`): the
    /// control plane's server certificate must chain to it, from the first contact on.
    /// Required with an `https://` `control_plane_url`.
    pub control_plane_ca: Option<PathBuf>,
    /// Where the gateway keeps its key, client certificate and the CA (files mode 0600,
    /// directory 0700). Keep it across restarts. Default `/var/lib/countersign/gateway`.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// PostgreSQL listen address. Default `0.0.0.0:6432`.
    #[serde(default = "default_pg")]
    pub pg_addr: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (plain HTTP). Default: not served.
    pub metrics_addr: Option<SocketAddr>,
    /// Refuse clients without TLS. Default true when `tls` is set.
    pub require_tls: Option<bool>,
    pub tls: Option<TlsEntry>,
    /// Seconds a client has for startup and authentication. Default 15.
    #[serde(default = "default_handshake")]
    pub handshake_timeout_secs: u64,
    /// Seconds a statement held for review waits for a decision. Default 600.
    #[serde(default = "default_review_timeout")]
    pub review_timeout_secs: u64,
    /// Directory of the durable audit spool. Default `/var/lib/countersign/spool`.
    /// Keep it on local disk, and keep it across restarts: what is in it and not yet
    /// acknowledged is uploaded when the gateway starts again.
    #[serde(default = "default_spool_dir")]
    pub spool_dir: PathBuf,
    /// Most bytes the spool may hold; once full, new statements are refused until the
    /// control plane has acknowledged enough. Default 1073741824 (1 GiB).
    #[serde(default = "default_spool_max_bytes")]
    pub spool_max_bytes: u64,
    /// How often written audit records are fsynced (group commit), in milliseconds.
    /// Resources with `strict_audit` wait for the fsync before a statement is
    /// forwarded. Default 10.
    #[serde(default = "default_spool_fsync_interval_ms")]
    pub spool_fsync_interval_ms: u64,
    /// Keys the `hash` mask style (`COUNTERSIGN_MASK_KEY`), at least 32 characters. Default:
    /// a random key per process (hashes are then joinable within one run only).
    #[schemars(with = "Option<String>")]
    pub mask_key: Option<Secret<String>>,
    /// How many threads run client sessions (each session stays on one, from connect to
    /// end); 0 for one per core but one (at least one), which leaves a core for the gateway's
    /// audit upload and for whatever shares the machine. Default 0.
    #[serde(default)]
    #[schemars(range(max = countersign_gateway::pg::threads::MAX))]
    pub session_threads: usize,
    /// Upstream databases, with the credentials only the gateway holds.
    #[serde(default, rename = "upstream")]
    pub upstreams: Vec<UpstreamEntry>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsEntry {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamEntry {
    /// The resource name clients use as dbname.
    pub name: String,
    /// `postgres://user:password@host:port/db?sslmode=…`.
    #[schemars(with = "String")]
    pub url: Secret<String>,
}

fn default_gateway_cert_lifetime() -> String {
    "24h".to_owned()
}
fn default_server_cert_lifetime() -> String {
    "90d".to_owned()
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/countersign/gateway")
}

fn default_checkpoint_interval() -> String {
    "60s".to_owned()
}

fn default_shutdown_grace() -> String {
    "20s".to_owned()
}

fn default_http() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8080))
}
fn default_grpc() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8081))
}
fn default_pg() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 6432))
}
fn default_ttl() -> String {
    "1h".to_owned()
}
fn default_max_ttl() -> String {
    "24h".to_owned()
}
fn default_kind() -> String {
    "postgres".to_owned()
}
fn default_env() -> String {
    "default".to_owned()
}
fn default_gateway_id() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "gateway".to_owned())
}
fn default_handshake() -> u64 {
    15
}
fn default_review_timeout() -> u64 {
    600
}
fn default_spool_dir() -> PathBuf {
    PathBuf::from("/var/lib/countersign/spool")
}
fn default_spool_max_bytes() -> u64 {
    1 << 30
}
fn default_spool_fsync_interval_ms() -> u64 {
    10
}

/// Fields that hold a list: from the environment, a comma-separated value.
const LIST_FIELDS: &[&str] = &["control_plane_urls"];

/// Section fields that may also come from the environment.
const NESTED_SECRETS: &[(&str, &str)] = &[("oidc", "client_secret")];

/// Reads a TOML file, applies `COUNTERSIGN_<FIELD>` overrides for `fields`, and parses.
pub fn load<T: serde::de::DeserializeOwned>(path: &Path, fields: &[&str]) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut table: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    for field in fields {
        let var = format!("COUNTERSIGN_{}", field.to_ascii_uppercase());
        if let Ok(value) = std::env::var(&var) {
            if LIST_FIELDS.contains(field) {
                let items = value
                    .split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(|v| toml::Value::String(v.to_owned()))
                    .collect();
                table.insert((*field).to_owned(), toml::Value::Array(items));
                continue;
            }
            // Numbers and booleans keep their type; anything else is a string.
            let parsed = value
                .parse::<i64>()
                .map(toml::Value::Integer)
                .or_else(|_| value.parse::<bool>().map(toml::Value::Boolean))
                .unwrap_or(toml::Value::String(value));
            table.insert((*field).to_owned(), parsed);
        }
    }
    // Secrets of sections: `COUNTERSIGN_<SECTION>_<FIELD>`, for sections present in the file.
    for (section, field) in NESTED_SECRETS {
        let var = format!(
            "COUNTERSIGN_{}_{}",
            section.to_ascii_uppercase(),
            field.to_ascii_uppercase()
        );
        if let (Ok(value), Some(toml::Value::Table(t))) =
            (std::env::var(&var), table.get_mut(*section))
        {
            t.insert((*field).to_owned(), toml::Value::String(value));
        }
    }
    T::deserialize(toml::Value::Table(table)).with_context(|| format!("in {}", path.display()))
}

fn collect(errors: Vec<String>) -> anyhow::Result<()> {
    if errors.is_empty() {
        Ok(())
    } else {
        bail!("invalid configuration:\n  - {}", errors.join("\n  - "))
    }
}

impl ControlPlaneConfig {
    pub const FIELDS: &'static [&'static str] = &[
        "database_url",
        "http_addr",
        "grpc_addr",
        "admin_token",
        "gateway_token",
        "signing_key_file",
        "redis_url",
        "public_url",
        "default_token_ttl",
        "max_token_ttl",
        "audit_checkpoint_interval",
        "audit_key_file",
        "shutdown_grace",
    ];

    pub fn validate(&self) -> anyhow::Result<()> {
        self.check(true)
    }

    /// Every error in the file at once; `files`: also check that the files it names
    /// exist (false checks a config away from the host it runs on).
    pub fn check(&self, files: bool) -> anyhow::Result<()> {
        let mut errors = Vec::new();
        if !self.database_url.expose().starts_with("postgres") {
            errors.push("database_url must be a postgres:// URL".to_owned());
        }
        if self.admin_token.expose().len() < 32 {
            errors.push("admin_token must be at least 32 characters".to_owned());
        }
        match (&self.gateway_token, &self.grpc_tls) {
            (Some(t), None) if t.expose().len() < 32 => {
                errors.push("gateway_token must be at least 32 characters".to_owned());
            }
            (Some(_), None) => {}
            (None, None) => errors.push(
                "gateway_token is required without [grpc_tls] (or configure [grpc_tls] for enrolled gateways)"
                    .to_owned(),
            ),
            (Some(_), Some(tls)) => {
                errors.push(
                    "gateway_token is not allowed with [grpc_tls]: gateways authenticate with enrolled client certificates"
                        .to_owned(),
                );
                errors.extend(tls.errors(files));
            }
            (None, Some(tls)) => errors.extend(tls.errors(files)),
        }
        for (name, v) in [
            ("default_token_ttl", &self.default_token_ttl),
            ("max_token_ttl", &self.max_token_ttl),
            ("audit_checkpoint_interval", &self.audit_checkpoint_interval),
            ("shutdown_grace", &self.shutdown_grace),
        ] {
            if let Err(e) = parse_duration(v) {
                errors.push(format!("{name}: {e}"));
            }
        }
        if let Some(url) = &self.redis_url
            && !url.starts_with("redis://")
            && !url.starts_with("rediss://")
        {
            errors.push("redis_url must start with redis:// or rediss://".to_owned());
        }
        if let Some(p) = &self.signing_key_file
            && files
            && !p.exists()
        {
            errors.push(format!("signing_key_file {} does not exist", p.display()));
        }
        if let Some(p) = &self.audit_key_file
            && files
            && !p.exists()
        {
            errors.push(format!("audit_key_file {} does not exist", p.display()));
        }
        for r in &self.resources {
            if let Err(e) = countersign_control_plane::service::validate_name("resource", &r.name) {
                errors.push(e.to_string());
            }
            if let Some(keep) = &r.audit_retention
                && let Err(e) = parse_duration(keep)
            {
                errors.push(format!("resource {}: audit_retention: {e}", r.name));
            }
        }
        for (i, n) in self.notify.iter().enumerate() {
            for e in n.errors() {
                errors.push(format!("notify #{}: {e}", i + 1));
            }
        }
        let mut stream_names = std::collections::HashSet::new();
        for (i, st) in self.audit_streams.iter().enumerate() {
            if !stream_names.insert(st.name.as_str()) {
                errors.push(format!(
                    "audit_stream #{}: the name {:?} is used twice",
                    i + 1,
                    st.name
                ));
            }
            for e in st.errors() {
                errors.push(format!("audit_stream #{}: {e}", i + 1));
            }
        }
        if let Some(oidc) = &self.oidc {
            errors.extend(oidc.errors(&self.public_url()));
        }
        collect(errors)
    }

    /// The console's base URL: `public_url`, or `http://<http_addr>`.
    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.http_addr))
    }

    /// The `[[notify]]` targets, for `Settings::notifications`. Call after `validate`.
    pub fn notification_targets(&self) -> anyhow::Result<Vec<NotificationTarget>> {
        self.notify.iter().map(NotifyEntry::target).collect()
    }

    /// The `[[audit_stream]]` entries, for `Settings::audit_streams`. Call after `validate`.
    pub fn audit_stream_settings(&self) -> anyhow::Result<Vec<AuditStreamSettings>> {
        self.audit_streams
            .iter()
            .map(|st| {
                Ok(AuditStreamSettings {
                    name: st.name.clone(),
                    url: st.url.clone(),
                    secret: st.secret.clone(),
                    batch: st.batch,
                    settle: parse_duration(&st.settle).map_err(anyhow::Error::msg)?,
                })
            })
            .collect()
    }
}

/// An `[[audit_stream]]` entry: a webhook that receives every audit event,
/// in arrival order, at least once (docs/audit.md, "Streaming to a SIEM").
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditStreamEntry {
    /// Names the stream's position (kept in the store): renaming a stream
    /// starts it again from the oldest event. `[A-Za-z0-9._-]`, 1-63
    /// characters. Required.
    pub name: String,
    /// Where batches are POSTed: an `http://` or `https://` URL. Required.
    /// Never printed beyond its host.
    pub url: String,
    /// Signing key (HMAC-SHA256 of each body, header `X-Countersign-Signature`),
    /// at least 16 characters. Required.
    #[schemars(with = "String")]
    pub secret: Secret<String>,
    /// Events per POST, 1-5000. Default 500.
    #[serde(default = "default_stream_batch")]
    pub batch: u64,
    /// How long after it is stored an event is sent, so that concurrent
    /// inserts have committed. Default `5s`.
    #[serde(default = "default_stream_settle")]
    pub settle: String,
}

fn default_stream_batch() -> u64 {
    countersign_control_plane::audit_stream::DEFAULT_BATCH
}

fn default_stream_settle() -> String {
    "5s".to_owned()
}

impl std::fmt::Debug for AuditStreamEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditStreamEntry")
            .field("name", &self.name)
            .field("url", &notify::redact(&self.url))
            .field("secret", &self.secret)
            .field("batch", &self.batch)
            .field("settle", &self.settle)
            .finish()
    }
}

impl AuditStreamEntry {
    /// Every problem with this entry.
    fn errors(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if let Err(e) = countersign_control_plane::service::validate_name("stream", &self.name) {
            errors.push(e.to_string());
        }
        if let Err(e) = notify::check_url(&self.url) {
            errors.push(format!("url: {e}"));
        }
        if let Err(e) = notify::check_secret(&self.secret) {
            errors.push(format!("secret: {e}"));
        }
        let max = countersign_control_plane::audit_stream::MAX_BATCH;
        if self.batch == 0 || self.batch > max {
            errors.push(format!("batch must be 1..={max}"));
        }
        if let Err(e) = parse_duration(&self.settle) {
            errors.push(format!("settle: {e}"));
        }
        errors
    }
}

impl GrpcTlsEntry {
    fn errors(&self, files: bool) -> Vec<String> {
        let mut errors = Vec::new();
        if self.names.is_empty() {
            errors.push("grpc_tls.names must name at least one DNS name or IP address".to_owned());
        }
        for (name, v) in [
            ("gateway_cert_lifetime", &self.gateway_cert_lifetime),
            ("server_cert_lifetime", &self.server_cert_lifetime),
        ] {
            match parse_duration(v) {
                Ok(d) if d.as_secs() < 3 => {
                    errors.push(format!("grpc_tls.{name} must be at least 3s"));
                }
                Ok(_) => {}
                Err(e) => errors.push(format!("grpc_tls.{name}: {e}")),
            }
        }
        match (&self.ca_cert_file, &self.ca_key_file) {
            (Some(c), Some(k)) => {
                for p in [c, k] {
                    if files && !p.exists() {
                        errors.push(format!("grpc_tls: {} does not exist", p.display()));
                    }
                }
            }
            (None, None) => {}
            _ => errors.push(
                "grpc_tls: give ca_cert_file and ca_key_file together, or neither".to_owned(),
            ),
        }
        errors
    }

    /// The control plane's settings for this section. Call after `validate`.
    pub fn settings(
        &self,
    ) -> anyhow::Result<countersign_control_plane::enrollment::GatewayTlsSettings> {
        let mut tls =
            countersign_control_plane::enrollment::GatewayTlsSettings::new(self.names.clone());
        tls.gateway_cert_lifetime =
            parse_duration(&self.gateway_cert_lifetime).map_err(anyhow::Error::msg)?;
        tls.server_cert_lifetime =
            parse_duration(&self.server_cert_lifetime).map_err(anyhow::Error::msg)?;
        if let (Some(c), Some(k)) = (&self.ca_cert_file, &self.ca_key_file) {
            let cert =
                std::fs::read_to_string(c).with_context(|| format!("reading {}", c.display()))?;
            let key =
                std::fs::read_to_string(k).with_context(|| format!("reading {}", k.display()))?;
            tls.ca_pem = Some((cert, Secret::new(key)));
        }
        Ok(tls)
    }
}

impl GatewayConfig {
    pub const FIELDS: &'static [&'static str] = &[
        "gateway_id",
        "environment",
        "control_plane_url",
        "control_plane_urls",
        "gateway_token",
        "pg_addr",
        "metrics_addr",
        "require_tls",
        "handshake_timeout_secs",
        "review_timeout_secs",
        "spool_dir",
        "spool_max_bytes",
        "spool_fsync_interval_ms",
        "mask_key",
        "session_threads",
        "enrollment_token",
        "enrollment_token_file",
        "control_plane_ca",
        "state_dir",
    ];

    /// The control-plane URLs, from `control_plane_url` or `control_plane_urls`.
    pub fn control_plane_urls(&self) -> Vec<String> {
        match &self.control_plane_url {
            Some(url) => vec![url.clone()],
            None => self.control_plane_urls.clone(),
        }
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.check(true)
    }

    /// Every error in the file at once; `files`: also check that the files it names
    /// exist (false checks a config away from the host it runs on).
    pub fn check(&self, files: bool) -> anyhow::Result<()> {
        let mut errors = Vec::new();
        let urls = self.control_plane_urls();
        match (&self.control_plane_url, self.control_plane_urls.is_empty()) {
            (Some(_), false) => {
                errors.push("set control_plane_url or control_plane_urls, not both".to_owned())
            }
            (None, true) => {
                errors.push("control_plane_url (or control_plane_urls) is required".to_owned())
            }
            _ => {}
        }
        let https = urls.iter().filter(|u| u.starts_with("https://")).count();
        let http = urls.iter().filter(|u| u.starts_with("http://")).count();
        if https > 0 && http > 0 {
            errors.push(
                "control_plane_urls mixes http:// and https://: every replica must use the same scheme"
                    .to_owned(),
            );
        }
        if !urls.is_empty() && https == urls.len() {
            // Mutual TLS with an enrolled certificate.
            if self.gateway_token.is_some() {
                errors.push(
                    "gateway_token is not allowed with an https:// control_plane_url: the gateway authenticates with its enrolled certificate"
                        .to_owned(),
                );
            }
            match &self.control_plane_ca {
                None => errors.push(
                    "control_plane_ca (the control plane's gateway CA, PEM) is required with an https:// control_plane_url"
                        .to_owned(),
                ),
                Some(p) if files && !p.exists() => {
                    errors.push(format!("control_plane_ca {} does not exist", p.display()));
                }
                Some(_) => {}
            }
            if self
                .enrollment_token
                .as_ref()
                .is_some_and(|t| t.expose().is_empty())
            {
                errors.push("enrollment_token is empty".to_owned());
            }
            if self.enrollment_token.is_some() && self.enrollment_token_file.is_some() {
                errors.push("set enrollment_token or enrollment_token_file, not both".to_owned());
            }
        } else if !urls.is_empty() && http == urls.len() {
            if self
                .gateway_token
                .as_ref()
                .is_none_or(|t| t.expose().is_empty())
            {
                errors.push(
                    "gateway_token is required with an http:// control_plane_url (use https:// with an enrollment token for mutual TLS)"
                        .to_owned(),
                );
            }
            for (name, set) in [
                ("enrollment_token", self.enrollment_token.is_some()),
                (
                    "enrollment_token_file",
                    self.enrollment_token_file.is_some(),
                ),
                ("control_plane_ca", self.control_plane_ca.is_some()),
            ] {
                if set {
                    errors.push(format!(
                        "{name} needs an https:// control_plane_url (mutual TLS)"
                    ));
                }
            }
        } else if https + http < urls.len() {
            errors.push("control_plane_url must start with http:// or https://".to_owned());
        }
        if self
            .mask_key
            .as_ref()
            .is_some_and(|k| k.expose().len() < 32)
        {
            errors.push("mask_key must be at least 32 characters".to_owned());
        }
        if self.spool_max_bytes < 1 << 20 {
            errors.push("spool_max_bytes must be at least 1048576 (1 MiB)".to_owned());
        }
        if self.spool_fsync_interval_ms == 0 || self.spool_fsync_interval_ms > 60_000 {
            errors.push("spool_fsync_interval_ms must be between 1 and 60000".to_owned());
        }
        if self.session_threads > countersign_gateway::pg::threads::MAX {
            errors.push(format!(
                "session_threads must be at most {} (0: one per core but one)",
                countersign_gateway::pg::threads::MAX
            ));
        }
        if self.require_tls == Some(true) && self.tls.is_none() {
            errors.push("require_tls needs a [tls] section".to_owned());
        }
        if self.upstreams.is_empty() {
            errors.push("at least one [[upstream]] is required".to_owned());
        }
        for (i, u) in self.upstreams.iter().enumerate() {
            if let Err(e) = countersign_gateway::config::Upstream::parse(u.url.expose(), &u.name) {
                errors.push(format!("upstream #{}: {e}", i + 1));
            }
        }
        if let Some(t) = &self.tls {
            for p in [&t.cert_file, &t.key_file] {
                if files && !p.exists() {
                    errors.push(format!("tls file {} does not exist", p.display()));
                }
            }
        }
        collect(errors)
    }
}

/// The two config files, as `countersign config` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ConfigKind {
    ControlPlane,
    Gateway,
}

impl ConfigKind {
    pub fn name(self) -> &'static str {
        match self {
            ConfigKind::ControlPlane => "control-plane",
            ConfigKind::Gateway => "gateway",
        }
    }
}

/// `countersign config check`: loads `file` as a `kind` config and validates it, printing
/// what is wrong. Exit 0 when valid, 2 when not.
pub fn check(kind: ConfigKind, file: &Path, files: bool) -> std::process::ExitCode {
    let result = match kind {
        ConfigKind::ControlPlane => load::<ControlPlaneConfig>(file, ControlPlaneConfig::FIELDS)
            .and_then(|c| c.check(files)),
        ConfigKind::Gateway => {
            load::<GatewayConfig>(file, GatewayConfig::FIELDS).and_then(|c| c.check(files))
        }
    };
    match result {
        Ok(()) => {
            println!("{}: valid {} config", file.display(), kind.name());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e:#}", file.display());
            std::process::ExitCode::from(2)
        }
    }
}

/// The JSON schema of a `kind` config file.
pub fn schema(kind: ConfigKind) -> anyhow::Result<String> {
    let schema = match kind {
        ConfigKind::ControlPlane => schemars::schema_for!(ControlPlaneConfig),
        ConfigKind::Gateway => schemars::schema_for!(GatewayConfig),
    };
    Ok(serde_json::to_string_pretty(&schema)? + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_configs_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/compose");
        let cp: ControlPlaneConfig = load(&dir.join("control-plane.toml"), &[]).unwrap();
        cp.validate().unwrap();
        assert_eq!(cp.redis_url.as_deref(), Some("redis://redis:6379"));
        let gw: GatewayConfig = load(&dir.join("gateway.toml"), &[]).unwrap();
        // The CA is written into the enrollment volume by the compose file's `enroll` step.
        let err = gw.validate().unwrap_err().to_string();
        assert!(
            err.contains(
                "control_plane_ca /etc/countersign/enrollment/control-plane-ca.pem does not exist"
            ) && err.lines().count() == 2,
            "{err}"
        );
        gw.check(false).unwrap();
        assert_eq!(gw.session_threads, 0);
        assert_eq!(gw.upstreams.len(), 1);
        assert!(gw.metrics_addr.is_some());
        assert!(gw.enrollment_token_file.is_some() && gw.gateway_token.is_none());
        assert!(cp.grpc_tls.is_some() && cp.gateway_token.is_none());
    }

    #[test]
    fn session_threads_are_bounded() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/compose");
        let mut gw: GatewayConfig = load(&dir.join("gateway.toml"), &[]).unwrap();
        gw.session_threads = countersign_gateway::pg::threads::MAX;
        gw.check(false).unwrap();
        gw.session_threads += 1;
        let err = gw.check(false).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "session_threads must be at most {}",
                countersign_gateway::pg::threads::MAX
            )),
            "{err}"
        );
    }

    #[test]
    fn enrollment_token_file_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "").unwrap();
        let write = |body: &str| {
            let path = dir.path().join("gw.toml");
            std::fs::write(
                &path,
                format!("{body}\n[[upstream]]\nname = 'pg'\nurl = 'postgres://u@h/db'\n"),
            )
            .unwrap();
            load::<GatewayConfig>(&path, &[]).unwrap().validate()
        };
        let ca = ca.display();
        write(&format!(
            "control_plane_url = 'https://cp:8081'\ncontrol_plane_ca = '{ca}'\nenrollment_token_file = '/run/token'"
        ))
        .unwrap();
        let both = write(&format!(
            "control_plane_url = 'https://cp:8081'\ncontrol_plane_ca = '{ca}'\nenrollment_token = 'cse_x'\nenrollment_token_file = '/run/token'"
        ))
        .unwrap_err()
        .to_string();
        assert!(both.contains("not both"), "{both}");
        let plain = write(
            "control_plane_url = 'http://cp:8081'\ngateway_token = 'a-shared-token-of-32-characters-0001'\nenrollment_token_file = '/run/token'",
        )
        .unwrap_err()
        .to_string();
        assert!(
            plain.contains("enrollment_token_file needs an https:// control_plane_url"),
            "{plain}"
        );
    }

    /// `deploy/schema/*.schema.json` match the config types. To refresh them after a
    /// change: `countersign config schema gateway > deploy/schema/gateway.schema.json`
    /// (and the same for control-plane).
    #[test]
    fn generated_schemas_are_current() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/schema");
        for &kind in <ConfigKind as clap::ValueEnum>::value_variants() {
            let which = kind.name();
            // The command line takes the same name.
            let on_cli = clap::ValueEnum::to_possible_value(&kind).unwrap();
            assert_eq!(on_cli.get_name(), which);
            let path = dir.join(format!("{which}.schema.json"));
            let want = schema(kind).unwrap();
            let have = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                have == want,
                "{} is out of date: run `countersign config schema {which} > deploy/schema/{which}.schema.json`",
                path.display()
            );
        }
    }

    fn examples() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples")
    }

    #[test]
    fn example_configs_load() {
        let cp: ControlPlaneConfig = load(&examples().join("control-plane.toml"), &[]).unwrap();
        cp.validate().unwrap();
        assert_eq!(cp.resources.len(), 2);
        let oidc = cp.oidc.as_ref().unwrap();
        let sso = oidc.settings(&cp.public_url()).unwrap();
        assert_eq!(
            sso.redirect_url,
            "https://countersign.example.com/auth/callback"
        );
        assert_eq!(sso.group_map["db-admins"], "dba");
        assert_eq!(sso.groups_claim, "groups");
        assert!(!format!("{cp:?}").contains("replace-with-the-client-secret"));
        assert!(cp.grpc_tls.is_some() && cp.gateway_token.is_none());
        // Only the control plane's CA file, which lives on the gateway host, is missing here.
        let staging: GatewayConfig = load(&examples().join("gateway-staging.toml"), &[]).unwrap();
        let err = staging.validate().unwrap_err().to_string();
        assert!(err.contains("control-plane-ca.pem"), "{err}");
        assert_eq!(err.matches("\n  - ").count(), 1, "{err}");
        let prod: GatewayConfig = load(&examples().join("gateway-prod.toml"), &[]).unwrap();
        // Only the TLS files, which live on the production host, are missing here.
        let err = prod.validate().unwrap_err().to_string();
        assert!(
            err.contains("gateway.crt")
                && err.contains("gateway.key")
                && err.contains("control-plane-ca.pem"),
            "{err}"
        );
        assert_eq!(err.matches("\n  - ").count(), 3, "{err}");
        assert!(
            !format!("{prod:?}").contains("change-me"),
            "secrets must not print"
        );
    }

    #[test]
    fn unknown_fields_and_all_errors_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.toml");
        std::fs::write(&path, "database_url = 'postgres://x@h/db'\nadmin_token = 'a'\ngateway_token = 'g'\ncolour = 'blue'\n").unwrap();
        let err = load::<ControlPlaneConfig>(&path, &[]).unwrap_err();
        assert!(format!("{err:#}").contains("colour"), "{err:#}");

        std::fs::write(&path, "database_url = 'mysql://x'\nadmin_token = 'a'\ngateway_token = 'g'\nmax_token_ttl = 'soon'\n").unwrap();
        let cfg: ControlPlaneConfig = load(&path, &[]).unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        for part in [
            "database_url",
            "admin_token",
            "gateway_token",
            "max_token_ttl",
        ] {
            assert!(err.contains(part), "{part} missing from {err}");
        }
    }

    #[test]
    fn audit_streams_are_checked_and_never_print_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.toml");
        let base = format!(
            "database_url = 'postgres://x@h/db'\nadmin_token = '{0}'\ngateway_token = '{0}'\n",
            "t".repeat(32)
        );
        let good = "[[audit_stream]]\nname = 'splunk'\nurl = 'https://siem.example.com/hec/path-token'\n\
                    secret = 'stream-secret-0123456789'\n\
                    [[audit_stream]]\nname = 'archive'\nurl = 'http://10.0.0.9:9000/in'\n\
                    secret = 'stream-secret-9876543210'\nbatch = 5000\nsettle = '30s'\n";
        std::fs::write(&path, format!("{base}{good}")).unwrap();
        let cfg: ControlPlaneConfig = load(&path, &[]).unwrap();
        cfg.validate().unwrap();
        let streams = cfg.audit_stream_settings().unwrap();
        assert_eq!(streams.len(), 2);
        assert_eq!(
            (streams[0].batch, streams[0].settle),
            (500, std::time::Duration::from_secs(5))
        );
        assert_eq!(
            (streams[1].batch, streams[1].settle),
            (5000, std::time::Duration::from_secs(30))
        );
        let printed = format!("{cfg:?} {streams:?}");
        for leak in ["stream-secret-0123456789", "path-token"] {
            assert!(!printed.contains(leak), "{leak} printed in {printed}");
        }

        // Every problem of every entry, each naming its entry.
        let bad = "[[audit_stream]]\nname = 'a b'\nurl = 'ftp://h/x'\nsecret = 'short'\nbatch = 0\nsettle = 'soon'\n\
                   [[audit_stream]]\nname = 'dup'\nurl = 'https://h/x'\nsecret = 'stream-secret-0123456789'\n\
                   [[audit_stream]]\nname = 'dup'\nurl = 'https://h/y'\nsecret = 'stream-secret-0123456789'\nbatch = 5001\n";
        std::fs::write(&path, format!("{base}{bad}")).unwrap();
        let cfg: ControlPlaneConfig = load(&path, &[]).unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        for part in [
            "audit_stream #1: stream",
            "audit_stream #1: url",
            "audit_stream #1: secret",
            "audit_stream #1: batch must be 1..=5000",
            "audit_stream #1: settle",
            "audit_stream #3: the name \"dup\" is used twice",
            "audit_stream #3: batch must be 1..=5000",
        ] {
            assert!(err.contains(part), "{part} missing from {err}");
        }
        // A stream without a secret is refused at load.
        std::fs::write(
            &path,
            format!("{base}[[audit_stream]]\nname = 'x'\nurl = 'https://h/x'\n"),
        )
        .unwrap();
        assert!(load::<ControlPlaneConfig>(&path, &[]).is_err());
    }

    #[test]
    fn notify_entries_are_checked_and_never_print_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.toml");
        let base = format!(
            "database_url = 'postgres://x@h/db'\nadmin_token = '{0}'\ngateway_token = '{0}'\n",
            "t".repeat(32)
        );
        let good = "[[notify]]\nkind = 'webhook'\nurl = 'https://hooks.example.com/countersign'\nsecret = 'webhook-secret-0123456789'\n\
                    [[notify]]\nkind = 'slack'\nurl = 'https://hooks.slack.com/services/T0/B0/slack-credential'\n";
        std::fs::write(&path, format!("{base}{good}")).unwrap();
        let cfg: ControlPlaneConfig = load(&path, &[]).unwrap();
        cfg.validate().unwrap();
        let targets = cfg.notification_targets().unwrap();
        assert_eq!(targets.len(), 2);
        assert!(
            matches!(&targets[0], NotificationTarget::Webhook { url, secret }
            if url == "https://hooks.example.com/countersign" && secret.expose() == "webhook-secret-0123456789")
        );
        assert!(matches!(&targets[1], NotificationTarget::Slack { .. }));
        let printed = format!("{cfg:?} {targets:?}");
        for leak in [
            "webhook-secret-0123456789",
            "slack-credential",
            "/countersign",
        ] {
            assert!(!printed.contains(leak), "{leak} printed in {printed}");
        }

        // Every problem of every entry, each naming its entry.
        let bad = "[[notify]]\nkind = 'webhook'\nurl = 'ftp://h/x'\nsecret = 'short'\n\
                   [[notify]]\nkind = 'webhook'\nurl = 'https://h/x'\n\
                   [[notify]]\nkind = 'slack'\nurl = 'not a url'\nsecret = 'webhook-secret-0123456789'\n";
        std::fs::write(&path, format!("{base}{bad}")).unwrap();
        let cfg: ControlPlaneConfig = load(&path, &[]).unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        for part in [
            "notify #1: url",
            "notify #1: secret: the webhook secret must be at least 16",
            "notify #2: secret is required",
            "notify #3: url",
            "notify #3: secret is only for",
        ] {
            assert!(err.contains(part), "{part} missing from {err}");
        }
        assert_eq!(err.matches("\n  - ").count(), 5, "{err}");
        assert!(
            !err.contains("short") && !err.contains("webhook-secret"),
            "{err}"
        );

        // An unknown kind or field is refused when loading.
        std::fs::write(
            &path,
            format!("{base}[[notify]]\nkind = 'email'\nurl = 'https://h/x'\n"),
        )
        .unwrap();
        let err = load::<ControlPlaneConfig>(&path, &[]).unwrap_err();
        assert!(format!("{err:#}").contains("email"), "{err:#}");
        std::fs::write(
            &path,
            format!("{base}[[notify]]\nkind = 'slack'\nurl = 'https://h/x'\nchannel = '#ops'\n"),
        )
        .unwrap();
        let err = load::<ControlPlaneConfig>(&path, &[]).unwrap_err();
        assert!(format!("{err:#}").contains("channel"), "{err:#}");
    }

    #[test]
    fn oidc_section_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.toml");
        let base = format!(
            "database_url = 'postgres://x@h/db'\nadmin_token = '{0}'\ngateway_token = '{0}'\n",
            "t".repeat(32)
        );
        // Defaults: scopes, groups claim, session lifetime, redirect from http_addr.
        std::fs::write(
            &path,
            format!("{base}http_addr = '127.0.0.1:9000'\n[oidc]\nissuer_url = 'http://127.0.0.1:5556'\nclient_id = 'cs'\nclient_secret = 'from-file'\n"),
        )
        .unwrap();
        let cfg: ControlPlaneConfig = load(&path, &[]).unwrap();
        cfg.validate().unwrap();
        let sso = cfg
            .oidc
            .as_ref()
            .unwrap()
            .settings(&cfg.public_url())
            .unwrap();
        assert_eq!(sso.redirect_url, "http://127.0.0.1:9000/auth/callback");
        assert_eq!(sso.scopes, ["email", "profile"]);
        assert_eq!(sso.groups_claim, "groups");
        assert_eq!(sso.session_ttl, std::time::Duration::from_secs(8 * 3600));

        // Every problem at once; a Secure cookie needs https (or loopback http).
        std::fs::write(
            &path,
            format!(
                "{base}public_url = 'http://countersign.internal'\n[oidc]\nissuer_url = 'http://idp.internal'\n\
                 client_id = ''\nclient_secret = ''\nscopes = ['openid', 'a b']\nsession_ttl = 'soon'\n\
                 allowed_domains = ['@x']\n[oidc.group_map]\nadmins = 'not a group'\n"
            ),
        )
        .unwrap();
        let cfg: ControlPlaneConfig = load(&path, &[]).unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        for part in [
            "oidc.issuer_url",
            "oidc.client_id",
            "oidc.client_secret",
            "oidc.redirect_url",
            "oidc.scopes: \"openid\"",
            "oidc.scopes: \"a b\"",
            "oidc.session_ttl",
            "oidc.allowed_domains",
            "oidc.group_map[\"admins\"]",
        ] {
            assert!(err.contains(part), "{part} missing from {err}");
        }

        // COUNTERSIGN_OIDC_CLIENT_SECRET overriding the file is shown end to end
        // (tests/e2e/sso.rs): the provider accepts only the secret from the environment.

        // Unknown fields in the section are refused.
        std::fs::write(&path, format!("{base}[oidc]\nissuer = 'https://x'\n")).unwrap();
        let err = load::<ControlPlaneConfig>(&path, &[]).unwrap_err();
        assert!(format!("{err:#}").contains("issuer"), "{err:#}");
    }

    #[test]
    fn gateway_auth_follows_the_url_scheme() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.toml");
        let upstream = "[[upstream]]\nname = 'a'\nurl = 'postgres://u@h/db'\n";
        let check = |text: &str| {
            std::fs::write(&path, format!("{text}{upstream}")).unwrap();
            load::<GatewayConfig>(&path, &[]).unwrap().validate()
        };
        check("control_plane_url = 'http://cp:8081'\ngateway_token = 't'\n").unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "x").unwrap();
        check(&format!(
            "control_plane_url = 'https://cp:8081'\ncontrol_plane_ca = '{}'\nenrollment_token = 'cse_x'\n",
            ca.display()
        ))
        .unwrap();
        let err = check("control_plane_url = 'https://cp:8081'\ngateway_token = 't'\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("gateway_token is not allowed") && err.contains("control_plane_ca"),
            "{err}"
        );
        let err = check(
            "control_plane_url = 'http://cp:8081'\nenrollment_token = 'cse_x'\ncontrol_plane_ca = 'x'\n",
        )
        .unwrap_err()
        .to_string();
        for part in [
            "gateway_token is required",
            "enrollment_token needs",
            "control_plane_ca needs",
        ] {
            assert!(err.contains(part), "{part} missing from {err}");
        }
        assert!(!err.contains("cse_x"), "{err}");
    }

    #[test]
    fn several_control_plane_urls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.toml");
        let upstream = "[[upstream]]\nname = 'a'\nurl = 'postgres://u@h/db'\n";
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "x").unwrap();
        let check = |text: &str| {
            std::fs::write(&path, format!("{text}{upstream}")).unwrap();
            let cfg = load::<GatewayConfig>(&path, &[]).unwrap();
            cfg.validate().map(|()| cfg.control_plane_urls())
        };
        let urls = check(&format!(
            "control_plane_urls = ['https://cp-1:8081', 'https://cp-2:8081']\ncontrol_plane_ca = '{}'\n",
            ca.display()
        ))
        .unwrap();
        assert_eq!(urls, ["https://cp-1:8081", "https://cp-2:8081"]);
        assert_eq!(
            check("control_plane_url = 'http://cp:8081'\ngateway_token = 't'\n").unwrap(),
            ["http://cp:8081"]
        );
        let err = check(
            "control_plane_urls = ['https://cp-1:8081', 'http://cp-2:8081']\ngateway_token = 't'\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("mixes http:// and https://"), "{err}");
        let err = check("control_plane_url = 'http://a:1'\ncontrol_plane_urls = ['http://b:1']\ngateway_token = 't'\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not both"), "{err}");
        let err = check("gateway_token = 't'\n").unwrap_err().to_string();
        assert!(
            err.contains("control_plane_url (or control_plane_urls) is required"),
            "{err}"
        );
    }

    #[test]
    fn grpc_tls_excludes_the_gateway_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.toml");
        let base = format!(
            "database_url = 'postgres://x@h/db'\nadmin_token = '{0}'\n",
            "t".repeat(32)
        );
        let check = |extra: &str| {
            std::fs::write(&path, format!("{base}{extra}")).unwrap();
            load::<ControlPlaneConfig>(&path, &[]).unwrap().validate()
        };
        check("[grpc_tls]\nnames = ['localhost']\n").unwrap();
        let err = check(&format!(
            "gateway_token = '{}'\n[grpc_tls]\nnames = []\nca_cert_file = '/nonexistent'\ngateway_cert_lifetime = 'soon'\n",
            "g".repeat(32)
        ))
        .unwrap_err()
        .to_string();
        for part in [
            "gateway_token is not allowed",
            "grpc_tls.names",
            "ca_cert_file and ca_key_file together",
            "grpc_tls.gateway_cert_lifetime",
        ] {
            assert!(err.contains(part), "{part} missing from {err}");
        }
        let err = check("").unwrap_err().to_string();
        assert!(err.contains("gateway_token is required"), "{err}");
    }

    #[test]
    fn upstream_url_errors_name_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.toml");
        std::fs::write(
            &path,
            "control_plane_url = 'grpc://x'\ngateway_token = 't'\n[[upstream]]\nname = 'a'\nurl = 'postgres://h/db'\n",
        )
        .unwrap();
        let cfg: GatewayConfig = load(&path, &[]).unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("control_plane_url") && err.contains("upstream #1"),
            "{err}"
        );
    }
}
