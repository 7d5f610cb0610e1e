//! Streaming the audit trail to a SIEM: every stored event, in arrival order,
//! POSTed in batches to a webhook, at least once, none skipped.
//!
//! Each `[[audit_stream]]` is one HTTP endpoint. A batch is up to `batch`
//! events as JSON lines (the shape of `GET /api/v1/audit/export`), sent as
//! `application/x-ndjson` with `X-Countersign-Signature: sha256=<hex>`
//! (HMAC-SHA256 of the body under the stream's secret), `X-Countersign-Stream`
//! (its name) and `X-Countersign-Events` (how many lines). Any 2xx answer
//! acknowledges the batch and the stream's cursor moves past it; anything else
//! (an error status, a timeout, a refused connection) is retried with the same
//! events, waiting 1 s and doubling up to a minute, for as long as it takes.
//! Events are never dropped: while the SIEM is down the cursor waits, and the
//! events wait in the store.
//!
//! Guaranteed: each event is delivered at least once, in arrival order
//! (`received_at`, then session and sequence), by one replica at a time (a
//! lease on the cursor, see [`crate::store::audit::stream`]), and the cursor
//! survives restarts. Events reach the SIEM `settle` (default 5 s) after they
//! are stored, which lets concurrent inserts commit first.
//!
//! Not guaranteed: exactly once. A batch the SIEM accepted whose
//! acknowledgement was lost, or a replica that stalled past its lease while
//! another took over, sends events again; every event carries its stable `id`
//! (`<session_id>:<seq>`) for the receiver to drop duplicates. Events removed
//! by the retention purge before they were streamed are not sent.

use crate::service::ControlPlane;
use crate::store::audit::stream::{ArrivalCursor, StreamLease};
use chrono::Utc;
use countersign_common::Secret;
use std::time::Duration;

/// Events per batch when not configured.
pub const DEFAULT_BATCH: u64 = 500;
/// Largest batch a stream may configure.
pub const MAX_BATCH: u64 = 5_000;
/// How far behind the clock a stream reads when not configured.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(5);
/// How long a replica's hold on a stream lasts without renewal.
const LEASE: Duration = Duration::from_secs(30);
/// Wait between polls when a stream has caught up, or is held elsewhere.
const POLL: Duration = Duration::from_secs(1);
/// First wait after a failed delivery; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Longest one delivery may take, connecting included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// One SIEM endpoint. Prints its URL by scheme and host only (a SIEM URL
/// may carry a token) and never its secret.
#[derive(Clone)]
pub struct AuditStreamSettings {
    /// Names the stream's cursor: renaming a stream starts it from the beginning.
    pub name: String,
    /// Where batches are POSTed. Logged by scheme and host only.
    pub url: String,
    pub secret: Secret<String>,
    pub batch: u64,
    pub settle: Duration,
}

impl std::fmt::Debug for AuditStreamSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditStreamSettings")
            .field("name", &self.name)
            .field("url", &crate::notify::redact(&self.url))
            .field("secret", &self.secret)
            .field("batch", &self.batch)
            .field("settle", &self.settle)
            .finish()
    }
}

/// What one round did.
#[derive(Debug, PartialEq, Eq)]
pub enum Round {
    /// A batch of this many events was delivered and acknowledged.
    Delivered(usize),
    /// Nothing new to send.
    CaughtUp,
    /// Another replica holds the stream.
    HeldElsewhere,
}

/// Why a round failed; it is retried.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("delivery: {0}")]
    Delivery(String),
}

impl ControlPlane {
    /// Starts one task per configured stream. Call once per process, inside
    /// the runtime; every replica may call it (the lease keeps one sender).
    pub fn start_audit_streams(&self) -> Result<(), StreamError> {
        if self.settings().audit_streams.is_empty() {
            return Ok(());
        }
        let client = stream_client()?;
        let holder = format!("replica-{}", uuid::Uuid::new_v4());
        for stream in self.settings().audit_streams.clone() {
            let (cp, client, holder) = (self.clone(), client.clone(), holder.clone());
            tokio::spawn(async move { run(cp, stream, client, holder).await });
        }
        Ok(())
    }

    /// One round of stream `s` for `holder`: take the lease, send the next
    /// batch, move the cursor. Public for tests, which drive rounds directly.
    pub async fn audit_stream_round(
        &self,
        s: &AuditStreamSettings,
        client: &reqwest::Client,
        holder: &str,
    ) -> Result<Round, StreamError> {
        let store = self.store();
        let Some(lease) = store
            .lease_audit_stream(&s.name, holder, lease_end())
            .await?
        else {
            return Ok(Round::HeldElsewhere);
        };
        let settle = chrono::Duration::from_std(s.settle).unwrap_or(chrono::Duration::zero());
        let page = store
            .audit_arrivals(lease.cursor.as_ref(), Utc::now() - settle, s.batch)
            .await?;
        let Some(last) = page.last().map(|(_, c)| c.clone()) else {
            return Ok(Round::CaughtUp);
        };
        let mut body = Vec::new();
        for (event, _) in &page {
            serde_json::to_writer(&mut body, event)
                .map_err(|e| StreamError::Delivery(e.to_string()))?;
            body.push(b'\n');
        }
        deliver(client, s, body, page.len()).await?;
        advance(self, s, holder, &lease, last, page.len()).await
    }
}

async fn advance(
    cp: &ControlPlane,
    s: &AuditStreamSettings,
    holder: &str,
    lease: &StreamLease,
    last: ArrivalCursor,
    sent: usize,
) -> Result<Round, StreamError> {
    match cp
        .store()
        .advance_audit_stream(&s.name, holder, lease, last, lease_end())
        .await?
    {
        Some(_) => Ok(Round::Delivered(sent)),
        None => {
            tracing::warn!(
                stream = %s.name,
                "audit stream lease lost during a delivery; another replica goes on (the batch may arrive twice)"
            );
            Ok(Round::HeldElsewhere)
        }
    }
}

fn lease_end() -> chrono::DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(LEASE).unwrap_or(chrono::Duration::seconds(30))
}

/// The HTTP client streams use: bounded attempts, no redirects (a redirect
/// would send the signed batch somewhere nobody configured).
pub fn stream_client() -> Result<reqwest::Client, StreamError> {
    // reqwest panics without a provider; refuse instead.
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        return Err(StreamError::Delivery(
            "no TLS crypto provider is installed".to_owned(),
        ));
    }
    reqwest::Client::builder()
        .timeout(ATTEMPT_TIMEOUT)
        .connect_timeout(ATTEMPT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("countersign/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| StreamError::Delivery(e.without_url().to_string()))
}

async fn deliver(
    client: &reqwest::Client,
    s: &AuditStreamSettings,
    body: Vec<u8>,
    events: usize,
) -> Result<(), StreamError> {
    let signature = crate::notify::signature(s.secret.expose().as_bytes(), &body)
        .map_err(|e| StreamError::Delivery(e.to_string()))?;
    let response = client
        .post(&s.url)
        .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
        .header("X-Countersign-Signature", signature)
        .header("X-Countersign-Stream", &s.name)
        .header("X-Countersign-Events", events.to_string())
        .body(body)
        .send()
        .await
        .map_err(|e| StreamError::Delivery(e.without_url().to_string()))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(StreamError::Delivery(format!(
            "the endpoint answered {status}"
        )))
    }
}

/// Delivers stream `s` for as long as the process runs.
async fn run(cp: ControlPlane, s: AuditStreamSettings, client: reqwest::Client, holder: String) {
    let target = crate::notify::redact(&s.url);
    let mut backoff = FIRST_BACKOFF;
    loop {
        match cp.audit_stream_round(&s, &client, &holder).await {
            Ok(Round::Delivered(n)) => {
                backoff = FIRST_BACKOFF;
                cp.metrics().audit_streamed.inc_by(n as u64);
                tracing::debug!(stream = %s.name, events = n, "audit batch streamed");
                // A full batch means more may be waiting: go on at once.
                if (n as u64) < s.batch {
                    tokio::time::sleep(POLL).await;
                }
            }
            Ok(Round::CaughtUp | Round::HeldElsewhere) => {
                backoff = FIRST_BACKOFF;
                tokio::time::sleep(POLL).await;
            }
            Err(e) => {
                cp.metrics().audit_stream_failures.inc();
                tracing::warn!(stream = %s.name, %target, error = %e, retry_in = ?backoff,
                    "audit stream delivery failed; the batch will be sent again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
