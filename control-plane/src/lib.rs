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
//! - [`grpc`]: `countersign.v1.GatewayService` for gateways (tonic).
//! - [`audit`]: audit checkpoint and retention jobs, verify, timelines, export.
//! - [`notify`]: review events sent to a signed webhook and to Slack.
//!
//! The control plane keeps no state of its own beyond the store, so any number
//! of replicas can serve the same database.

pub mod api;
pub mod audit;
pub mod bindings;
pub mod bus;
pub mod credentials;
pub mod grants;
pub mod grpc;
pub mod metrics;
pub mod notify;
pub mod replay;
pub mod reviews;
pub mod service;
pub mod store;
pub mod tokens;

pub use service::{ControlPlane, ServiceError, Settings};
pub use store::{Store, StoreError};

use std::future::Future;
use tokio::net::TcpListener;

/// Serves the HTTP API and the gateway gRPC service until `shutdown` resolves.
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
    let router = api::router(cp.clone());
    let http_task = axum::serve(http, router).with_graceful_shutdown(stopped());
    let grpc_task = tonic::transport::Server::builder()
        .add_service(grpc::service(cp))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(grpc),
            stopped(),
        );
    let servers = async {
        let (h, g) = tokio::join!(http_task, grpc_task);
        h?;
        g.map_err(std::io::Error::other)
    };
    // Gateways hold WatchConfig streams open indefinitely: after the shutdown
    // signal, give in-flight requests a grace period, then stop regardless.
    let deadline = async {
        shutdown.await;
        let _ = stop_tx.send(true);
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        r = servers => r,
        _ = deadline => {
            tracing::info!("grace period over; closing remaining streams");
            Ok(())
        }
    }
}

/// How long open requests get to finish after a shutdown signal.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);
