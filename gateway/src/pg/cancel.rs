//! CancelRequest routing.
//!
//! A client never sees the upstream's backend key. Each session gets a random
//! gateway key, and [`CancelRegistry`] maps it to the upstream connection's
//! real key, so a cancel that arrives on a new client connection is forwarded
//! to the right upstream backend. A cancel with an unknown key is dropped
//! silently, as PostgreSQL does, so a caller cannot probe for live keys.

use super::stream::Conn;
use super::wire::startup;
use crate::config::Upstream;
use bytes::BytesMut;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;

/// Where to send a cancel for one session.
#[derive(Clone)]
pub struct CancelTarget {
    pub upstream: Arc<Upstream>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub process_id: i32,
    pub secret_key: i32,
}

#[derive(Clone, Default)]
pub struct CancelRegistry {
    map: Arc<Mutex<HashMap<(i32, i32), CancelTarget>>>,
}

/// Removes the session's key from the registry when dropped.
pub struct CancelKey {
    registry: CancelRegistry,
    pub process_id: i32,
    pub secret_key: i32,
}

impl Drop for CancelKey {
    fn drop(&mut self) {
        if let Ok(mut map) = self.registry.map.lock() {
            map.remove(&(self.process_id, self.secret_key));
        }
    }
}

impl CancelRegistry {
    /// Registers a target under a fresh random key.
    pub fn register(&self, target: CancelTarget) -> CancelKey {
        loop {
            let key: (i32, i32) = (rand::random::<i32>() & 0x7fff_ffff, rand::random());
            let Ok(mut map) = self.map.lock() else {
                // A poisoned lock only means another thread panicked mid-insert;
                // the map itself is still consistent for our purposes.
                return CancelKey {
                    registry: self.clone(),
                    process_id: key.0,
                    secret_key: key.1,
                };
            };
            if let std::collections::hash_map::Entry::Vacant(e) = map.entry(key) {
                e.insert(target);
                return CancelKey {
                    registry: self.clone(),
                    process_id: key.0,
                    secret_key: key.1,
                };
            }
        }
    }

    fn lookup(&self, process_id: i32, secret_key: i32) -> Option<CancelTarget> {
        self.map
            .lock()
            .ok()?
            .get(&(process_id, secret_key))
            .cloned()
    }

    /// Forwards a client's cancel to the matching upstream backend, if any.
    pub async fn cancel(&self, process_id: i32, secret_key: i32) {
        let Some(target) = self.lookup(process_id, secret_key) else {
            tracing::debug!("cancel request with an unknown key ignored");
            return;
        };
        if let Err(e) = send_cancel(&target).await {
            tracing::warn!(error = %e, upstream = %target.upstream.name, "cancel could not be forwarded");
        }
    }
}

async fn send_cancel(target: &CancelTarget) -> Result<(), super::upstream::UpstreamError> {
    let mut conn: Conn =
        super::upstream::open_transport(&target.upstream, target.tls.as_ref()).await?;
    let mut buf = BytesMut::with_capacity(16);
    startup::encode_cancel_request(target.process_id, target.secret_key, &mut buf);
    conn.write_all(&buf).await?;
    conn.flush().await?;
    // The server closes the connection once it has read the request.
    let _ = conn.shutdown().await;
    Ok(())
}
