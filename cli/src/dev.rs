//! `countersign dev`: control plane and gateway in one process, on SQLite,
//! with no config. The gateway still reaches the control plane over gRPC on
//! loopback, so this exercises the production path.
//!
//! State (store, tokens, TLS certificate) lives in the data directory and
//! survives restarts. Machine-readable `key=value` lines go to stdout, ending
//! with `ready`; logs go to stderr.

use anyhow::{Context, bail};
use clap::Args;
use countersign_common::Secret;
use countersign_control_plane::store::resources::ResourceSpec;
use countersign_control_plane::{ControlPlane, Settings, Store};
use countersign_gateway::audit::SpoolSettings;
use countersign_gateway::config::{ClientTls, ControlPlaneAuth, GatewaySettings, Upstream};
use countersign_gateway::pg::threads::MAX as MAX_SESSION_THREADS;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tokio::net::TcpListener;

#[derive(Args)]
pub struct DevArgs {
    /// Where state lives.
    #[arg(long, env = "COUNTERSIGN_DATA_DIR", default_value = "countersign-data")]
    data_dir: PathBuf,
    /// Upstream database, `[NAME=]postgres://user[:password]@host:port/db`; NAME defaults to `dev`. Repeatable.
    #[arg(
        long = "upstream",
        env = "COUNTERSIGN_UPSTREAM",
        value_delimiter = ',',
        default_value = "dev=postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
    )]
    upstreams: Vec<String>,
    /// PostgreSQL listen address for clients.
    #[arg(long, env = "COUNTERSIGN_PG_ADDR", default_value = "127.0.0.1:6432")]
    pg_addr: SocketAddr,
    /// HTTP API address.
    #[arg(long, env = "COUNTERSIGN_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    http_addr: SocketAddr,
    /// gRPC address the gateway uses to reach the control plane.
    #[arg(long, env = "COUNTERSIGN_GRPC_ADDR", default_value = "127.0.0.1:8081")]
    grpc_addr: SocketAddr,
    /// Bootstrap admin token. Default: generated once and kept in the data directory.
    #[arg(long, env = "COUNTERSIGN_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// The identity of the printed user token.
    #[arg(long, env = "COUNTERSIGN_DEV_USER", default_value = "dev@localhost")]
    user: String,
    /// Guardrail policy file applied at start (as a new version when it changed).
    #[arg(long, env = "COUNTERSIGN_POLICY")]
    policy: Option<PathBuf>,
    /// How long a client has to finish startup and send its token.
    #[arg(long, env = "COUNTERSIGN_HANDSHAKE_TIMEOUT", default_value = "15s", value_parser = countersign_common::parse_duration)]
    handshake_timeout: Duration,
    /// How long a statement held for review waits for a decision.
    #[arg(long, env = "COUNTERSIGN_REVIEW_TIMEOUT", default_value = "10m", value_parser = countersign_common::parse_duration)]
    review_timeout: Duration,
    /// Lifetime of the printed user token.
    #[arg(long, default_value = "12h", value_parser = countersign_common::parse_duration)]
    user_token_ttl: Duration,
    /// Mark the dev resources `strict_audit`: each statement waits for the fsync of its
    /// audit record before it is forwarded.
    #[arg(long, env = "COUNTERSIGN_STRICT_AUDIT")]
    strict_audit: bool,
    /// How often the gateway's audit spool (`DATA_DIR/spool`) is fsynced.
    #[arg(long, env = "COUNTERSIGN_SPOOL_FSYNC_INTERVAL", default_value = "10ms", value_parser = countersign_common::parse_duration)]
    spool_fsync_interval: Duration,
    /// How many threads run client sessions; 0 for one per core but one (at least one).
    #[arg(long, env = "COUNTERSIGN_SESSION_THREADS", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=MAX_SESSION_THREADS as i64))]
    session_threads: u16,
    /// How often an audit checkpoint is written (see docs/audit.md).
    #[arg(long, env = "COUNTERSIGN_AUDIT_CHECKPOINT_INTERVAL", default_value = "60s", value_parser = countersign_common::parse_duration)]
    audit_checkpoint_interval: Duration,
}

/// Applied on first start when no `--policy` is given: without any policy
/// nobody may connect (access needs a grant or a standing allowance).
const STARTER_POLICY: &str = r#"# Written by `countersign dev` on first start. Anyone signed in may use the
# dev resources read-write. Replace it with `countersign policy apply`.
[[access]]
name = "dev-everyone"
members = ["*"]
level = "read-write"
environments = ["default"]
"#;

/// A 256-bit random token, hex-encoded.
fn random_token() -> String {
    rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads `dir/name`, or writes `value()` there (mode 0600) and returns it.
fn persisted(
    dir: &Path,
    name: &str,
    value: impl FnOnce() -> anyhow::Result<String>,
) -> anyhow::Result<String> {
    let path = dir.join(name);
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        return Ok(text.trim().to_owned());
    }
    let text = value()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(text)
}

pub async fn run(args: DevArgs) -> anyhow::Result<ExitCode> {
    let mut upstreams = Vec::new();
    for spec in &args.upstreams {
        upstreams.push(Upstream::parse(spec, "dev").map_err(anyhow::Error::msg)?);
    }
    if upstreams.is_empty() {
        bail!("at least one --upstream is required");
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let dir = args.data_dir.canonicalize()?;

    let admin_token = match args.admin_token {
        Some(t) if t.len() >= 16 => t,
        Some(_) => bail!("--admin-token must be at least 16 characters"),
        None => persisted(&dir, "admin-token", || Ok(random_token()))?,
    };
    let gateway_token = persisted(&dir, "gateway-token", || Ok(random_token()))?;
    let tls_dir = dir.join("tls");
    std::fs::create_dir_all(&tls_dir)?;
    let (cert, key) = (tls_dir.join("cert.pem"), tls_dir.join("key.pem"));
    if !cert.exists() || !key.exists() {
        let (c, k) = countersign_gateway::tls::self_signed(&["localhost", "127.0.0.1"])?;
        std::fs::write(&cert, c)?;
        let _ = std::fs::remove_file(&key);
        persisted(&tls_dir, "key.pem", || Ok(k))?;
    }

    let http = TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("binding {}", args.http_addr))?;
    let grpc = TcpListener::bind(args.grpc_addr)
        .await
        .with_context(|| format!("binding {}", args.grpc_addr))?;
    let pg = TcpListener::bind(args.pg_addr)
        .await
        .with_context(|| format!("binding {}", args.pg_addr))?;
    let (http_addr, grpc_addr, pg_addr) =
        (http.local_addr()?, grpc.local_addr()?, pg.local_addr()?);

    let db_url = format!("sqlite://{}?mode=rwc", dir.join("countersign.db").display());
    let store = Store::connect(&db_url)
        .await
        .context("opening the SQLite store")?;
    let mut settings = Settings::new(
        Secret::new(admin_token.clone()),
        Secret::new(gateway_token.clone()),
    );
    settings.public_url = format!("http://{http_addr}");
    settings.audit_checkpoint_interval = args.audit_checkpoint_interval;
    let cp = ControlPlane::new(store, settings).await?;
    cp.start_audit_jobs();
    if args.policy.is_none() && cp.store().latest_policy().await?.is_none() {
        let v = cp.apply_policy(STARTER_POLICY, "countersign-dev").await?;
        tracing::info!(
            version = v.version,
            "starter policy active: anyone signed in may use the dev resources"
        );
    }
    if let Some(path) = &args.policy {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let v = cp
            .apply_policy(&text, "countersign-dev")
            .await
            .with_context(|| format!("applying {}", path.display()))?;
        tracing::info!(version = v.version, file = %path.display(), "policy active");
    }
    for up in &upstreams {
        cp.upsert_resource(&ResourceSpec {
            name: up.name.clone(),
            kind: "postgres".to_owned(),
            environment: "default".to_owned(),
            strict_audit: args.strict_audit,
        })
        .await?;
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let cp_task = tokio::spawn(countersign_control_plane::serve(
        cp.clone(),
        http,
        grpc,
        stopped(),
    ));

    let resource_names: Vec<String> = upstreams.iter().map(|u| u.name.clone()).collect();
    let gw = countersign_gateway::Gateway::start(GatewaySettings {
        gateway_id: "dev".to_owned(),
        environment: "default".to_owned(),
        control_plane_urls: vec![format!("http://{grpc_addr}")],
        // Control plane and gateway share this process and talk over loopback:
        // dev keeps the shared token (see docs/enrollment.md).
        control_plane_auth: ControlPlaneAuth::Token(Secret::new(gateway_token)),
        pg_addr,
        tls: Some(ClientTls {
            cert_path: cert,
            key_path: key,
        }),
        require_tls: false,
        upstreams,
        handshake_timeout: args.handshake_timeout,
        spool: SpoolSettings::new(dir.join("spool"), 1 << 30, args.spool_fsync_interval),
        mask_key: None,
        review_timeout: args.review_timeout,
        session_threads: usize::from(args.session_threads),
    })
    .await?;
    let threads = gw
        .start_session_threads()
        .context("starting the session threads")?;
    let gw_task = tokio::spawn({
        let gw = gw.clone();
        let stop = stopped();
        async move { gw.serve_pg(threads, pg, stop).await }
    });

    let user_token = cp
        .issue_token(
            &args.user,
            &[],
            Some(args.user_token_ttl),
            "countersign-dev",
        )
        .await?;
    let first = resource_names.first().cloned().unwrap_or_default();
    let mut out = String::new();
    out.push_str(&format!("admin_token={admin_token}\n"));
    out.push_str(&format!("user={}\n", args.user));
    out.push_str(&format!("user_token={}\n", user_token.token));
    out.push_str(&format!("http=http://{http_addr}\n"));
    out.push_str(&format!("grpc=http://{grpc_addr}\n"));
    out.push_str(&format!("pg={pg_addr}\n"));
    for name in &resource_names {
        out.push_str(&format!("resource={name}\n"));
    }
    out.push_str(&format!(
        "psql: PGPASSWORD={} psql \"host={} port={} user={} dbname={first}\"\n",
        user_token.token,
        pg_addr.ip(),
        pg_addr.port(),
        args.user
    ));
    out.push_str("ready\n");
    {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(out.as_bytes())?;
        stdout.flush()?;
    }
    tracing::info!(data_dir = %dir.display(), "countersign dev is ready");

    crate::shutdown_signal().await;
    let _ = stop_tx.send(true);
    if let Err(e) = gw_task.await {
        tracing::error!(error = %e, "gateway task failed");
    }
    // Let queued audit reach the store before the control plane stops.
    tokio::time::sleep(Duration::from_millis(300)).await;
    match cp_task.await {
        Ok(r) => r?,
        Err(e) => bail!("control plane task failed: {e}"),
    }
    Ok(ExitCode::SUCCESS)
}
