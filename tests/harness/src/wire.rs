//! Raw PostgreSQL wire helpers for tests that must send what no well-behaved client sends
//! (garbage startup packets, bad lengths, an empty password).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Largest backend message body read here; a test server never sends more.
const MAX_BODY: usize = 1 << 20;

/// A protocol 3.0 StartupMessage with `params` (e.g. `user`, `database`).
pub fn startup_message(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    with_length(None, &body)
}

/// A PasswordMessage (`p`).
pub fn password_message(password: &str) -> Vec<u8> {
    let mut body = password.as_bytes().to_vec();
    body.push(0);
    with_length(Some(b'p'), &body)
}

/// A simple Query (`Q`).
pub fn query_message(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    with_length(Some(b'Q'), &body)
}

fn with_length(tag: Option<u8>, body: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = tag.into_iter().collect();
    let len = u32::try_from(body.len() + 4).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Reads one backend message: `Ok(None)` on a clean EOF or a reset before a new message.
pub async fn read_message(stream: &mut TcpStream) -> Result<Option<(u8, Vec<u8>)>> {
    let mut header = [0u8; 5];
    match stream.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if !(4..=MAX_BODY).contains(&len) {
        bail!(
            "backend message {:?} has bad length {len}",
            header[0] as char
        );
    }
    let mut body = vec![0u8; len - 4];
    stream
        .read_exact(&mut body)
        .await
        .context("reading message body")?;
    Ok(Some((header[0], body)))
}

/// The fields of an ErrorResponse/NoticeResponse body, keyed by field code (`S`, `C`, `M`...).
pub fn error_fields(body: &[u8]) -> BTreeMap<char, String> {
    body.split(|b| *b == 0)
        .filter(|f| !f.is_empty())
        .map(|f| (f[0] as char, String::from_utf8_lossy(&f[1..]).into_owned()))
        .collect()
}

/// Expects the server to close the connection within `timeout`, optionally after one
/// ErrorResponse. Returns that error's fields, if any. Anything else is a failure.
pub async fn expect_closed(
    stream: &mut TcpStream,
    timeout: Duration,
) -> Result<Option<BTreeMap<char, String>>> {
    tokio::time::timeout(timeout, async {
        let first = match read_message(stream).await? {
            None => return Ok(None),
            Some((b'E', body)) => error_fields(&body),
            Some((tag, body)) => {
                bail!(
                    "expected ErrorResponse or EOF, got {:?} {body:?}",
                    tag as char
                )
            }
        };
        match read_message(stream).await? {
            None => Ok(Some(first)),
            Some((tag, _)) => bail!(
                "connection stayed open after {first:?}: got {:?}",
                tag as char
            ),
        }
    })
    .await
    .with_context(|| format!("connection was not closed within {timeout:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn encodes_messages() {
        assert_eq!(password_message("ab"), [b'p', 0, 0, 0, 7, b'a', b'b', 0]);
        let startup = startup_message(&[("user", "u")]);
        assert_eq!(&startup[..8], [0, 0, 0, 16, 0, 3, 0, 0]);
        assert_eq!(&startup[8..], b"user\0u\0\0");
    }

    #[tokio::test]
    async fn talks_to_the_shared_cluster() {
        crate::services::ensure_services().unwrap();
        let mut s = TcpStream::connect(crate::services::POSTGRES_ADDR)
            .await
            .unwrap();
        s.write_all(&startup_message(&[
            ("user", "postgres"),
            ("database", "postgres"),
        ]))
        .await
        .unwrap();
        // Trust auth: AuthenticationOk, then parameters ... ReadyForQuery.
        let (tag, body) = read_message(&mut s).await.unwrap().unwrap();
        assert_eq!((tag, body), (b'R', vec![0, 0, 0, 0]));
        while read_message(&mut s).await.unwrap().unwrap().0 != b'Z' {}
        s.write_all(&query_message("SELECT 1/0")).await.unwrap();
        let (tag, body) = read_message(&mut s).await.unwrap().unwrap();
        assert_eq!(tag, b'E');
        assert_eq!(error_fields(&body)[&'C'], "22012");

        // A bogus protocol version: the server answers FATAL and closes.
        let mut s = TcpStream::connect(crate::services::POSTGRES_ADDR)
            .await
            .unwrap();
        s.write_all(&[0, 0, 0, 8, 0, 9, 0, 9]).await.unwrap();
        let fields = expect_closed(&mut s, Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(fields[&'S'], "FATAL");
    }
}
