//! Just-in-time grants, end to end with the real binary: without a grant or a
//! standing allowance nobody gets in; a grant needs k approvals from other
//! people (one from each named group), never the requester's own; it gives a
//! level (read-only is enforced by the gateway and by PostgreSQL), ends by
//! itself, and revoking it ends live sessions. A CI pipeline gets its token by
//! workload identity and runs pgbench under an approved grant.

#![cfg(test)]

use anyhow::{Context, Result, bail};
use countersign_testkit::http::{HttpResponse, request};
use countersign_testkit::oidc::Issuer;
use countersign_testkit::{
    DevServerOpts, Fixture, Psql, check_pgbench_run, ensure_services, eventually, pgbench,
};
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_countersign");
const ALICE: &str = "alice@example.com";

/// No standing access at all: every session needs a grant.
const POLICY: &str = r#"
[[binding]]
role = "requester"
members = ["group:eng", "group:deployers"]

[[grant]]
name = "dev-access"
levels = ["read-only", "read-write"]
max_duration = "1h"
approvals = 2
approvers = ["group:dba", "group:sre"]
one_from_each = true
"#;

async fn fixture(prefix: &str) -> Result<(Fixture, tempfile::TempDir)> {
    ensure_services()?;
    let dir = tempfile::tempdir()?;
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, POLICY)?;
    let opts = DevServerOpts {
        extra_args: vec!["--policy".into(), policy.to_str().context("path")?.into()],
        ..DevServerOpts::default()
    };
    let fx = Fixture::start_with(BIN, prefix, opts).await?;
    fx.db
        .execute("CREATE TABLE orders (id int primary key, total int); CREATE SEQUENCE s")
        .await?;
    Ok((fx, dir))
}

async fn api(
    fx: &Fixture,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Result<HttpResponse> {
    request(
        method,
        &format!("{}{path}", fx.server.http_url()),
        Some(token),
        body.as_ref(),
    )
    .await
}

async fn decide(fx: &Fixture, token: &str, id: &str, verb: &str) -> Result<HttpResponse> {
    api(
        fx,
        "POST",
        &format!("/api/v1/grants/{id}/{verb}"),
        token,
        Some(json!({"comment": verb})),
    )
    .await
}

/// `grant request ... --wait` as a child process.
fn request_and_wait(
    fx: &Fixture,
    token: &str,
    level: &str,
    duration: &str,
) -> Result<tokio::process::Child> {
    Ok(tokio::process::Command::new(BIN)
        .args([
            "grant",
            "request",
            "dev",
            "--server",
            fx.server.http_url(),
            "--level",
            level,
            "--for",
            duration,
            "--reason",
            "fix order 7 (INC-42)",
            "--ticket",
            "INC-42",
            "--wait",
        ])
        .env("COUNTERSIGN_TOKEN", token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?)
}

/// The id of `requester`'s newest grant, from `grant list --mine`.
async fn my_grant(fx: &Fixture, token: &str) -> Result<Value> {
    eventually(Duration::from_secs(15), || async {
        let out = fx
            .server
            .cli(&[
                "grant",
                "list",
                "--mine",
                "--server",
                fx.server.http_url(),
                "--token",
                token,
                "--format",
                "jsonl",
            ])
            .await?
            .ok()?;
        match out.stdout.lines().next() {
            Some(line) => Ok(serde_json::from_str(line)?),
            None => bail!("no grant yet"),
        }
    })
    .await
}

#[tokio::test]
async fn two_of_two_groups_approve_and_revocation_ends_the_live_session() -> Result<()> {
    let (fx, _dir) = fixture("cs_grant_nofm").await?;
    let alice = fx.server.mint_token(ALICE, &["eng"], None).await?;
    // Alice again, as an admin who is also in both approver groups.
    let alice_admin = fx
        .server
        .mint_token(ALICE, &["eng", "dba", "sre", "countersign-admins"], None)
        .await?;
    let bob = fx
        .server
        .mint_token("bob@example.com", &["dba"], None)
        .await?;
    let carol = fx
        .server
        .mint_token("carol@example.com", &["dba"], None)
        .await?;
    let dave = fx
        .server
        .mint_token("dave@example.com", &["sre"], None)
        .await?;
    let params = fx.gateway_as(ALICE, &alice);

    // No grant, no standing allowance: refused, with the way out in the message.
    let refused = Psql::new(&params).command("SELECT 1").run().await?;
    assert!(
        !refused.success() && refused.stderr.contains("has no access to dev"),
        "{}",
        refused.combined()
    );

    // Bad requests: a level no rule allows, too long, no reason, no requester binding.
    for (body, token, status) in [
        (
            json!({"resource": "dev", "level": "unmask", "duration": "10m", "reason": "x"}),
            &alice,
            400,
        ),
        (
            json!({"resource": "dev", "level": "read-write", "duration": "2h", "reason": "x"}),
            &alice,
            400,
        ),
        (
            json!({"resource": "dev", "level": "read-write", "duration": "10m", "reason": " "}),
            &alice,
            400,
        ),
        (
            json!({"resource": "dev", "level": "read-write", "duration": "10m", "reason": "x"}),
            &bob,
            403,
        ),
    ] {
        let r = api(&fx, "POST", "/api/v1/grants", token, Some(body.clone())).await?;
        assert_eq!(r.status, status, "{body}: {}", r.body);
    }

    let mut waiting = request_and_wait(&fx, &alice, "read-write", "10m")?;
    let grant = my_grant(&fx, &alice).await?;
    let id = grant["id"].as_str().context("id")?.to_owned();
    assert_eq!(
        (
            grant["status"].as_str(),
            grant["approvals_required"].as_u64()
        ),
        (Some("pending"), Some(2))
    );

    // Segregation of duties: never the requester, however privileged.
    for token in [&alice, &alice_admin] {
        let r = decide(&fx, token, &id, "approve").await?;
        assert_eq!(r.status, 403, "{}", r.body);
        assert!(r.body.contains("segregation of duties"), "{}", r.body);
    }
    // A forged approver field is refused too.
    let r = api(
        &fx,
        "POST",
        &format!("/api/v1/grants/{id}/approve"),
        &alice,
        Some(json!({"approver": "bob@example.com"})),
    )
    .await?;
    assert_eq!(r.status, 400, "{}", r.body);

    // Two DBAs are two approvals but not one from each group: still pending.
    assert_eq!(decide(&fx, &bob, &id, "approve").await?.status, 200);
    let again = decide(&fx, &bob, &id, "approve").await?;
    assert_eq!(again.status, 403, "{}", again.body);
    let r = decide(&fx, &carol, &id, "approve").await?;
    assert_eq!(r.json()?["status"], "pending", "{}", r.body);
    let r = decide(&fx, &dave, &id, "approve").await?;
    assert_eq!(r.json()?["status"], "active", "{}", r.body);

    let done = tokio::time::timeout(Duration::from_secs(30), waiting.wait()).await??;
    assert_eq!(done.code(), Some(0), "grant request --wait exit");
    let mut out = String::new();
    if let Some(mut so) = waiting.stdout.take() {
        tokio::io::AsyncReadExt::read_to_string(&mut so, &mut out).await?;
    }
    assert!(out.contains("approved, active until"), "{out}");

    // Alice is in, read-write.
    let ok = Psql::new(&params)
        .command("INSERT INTO orders VALUES (7, 70)")
        .output()
        .await?;
    assert!(ok.contains("INSERT 0 1"), "{ok}");

    // A live session ends within a second of the revocation: the gateway closes it.
    let (client, conn) = params.connect().await?;
    client.simple_query("SELECT 1").await?;
    let r = decide(&fx, &bob, &id, "revoke").await?;
    assert_eq!(r.json()?["status"], "revoked", "{}", r.body);
    let revoked_at = Instant::now();
    tokio::time::timeout(Duration::from_secs(1), conn)
        .await
        .context("the session was still open 1 s after the revocation")??;
    let elapsed = revoked_at.elapsed();
    eprintln!("session closed {elapsed:?} after the revocation");
    assert!(client.simple_query("SELECT 1").await.is_err());
    let after = Psql::new(&params).command("SELECT 1").run().await?;
    assert!(
        !after.success() && after.stderr.contains("has no access"),
        "{}",
        after.combined()
    );

    // Every refused attempt is audited under the grant.
    let audit = api(
        &fx,
        "GET",
        &format!("/api/v1/audit?session_id=grant:{id}&limit=100"),
        fx.server.admin_token(),
        None,
    )
    .await?;
    let events = audit.json()?;
    let actions: Vec<&str> = events["events"]
        .as_array()
        .context("events")?
        .iter()
        .filter_map(|e| e["detail"]["action"].as_str())
        .collect();
    for wanted in ["requested", "refused", "approved", "revoked"] {
        assert!(actions.contains(&wanted), "{wanted} not in {actions:?}");
    }
    assert!(
        actions.iter().filter(|a| **a == "refused").count() >= 4,
        "{actions:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_read_only_grant_reads_cannot_write_and_ends_by_itself() -> Result<()> {
    let (fx, _dir) = fixture("cs_grant_ro").await?;
    let alice = fx.server.mint_token(ALICE, &["eng"], None).await?;
    let bob = fx
        .server
        .mint_token("bob@example.com", &["dba"], None)
        .await?;
    let dave = fx
        .server
        .mint_token("dave@example.com", &["sre"], None)
        .await?;
    let r = api(&fx, "POST", "/api/v1/grants", &alice, Some(json!({"resource": "dev", "level": "read-only", "duration": "6s", "reason": "look at order 7"}))).await?;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()?["id"].as_str().context("id")?.to_owned();
    decide(&fx, &bob, &id, "approve").await?;
    let r = decide(&fx, &dave, &id, "approve").await?;
    assert_eq!(r.json()?["status"], "active", "{}", r.body);

    let params = fx.gateway_as(ALICE, &alice);
    let (client, _conn) = params.connect().await?;
    client.simple_query("SELECT count(*) FROM orders").await?;
    for (sql, why) in [
        ("INSERT INTO orders VALUES (8, 80)", "read-only-access"),
        (
            "SET default_transaction_read_only = off",
            "read-only-access",
        ),
        ("BEGIN READ WRITE", "read-only-access"),
        (
            "SELECT set_config('default_transaction_read_only', 'off', false)",
            "read-only-access",
        ),
        // A write the classifier cannot see: PostgreSQL refuses it.
        ("SELECT nextval('s')", "read-only transaction"),
    ] {
        let err = client
            .simple_query(sql)
            .await
            .err()
            .with_context(|| format!("{sql} ran"))?;
        let text = err
            .as_db_error()
            .map(|e| e.message().to_owned())
            .unwrap_or_else(|| err.to_string());
        assert!(text.contains(why), "{sql}: {text}");
    }
    // The grant runs out: the live session ends and no new one starts.
    eventually(Duration::from_secs(15), || async {
        match client.simple_query("SELECT 1").await {
            Ok(_) => bail!("session still open"),
            Err(_) => Ok(()),
        }
    })
    .await?;
    // The gateway ends sessions up to a second early (it hears the end in
    // whole seconds); the control plane then stops letting new ones in.
    eventually(Duration::from_secs(5), || async {
        let view = api(&fx, "GET", &format!("/api/v1/grants/{id}"), &alice, None).await?;
        match view.json()?["status"].as_str() {
            Some("ended") => Ok(()),
            other => bail!("grant is {other:?}"),
        }
    })
    .await?;
    let after = Psql::new(&params).command("SELECT 1").run().await?;
    assert!(
        !after.success() && after.stderr.contains("has no access"),
        "{}",
        after.combined()
    );
    Ok(())
}

#[tokio::test]
async fn a_pipeline_exchanges_its_oidc_token_and_runs_pgbench_under_a_grant() -> Result<()> {
    let (fx, _dir) = fixture("cs_grant_ci").await?;
    let issuer = Issuer::start().await?;
    let admin = fx.server.admin_token().to_owned();
    let bob = fx
        .server
        .mint_token("bob@example.com", &["dba"], None)
        .await?;
    let dave = fx
        .server
        .mint_token("dave@example.com", &["sre"], None)
        .await?;
    let r = api(
        &fx,
        "POST",
        "/api/v1/service-accounts",
        &admin,
        Some(json!({"name": "ci-deployer", "groups": ["deployers"]})),
    )
    .await?;
    assert!(r.status < 300, "{}", r.body);
    let trust = json!({"issuer": issuer.url, "audience": "countersign", "claims": {"repository": "acme/app", "ref": "refs/heads/main"}});
    let r = api(
        &fx,
        "PUT",
        "/api/v1/service-accounts/ci-deployer/workload",
        &admin,
        Some(trust),
    )
    .await?;
    assert!(r.status < 300, "{}", r.body);

    let exchange = |jwt: String| {
        let url = format!("{}/api/v1/auth/workload", fx.server.http_url());
        async move {
            request(
                "POST",
                &url,
                None,
                Some(&json!({"service_account": "ci-deployer", "token": jwt})),
            )
            .await
        }
    };
    // Wrong audience, wrong repository: refused.
    for (claim, value) in [
        ("aud", json!("someone-else")),
        ("repository", json!("acme/evil")),
    ] {
        let mut claims = issuer.claims();
        claims[claim] = value;
        let r = exchange(issuer.sign(&claims)?).await?;
        assert_eq!(r.status, 401, "{claim}: {}", r.body);
    }
    let r = exchange(issuer.sign(&issuer.claims())?).await?;
    assert_eq!(r.status, 200, "{}", r.body);
    let token = r.json()?["token"].as_str().context("token")?.to_owned();
    let identity = r.json()?["identity"]
        .as_str()
        .context("identity")?
        .to_owned();
    let params = fx.gateway_as(&identity, &token);

    // The pipeline's token alone does not get in.
    let refused = pgbench(&params, &["-i", "-s", "1"]).await?;
    assert!(!refused.success(), "{refused:?}");

    let r = api(&fx, "POST", "/api/v1/grants", &token, Some(json!({"resource": "dev", "level": "read-write", "duration": "15m", "reason": "deploy acme/app main"}))).await?;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()?["id"].as_str().context("id")?.to_owned();
    // Service accounts never approve.
    assert_eq!(decide(&fx, &token, &id, "approve").await?.status, 403);
    decide(&fx, &bob, &id, "approve").await?;
    let r = decide(&fx, &dave, &id, "approve").await?;
    assert_eq!(r.json()?["status"], "active", "{}", r.body);

    let init = pgbench(&params, &["-i", "-s", "1", "-q"]).await?;
    assert!(init.success(), "{init:?}");
    let run = pgbench(&params, &["-c", "2", "-t", "100", "-M", "extended"]).await?;
    check_pgbench_run(&run, 200)?;
    Ok(())
}
