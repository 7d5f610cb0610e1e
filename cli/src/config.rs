//! Config files for `countersign control-plane` and `countersign gateway`.
//!
//! TOML, typed, with unknown fields rejected. Environment variables
//! `COUNTERSIGN_<FIELD>` override top-level fields. `validate()` reports every
//! problem at once. Secrets are [`Secret`]s and never print.

use anyhow::{Context, bail};
use countersign_common::{Secret, parse_duration};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// `countersign control-plane --config FILE`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlPlaneConfig {
    /// PostgreSQL URL of the store (`COUNTERSIGN_DATABASE_URL`). Required.
    pub database_url: Secret<String>,
    /// HTTP API address. Default `0.0.0.0:8080`.
    #[serde(default = "default_http")]
    pub http_addr: SocketAddr,
    /// gRPC address for gateways. Default `0.0.0.0:8081`.
    #[serde(default = "default_grpc")]
    pub grpc_addr: SocketAddr,
    /// Bootstrap admin bearer token (`COUNTERSIGN_ADMIN_TOKEN`). Required, at least 32 characters.
    pub admin_token: Secret<String>,
    /// Token gateways present (`COUNTERSIGN_GATEWAY_TOKEN`). Required, at least 32 characters.
    pub gateway_token: Secret<String>,
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
}

#[derive(Debug, Deserialize)]
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
}

/// `countersign gateway --config FILE`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// This gateway's name. Default: the host name, or `gateway`.
    #[serde(default = "default_gateway_id")]
    pub gateway_id: String,
    /// The environment served. Default `default`.
    #[serde(default = "default_env")]
    pub environment: String,
    /// Control plane gRPC URL (`COUNTERSIGN_CONTROL_PLANE_URL`). Required.
    pub control_plane_url: String,
    /// Token for the control plane (`COUNTERSIGN_GATEWAY_TOKEN`). Required.
    pub gateway_token: Secret<String>,
    /// PostgreSQL listen address. Default `0.0.0.0:6432`.
    #[serde(default = "default_pg")]
    pub pg_addr: SocketAddr,
    /// Refuse clients without TLS. Default true when `tls` is set.
    pub require_tls: Option<bool>,
    pub tls: Option<TlsEntry>,
    /// Seconds a client has for startup and authentication. Default 15.
    #[serde(default = "default_handshake")]
    pub handshake_timeout_secs: u64,
    /// Seconds a statement held for review waits for a decision. Default 600.
    #[serde(default = "default_review_timeout")]
    pub review_timeout_secs: u64,
    /// Audit events held in memory while the control plane is unreachable. Default 100000.
    #[serde(default = "default_audit_buffer")]
    pub audit_buffer: usize,
    /// Upstream databases, with the credentials only the gateway holds.
    #[serde(default, rename = "upstream")]
    pub upstreams: Vec<UpstreamEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsEntry {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamEntry {
    /// The resource name clients use as dbname.
    pub name: String,
    /// `postgres://user:password@host:port/db?sslmode=…`.
    pub url: Secret<String>,
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
fn default_audit_buffer() -> usize {
    100_000
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
        "default_token_ttl",
        "max_token_ttl",
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
        ] {
            if let Err(e) = parse_duration(v) {
                errors.push(format!("{name}: {e}"));
            }
        }
        if let Some(p) = &self.signing_key_file
            && !p.exists()
        {
            errors.push(format!("signing_key_file {} does not exist", p.display()));
        }
        for r in &self.resources {
            if let Err(e) = countersign_control_plane::service::validate_name("resource", &r.name) {
                errors.push(e.to_string());
            }
        }
        collect(errors)
    }
}

impl GatewayConfig {
    pub const FIELDS: &'static [&'static str] = &[
        "gateway_id",
        "environment",
        "control_plane_url",
        "gateway_token",
        "pg_addr",
        "require_tls",
        "handshake_timeout_secs",
        "review_timeout_secs",
        "audit_buffer",
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

#[cfg(test)]
mod tests {
    use super::*;

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
