//! The upstream connection: transport (plain or TLS), startup and
//! authentication with credentials only the gateway holds.
//!
//! Supported upstream authentication: trust, cleartext password, md5 and
//! SCRAM-SHA-256 (without channel binding). The credentials never reach the
//! client: errors shown to the client carry the upstream's SQLSTATE and
//! message, which PostgreSQL never fills with a password.

use super::stream::{Conn, MessageReader, ReadError};
use super::wire::backend::{Authentication, BackendMessage};
use super::wire::{self, Frame, frontend, startup};
use crate::config::{Upstream, UpstreamSslMode};
use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot reach upstream {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("upstream {0} does not accept TLS, which its sslmode requires")]
    TlsRefused(String),
    #[error("TLS with upstream failed: {0}")]
    Tls(std::io::Error),
    #[error("upstream i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("upstream protocol: {0}")]
    Read(#[from] ReadError),
    #[error("upstream asked for a password, but none is configured for resource {0}")]
    NoPassword(String),
    #[error("upstream asks for an unsupported authentication method ({0})")]
    UnsupportedAuth(String),
    #[error("SCRAM with upstream failed: {0}")]
    Scram(std::io::Error),
    /// The upstream sent an ErrorResponse during startup.
    #[error("upstream refused the connection: {message}")]
    Refused { code: String, message: String },
    #[error("upstream sent an unexpected message during startup (tag {0:?})")]
    Unexpected(char),
}

/// An authenticated upstream connection, ready for queries.
pub struct Ready {
    pub reader: MessageReader<Conn>,
    /// ParameterStatus messages to pass on to the client, as received.
    pub parameter_status: Vec<Frame>,
    pub process_id: i32,
    pub secret_key: i32,
}

/// TCP (and TLS where the sslmode asks for it) to the upstream server.
pub async fn open_transport(
    up: &Upstream,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Conn, UpstreamError> {
    let addr = format!("{}:{}", up.host, up.port);
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr))
        .await
        .map_err(|_| UpstreamError::Connect {
            addr: addr.clone(),
            source: std::io::ErrorKind::TimedOut.into(),
        })?
        .map_err(|source| UpstreamError::Connect {
            addr: addr.clone(),
            source,
        })?;
    tcp.set_nodelay(true)?;
    let Some(tls) = tls else {
        return Ok(Conn::Plain(tcp));
    };
    let mut tcp = tcp;
    let mut req = BytesMut::with_capacity(8);
    startup::encode_ssl_request(&mut req);
    tcp.write_all(&req).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    match answer[0] {
        b'S' => {
            let name = rustls::pki_types::ServerName::try_from(up.host.clone())
                .map_err(|e| UpstreamError::Tls(std::io::Error::other(e)))?;
            let stream = tokio_rustls::TlsConnector::from(tls.clone())
                .connect(name, tcp)
                .await
                .map_err(UpstreamError::Tls)?;
            Ok(Conn::ClientTls(Box::new(stream)))
        }
        b'N' if up.sslmode == UpstreamSslMode::Prefer => Ok(Conn::Plain(tcp)),
        b'N' => Err(UpstreamError::TlsRefused(addr)),
        other => Err(UpstreamError::Unexpected(char::from(other))),
    }
}

/// Connects, sends the startup message and authenticates.
///
/// `params` are the client's startup parameters other than `user` and
/// `database`, which the gateway sets from the resource.
pub async fn connect(
    up: &Upstream,
    tls: Option<&Arc<rustls::ClientConfig>>,
    database: &str,
    params: &[(String, String)],
) -> Result<Ready, UpstreamError> {
    let mut conn = open_transport(up, tls).await?;
    let mut startup_params: Vec<(&str, &str)> = vec![("user", &up.user), ("database", database)];
    startup_params.extend(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut out = BytesMut::with_capacity(256);
    startup::encode_startup(&startup_params, &mut out);
    conn.write_all(&out).await?;
    conn.flush().await?;

    let mut reader = MessageReader::new(conn, wire::MAX_MESSAGE_LEN);
    authenticate(up, &mut reader).await?;

    let mut parameter_status = Vec::new();
    let mut key = (0, 0);
    loop {
        let frame = reader.next().await?;
        match BackendMessage::parse(&frame).map_err(ReadError::from)? {
            BackendMessage::ParameterStatus { .. } => parameter_status.push(frame),
            BackendMessage::BackendKeyData {
                process_id,
                secret_key,
            } => key = (process_id, secret_key),
            BackendMessage::NoticeResponse(_) => {}
            BackendMessage::NegotiateProtocolVersion { .. } => {}
            BackendMessage::ReadyForQuery { .. } => break,
            BackendMessage::ErrorResponse(e) => return Err(refused(&e)),
            _ => return Err(UpstreamError::Unexpected(char::from(frame.tag))),
        }
    }
    Ok(Ready {
        reader,
        parameter_status,
        process_id: key.0,
        secret_key: key.1,
    })
}

fn refused(e: &wire::backend::ErrorFields<'_>) -> UpstreamError {
    UpstreamError::Refused {
        code: e.code().unwrap_or("08006").to_owned(),
        message: e.message().unwrap_or("no message").to_owned(),
    }
}

async fn authenticate(
    up: &Upstream,
    reader: &mut MessageReader<Conn>,
) -> Result<(), UpstreamError> {
    let password = || {
        up.password
            .as_ref()
            .map(|p| p.expose().as_bytes())
            .ok_or_else(|| UpstreamError::NoPassword(up.name.clone()))
    };
    let mut scram: Option<ScramSha256> = None;
    let mut out = BytesMut::with_capacity(256);
    loop {
        let frame = reader.next().await?;
        let msg = BackendMessage::parse(&frame).map_err(ReadError::from)?;
        out.clear();
        match msg {
            BackendMessage::Authentication(Authentication::Ok) => return Ok(()),
            BackendMessage::Authentication(Authentication::CleartextPassword) => {
                frontend::encode_password(password()?, &mut out);
            }
            BackendMessage::Authentication(Authentication::Md5Password { salt }) => {
                let hash = postgres_protocol::authentication::md5_hash(
                    up.user.as_bytes(),
                    password()?,
                    salt,
                );
                frontend::encode_password(hash.as_bytes(), &mut out);
            }
            BackendMessage::Authentication(Authentication::Sasl { mechanisms }) => {
                if !mechanisms.contains(&SCRAM_SHA_256) {
                    return Err(UpstreamError::UnsupportedAuth(mechanisms.join(", ")));
                }
                let s = ScramSha256::new(password()?, ChannelBinding::unsupported());
                frontend::encode_sasl_initial_response(SCRAM_SHA_256, s.message(), &mut out);
                scram = Some(s);
            }
            BackendMessage::Authentication(Authentication::SaslContinue { data }) => {
                let s = scram.as_mut().ok_or(UpstreamError::Unexpected('R'))?;
                s.update(data).map_err(UpstreamError::Scram)?;
                frontend::encode_sasl_response(s.message(), &mut out);
            }
            BackendMessage::Authentication(Authentication::SaslFinal { data }) => {
                let mut s = scram.take().ok_or(UpstreamError::Unexpected('R'))?;
                s.finish(data).map_err(UpstreamError::Scram)?;
                continue;
            }
            BackendMessage::Authentication(Authentication::Other(code)) => {
                return Err(UpstreamError::UnsupportedAuth(format!("code {code}")));
            }
            BackendMessage::ErrorResponse(e) => return Err(refused(&e)),
            BackendMessage::NegotiateProtocolVersion { .. } => continue,
            _ => return Err(UpstreamError::Unexpected(char::from(frame.tag))),
        }
        let conn = reader_conn(reader);
        conn.write_all(&out).await?;
        conn.flush().await?;
    }
}

/// Writes go to the same connection the reader owns; the reader's buffer is untouched.
fn reader_conn(reader: &mut MessageReader<Conn>) -> &mut Conn {
    reader.inner_mut()
}
