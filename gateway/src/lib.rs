//! The Countersign gateway.
//!
//! Terminates client connections, authenticates them against the control
//! plane, connects upstream with credentials only the gateway holds, and
//! relays the protocol while recording every statement.
//!
//! Layout: [`config`] (settings and upstreams), [`tls`] (rustls both ways),
//! [`control`] (the gRPC client: sessions, config watch, audit upload),
//! [`enroll`] (enrollment, the client certificate and its rotation),
//! [`audit`] (typed events, the durable spool and the uploader), [`pg`] (the PostgreSQL relay).
//!
//! The gateway keeps nothing that matters if it dies but its audit spool:
//! sessions end, the control plane holds identities, policy and the audit
//! trail, and a restart over the same spool uploads what was not yet acknowledged.

pub mod audit;
pub mod config;
pub mod control;
pub mod enroll;
pub mod metrics;
pub mod pg;
pub mod tls;

use config::{ControlPlaneAuth, GatewaySettings, Upstream};
use control::{ControlClient, RemoteConfig};
use countersign_proto::v1 as pb;
use std::collections::HashMap;
use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Control(#[from] control::ControlError),
    #[error(transparent)]
    Spool(#[from] audit::SpoolError),
    #[error("gateway enrollment: {0}")]
    Enroll(#[from] enroll::EnrollError),
    #[error("resource {0:?} is configured twice")]
    DuplicateResource(String),
}

/// A running gateway's shared parts. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

pub struct Inner {
    pub settings: GatewaySettings,
    pub control: ControlClient,
    pub audit: audit::AuditSink,
    pub config: watch::Receiver<Option<Arc<RemoteConfig>>>,
    pub cancels: pg::cancel::CancelRegistry,
    pub client_tls: Option<tokio_rustls::TlsAcceptor>,
    pub upstreams: HashMap<String, Arc<Upstream>>,
    pub upstream_tls: HashMap<String, Option<Arc<rustls::ClientConfig>>>,
    /// Upstream catalogs for masking, by resource and database.
    pub catalogs: Arc<pg::mask::catalog::CatalogCache>,
    /// Keys the `hash` mask style.
    pub mask_key: Arc<[u8]>,
    pub metrics: Arc<metrics::Metrics>,
}

impl Deref for Gateway {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl Gateway {
    /// Builds the gateway and starts its background tasks (config watch, audit
    /// upload, certificate rotation). With mutual TLS it first loads its
    /// certificate from the state directory, or enrolls when there is no
    /// valid one (so this waits for the control plane then). Must be called
    /// inside a Tokio runtime.
    pub async fn start(settings: GatewaySettings) -> Result<Self, GatewayError> {
        let client_tls = match &settings.tls {
            Some(t) => Some(tokio_rustls::TlsAcceptor::from(tls::server_config(
                &t.cert_path,
                &t.key_path,
            )?)),
            None => None,
        };
        let mut upstreams = HashMap::new();
        let mut upstream_tls = HashMap::new();
        for up in &settings.upstreams {
            let config = tls::upstream_config(up.sslmode, up.sslrootcert.as_deref())?;
            if upstreams
                .insert(up.name.clone(), Arc::new(up.clone()))
                .is_some()
            {
                return Err(GatewayError::DuplicateResource(up.name.clone()));
            }
            upstream_tls.insert(up.name.clone(), config);
        }
        let control = match &settings.control_plane_auth {
            ControlPlaneAuth::Token(token) => {
                ControlClient::new(&settings.control_plane_urls, token)?
            }
            ControlPlaneAuth::Enrolled(enrollment) => {
                let (control, identity) = enroll::establish(
                    &settings.control_plane_urls,
                    enrollment,
                    &settings.gateway_id,
                    &settings.environment,
                )
                .await?;
                enroll::spawn_rotation(control.clone(), enrollment.state_dir.clone(), identity);
                control
            }
        };
        let hello = pb::GatewayHello {
            gateway_id: settings.gateway_id.clone(),
            environment: settings.environment.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            resources: settings.upstreams.iter().map(|u| u.name.clone()).collect(),
        };
        let config = control::watch_config(control.clone(), hello);
        let metrics = Arc::new(metrics::Metrics::new());
        let audit = audit::AuditSink::start(
            settings.spool.clone(),
            control.clone(),
            metrics.audit_events_uploaded.clone(),
        )?;
        let mask_key: Arc<[u8]> = match &settings.mask_key {
            Some(k) => k.expose().as_bytes().into(),
            None => {
                use rand::RngCore;
                let mut key = [0u8; 32];
                rand::rng().fill_bytes(&mut key);
                key.as_slice().into()
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                control,
                audit,
                config,
                cancels: pg::cancel::CancelRegistry::default(),
                client_tls,
                upstreams,
                upstream_tls,
                catalogs: Arc::default(),
                mask_key,
                metrics,
            }),
        })
    }

    /// Brings the scrape-time gauges up to date.
    pub fn refresh_gauges(&self) {
        let m = &self.metrics;
        m.audit_spool_bytes
            .set(i64::try_from(self.audit.spooled_bytes()).unwrap_or(i64::MAX));
        m.audit_upload_lag_seconds
            .set(self.audit.upload_lag().as_secs_f64());
        if let Some(c) = self.config.borrow().as_ref() {
            m.policy_version
                .set(i64::try_from(c.policy_version).unwrap_or(i64::MAX));
        }
    }

    /// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until `shutdown`.
    pub async fn serve_metrics(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        metrics::serve(self.clone(), listener, shutdown).await;
    }

    /// Starts the session threads client sessions run on (`pg::threads`), as many as the
    /// settings' `session_threads`; returns once they are running.
    pub fn start_session_threads(&self) -> std::io::Result<pg::threads::SessionThreads> {
        pg::threads::SessionThreads::start(self, self.settings.session_threads)
    }

    /// Accepts PostgreSQL clients on `listener` until `shutdown` resolves; each session runs
    /// on one of `threads`. At shutdown the held audit outcomes are written; sessions still
    /// open run on until the process exits.
    pub async fn serve_pg(
        &self,
        threads: pg::threads::SessionThreads,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => {
                    self.audit.flush();
                    return;
                }
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => threads.dispatch(tcp, peer),
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
            }
        }
    }
}
