//! One client connection, start to end: startup, authentication against the
//! control plane, the upstream connection, the relay, and the session's audit
//! bracket (SessionStarted … SessionEnded).
//!
//! Fails closed: any doubt during setup (bad token, unknown resource, control
//! plane unreachable, upstream refusal) ends in a FATAL ErrorResponse and a
//! closed connection, before a single statement can reach upstream.

use super::cancel::CancelTarget;
use super::handshake::{self, Accepted, HandshakeError, Startup};
use super::mask::{self, catalog::CatalogSource};
use super::relay::{self, RelayEnd, Shared};
use super::stream::{MessageReader, ReadError};
use super::track::Tracker;
use super::upstream;
use super::wire::{self, backend, frontend};
use crate::Gateway;
use crate::audit::AuditBody;
use crate::control::{AuthFailure, SessionRequest};
use bytes::BytesMut;
use countersign_common::Secret;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::Instrument;

/// Client startup parameters passed on to the upstream. Anything else (notably
/// `options`, which could set `role` or `session_authorization`) is dropped.
const FORWARDED_PARAMS: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "timezone",
    "extra_float_digits",
    "intervalstyle",
    "search_path",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
];

/// How long a new session waits for the gateway to receive its policy.
const POLICY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves one client connection to its end. Errors are logged here.
pub async fn run(gw: Gateway, tcp: TcpStream, peer: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let accepted = tokio::time::timeout(
        gw.settings.handshake_timeout,
        handshake::accept(
            tcp,
            gw.client_tls.as_ref(),
            gw.settings.require_tls,
            &gw.cancels,
        ),
    )
    .await;
    let startup = match accepted {
        Ok(Ok(Accepted::Session(s))) => s,
        Ok(Ok(Accepted::Cancel)) => return,
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "client startup failed");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "client did not finish startup in time");
            return;
        }
    };
    let metrics = gw.metrics.clone();
    // Every log line of the session carries its id and identity once the
    // control plane has named them (JSON logs: the `span` object). Never the
    // token, a statement's parameters or a masked value.
    let span = tracing::info_span!(
        "session",
        %peer,
        session_id = tracing::field::Empty,
        identity = tracing::field::Empty,
        resource = tracing::field::Empty,
    );
    let served = serve(gw, startup, peer).instrument(span.clone()).await;
    if let Err(e) = served {
        metrics.sessions_refused.inc();
        span.in_scope(|| tracing::info!(%peer, error = %e, "session refused"));
    }
}

async fn serve(gw: Gateway, startup: Startup, peer: SocketAddr) -> Result<(), HandshakeError> {
    let Startup {
        mut conn,
        leftover,
        params,
    } = startup;
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let Some(user) = param("user").filter(|u| !u.is_empty()) else {
        return Err(handshake::refuse(
            &mut conn,
            "28000",
            "no user name given; use your identity (email)",
        )
        .await);
    };
    let Some(dbname) = param("database").filter(|d| !d.is_empty()) else {
        return Err(handshake::refuse(
            &mut conn,
            "3D000",
            "no database given; use the resource name as dbname",
        )
        .await);
    };
    if param("replication").is_some_and(|r| !matches!(r.as_str(), "false" | "off" | "0" | "no")) {
        return Err(handshake::refuse(
            &mut conn,
            "28000",
            "replication connections are not allowed",
        )
        .await);
    }
    if let Some(enc) = param("client_encoding")
        && !utf8_compatible(&enc)
    {
        let msg = format!("client_encoding {enc:?} is not supported; use UTF8");
        return Err(handshake::refuse(&mut conn, "22023", &msg).await);
    }
    let (resource, database) = match dbname.split_once('/') {
        Some((r, d)) => (r.to_owned(), Some(d.to_owned())),
        None => (dbname.clone(), None),
    };
    let Some(up) = gw.upstreams.get(&resource).cloned() else {
        return Err(handshake::refuse(
            &mut conn,
            "3D000",
            &format!("no resource named {resource:?} on this gateway"),
        )
        .await);
    };
    let database = database.unwrap_or_else(|| up.database.clone());
    let application_name = param("application_name").unwrap_or_default();

    // Ask for the access token as a cleartext password (the channel should be TLS).
    let mut out = BytesMut::new();
    backend::encode_auth_cleartext_request(&mut out);
    conn.write_all(&out).await?;
    conn.flush().await?;
    let mut reader = MessageReader::with_buffer(conn, leftover, wire::MAX_AUTH_MESSAGE_LEN);
    // The password must arrive within the handshake timeout too: a client that
    // never answers must not hold a session slot.
    let read = tokio::time::timeout(gw.settings.handshake_timeout, reader.next()).await;
    let Ok(read) = read else {
        let (mut conn, _) = reader.into_parts();
        return Err(handshake::refuse(&mut conn, "08006", "no password received in time").await);
    };
    let frame = match read {
        Ok(f) => f,
        // libpq hangs up here to prompt for a password, then reconnects.
        Err(ReadError::Closed) => return Ok(()),
        Err(ReadError::Wire(e)) => {
            let (mut conn, _) = reader.into_parts();
            return Err(handshake::refuse(
                &mut conn,
                "08P01",
                &format!("malformed password message: {e}"),
            )
            .await);
        }
        Err(e) => return Err(HandshakeError::Refused(e.to_string())),
    };
    let token = match (frame.tag, frontend::password_cleartext(frame.body())) {
        (b'p', Ok(t)) => Secret::new(t.to_owned()),
        _ => {
            let (mut conn, _) = reader.into_parts();
            return Err(handshake::refuse(
                &mut conn,
                "08P01",
                "expected a password message carrying the access token",
            )
            .await);
        }
    };
    let (mut conn, leftover) = reader.into_parts();
    let tls = conn.is_tls();
    let request = SessionRequest {
        token,
        resource: resource.clone(),
        database: database.clone(),
        user: user.clone(),
        client_address: peer.to_string(),
        application_name: application_name.clone(),
        tls,
        gateway_id: gw.settings.gateway_id.clone(),
    };
    let grant = match gw.control.authenticate(request).await {
        Ok(g) => {
            let span = tracing::Span::current();
            span.record("session_id", &*g.session_id);
            span.record("identity", &*g.identity);
            span.record("resource", &*g.resource);
            g
        }
        Err(AuthFailure::Credentials(m)) => {
            return Err(handshake::refuse(&mut conn, "28P01", &m).await);
        }
        Err(AuthFailure::NotAllowed(m)) => {
            return Err(handshake::refuse(&mut conn, "28000", &m).await);
        }
        Err(AuthFailure::Unavailable(detail)) => {
            tracing::warn!(%detail, "control plane unavailable; refusing session");
            let msg = AuthFailure::Unavailable(detail).to_string();
            return Err(handshake::refuse(&mut conn, "08004", &msg).await);
        }
    };

    // Relay nothing until this gateway holds the policy the session was opened under.
    let mut config = gw.config.clone();
    let wanted = grant.policy_version;
    let has_policy = tokio::time::timeout(
        POLICY_WAIT,
        config.wait_for(|c| c.as_ref().is_some_and(|c| c.policy_version >= wanted)),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    if !has_policy {
        let msg =
            format!("this gateway has not received policy version {wanted} yet; try again shortly");
        return Err(handshake::refuse(&mut conn, "08004", &msg).await);
    }

    let mut forwarded: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| FORWARDED_PARAMS.contains(&k.to_ascii_lowercase().as_str()))
        .cloned()
        .collect();
    if grant.access_level.as_deref() == Some(countersign_policy::READ_ONLY) {
        // PostgreSQL itself refuses writes in this session, also the ones a
        // function does out of the classifier's sight; the policy's read-only
        // check refuses every way of turning this off.
        forwarded.push(("default_transaction_read_only".into(), "on".into()));
    }
    let up_tls = gw.upstream_tls.get(&resource).cloned().flatten();
    let ready = match upstream::connect(&up, up_tls.as_ref(), &database, &forwarded).await {
        Ok(r) => r,
        Err(e) => {
            gw.metrics
                .upstream_connect_errors
                .get_or_create(&crate::metrics::Metrics::resource(&resource))
                .inc();
            tracing::warn!(resource = %resource, error = %e, "upstream connection failed");
            let code = match &e {
                upstream::UpstreamError::Refused { code, .. } => code.clone(),
                _ => "08006".to_owned(),
            };
            return Err(
                handshake::refuse(&mut conn, &code, &format!("upstream {resource}: {e}")).await,
            );
        }
    };
    let cancel_key = gw.cancels.register(CancelTarget {
        upstream: up.clone(),
        tls: up_tls,
        process_id: ready.process_id,
        secret_key: ready.secret_key,
    });

    let (inject_tx, inject_rx) = tokio::sync::mpsc::channel(4);
    let shared = Shared {
        session_id: grant.session_id.clone(),
        identity: grant.identity.clone(),
        groups: grant.groups.clone(),
        config: gw.config.clone(),
        resource: grant.resource.clone(),
        token_id: grant.token_id.clone(),
        token_expires_at: grant.token_expires_at,
        access_level: grant.access_level.clone(),
        access: grant.access.clone(),
        audit: gw.audit.clone(),
        seq: AtomicU64::new(0),
        statements: AtomicU64::new(0),
        tracker: Mutex::new(Tracker::default()),
        inject: inject_tx,
        control: gw.control.clone(),
        review_timeout: gw.settings.review_timeout,
        mask: Mutex::default(),
        mask_active: AtomicBool::new(false),
        mask_source: CatalogSource {
            resource: grant.resource.clone(),
            database: database.clone(),
            upstream: up.clone(),
            tls: gw.upstream_tls.get(&resource).cloned().flatten(),
        },
        catalogs: gw.catalogs.clone(),
        mask_key: gw.mask_key.clone(),
        metrics: gw.metrics.clone(),
    };
    // Masking needs the upstream's catalog: without it, no session (fail closed).
    if let Err(e) = mask::refresh(&shared, false).await {
        tracing::warn!(resource = %resource, error = %e, "cannot set up masking; refusing session");
        let msg = format!("masking for {resource} cannot be set up: {e}");
        return Err(handshake::refuse(&mut conn, "58000", &msg).await);
    }

    let mut out = BytesMut::with_capacity(512);
    backend::encode_auth_ok(&mut out);
    for ps in &ready.parameter_status {
        out.extend_from_slice(&ps.bytes);
    }
    backend::encode_backend_key_data(cancel_key.process_id, cancel_key.secret_key, &mut out);
    backend::encode_ready_for_query(b'I', &mut out);
    conn.write_all(&out).await?;
    conn.flush().await?;

    let started = shared.next_event(AuditBody::SessionStarted {
        identity: grant.identity.clone(),
        resource: grant.resource.clone(),
        database: database.clone(),
        client_address: peer.to_string(),
        application_name,
        tls,
    });
    gw.audit.session_started(&grant.session_id);
    gw.audit.record(started).await;
    gw.metrics.sessions_total.inc();
    gw.metrics.sessions_active.inc();
    tracing::info!(session = %grant.session_id, identity = %grant.identity, resource = %resource, %peer, tls, "session started");

    let (client_read, client_write) = conn.split();
    let (up_conn, up_buf) = ready.reader.into_parts();
    let (up_read, up_write) = up_conn.split();
    let client_reader = MessageReader::with_buffer(client_read, leftover, wire::MAX_MESSAGE_LEN);
    let up_reader = MessageReader::with_buffer(up_read, up_buf, wire::MAX_MESSAGE_LEN);
    let end = tokio::select! {
        end = relay::client_to_upstream(&shared, client_reader, up_write) => end,
        end = relay::upstream_to_client(&shared, up_reader, client_write, gw.config.clone(), inject_rx) => end,
    };
    drop(cancel_key);
    gw.metrics.sessions_active.dec();
    finish(&shared, &end).await;
    Ok(())
}

async fn finish(shared: &Shared, end: &RelayEnd) {
    let (unfinished, skipped) = shared
        .tracker
        .lock()
        .map(|mut t| (t.drain_unfinished(), t.take_skipped()))
        .unwrap_or_default();
    shared.cancel_skipped(skipped);
    for o in unfinished {
        shared.record(Some(o)).await;
    }
    let reason = end.to_string();
    tracing::info!(session = %shared.session_id, %reason, "session ended");
    let ended = shared.next_event(AuditBody::SessionEnded {
        identity: shared.identity.clone(),
        resource: shared.resource.clone(),
        reason,
        statements: shared.statements.load(Ordering::Relaxed),
    });
    shared.audit.record(ended).await;
}

/// The gateway reads statements as UTF-8, so clients must send UTF-8.
/// `SQL_ASCII` (what libpq picks in the C locale) is accepted: ASCII is UTF-8,
/// and a non-ASCII byte then fails parsing, which ends the session (fail closed).
fn utf8_compatible(encoding: &str) -> bool {
    let e: String = encoding
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_uppercase();
    matches!(e.as_str(), "UTF8" | "UNICODE" | "SQLASCII" | "AUTO")
}

#[cfg(test)]
mod tests {
    #[test]
    fn accepts_only_utf8_compatible_client_encodings() {
        for ok in ["UTF8", "utf-8", "Unicode", "SQL_ASCII", "auto"] {
            assert!(super::utf8_compatible(ok), "{ok}");
        }
        for bad in ["LATIN1", "WIN1252", "SJIS", ""] {
            assert!(!super::utf8_compatible(bad), "{bad}");
        }
    }
}
