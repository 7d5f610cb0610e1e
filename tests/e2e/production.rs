//! Production mode end to end: `countersign control-plane` on a PostgreSQL store
//! and `countersign gateway` as separate processes, each from a TOML config
//! file, with secrets from the environment; psql through the gateway, tokens
//! minted and audit searched through the CLI.

#![cfg(test)]

use anyhow::{Context, Result, bail};
use countersign_testkit::http::pending_review;
use countersign_testkit::{
    AdminCli, AuditQuery, ConnParams, NO_ENV, Psql, TestDb, cli_stdout, ensure_services,
    eventually, free_port, session_threads, spawn_server, wait_port,
};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_countersign");
const ADMIN: &str = "prod-admin-token-0123456789abcdef0123";
const GATEWAY: &str = "prod-gateway-token-0123456789abcdef012";

/// The value of an unlabelled series in Prometheus text.
fn metric(text: &str, name: &str) -> Result<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .with_context(|| format!("{name} missing in\n{text}"))?
        .trim()
        .parse()
        .with_context(|| format!("{name} is not a number"))
}

#[tokio::test]
async fn control_plane_and_gateway_as_separate_processes() -> Result<()> {
    ensure_services()?;
    let store = TestDb::create("cs_prod_store").await?;
    let upstream = TestDb::create("cs_prod_app").await?;
    upstream
        .execute(
            "CREATE TABLE orders (id int primary key, total numeric); \
             CREATE TABLE customers (id int, email text); \
             INSERT INTO customers VALUES (1, 'carol@example.org')",
        )
        .await?;
    let dir = tempfile::tempdir()?;
    let (http, grpc, pg) = (free_port()?, free_port()?, free_port()?);
    let metrics = free_port()?;
    // Nothing listens here: sessions to `pg-down` fail to reach their upstream.
    let down = free_port()?;

    let cp_config = dir.path().join("control-plane.toml");
    std::fs::write(
        &cp_config,
        format!(
            "http_addr = \"127.0.0.1:{http}\"\ngrpc_addr = \"127.0.0.1:{grpc}\"\n\
             database_url = \"postgres://unused@127.0.0.1/overridden\"\n\
             admin_token = \"overridden-by-the-environment-0000000\"\n\
             gateway_token = \"{GATEWAY}\"\n\n[[resource]]\nname = \"pg-prod\"\nenvironment = \"prod\"\n\n\
             [[resource]]\nname = \"pg-down\"\nenvironment = \"prod\"\n"
        ),
    )?;
    let gw_config = dir.path().join("gateway.toml");
    // Two more session threads than the default (one per core but one), so that the count
    // seen shows the file's setting.
    let threads = countersign_testkit::default_session_threads() + 2;
    std::fs::write(
        &gw_config,
        format!(
            "gateway_id = \"gw-prod-1\"\nenvironment = \"prod\"\n\
             control_plane_url = \"http://127.0.0.1:{grpc}\"\ngateway_token = \"{GATEWAY}\"\n\
             pg_addr = \"127.0.0.1:{pg}\"\nmetrics_addr = \"127.0.0.1:{metrics}\"\nspool_dir = \"{}\"\nsession_threads = {threads}\n\n[[upstream]]\nname = \"pg-prod\"\nurl = \"{}\"\n\n\
             [[upstream]]\nname = \"pg-down\"\nurl = \"postgres://postgres@127.0.0.1:{down}/postgres\"\n",
            dir.path().join("spool").display(),
            upstream.upstream_url()
        ),
    )?;

    let cp_log = dir.path().join("cp.log");
    let store_url = store.url();
    let _cp = spawn_server(
        BIN.as_ref(),
        &[
            "control-plane",
            "--config",
            cp_config.to_str().context("path")?,
        ],
        &[
            ("COUNTERSIGN_DATABASE_URL", store_url.as_str()),
            ("COUNTERSIGN_ADMIN_TOKEN", ADMIN),
        ],
        &cp_log,
    )?;
    wait_port(http, &cp_log).await?;
    let gw_log = dir.path().join("gw.log");
    let gw = spawn_server(
        BIN.as_ref(),
        &["gateway", "--config", gw_config.to_str().context("path")?],
        NO_ENV,
        &gw_log,
    )?;
    wait_port(pg, &gw_log).await?;

    let server = format!("http://127.0.0.1:{http}");
    let minter = AdminCli {
        bin: BIN.as_ref(),
        server: &server,
        admin_token: ADMIN,
    };
    let token = minter.mint("alice@example.com", &[], Some("10m")).await?;
    let token = token.as_str();
    let conn =
        ConnParams::new("127.0.0.1", pg, "alice@example.com", "pg-prod").with_password(token);

    // No policy yet: no grant and no standing allowance means no access.
    let refused = Psql::new(&conn).command("SELECT 1").run().await?;
    assert!(
        !refused.success() && refused.stderr.contains("has no access to pg-prod"),
        "{}",
        refused.combined()
    );
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[[access]]\nname = \"alice-prod\"\nmembers = [\"user:alice@example.com\"]\nlevel = \"read-write\"\nenvironments = [\"prod\"]\n\n\
         [[guardrail]]\nname = \"deletes-need-review\"\nmatch = { kinds = [\"delete\"] }\naction = \"review\"\napprovals = 1\napprovers = [\"group:dba\"]\n\n\
         [[mask]]\nname = \"emails\"\ncolumns = [\"public.customers.email\"]\nstyle = \"redact\"\n",
    )?;
    minter.apply_policy(&policy).await?;

    let out = Psql::new(&conn)
        .command("INSERT INTO orders VALUES (7, 12.50)")
        .command("SELECT id, total FROM orders")
        .output()
        .await?;
    assert!(out.contains("7|12.50"), "{out}");
    // `session_threads` from the config file, not the default.
    assert_eq!(session_threads(gw.id().context("gateway pid")?)?, threads);

    // The store is the PostgreSQL database named in the environment, not the file's.
    let client = store.client().await?;
    let sessions: i64 = client
        .query_one(
            "SELECT count(*) FROM sessions WHERE identity = 'alice@example.com'",
            &[],
        )
        .await?
        .get(0);
    // The refused attempt opened no session.
    assert_eq!(sessions, 1);

    let events = eventually(Duration::from_secs(15), || async {
        let events = minter
            .audit_search(&AuditQuery::statements_of("alice@example.com"))
            .await?;
        if events.len() < 2 {
            bail!("{} statement events so far", events.len());
        }
        Ok(events)
    })
    .await?;
    let statements: Vec<&str> = events
        .iter()
        .filter_map(|e| e.statement.as_deref())
        .collect();
    assert_eq!(
        statements,
        [
            "INSERT INTO orders VALUES (7, 12.50)",
            "SELECT id, total FROM orders"
        ]
    );
    assert!(
        events
            .iter()
            .all(|e| e.resource == "pg-prod" && e.identity == "alice@example.com")
    );
    assert_eq!(events[0].kinds(), ["insert"]);

    // Traffic for every metric the gateway keeps: a masked value, a statement held for
    // review and approved by someone else, and a session whose upstream is down.
    let masked = Psql::new(&conn)
        .command("SELECT id, email FROM customers")
        .output()
        .await?;
    assert!(
        masked.contains("1|") && !masked.contains("carol@example.org"),
        "{masked}"
    );
    let bob = minter
        .mint("bob@example.com", &["dba"], Some("10m"))
        .await?;
    let held = tokio::spawn({
        let conn = conn.clone();
        async move {
            Psql::new(&conn)
                .command("DELETE FROM orders WHERE id = 7")
                .run()
                .await
        }
    });
    let review_id = pending_review(
        &server,
        &bob,
        "DELETE FROM orders WHERE id = 7",
        Duration::from_secs(15),
    )
    .await?;
    cli_stdout(
        BIN.as_ref(),
        &[
            "review", "approve", &review_id, "--server", &server, "--token", &bob,
        ],
    )
    .await?;
    let deleted = held.await??;
    assert!(deleted.success(), "{}", deleted.combined());
    let down = Psql::new(&conn.clone().with_dbname("pg-down"))
        .command("SELECT 1")
        .run()
        .await?;
    assert!(!down.success(), "{}", down.combined());

    // Both processes report to Prometheus, and say they are ready.
    let gw_metrics = format!("http://127.0.0.1:{metrics}");
    for (base, path) in [
        (&gw_metrics, "/healthz"),
        (&gw_metrics, "/readyz"),
        (&server, "/readyz"),
    ] {
        let r =
            countersign_testkit::http::request("GET", &format!("{base}{path}"), None, None).await?;
        assert_eq!(r.status, 200, "{base}{path}: {}", r.body);
    }
    // Scraped once the uploader has sent every statement above (the upload counter
    // then holds at least the session starts, the 4 statements and the session ends).
    let gw_text = eventually(Duration::from_secs(15), || {
        let url = format!("{gw_metrics}/metrics");
        async move {
            let text = countersign_testkit::http::request("GET", &url, None, None)
                .await?
                .body;
            let uploaded = metric(&text, "countersign_gateway_audit_events_uploaded_total")?;
            if uploaded < 10.0 {
                bail!("{uploaded} audit events uploaded so far");
            }
            Ok(text)
        }
    })
    .await?;
    for line in [
        "countersign_gateway_sessions_active 0",
        "countersign_gateway_statements_total{decision=\"allow\"} 3",
        "countersign_gateway_statements_total{decision=\"review\"} 1",
        "countersign_gateway_review_wait_seconds_count 1",
        "countersign_gateway_upstream_connect_errors_total{resource=\"pg-down\"} 1",
        "countersign_gateway_masked_values_total 1",
        "countersign_gateway_policy_version 1",
    ] {
        assert!(gw_text.contains(line), "{line} missing in\n{gw_text}");
    }
    assert!(metric(&gw_text, "countersign_gateway_sessions_total")? >= 3.0);
    assert!(metric(&gw_text, "countersign_gateway_sessions_refused_total")? >= 1.0);
    // The spool and the uploader: the depth in bytes, and no event waiting once caught up.
    assert!(metric(&gw_text, "countersign_gateway_audit_spool_bytes")? >= 0.0);
    assert!(metric(&gw_text, "countersign_gateway_audit_upload_lag_seconds")? < 5.0);
    let cp_text =
        countersign_testkit::http::request("GET", &format!("{server}/metrics"), None, None)
            .await?
            .body;
    for line in [
        "countersign_control_plane_gateways_watching 1",
        "countersign_control_plane_policy_version 1",
    ] {
        assert!(cp_text.contains(line), "{line} missing in\n{cp_text}");
    }
    assert!(
        metric(
            &cp_text,
            "countersign_control_plane_sessions_authenticated_total"
        )? >= 4.0
    );
    assert!(metric(&cp_text, "countersign_control_plane_sessions_refused_total")? >= 1.0);
    assert!(
        metric(
            &cp_text,
            "countersign_control_plane_audit_events_ingested_total"
        )? >= 10.0
    );
    // No identity or statement text ever reaches a metric.
    for text in [&gw_text, &cp_text] {
        assert!(
            !text.contains("alice") && !text.contains("orders"),
            "{text}"
        );
    }

    // A resource from another environment is not served by this gateway.
    let bad = Psql::new(&conn.clone().with_dbname("pg-staging"))
        .command("SELECT 1")
        .run()
        .await?;
    assert!(
        !bad.success() && bad.stderr.contains("no resource named"),
        "{}",
        bad.combined()
    );
    Ok(())
}
