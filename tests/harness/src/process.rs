//! Runs client programs (psql, pgbench, the countersign CLI, curl) and captures their output.
//!
//! A run only errors when the program cannot be started or exceeds its timeout; a non-zero
//! exit is reported in [`CmdOutput`] so tests can assert on failures too.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::AsyncWriteExt;

use crate::conn::ConnParams;

/// libpq variables removed from every client's environment so the caller's shell cannot
/// change where a test connects.
const LIBPQ_VARS: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGDATABASE",
    "PGSSLMODE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGAPPNAME",
    "PGCONNECT_TIMEOUT",
    "PGTZ",
    "PGCLIENTENCODING",
    "PSQLRC",
];

/// `COUNTERSIGN_*` variables of this process. Children never inherit them, so settings in
/// the caller's shell cannot change what a test runs against.
pub fn countersign_vars() -> impl Iterator<Item = (OsString, OsString)> {
    std::env::vars_os().filter(|(k, _)| k.to_string_lossy().starts_with("COUNTERSIGN_"))
}

/// What a finished program printed and how it exited.
pub struct CmdOutput {
    pub program: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Returns `self` if the program exited 0, otherwise an error carrying all its output.
    pub fn ok(self) -> Result<Self> {
        if self.success() {
            Ok(self)
        } else {
            bail!("{self:?}")
        }
    }

    /// Returns `self` if the program failed, otherwise an error carrying all its output.
    pub fn failed(self) -> Result<Self> {
        if self.success() {
            bail!("expected failure, but: {self:?}")
        } else {
            Ok(self)
        }
    }

    /// stdout followed by stderr.
    pub fn combined(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl fmt::Debug for CmdOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.program, self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `program args...` with `env`, optional stdin, and a timeout (the child is killed
/// when it runs out).
pub async fn run(
    program: impl AsRef<OsStr>,
    args: &[OsString],
    env: &[(&str, String)],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<CmdOutput> {
    let program = program.as_ref();
    let shown = std::iter::once(program.to_string_lossy().into_owned())
        .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for var in LIBPQ_VARS {
        cmd.env_remove(var);
    }
    for (var, _) in countersign_vars() {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().with_context(|| format!("starting `{shown}`"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A child may exit before reading everything; that shows in its status instead.
        let _ = pipe.write_all(input).await;
    }
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .with_context(|| format!("`{shown}` did not finish within {timeout:?}"))??;
    Ok(CmdOutput {
        program: shown,
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Fails unless two runs (typically direct and through the gateway) exited the same way and
/// printed the same bytes on stdout and stderr.
pub fn ensure_same_output(direct: &CmdOutput, gateway: &CmdOutput) -> Result<()> {
    let same = direct.status.code() == gateway.status.code()
        && direct.stdout == gateway.stdout
        && direct.stderr == gateway.stderr;
    if !same {
        bail!("outputs differ\n===== direct =====\n{direct:?}\n===== gateway =====\n{gateway:?}");
    }
    Ok(())
}

/// A psql invocation: `psql -X [-A -t] -v ON_ERROR_STOP=1 "<conninfo>" ...`, password via
/// `PGPASSWORD`.
#[derive(Clone)]
pub struct Psql {
    conn: ConnParams,
    args: Vec<OsString>,
    stdin: Option<Vec<u8>>,
    on_error_stop: bool,
    tuples_only: bool,
    timeout: Duration,
}

impl Psql {
    pub fn new(conn: &ConnParams) -> Self {
        Psql {
            conn: conn.clone(),
            args: Vec::new(),
            stdin: None,
            on_error_stop: true,
            tuples_only: true,
            timeout: Duration::from_secs(60),
        }
    }

    /// Adds `-c SQL`; each `-c` is sent as its own simple-protocol Query.
    pub fn command(mut self, sql: &str) -> Self {
        self.args.push("-c".into());
        self.args.push(sql.into());
        self
    }

    /// Adds `-f PATH`.
    pub fn file(mut self, path: impl AsRef<OsStr>) -> Self {
        self.args.push("-f".into());
        self.args.push(path.as_ref().to_owned());
        self
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    /// `ON_ERROR_STOP` (default on).
    pub fn on_error_stop(mut self, on: bool) -> Self {
        self.on_error_stop = on;
        self
    }

    /// Default aligned output with headers and row counts instead of `-At`.
    pub fn aligned(mut self) -> Self {
        self.tuples_only = false;
        self
    }

    /// Runs psql, requires exit status 0, and returns stdout.
    pub async fn output(self) -> Result<String> {
        Ok(self.run().await?.ok()?.stdout)
    }

    pub async fn run(self) -> Result<CmdOutput> {
        let mut args: Vec<OsString> = vec!["-X".into()];
        if self.tuples_only {
            args.push("-At".into());
        }
        args.push("-v".into());
        args.push(format!("ON_ERROR_STOP={}", u8::from(self.on_error_stop)).into());
        args.push(self.conn.conninfo().into());
        args.extend(self.args);
        let env: Vec<_> = self
            .conn
            .password
            .iter()
            .map(|p| ("PGPASSWORD", p.clone()))
            .collect();
        run("psql", &args, &env, self.stdin.as_deref(), self.timeout).await
    }
}

/// Runs `pgbench ARGS...` against `conn` (passed through libpq environment variables).
pub async fn pgbench(conn: &ConnParams, args: &[&str]) -> Result<CmdOutput> {
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    run(
        "pgbench",
        &args,
        &conn.libpq_env(),
        None,
        Duration::from_secs(300),
    )
    .await
}

/// Checks a finished `pgbench` run: exit 0, every transaction processed, none failed.
pub fn check_pgbench_run(out: &CmdOutput, expected_transactions: u64) -> Result<()> {
    if !out.success() {
        bail!("pgbench failed: {out:?}");
    }
    let processed = format!(
        "number of transactions actually processed: {expected_transactions}/{expected_transactions}"
    );
    if !out.stdout.contains(&processed) {
        bail!("pgbench output lacks `{processed}`: {out:?}");
    }
    if !out.stdout.contains("number of failed transactions: 0 ") {
        bail!("pgbench reports failed transactions: {out:?}");
    }
    if out.stderr.contains("error") || out.stderr.contains("ERROR") {
        bail!("pgbench printed errors: {out:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn run_captures_output_status_and_stdin() {
        let args: Vec<OsString> = vec!["-c".into(), "cat; echo oops >&2; exit 3".into()];
        let out = run("sh", &args, &[], Some(b"hello"), Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(out.stdout, "hello");
        assert_eq!(out.stderr, "oops\n");
        assert_eq!(out.status.code(), Some(3));
        assert!(out.ok().is_err());
    }

    #[tokio::test]
    async fn run_times_out() {
        let args: Vec<OsString> = vec!["5".into()];
        let err = run("sleep", &args, &[], None, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("did not finish"), "{err:#}");
    }

    #[tokio::test]
    async fn psql_and_pgbench_against_shared_cluster() {
        crate::services::ensure_services().unwrap();
        let db = crate::db::TestDb::create("kit_psql").await.unwrap();
        let out = Psql::new(&db.params())
            .command("SELECT 1 AS one, 'two'")
            .run()
            .await
            .unwrap()
            .ok()
            .unwrap();
        assert_eq!(out.stdout, "1|two\n");
        let out = Psql::new(&db.params())
            .command("SELECT 1/0")
            .run()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(out.stderr.contains("division by zero"), "{out:?}");

        pgbench(&db.params(), &["-i", "-s", "1", "-q"])
            .await
            .unwrap()
            .ok()
            .unwrap();
        let out = pgbench(
            &db.params(),
            &["-n", "-c", "2", "-j", "2", "-t", "20", "-M", "prepared"],
        )
        .await
        .unwrap();
        check_pgbench_run(&out, 40).unwrap();
        assert!(check_pgbench_run(&out, 41).is_err());
    }
}
