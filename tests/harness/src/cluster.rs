//! A throwaway PostgreSQL cluster with password authentication and TLS.
//!
//! The shared cluster trusts everyone, so tests of the gateway's *upstream* authentication
//! (SCRAM, md5, TLS) need their own. Each [`PrivateCluster`] runs `initdb` as the
//! `postgres` OS user (initdb refuses root) into a temporary directory, listens on a free
//! port on 127.0.0.1 and is stopped with `pg_ctl -m immediate` on drop.
//!
//! Roles (each `LOGIN` with a random password, all allowed to use database `app`):
//! - `scram_user`: `host ... scram-sha-256`, password stored as SCRAM.
//! - `md5_user`: `host ... md5`, password stored as md5.
//! - `tls_user`: `hostssl ... scram-sha-256` only, so a plain connection is rejected.
//! - `postgres`: trust from 127.0.0.1 (setup and checks).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::conn::ConnParams;

/// Where Debian puts the server binaries.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A running private cluster. See the module docs for its roles.
pub struct PrivateCluster {
    dir: TempDir,
    port: u16,
    scram_password: String,
    md5_password: String,
    tls_password: String,
}

impl PrivateCluster {
    /// Creates and starts a cluster. Takes a few seconds. Blocking.
    pub fn start() -> Result<PrivateCluster> {
        let dir = tempfile::Builder::new()
            .prefix("countersign-pg-")
            .tempdir()?;
        run_checked(
            Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path()),
        )?;
        let mut cluster = PrivateCluster {
            dir,
            port: 0,
            scram_password: random_password(),
            md5_password: random_password(),
            tls_password: random_password(),
        };
        cluster.init()?;
        // Another process may take the port between probing and binding; retry then.
        let mut last_error = None;
        for _ in 0..3 {
            cluster.port = crate::free_port()?;
            cluster.configure_port()?;
            match cluster.pg_ctl(
                &["-w", "-t", "60", "-l"],
                Some(&cluster.log_path()),
                "start",
            ) {
                Ok(()) => {
                    cluster.create_roles()?;
                    return Ok(cluster);
                }
                Err(e) => last_error = Some(e),
            }
        }
        let log = std::fs::read_to_string(cluster.log_path()).unwrap_or_default();
        bail!("private cluster did not start: {last_error:?}\n--- server log ---\n{log}")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn scram_password(&self) -> &str {
        &self.scram_password
    }

    pub fn md5_password(&self) -> &str {
        &self.md5_password
    }

    pub fn tls_password(&self) -> &str {
        &self.tls_password
    }

    /// Every role password, for "this secret must not leak" checks.
    pub fn passwords(&self) -> [&str; 3] {
        [&self.scram_password, &self.md5_password, &self.tls_password]
    }

    /// `postgres://scram_user:PW@127.0.0.1:PORT/app?sslmode=disable`
    pub fn scram_url(&self) -> String {
        self.url("scram_user", &self.scram_password, "disable")
    }

    /// `postgres://md5_user:PW@127.0.0.1:PORT/app?sslmode=disable`
    pub fn md5_url(&self) -> String {
        self.url("md5_user", &self.md5_password, "disable")
    }

    /// `postgres://tls_user:PW@127.0.0.1:PORT/app?sslmode=require`
    pub fn tls_url(&self) -> String {
        self.url("tls_user", &self.tls_password, "require")
    }

    fn url(&self, user: &str, password: &str, sslmode: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/app?sslmode={sslmode}",
            self.port
        )
    }

    /// Direct connection parameters for `role` to database `app` (no password set).
    pub fn params(&self, role: &str) -> ConnParams {
        ConnParams::new("127.0.0.1", self.port, role, "app")
    }

    /// Stops the server (`pg_ctl stop -m fast`: sessions are disconnected, everything
    /// committed is kept). Blocking.
    pub fn stop(&self) -> Result<()> {
        self.pg_ctl(&["-w", "-t", "60", "-m", "fast"], None, "stop")
    }

    /// Starts the server again after [`Self::stop`], on the same port. Blocking.
    pub fn start_again(&self) -> Result<()> {
        self.pg_ctl(&["-w", "-t", "60", "-l"], Some(&self.log_path()), "start")
    }

    /// `postgres://postgres@127.0.0.1:PORT/app?sslmode=disable` (trust).
    pub fn postgres_url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/app?sslmode=disable",
            self.port
        )
    }

    /// The server log so far (useful in failure messages).
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn init(&self) -> Result<()> {
        let data = self.data_dir();
        as_postgres(
            Command::new(format!("{PG_BIN}/initdb"))
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--no-sync",
                ]),
        )?;
        let cert = data.join("server.crt");
        let key = data.join("server.key");
        run_checked(
            Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                ])
                .args(["-subj", "/CN=localhost", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&cert),
        )?;
        run_checked(
            Command::new("chown")
                .arg("postgres:postgres")
                .arg(&cert)
                .arg(&key),
        )?;
        run_checked(Command::new("chmod").arg("0600").arg(&key))?;
        std::fs::write(
            data.join("pg_hba.conf"),
            "local   all  all                     trust\n\
             hostssl all  tls_user    127.0.0.1/32 scram-sha-256\n\
             host    all  scram_user  127.0.0.1/32 scram-sha-256\n\
             host    all  md5_user    127.0.0.1/32 md5\n\
             host    all  postgres    127.0.0.1/32 trust\n",
        )?;
        Ok(())
    }

    /// Writes `postgresql.auto.conf` (read after postgresql.conf) with the port and settings.
    fn configure_port(&self) -> Result<()> {
        let conf = format!(
            "port = {port}\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{dir}'\n\
             password_encryption = 'scram-sha-256'\n\
             ssl = on\n\
             ssl_cert_file = 'server.crt'\n\
             ssl_key_file = 'server.key'\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             shared_buffers = '16MB'\n\
             max_connections = 50\n",
            port = self.port,
            dir = self.dir.path().display(),
        );
        let path = self.data_dir().join("postgresql.auto.conf");
        std::fs::write(&path, conf)?;
        run_checked(Command::new("chown").arg("postgres:postgres").arg(&path))?;
        Ok(())
    }

    fn pg_ctl(&self, flags: &[&str], log: Option<&Path>, action: &str) -> Result<()> {
        let mut cmd = Command::new(format!("{PG_BIN}/pg_ctl"));
        cmd.arg("-D").arg(self.data_dir()).args(flags);
        if let Some(log) = log {
            cmd.arg(log);
        }
        as_postgres(cmd.arg(action))
    }

    fn create_roles(&self) -> Result<()> {
        let roles = [
            // password_encryption is scram-sha-256 here (postgresql.auto.conf).
            format!(
                "CREATE ROLE scram_user LOGIN PASSWORD '{}'",
                self.scram_password
            ),
            format!(
                "CREATE ROLE tls_user LOGIN PASSWORD '{}'",
                self.tls_password
            ),
            format!(
                "SET password_encryption = 'md5'; CREATE ROLE md5_user LOGIN PASSWORD '{}'",
                self.md5_password
            ),
            "CREATE DATABASE app".to_owned(),
            "GRANT ALL ON DATABASE app TO scram_user, md5_user, tls_user".to_owned(),
        ];
        self.psql_as_postgres("postgres", &roles)?;
        let grant = "GRANT ALL ON SCHEMA public TO scram_user, md5_user, tls_user".to_owned();
        self.psql_as_postgres("app", &[grant])
    }

    /// Runs each statement as its own `-c` (CREATE DATABASE cannot run in a transaction).
    fn psql_as_postgres(&self, dbname: &str, statements: &[String]) -> Result<()> {
        let mut cmd = Command::new("psql");
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1"]).arg(format!(
            "host=127.0.0.1 port={} user=postgres dbname={dbname} sslmode=disable",
            self.port
        ));
        for sql in statements {
            cmd.arg("-c").arg(sql);
        }
        run_checked(cmd.env_remove("PGPASSWORD"))
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        if let Err(e) = self.pg_ctl(&["-m", "immediate"], None, "stop") {
            eprintln!("warning: could not stop private cluster: {e:#}");
        }
        // TempDir removes the directory; root may delete the postgres-owned files.
    }
}

fn random_password() -> String {
    format!("pw{}", uuid::Uuid::new_v4().simple())
}

fn as_postgres(cmd: &mut Command) -> Result<()> {
    let mut wrapped = Command::new("runuser");
    wrapped
        .args(["-u", "postgres", "--"])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    // runuser keeps the caller's cwd, which postgres may not be able to read.
    wrapped.current_dir("/tmp");
    run_checked(&mut wrapped)
}

fn run_checked(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} exited with {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::Psql;
    use tokio_postgres::error::SqlState;

    #[tokio::test]
    async fn roles_authenticate_as_configured() {
        let cluster = PrivateCluster::start().unwrap();

        // SCRAM and md5 work with the right password and store the expected hash kind.
        for (role, password, prefix) in [
            ("scram_user", cluster.scram_password(), "SCRAM-SHA-256$"),
            ("md5_user", cluster.md5_password(), "md5"),
        ] {
            let (client, _task) = cluster
                .params(role)
                .with_password(password)
                .connect()
                .await
                .unwrap();
            let row = client
                .query_one("SELECT current_user::text", &[])
                .await
                .unwrap();
            assert_eq!(row.get::<_, String>(0), role);
            client
                .batch_execute(&format!("CREATE TABLE t_{role} (x int)"))
                .await
                .unwrap();
            let (admin, _t) = cluster.params("postgres").connect().await.unwrap();
            let row = admin
                .query_one(
                    "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
                    &[&role],
                )
                .await
                .unwrap();
            assert!(row.get::<_, String>(0).starts_with(prefix), "{role}");

            let wrong = cluster
                .params(role)
                .with_password("wrong")
                .try_connect()
                .await;
            crate::conn::expect_fatal(wrong, &[&SqlState::INVALID_PASSWORD]).unwrap();
        }

        // tls_user: only over TLS.
        let tls = cluster
            .params("tls_user")
            .with_password(cluster.tls_password());
        let out = Psql::new(&tls.clone().with_sslmode("require"))
            .command("SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .run()
            .await
            .unwrap()
            .ok()
            .unwrap();
        assert_eq!(out.stdout, "tls_user|t\n");
        let out = Psql::new(&tls)
            .command("SELECT 1")
            .run()
            .await
            .unwrap()
            .failed()
            .unwrap();
        assert!(out.stderr.contains("no encryption"), "{out:?}");

        assert!(cluster.scram_url().contains(cluster.scram_password()));
        assert!(cluster.tls_url().ends_with("/app?sslmode=require"));
        let dir = cluster.dir.path().to_owned();
        drop(cluster);
        assert!(!dir.exists());
    }
}
