//! Checks that the shared services the suite needs are up.
//!
//! The suite never skips: if PostgreSQL or Redis is down, every test fails with a
//! message that says how to start them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The shared PostgreSQL cluster (trust auth for `postgres` on 127.0.0.1).
pub const POSTGRES_ADDR: &str = "127.0.0.1:5432";
/// The shared Redis server.
pub const REDIS_ADDR: &str = "127.0.0.1:6379";

const START_POSTGRES: &str =
    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start";
const START_REDIS: &str =
    "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no";

/// Fails unless PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) answer.
///
/// PostgreSQL is probed with an SSLRequest (it must answer `S` or `N`), Redis with `PING`.
pub fn ensure_services() -> Result<()> {
    check_services(POSTGRES_ADDR, REDIS_ADDR)
}

fn check_services(postgres: &str, redis: &str) -> Result<()> {
    let mut problems = Vec::new();
    if let Err(e) = probe_postgres(postgres) {
        problems.push(format!(
            "PostgreSQL is not reachable at {postgres} ({e:#}); start it with:\n    {START_POSTGRES}"
        ));
    }
    if let Err(e) = probe_redis(redis) {
        problems.push(format!(
            "Redis is not reachable at {redis} ({e:#}); start it with:\n    {START_REDIS}"
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("required services are down:\n{}", problems.join("\n"))
    }
}

fn connect(addr: &str) -> Result<TcpStream> {
    let addr: SocketAddr = addr.parse()?;
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    stream.set_write_timeout(Some(Duration::from_secs(3)))?;
    Ok(stream)
}

fn probe_postgres(addr: &str) -> Result<()> {
    let mut stream = connect(addr)?;
    // SSLRequest: length 8, code 80877103.
    stream.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])?;
    let mut answer = [0u8; 1];
    stream
        .read_exact(&mut answer)
        .context("no answer to SSLRequest")?;
    match answer[0] {
        b'S' | b'N' => Ok(()),
        other => bail!("unexpected answer {other:#04x} to SSLRequest"),
    }
}

fn probe_redis(addr: &str) -> Result<()> {
    let mut stream = connect(addr)?;
    stream.write_all(b"PING\r\n")?;
    let mut answer = [0u8; 7];
    stream
        .read_exact(&mut answer)
        .context("no answer to PING")?;
    if &answer == b"+PONG\r\n" {
        Ok(())
    } else {
        bail!(
            "unexpected answer {:?} to PING",
            String::from_utf8_lossy(&answer)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_services_are_up() {
        ensure_services().unwrap();
    }

    #[test]
    fn down_services_fail_with_start_commands() {
        let closed = format!("127.0.0.1:{}", crate::free_port().unwrap());
        let msg = format!("{:#}", check_services(&closed, &closed).unwrap_err());
        assert!(msg.contains(START_POSTGRES), "{msg}");
        assert!(msg.contains(START_REDIS), "{msg}");
        // Each probe checks the protocol, not just the port.
        let msg = format!(
            "{:#}",
            check_services(REDIS_ADDR, POSTGRES_ADDR).unwrap_err()
        );
        assert!(
            msg.contains("PostgreSQL is not reachable") && msg.contains("Redis is not"),
            "{msg}"
        );
    }
}
