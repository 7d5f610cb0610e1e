//! Audit events as the gateway produces them, the durable spool they go
//! through, and the uploader that ships them.
//!
//! Sessions hand events to an [`AuditSink`], which appends them to the spool
//! (`spool`: segment files, group-committed fsync, bounded) and never waits on
//! the network. A statement is spooled twice: an *intent* before it is
//! forwarded upstream, and its *final* event (same `(session_id, seq)`) when
//! it completes. The uploader (`upload`) reads the spool, sends finals in
//! batches on the control plane's `PublishAudit` stream, resends until
//! acknowledged, and deletes a segment once all of it is. The control plane
//! stores events idempotently by `(session_id, seq)`, so a resend never
//! doubles an event. See docs/audit.md ("The gateway's spool").

pub mod record;
pub mod spool;
mod upload;

use crate::control::ControlClient;
use countersign_proto::v1 as pb;
use record::Kind;
pub use spool::{Admit, Spool, SpoolError, SpoolSettings};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
pub use upload::ORPHAN_ERROR;

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

/// `t` in microseconds since the Unix epoch, as audit events carry it (0 before the epoch).
pub(crate) fn unix_us(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

impl From<AuditEvent> for pb::AuditEvent {
    fn from(e: AuditEvent) -> Self {
        let at = unix_us(e.at);
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

/// Where sessions put their events: the durable spool. Cheap to clone.
#[derive(Clone)]
pub struct AuditSink {
    spool: Arc<Spool>,
    progress: Arc<upload::Progress>,
}

impl AuditSink {
    /// Opens the spool and starts its fsync task and the uploader. Must be
    /// called inside a Tokio runtime.
    /// `uploaded` counts the events the control plane acknowledges.
    pub fn start(
        settings: SpoolSettings,
        client: ControlClient,
        uploaded: prometheus_client::metrics::counter::Counter,
    ) -> Result<Self, SpoolError> {
        let spool = Spool::open(settings)?;
        let progress = Arc::new(upload::Progress {
            uploaded,
            waiting_since_us: Default::default(),
        });
        tokio::spawn(spool.clone().run_fsync());
        tokio::spawn(upload::run(spool.clone(), client, progress.clone()));
        Ok(Self { spool, progress })
    }

    /// How long the oldest event waiting for the control plane's acknowledgement
    /// has waited (zero when none waits).
    pub fn upload_lag(&self) -> Duration {
        self.progress.lag()
    }

    /// Spools an event that completes admitted work (a session's start or end, a
    /// denial): written at once, even when the spool is full.
    /// Returns false if it could not be written (logged).
    pub async fn record(&self, event: AuditEvent) -> bool {
        let (session, seq) = (event.session_id.clone(), event.seq);
        match self.spool.append(Kind::Final, &event.into(), Admit::Always) {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(%session, seq, error = %e, "audit event lost: cannot write it to the spool");
                false
            }
        }
    }

    /// Spools a statement's outcome, whose intent is in the spool already: it is written
    /// with the next record, or within the spool's fsync interval (see `spool`). A kill in
    /// between leaves the statement "outcome unknown", from its intent.
    pub fn record_outcome(&self, event: AuditEvent) {
        let (session, seq) = (event.session_id.clone(), event.seq);
        if let Err(e) = self.spool.hold(Kind::Final, &event.into()) {
            tracing::error!(%session, seq, error = %e, "audit outcome lost: cannot write it to the spool");
        }
    }

    /// Writes the outcomes still held (before the process exits).
    pub fn flush(&self) {
        if let Err(e) = self.spool.flush() {
            tracing::error!(error = %e, "held audit outcomes lost: cannot write them to the spool");
        }
    }

    /// Bytes the spool holds (events not yet acknowledged, in whole segments).
    pub fn spooled_bytes(&self) -> u64 {
        self.spool.used()
    }

    /// Spools a statement's intent before it is forwarded. Refused when the
    /// spool is full. Returns the record's number, for [`Self::wait_synced`].
    pub fn intend(&self, event: AuditEvent) -> Result<u64, SpoolError> {
        self.spool
            .append(Kind::Intent, &event.into(), Admit::Checked)
    }

    /// The statement of intent `seq` never ran (the server skipped it).
    pub fn cancel(&self, session_id: &str, seq: u64) {
        let event = pb::AuditEvent {
            session_id: session_id.to_owned(),
            seq,
            at: 0,
            event: None,
        };
        if let Err(e) = self.spool.hold(Kind::Cancel, &event) {
            tracing::error!(session = session_id, seq, error = %e, "cannot write an audit cancel to the spool");
        }
    }

    /// Waits until an fsync covers record `n`.
    pub async fn wait_synced(&self, n: u64) {
        self.spool.wait_synced(n).await;
    }

    /// A session of this process started: its intents are not orphans while it runs.
    pub fn session_started(&self, session_id: &str) {
        self.spool.session_started(session_id);
    }
}
