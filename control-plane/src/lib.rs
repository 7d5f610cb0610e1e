//! The Countersign control plane: the authority that gateways ask.
//!
//! Layout:
//! - [`store`]: sea-orm store on PostgreSQL or SQLite (identities, resources,
//!   tokens, sessions, audit).
//! - [`tokens`]: EdDSA-signed, short-lived, revocable access tokens.
//! - [`service`]: [`ControlPlane`], the business rules every front end calls.
//! - [`credentials`]: service-account API keys and workload (CI OIDC) tokens
//!   exchanged for access tokens.
//! - [`bindings`]: role bindings (requester, approver, admin, auditor) on
//!   resource and environment globs, from the API or from the policy.
//! - [`reviews`]: per-statement reviews, with segregation of duties enforced
//!   in the service and in the database.
//! - [`api`]: the admin HTTP API under `/api/v1` (axum), with its OpenAPI document.
//! - [`console`]: the web console (server-rendered pages from `web/`).
//! - [`grpc`]: `countersign.v1.GatewayService` for gateways (tonic).
//! - [`enrollment`]: the gateway CA, one-time enrollment tokens and mutual TLS.
//! - [`audit`]: audit checkpoint and retention jobs, verify, timelines, export.
//! - [`audit_stream`]: the audit trail streamed to a SIEM webhook, at least once.
//! - [`notify`]: review events sent to a signed webhook and to Slack.
//! - [`sso`]: OpenID Connect sign-in, console sessions with CSRF tokens, and
//!   the CLI's loopback login.
//!
//! The control plane keeps no state of its own beyond the store, so any number
//! of replicas can serve the same database.

pub mod api;
pub mod audit;
pub mod audit_stream;
pub mod bindings;
pub mod bus;
pub mod console;
pub mod credentials;
pub mod enrollment;
pub mod grants;
pub mod grpc;
pub mod metrics;
pub mod notify;
pub mod replay;
pub mod reviews;
pub mod service;
pub mod sso;
pub mod store;
pub mod tokens;

pub use service::{ControlPlane, ServiceError, Settings};
pub use store::{Store, StoreError};

use std::future::Future;
use tokio::net::TcpListener;

/// Serves the HTTP API and the gateway gRPC service until `shutdown` resolves,
/// then drains:
/// 1. the replica marks itself draining: `/readyz` answers 503, new gateway
///    calls get `UNAVAILABLE`, and open gateway streams (`WatchConfig`,
///    `WatchReview`, `PublishAudit` between batches) end with `UNAVAILABLE`,
///    so gateways reconnect to another replica;
/// 2. both listeners stop accepting connections, and HTTP/2 connections are
///    told (GOAWAY) to open no new streams;
/// 3. requests already running finish, for at most
///    [`Settings::shutdown_grace`](crate::Settings::shutdown_grace); then it
///    returns regardless.
pub async fn serve(
    cp: ControlPlane,
    http: TcpListener,
    grpc: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), std::io::Error> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let grace = cp.settings().shutdown_grace;
    let router = api::router(cp.clone());
    let http_task = axum::serve(http, router).with_graceful_shutdown(stopped());
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = grpc::server_tls(&cp).map_err(std::io::Error::other)? {
        builder = builder.tls_config(tls).map_err(std::io::Error::other)?;
    }
    let grpc_task = builder
        .trace_fn(grpc::request_span)
        .add_service(grpc::service(cp.clone()))
        .add_service(grpc::enrollment_service(cp.clone()))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(grpc),
            stopped(),
        );
    let servers = async {
        let (h, g) = tokio::join!(http_task, grpc_task);
        h?;
        g.map_err(std::io::Error::other)
    };
    let deadline = async {
        shutdown.await;
        tracing::info!(grace = ?grace, "draining: ending gateway streams, finishing requests in flight");
        cp.start_draining();
        let _ = stop_tx.send(true);
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        r = servers => {
            tracing::info!("drained");
            r
        }
        _ = deadline => {
            tracing::warn!("grace period over; closing the requests still running");
            Ok(())
        }
    }
}
