//! Policy as code, end to end: a live policy change reaches an open psql
//! session without reconnecting, and garbage policies are refused with
//! precise errors while the active policy stays as it was.

#![cfg(test)]

use anyhow::{Context, Result, bail};
use countersign_testkit::http::request;
use countersign_testkit::{Fixture, ensure_services};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_countersign");

const NO_DROP: &str = r#"
[[access]]
name = "everyone"
members = ["*"]
level = "read-write"

[[guardrail]]
name = "no-drop"
match = { kinds = ["drop"] }
action = "deny"
message = "no dropping here"

[[guardrail]]
name = "keep-b"
match = { kinds = ["delete"], tables = ["b"] }
action = "deny"
message = "rows of b stay"
"#;

/// An interactive psql whose stdin we write and whose output we read line by line.
struct LivePsql {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    out: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl LivePsql {
    fn start(fx: &Fixture) -> Result<Self> {
        let p = fx.server.default_params();
        let mut child = Command::new("psql")
            .args(["-X", "-At", "-v", "VERBOSITY=verbose"])
            .arg(format!(
                "host={} port={} user={} dbname={} sslmode=require",
                p.host, p.port, p.user, p.dbname
            ))
            .env("PGPASSWORD", p.password.clone().unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().context("stdin")?;
        let (tx, out) = tokio::sync::mpsc::unbounded_channel();
        for stream in [
            Box::new(child.stdout.take().context("stdout")?)
                as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(child.stderr.take().context("stderr")?),
        ] {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let _ = tx.send(line);
                }
            });
        }
        Ok(Self { child, stdin, out })
    }

    /// Runs `sql` and returns every line printed until the marker echoes back.
    async fn run(&mut self, sql: &str, marker: &str) -> Result<Vec<String>> {
        self.stdin
            .write_all(format!("{sql}\n\\echo {marker}\n").as_bytes())
            .await?;
        self.stdin.flush().await?;
        let mut seen = Vec::new();
        loop {
            let line = tokio::time::timeout(Duration::from_secs(15), self.out.recv())
                .await
                .with_context(|| format!("no {marker} after {seen:?}"))?
                .context("psql exited")?;
            if line == marker {
                return Ok(seen);
            }
            seen.push(line);
        }
    }
}

#[tokio::test]
async fn live_policy_change_applies_to_an_open_psql_session() -> Result<()> {
    ensure_services()?;
    let fx = Fixture::start(BIN, "cs_policy_live").await?;
    fx.db
        .execute("CREATE TABLE a (id int); CREATE TABLE b (id int)")
        .await?;
    let mut psql = LivePsql::start(&fx)?;
    let backend_pid = psql.run("SELECT pg_backend_pid();", "step0").await?;

    // No policy yet: DROP goes through.
    let out = psql.run("DROP TABLE a;", "step1").await?;
    assert_eq!(out, ["DROP TABLE"], "{out:?}");
    // Prepared while nothing forbids it; executed after the policy forbids it.
    let out = psql
        .run("PREPARE del AS DELETE FROM b WHERE id = 1;", "step1b")
        .await?;
    assert_eq!(out, ["PREPARE"], "{out:?}");

    let dir = tempfile::tempdir()?;
    let file = dir.path().join("policy.toml");
    std::fs::write(&file, NO_DROP)?;
    let applied = fx
        .server
        .cli(&[
            "policy",
            "apply",
            "--server",
            fx.server.http_url(),
            "--token",
            fx.server.admin_token(),
            "-f",
            file.to_str().context("path")?,
        ])
        .await?
        .ok()?;
    assert!(
        // Version 1 is the starter policy `countersign dev` applies.
        applied.stdout.contains("policy version 2 is active"),
        "{}",
        applied.combined()
    );

    // Within one second, the same session (same backend) is under the new policy.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let out = psql.run("DROP TABLE b;", "step2").await?;
    assert!(
        out.iter()
            .any(|l| l.contains("42501")
                && l.contains(r#"denied by rule "no-drop": no dropping here"#)),
        "{out:?}"
    );
    let out = psql.run("EXECUTE del;", "step2b").await?;
    assert!(
        out.iter().any(|l| l.contains(r#"denied by rule "keep-b""#)),
        "{out:?}"
    );
    let same_pid = psql.run("SELECT pg_backend_pid();", "step3").await?;
    assert_eq!(
        same_pid, backend_pid,
        "the session must not have reconnected"
    );
    let client = fx.db.client().await?;
    let exists: bool = client
        .query_one("SELECT to_regclass('public.b') IS NOT NULL", &[])
        .await?
        .get(0);
    assert!(exists, "table b must survive");

    // The denial is audited with its rule.
    let events = fx
        .server
        .wait_for_audit(&Default::default(), Duration::from_secs(10), |evs| {
            evs.iter()
                .any(|e| e.statement.as_deref() == Some("DROP TABLE b;"))
        })
        .await?;
    let denied = events
        .iter()
        .find(|e| e.statement.as_deref() == Some("DROP TABLE b;"))
        .context("denied event")?;
    assert_eq!(denied.decision.as_deref(), Some("deny"));
    assert_eq!(denied.rule.as_deref(), Some("no-drop"));
    psql.child.kill().await?;
    Ok(())
}

#[tokio::test]
async fn garbage_policies_are_refused_and_the_active_policy_stays() -> Result<()> {
    ensure_services()?;
    let fx = Fixture::start(BIN, "cs_policy_garbage").await?;
    let server = fx.server.http_url().to_owned();
    let admin = fx.server.admin_token().to_owned();
    let dir = tempfile::tempdir()?;
    let good = dir.path().join("good.toml");
    std::fs::write(&good, NO_DROP)?;
    fx.server
        .cli(&[
            "policy",
            "apply",
            "--server",
            &server,
            "--token",
            &admin,
            "-f",
            good.to_str().context("path")?,
        ])
        .await?
        .ok()?;

    let cases: &[(&str, &str, &[&str])] = &[
        (
            "unknown field",
            "[[guardrail]]\nname = \"x\"\nmatch = { kinds = [\"drop\"] }\naction = \"deny\"\ncolour = \"blue\"\n",
            &["line 5", "colour"],
        ),
        (
            "bad regex",
            "[[guardrail]]\nname = \"x\"\nmatch = { regex = \"(unclosed\" }\naction = \"deny\"\n",
            &["line 3", "regex"],
        ),
        (
            "unknown kind",
            "[[guardrail]]\nname = \"x\"\nmatch = { kinds = [\"drp\"] }\naction = \"deny\"\n",
            &["line 3", "drp"],
        ),
        (
            "empty match",
            "[[guardrail]]\nname = \"x\"\nmatch = {}\naction = \"deny\"\n",
            &["line 3", "empty"],
        ),
    ];
    for (what, text, expected) in cases {
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, text)?;
        // The CLI refuses it before sending, with line numbers.
        let out = fx
            .server
            .cli(&[
                "policy",
                "apply",
                "--server",
                &server,
                "--token",
                &admin,
                "-f",
                file.to_str().context("path")?,
            ])
            .await?;
        if out.success() {
            bail!("{what}: the CLI applied a garbage policy");
        }
        for part in *expected {
            assert!(
                out.stderr.to_lowercase().contains(&part.to_lowercase()),
                "{what}: {part:?} missing from {}",
                out.stderr
            );
        }
        // The control plane refuses it too, whatever client sends it.
        let resp = request(
            "POST",
            &format!("{server}/api/v1/policies"),
            Some(&admin),
            Some(&serde_json::json!({ "text": text })),
        )
        .await?;
        assert_eq!(resp.status, 400, "{what}: {}", resp.body);
        let body = resp.json()?;
        for part in *expected {
            let error = body["error"].as_str().unwrap_or_default().to_lowercase();
            assert!(
                error.contains(&part.to_lowercase()),
                "{what}: {part:?} missing from {error}"
            );
        }
    }
    // Version 2 (after the dev starter policy) is still active, unchanged.
    let active = request(
        "GET",
        &format!("{server}/api/v1/policies/active"),
        Some(&admin),
        None,
    )
    .await?
    .json()?;
    assert_eq!(active["version"], 2);
    assert_eq!(active["text"], NO_DROP);
    let listed = request(
        "GET",
        &format!("{server}/api/v1/policies"),
        Some(&admin),
        None,
    )
    .await?
    .json()?;
    assert_eq!(listed["policies"].as_array().map(Vec::len), Some(2));

    // And the gateway still enforces it.
    let out = countersign_testkit::Psql::new(&fx.server.default_params())
        .command("DROP TABLE IF EXISTS nothing_here")
        .run()
        .await?;
    assert!(
        !out.success() && out.stderr.contains("no-drop"),
        "{}",
        out.combined()
    );
    Ok(())
}

#[tokio::test]
async fn policy_test_and_replay_show_what_a_draft_would_do() -> Result<()> {
    ensure_services()?;
    let fx = Fixture::start(BIN, "cs_policy_replay").await?;
    fx.db
        .execute(
            "CREATE TABLE orders (id int, total int); INSERT INTO orders VALUES (1, 10), (2, 20)",
        )
        .await?;
    // History recorded with no policy: everything was allowed.
    for sql in [
        "SELECT * FROM orders",
        "DELETE FROM orders WHERE id = 1",
        "UPDATE orders SET total = 0",
    ] {
        countersign_testkit::Psql::new(&fx.server.default_params())
            .command(sql)
            .run()
            .await?
            .ok()?;
    }
    fx.server
        .wait_for_audit(&Default::default(), Duration::from_secs(10), |evs| {
            evs.iter().filter(|e| e.is_statement()).count() >= 3
        })
        .await?;

    let dir = tempfile::tempdir()?;
    let draft = dir.path().join("draft.toml");
    std::fs::write(
        &draft,
        r#"
[[access]]
name = "everyone"
members = ["*"]
level = "read-write"

[[guardrail]]
name = "no-unbounded-writes"
match = { kinds = ["update", "delete"], without_where = true }
action = "deny"

[[guardrail]]
name = "deletes-need-review"
match = { kinds = ["delete"] }
action = "review"
approvers = ["group:dba"]
"#,
    )?;
    let draft = draft.to_str().context("path")?;

    // `policy test` is local: facts, decision, rule; the exit code tells the action.
    let out = fx
        .server
        .cli(&[
            "policy",
            "test",
            "-f",
            draft,
            "--sql",
            "update orders set total = 1",
        ])
        .await?;
    assert_eq!(out.status.code(), Some(3), "{}", out.combined());
    assert!(
        out.stdout.contains("decision: deny") && out.stdout.contains("rule: no-unbounded-writes"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("\"without_where\": true"),
        "facts are printed: {}",
        out.stdout
    );
    let out = fx
        .server
        .cli(&[
            "policy",
            "test",
            "-f",
            draft,
            "--sql",
            "delete from orders where id = 2",
        ])
        .await?;
    assert_eq!(out.status.code(), Some(4), "{}", out.combined());
    let out = fx
        .server
        .cli(&["policy", "test", "-f", draft, "--sql", "select 1"])
        .await?
        .ok()?;
    assert!(out.stdout.contains("decision: allow"), "{}", out.stdout);

    // `policy replay` runs the draft over the recorded history on the control plane.
    let out = fx
        .server
        .cli(&[
            "policy",
            "replay",
            "-f",
            draft,
            "--since",
            "1h",
            "--server",
            fx.server.http_url(),
            "--token",
            fx.server.admin_token(),
            "--format",
            "json",
        ])
        .await?
        .ok()?;
    let report: serde_json::Value = serde_json::from_str(out.stdout.trim())?;
    assert_eq!(report["would_deny"], 1, "{report}");
    assert_eq!(report["would_review"], 1, "{report}");
    let findings: Vec<(String, String)> = report["findings"]
        .as_array()
        .context("findings")?
        .iter()
        .map(|f| {
            (
                f["statement"].as_str().unwrap_or("").to_owned(),
                f["rule"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert!(
        findings.contains(&(
            "UPDATE orders SET total = 0".into(),
            "no-unbounded-writes".into()
        )),
        "{findings:?}"
    );
    assert!(
        findings.contains(&(
            "DELETE FROM orders WHERE id = 1".into(),
            "deletes-need-review".into()
        )),
        "{findings:?}"
    );
    // Replay changes nothing: the dev starter policy (version 1) is still the active one.
    let active = request(
        "GET",
        &format!("{}/api/v1/policies/active", fx.server.http_url()),
        Some(fx.server.admin_token()),
        None,
    )
    .await?;
    assert_eq!(active.json()?["version"], 1, "{}", active.body);
    Ok(())
}
