//! `countersign` server processes that a test starts itself (a control plane, a gateway),
//! and the client commands it runs against them.

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::process::{Child, Command};

use crate::eventually;
use crate::process::{countersign_vars, run};

/// For [`spawn_server`] when the child needs no variables of its own.
pub const NO_ENV: &[(&str, &str)] = &[];

/// Starts `bin ARGS` as a server: stdin and stdout closed, stderr written to `log`, killed
/// when the returned handle is dropped. The child inherits none of the test's own
/// `COUNTERSIGN_*` and `OTEL_*` variables, so the caller's shell cannot change what it runs;
/// it gets `env` on top.
pub fn spawn_server<K, V>(bin: &Path, args: &[&str], env: &[(K, V)], log: &Path) -> Result<Child>
where
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let stderr =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true);
    let inherited = countersign_vars().map(|(k, _)| k).chain(
        std::env::vars_os()
            .map(|(k, _)| k)
            .filter(|k| k.to_string_lossy().starts_with("OTEL_")),
    );
    for var in inherited.collect::<Vec<OsString>>() {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn()
        .with_context(|| format!("starting {} {args:?}", bin.display()))
}

/// Waits up to 60 s for something to accept connections on 127.0.0.1:`port`; on timeout
/// the error carries `log`, the server's stderr.
pub async fn wait_port(port: u16, log: &Path) -> Result<()> {
    eventually(Duration::from_secs(60), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map(|_| ())
            .with_context(|| std::fs::read_to_string(log).unwrap_or_default())
    })
    .await
}

/// Runs the client command `bin ARGS` and returns what it printed; an error with all its
/// output when it exits non-zero.
pub async fn cli_stdout(bin: &Path, args: &[&str]) -> Result<String> {
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    Ok(run(bin, &args, &[], None, Duration::from_secs(60))
        .await?
        .ok()?
        .stdout)
}

/// The gateway's default number of session threads on this machine: one per core but one,
/// and at least one.
pub fn default_session_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, usize::from)
        .saturating_sub(1)
        .max(1)
}

/// How many session threads the `countersign` process `pid` has: threads named
/// `countersign-session-N`, which Linux shows cut to 15 bytes. They are all running once the
/// gateway serves its first session (`countersign dev`: once it prints `ready`).
pub fn session_threads(pid: u32) -> Result<usize> {
    let mut n = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let comm = std::fs::read_to_string(task?.path().join("comm")).unwrap_or_default();
        n += usize::from(comm.starts_with("countersign-ses"));
    }
    Ok(n)
}
