//! The web console in headless Chromium (tests/console/review_flow.mjs),
//! against `countersign control-plane` and `countersign gateway` as separate
//! processes, signing people in through a real OpenID provider: a psql
//! statement held for review shows up live in an approver's inbox and runs
//! once they approve it in the console; its requester gets no approve button
//! and a forced approval is refused; audit search finds it and exports it
//! as CSV; people without the auditor role and people not signed in do not
//! reach audit search. Screenshots land in
//! `$CARGO_TARGET_DIR/console-screenshots/` (the path is printed).

#![cfg(test)]

use anyhow::{Context, Result, ensure};
use countersign_testkit::browser::Scenario;
use countersign_testkit::oidc_provider::{ClientSpec, OidcProvider, User};
use countersign_testkit::{
    AdminCli, ConnParams, NO_ENV, Psql, TestDb, cli_stdout, ensure_services, free_port,
    spawn_server, wait_port,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::process::Child;

const BIN: &str = env!("CARGO_BIN_EXE_countersign");
const ADMIN: &str = "console-admin-token-0123456789abcdef0123";
const GATEWAY: &str = "console-gateway-token-0123456789abcdef01";
const CLIENT_ID: &str = "countersign";
const CLIENT_SECRET: &str = "console-client-secret-0123456789";
const ALICE: &str = "alice@example.com";
const STATEMENT: &str = "DELETE FROM orders WHERE id = 7";

const POLICY: &str = r#"
[[access]]
name = "everyone"
members = ["*"]
level = "read-write"

[[guardrail]]
name = "deletes-need-review"
match = { kinds = ["delete"] }
action = "review"
approvals = 1
approvers = ["group:dba"]
message = "deletes on orders are approved by a DBA"
"#;

async fn row_exists(db: &TestDb, id: i32) -> Result<bool> {
    let client = db.client().await?;
    Ok(client
        .query_one("SELECT count(*) FROM orders WHERE id = $1", &[&id])
        .await?
        .get::<_, i64>(0)
        == 1)
}

/// A control plane with `[oidc]`, a gateway, an upstream database and the
/// provider; everything stops when this is dropped.
struct Stack {
    server: String,
    pg: u16,
    upstream: TestDb,
    dir: tempfile::TempDir,
    _store: TestDb,
    _provider: OidcProvider,
    _cp: Child,
    _gw: Child,
}

async fn start() -> Result<Stack> {
    ensure_services()?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let store = TestDb::create("cs_console_store").await?;
    let upstream = TestDb::create("cs_console_app").await?;
    upstream
        .execute("CREATE TABLE orders (id int primary key, total int); INSERT INTO orders SELECT g, g * 10 FROM generate_series(1, 20) g")
        .await?;
    let dir = tempfile::tempdir()?;
    let (http, grpc, pg, metrics) = (free_port()?, free_port()?, free_port()?, free_port()?);
    let server = format!("http://127.0.0.1:{http}");
    let user = |email: &str, groups: &[&str]| User {
        email: email.to_owned(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    };
    let users = BTreeMap::from([
        ("alice".to_owned(), user(ALICE, &["eng"])),
        (
            "bob".to_owned(),
            user("bob@example.com", &["dba-team", "auditors"]),
        ),
        ("carol".to_owned(), user("carol@example.com", &["admins"])),
    ]);
    let client = ClientSpec {
        client_id: CLIENT_ID.to_owned(),
        client_secret: CLIENT_SECRET.to_owned(),
        redirect_uris: vec![format!("{server}/auth/callback")],
    };
    let provider = OidcProvider::start(&[client], &users, 0).await?;

    let cp_config = dir.path().join("control-plane.toml");
    std::fs::write(
        &cp_config,
        format!(
            "http_addr = \"127.0.0.1:{http}\"\ngrpc_addr = \"127.0.0.1:{grpc}\"\n\
             database_url = \"{}\"\nadmin_token = \"{ADMIN}\"\ngateway_token = \"{GATEWAY}\"\n\n\
             [[resource]]\nname = \"pg-prod\"\nenvironment = \"prod\"\n\n\
             [oidc]\nissuer_url = \"{}\"\nclient_id = \"{CLIENT_ID}\"\n\
             client_secret = \"overridden-by-the-environment\"\n\
             scopes = [\"email\", \"profile\", \"groups\"]\n\
             allowed_domains = [\"example.com\"]\n\
             group_map = {{ \"eng\" = \"engineers\", \"dba-team\" = \"dba\", \"auditors\" = \"countersign-auditors\", \"admins\" = \"countersign-admins\" }}\n",
            store.url(),
            provider.issuer
        ),
    )?;
    let gw_config = dir.path().join("gateway.toml");
    std::fs::write(
        &gw_config,
        format!(
            "gateway_id = \"gw-console\"\nenvironment = \"prod\"\n\
             control_plane_url = \"http://127.0.0.1:{grpc}\"\ngateway_token = \"{GATEWAY}\"\n\
             pg_addr = \"127.0.0.1:{pg}\"\nmetrics_addr = \"127.0.0.1:{metrics}\"\nspool_dir = \"{}\"\n\n\
             [[upstream]]\nname = \"pg-prod\"\nurl = \"{}\"\n",
            dir.path().join("spool").display(),
            upstream.upstream_url()
        ),
    )?;
    let cp_log = dir.path().join("cp.log");
    let cp = spawn_server(
        BIN.as_ref(),
        &[
            "control-plane",
            "--config",
            cp_config.to_str().context("path")?,
        ],
        &[("COUNTERSIGN_OIDC_CLIENT_SECRET", CLIENT_SECRET)],
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
    apply_policy(&server, dir.path(), POLICY).await?;
    Ok(Stack {
        server,
        pg,
        upstream,
        dir,
        _store: store,
        _provider: provider,
        _cp: cp,
        _gw: gw,
    })
}

async fn apply_policy(server: &str, dir: &std::path::Path, text: &str) -> Result<()> {
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, text)?;
    AdminCli {
        bin: BIN.as_ref(),
        server,
        admin_token: ADMIN,
    }
    .apply_policy(&policy)
    .await
}

#[tokio::test]
async fn held_statement_is_approved_in_the_console_and_audit_is_exported() -> Result<()> {
    let stack = start().await?;
    let server = stack.server.clone();
    let minter = AdminCli {
        bin: BIN.as_ref(),
        server: &server,
        admin_token: ADMIN,
    };
    let token = minter.mint(ALICE, &[], Some("10m")).await?;
    let conn = ConnParams::new("127.0.0.1", stack.pg, ALICE, "pg-prod").with_password(&token);

    // Not signed in: the console sends the browser to sign in and come back.
    let bare = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?
        .get(format!("{server}/audit"))
        .send()
        .await?;
    ensure!(
        bare.status() == 303,
        "GET /audit without a session: {}",
        bare.status()
    );
    ensure!(
        bare.headers().get("location").and_then(|v| v.to_str().ok())
            == Some("/auth/login?return_to=%2Faudit"),
        "{:?}",
        bare.headers().get("location")
    );
    let csp = bare
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    ensure!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "CSP: {csp:?}"
    );

    let mut scenario = Scenario::start(
        "review_flow.mjs",
        "review_flow",
        json!({
            "server": server,
            "approver": "bob",
            "requester": "alice",
            "statement": STATEMENT,
        }),
    )
    .await?;
    scenario
        .expect_step("inbox-open", Duration::from_secs(120))
        .await?;

    // The approver's inbox is open: now the statement is sent and held.
    let held = tokio::spawn({
        let conn = conn.clone();
        async move { Psql::new(&conn).command(STATEMENT).run().await }
    });
    let seen = scenario
        .expect_step("review-seen", Duration::from_secs(60))
        .await?;
    let id = seen["id"].as_str().context("review id")?.to_owned();
    ensure!(
        row_exists(&stack.upstream, 7).await?,
        "nothing runs before approval"
    );

    let refused = scenario
        .expect_step("requester-refused", Duration::from_secs(90))
        .await?;
    ensure!(refused["status"] == 403, "{refused}");
    ensure!(
        row_exists(&stack.upstream, 7).await?,
        "a refused approval runs nothing"
    );
    let non_auditor = scenario
        .expect_step("non-auditor-refused", Duration::from_secs(60))
        .await?;
    ensure!(
        non_auditor["page"] == 403 && non_auditor["api"] == 403,
        "{non_auditor}"
    );

    scenario
        .expect_step("approved", Duration::from_secs(60))
        .await?;
    let out = tokio::time::timeout(Duration::from_secs(30), held)
        .await
        .context("psql did not finish after the approval")???;
    ensure!(out.success(), "{}", out.combined());
    ensure!(out.stdout.contains("DELETE 1"), "{}", out.combined());
    ensure!(
        out.stderr.contains(&id),
        "psql was told the review id: {}",
        out.stderr
    );
    ensure!(!row_exists(&stack.upstream, 7).await?);

    let timeline = scenario
        .expect_step("timeline", Duration::from_secs(60))
        .await?;
    ensure!(
        timeline["path"]
            .as_str()
            .is_some_and(|p| p.starts_with("/sessions/")),
        "{timeline}"
    );
    let csv = scenario.expect_step("csv", Duration::from_secs(90)).await?;
    let rows = csv["rows"].as_array().context("csv rows")?;
    ensure!(
        rows.iter()
            .filter_map(Value::as_str)
            .any(|r| r.contains(STATEMENT)
                && r.contains("\"alice@example.com\"")
                && r.contains("\"pg-prod\"")),
        "{csv}"
    );
    let stranger = scenario
        .expect_step("stranger-refused", Duration::from_secs(60))
        .await?;
    ensure!(
        stranger["page"] == 303 && stranger["api"] == 401,
        "{stranger}"
    );
    scenario.finish(Duration::from_secs(60)).await?;

    // The CLI exports the same rows.
    let exported = cli_stdout(
        BIN.as_ref(),
        &[
            "audit",
            "export",
            "--server",
            &server,
            "--token",
            ADMIN,
            "--format",
            "csv",
            "--text",
            STATEMENT,
            "--decision",
            "review",
            "--event",
            "statement",
        ],
    )
    .await?;
    let lines: Vec<&str> = exported.split("\r\n").filter(|l| !l.is_empty()).collect();
    ensure!(
        lines
            .first()
            .is_some_and(|h| h.starts_with("id,at,session_id,seq,event"))
            && lines.len() >= 2
            && lines[1..]
                .iter()
                .all(|l| l.contains(STATEMENT) && l.contains("\"review\"")),
        "{exported}"
    );

    // The forced approval is in the audit trail as a refusal by the requester.
    let trail: Value = reqwest::Client::new()
        .get(format!("{server}/api/v1/audit"))
        .query(&[("session_id", format!("review:{id}"))])
        .bearer_auth(ADMIN)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let refusals: Vec<&Value> = trail["events"]
        .as_array()
        .context("audit events")?
        .iter()
        .filter(|e| e["detail"]["action"] == "refused" && e["identity"] == ALICE)
        .collect();
    ensure!(
        !refusals.is_empty(),
        "no audited refusal for the forced approval: {trail}\n(logs in {})",
        stack.dir.path().display()
    );
    Ok(())
}

#[tokio::test]
async fn admin_pages_show_policy_diff_and_dry_run_to_admins_only() -> Result<()> {
    let stack = start().await?;
    let added = "drops-are-denied";
    let second = format!(
        "{POLICY}\n[[guardrail]]\nname = \"{added}\"\nmatch = {{ kinds = [\"drop\"] }}\naction = \"deny\"\n"
    );
    apply_policy(&stack.server, stack.dir.path(), &second).await?;
    let mut scenario = Scenario::start(
        "admin_pages.mjs",
        "admin_pages",
        json!({
            "server": stack.server,
            "admin": "carol",
            "other": "bob",
            "added_rule": added,
        }),
    )
    .await?;
    let diff = scenario
        .expect_step("diff", Duration::from_secs(120))
        .await?;
    ensure!(diff["added"].as_u64().unwrap_or(0) >= 1, "{diff}");
    scenario
        .expect_step("dry-run", Duration::from_secs(60))
        .await?;
    scenario
        .expect_step("non-admin-refused", Duration::from_secs(60))
        .await?;
    scenario.finish(Duration::from_secs(60)).await
}
