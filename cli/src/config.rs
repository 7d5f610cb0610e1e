//! Config files for `countersign control-plane` and `countersign gateway`.
//!
//! TOML, typed, with unknown fields rejected. Environment variables
//! `COUNTERSIGN_<FIELD>` override top-level fields. `validate()` reports every
//! problem at once. Secrets are [`Secret`]s and never print.

use anyhow::{Context, bail};
use countersign_common::{Secret, parse_duration};
use countersign_control_plane::notify::{self, NotificationTarget};
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
    /// Token gateways present (`COUNTERSIGN_GATEWAY_TOKEN`). Required, at least 32 characters.
    #[schemars(with = "String")]
    pub gateway_token: Secret<String>,
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
    /// How often each replica writes an audit checkpoint and runs the
    /// retention purge. Default `60s`.
    #[serde(default = "default_checkpoint_interval")]
    pub audit_checkpoint_interval: String,
    /// File holding the audit chain's HMAC key as hex (at least 32 bytes).
    /// Default: a key generated once and kept in the store. Keeping it outside
    /// the database means someone with only database access cannot re-chain
    /// what they changed (see docs/audit.md).
    pub audit_key_file: Option<PathBuf>,
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
    /// Control plane gRPC URL (`COUNTERSIGN_CONTROL_PLANE_URL`). Required.
    pub control_plane_url: String,
    /// Token for the control plane (`COUNTERSIGN_GATEWAY_TOKEN`). Required.
    #[schemars(with = "String")]
    pub gateway_token: Secret<String>,
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

fn default_checkpoint_interval() -> String {
    "60s".to_owned()
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

/// Reads a TOML file, applies `COUNTERSIGN_<FIELD>` overrides for `fields`, and parses.
pub fn load<T: serde::de::DeserializeOwned>(path: &Path, fields: &[&str]) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut table: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    for field in fields {
        let var = format!("COUNTERSIGN_{}", field.to_ascii_uppercase());
        if let Ok(value) = std::env::var(&var) {
            // Numbers and booleans keep their type; anything else is a string.
            let parsed = value
                .parse::<i64>()
                .map(toml::Value::Integer)
                .or_else(|_| value.parse::<bool>().map(toml::Value::Boolean))
                .unwrap_or(toml::Value::String(value));
            table.insert((*field).to_owned(), parsed);
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
    ];

    pub fn validate(&self) -> anyhow::Result<()> {
        let mut errors = Vec::new();
        if !self.database_url.expose().starts_with("postgres") {
            errors.push("database_url must be a postgres:// URL".to_owned());
        }
        for (name, s) in [
            ("admin_token", &self.admin_token),
            ("gateway_token", &self.gateway_token),
        ] {
            if s.expose().len() < 32 {
                errors.push(format!("{name} must be at least 32 characters"));
            }
        }
        for (name, v) in [
            ("default_token_ttl", &self.default_token_ttl),
            ("max_token_ttl", &self.max_token_ttl),
            ("audit_checkpoint_interval", &self.audit_checkpoint_interval),
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
            && !p.exists()
        {
            errors.push(format!("signing_key_file {} does not exist", p.display()));
        }
        if let Some(p) = &self.audit_key_file
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
        collect(errors)
    }

    /// The `[[notify]]` targets, for `Settings::notifications`. Call after `validate`.
    pub fn notification_targets(&self) -> anyhow::Result<Vec<NotificationTarget>> {
        self.notify.iter().map(NotifyEntry::target).collect()
    }
}

impl GatewayConfig {
    pub const FIELDS: &'static [&'static str] = &[
        "gateway_id",
        "environment",
        "control_plane_url",
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
    ];

    pub fn validate(&self) -> anyhow::Result<()> {
        let mut errors = Vec::new();
        if !self.control_plane_url.starts_with("http://")
            && !self.control_plane_url.starts_with("https://")
        {
            errors.push("control_plane_url must start with http:// or https://".to_owned());
        }
        if self.gateway_token.expose().is_empty() {
            errors.push("gateway_token is required".to_owned());
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
                if !p.exists() {
                    errors.push(format!("tls file {} does not exist", p.display()));
                }
            }
        }
        collect(errors)
    }
}

/// The JSON schema of a config file: `control-plane` or `gateway`.
pub fn schema(which: &str) -> anyhow::Result<String> {
    let schema = match which {
        "control-plane" => schemars::schema_for!(ControlPlaneConfig),
        "gateway" => schemars::schema_for!(GatewayConfig),
        other => anyhow::bail!("no config named {other:?}; use control-plane or gateway"),
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
        gw.validate().unwrap();
        assert_eq!(gw.upstreams.len(), 1);
        assert!(gw.metrics_addr.is_some());
    }

    /// `deploy/schema/*.schema.json` match the config types. To refresh them after a
    /// change: `countersign config schema gateway > deploy/schema/gateway.schema.json`
    /// (and the same for control-plane).
    #[test]
    fn generated_schemas_are_current() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/schema");
        for which in ["control-plane", "gateway"] {
            let path = dir.join(format!("{which}.schema.json"));
            let want = schema(which).unwrap();
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
        let staging: GatewayConfig = load(&examples().join("gateway-staging.toml"), &[]).unwrap();
        staging.validate().unwrap();
        let prod: GatewayConfig = load(&examples().join("gateway-prod.toml"), &[]).unwrap();
        // Only the TLS files, which live on the production host, are missing here.
        let err = prod.validate().unwrap_err().to_string();
        assert!(
            err.contains("gateway.crt") && err.contains("gateway.key"),
            "{err}"
        );
        assert_eq!(err.matches("\n  - ").count(), 2, "{err}");
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
