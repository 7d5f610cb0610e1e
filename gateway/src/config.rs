//! Gateway settings and upstream resource definitions.
//!
//! The binary loads these from TOML (or builds them for `countersign dev`);
//! this module owns their meaning and validation. Credentials are [`Secret`]s
//! and never print.

use countersign_common::Secret;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How the gateway talks TLS to an upstream database, with libpq's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamSslMode {
    /// Plain TCP.
    Disable,
    /// TLS if the server offers it, without certificate checks; plain otherwise.
    Prefer,
    /// TLS, without certificate checks (libpq's meaning of `require`).
    Require,
    /// TLS, certificate chain checked against `sslrootcert` and name against the host.
    VerifyFull,
}

/// One upstream database the gateway holds credentials for.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// The resource name clients put in `dbname`.
    pub name: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<Secret<String>>,
    /// Upstream database used when the client does not name one (`resource/dbname`).
    pub database: String,
    pub sslmode: UpstreamSslMode,
    /// CA bundle for `verify-full`.
    pub sslrootcert: Option<PathBuf>,
}

impl Upstream {
    /// Parses `[NAME=]postgres://USER[:PASSWORD]@HOST[:PORT][/DB][?sslmode=…&sslrootcert=…]`.
    pub fn parse(spec: &str, default_name: &str) -> Result<Self, String> {
        let (name, url) = match spec.split_once('=') {
            Some((n, u)) if !n.contains("://") && !n.is_empty() => (n.trim(), u.trim()),
            _ => (default_name, spec.trim()),
        };
        let parsed = url::Url::parse(url).map_err(|e| format!("upstream {name}: bad URL: {e}"))?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(format!(
                "upstream {name}: the URL must start with postgres://"
            ));
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| format!("upstream {name}: URL is not valid UTF-8"))
        };
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("upstream {name}: the URL names no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let user = decode(parsed.username())?;
        if user.is_empty() {
            return Err(format!("upstream {name}: the URL names no user"));
        }
        let password = parsed.password().map(decode).transpose()?.map(Secret::new);
        let database = match decode(parsed.path().trim_start_matches('/'))? {
            db if db.is_empty() => user.clone(),
            db => db,
        };
        let mut sslmode = UpstreamSslMode::Prefer;
        let mut sslrootcert = None;
        for (k, v) in parsed.query_pairs() {
            match k.as_ref() {
                "sslmode" => {
                    sslmode = match v.as_ref() {
                        "disable" => UpstreamSslMode::Disable,
                        "prefer" | "allow" => UpstreamSslMode::Prefer,
                        "require" => UpstreamSslMode::Require,
                        "verify-full" => UpstreamSslMode::VerifyFull,
                        other => {
                            return Err(format!(
                                "upstream {name}: sslmode {other:?} is not supported; \
                                 use disable, prefer, require or verify-full"
                            ));
                        }
                    }
                }
                "sslrootcert" => sslrootcert = Some(PathBuf::from(v.as_ref())),
                other => return Err(format!("upstream {name}: unknown URL parameter {other:?}")),
            }
        }
        if sslmode == UpstreamSslMode::VerifyFull && sslrootcert.is_none() {
            return Err(format!(
                "upstream {name}: sslmode=verify-full needs sslrootcert=PATH"
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            host,
            port: parsed.port().unwrap_or(5432),
            user,
            password,
            database,
            sslmode,
            sslrootcert,
        })
    }
}

/// TLS for client connections.
#[derive(Clone, Debug)]
pub struct ClientTls {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

/// How the gateway authenticates to the control plane.
#[derive(Clone, Debug)]
pub enum ControlPlaneAuth {
    /// Plain gRPC with a shared bearer token: `countersign dev`, or a control
    /// plane without `[grpc_tls]`.
    Token(Secret<String>),
    /// Mutual TLS with a client certificate from the control plane's gateway
    /// CA, enrolled with a one-time token and renewed on its own (see
    /// [`crate::enroll`]).
    Enrolled(EnrollmentSettings),
}

/// Where an enrolled gateway keeps its identity, and how it gets one.
#[derive(Clone, Debug)]
pub struct EnrollmentSettings {
    /// Holds `gateway.pem` (client certificate and private key) and `ca.pem`,
    /// mode 0600. Keep it across restarts: a gateway with a valid certificate
    /// here does not enroll again.
    pub state_dir: PathBuf,
    /// One-time token used when `state_dir` holds no valid certificate.
    pub enrollment_token: Option<Secret<String>>,
    /// A file holding the one-time token, read only when `state_dir` holds no
    /// valid certificate and `enrollment_token` is not set.
    pub enrollment_token_file: Option<PathBuf>,
    /// PEM file of the control plane's gateway CA: the control plane's server
    /// certificate must chain to it, from the very first contact.
    pub control_plane_ca: PathBuf,
}

/// Everything a gateway needs to run.
#[derive(Clone, Debug)]
pub struct GatewaySettings {
    /// Names this gateway in the control plane's records.
    pub gateway_id: String,
    /// The environment whose resources this gateway serves.
    pub environment: String,
    /// gRPC URLs of the control-plane replicas, e.g. `http://127.0.0.1:8081`;
    /// at least one. The gateway uses one at a time and moves to the next when
    /// it is unreachable or shutting down.
    pub control_plane_urls: Vec<String>,
    /// How the gateway authenticates to the control plane.
    pub control_plane_auth: ControlPlaneAuth,
    /// Where PostgreSQL clients connect.
    pub pg_addr: SocketAddr,
    /// Offered through `SSLRequest` when set.
    pub tls: Option<ClientTls>,
    /// Refuse clients that do not use TLS (the token travels as a password).
    pub require_tls: bool,
    pub upstreams: Vec<Upstream>,
    /// How long a client has to finish startup and authentication.
    pub handshake_timeout: Duration,
    /// How long a statement held for review waits for a decision.
    pub review_timeout: Duration,
    /// The durable audit spool: directory, size bound (past it, new statements
    /// are refused: fail closed) and fsync interval.
    pub spool: crate::audit::SpoolSettings,
    /// Keys the `hash` mask style. `None`: a random key per process, so hashes are
    /// joinable within one gateway run only; set it to keep them stable across restarts
    /// and gateways.
    pub mask_key: Option<Secret<String>>,
    /// How many session threads run the client sessions (`pg::threads`); 0: one per core but
    /// one, and at least one.
    pub session_threads: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_upstream_urls() {
        let u = Upstream::parse(
            "prod=postgres://app:p%40ss@db.internal:6543/shop?sslmode=require",
            "dev",
        )
        .unwrap();
        assert_eq!(u.name, "prod");
        assert_eq!(u.host, "db.internal");
        assert_eq!(u.port, 6543);
        assert_eq!(u.user, "app");
        assert_eq!(u.password.as_ref().unwrap().expose(), "p@ss");
        assert_eq!(u.database, "shop");
        assert_eq!(u.sslmode, UpstreamSslMode::Require);
        assert!(!format!("{u:?}").contains("p@ss"));

        let d = Upstream::parse("postgres://postgres@127.0.0.1/", "dev").unwrap();
        assert_eq!(
            (d.name.as_str(), d.port, d.database.as_str()),
            ("dev", 5432, "postgres")
        );
        assert_eq!(d.sslmode, UpstreamSslMode::Prefer);
    }

    #[test]
    fn rejects_bad_upstream_urls() {
        for bad in [
            "mysql://x@h/db",
            "postgres://h/db",
            "postgres://u@h/db?sslmode=verify-ca",
            "postgres://u@h/db?sslmode=verify-full",
            "postgres://u@h/db?colour=blue",
            "not a url",
        ] {
            assert!(Upstream::parse(bad, "dev").is_err(), "{bad}");
        }
    }
}
