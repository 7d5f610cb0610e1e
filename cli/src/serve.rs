//! `countersign control-plane` and `countersign gateway`.

use crate::config::{ControlPlaneConfig, GatewayConfig};
use anyhow::Context;
use clap::Args;
use countersign_common::{Secret, parse_duration};
use countersign_control_plane::store::audit::chain::AuditKey;
use countersign_control_plane::store::resources::ResourceSpec;
use countersign_control_plane::{ControlPlane, Settings, Store};
use countersign_gateway::audit::SpoolSettings;
use countersign_gateway::config::{
    ClientTls, ControlPlaneAuth, EnrollmentSettings, GatewaySettings, Upstream,
};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio::net::TcpListener;

#[derive(Args)]
pub struct ConfigArg {
    /// TOML config file.
    #[arg(long, env = "COUNTERSIGN_CONFIG")]
    pub config: PathBuf,
}

pub async fn control_plane(args: ConfigArg) -> anyhow::Result<ExitCode> {
    let cfg: ControlPlaneConfig = crate::config::load(&args.config, ControlPlaneConfig::FIELDS)?;
    cfg.validate()?;
    let audit_key = match &cfg.audit_key_file {
        Some(path) => Some(
            AuditKey::from_hex(
                &std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?,
            )
            .with_context(|| format!("audit_key_file {}", path.display()))?,
        ),
        None => None,
    };
    let store = Store::connect_with_audit_key(cfg.database_url.expose(), audit_key)
        .await
        .context("connecting to the store")?;
    // With [grpc_tls] no gateway token exists: the empty one is refused by the
    // service, which checks client certificates instead.
    let gateway_token = cfg
        .gateway_token
        .clone()
        .unwrap_or_else(|| Secret::new(String::new()));
    let mut settings = Settings::new(cfg.admin_token.clone(), gateway_token);
    if let Some(tls) = &cfg.grpc_tls {
        settings.gateway_tls = Some(tls.settings()?);
    }
    settings.default_token_ttl =
        parse_duration(&cfg.default_token_ttl).map_err(anyhow::Error::msg)?;
    settings.max_token_ttl = parse_duration(&cfg.max_token_ttl).map_err(anyhow::Error::msg)?;
    settings.redis_url = cfg.redis_url.clone();
    settings.public_url = cfg.public_url();
    settings.oidc = match &cfg.oidc {
        Some(oidc) => Some(oidc.settings(&settings.public_url)?),
        None => None,
    };
    settings.notifications = cfg.notification_targets()?;
    settings.audit_streams = cfg.audit_stream_settings()?;
    settings.audit_checkpoint_interval =
        parse_duration(&cfg.audit_checkpoint_interval).map_err(anyhow::Error::msg)?;
    settings.shutdown_grace = parse_duration(&cfg.shutdown_grace).map_err(anyhow::Error::msg)?;
    for r in &cfg.resources {
        if let Some(keep) = &r.audit_retention {
            let keep = parse_duration(keep).map_err(anyhow::Error::msg)?;
            settings.audit_retention.push((r.name.clone(), keep));
        }
    }
    if let Some(path) = &cfg.signing_key_file {
        let pem =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        settings.signing_key_pem = Some(Secret::new(pem));
    }
    let cp = ControlPlane::new(store, settings)
        .await
        .context("starting the control plane")?;
    cp.start_bus();
    cp.start_audit_jobs();
    cp.start_audit_streams()
        .context("starting the audit streams")?;
    for r in &cfg.resources {
        cp.upsert_resource(&ResourceSpec {
            name: r.name.clone(),
            kind: r.kind.clone(),
            environment: r.environment.clone(),
            strict_audit: r.strict_audit,
        })
        .await?;
    }
    let http = TcpListener::bind(cfg.http_addr)
        .await
        .with_context(|| format!("binding {}", cfg.http_addr))?;
    let grpc = TcpListener::bind(cfg.grpc_addr)
        .await
        .with_context(|| format!("binding {}", cfg.grpc_addr))?;
    tracing::info!(http = %http.local_addr()?, grpc = %grpc.local_addr()?, "control plane listening");
    countersign_control_plane::serve(cp, http, grpc, crate::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

pub async fn gateway(args: ConfigArg) -> anyhow::Result<ExitCode> {
    let cfg: GatewayConfig = crate::config::load(&args.config, GatewayConfig::FIELDS)?;
    cfg.validate()?;
    let upstreams = cfg
        .upstreams
        .iter()
        .map(|u| Upstream::parse(u.url.expose(), &u.name).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let control_plane_urls = cfg.control_plane_urls();
    let settings = GatewaySettings {
        gateway_id: cfg.gateway_id,
        environment: cfg.environment,
        control_plane_urls,
        control_plane_auth: match cfg.gateway_token {
            Some(token) => ControlPlaneAuth::Token(token),
            None => ControlPlaneAuth::Enrolled(EnrollmentSettings {
                state_dir: cfg.state_dir,
                enrollment_token: cfg.enrollment_token,
                enrollment_token_file: cfg.enrollment_token_file,
                control_plane_ca: cfg
                    .control_plane_ca
                    .context("control_plane_ca is required for mutual TLS")?,
            }),
        },
        pg_addr: cfg.pg_addr,
        require_tls: cfg.require_tls.unwrap_or(cfg.tls.is_some()),
        tls: cfg.tls.map(|t| ClientTls {
            cert_path: t.cert_file,
            key_path: t.key_file,
        }),
        upstreams,
        handshake_timeout: Duration::from_secs(cfg.handshake_timeout_secs),
        spool: SpoolSettings::new(
            cfg.spool_dir,
            cfg.spool_max_bytes,
            Duration::from_millis(cfg.spool_fsync_interval_ms),
        ),
        review_timeout: Duration::from_secs(cfg.review_timeout_secs),
        mask_key: cfg.mask_key,
        session_threads: cfg.session_threads,
    };
    let listener = TcpListener::bind(settings.pg_addr)
        .await
        .with_context(|| format!("binding {}", settings.pg_addr))?;
    let metrics = match cfg.metrics_addr {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?,
        ),
        None => None,
    };
    let gw = countersign_gateway::Gateway::start(settings).await?;
    let threads = gw
        .start_session_threads()
        .context("starting the session threads")?;
    if let Some(listener) = metrics {
        tracing::info!(metrics = %listener.local_addr()?, "gateway metrics listening");
        let gw = gw.clone();
        tokio::spawn(async move { gw.serve_metrics(listener, crate::shutdown_signal()).await });
    }
    tracing::info!(pg = %listener.local_addr()?, "gateway listening");
    gw.serve_pg(threads, listener, crate::shutdown_signal())
        .await;
    Ok(ExitCode::SUCCESS)
}
