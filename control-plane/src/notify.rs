//! Notifications of review and grant events to outside systems: a generic
//! signed webhook and Slack incoming webhooks.
//!
//! Events: `review.opened` (a new pending review), and the three outcomes
//! `review.approved`, `review.denied`, `review.expired`; for grants,
//! `grant.requested`, `grant.approved`, `grant.denied`, `grant.expired` and
//! `grant.revoked`. A partial approval (still pending) is not an event. The
//! webhook body holds the review under `review`, a grant under `grant`.
//!
//! Each configured target gets its own queue and background task, so a slow
//! or failing target never blocks the request that caused the event, nor the
//! other targets, and one target sees the events of this replica in the order
//! they happened. A delivery is retried with exponential backoff
//! ([`ATTEMPTS`] attempts, [`FIRST_RETRY_DELAY`] doubling) on network errors,
//! 5xx and 429; any other answer ends it. Retries send the same bytes, with
//! the same `delivery_id` and signature, so receivers can drop duplicates.
//!
//! Not guaranteed: delivery itself. Notifications are best effort: a queue
//! that is full ([`QUEUE_LEN`]) drops new events, and queued events die with
//! the process. Each replica announces the changes made through it, so events
//! are not duplicated across replicas, but their order across replicas is not
//! kept. Expiry is noticed when a review is next read (the gateway watching it
//! does so every few hundred milliseconds), not at the exact deadline. The
//! store, not a notification, is the record of what happened.
//!
//! Secrets: the webhook secret and a target's URL (a Slack webhook URL is a
//! credential) are never logged; logs name a target by scheme and host only.
//!
//! Layout: this file holds the targets, the queues and the delivery loop;
//! [`message`] builds what is sent (webhook body and signature, Slack text).

mod message;

pub use message::{SLACK_STATEMENT_CHARS, signature, slack_text};
pub(crate) use message::{escape, one_line};

use crate::reviews::ReviewView;
use crate::store::reviews::ReviewStatus;
use countersign_common::Secret;
use reqwest::StatusCode;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Attempts per delivery, the first included.
pub const ATTEMPTS: u32 = 5;
/// Wait before the second attempt; it doubles before each further one
/// (0.5 s, 1 s, 2 s, 4 s).
pub const FIRST_RETRY_DELAY: Duration = Duration::from_millis(500);
/// Events waiting per target before new ones are dropped.
pub const QUEUE_LEN: usize = 256;
/// Shortest webhook secret accepted.
pub const MIN_SECRET_LEN: usize = 16;
/// Longest one attempt may take, connecting included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where review events are sent.
#[derive(Clone, PartialEq, Eq)]
pub enum NotificationTarget {
    /// A JSON POST signed with HMAC-SHA256 of the body under `secret`
    /// (header `X-Countersign-Signature: sha256=<hex>`).
    Webhook { url: String, secret: Secret<String> },
    /// A Slack incoming webhook: `{"text": "..."}`.
    Slack { url: String },
}

impl NotificationTarget {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Webhook { .. } => "webhook",
            Self::Slack { .. } => "slack",
        }
    }

    pub fn url(&self) -> &str {
        match self {
            Self::Webhook { url, .. } | Self::Slack { url } => url,
        }
    }

    /// Checks the URL (absolute, http or https) and the webhook secret
    /// (at least [`MIN_SECRET_LEN`] characters).
    pub fn validate(&self) -> Result<(), NotifyError> {
        check_url(self.url())?;
        match self {
            Self::Webhook { secret, .. } => check_secret(secret),
            Self::Slack { .. } => Ok(()),
        }
    }
}

/// A target URL must be absolute, `http://` or `https://`, with a host.
pub fn check_url(url: &str) -> Result<(), NotifyError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(()),
        _ => Err(NotifyError::Url),
    }
}

/// A webhook secret must have at least [`MIN_SECRET_LEN`] characters.
pub fn check_secret(secret: &Secret<String>) -> Result<(), NotifyError> {
    if secret.expose().chars().count() < MIN_SECRET_LEN {
        Err(NotifyError::ShortSecret)
    } else {
        Ok(())
    }
}

/// Shows the kind and the URL's origin only: the path of a Slack webhook URL
/// is its credential, and the secret never prints.
impl fmt::Debug for NotificationTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.kind(), redact(self.url()))
    }
}

/// `scheme://host[:port]/…` for logs: never the path, query or user info.
pub fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(host), Some(port)) => format!("{}://{host}:{port}/…", u.scheme()),
            (Some(host), None) => format!("{}://{host}/…", u.scheme()),
            (None, _) => "<url>".to_owned(),
        },
        Err(_) => "<url>".to_owned(),
    }
}

/// Why notifications could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("the url must be an absolute http:// or https:// URL")]
    Url,
    #[error("the webhook secret must be at least {MIN_SECRET_LEN} characters")]
    ShortSecret,
    #[error("no TLS crypto provider is installed (the binary installs ring at start)")]
    NoCryptoProvider,
    #[error("building the HTTP client: {0}")]
    Client(String),
    #[error("encoding the notification: {0}")]
    Encode(String),
}

/// A review event that is announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Opened,
    Approved,
    Denied,
    Expired,
}

impl Event {
    /// `review.opened` and so on: the webhook's `event` and `X-Countersign-Event`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Opened => "review.opened",
            Self::Approved => "review.approved",
            Self::Denied => "review.denied",
            Self::Expired => "review.expired",
        }
    }

    /// The event for a review that has just changed to `status`: `None` while
    /// it is still pending (a new review is [`Event::Opened`], said by the caller).
    pub fn outcome(status: ReviewStatus) -> Option<Self> {
        match status {
            ReviewStatus::Pending => None,
            ReviewStatus::Approved => Some(Self::Approved),
            ReviewStatus::Denied => Some(Self::Denied),
            ReviewStatus::Expired => Some(Self::Expired),
        }
    }
}

/// Whether an answer is worth another attempt: server errors and rate limits.
pub fn retryable(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

/// One event for one target's queue, built once for every target.
#[derive(Debug)]
pub(crate) struct Notice {
    /// `review.opened`, `grant.approved`, ...
    event: &'static str,
    /// The webhook body's key for `body`: `review` or `grant`.
    key: &'static str,
    id: String,
    body: serde_json::Value,
    /// The Slack line.
    text: String,
}

impl Notice {
    pub(crate) fn new(
        event: &'static str,
        key: &'static str,
        id: &str,
        body: &impl serde::Serialize,
        text: String,
    ) -> Self {
        Self {
            event,
            key,
            id: id.to_owned(),
            body: serde_json::to_value(body).unwrap_or(serde_json::Value::Null),
            text,
        }
    }
}

/// One target's queue.
#[derive(Debug)]
struct Queue {
    target: String,
    tx: mpsc::Sender<Arc<Notice>>,
}

/// Hands review events to each target's delivery task. With no targets it
/// does nothing and costs nothing.
#[derive(Debug, Default)]
pub struct Notifier {
    queues: Vec<Queue>,
}

impl Notifier {
    /// Validates `targets` and starts one delivery task per target; the tasks
    /// end when the notifier is dropped. Call inside the Tokio runtime.
    pub fn new(targets: &[NotificationTarget]) -> Result<Self, NotifyError> {
        if targets.is_empty() {
            return Ok(Self::default());
        }
        for t in targets {
            t.validate()?;
        }
        // reqwest panics without a provider; refuse to start instead.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            return Err(NotifyError::NoCryptoProvider);
        }
        let client = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            // A redirect would re-send the signed body somewhere nobody configured.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("countersign/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| NotifyError::Client(e.without_url().to_string()))?;
        let queues = targets
            .iter()
            .map(|t| {
                let (tx, rx) = mpsc::channel(QUEUE_LEN);
                tokio::spawn(run(client.clone(), t.clone(), rx));
                Queue {
                    target: format!("{t:?}"),
                    tx,
                }
            })
            .collect();
        Ok(Self { queues })
    }

    pub fn is_enabled(&self) -> bool {
        !self.queues.is_empty()
    }

    /// Queues `event` for every target; never waits.
    pub fn send(&self, event: Event, review: &ReviewView) {
        if self.queues.is_empty() {
            return;
        }
        self.send_notice(Notice::new(
            event.as_str(),
            "review",
            &review.id,
            review,
            slack_text(event, review),
        ));
    }

    /// Queues a built notice for every target; never waits.
    pub(crate) fn send_notice(&self, notice: Notice) {
        if self.queues.is_empty() {
            return;
        }
        let (event, id) = (notice.event, notice.id.clone());
        let notice = Arc::new(notice);
        for q in &self.queues {
            match q.tx.try_send(notice.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => tracing::warn!(
                    endpoint = %q.target, event, %id,
                    "notification queue full; event dropped"
                ),
                Err(mpsc::error::TrySendError::Closed(_)) => tracing::warn!(
                    endpoint = %q.target, event, %id,
                    "notification task has stopped; event dropped"
                ),
            }
        }
    }
}

/// One target's delivery task: its events, one at a time, in order.
async fn run(
    client: reqwest::Client,
    target: NotificationTarget,
    mut rx: mpsc::Receiver<Arc<Notice>>,
) {
    while let Some(notice) = rx.recv().await {
        deliver(&client, &target, &notice).await;
    }
}

/// A request error with its causes, without the URL (it may be the credential).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// What one attempt came to.
enum Outcome {
    Delivered,
    Retry(String),
    GiveUp(StatusCode),
}

async fn deliver(client: &reqwest::Client, target: &NotificationTarget, notice: &Notice) {
    let event = notice.event;
    let review = &notice.id;
    let delivery_id = uuid::Uuid::new_v4();
    let built = match target {
        NotificationTarget::Webhook { secret, .. } => {
            message::webhook(notice.event, notice.key, &notice.body, delivery_id, secret)
        }
        NotificationTarget::Slack { .. } => message::slack(&notice.text),
    };
    let (body, headers) = match built {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(endpoint = ?target, event, %review, error = %e, "cannot build notification");
            return;
        }
    };
    let mut delay = FIRST_RETRY_DELAY;
    for attempt in 1..=ATTEMPTS {
        let mut request = client
            .post(target.url())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone());
        for (name, value) in &headers {
            request = request.header(*name, value);
        }
        let outcome = match request.send().await {
            Ok(res) if res.status().is_success() => Outcome::Delivered,
            Ok(res) if retryable(res.status()) => Outcome::Retry(res.status().to_string()),
            Ok(res) => Outcome::GiveUp(res.status()),
            Err(e) => Outcome::Retry(describe(e)),
        };
        match outcome {
            Outcome::Delivered => {
                tracing::debug!(endpoint = ?target, event, %review, %delivery_id, attempt, "notification delivered");
                return;
            }
            Outcome::GiveUp(status) => {
                tracing::warn!(endpoint = ?target, event, %review, %delivery_id, attempt, %status, "notification refused; not retried");
                return;
            }
            Outcome::Retry(reason) if attempt < ATTEMPTS => {
                tracing::debug!(endpoint = ?target, event, %review, %delivery_id, attempt, %reason, "notification failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Outcome::Retry(reason) => {
                tracing::warn!(endpoint = ?target, event, %review, %delivery_id, attempt, %reason, "notification failed; giving up");
            }
        }
    }
}
