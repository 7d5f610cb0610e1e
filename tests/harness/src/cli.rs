//! The `countersign` client commands, run against a [`DevServer`]: tokens, audit search,
//! and the HTTP API.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::audit::{AuditEvent, AuditQuery, parse_jsonl};
use crate::dev_server::DevServer;
use crate::http::{HttpResponse, request};
use crate::process::{CmdOutput, run};

/// The admin's `countersign` commands against any control plane: a [`DevServer`]'s, or one
/// a test started as its own process.
pub struct AdminCli<'a> {
    /// The `countersign` binary.
    pub bin: &'a Path,
    /// The control plane's HTTP URL.
    pub server: &'a str,
    pub admin_token: &'a str,
}

impl AdminCli<'_> {
    /// Runs `countersign ARGS...`; its stdout, or an error with all its output.
    async fn run(&self, args: &[&str]) -> Result<String> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        Ok(run(self.bin, &args, &[], None, Duration::from_secs(60))
            .await?
            .ok()?
            .stdout)
    }

    /// `countersign policy apply -f FILE`.
    pub async fn apply_policy(&self, file: &Path) -> Result<()> {
        let file = file.to_str().context("policy path is not UTF-8")?;
        let args = ["policy", "apply", "--server", self.server, "--token"];
        let mut args = args.to_vec();
        args.extend([self.admin_token, "-f", file]);
        self.run(&args).await?;
        Ok(())
    }

    /// A one-time enrollment token for a gateway of `environment`, valid for `ttl`.
    pub async fn enroll_token(&self, environment: &str, ttl: &str) -> Result<String> {
        let args = ["gateway", "enroll-token", "create", "--server", self.server];
        let mut args = args.to_vec();
        args.extend(["--token", self.admin_token, "--environment", environment]);
        args.extend(["--ttl", ttl]);
        Ok(self.run(&args).await?.trim().to_owned())
    }

    /// `countersign audit search ... --format jsonl`.
    pub async fn audit_search(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>> {
        let extra = query.cli_args();
        let mut args = vec!["audit", "search", "--server", self.server];
        args.extend(["--token", self.admin_token, "--format", "jsonl"]);
        args.extend(extra.iter().map(String::as_str));
        parse_jsonl(&self.run(&args).await?)
    }

    /// A token for `identity` in `groups`, valid for `ttl` (the server's default when
    /// `None`).
    pub async fn mint(&self, identity: &str, groups: &[&str], ttl: Option<&str>) -> Result<String> {
        let mut args = vec!["token", "create", "--server", self.server];
        args.extend(["--admin-token", self.admin_token, "--identity", identity]);
        for group in groups {
            args.extend(["--group", group]);
        }
        if let Some(ttl) = ttl {
            args.extend(["--ttl", ttl]);
        }
        let out = self.run(&args).await?;
        let token = out.trim();
        if token.is_empty() || token.contains(char::is_whitespace) {
            bail!("`token create` should print just the token: {out:?}");
        }
        Ok(token.to_owned())
    }
}

impl DevServer {
    /// The admin's commands against this server.
    pub fn admin(&self) -> AdminCli<'_> {
        AdminCli {
            bin: self.bin(),
            server: self.http_url(),
            admin_token: self.admin_token(),
        }
    }

    /// Runs `countersign ARGS...` (not `dev`); returns its output whatever the exit status.
    pub async fn cli(&self, args: &[&str]) -> Result<CmdOutput> {
        self.cli_with_env(args, &[]).await
    }

    /// Like [`DevServer::cli`] with extra environment variables.
    pub async fn cli_with_env(&self, args: &[&str], env: &[(&str, String)]) -> Result<CmdOutput> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        run(self.bin(), &args, env, None, Duration::from_secs(60)).await
    }

    /// `countersign token create --identity EMAIL [--group G]... [--ttl TTL]`; returns the token.
    pub async fn mint_token(
        &self,
        identity: &str,
        groups: &[&str],
        ttl: Option<&str>,
    ) -> Result<String> {
        self.admin().mint(identity, groups, ttl).await
    }

    /// `countersign token revoke TOKEN_OR_ID`.
    pub async fn revoke_token(&self, token_or_id: &str) -> Result<()> {
        let args = [
            "token",
            "revoke",
            "--server",
            self.http_url(),
            "--admin-token",
        ];
        let mut args = args.to_vec();
        args.extend([self.admin_token(), token_or_id]);
        self.cli(&args).await?.ok()?;
        Ok(())
    }

    /// `countersign audit search ... --format jsonl` with the admin token.
    pub async fn audit_search(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>> {
        self.admin().audit_search(query).await
    }

    /// Polls [`DevServer::audit_search`] every 200 ms until `done` holds for the result, or
    /// fails after `timeout` showing the last result. Audit upload is asynchronous.
    pub async fn wait_for_audit(
        &self,
        query: &AuditQuery,
        timeout: Duration,
        done: impl Fn(&[AuditEvent]) -> bool,
    ) -> Result<Vec<AuditEvent>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let events = self.audit_search(query).await?;
            if done(&events) {
                return Ok(events);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "audit search {query:?} did not reach the expected state within {timeout:?}; last result:\n{events:#?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Sends `METHOD <http>/PATH` with the admin token unless `bearer` overrides it
    /// (`Some("")` sends no Authorization header).
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> Result<HttpResponse> {
        let url = format!("{}{path}", self.http_url());
        let token = match bearer {
            None => Some(self.admin_token()),
            Some("") => None,
            Some(t) => Some(t),
        };
        request(method, &url, token, body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev_server::DevServerOpts;
    use std::os::unix::fs::PermissionsExt;

    /// A fake binary: `dev` prints a banner; `token create` prints a token; `audit search`
    /// prints two events.
    const FAKE: &str = r#"#!/bin/sh
case "$1" in
dev)
  echo admin_token=adm; echo user=u; echo user_token=t; echo http=http://127.0.0.1:9
  echo grpc=http://127.0.0.1:9; echo pg=127.0.0.1:9; echo resource=dev; echo 'psql: x'
  echo ready; exec sleep 600;;
token) echo "tok-$4-$6-$8";;
audit)
  echo '{"id":"s:1","session_id":"s","seq":1,"event":"session_started","identity":"a","resource":"dev","statement":null,"kinds":[],"decision":"allow","protocol":null,"parameter_count":null,"duration_us":null,"command_tag":null,"rows":null,"error":null,"at":"2025-01-01T00:00:00Z"}'
  echo "{\"id\":\"s:2\",\"session_id\":\"s\",\"seq\":2,\"event\":\"statement\",\"identity\":\"a\",\"resource\":\"dev\",\"statement\":\"$*\",\"kinds\":[\"select\"],\"decision\":\"allow\",\"protocol\":\"simple\",\"parameter_count\":0,\"duration_us\":1,\"command_tag\":\"SELECT 1\",\"rows\":1,\"error\":null,\"at\":\"2025-01-01T00:00:00Z\"}";;
esac
"#;

    #[tokio::test]
    async fn token_and_audit_helpers_parse_cli_output() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("fake");
        std::fs::write(&bin, FAKE).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let server = DevServer::start(&bin, DevServerOpts::default())
            .await
            .unwrap();

        let token = server.mint_token("a@x", &[], None).await.unwrap();
        assert_eq!(token, format!("tok-{}-adm-a@x", server.http_url()));

        let query = AuditQuery::identity("a@x");
        let events = server.audit_search(&query).await.unwrap();
        assert_eq!(events.len(), 2);
        let args = events[1].statement.as_deref().unwrap();
        assert!(
            args.contains("--token adm --format jsonl --identity a@x"),
            "{args}"
        );

        let found = server
            .wait_for_audit(&query, Duration::from_secs(2), |e| {
                e.iter().any(|e| e.is_statement())
            })
            .await
            .unwrap();
        assert_eq!(found, events);
        let err = server
            .wait_for_audit(&query, Duration::from_millis(300), |e| e.len() > 2)
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("did not reach"), "{err:#}");
    }
}
