//! Two control-plane replicas on one PostgreSQL and one Redis: the gateway
//! watches a held statement through replica A while bob approves on replica
//! B. Redis pub/sub wakes A at once; with Redis gone, A's polling releases
//! the statement anyway.
//!
//! `review_latency_bench` (ignored; run by tests/bench/review-latency.sh)
//! measures approval-to-release latency over 200 approvals.

#![cfg(test)]

use anyhow::{Context, Result, bail};
use countersign_testkit::http::pending_review;
use countersign_testkit::{
    ConnParams, NO_ENV, TestDb, ensure_services, free_port, spawn_server, wait_port,
};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_countersign");
const ADMIN: &str = "replica-admin-token-0123456789abcdef01";
const GATEWAY: &str = "replica-gateway-token-0123456789abcdef";
const POLICY: &str = "[[access]]\nname = \"everyone\"\nmembers = [\"*\"]\nlevel = \"read-write\"\n\n[[guardrail]]\nname = \"deletes-need-review\"\nmatch = { kinds = [\"delete\"] }\naction = \"review\"\napprovers = [\"group:dba\"]\n";

struct Cluster {
    _dir: tempfile::TempDir,
    _store: TestDb,
    app: TestDb,
    redis: Option<Child>,
    _replicas: Vec<Child>,
    _gateway: Child,
    http_a: String,
    http_b: String,
    pg: u16,
}

impl Cluster {
    async fn start(prefix: &str) -> Result<Self> {
        ensure_services()?;
        let dir = tempfile::tempdir()?;
        let store = TestDb::create(&format!("{prefix}_store")).await?;
        let app = TestDb::create(&format!("{prefix}_app")).await?;
        app.execute("CREATE TABLE orders (id int primary key); INSERT INTO orders SELECT generate_series(1, 1000)").await?;

        // A private Redis, so this test can stop it without disturbing others.
        let redis_port = free_port()?;
        let redis = Command::new("redis-server")
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

        let mut replicas = Vec::new();
        let mut http = Vec::new();
        let mut grpc = Vec::new();
        for name in ["a", "b"] {
            let (h, g) = (free_port()?, free_port()?);
            let config = dir.path().join(format!("cp-{name}.toml"));
            std::fs::write(
                &config,
                format!(
                    "database_url = \"{}\"\nhttp_addr = \"127.0.0.1:{h}\"\ngrpc_addr = \"127.0.0.1:{g}\"\n\
                     admin_token = \"{ADMIN}\"\ngateway_token = \"{GATEWAY}\"\nredis_url = \"redis://127.0.0.1:{redis_port}\"\n\n\
                     [[resource]]\nname = \"pg-prod\"\nenvironment = \"prod\"\n",
                    store.url()
                ),
            )?;
            let log = dir.path().join(format!("cp-{name}.log"));
            replicas.push(spawn_server(
                BIN.as_ref(),
                &[
                    "control-plane",
                    "--config",
                    config.to_str().context("path")?,
                ],
                NO_ENV,
                &log,
            )?);
            // Start the second replica after the first has migrated the store.
            wait_port(h, &log).await?;
            http.push(format!("http://127.0.0.1:{h}"));
            grpc.push(g);
        }
        let pg = free_port()?;
        let gw_config = dir.path().join("gw.toml");
        std::fs::write(
            &gw_config,
            format!(
                "environment = \"prod\"\ncontrol_plane_url = \"http://127.0.0.1:{}\"\ngateway_token = \"{GATEWAY}\"\n\
                 pg_addr = \"127.0.0.1:{pg}\"\nreview_timeout_secs = 60\nspool_dir = \"{}\"\n\n[[upstream]]\nname = \"pg-prod\"\nurl = \"{}\"\n",
                grpc[0],
                dir.path().join("spool").display(),
                app.upstream_url()
            ),
        )?;
        let gw_log = dir.path().join("gw.log");
        let gateway = spawn_server(
            BIN.as_ref(),
            &["gateway", "--config", gw_config.to_str().context("path")?],
            NO_ENV,
            &gw_log,
        )?;
        wait_port(pg, &gw_log).await?;
        let policy = dir.path().join("policy.toml");
        std::fs::write(&policy, POLICY)?;
        let out = Command::new(BIN)
            .args([
                "policy",
                "apply",
                "--server",
                &http[1],
                "--token",
                ADMIN,
                "-f",
                policy.to_str().context("path")?,
            ])
            .output()
            .await?;
        if !out.status.success() {
            bail!("policy apply: {}", String::from_utf8_lossy(&out.stderr));
        }
        let (http_b, http_a) = (http.pop().context("b")?, http.pop().context("a")?);
        Ok(Self {
            _dir: dir,
            _store: store,
            app,
            redis: Some(redis),
            _replicas: replicas,
            _gateway: gateway,
            http_a,
            http_b,
            pg,
        })
    }

    async fn token(&self, identity: &str, groups: &[&str]) -> Result<String> {
        let mut args = vec![
            "token",
            "create",
            "--server",
            &self.http_a,
            "--admin-token",
            ADMIN,
            "--identity",
            identity,
        ];
        for g in groups {
            args.extend(["--group", g]);
        }
        let out = Command::new(BIN).args(&args).output().await?;
        if !out.status.success() {
            bail!("token create: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    }

    /// Runs `n` held deletes as alice through the gateway (which watches via
    /// replica A), approving each as bob on replica B; returns the time from
    /// each approval request to the statement's completion.
    async fn approvals(&self, n: i32, first_id: i32) -> Result<Vec<Duration>> {
        let alice = self.token("alice@example.com", &[]).await?;
        let bob = self.token("bob@example.com", &["dba"]).await?;
        let params = ConnParams::new("127.0.0.1", self.pg, "alice@example.com", "pg-prod")
            .with_password(&alice);
        let (client, _conn) = params.connect().await?;
        let client = Arc::new(client);
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        let mut latencies = Vec::new();
        for id in first_id..first_id + n {
            let statement = format!("DELETE FROM orders WHERE id = {id}");
            let held = tokio::spawn({
                let client = client.clone();
                let statement = statement.clone();
                async move {
                    client.simple_query(&statement).await?;
                    Ok::<_, tokio_postgres::Error>(Instant::now())
                }
            });
            let review_id =
                pending_review(&self.http_b, &bob, &statement, Duration::from_secs(15)).await?;
            // An in-process client, so that process start-up is not measured.
            let approved_at = Instant::now();
            let resp = http
                .post(format!(
                    "{}/api/v1/reviews/{review_id}/approve",
                    self.http_b
                ))
                .bearer_auth(&bob)
                .json(&serde_json::json!({}))
                .send()
                .await?;
            if !resp.status().is_success() {
                bail!(
                    "approve: {} {}",
                    resp.status(),
                    resp.text().await.unwrap_or_default()
                );
            }
            let released_at = tokio::time::timeout(Duration::from_secs(30), held).await???;
            latencies.push(released_at.saturating_duration_since(approved_at));
        }
        Ok(latencies)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

#[tokio::test]
async fn approval_on_another_replica_releases_the_statement_with_and_without_redis() -> Result<()> {
    let mut cluster = Cluster::start("cs_replicas").await?;
    let fast = cluster.approvals(5, 1).await?;
    let client = cluster.app.client().await?;
    let left: i64 = client
        .query_one("SELECT count(*) FROM orders WHERE id <= 5", &[])
        .await?
        .get(0);
    assert_eq!(left, 0, "approved deletes ran");
    let mut sorted = fast.clone();
    sorted.sort();
    assert!(
        percentile(&sorted, 1.0) < Duration::from_millis(400),
        "with Redis: {fast:?}"
    );

    // Redis goes away: replica A no longer hears B, and must poll.
    if let Some(mut redis) = cluster.redis.take() {
        redis.kill().await?;
    }
    let slow = cluster.approvals(2, 6).await?;
    assert!(
        slow.iter().all(|d| *d < Duration::from_secs(5)),
        "without Redis: {slow:?}"
    );
    let left: i64 = client
        .query_one("SELECT count(*) FROM orders WHERE id <= 7", &[])
        .await?
        .get(0);
    assert_eq!(left, 0, "approved deletes ran without Redis too");
    Ok(())
}

#[tokio::test]
#[ignore = "benchmark: run by tests/bench/review-latency.sh"]
async fn review_latency_bench() -> Result<()> {
    let mut cluster = Cluster::start("cs_replicas_bench").await?;
    let n: i32 = std::env::var("REVIEW_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    for (label, first) in [("redis", 1), ("polling", 1 + n)] {
        if label == "polling"
            && let Some(mut redis) = cluster.redis.take()
        {
            redis.kill().await?;
        }
        let mut l = cluster.approvals(n, first).await?;
        l.sort();
        println!(
            "BENCH {label} n={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
            l.len(),
            percentile(&l, 0.5).as_secs_f64() * 1e3,
            percentile(&l, 0.99).as_secs_f64() * 1e3,
            percentile(&l, 1.0).as_secs_f64() * 1e3
        );
    }
    Ok(())
}
