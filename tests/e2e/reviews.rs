//! Per-statement review, end to end with the real binary: a statement that
//! matches a review rule is held; a *different* person approves or denies it
//! over HTTP or the CLI; the held statement then runs or fails, and the
//! session stays usable. The requester can never approve their own.

#![cfg(test)]

use anyhow::{Context, Result, bail};
use countersign_testkit::http::request;
use countersign_testkit::{DevServerOpts, Fixture, Psql, ensure_services, eventually};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_countersign");
const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";

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

async fn fixture(prefix: &str) -> Result<(Fixture, tempfile::TempDir)> {
    ensure_services()?;
    let dir = tempfile::tempdir()?;
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, POLICY)?;
    let opts = DevServerOpts {
        extra_args: vec![
            "--policy".into(),
            policy.to_str().context("path")?.into(),
            "--review-timeout".into(),
            "30s".into(),
        ],
        ..DevServerOpts::default()
    };
    let fx = Fixture::start_with(BIN, prefix, opts).await?;
    fx.db
        .execute("CREATE TABLE orders (id int primary key, total int); INSERT INTO orders SELECT g, g * 10 FROM generate_series(1, 20) g")
        .await?;
    Ok((fx, dir))
}

/// The pending review of `statement`, as the approver's `review list` shows it.
async fn pending_review(
    fx: &Fixture,
    approver_token: &str,
    statement: &str,
) -> Result<serde_json::Value> {
    eventually(Duration::from_secs(15), || async {
        let out = fx
            .server
            .cli(&[
                "review",
                "list",
                "--server",
                fx.server.http_url(),
                "--token",
                approver_token,
                "--format",
                "jsonl",
            ])
            .await?
            .ok()?;
        for line in out.stdout.lines() {
            let r: serde_json::Value = serde_json::from_str(line)?;
            if r["statement"] == statement && r["status"] == "pending" {
                return Ok(r);
            }
        }
        bail!("no pending review of {statement:?} yet: {}", out.stdout)
    })
    .await
}

async fn decide(
    fx: &Fixture,
    token: &str,
    id: &str,
    verb: &str,
) -> Result<countersign_testkit::http::HttpResponse> {
    request(
        "POST",
        &format!("{}/api/v1/reviews/{id}/{verb}", fx.server.http_url()),
        Some(token),
        Some(&serde_json::json!({ "comment": format!("{verb} by test") })),
    )
    .await
}

async fn row_exists(fx: &Fixture, id: i32) -> Result<bool> {
    let client = fx.db.client().await?;
    Ok(client
        .query_one("SELECT count(*) FROM orders WHERE id = $1", &[&id])
        .await?
        .get::<_, i64>(0)
        == 1)
}

#[tokio::test]
async fn held_delete_runs_after_another_person_approves() -> Result<()> {
    let (fx, _dir) = fixture("cs_review_approve").await?;
    let alice = fx.server.mint_token(ALICE, &[], None).await?;
    let bob = fx.server.mint_token(BOB, &["dba"], None).await?;
    let alice_dba = fx
        .server
        .mint_token(ALICE, &["dba", "countersign-admins"], None)
        .await?;

    let params = fx.gateway_as(ALICE, &alice);
    let held = tokio::spawn({
        let params = params.clone();
        async move {
            Psql::new(&params)
                .command("DELETE FROM orders WHERE id = 7")
                .run()
                .await
        }
    });
    let review = pending_review(&fx, &bob, "DELETE FROM orders WHERE id = 7").await?;
    let id = review["id"].as_str().context("id")?.to_owned();
    assert_eq!(review["requester"], ALICE);
    assert!(row_exists(&fx, 7).await?, "nothing runs before approval");

    // Alice cannot approve her own statement, not even as an admin in the approver group.
    for token in [&alice, &alice_dba] {
        let refused = decide(&fx, token, &id, "approve").await?;
        assert_eq!(refused.status, 403, "{}", refused.body);
    }
    let approved = decide(&fx, &bob, &id, "approve").await?;
    assert_eq!(approved.status, 200, "{}", approved.body);

    let out = tokio::time::timeout(Duration::from_secs(15), held)
        .await???
        .ok()?;
    assert!(out.stdout.contains("DELETE 1"), "{}", out.combined());
    assert!(
        out.stderr.contains(&id),
        "the client is told the review id: {}",
        out.stderr
    );
    assert!(!row_exists(&fx, 7).await?);

    // The audit trail says the statement ran after review.
    let events = fx
        .server
        .wait_for_audit(&Default::default(), Duration::from_secs(10), |evs| {
            evs.iter().any(|e| {
                e.statement.as_deref() == Some("DELETE FROM orders WHERE id = 7")
                    && e.command_tag.is_some()
            })
        })
        .await?;
    let ran = events
        .iter()
        .find(|e| {
            e.statement.as_deref() == Some("DELETE FROM orders WHERE id = 7")
                && e.command_tag.is_some()
        })
        .context("statement event")?;
    assert_eq!(ran.decision.as_deref(), Some("review"));
    assert_eq!(ran.rule.as_deref(), Some("deletes-need-review"));
    Ok(())
}

#[tokio::test]
async fn denied_statement_fails_and_the_session_stays_usable() -> Result<()> {
    let (fx, _dir) = fixture("cs_review_deny").await?;
    let alice = fx.server.mint_token(ALICE, &[], None).await?;
    let bob = fx.server.mint_token(BOB, &["dba"], None).await?;
    let (client, _conn) = fx.gateway_as(ALICE, &alice).connect().await?;
    let client = std::sync::Arc::new(client);

    // Simple protocol, denied.
    let held = tokio::spawn({
        let client = client.clone();
        async move { client.simple_query("DELETE FROM orders WHERE id = 3").await }
    });
    let review = pending_review(&fx, &bob, "DELETE FROM orders WHERE id = 3").await?;
    let denied = decide(&fx, &bob, review["id"].as_str().context("id")?, "deny").await?;
    assert_eq!(denied.status, 200, "{}", denied.body);
    let err = held.await?.err().context("a denied statement must fail")?;
    let db = err.as_db_error().context("an ErrorResponse")?;
    assert_eq!(db.code().code(), "42501");
    assert!(
        db.message().contains("denied by bob@example.com"),
        "{}",
        db.message()
    );
    assert!(row_exists(&fx, 3).await?);
    let rows = client
        .simple_query("SELECT 1")
        .await
        .context("the session stays usable")?;
    assert!(
        rows.iter()
            .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
    );

    // Extended protocol, inside a transaction, approved.
    client.batch_execute("BEGIN").await?;
    let held = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .execute("DELETE FROM orders WHERE id = $1", &[&4i32])
                .await
        }
    });
    let review = pending_review(&fx, &bob, "DELETE FROM orders WHERE id = $1").await?;
    decide(&fx, &bob, review["id"].as_str().context("id")?, "approve").await?;
    assert_eq!(held.await??, 1);
    client.batch_execute("COMMIT").await?;
    assert!(!row_exists(&fx, 4).await?);

    // Approved through the CLI as well.
    let held = tokio::spawn({
        let client = client.clone();
        async move { client.simple_query("DELETE FROM orders WHERE id = 5").await }
    });
    let review = pending_review(&fx, &bob, "DELETE FROM orders WHERE id = 5").await?;
    let id = review["id"].as_str().context("id")?;
    fx.server
        .cli(&[
            "review",
            "approve",
            id,
            "--server",
            fx.server.http_url(),
            "--token",
            &bob,
        ])
        .await?
        .ok()?;
    held.await??;
    assert!(!row_exists(&fx, 5).await?);
    Ok(())
}
