//! The relay: client ↔ upstream once both are authenticated.
//!
//! Two halves run concurrently in the session's task. Each reads whole
//! messages, looks inside only the ones it must (Query, Parse, Bind, Execute,
//! Close, Sync on the way up; CommandComplete, ErrorResponse, EmptyQuery,
//! PortalSuspended, ReadyForQuery on the way down) and forwards every message
//! as the bytes it received, batched into one vectored write per read.
//!
//! What this guarantees: every statement the client sends is classified,
//! decided by the session's current policy (see `inspect`), and its audit
//! intent written to the spool (fsynced too, for `strict_audit` resources)
//! before it is forwarded; a denied statement never reaches upstream; a
//! statement whose intent cannot be spooled (the spool is full) is refused;
//! nothing allowed is re-encoded.

use super::inspect::{Inspector, Verdict};
use super::mask::{MaskStats, RowMasker};
use super::review::{self, HoldResult};
use super::stream::{ConnRead, ConnWrite, MessageReader, Outgoing, ReadError, write_frames};
use super::track::{Pending, Tracker};
use super::wire::backend::{self, BackendMessage, ErrorNotice, Severity};
use crate::audit::{AuditBody, AuditEvent, AuditSink};
use crate::control::RemoteConfig;
use bytes::{Bytes, BytesMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::watch;

/// Why the relay ended.
#[derive(Debug, thiserror::Error)]
pub enum RelayEnd {
    #[error("client terminated the session")]
    ClientTerminated,
    #[error("client: {0}")]
    Client(ReadError),
    #[error("client write: {0}")]
    ClientWrite(std::io::Error),
    #[error("upstream: {0}")]
    Upstream(ReadError),
    #[error("upstream write: {0}")]
    UpstreamWrite(std::io::Error),
    #[error("client sent a malformed {0:?} message")]
    ClientProtocol(char),
    #[error("{0}")]
    Ended(String),
}

/// State both halves share. They run in one task, so the lock is uncontended.
pub struct Shared {
    pub session_id: Arc<str>,
    pub identity: Arc<str>,
    pub groups: Vec<String>,
    pub resource: Arc<str>,
    /// The session's view of control-plane config: policy and revocations.
    pub config: watch::Receiver<Option<Arc<RemoteConfig>>>,
    pub token_id: String,
    pub token_expires_at: SystemTime,
    /// The session's access level, matched by `access_levels` and enforced
    /// for `read-only`.
    pub access_level: Option<Arc<str>>,
    /// Why the session may connect: a grant or a standing allowance.
    pub access: crate::control::Access,
    pub audit: AuditSink,
    /// Next audit sequence number (0 was the session start).
    pub seq: AtomicU64,
    pub statements: AtomicU64,
    pub tracker: Mutex<Tracker>,
    /// The client half asks the upstream half (which owns the client's write
    /// side) to send the client something out of band.
    pub inject: tokio::sync::mpsc::Sender<Inject>,
    /// For statement reviews.
    pub control: crate::control::ControlClient,
    pub review_timeout: std::time::Duration,
    /// Masking (see `mask`): the session's index, rebuilt when the policy changes.
    pub mask: Mutex<super::mask::MaskState>,
    /// Whether the session has mask rules now: the upstream half's fast path.
    pub mask_active: std::sync::atomic::AtomicBool,
    pub mask_source: super::mask::catalog::CatalogSource,
    pub catalogs: Arc<super::mask::catalog::CatalogCache>,
    /// Keys the `hash` mask style.
    pub mask_key: Arc<[u8]>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// What the client half asks the upstream half to send the client.
pub enum Inject {
    /// A NoticeResponse, sent at once (notices may arrive at any time).
    Notice(Bytes),
    /// End the session with a FATAL carrying this message.
    Fatal(String),
}

impl Shared {
    pub fn next_event(&self, body: AuditBody) -> AuditEvent {
        AuditEvent {
            session_id: self.session_id.clone(),
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            at: SystemTime::now(),
            body,
        }
    }

    pub(super) fn statements_count_one(&self) {
        self.statements.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn track(&self, p: Pending) {
        if let Ok(mut t) = self.tracker.lock() {
            t.push(p);
        }
    }

    /// Audits a completed statement (under the sequence of its intent) and counts it.
    pub(super) async fn record(&self, outcome: Option<super::track::Outcome>) {
        if let Some(o) = outcome {
            self.statements.fetch_add(1, Ordering::Relaxed);
            self.metrics.statement(o.decision);
            if let Some(m) = &o.masking {
                self.metrics
                    .masked_values
                    .inc_by(m.by_rule.values().chain(m.by_detector.values()).sum());
            }
            let event = AuditEvent {
                session_id: self.session_id.clone(),
                seq: o.seq,
                at: SystemTime::now(),
                body: AuditBody::Statement(o.into_event(&self.identity, &self.resource)),
            };
            self.audit.record_outcome(event);
        }
    }

    /// Spools the intents of statements the server skipped as cancelled.
    pub(super) fn cancel_skipped(&self, skipped: Vec<u64>) {
        for seq in skipped {
            self.audit.cancel(&self.session_id, seq);
        }
    }

    /// Whether this session's resource waits for the fsync of an intent before forwarding.
    pub(super) fn strict_audit(&self) -> bool {
        self.config
            .borrow()
            .as_ref()
            .and_then(|c| c.resources.get(&*self.resource).map(|r| r.strict_audit))
            .unwrap_or(false)
    }
}

/// Client → upstream.
pub async fn client_to_upstream(
    shared: &Shared,
    mut client: MessageReader<ConnRead>,
    mut upstream: ConnWrite,
) -> RelayEnd {
    let mut session = Inspector::new(shared);
    let mut frames: Vec<Bytes> = Vec::with_capacity(16);
    loop {
        let frame = match client.next().await {
            Ok(f) => f,
            Err(ReadError::Closed) => return RelayEnd::ClientTerminated,
            Err(e @ ReadError::Wire(_)) => return fail_client(shared, RelayEnd::Client(e)).await,
            Err(e) => return RelayEnd::Client(e),
        };
        // A new policy may bring or drop mask rules: from the next statement on.
        if super::mask::stale(shared)
            && let Err(e) = super::mask::refresh(shared, false).await
        {
            tracing::warn!(session = %shared.session_id, error = %e, "cannot update masking; ending session");
            return fail_client(
                shared,
                RelayEnd::Ended(format!("masking cannot be set up: {e}")),
            )
            .await;
        }
        let mut next = Some(frame);
        while let Some(frame) = next {
            let terminate = frame.tag == b'X';
            match session.inspect(shared, &frame) {
                Ok(Verdict::Forward) => frames.push(frame.bytes),
                Ok(Verdict::Replace(bytes)) => frames.push(bytes),
                Ok(Verdict::Review(held)) => {
                    // What came before the held message goes upstream first.
                    if let Err(e) = forward(shared, &mut session, &mut upstream, &mut frames).await
                    {
                        return RelayEnd::UpstreamWrite(e);
                    }
                    let verdict = match review::hold(shared, &held).await {
                        HoldResult::Approved => session.release(shared, held),
                        HoldResult::Refused(why) => session.reject(shared, &held, &why),
                    };
                    if let Verdict::Replace(bytes) = verdict {
                        frames.push(bytes);
                    }
                }
                Err(end) => return fail_client(shared, end).await,
            }
            if let Some(event) = session.take_decision_event() {
                shared.audit.record(event).await;
            }
            if terminate {
                let _ = forward(shared, &mut session, &mut upstream, &mut frames).await;
                return RelayEnd::ClientTerminated;
            }
            next = match client.buffered() {
                Ok(f) => f,
                Err(e) => return fail_client(shared, RelayEnd::Client(e)).await,
            };
        }
        if let Err(e) = forward(shared, &mut session, &mut upstream, &mut frames).await {
            return RelayEnd::UpstreamWrite(e);
        }
    }
}

/// Sends `frames` upstream. Their statements' intents are in the spool already
/// (written by `inspect`); for a `strict_audit` resource, also wait for the
/// fsync that covers them.
async fn forward(
    shared: &Shared,
    session: &mut Inspector,
    upstream: &mut ConnWrite,
    frames: &mut Vec<Bytes>,
) -> std::io::Result<()> {
    if let Some(record) = session.take_spooled()
        && shared.strict_audit()
    {
        shared.audit.wait_synced(record).await;
    }
    write_frames(upstream, frames).await
}

/// Ends the session because of something the client sent: the upstream half
/// tells the client why, then the session closes. Nothing more is forwarded.
async fn fail_client(shared: &Shared, end: RelayEnd) -> RelayEnd {
    tracing::info!(session = %shared.session_id, reason = %end, "ending session: bad client input");
    if shared
        .inject
        .send(Inject::Fatal(format!("protocol violation: {end}")))
        .await
        .is_ok()
    {
        // The upstream half finishes the session; wait for it to win the select.
        std::future::pending::<()>().await;
    }
    end
}

/// Upstream → client, and session-ending events (revocation, expiry).
pub async fn upstream_to_client(
    shared: &Shared,
    mut upstream: MessageReader<ConnRead>,
    mut client: ConnWrite,
    mut config: watch::Receiver<Option<Arc<RemoteConfig>>>,
    mut inject: tokio::sync::mpsc::Receiver<Inject>,
) -> RelayEnd {
    let mut out = Outgoing::default();
    let mut masking = Masking::default();
    let until = |t: SystemTime| t.duration_since(SystemTime::now()).unwrap_or_default();
    let token_expiry = tokio::time::sleep(until(shared.token_expires_at));
    tokio::pin!(token_expiry);
    // Standing access has no end of its own: the token's bounds it.
    let grant_expiry = tokio::time::sleep(until(
        shared.access.until().unwrap_or(shared.token_expires_at),
    ));
    tokio::pin!(grant_expiry);
    loop {
        let frame = tokio::select! {
            biased;
            _ = &mut token_expiry => {
                return end_session(&mut client, "57P01", "access token expired; session ended").await;
            }
            _ = &mut grant_expiry => {
                return end_session(&mut client, "57P01", "access grant ended; session ended").await;
            }
            Some(injected) = inject.recv() => match injected {
                Inject::Fatal(message) => return end_session(&mut client, "08P01", &message).await,
                Inject::Notice(bytes) => {
                    if let Err(e) = super::stream::write_buf(&mut client, &bytes).await {
                        return RelayEnd::ClientWrite(e);
                    }
                    continue;
                }
            },
            changed = config.changed() => {
                if changed.is_ok() && let Some(why) = withdrawn(shared, &config) {
                    return end_session(&mut client, "57P01", why).await;
                }
                continue;
            }
            f = upstream.next() => match f {
                Ok(f) => f,
                Err(e) => return RelayEnd::Upstream(e),
            },
        };
        let mut next = Some(frame);
        while let Some(frame) = next {
            match frame.tag {
                // Rows: the hot path. Untouched unless this result is masked.
                b'D' => {
                    if !masking.row(shared, &frame, &mut out) {
                        out.forward(frame.bytes);
                    }
                }
                _ => match masking.observe(shared, &frame).await {
                    Ok(replacement) => out.forward(replacement.unwrap_or(frame.bytes)),
                    Err(e) => {
                        tracing::warn!(session = %shared.session_id, error = %e, "masking failed; ending session");
                        return end_session(&mut client, "58000", &format!("masking failed: {e}"))
                            .await;
                    }
                },
            }
            next = match upstream.buffered() {
                Ok(f) => f,
                Err(e) => return RelayEnd::Upstream(e),
            };
        }
        if let Err(e) = out.write_to(&mut client).await {
            return RelayEnd::ClientWrite(e);
        }
    }
}

/// Why the latest config ends this session (its token or grant revoked, its
/// standing access withdrawn), or `None`.
fn withdrawn(
    shared: &Shared,
    config: &watch::Receiver<Option<Arc<RemoteConfig>>>,
) -> Option<&'static str> {
    let config = config.borrow();
    let config = config.as_ref()?;
    if config.revoked_token_ids.contains(&shared.token_id) {
        return Some("access token revoked; session ended");
    }
    shared.access.withdrawn(
        config,
        &shared.identity,
        &shared.groups,
        &shared.resource,
        shared.access_level.as_deref(),
    )
}

async fn end_session(client: &mut ConnWrite, code: &str, message: &str) -> RelayEnd {
    let mut out = BytesMut::new();
    backend::encode_error(
        &ErrorNotice {
            severity: Severity::Fatal,
            code,
            message: &format!("countersign: {message}"),
            detail: None,
            hint: None,
        },
        &mut out,
    );
    let _ = super::stream::write_buf(client, &out).await;
    RelayEnd::Ended(message.to_owned())
}

/// Feeds the response tracker with the messages that complete statements.
/// Returns the bytes to send instead of `frame` when it answers a denial.
async fn observe(
    shared: &Shared,
    frame: &super::wire::Frame,
    withheld: bool,
    stats: Option<&mut MaskStats>,
) -> Option<Bytes> {
    if !matches!(frame.tag, b'C' | b'E' | b'I' | b's' | b'Z') {
        return None;
    }
    let Ok(msg) = BackendMessage::parse(frame) else {
        // Forwarded as received; the client will judge it.
        return None;
    };
    let mut replacement = None;
    let (outcome, skipped) = {
        let Ok(mut t) = shared.tracker.lock() else {
            return None;
        };
        let outcome = match msg {
            BackendMessage::CommandComplete { tag } => {
                t.command_complete(tag, backend::command_tag_rows(tag))
            }
            BackendMessage::EmptyQueryResponse => t.execute_done_without_tag("EMPTY"),
            BackendMessage::PortalSuspended => t.execute_done_without_tag("SUSPENDED"),
            BackendMessage::ErrorResponse(e) => {
                let text = if withheld {
                    super::mask::withheld_text(e.code().unwrap_or("?????"))
                } else {
                    format!(
                        "{}: {}",
                        e.code().unwrap_or("?????"),
                        e.message().unwrap_or("")
                    )
                };
                let (outcome, swap) = t.error(text);
                replacement = swap.or_else(|| withheld.then(|| super::mask::withhold(frame)));
                outcome
            }
            BackendMessage::ReadyForQuery { .. } => t.ready_for_query(),
            _ => None,
        };
        (outcome, t.take_skipped())
    };
    shared.cancel_skipped(skipped);
    let outcome = outcome.map(|mut o| {
        if let Some(stats) = stats.filter(|s| !s.is_empty()) {
            o.masking = Some(stats.take());
        }
        o
    });
    shared.record(outcome).await;
    replacement
}

/// The upstream half's masking state: the masker of the result being streamed.
#[derive(Default)]
struct Masking {
    rows: Option<RowMasker>,
    /// The `COPY ... TO` stream being masked.
    copy: Option<super::mask::copy::CopyMasker>,
    stats: MaskStats,
}

impl Masking {
    /// A DataRow: masked when the current result is, or every column NULL when a session
    /// under masking gets rows nothing described (fail closed). Returns false when the row
    /// goes out as received; otherwise its replacement was built in `out`.
    fn row(&mut self, shared: &Shared, frame: &super::wire::Frame, out: &mut Outgoing) -> bool {
        match &self.rows {
            // The no-op check first: a result with nothing to mask reserves no build buffer.
            Some(m) => !m.is_noop() && m.row(frame, &mut self.stats, out.build(frame.len())),
            None if shared.mask_active.load(Ordering::Acquire) => {
                super::mask::null_row(frame, out.build(frame.len()));
                true
            }
            None => false,
        }
    }

    /// Everything but DataRow: descriptions set up the masker, errors and notices of
    /// masked statements lose their texts, completions feed audit.
    async fn observe(
        &mut self,
        shared: &Shared,
        frame: &super::wire::Frame,
    ) -> Result<Option<Bytes>, String> {
        let active = shared.mask_active.load(Ordering::Acquire);
        if !active {
            self.rows = None;
            return Ok(observe(shared, frame, false, None).await);
        }
        match frame.tag {
            b'T' | b'n' => return self.described(shared, frame).await,
            b'N' => {
                let withhold = current_mask(shared).is_some_and(|m| m.stmt.withhold_messages);
                return Ok(withhold.then(|| super::mask::withhold(frame)));
            }
            b'H' => {
                let plan = current_mask(shared).and_then(|m| {
                    let plan = m.stmt.copy.clone()?;
                    Some(super::mask::copy::CopyMasker::new(m.index.clone(), plan))
                });
                if plan.is_none() {
                    return Err("a COPY stream arrived without a masking plan".to_owned());
                }
                self.copy = plan;
                return Ok(None);
            }
            b'd' => {
                let Some(copy) = self.copy.as_mut() else {
                    return Err("COPY data arrived outside a COPY".to_owned());
                };
                let masked = copy
                    .row(frame.body(), &mut self.stats)
                    .map_err(|e| e.to_string())?;
                let Some(body) = masked else {
                    return Ok(None);
                };
                // A row grown by masking past what a length word holds ends the COPY (and
                // the session), never goes out with a clamped length.
                let mut out = BytesMut::with_capacity(body.len() + 5);
                backend::encode_copy_data(&body, &mut out);
                if out.is_empty() {
                    return Err("a masked COPY row is too long for a message".to_owned());
                }
                return Ok(Some(out.freeze()));
            }
            b'c' => {
                self.copy = None;
                return Ok(None);
            }
            b'C' | b'E' | b'I' | b's' | b'Z' => {
                self.rows = None;
                self.copy = None;
            }
            _ => return Ok(None),
        }
        let ddl = frame.tag == b'C' && is_ddl(frame);
        let withheld =
            frame.tag == b'E' && current_mask(shared).is_some_and(|m| m.stmt.withhold_messages);
        let replacement = observe(shared, frame, withheld, Some(&mut self.stats)).await;
        if ddl {
            // A table or view may have changed under the masking: read the catalog again.
            super::mask::refresh(shared, true).await?;
        }
        Ok(replacement)
    }

    /// A RowDescription or NoData.
    async fn described(
        &mut self,
        shared: &Shared,
        frame: &super::wire::Frame,
    ) -> Result<Option<Bytes>, String> {
        let found = shared.tracker.lock().ok().and_then(|mut t| t.described());
        let Some((ctx, swallow)) = found else {
            self.rows = None;
            return Ok(None);
        };
        let drop_it = swallow.then(Bytes::new);
        let (Some(mut ctx), b'T') = (ctx, frame.tag) else {
            self.rows = None;
            return Ok(drop_it);
        };
        let Ok(BackendMessage::RowDescription { fields }) = BackendMessage::parse(frame) else {
            return Err("the server sent a malformed RowDescription".to_owned());
        };
        if fields
            .iter()
            .any(|f| f.table_oid != 0 && !ctx.index.knows(f.table_oid))
        {
            // A relation created since the catalog was read: read it again.
            super::mask::refresh(shared, true).await?;
            if let Some(index) = super::mask::current_index(shared) {
                ctx = Arc::new(super::mask::MaskCtx {
                    index,
                    stmt: ctx.stmt.clone(),
                });
            }
        }
        let (masker, rewritten) = RowMasker::new(ctx, &fields);
        self.rows = Some(masker);
        Ok(drop_it.or(rewritten))
    }
}

fn current_mask(shared: &Shared) -> Option<Arc<super::mask::MaskCtx>> {
    shared.tracker.lock().ok()?.current_mask()
}

/// Whether a CommandComplete reports DDL (`CREATE ...`, `ALTER ...`, `DROP ...`).
fn is_ddl(frame: &super::wire::Frame) -> bool {
    let body = frame.body();
    body.starts_with(b"CREATE") || body.starts_with(b"ALTER") || body.starts_with(b"DROP")
}
