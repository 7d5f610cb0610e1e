//! End-to-end: every statement through the gateway is audited with who ran it, where, and
//! what kind of SQL it was, and the audit trail is searchable by the CLI and the HTTP API.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use countersign_testkit::{AuditEvent, AuditQuery, Fixture, Psql, RESOURCE, pgbench};

const BIN: &str = env!("CARGO_BIN_EXE_countersign");
const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";

/// What one statement event must say.
struct Expected {
    sql: &'static str,
    kinds: &'static [&'static str],
    protocol: &'static str,
    parameters: u64,
    /// The upstream CommandComplete tag, where a single statement makes it unambiguous.
    tag: Option<&'static str>,
    fails: bool,
}

const fn simple(sql: &'static str, kinds: &'static [&'static str], tag: &'static str) -> Expected {
    let tag = if tag.is_empty() { None } else { Some(tag) };
    Expected {
        sql,
        kinds,
        protocol: "simple",
        parameters: 0,
        tag,
        fails: false,
    }
}

const fn extended(
    sql: &'static str,
    kind: &'static [&'static str],
    n: u64,
    tag: &'static str,
) -> Expected {
    Expected {
        protocol: "extended",
        parameters: n,
        ..simple(sql, kind, tag)
    }
}

/// Run by alice with psql, one `-c` (one Query message) each, in one session. The last
/// sends several statements in one Query: one event listing each kind.
#[rustfmt::skip]
const PSQL_STATEMENTS: [Expected; 7] = [
    simple("CREATE TABLE items (id int PRIMARY KEY, name text)", &["create"], "CREATE TABLE"),
    simple("INSERT INTO items VALUES (1, 'one'), (2, 'two')", &["insert"], "INSERT 0 2"),
    simple("UPDATE items SET name = 'deux' WHERE id = 2", &["update"], "UPDATE 1"),
    simple("SELECT id, name FROM items ORDER BY id", &["select"], "SELECT 2"),
    simple("DELETE FROM items WHERE id = 1", &["delete"], "DELETE 1"),
    simple("COPY items TO STDOUT", &["copy"], "COPY 1"),
    simple("SELECT count(*) FROM items; INSERT INTO items VALUES (3, 'three')", &["insert", "select"], ""),
];

/// Run by alice with tokio-postgres (extended protocol): one event per Execute.
#[rustfmt::skip]
const EXTENDED_STATEMENTS: [Expected; 2] = [
    extended("SELECT name FROM items WHERE id = $1", &["select"], 1, "SELECT 1"),
    extended("INSERT INTO items VALUES ($1, $2)", &["insert"], 2, "INSERT 0 1"),
];

/// Run by alice with psql in a third session; fails upstream.
const FAILING: Expected = Expected {
    fails: true,
    ..simple("SELECT 1 / 0", &["select"], "")
};

const BOB_SQL: &str = "SELECT 'bob was here'";

fn statements(events: &[AuditEvent]) -> Vec<&AuditEvent> {
    events.iter().filter(|e| e.is_statement()).collect()
}

/// Every session that ran a statement has been started and ended in the trail.
fn sessions_complete(events: &[AuditEvent]) -> bool {
    let with = |kind: &str| -> BTreeSet<&str> {
        let of_kind = events.iter().filter(|e| e.event == kind);
        of_kind.map(|e| e.session_id.as_str()).collect()
    };
    let ran = with("statement");
    ran.is_subset(&with("session_started")) && ran.is_subset(&with("session_ended"))
}

fn check_event(event: &AuditEvent, expected: &Expected) -> Result<()> {
    let error = event
        .error
        .as_ref()
        .filter(|e| !e.is_null())
        .map(|e| e.to_string());
    let tag_ok = expected.tag.is_none() || event.command_tag.as_deref() == expected.tag;
    let error_ok = match &error {
        Some(text) => expected.fails && text.contains("division by zero"),
        None => !expected.fails,
    };
    let checks = [
        (
            event.statement.as_deref() == Some(expected.sql),
            "statement",
        ),
        (
            event.identity == ALICE && event.resource == RESOURCE,
            "identity/resource",
        ),
        (
            event.id == format!("{}:{}", event.session_id, event.seq),
            "id",
        ),
        (event.decision.as_deref() == Some("allow"), "decision"),
        (
            event.protocol.as_deref() == Some(expected.protocol),
            "protocol",
        ),
        (event.kind_set() == expected.kinds, "kinds"),
        (
            event.parameter_count.unwrap_or(0) == expected.parameters,
            "parameter_count",
        ),
        (event.duration_us.is_some(), "duration_us"),
        (tag_ok, "command_tag"),
        (error_ok, "error"),
        (
            chrono::DateTime::parse_from_rfc3339(&event.at).is_ok(),
            "at (RFC 3339)",
        ),
    ];
    for (ok, field) in checks {
        ensure!(ok, "wrong {field} for {:?}: {event:#?}", expected.sql);
    }
    Ok(())
}

/// Runs alice's statements (psql, tokio-postgres, the failing one) and then bob's.
async fn run_workload(fx: &Fixture) -> Result<()> {
    let alice = fx.gateway_as(ALICE, &fx.server.mint_token(ALICE, &[], None).await?);
    let bob = fx.gateway_as(BOB, &fx.server.mint_token(BOB, &[], None).await?);

    let mut psql = Psql::new(&alice);
    for statement in &PSQL_STATEMENTS {
        psql = psql.command(statement.sql);
    }
    psql.output().await?;

    let (client, conn) = alice.connect().await?;
    let [select, insert] = &EXTENDED_STATEMENTS;
    ensure!(client.query(select.sql, &[&2i32]).await?.len() == 1);
    ensure!(client.execute(insert.sql, &[&4i32, &"four"]).await? == 1);
    drop(client);
    conn.await?;

    Psql::new(&alice)
        .command(FAILING.sql)
        .run()
        .await?
        .failed()?;
    Psql::new(&bob).command(BOB_SQL).output().await?;
    Ok(())
}

#[tokio::test]
async fn statements_are_audited_per_identity_with_kinds() -> Result<()> {
    let fx = Fixture::start(BIN, "audit_kinds").await?;
    run_workload(&fx).await?;
    let expected: Vec<&Expected> = PSQL_STATEMENTS
        .iter()
        .chain(&EXTENDED_STATEMENTS)
        .chain([&FAILING])
        .collect();

    // Bob's statement shows up under bob, and only there.
    let bob = fx
        .server
        .wait_for_audit(&AuditQuery::identity(BOB), Duration::from_secs(15), |e| {
            statements(e).len() == 1 && sessions_complete(e)
        })
        .await?;
    ensure!(bob.iter().all(|e| e.identity == BOB), "{bob:#?}");
    ensure!(statements(&bob)[0].statement.as_deref() == Some(BOB_SQL));

    let events = fx
        .server
        .wait_for_audit(&AuditQuery::identity(ALICE), Duration::from_secs(15), |e| {
            statements(e).len() >= expected.len() && sessions_complete(e)
        })
        .await?;
    ensure!(
        events.iter().all(|e| e.identity == ALICE),
        "foreign events: {events:#?}"
    );
    let found = statements(&events);
    ensure!(
        found.len() == expected.len(),
        "expected {} statements, got {found:#?}",
        expected.len()
    );
    for (event, expected) in found.iter().zip(&expected) {
        check_event(event, expected)?;
    }

    // Sessions: psql's seven share one, then tokio-postgres, then the failing psql run.
    let sessions: Vec<&str> = found.iter().map(|e| e.session_id.as_str()).collect();
    ensure!(
        sessions[..7].iter().all(|s| *s == sessions[0]),
        "{sessions:?}"
    );
    ensure!(sessions[7] == sessions[8] && sessions[7] != sessions[0] && sessions[9] != sessions[7]);
    let seqs: Vec<u64> = found[..7].iter().map(|e| e.seq).collect();
    ensure!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seq not increasing: {seqs:?}"
    );
    let started = events
        .iter()
        .find(|e| e.event == "session_started" && e.session_id == sessions[0])
        .context("no session_started")?;
    ensure!(
        started.seq < seqs[0],
        "session_started after its statements"
    );

    // Filters: resource, limit, and an unfiltered admin search that sees both identities.
    let everyone = fx
        .server
        .audit_search(&AuditQuery {
            resource: Some(RESOURCE.into()),
            ..Default::default()
        })
        .await?;
    let identities: BTreeSet<&str> = everyone.iter().map(|e| e.identity.as_str()).collect();
    ensure!(
        identities.contains(ALICE) && identities.contains(BOB),
        "{identities:?}"
    );
    let none = fx
        .server
        .audit_search(&AuditQuery {
            resource: Some("elsewhere".into()),
            ..Default::default()
        })
        .await?;
    ensure!(none.is_empty(), "{none:#?}");
    let limited = fx
        .server
        .audit_search(&AuditQuery {
            limit: Some(2),
            since: Some("1h".into()),
            ..AuditQuery::identity(ALICE)
        })
        .await?;
    ensure!(limited.len() == 2, "{limited:#?}");
    ensure!(
        limited.iter().all(|e| events.contains(e)),
        "limit returned unknown events"
    );
    Ok(())
}

/// In a pipeline, statements after an error up to the Sync never run. Their audit intents
/// were spooled before they were forwarded; they must leave no row (not even an
/// outcome-unknown one), while the statements that ran keep theirs.
#[tokio::test]
async fn skipped_pipeline_statements_leave_no_audit_row() -> Result<()> {
    let fx = Fixture::start(BIN, "audit_pipeline").await?;
    let alice = fx.gateway_as(ALICE, &fx.server.mint_token(ALICE, &[], None).await?);
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("pipeline.sql");
    std::fs::write(
        &script,
        "\\startpipeline\nSELECT 1;\nSELECT 1/0;\nSELECT 2;\nSELECT 3;\n\\endpipeline\n",
    )?;
    let script = script.to_str().context("path")?;
    let out = pgbench(&alice, &["-n", "-M", "extended", "-t", "1", "-f", script]).await?;
    ensure!(
        !out.success(),
        "the division by zero fails the run: {out:?}"
    );

    let events = fx
        .server
        .wait_for_audit(&AuditQuery::identity(ALICE), Duration::from_secs(15), |e| {
            statements(e).len() >= 2 && sessions_complete(e)
        })
        .await?;
    // Nothing else arrives later (an orphaned intent would, once its session ended).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again = fx.server.audit_search(&AuditQuery::identity(ALICE)).await?;
    ensure!(again.len() == events.len(), "{again:#?}");
    let found: Vec<(&str, bool)> = statements(&again)
        .iter()
        .map(|e| {
            (
                e.statement.as_deref().unwrap_or(""),
                e.error.as_ref().is_some_and(|v| !v.is_null()),
            )
        })
        .collect();
    ensure!(
        found == [("SELECT 1;", false), ("SELECT 1/0;", true)],
        "{found:?}"
    );
    Ok(())
}

#[tokio::test]
async fn http_audit_api_matches_the_cli() -> Result<()> {
    let fx = Fixture::start(BIN, "audit_http").await?;
    run_workload(&fx).await?;
    let cli = fx
        .server
        .wait_for_audit(&AuditQuery::identity(ALICE), Duration::from_secs(15), |e| {
            statements(e).len() >= 10 && sessions_complete(e)
        })
        .await?;
    // Bob's session is the workload's last; its upload may trail alice's.
    fx.server
        .wait_for_audit(&AuditQuery::identity(BOB), Duration::from_secs(15), |e| {
            statements(e).len() == 1 && sessions_complete(e)
        })
        .await?;

    let server = &fx.server;
    let get = |query: String| async move {
        let resp = server
            .http("GET", &format!("/api/v1/audit?{query}"), None, None)
            .await?;
        ensure!(resp.status == 200, "{resp:?}");
        let events = resp.json()?.get("events").cloned().context("no `events`")?;
        anyhow::Ok(serde_json::from_value::<Vec<AuditEvent>>(events)?)
    };
    let http = get("identity=alice%40example.com".into()).await?;
    ensure!(
        statements(&http) == statements(&cli),
        "HTTP {http:#?}\nCLI {cli:#?}"
    );
    let bob = get(format!("identity=bob%40example.com&resource={RESOURCE}")).await?;
    ensure!(
        statements(&bob).len() == 1 && bob.iter().all(|e| e.identity == BOB),
        "{bob:#?}"
    );
    ensure!(
        get("identity=alice%40example.com&limit=3".into())
            .await?
            .len()
            == 3
    );
    let hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    ensure!(
        statements(&get(format!("identity=alice%40example.com&since={hour_ago}")).await?).len()
            == 10
    );
    let later = (chrono::Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let future = get(format!("identity=alice%40example.com&since={later}")).await?;
    ensure!(future.is_empty(), "events from the future: {future:#?}");

    // The audit trail is not public.
    for bearer in ["", "not-the-admin-token"] {
        let resp = fx
            .server
            .http("GET", "/api/v1/audit", Some(bearer), None)
            .await?;
        ensure!(
            resp.status == 401 || resp.status == 403,
            "{bearer:?}: {resp:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn openapi_document_lists_the_api() -> Result<()> {
    let fx = Fixture::start(BIN, "audit_openapi").await?;
    let resp = fx
        .server
        .http("GET", "/api/v1/openapi.json", None, None)
        .await?;
    ensure!(resp.status == 200, "{resp:?}");
    let doc = resp.json()?;
    let version = doc["openapi"].as_str().context("no `openapi` version")?;
    ensure!(version.starts_with("3."), "openapi {version}");
    let paths = doc["paths"].as_object().context("no `paths` object")?;
    for path in ["/api/v1/audit", "/api/v1/tokens"] {
        ensure!(
            paths.contains_key(path),
            "{path} missing from {:?}",
            paths.keys().collect::<Vec<_>>()
        );
    }
    ensure!(
        paths["/api/v1/audit"].get("get").is_some()
            && paths["/api/v1/tokens"].get("post").is_some()
    );
    Ok(())
}
