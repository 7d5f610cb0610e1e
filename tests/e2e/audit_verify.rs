//! End-to-end: the audit trail of statements run through the gateway verifies
//! with `countersign audit verify`; a row changed directly in the store's
//! database (the `countersign dev` SQLite file) makes verify exit 3 and name
//! the session and seq. Export and the session timeline show the same events.

#![cfg(test)]

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use countersign_testkit::process::CmdOutput;
use countersign_testkit::{AuditQuery, DevServer, DevServerOpts, Fixture, Psql};

const BIN: &str = env!("CARGO_BIN_EXE_countersign");
const ALICE: &str = "alice@example.com";

const STATEMENTS: [&str; 4] = [
    "CREATE TABLE ledger (id int PRIMARY KEY, amount int)",
    "INSERT INTO ledger VALUES (1, 100), (2, 200)",
    "UPDATE ledger SET amount = 0 WHERE id = 2",
    "SELECT sum(amount) FROM ledger",
];

/// Runs `sql` on the dev store with the sqlite3 client, the way someone with
/// write access to the file would: around the append-only triggers.
async fn tamper(db: &std::path::Path, sql: &str) -> Result<()> {
    let script = format!(
        "BEGIN; DROP TRIGGER audit_events_no_update; {sql}; \
         CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events \
         WHEN OLD.chain_hash IS NOT NULL BEGIN SELECT RAISE(ABORT, 'append-only'); END; COMMIT;"
    );
    let out = tokio::process::Command::new("sqlite3")
        .arg(db)
        .arg(&script)
        .output()
        .await
        .context("running sqlite3 (apt-get install sqlite3)")?;
    ensure!(
        out.status.success(),
        "sqlite3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `countersign audit verify` with the admin token; its output whatever the exit code.
async fn verify(server: &DevServer) -> Result<CmdOutput> {
    server
        .cli(&[
            "audit",
            "verify",
            "--server",
            server.http_url(),
            "--token",
            server.admin_token(),
        ])
        .await
}

#[tokio::test]
async fn verify_passes_then_names_the_tampered_row() -> Result<()> {
    let opts = DevServerOpts {
        extra_args: vec!["--audit-checkpoint-interval".into(), "1s".into()],
        ..DevServerOpts::default()
    };
    let fx = Fixture::start_with(BIN, "audit_verify", opts).await?;
    let alice = fx.gateway_as(ALICE, &fx.server.mint_token(ALICE, &[], None).await?);
    let mut psql = Psql::new(&alice);
    for sql in STATEMENTS {
        psql = psql.command(sql);
    }
    psql.output().await?;

    let events = fx
        .server
        .wait_for_audit(&AuditQuery::identity(ALICE), Duration::from_secs(15), |e| {
            e.iter().filter(|e| e.is_statement()).count() == STATEMENTS.len()
                && e.iter().any(|e| e.event == "session_ended")
        })
        .await?;
    let target = events
        .iter()
        .find(|e| e.statement.as_deref() == Some(STATEMENTS[2]))
        .context("the UPDATE's event")?;
    let session = target.session_id.clone();
    // Let a checkpoint cover the session.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let server = fx.server.http_url().to_owned();
    let token = fx.server.admin_token().to_owned();
    let intact = verify(&fx.server).await?;
    ensure!(intact.status.code() == Some(0), "{intact:?}");
    ensure!(intact.stdout.contains("intact"), "{intact:?}");

    // Export and timeline carry the same statements.
    let export = fx
        .server
        .cli(&[
            "audit",
            "export",
            "--server",
            &server,
            "--token",
            &token,
            "--session-id",
            &session,
        ])
        .await?
        .ok()?;
    let lines: Vec<serde_json::Value> = export
        .stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    ensure!(
        lines.len() == events.iter().filter(|e| e.session_id == session).count(),
        "{export:?}"
    );
    // CSV, filtered by text (case-insensitive): the header and the UPDATE.
    let csv = fx
        .server
        .cli(&[
            "audit",
            "export",
            "--server",
            &server,
            "--token",
            &token,
            "--session-id",
            &session,
            "--text",
            "update LEDGER",
            "--format",
            "csv",
        ])
        .await?
        .ok()?;
    let rows: Vec<&str> = csv.stdout.split_terminator("\r\n").collect();
    ensure!(rows.len() == 2, "{csv:?}");
    ensure!(
        rows[0].starts_with("id,at,session_id,seq,event,"),
        "{csv:?}"
    );
    ensure!(
        rows[1].starts_with(&format!("\"{session}:{}\",", target.seq))
            && rows[1].contains(&format!(",\"{}\",", STATEMENTS[2])),
        "{csv:?}"
    );
    let timeline = fx
        .server
        .http(
            "GET",
            &format!("/api/v1/sessions/{session}/timeline"),
            None,
            None,
        )
        .await?;
    let body: serde_json::Value = serde_json::from_str(&timeline.body)?;
    ensure!(body["statements"] == 4, "{body}");
    let sqls: Vec<&str> = body["events"]
        .as_array()
        .context("events")?
        .iter()
        .filter_map(|e| e["statement"].as_str())
        .collect();
    ensure!(sqls == STATEMENTS, "{sqls:?}");

    // Someone with write access to the store rewrites history.
    let db = fx.server.data_dir().join("countersign.db");
    tamper(
        &db,
        &format!(
            "UPDATE audit_events SET statement = 'SELECT 1' WHERE session_id = '{session}' AND seq = {}",
            target.seq
        ),
    )
    .await?;
    let tampered = verify(&fx.server).await?;
    ensure!(tampered.status.code() == Some(3), "{tampered:?}");
    let expected = format!("modified: session {session} seq {}", target.seq);
    ensure!(tampered.stdout.contains(&expected), "{tampered:?}");
    ensure!(tampered.stdout.contains("TAMPERED"), "{tampered:?}");
    Ok(())
}
