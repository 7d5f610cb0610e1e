//! Kill tests for the audit trail, with the real binaries in production mode
//! (`countersign control-plane` on PostgreSQL and `countersign gateway`, each its own
//! process): `kill -9` either one under a pgbench write load and start it again, stop
//! the audit store for 30 s, fill the spool. The audit rows must equal the statements
//! that ran, with no duplicates, and `countersign audit verify` must pass.
//!
//! The workload inserts `(client_id, n)` into `ledger`, with `n` counting per pgbench
//! client, in the simple protocol: each statement's text names the row it inserted, so
//! the audit rows can be matched against the table row by row.

#![cfg(test)]

use anyhow::{Context, Result, bail, ensure};
use countersign_testkit::cluster::PrivateCluster;
use countersign_testkit::{
    CmdOutput, ConnParams, TestDb, check_pgbench_run, ensure_services, eventually, free_port,
    pgbench, spawn_server, wait_port,
};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_countersign");
/// The servers log at `info`, so a failure shows what they did.
const LOG_INFO: &[(&str, &str)] = &[("RUST_LOG", "info")];
const ADMIN: &str = "kill-admin-token-0123456789abcdef012345";
const GATEWAY: &str = "kill-gateway-token-0123456789abcdef0123";
const IDENTITY: &str = "alice@example.com";
const CLIENTS: usize = 4;
const SCRIPT: &str = "\\set n :n + 1\nINSERT INTO ledger VALUES (:client_id, :n);\n";
const ORPHAN: &str = "gateway stopped before the outcome was known";

/// The control plane's store: a database on the shared cluster, or a private cluster
/// that can be stopped.
enum Store {
    Shared(TestDb),
    Private(PrivateCluster),
}

impl Store {
    fn url(&self) -> String {
        match self {
            Self::Shared(db) => db.url(),
            Self::Private(c) => c.postgres_url(),
        }
    }

    async fn client(&self) -> Result<tokio_postgres::Client> {
        match self {
            Self::Shared(db) => db.client().await,
            Self::Private(c) => Ok(c.params("postgres").connect().await?.0),
        }
    }
}

/// A control plane and a gateway as separate processes, restartable.
struct Deployment {
    dir: tempfile::TempDir,
    store: Store,
    app: TestDb,
    http: u16,
    pg: u16,
    cp: Option<Child>,
    gw: Option<Child>,
    gw_log: PathBuf,
    starts: usize,
}

impl Deployment {
    async fn start() -> Result<Self> {
        Self::start_with("", "").await
    }

    /// With the control plane's store on a private cluster.
    async fn start_on(cluster: PrivateCluster) -> Result<Self> {
        Self::start_in(Store::Private(cluster), "", "").await
    }

    /// With `resource_extra` lines added to the resource in the control plane's config,
    /// and `gateway_extra` lines to the gateway's.
    async fn start_with(resource_extra: &str, gateway_extra: &str) -> Result<Self> {
        ensure_services()?;
        let store = Store::Shared(TestDb::create("cs_kill_store").await?);
        Self::start_in(store, resource_extra, gateway_extra).await
    }

    async fn start_in(store: Store, resource_extra: &str, gateway_extra: &str) -> Result<Self> {
        ensure_services()?;
        let app = TestDb::create("cs_kill_app").await?;
        app.execute("CREATE TABLE ledger (client int, n int, PRIMARY KEY (client, n))")
            .await?;
        let dir = tempfile::tempdir()?;
        let (http, grpc, pg) = (free_port()?, free_port()?, free_port()?);
        std::fs::write(
            dir.path().join("control-plane.toml"),
            format!(
                "http_addr = \"127.0.0.1:{http}\"\ngrpc_addr = \"127.0.0.1:{grpc}\"\n\
                 database_url = \"{}\"\nadmin_token = \"{ADMIN}\"\n\
                 gateway_token = \"{GATEWAY}\"\n\n[[resource]]\nname = \"pg-prod\"\nenvironment = \"prod\"\n{resource_extra}",
                store.url()
            ),
        )?;
        std::fs::write(
            dir.path().join("gateway.toml"),
            format!(
                "gateway_id = \"gw-kill\"\nenvironment = \"prod\"\n\
                 control_plane_url = \"http://127.0.0.1:{grpc}\"\ngateway_token = \"{GATEWAY}\"\n\
                 pg_addr = \"127.0.0.1:{pg}\"\nspool_dir = \"{}\"\n{gateway_extra}\n\
                 [[upstream]]\nname = \"pg-prod\"\nurl = \"{}\"\n",
                dir.path().join("spool").display(),
                app.upstream_url()
            ),
        )?;
        let mut d = Self {
            dir,
            store,
            app,
            http,
            pg,
            cp: None,
            gw: None,
            gw_log: PathBuf::new(),
            starts: 0,
        };
        d.start_control_plane().await?;
        d.start_gateway().await?;
        let policy = d.dir.path().join("policy.toml");
        std::fs::write(
            &policy,
            format!(
                "[[access]]\nname = \"alice-prod\"\nmembers = [\"user:{IDENTITY}\"]\n\
                 level = \"read-write\"\nenvironments = [\"prod\"]\n"
            ),
        )?;
        d.cli(&[
            "policy",
            "apply",
            "--token",
            ADMIN,
            "-f",
            policy.to_str().context("path")?,
        ])
        .await?
        .ok()?;
        std::fs::write(d.dir.path().join("insert.sql"), SCRIPT)?;
        Ok(d)
    }

    fn server(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    fn log(&mut self, what: &str) -> PathBuf {
        self.starts += 1;
        self.dir.path().join(format!("{what}-{}.log", self.starts))
    }

    async fn start_control_plane(&mut self) -> Result<()> {
        let log = self.log("cp");
        let config = self.dir.path().join("control-plane.toml");
        self.cp = Some(spawn_server(
            BIN.as_ref(),
            &[
                "control-plane",
                "--config",
                config.to_str().context("path")?,
            ],
            LOG_INFO,
            &log,
        )?);
        wait_port(self.http, &log).await
    }

    async fn start_gateway(&mut self) -> Result<()> {
        let log = self.log("gw");
        let config = self.dir.path().join("gateway.toml");
        self.gw = Some(spawn_server(
            BIN.as_ref(),
            &["gateway", "--config", config.to_str().context("path")?],
            LOG_INFO,
            &log,
        )?);
        self.gw_log = log.clone();
        wait_port(self.pg, &log).await
    }

    /// `kill -9`, and wait for the process to be gone.
    async fn kill(child: &mut Option<Child>) -> Result<()> {
        if let Some(mut c) = child.take() {
            c.kill().await?;
        }
        Ok(())
    }

    async fn cli(&self, args: &[&str]) -> Result<CmdOutput> {
        let mut full: Vec<&str> = args.to_vec();
        let server = self.server();
        if matches!(args.first(), Some(&"policy" | &"audit" | &"token")) {
            full.splice(2..2, ["--server", server.as_str()]);
        }
        let out = Command::new(BIN).args(&full).output().await?;
        Ok(CmdOutput {
            program: format!("countersign {full:?}"),
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    async fn conn(&self) -> Result<ConnParams> {
        let token = self
            .cli(&[
                "token",
                "create",
                "--admin-token",
                ADMIN,
                "--identity",
                IDENTITY,
                "--ttl",
                "30m",
            ])
            .await?
            .ok()?
            .stdout;
        Ok(ConnParams::new("127.0.0.1", self.pg, IDENTITY, "pg-prod").with_password(token.trim()))
    }

    /// Runs the insert workload through the gateway in the background.
    fn pgbench(
        &self,
        conn: &ConnParams,
        length: &[&str],
    ) -> tokio::task::JoinHandle<Result<CmdOutput>> {
        let conn = conn.clone();
        let script = self.dir.path().join("insert.sql");
        let mut args: Vec<String> = vec![
            "-n".into(),
            "-M".into(),
            "simple".into(),
            "-D".into(),
            "n=0".into(),
            "-c".into(),
            CLIENTS.to_string(),
            "-f".into(),
            script.display().to_string(),
        ];
        args.extend(length.iter().map(|s| (*s).to_owned()));
        tokio::spawn(async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            pgbench(&conn, &args).await
        })
    }

    async fn ledger(&self) -> Result<BTreeSet<(i32, i32)>> {
        let rows = self
            .app
            .client()
            .await?
            .query("SELECT client, n FROM ledger", &[])
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn ledger_count(&self) -> Result<i64> {
        Ok(self
            .app
            .client()
            .await?
            .query_one("SELECT count(*) FROM ledger", &[])
            .await?
            .get(0))
    }

    /// Waits until the ledger holds at least `rows` rows, while pgbench still runs.
    async fn wait_for_rows(
        &self,
        rows: i64,
        bench: &tokio::task::JoinHandle<Result<CmdOutput>>,
    ) -> Result<()> {
        eventually(Duration::from_secs(120), || async move {
            ensure!(!bench.is_finished(), "pgbench finished before the kill");
            let n = self.ledger_count().await?;
            ensure!(n >= rows, "{n} rows so far");
            Ok(())
        })
        .await
    }

    /// The statement rows stored for the identity.
    async fn audited(&self) -> Result<Audited> {
        let rows = self
            .store
            .client()
            .await?
            .query(
                "SELECT statement, coalesce(error, '') FROM audit_events \
                 WHERE event = 'statement' AND identity = $1",
                &[&IDENTITY],
            )
            .await?;
        let mut a = Audited::default();
        for r in rows {
            let (statement, error): (String, String) = (r.get(0), r.get(1));
            let key = parse_insert(&statement)?;
            let set = match error.as_str() {
                "" => &mut a.ok,
                ORPHAN => &mut a.orphaned,
                other => bail!("unexpected error on {statement:?}: {other}"),
            };
            ensure!(set.insert(key), "{statement:?} audited twice");
            a.rows += 1;
        }
        ensure!(
            a.ok.is_disjoint(&a.orphaned),
            "a statement is audited both with and without an outcome"
        );
        Ok(a)
    }

    /// Waits until the spool holds only the segment being written: everything else was
    /// acknowledged and deleted.
    async fn spool_drained(&self) -> Result<()> {
        let dir = self.dir.path().join("spool");
        eventually(Duration::from_secs(30), || async {
            let segments = std::fs::read_dir(&dir)?
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
                .count();
            ensure!(segments == 1, "{segments} spool segments");
            Ok(())
        })
        .await
    }

    async fn verify(&self) -> Result<()> {
        let out = self.cli(&["audit", "verify", "--token", ADMIN]).await?;
        ensure!(out.success(), "audit verify failed: {}", out.combined());
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Audited {
    ok: BTreeSet<(i32, i32)>,
    orphaned: BTreeSet<(i32, i32)>,
    rows: usize,
}

/// `(client, n)` from `INSERT INTO ledger VALUES (client, n);`.
fn parse_insert(statement: &str) -> Result<(i32, i32)> {
    let inner = statement
        .trim()
        .strip_prefix("INSERT INTO ledger VALUES (")
        .and_then(|s| s.split_once(')'))
        .map(|(values, _)| values)
        .with_context(|| format!("not a ledger insert: {statement:?}"))?;
    let (c, n) = inner.split_once(',').context("two values")?;
    Ok((c.trim().parse()?, n.trim().parse()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_the_control_plane_during_pgbench() -> Result<()> {
    const PER_CLIENT: usize = 3_000;
    let total = CLIENTS * PER_CLIENT;
    let mut d = Deployment::start().await?;
    let conn = d.conn().await?;
    let per_client = PER_CLIENT.to_string();
    let bench = d.pgbench(&conn, &["-t", &per_client]);
    d.wait_for_rows(1_000, &bench).await?;
    Deployment::kill(&mut d.cp).await?;
    // The gateway keeps serving and spooling while the control plane is gone.
    let before = d.ledger_count().await?;
    eventually(Duration::from_secs(60), || async {
        let n = d.ledger_count().await?;
        ensure!(n >= before + 1_000 || bench.is_finished(), "{n} rows");
        Ok(())
    })
    .await?;
    d.start_control_plane().await?;
    let out = bench.await??;
    check_pgbench_run(&out, total as u64)?;

    let ledger = d.ledger().await?;
    assert_eq!(ledger.len(), total);
    let audited = eventually(Duration::from_secs(60), || async {
        let a = d.audited().await?;
        ensure!(a.rows >= total, "{} of {total} audited so far", a.rows);
        Ok(a)
    })
    .await?;
    assert_eq!(audited.rows, total, "no duplicates");
    assert!(audited.orphaned.is_empty(), "{:?}", audited.orphaned);
    assert_eq!(
        audited.ok, ledger,
        "the audit rows are the statements that ran"
    );
    d.verify().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_the_gateway_during_writes_and_restart_it_over_its_spool() -> Result<()> {
    kill_the_gateway(Deployment::start().await?).await
}

/// The same on a `strict_audit` resource, whose statements wait for the fsync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_the_gateway_on_a_strict_resource() -> Result<()> {
    kill_the_gateway(Deployment::start_with("strict_audit = true\n", "").await?).await
}

async fn kill_the_gateway(mut d: Deployment) -> Result<()> {
    let conn = d.conn().await?;
    let bench = d.pgbench(&conn, &["-T", "60"]);
    d.wait_for_rows(2_000, &bench).await?;
    Deployment::kill(&mut d.gw).await?;
    // Every client loses its connection: pgbench gives up.
    let out = bench.await??;
    assert!(!out.success(), "{out:?}");
    d.start_gateway().await?;

    let ledger = d.ledger().await?;
    eventually(Duration::from_secs(60), || async {
        let a = d.audited().await?;
        let missing = ledger
            .iter()
            .filter(|k| !a.ok.contains(k) && !a.orphaned.contains(k))
            .count();
        ensure!(missing == 0, "{missing} inserted rows not audited yet");
        Ok(())
    })
    .await?;
    // Statements in flight at the kill (outcome unknown, so not in the ledger
    // when they did not commit) may be uploaded after every committed one:
    // count once the killed run's segments are acknowledged and deleted.
    d.spool_drained().await?;
    let audited = d.audited().await?;
    // Outcomes recorded as complete are rows that exist; rows whose outcome the gateway
    // never saw are the statements in flight at the kill, at most one per client.
    assert!(audited.ok.is_subset(&ledger));
    assert!(audited.orphaned.len() <= CLIENTS, "{:?}", audited.orphaned);
    assert_eq!(audited.rows, audited.ok.len() + audited.orphaned.len());
    eprintln!(
        "gateway killed: {} rows inserted, {} audited with their outcome, {} as outcome unknown",
        ledger.len(),
        audited.ok.len(),
        audited.orphaned.len()
    );
    assert!(audited.rows <= ledger.len() + CLIENTS);
    // Nothing more arrives later (a late duplicate would fail `audited`).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(d.audited().await?.rows, audited.rows);
    d.verify().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_refuses_statements_until_the_control_plane_takes_them() -> Result<()> {
    let mut d = Deployment::start_with("", "spool_max_bytes = 1048576\n").await?;
    let (client, _task) = d.conn().await?.connect().await?;
    Deployment::kill(&mut d.cp).await?;
    // 8 KiB statements: the 1 MiB spool fills after a few dozen.
    let pad = "x".repeat(8 * 1024);
    let mut inserted = 0;
    let refused = loop {
        let sql = format!("INSERT INTO ledger VALUES (9, {}) -- {pad}", inserted + 1);
        match client.simple_query(&sql).await {
            Ok(_) => inserted += 1,
            Err(e) => break e,
        }
        ensure!(inserted < 1_000, "the spool never filled");
    };
    let code = |e: &tokio_postgres::Error| {
        e.as_db_error()
            .map(|d| (d.code().code().to_owned(), d.message().to_owned()))
    };
    let (sqlstate, message) = code(&refused).context("a database error")?;
    assert_eq!(sqlstate, "53100", "{message}");
    assert!(message.contains("audit spool full"), "{message}");
    assert!(inserted > 10, "{inserted}");
    // The session stays open, and refuses statements while the spool is full.
    let again = client.simple_query("SELECT 1").await;
    assert_eq!(
        again.as_ref().err().and_then(code).map(|c| c.0).as_deref(),
        Some("53100")
    );
    assert!(!client.is_closed());
    let log = std::fs::read_to_string(&d.gw_log)?;
    assert!(log.contains("audit spool full"), "{log}");

    // Once the control plane is back and acknowledges, statements run again.
    d.start_control_plane().await?;
    let last = inserted + 1;
    eventually(Duration::from_secs(60), || {
        let client = &client;
        async move {
            client
                .simple_query(&format!("INSERT INTO ledger VALUES (9, {last})"))
                .await?;
            Ok(())
        }
    })
    .await?;
    let ledger = d.ledger().await?;
    assert_eq!(ledger.len(), last);
    let audited = eventually(Duration::from_secs(30), || async {
        let a = d.audited().await?;
        ensure!(a.rows >= last, "{} of {last} audited", a.rows);
        Ok(a)
    })
    .await?;
    assert_eq!(
        audited.ok, ledger,
        "refused statements neither ran nor left a row"
    );
    assert_eq!(audited.rows, last);
    d.verify().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_the_audit_store_for_30_seconds_under_load() -> Result<()> {
    let cluster = tokio::task::spawn_blocking(PrivateCluster::start).await??;
    let d = Deployment::start_on(cluster).await?;
    let conn = d.conn().await?;
    let bench = d.pgbench(&conn, &["-T", "45"]);
    d.wait_for_rows(1_000, &bench).await?;
    let Store::Private(cluster) = &d.store else {
        bail!("the store is not a private cluster");
    };
    tokio::task::block_in_place(|| cluster.stop())?;
    let stopped_at = d.ledger_count().await?;
    tokio::time::sleep(Duration::from_secs(30)).await;
    // Statements kept running while the store was down.
    let during = d.ledger_count().await? - stopped_at;
    tokio::task::block_in_place(|| cluster.start_again())?;
    let out = bench.await??;
    ensure!(out.success(), "{out:?}");
    ensure!(
        out.stdout.contains("number of failed transactions: 0 "),
        "{out:?}"
    );
    assert!(during > 1_000, "{during} rows while the store was down");

    let ledger = d.ledger().await?;
    let audited = eventually(Duration::from_secs(90), || async {
        let a = d.audited().await?;
        ensure!(
            a.rows >= ledger.len(),
            "{} of {} audited",
            a.rows,
            ledger.len()
        );
        Ok(a)
    })
    .await?;
    eprintln!(
        "store stopped for 30 s: {} rows inserted ({during} meanwhile), {} audited",
        ledger.len(),
        audited.rows
    );
    assert_eq!(audited.rows, ledger.len(), "no duplicates");
    assert!(audited.orphaned.is_empty());
    assert_eq!(audited.ok, ledger);
    d.spool_drained().await?;
    d.verify().await
}
