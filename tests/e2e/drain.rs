//! Countersign run like production, from the shipped example configs
//! (deploy/examples): two control-plane replicas on one fresh PostgreSQL
//! store and one Redis, with mutual TLS and OIDC as shipped, and two enrolled
//! gateways (staging, prod) that know both replicas.
//!
//! Only addresses, ports, paths, the database URLs and the OIDC issuer (a
//! real provider started by the test) are changed, through
//! `COUNTERSIGN_<FIELD>` variables or by substituting those strings in a
//! copy of the file; every other setting is as shipped.
//!
//! The walk: prod is reachable only through the prod gateway; a statement is
//! held for review; `SIGTERM` drains replica 1 and the gateway moves to
//! replica 2, where bob approves and the statement completes. Then replica 1
//! starts again, a second statement is held, replica 2 is killed with
//! `kill -9`, and the approval on replica 1 releases the statement.

#![cfg(test)]

use anyhow::{Context, Result, ensure};
use countersign_testkit::http::{pending_review, request};
use countersign_testkit::oidc_provider::{ClientSpec, OidcProvider};
use countersign_testkit::{
    AdminCli, ConnParams, Psql, TestDb, cli_stdout, ensure_services, eventually, free_port,
    spawn_server, wait_port,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_countersign");
/// As shipped in deploy/examples/control-plane.toml.
const ADMIN: &str = "replace-with-at-least-32-random-characters-0001";
const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const POLICY: &str = "[[access]]\nname = \"engineers\"\nmembers = [\"user:alice@example.com\"]\nlevel = \"read-write\"\nenvironments = [\"prod\", \"staging\"]\n\n\
[[guardrail]]\nname = \"deletes-need-review\"\nmatch = { kinds = [\"delete\"] }\naction = \"review\"\napprovers = [\"group:dba\"]\n";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples")
}

/// A copy of an example config with `substitutions` applied; each must occur.
fn example_copy(name: &str, substitutions: &[(&str, &str)], dest: &Path) -> Result<PathBuf> {
    let mut text = std::fs::read_to_string(examples().join(name))?;
    for (from, to) in substitutions {
        ensure!(text.contains(from), "{name} no longer contains {from:?}");
        text = text.replace(from, to);
    }
    let path = dest.join(name);
    std::fs::write(&path, text)?;
    Ok(path)
}

struct Replica {
    config: PathBuf,
    env: Vec<(String, String)>,
    http: u16,
    grpc: u16,
    log: PathBuf,
}

impl Replica {
    async fn start(&self) -> Result<Child> {
        let child = spawn_server(
            BIN.as_ref(),
            &[
                "control-plane",
                "--config",
                self.config.to_str().context("path")?,
            ],
            &self.env,
            &self.log,
        )?;
        wait_port(self.http, &self.log).await?;
        wait_port(self.grpc, &self.log).await?;
        Ok(child)
    }

    fn server(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

struct Gateway {
    pg: u16,
    log: PathBuf,
}

impl Gateway {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Starts the gateway of example `gateway-<environment>.toml`, enrolling it.
async fn start_gateway(
    dir: &Path,
    environment: &str,
    substitutions: &[(&str, &str)],
    urls: &str,
    ca: &Path,
    token: &str,
) -> Result<(Gateway, Child)> {
    let own = dir.join(environment);
    std::fs::create_dir_all(&own)?;
    let config = example_copy(&format!("gateway-{environment}.toml"), substitutions, &own)?;
    let (pg, metrics) = (free_port()?, free_port()?);
    let log = own.join("gateway.log");
    let env = [
        ("COUNTERSIGN_CONTROL_PLANE_URLS", urls.to_owned()),
        ("COUNTERSIGN_CONTROL_PLANE_CA", ca.display().to_string()),
        ("COUNTERSIGN_ENROLLMENT_TOKEN", token.to_owned()),
        (
            "COUNTERSIGN_STATE_DIR",
            own.join("state").display().to_string(),
        ),
        (
            "COUNTERSIGN_SPOOL_DIR",
            own.join("spool").display().to_string(),
        ),
        ("COUNTERSIGN_PG_ADDR", format!("127.0.0.1:{pg}")),
        ("COUNTERSIGN_METRICS_ADDR", format!("127.0.0.1:{metrics}")),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    let child = spawn_server(
        BIN.as_ref(),
        &["gateway", "--config", config.to_str().context("path")?],
        &env,
        &log,
    )?;
    wait_port(pg, &log).await?;
    Ok((Gateway { pg, log }, child))
}

/// A statement run through psql in the background (it may be held).
fn run_in_background(
    conn: &ConnParams,
    sql: &str,
) -> tokio::task::JoinHandle<Result<countersign_testkit::CmdOutput>> {
    let psql = Psql::new(conn).command(sql);
    tokio::spawn(async move { psql.run().await })
}

async fn approve(server: &str, bearer: &str, review: &str) -> Result<()> {
    let resp = request(
        "POST",
        &format!("{server}/api/v1/reviews/{review}/approve"),
        Some(bearer),
        Some(&serde_json::json!({})),
    )
    .await?;
    ensure!(
        resp.status == 200,
        "approve {review}: {} {}",
        resp.status,
        resp.body
    );
    Ok(())
}

async fn signal(child: &Child, name: &str) -> Result<()> {
    let pid = child.id().context("the process has exited already")?;
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .await?;
    ensure!(status.success(), "kill -{name} {pid} failed");
    Ok(())
}

#[tokio::test]
async fn replicas_drain_and_die_without_dropping_held_statements() -> Result<()> {
    ensure_services()?;
    let dir = tempfile::tempdir()?;
    let store = TestDb::create("cs_drain_store").await?;
    let prod_db = TestDb::create("cs_drain_prod").await?;
    let staging_db = TestDb::create("cs_drain_staging").await?;
    prod_db
        .execute("CREATE TABLE orders (id int primary key); INSERT INTO orders SELECT generate_series(1, 10)")
        .await?;
    staging_db
        .execute("CREATE TABLE orders (id int primary key)")
        .await?;

    // A private Redis, so that nothing else shares its channels.
    let redis_port = free_port()?;
    let _redis = Command::new("redis-server")
        .args([
            "--port",
            &redis_port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting redis-server")?;
    wait_port(redis_port, Path::new("/dev/null")).await?;

    // The example's [oidc] names a provider; a real one stands in for it.
    let provider = OidcProvider::start(
        &[ClientSpec {
            client_id: "countersign".to_owned(),
            client_secret: "replace-with-the-client-secret".to_owned(),
            redirect_uris: vec!["https://countersign.example.com/auth/callback".to_owned()],
        }],
        &BTreeMap::new(),
        0,
    )
    .await?;

    // Both replicas from one copy of the example: the gateway CA's server
    // certificate names `localhost` instead of the example's service name.
    let cp_config = example_copy(
        "control-plane.toml",
        &[
            ("\"countersign-cp.internal\"", "\"localhost\""),
            ("https://login.example.com/realms/acme", &provider.issuer),
        ],
        dir.path(),
    )?;
    let mut replicas = Vec::new();
    for name in ["cp-1", "cp-2"] {
        let (http, grpc) = (free_port()?, free_port()?);
        let env = [
            ("COUNTERSIGN_DATABASE_URL", store.url()),
            ("COUNTERSIGN_HTTP_ADDR", format!("127.0.0.1:{http}")),
            ("COUNTERSIGN_GRPC_ADDR", format!("127.0.0.1:{grpc}")),
            (
                "COUNTERSIGN_REDIS_URL",
                format!("redis://127.0.0.1:{redis_port}"),
            ),
        ]
        .map(|(k, v)| (k.to_owned(), v))
        .to_vec();
        replicas.push(Replica {
            config: cp_config.clone(),
            env,
            http,
            grpc,
            log: dir.path().join(format!("{name}.log")),
        });
    }
    let (one, two) = (&replicas[0], &replicas[1]);
    let mut one_process = one.start().await?;
    let mut two_process = two.start().await?;

    let ca = dir.path().join("control-plane-ca.pem");
    std::fs::write(
        &ca,
        cli_stdout(
            BIN.as_ref(),
            &["gateway", "ca", "--server", &one.server(), "--token", ADMIN],
        )
        .await?,
    )?;
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, POLICY)?;
    let policy_server = two.server();
    let via_two = AdminCli {
        bin: BIN.as_ref(),
        server: &policy_server,
        admin_token: ADMIN,
    };
    via_two.apply_policy(&policy).await?;
    let server = one.server();
    let minter = AdminCli {
        bin: BIN.as_ref(),
        server: &server,
        admin_token: ADMIN,
    };
    let alice = minter.mint(ALICE, &[], Some("30m")).await?;
    let bob = minter.mint(BOB, &["dba"], Some("30m")).await?;

    // The prod gateway serves TLS to clients with its own certificate.
    let tls_dir = dir.path().join("tls");
    std::fs::create_dir_all(&tls_dir)?;
    let (cert, key) = (tls_dir.join("gateway.crt"), tls_dir.join("gateway.key"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .await
        .context("running openssl")?;
    ensure!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let urls = format!(
        "https://localhost:{},https://localhost:{}",
        one.grpc, two.grpc
    );
    let prod_upstream = prod_db.upstream_url();
    let staging_upstream = staging_db.upstream_url();
    let (cert_path, key_path) = (cert.display().to_string(), key.display().to_string());
    let enroll = |environment: &'static str| minter.enroll_token(environment, "10m");
    let (prod, _prod_process) = start_gateway(
        dir.path(),
        "prod",
        &[
            (
                "postgres://app:change-me@10.0.0.5:5432/app?sslmode=require",
                &prod_upstream,
            ),
            ("/etc/countersign/tls/gateway.crt", &cert_path),
            ("/etc/countersign/tls/gateway.key", &key_path),
        ],
        &urls,
        &ca,
        &enroll("prod").await?,
    )
    .await?;
    let (staging, _staging_process) = start_gateway(
        dir.path(),
        "staging",
        &[(
            "postgres://app:change-me@127.0.0.1:5432/app_staging?sslmode=prefer",
            &staging_upstream,
        )],
        &urls,
        &ca,
        &enroll("staging").await?,
    )
    .await?;

    // prod only through the prod gateway, and only over TLS (as shipped).
    let prod_conn = ConnParams::new("127.0.0.1", prod.pg, ALICE, "pg-prod")
        .with_password(&alice)
        .with_sslmode("require");
    let out = eventually(Duration::from_secs(30), || {
        let conn = prod_conn.clone();
        async move {
            Psql::new(&conn)
                .command("SELECT count(*) FROM orders")
                .output()
                .await
        }
    })
    .await
    .with_context(|| prod.log())?;
    assert_eq!(out.trim(), "10", "{out}");
    let staging_conn = ConnParams::new("127.0.0.1", staging.pg, ALICE, "pg-staging")
        .with_password(&alice)
        .with_sslmode("prefer");
    let out = eventually(Duration::from_secs(30), || {
        let conn = staging_conn.clone();
        async move {
            Psql::new(&conn)
                .command("SELECT count(*) FROM orders")
                .output()
                .await
        }
    })
    .await
    .with_context(|| staging.log())?;
    assert_eq!(out.trim(), "0", "{out}");
    let refused = Psql::new(&staging_conn.clone().with_dbname("pg-prod"))
        .command("SELECT count(*) FROM orders")
        .run()
        .await?;
    assert!(
        !refused.success() && refused.stderr.contains("pg-prod"),
        "the staging gateway must refuse pg-prod: {}",
        refused.combined()
    );

    // 1. A statement held for review; replica 1 (the gateway's first URL)
    //    drains on SIGTERM; bob approves on replica 2.
    let first = "DELETE FROM orders WHERE id = 1";
    let held = run_in_background(&prod_conn, first);
    let review = pending_review(&two.server(), &bob, first, Duration::from_secs(30)).await?;
    signal(&one_process, "TERM").await?;
    let status = tokio::time::timeout(Duration::from_secs(25), one_process.wait())
        .await
        .context("replica 1 did not exit within its grace period")??;
    assert!(
        status.success(),
        "replica 1 exited with {status}: {}",
        one.log()
    );
    assert!(one.log().contains("draining"), "{}", one.log());
    eventually(Duration::from_secs(10), || async {
        ensure!(
            prod.log()
                .contains("control-plane replica unavailable; moving to the next one"),
            "{}",
            prod.log()
        );
        Ok(())
    })
    .await?;
    assert!(!held.is_finished(), "the held statement ended early");
    approve(&two.server(), &bob, &review).await?;
    let done = tokio::time::timeout(Duration::from_secs(30), held)
        .await
        .with_context(|| prod.log())???;
    assert!(
        done.success() && done.stdout.contains("DELETE 1"),
        "{}\n{}",
        done.combined(),
        prod.log()
    );

    // 2. Replica 1 comes back; another held statement; replica 2 (which the
    //    gateway uses now) is killed; the approval on replica 1 releases it.
    one_process = one.start().await?;
    let second = "DELETE FROM orders WHERE id = 2";
    let held = run_in_background(&prod_conn, second);
    let review = pending_review(&one.server(), &bob, second, Duration::from_secs(30)).await?;
    two_process.start_kill()?;
    two_process.wait().await?;
    approve(&one.server(), &bob, &review).await?;
    let done = tokio::time::timeout(Duration::from_secs(30), held)
        .await
        .with_context(|| prod.log())???;
    assert!(
        done.success() && done.stdout.contains("DELETE 1"),
        "{}\n{}",
        done.combined(),
        prod.log()
    );
    let left: i64 = prod_db
        .client()
        .await?
        .query_one("SELECT count(*) FROM orders", &[])
        .await?
        .get(0);
    assert_eq!(left, 8, "both approved deletes ran, once each");
    drop(one_process);
    Ok(())
}
