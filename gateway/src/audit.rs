//! Audit events as the gateway produces them, and the uploader that ships them.
//!
//! Sessions hand events to an [`AuditSink`] (a bounded in-memory queue) and
//! never wait on the network. The uploader batches them onto the control
//! plane's `PublishAudit` stream and resends a batch until it is acknowledged;
//! the control plane stores events idempotently by `(session_id, seq)`, so a
//! resend never doubles an event.
//!
//! Not guaranteed yet: the queue lives in memory, so events not yet
//! acknowledged are lost if the gateway process dies. When the queue is full,
//! sessions wait for room, so statements stop rather than run unaudited.

use crate::control::ControlClient;
use countersign_proto::v1 as pb;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Most events sent in one batch.
const BATCH_EVENTS: usize = 1_000;
/// How long the uploader waits to fill a batch once it has one event.
const BATCH_WAIT: Duration = Duration::from_millis(20);

/// One audited fact about a session.
#[derive(Clone, Debug)]
pub struct AuditEvent {
    pub session_id: Arc<str>,
    /// Per-session sequence; 0 is the session start.
    pub seq: u64,
    pub at: SystemTime,
    pub body: AuditBody,
}

#[derive(Clone, Debug)]
pub enum AuditBody {
    SessionStarted {
        identity: Arc<str>,
        resource: Arc<str>,
        database: String,
        client_address: String,
        application_name: String,
        tls: bool,
    },
    Statement(StatementEvent),
    SessionEnded {
        identity: Arc<str>,
        resource: Arc<str>,
        reason: String,
        statements: u64,
    },
}

/// Which sub-protocol carried a statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Simple,
    Extended,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Simple => "simple",
            Self::Extended => "extended",
        }
    }
}

#[derive(Clone, Debug)]
pub struct StatementEvent {
    pub identity: Arc<str>,
    pub resource: Arc<str>,
    pub statement: Arc<str>,
    pub kinds: Arc<[&'static str]>,
    pub protocol: Protocol,
    pub parameter_count: u32,
    pub duration: Duration,
    pub command_tag: Option<String>,
    pub rows: Option<u64>,
    pub error: Option<String>,
    pub decision: &'static str,
    pub rule: Option<String>,
    /// Values masked in the results, by rule and detector.
    pub masking: Option<crate::pg::mask::MaskStats>,
}

impl From<AuditEvent> for pb::AuditEvent {
    fn from(e: AuditEvent) -> Self {
        let at =
            e.at.duration_since(UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
                .unwrap_or(0);
        let event = match e.body {
            AuditBody::SessionStarted {
                identity,
                resource,
                database,
                client_address,
                application_name,
                tls,
            } => pb::audit_event::Event::SessionStarted(pb::SessionStarted {
                identity: identity.to_string(),
                resource: resource.to_string(),
                database,
                client_address,
                application_name,
                tls,
            }),
            AuditBody::Statement(s) => pb::audit_event::Event::Statement(pb::StatementExecuted {
                identity: s.identity.to_string(),
                resource: s.resource.to_string(),
                statement: s.statement.to_string(),
                kinds: s.kinds.iter().map(|k| (*k).to_owned()).collect(),
                protocol: s.protocol.as_str().to_owned(),
                parameter_count: s.parameter_count,
                duration_micros: u64::try_from(s.duration.as_micros()).unwrap_or(u64::MAX),
                command_tag: s.command_tag.unwrap_or_default(),
                rows: s.rows,
                error: s.error.unwrap_or_default(),
                decision: s.decision.to_owned(),
                rule: s.rule.unwrap_or_default(),
                masking: s.masking.map(|m| pb::MaskingSummary {
                    rules: m.by_rule.into_iter().collect(),
                    detectors: m
                        .by_detector
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect(),
                }),
            }),
            AuditBody::SessionEnded {
                identity,
                resource,
                reason,
                statements,
            } => pb::audit_event::Event::SessionEnded(pb::SessionEnded {
                identity: identity.to_string(),
                resource: resource.to_string(),
                reason,
                statements,
            }),
        };
        pb::AuditEvent {
            session_id: e.session_id.to_string(),
            seq: e.seq,
            at,
            event: Some(event),
        }
    }
}

/// Where sessions put their events. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AuditSink {
    tx: mpsc::Sender<AuditEvent>,
}

impl AuditSink {
    /// A sink and the receiving end for [`run_uploader`].
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<AuditEvent>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Self { tx }, rx)
    }

    /// Queues an event, waiting for room when the queue is full. Returns false
    /// only if the uploader is gone (the gateway is shutting down).
    pub async fn record(&self, event: AuditEvent) -> bool {
        self.tx.send(event).await.is_ok()
    }

    /// Events queued and not yet taken by the uploader.
    pub fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// Ships queued events to the control plane until the queue closes and drains.
pub async fn run_uploader(client: ControlClient, mut rx: mpsc::Receiver<AuditEvent>) {
    let mut batch_id = 0u64;
    let mut uploader = client.audit_uploader();
    loop {
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut events = Vec::with_capacity(64);
        events.push(pb::AuditEvent::from(first));
        let deadline = tokio::time::Instant::now() + BATCH_WAIT;
        while events.len() < BATCH_EVENTS {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(e)) => events.push(e.into()),
                Ok(None) | Err(_) => break,
            }
        }
        batch_id += 1;
        uploader
            .send_until_acked(pb::AuditBatch { batch_id, events })
            .await;
    }
}
