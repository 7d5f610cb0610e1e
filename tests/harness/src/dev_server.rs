//! Runs `countersign dev` as a child process and reads its startup banner.
//!
//! The banner contract (stdout, one `key=value` per line, then `ready`):
//! `admin_token`, `user`, `user_token`, `http`, `grpc`, `pg`, one `resource` per upstream,
//! a `psql: ...` hint line, and `ready`. Logs go to stderr, which is written to a file
//! next to the data directory and printed when the server is dropped (libtest shows it
//! only for failing tests).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;
use tokio::sync::mpsc;

use crate::conn::ConnParams;

mod banner;

pub use banner::{Banner, parse_banner};

/// How long `countersign dev` may take to print `ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Options for [`DevServer::start`].
#[derive(Clone, Debug)]
pub struct DevServerOpts {
    /// `(name, url)` pairs passed as `--upstream NAME=URL`, in order.
    pub upstreams: Vec<(String, String)>,
    /// `--user`, if set (the binary defaults to `dev@localhost`).
    pub user: Option<String>,
    /// `--admin-token` (a random one by default).
    pub admin_token: String,
    /// Extra arguments appended after the others.
    pub extra_args: Vec<String>,
}

impl Default for DevServerOpts {
    fn default() -> Self {
        DevServerOpts {
            upstreams: Vec::new(),
            user: None,
            admin_token: format!("admin-{}", uuid::Uuid::new_v4().simple()),
            extra_args: Vec::new(),
        }
    }
}

impl DevServerOpts {
    pub fn upstream(mut self, name: &str, url: &str) -> Self {
        self.upstreams.push((name.to_owned(), url.to_owned()));
        self
    }

    pub fn user(mut self, email: &str) -> Self {
        self.user = Some(email.to_owned());
        self
    }

    fn args(&self, data_dir: &Path) -> Vec<String> {
        let mut args = vec!["dev".to_owned(), "--data-dir".to_owned()];
        args.push(data_dir.display().to_string());
        for flag in ["--pg-addr", "--http-addr", "--grpc-addr"] {
            args.push(flag.to_owned());
            args.push("127.0.0.1:0".to_owned());
        }
        args.push("--admin-token".to_owned());
        args.push(self.admin_token.clone());
        for (name, url) in &self.upstreams {
            args.push("--upstream".to_owned());
            args.push(format!("{name}={url}"));
        }
        if let Some(user) = &self.user {
            args.push("--user".to_owned());
            args.push(user.clone());
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }
}

/// A running `countersign dev`; killed on drop. The data directory lives as long as this.
pub struct DevServer {
    bin: PathBuf,
    opts: DevServerOpts,
    work: TempDir,
    child: Option<Child>,
    banner: Banner,
}

impl DevServer {
    /// Starts `bin dev ...` with a fresh data directory and waits for `ready`.
    pub async fn start(bin: impl AsRef<Path>, opts: DevServerOpts) -> Result<DevServer> {
        let work = tempfile::Builder::new()
            .prefix("countersign-dev-")
            .tempdir()?;
        std::fs::create_dir(work.path().join("data"))?;
        let bin = bin.as_ref().to_owned();
        let (child, banner) = spawn(&bin, &opts, work.path()).await?;
        Ok(DevServer {
            bin,
            opts,
            work,
            child: Some(child),
            banner,
        })
    }

    /// Kills the server and starts it again on the same data directory (new ports).
    pub async fn restart(&mut self) -> Result<()> {
        self.stop();
        let (child, banner) = spawn(&self.bin, &self.opts, self.work.path()).await?;
        self.child = Some(child);
        self.banner = banner;
        Ok(())
    }

    pub fn banner(&self) -> &Banner {
        &self.banner
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    pub fn admin_token(&self) -> &str {
        &self.banner.admin_token
    }

    pub fn user(&self) -> &str {
        &self.banner.user
    }

    pub fn user_token(&self) -> &str {
        &self.banner.user_token
    }

    pub fn http_url(&self) -> &str {
        &self.banner.http
    }

    pub fn pg_addr(&self) -> SocketAddr {
        self.banner.pg
    }

    pub fn resources(&self) -> &[String] {
        &self.banner.resources
    }

    pub fn data_dir(&self) -> PathBuf {
        self.work.path().join("data")
    }

    /// How many session threads the running server has (see [`crate::session_threads`]).
    pub fn session_threads(&self) -> Result<usize> {
        crate::session_threads(self.child.as_ref().context("server not running")?.id())
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr_log(&self) -> String {
        std::fs::read_to_string(self.work.path().join("stderr.log")).unwrap_or_default()
    }

    /// Gateway connection parameters (no TLS) for `user` with `token` as password.
    pub fn gateway_params(&self, user: &str, token: &str, dbname: &str) -> ConnParams {
        let addr = self.pg_addr();
        ConnParams::new(&addr.ip().to_string(), addr.port(), user, dbname).with_password(token)
    }

    /// Gateway parameters for the banner's user and token and the first resource.
    pub fn default_params(&self) -> ConnParams {
        let resource = self
            .banner
            .resources
            .first()
            .map(String::as_str)
            .unwrap_or("dev");
        self.gateway_params(&self.banner.user, &self.banner.user_token, resource)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        self.stop();
        let log = self.stderr_log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(200)..];
        eprintln!(
            "---- countersign dev stderr (last {} lines) ----",
            tail.len()
        );
        for line in tail {
            eprintln!("{line}");
        }
    }
}

async fn spawn(bin: &Path, opts: &DevServerOpts, work: &Path) -> Result<(Child, Banner)> {
    let log_path = work.join("stderr.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let mut cmd = Command::new(bin);
    for (var, _) in crate::process::countersign_vars() {
        cmd.env_remove(var);
    }
    let mut child = cmd
        .args(opts.args(&work.join("data")))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().context("child has no stdout")?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    // Keeps draining stdout after `ready` so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });

    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    let mut lines = Vec::new();
    let outcome = loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(line)) => {
                let done = line == "ready";
                lines.push(line);
                if done {
                    break parse_banner(&lines);
                }
            }
            Ok(None) => {
                // stdout closed: the child exited (or closed stdout) before `ready`.
                let status = wait_briefly(&mut child);
                break Err(anyhow::anyhow!("exited before `ready` ({status})"));
            }
            Err(_) => break Err(anyhow::anyhow!("no `ready` within {READY_TIMEOUT:?}")),
        }
    };
    match outcome {
        Ok(banner) => Ok((child, banner)),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!(
                "countersign dev failed to start: {e:#}\ncommand: {} {}\n--- stdout ---\n{}\n--- stderr ---\n{stderr}",
                bin.display(),
                opts.args(&work.join("data")).join(" "),
                lines.join("\n"),
            )
        }
    }
}

fn wait_briefly(child: &mut Child) -> String {
    for _ in 0..50 {
        if let Ok(Some(status)) = child.try_wait() {
            return status.to_string();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    "still running".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A stand-in for the binary: prints a banner (echoing its arguments into it) and sleeps.
    fn fake_binary(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("fake-countersign");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[tokio::test]
    async fn starts_restarts_and_kills_a_server() {
        let dir = tempfile::tempdir().unwrap();
        let bin = fake_binary(
            dir.path(),
            r#"echo "starting $*" >&2
echo "$$" > "$3/pid"
echo "admin_token=${11}"; echo user=dev@localhost; echo user_token=t$$
echo http=http://127.0.0.1:1; echo grpc=http://127.0.0.1:2; echo pg=127.0.0.1:3
echo resource=db; echo 'psql: hint'; echo ready; echo after-ready
exec sleep 600"#,
        );
        let opts = DevServerOpts::default().upstream("db", "postgres://x@h:1/d");
        let mut server = DevServer::start(&bin, opts.clone()).await.unwrap();
        assert_eq!(server.admin_token(), opts.admin_token);
        assert_eq!(server.resources(), ["db"]);
        assert_eq!(server.default_params().dbname, "db");
        assert!(
            server
                .stderr_log()
                .contains("--upstream db=postgres://x@h:1/d")
        );
        let first_token = server.user_token().to_owned();
        let pid_file = server.data_dir().join("pid");
        let first_pid = std::fs::read_to_string(&pid_file).unwrap();

        server.restart().await.unwrap();
        assert_ne!(server.user_token(), first_token);
        assert_eq!(server.stderr_log().matches("starting dev").count(), 2);
        assert!(!process_alive(first_pid.trim()));

        let pid = std::fs::read_to_string(&pid_file).unwrap();
        drop(server);
        assert!(!process_alive(pid.trim()));
    }

    fn process_alive(pid: &str) -> bool {
        // A killed child that was reaped has no /proc entry.
        Path::new(&format!("/proc/{pid}")).exists()
    }

    #[tokio::test]
    async fn early_exit_reports_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let bin = fake_binary(
            dir.path(),
            "echo admin_token=x; echo 'bad flag --frobnicate' >&2; exit 2",
        );
        let err = DevServer::start(&bin, DevServerOpts::default())
            .await
            .err()
            .unwrap();
        let msg = format!("{err:#}");
        assert!(msg.contains("exited before `ready`"), "{msg}");
        assert!(msg.contains("bad flag --frobnicate"), "{msg}");
    }
}
