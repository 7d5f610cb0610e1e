//! Test harness for Countersign's integration and end-to-end tests.
//!
//! - [`services`]: fail (never skip) when PostgreSQL or Redis is down.
//! - [`db`]: a fresh database per test on the shared cluster ([`TestDb`]).
//! - [`cluster`]: a private cluster with SCRAM, md5 and TLS for upstream-auth tests.
//! - [`dev_server`]: runs `countersign dev` and parses its banner; [`cli`] adds the
//!   token, audit and HTTP helpers on top.
//! - [`server`]: a control plane or gateway a test starts as its own process, waiting for
//!   its port, and client commands against it.
//! - [`process`], [`conn`]: psql, pgbench and tokio-postgres with the same parameters.
//! - [`wire`]: raw protocol bytes for malformed-input tests.
//! - [`exposure`]: checks that a client session cannot see a secret.
//! - [`workload`]: SQL scripts and typed rows shared by the end-to-end tests.
//! - [`fixture`]: database + dev server, the usual end-to-end setup.
//! - [`oidc_provider`]: a real OpenID provider (npm `oidc-provider`) and a scripted browser.
//! - [`browser`]: headless Chromium driven by playwright-core scripts (tests/console/).
//! - [`corpus`]: the guardrail attack and legitimate-statement corpora and their runners.
//!
//! Helpers return `anyhow::Result` rather than panicking, so tests use `?` and the message
//! carries the captured output of whatever failed.

pub mod audit;
pub mod browser;
pub mod cli;
pub mod cluster;
pub mod conn;
pub mod corpus;
pub mod db;
pub mod dev_server;
pub mod exposure;
pub mod fixture;
pub mod http;
pub mod npm;
pub mod oidc;
pub mod oidc_provider;
pub mod process;
pub mod server;
pub mod services;
pub mod wire;
pub mod workload;

pub use audit::{AuditEvent, AuditQuery};
pub use cli::AdminCli;
pub use cluster::PrivateCluster;
pub use conn::{ConnParams, expect_fatal, expect_sqlstate, query_count};
pub use db::TestDb;
pub use dev_server::{DevServer, DevServerOpts};
pub use exposure::ensure_session_hides;
pub use fixture::{Fixture, RESOURCE};
pub use process::{CmdOutput, Psql, check_pgbench_run, ensure_same_output, pgbench};
pub use server::{
    NO_ENV, cli_stdout, default_session_threads, session_threads, spawn_server, wait_port,
};
pub use services::ensure_services;

/// A port on 127.0.0.1 that was free a moment ago (bind port 0, read it, release it).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Retries `attempt` every 100 ms until it succeeds or `timeout` passes; then returns the
/// last error. For state that changes asynchronously (revocation, a query becoming active).
pub async fn eventually<T, F, Fut>(
    timeout: std::time::Duration,
    mut attempt: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(e.context(format!("still failing after {timeout:?}")));
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
}

/// Fails if any of `secrets` occurs in `text`; `what` names the text in the message.
pub fn ensure_no_secret(text: &str, secrets: &[&str], what: &str) -> anyhow::Result<()> {
    for secret in secrets {
        if !secret.is_empty() && text.contains(secret) {
            anyhow::bail!(
                "{what} exposes a secret ({} chars) in:\n{text}",
                secret.len()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn eventually_retries_then_gives_up() {
        let mut calls = 0;
        let value = eventually(Duration::from_secs(5), || {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    anyhow::bail!("not yet {n}")
                } else {
                    Ok(n)
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(value, 3);
        let never = || async { anyhow::bail!("never") as anyhow::Result<()> };
        let err = eventually(Duration::from_millis(250), never)
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("never"), "{err:#}");
    }

    #[test]
    fn finds_secrets() {
        assert!(ensure_no_secret("a pw123 b", &["pw123"], "x").is_err());
        assert!(ensure_no_secret("a pw12 b", &["pw123", ""], "x").is_ok());
    }
}
