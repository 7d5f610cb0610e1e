//! Change events between control-plane replicas, over Redis pub/sub.
//!
//! A replica that changes something gateways wait on (a review's state, the
//! config: resources, revocations, policy) wakes its own watchers at once and
//! publishes the change; every replica's subscriber wakes its watchers too,
//! so the replica that holds a gateway's `WatchReview` stream reacts within
//! milliseconds whichever replica took the decision.
//!
//! Redis carries only "X changed", never state: state lives in PostgreSQL and
//! watchers re-read it. If Redis is down, publishing fails quietly and the
//! watchers' periodic re-reads (every 500 ms) take over: latency degrades,
//! nothing is lost.

use crate::service::ControlPlane;
use futures_util::StreamExt;
use std::time::Duration;

/// The pub/sub channel all replicas share.
pub const CHANNEL: &str = "countersign:changes";
const CONFIG: &str = "config";
const REVIEW_PREFIX: &str = "review:";
/// Longest a publish may take before it is abandoned (the watchers' polling covers it).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);

/// What changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Config,
    Review(String),
}

impl Change {
    fn encode(&self) -> String {
        match self {
            Self::Config => CONFIG.to_owned(),
            Self::Review(id) => format!("{REVIEW_PREFIX}{id}"),
        }
    }

    fn decode(payload: &str) -> Option<Self> {
        if payload == CONFIG {
            Some(Self::Config)
        } else {
            payload
                .strip_prefix(REVIEW_PREFIX)
                .filter(|id| !id.is_empty())
                .map(|id| Self::Review(id.to_owned()))
        }
    }
}

/// Publishes `change` to the other replicas, in the background.
pub fn publish(client: &redis::Client, change: &Change) {
    let client = client.clone();
    let payload = change.encode();
    tokio::spawn(async move {
        let attempt = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("PUBLISH")
                .arg(CHANNEL)
                .arg(&payload)
                .query_async::<i64>(&mut conn)
                .await
        };
        match tokio::time::timeout(PUBLISH_TIMEOUT, attempt).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "change not published; replicas will poll"),
            Err(_) => tracing::debug!("change publish timed out; replicas will poll"),
        }
    });
}

/// Follows the channel for as long as the control plane runs, reconnecting
/// with backoff, and wakes this replica's watchers for every change.
pub async fn subscribe(cp: ControlPlane, client: redis::Client) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(CHANNEL).await {
                Ok(()) => {
                    tracing::info!("following replica changes on Redis");
                    backoff = Duration::from_millis(200);
                    let mut messages = pubsub.on_message();
                    while let Some(msg) = messages.next().await {
                        let Ok(payload) = msg.get_payload::<String>() else {
                            continue;
                        };
                        match Change::decode(&payload) {
                            Some(Change::Config) => cp.notify_config_locally(),
                            Some(Change::Review(id)) => cp.notify_review_locally(&id),
                            None => tracing::debug!(%payload, "unknown change message"),
                        }
                    }
                    tracing::warn!("Redis subscription ended; polling until it is back");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot subscribe on Redis; polling meanwhile")
                }
            },
            Err(e) => tracing::warn!(error = %e, "Redis unreachable; polling meanwhile"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_round_trip() {
        for c in [Change::Config, Change::Review("01abc".into())] {
            assert_eq!(Change::decode(&c.encode()), Some(c));
        }
        assert_eq!(Change::decode("review:"), None);
        assert_eq!(Change::decode("nonsense"), None);
    }
}
