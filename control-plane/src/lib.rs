//! The Countersign control plane: the authority that gateways ask.
//!
//! Layout:
//! - [`store`]: sea-orm store on PostgreSQL or SQLite (identities, resources,
//!   tokens, sessions, audit).
//! - [`tokens`]: EdDSA-signed, short-lived, revocable access tokens.
//! - [`service`]: [`ControlPlane`], the business rules every front end calls.
//! - [`api`]: the admin HTTP API under `/api/v1` (axum), with its OpenAPI document.
//! - [`grpc`]: `countersign.v1.GatewayService` for gateways (tonic).
//!
//! The control plane keeps no state of its own beyond the store, so any number
//! of replicas can serve the same database.

pub mod api;
pub mod grpc;
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
    let http_stop = {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let grpc_stop = {
        let mut rx = stop_rx;
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let router = api::router(cp.clone());
    let http_task = axum::serve(http, router).with_graceful_shutdown(http_stop);
    let grpc_task = tonic::transport::Server::builder()
        .add_service(grpc::service(cp))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(grpc),
            grpc_stop,
        );
    let (h, g) = tokio::join!(http_task, grpc_task);
    h?;
    g.map_err(std::io::Error::other)?;
    Ok(())
}
