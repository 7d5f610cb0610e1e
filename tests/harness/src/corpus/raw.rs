//! A raw-protocol session through the gateway, for what no driver sends: a pipeline of
//! several Parse/Bind/Execute groups closed by a single Sync.
//!
//! That is where "a denied Parse behaves like a PostgreSQL error at Parse" shows: the server
//! (here, the gateway) must answer ErrorResponse, skip every later message up to the Sync, and
//! then answer ReadyForQuery — so a statement queued *after* the attack in the same pipeline
//! must not run either.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::conn::ConnParams;
use crate::wire::{error_fields, password_message, query_message, read_message, startup_message};

const TIMEOUT: Duration = Duration::from_secs(20);

/// One backend message: its tag and body.
pub type Message = (u8, Vec<u8>);

/// An authenticated plain-TCP session (cleartext password, as the gateway asks for one).
pub struct RawSession {
    stream: TcpStream,
}

impl RawSession {
    pub async fn connect(params: &ConnParams) -> Result<RawSession> {
        let addr = format!("{}:{}", params.host, params.port);
        let mut stream = TcpStream::connect(&addr).await?;
        let startup = [
            ("user", params.user.as_str()),
            ("database", params.dbname.as_str()),
        ];
        stream.write_all(&startup_message(&startup)).await?;
        let mut session = RawSession { stream };
        loop {
            match session.next().await? {
                (b'R', body) if body.get(..4) == Some(&[0, 0, 0, 3][..]) => {
                    let password = params.password.as_deref().unwrap_or_default();
                    session
                        .stream
                        .write_all(&password_message(password))
                        .await?;
                }
                (b'R', body) if body.get(..4) == Some(&[0, 0, 0, 0][..]) => {}
                (b'Z', _) => return Ok(session),
                (b'E', body) => bail!("login failed: {:?}", error_fields(&body)),
                (b'S' | b'K' | b'N', _) => {}
                (tag, body) => bail!("unexpected {:?} during login: {body:?}", tag as char),
            }
        }
    }

    pub async fn send(&mut self, messages: &[Vec<u8>]) -> Result<()> {
        self.stream.write_all(&messages.concat()).await?;
        Ok(())
    }

    /// Reads up to and including ReadyForQuery, leaving out ParameterStatus, notices and
    /// notifications.
    pub async fn until_ready(&mut self) -> Result<Vec<Message>> {
        let mut out = Vec::new();
        loop {
            let message = self.next().await?;
            let ready = message.0 == b'Z';
            if !matches!(message.0, b'S' | b'N' | b'A') {
                out.push(message);
            }
            if ready {
                return Ok(out);
            }
        }
    }

    /// Reads up to and including ReadyForQuery, keeping every message (notices too).
    pub async fn until_ready_all(&mut self) -> Result<Vec<Message>> {
        let mut out = Vec::new();
        loop {
            let message = self.next().await?;
            let ready = message.0 == b'Z';
            out.push(message);
            if ready {
                return Ok(out);
            }
        }
    }

    /// Runs `sql` as a simple Query and fails unless it succeeds.
    pub async fn simple(&mut self, sql: &str) -> Result<Vec<Message>> {
        self.send(&[query_message(sql)]).await?;
        let reply = self.until_ready().await?;
        if let Some((_, body)) = reply.iter().find(|(tag, _)| *tag == b'E') {
            bail!("{sql:?} failed: {:?}", error_fields(body));
        }
        Ok(reply)
    }

    pub async fn terminate(mut self) -> Result<()> {
        self.stream.write_all(&[b'X', 0, 0, 0, 4]).await?;
        Ok(())
    }

    async fn next(&mut self) -> Result<Message> {
        tokio::time::timeout(TIMEOUT, read_message(&mut self.stream))
            .await
            .with_context(|| format!("no message within {TIMEOUT:?}"))??
            .context("the connection closed")
    }
}

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = u32::try_from(body.len() + 4).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Parse (unnamed statement, no parameter types) + Bind (unnamed portal, no parameters,
/// text results) + Execute (no row limit).
pub fn parse_bind_execute(sql: &str) -> Vec<Vec<u8>> {
    let mut parse = b"\0".to_vec();
    parse.extend_from_slice(sql.as_bytes());
    parse.extend_from_slice(&[0, 0, 0]);
    let bind = [0u8, 0, 0, 0, 0, 0, 0, 0];
    let execute = [0u8, 0, 0, 0, 0];
    vec![
        message(b'P', &parse),
        message(b'B', &bind),
        message(b'E', &execute),
    ]
}

/// Parse + Bind (every result column in binary when `binary`, else text) + Describe of the
/// portal + Execute + Sync: what a driver sends for one extended-protocol query.
pub fn extended_query(sql: &str, binary: bool) -> Vec<Vec<u8>> {
    let mut parse = b"\0".to_vec();
    parse.extend_from_slice(sql.as_bytes());
    parse.extend_from_slice(&[0, 0, 0]);
    // portal "", statement "", no parameter formats, no parameters, one result format.
    let bind = [0u8, 0, 0, 0, 0, 0, 0, 1, 0, u8::from(binary)];
    let describe = [b'P', 0];
    let execute = [0u8, 0, 0, 0, 0];
    vec![
        message(b'P', &parse),
        message(b'B', &bind),
        message(b'D', &describe),
        message(b'E', &execute),
        sync(),
    ]
}

pub fn sync() -> Vec<u8> {
    message(b'S', &[])
}

/// The text of every DataRow's columns, joined with `|`.
pub fn data_rows(messages: &[Message]) -> Vec<String> {
    let row = |body: &[u8]| -> Option<String> {
        let count = u16::from_be_bytes([*body.first()?, *body.get(1)?]);
        let mut at = 2usize;
        let mut cells = Vec::new();
        for _ in 0..count {
            let len = i32::from_be_bytes(body.get(at..at + 4)?.try_into().ok()?);
            at += 4;
            let Ok(len) = usize::try_from(len) else {
                cells.push("NULL".to_owned());
                continue;
            };
            cells.push(String::from_utf8_lossy(body.get(at..at + len)?).into_owned());
            at += len;
        }
        Some(cells.join("|"))
    };
    let rows = messages.iter().filter(|(tag, _)| *tag == b'D');
    rows.map(|(_, body)| row(body).unwrap_or_else(|| "<malformed DataRow>".to_owned()))
        .collect()
}

/// Message tags as characters, e.g. `12DCEZ`.
pub fn tags(messages: &[Message]) -> String {
    messages.iter().map(|(tag, _)| *tag as char).collect()
}

/// The pipeline `before; attack; after` with one Sync: only `before` may run, then exactly
/// one ErrorResponse, then ReadyForQuery outside a transaction; the session stays usable.
/// Returns the ErrorResponse fields for the caller to check.
pub async fn pipeline_denial(
    params: &ConnParams,
    setup: &[String],
    sql: &str,
) -> Result<std::collections::BTreeMap<char, String>> {
    let mut session = RawSession::connect(params).await?;
    for statement in setup {
        session.simple(statement).await.context("setup")?;
    }
    let mut messages = parse_bind_execute("SELECT 'before'");
    messages.extend(parse_bind_execute(sql));
    messages.extend(parse_bind_execute("SELECT 'after'"));
    messages.push(sync());
    session.send(&messages).await?;
    let reply = session.until_ready().await?;
    let shown = || format!("tags {} rows {:?}", tags(&reply), data_rows(&reply));
    ensure!(tags(&reply) == "12DCEZ", "expected 12DCEZ: {}", shown());
    ensure!(data_rows(&reply) == ["before"], "{}", shown());
    let status = reply.last().and_then(|(_, body)| body.first().copied());
    ensure!(
        status == Some(b'I'),
        "ReadyForQuery status {status:?}, not idle"
    );
    let error = reply
        .iter()
        .find(|(tag, _)| *tag == b'E')
        .map(|(_, body)| error_fields(body))
        .context("no ErrorResponse")?;
    let alive = session.simple("SELECT 'alive'").await?;
    ensure!(
        data_rows(&alive) == ["alive"],
        "session unusable after the pipeline: {}",
        tags(&alive)
    );
    session.terminate().await?;
    Ok(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_extended_messages() {
        let msgs = parse_bind_execute("SELECT 1");
        assert_eq!(msgs[0], b"P\0\0\0\x10\0SELECT 1\0\0\0");
        assert_eq!(msgs[1], b"B\0\0\0\x0c\0\0\0\0\0\0\0\0");
        assert_eq!(msgs[2], b"E\0\0\0\x09\0\0\0\0\0");
        assert_eq!(sync(), b"S\0\0\0\x04");
    }

    /// Against PostgreSQL itself: an error at Parse skips the rest of the pipeline, which is
    /// the behaviour the gateway must copy for a denied Parse.
    #[tokio::test]
    async fn a_parse_error_skips_to_sync_on_postgres() {
        crate::services::ensure_services().unwrap();
        let db = crate::db::TestDb::create("kit_raw").await.unwrap();
        let mut session = RawSession::connect(&db.params()).await.unwrap();
        let mut messages = parse_bind_execute("SELECT 'before'");
        messages.extend(parse_bind_execute("SELEC 'broken'"));
        messages.extend(parse_bind_execute("SELECT 'after'"));
        messages.push(sync());
        session.send(&messages).await.unwrap();
        let reply = session.until_ready().await.unwrap();
        assert_eq!(tags(&reply), "12DCEZ");
        assert_eq!(data_rows(&reply), ["before"]);
        let rows = data_rows(&session.simple("SELECT 'alive', NULL").await.unwrap());
        assert_eq!(rows, ["alive|NULL"]);
        session.terminate().await.unwrap();
    }
}
