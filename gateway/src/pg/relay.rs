//! The relay: client ↔ upstream once both are authenticated.
//!
//! Two halves run concurrently in the session's task. Each reads whole
//! messages, looks inside only the ones it must (Query, Parse, Bind, Execute,
//! Close, Sync on the way up; CommandComplete, ErrorResponse, EmptyQuery,
//! PortalSuspended, ReadyForQuery on the way down) and forwards every message
//! as the bytes it received, batched into one vectored write per read.
//!
//! What this guarantees: every statement the client sends is classified and
//! registered for audit before it is forwarded; nothing is re-encoded. What it
//! does not (yet): decide on statements (every decision is "allow"), or mask.

use super::stream::{ConnRead, ConnWrite, MessageReader, ReadError, write_frames};
use super::track::{Pending, StatementInfo, Tracker};
use super::wire::backend::{self, BackendMessage, ErrorNotice, Severity};
use super::wire::frontend::FrontendMessage;
use crate::audit::{AuditBody, AuditEvent, AuditSink};
use crate::control::RemoteConfig;
use bytes::{Bytes, BytesMut};
use countersign_policy::FactsCache;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};
use tokio::sync::watch;

/// Statements whose facts a session keeps, by text.
const FACTS_CACHE: usize = 256;

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
    pub resource: Arc<str>,
    pub token_id: String,
    pub token_expires_at: SystemTime,
    pub audit: AuditSink,
    /// Next audit sequence number (0 was the session start).
    pub seq: AtomicU64,
    pub statements: AtomicU64,
    pub tracker: Mutex<Tracker>,
    /// The client half asks the upstream half (which owns the client's write
    /// side) to end the session with a FATAL carrying this message.
    pub fatal: tokio::sync::mpsc::Sender<String>,
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

    fn track(&self, p: Pending) {
        if let Ok(mut t) = self.tracker.lock() {
            t.push(p);
        }
    }

    async fn record(&self, outcome: Option<super::track::Outcome>) {
        if let Some(o) = outcome {
            self.statements.fetch_add(1, Ordering::Relaxed);
            let event = self.next_event(AuditBody::Statement(
                o.into_event(&self.identity, &self.resource),
            ));
            self.audit.record(event).await;
        }
    }
}

/// Client → upstream.
pub async fn client_to_upstream(
    shared: &Shared,
    mut client: MessageReader<ConnRead>,
    mut upstream: ConnWrite,
) -> RelayEnd {
    let mut session = ClientState::default();
    let mut frames: Vec<Bytes> = Vec::with_capacity(16);
    loop {
        let frame = match client.next().await {
            Ok(f) => f,
            Err(ReadError::Closed) => return RelayEnd::ClientTerminated,
            Err(e @ ReadError::Wire(_)) => return fail_client(shared, RelayEnd::Client(e)).await,
            Err(e) => return RelayEnd::Client(e),
        };
        let mut next = Some(frame);
        while let Some(frame) = next {
            let terminate = frame.tag == b'X';
            if let Err(end) = session.inspect(shared, &frame) {
                return fail_client(shared, end).await;
            }
            frames.push(frame.bytes);
            if terminate {
                let _ = write_frames(&mut upstream, &mut frames).await;
                return RelayEnd::ClientTerminated;
            }
            next = match client.buffered() {
                Ok(f) => f,
                Err(e) => return fail_client(shared, RelayEnd::Client(e)).await,
            };
        }
        if let Err(e) = write_frames(&mut upstream, &mut frames).await {
            return RelayEnd::UpstreamWrite(e);
        }
    }
}

/// Ends the session because of something the client sent: the upstream half
/// tells the client why, then the session closes. Nothing more is forwarded.
async fn fail_client(shared: &Shared, end: RelayEnd) -> RelayEnd {
    tracing::info!(session = %shared.session_id, reason = %end, "ending session: bad client input");
    if shared
        .fatal
        .send(format!("protocol violation: {end}"))
        .await
        .is_ok()
    {
        // The upstream half finishes the session; wait for it to win the select.
        std::future::pending::<()>().await;
    }
    end
}

/// What the client half remembers: prepared statements and portals.
#[derive(Default)]
struct ClientState {
    cache: Option<FactsCache>,
    statements: HashMap<String, Arc<StatementInfo>>,
    portals: HashMap<String, (Arc<StatementInfo>, u32)>,
}

impl ClientState {
    fn classify(&mut self, sql: &str) -> Arc<StatementInfo> {
        let cache = self
            .cache
            .get_or_insert_with(|| FactsCache::new(FACTS_CACHE));
        let facts = cache.get_or_classify(sql);
        let mut kinds = facts.kind_names();
        if facts.is_parse_failure() {
            kinds.push("parse_error");
        }
        Arc::new(StatementInfo {
            sql: sql.into(),
            kinds: kinds.into(),
        })
    }

    fn inspect(&mut self, shared: &Shared, frame: &super::wire::Frame) -> Result<(), RelayEnd> {
        if !matches!(frame.tag, b'Q' | b'P' | b'B' | b'E' | b'C' | b'S' | b'F') {
            return Ok(());
        }
        let msg = FrontendMessage::parse(frame)
            .map_err(|_| RelayEnd::ClientProtocol(char::from(frame.tag)))?;
        let now = Instant::now();
        match msg {
            FrontendMessage::Query { sql } => {
                let stmt = self.classify(sql);
                shared.track(Pending::Simple { stmt, started: now });
            }
            FrontendMessage::Parse { name, sql, .. } => {
                let stmt = self.classify(sql);
                self.statements.insert(name.to_owned(), stmt);
            }
            FrontendMessage::Bind {
                portal,
                statement,
                params,
                ..
            } => {
                let stmt = match self.statements.get(statement) {
                    Some(s) => s.clone(),
                    // The server will refuse the Bind; record what was asked.
                    None => Arc::new(StatementInfo {
                        sql: format!("-- unknown prepared statement {statement:?}").into(),
                        kinds: Arc::from(Vec::new()),
                    }),
                };
                let count = u32::try_from(params.len()).unwrap_or(u32::MAX);
                self.portals.insert(portal.to_owned(), (stmt, count));
            }
            FrontendMessage::Execute { portal, .. } => {
                let (stmt, parameter_count) = match self.portals.get(portal) {
                    Some((s, n)) => (s.clone(), *n),
                    None => (
                        Arc::new(StatementInfo {
                            sql: format!("-- unknown portal {portal:?}").into(),
                            kinds: Arc::from(Vec::new()),
                        }),
                        0,
                    ),
                };
                shared.track(Pending::Execute {
                    stmt,
                    parameter_count,
                    started: now,
                });
            }
            FrontendMessage::Close { kind, name } => {
                if kind == b'S' {
                    self.statements.remove(name);
                } else {
                    self.portals.remove(name);
                }
            }
            FrontendMessage::Sync => {
                // Unnamed portals do not survive a Sync that ends a transaction;
                // dropping them here is harmless because a Bind always precedes Execute.
                shared.track(Pending::Sync);
            }
            FrontendMessage::FunctionCall => {
                let stmt = Arc::new(StatementInfo {
                    sql: "-- fast-path function call".into(),
                    kinds: Arc::from(vec!["call"]),
                });
                shared.track(Pending::Simple { stmt, started: now });
            }
            _ => {}
        }
        Ok(())
    }
}

/// Upstream → client, and session-ending events (revocation, expiry).
pub async fn upstream_to_client(
    shared: &Shared,
    mut upstream: MessageReader<ConnRead>,
    mut client: ConnWrite,
    mut config: watch::Receiver<Option<Arc<RemoteConfig>>>,
    mut fatal: tokio::sync::mpsc::Receiver<String>,
) -> RelayEnd {
    let mut frames: Vec<Bytes> = Vec::with_capacity(16);
    let expires_in = shared
        .token_expires_at
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let expiry = tokio::time::sleep(expires_in);
    tokio::pin!(expiry);
    loop {
        let frame = tokio::select! {
            biased;
            _ = &mut expiry => {
                return end_session(&mut client, "57P01", "access token expired; session ended").await;
            }
            Some(message) = fatal.recv() => {
                return end_session(&mut client, "08P01", &message).await;
            }
            changed = config.changed() => {
                if changed.is_ok() && is_revoked(&config, &shared.token_id) {
                    return end_session(&mut client, "57P01", "access token revoked; session ended").await;
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
            observe(shared, &frame).await;
            frames.push(frame.bytes);
            next = match upstream.buffered() {
                Ok(f) => f,
                Err(e) => return RelayEnd::Upstream(e),
            };
        }
        if let Err(e) = write_frames(&mut client, &mut frames).await {
            return RelayEnd::ClientWrite(e);
        }
    }
}

fn is_revoked(config: &watch::Receiver<Option<Arc<RemoteConfig>>>, token_id: &str) -> bool {
    config
        .borrow()
        .as_ref()
        .is_some_and(|c| c.revoked_token_ids.contains(token_id))
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
async fn observe(shared: &Shared, frame: &super::wire::Frame) {
    if !matches!(frame.tag, b'C' | b'E' | b'I' | b's' | b'Z') {
        return;
    }
    let Ok(msg) = BackendMessage::parse(frame) else {
        // Forwarded as received; the client will judge it.
        return;
    };
    let outcome = {
        let Ok(mut t) = shared.tracker.lock() else {
            return;
        };
        match msg {
            BackendMessage::CommandComplete { tag } => {
                t.command_complete(tag, backend::command_tag_rows(tag))
            }
            BackendMessage::EmptyQueryResponse => t.execute_done_without_tag("EMPTY"),
            BackendMessage::PortalSuspended => t.execute_done_without_tag("SUSPENDED"),
            BackendMessage::ErrorResponse(e) => {
                let text = format!(
                    "{}: {}",
                    e.code().unwrap_or("?????"),
                    e.message().unwrap_or("")
                );
                t.error(text)
            }
            BackendMessage::ReadyForQuery { .. } => t.ready_for_query(),
            _ => None,
        }
    };
    shared.record(outcome).await;
}
