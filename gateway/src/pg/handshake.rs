//! The client's startup phase: SSLRequest/GSSENCRequest negotiation, cancel
//! requests, and the StartupMessage, all under hard size limits.

use super::cancel::CancelRegistry;
use super::stream::Conn;
use super::wire::{self, StartupPacket, backend};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

/// The protocol version the gateway speaks: 3.0.
const PROTOCOL_3_0: u32 = 196_608;

/// A client that has sent its StartupMessage.
pub struct Startup {
    pub conn: Conn,
    /// Bytes the client sent after the StartupMessage (normally none).
    pub leftover: BytesMut,
    pub params: Vec<(String, String)>,
}

impl Startup {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub enum Accepted {
    Session(Startup),
    /// A CancelRequest was handled; the connection is done.
    Cancel,
}

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("client i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("client sent a malformed startup packet: {0}")]
    Wire(#[from] wire::WireError),
    #[error("client closed the connection during startup")]
    Closed,
    #[error("client sent data after SSLRequest before the TLS handshake")]
    DataBeforeTls,
    #[error("client asked for TLS twice")]
    TlsTwice,
    /// Refused with a message the client is told (already sent).
    #[error("{0}")]
    Refused(String),
}

/// Runs the startup phase on a new connection.
pub async fn accept(
    tcp: TcpStream,
    tls: Option<&TlsAcceptor>,
    require_tls: bool,
    cancels: &CancelRegistry,
) -> Result<Accepted, HandshakeError> {
    let mut conn = Conn::Plain(tcp);
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        let packet = loop {
            if let Some(p) = wire::decode_startup(&mut buf)? {
                break p;
            }
            if buf.len() > wire::MAX_STARTUP_LEN {
                return Err(wire::WireError::LengthTooLarge {
                    len: buf.len(),
                    max: wire::MAX_STARTUP_LEN,
                }
                .into());
            }
            if conn.read_buf(&mut buf).await? == 0 {
                return Err(HandshakeError::Closed);
            }
        };
        match packet {
            StartupPacket::SslRequest => {
                if conn.is_tls() {
                    return Err(HandshakeError::TlsTwice);
                }
                if !buf.is_empty() {
                    // Bytes sent before the handshake would be trusted as if encrypted.
                    return Err(HandshakeError::DataBeforeTls);
                }
                match (tls, conn) {
                    (Some(acceptor), Conn::Plain(mut tcp)) => {
                        tcp.write_all(b"S").await?;
                        let stream = acceptor.accept(tcp).await?;
                        conn = Conn::ServerTls(Box::new(stream));
                    }
                    (_, mut other) => {
                        other.write_all(b"N").await?;
                        conn = other;
                    }
                }
            }
            StartupPacket::GssEncRequest => conn.write_all(b"N").await?,
            StartupPacket::CancelRequest {
                process_id,
                secret_key,
            } => {
                cancels.cancel(process_id, secret_key).await;
                return Ok(Accepted::Cancel);
            }
            StartupPacket::Startup {
                protocol_version,
                params,
            } => {
                if require_tls && !conn.is_tls() {
                    return Err(refuse(
                        &mut conn,
                        "28000",
                        "this gateway requires TLS (sslmode=require)",
                    )
                    .await);
                }
                let mut out = BytesMut::new();
                // Newer 3.x minors and `_pq_.` options: answer that we speak 3.0 without them.
                let unrecognized: Vec<&str> = params
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .filter(|k| k.starts_with("_pq_."))
                    .collect();
                if protocol_version != PROTOCOL_3_0 || !unrecognized.is_empty() {
                    backend::encode_negotiate_protocol_version(0, &unrecognized, &mut out);
                    conn.write_all(&out).await?;
                }
                return Ok(Accepted::Session(Startup {
                    conn,
                    leftover: buf,
                    params,
                }));
            }
        }
    }
}

/// Sends a FATAL ErrorResponse and returns the matching error.
pub async fn refuse(conn: &mut Conn, code: &str, message: &str) -> HandshakeError {
    let text = format!("countersign: {message}");
    let mut out = BytesMut::new();
    backend::encode_error(
        &backend::ErrorNotice {
            severity: backend::Severity::Fatal,
            code,
            message: &text,
            detail: None,
            hint: None,
        },
        &mut out,
    );
    let _ = conn.write_all(&out).await;
    let _ = conn.flush().await;
    let _ = conn.shutdown().await;
    HandshakeError::Refused(text)
}
