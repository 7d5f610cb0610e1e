//! JSON logs (`--log-format json`): every line is one JSON object; the
//! gateway's lines for a session carry its `session_id` and `identity`; and
//! neither a password (the client's token, or a wrong one) nor a masked value
//! ever appears in the log.

#![cfg(test)]

use anyhow::{Context, Result, ensure};
use countersign_testkit::corpus;
use countersign_testkit::{DevServerOpts, Fixture, Psql, ensure_services};

const BIN: &str = env!("CARGO_BIN_EXE_countersign");
const EMAIL: &str = "alice.smith@example.com";
const SSN: &str = "219-09-9999";
const WRONG_PASSWORD: &str = "hunter2-wrong-password-never-logged";

#[tokio::test]
async fn json_logs_name_the_session_and_hold_no_secret() -> Result<()> {
    ensure_services()?;
    let opts = DevServerOpts {
        extra_args: vec![
            "--policy".to_owned(),
            corpus::corpus_dir()
                .join("masking.toml")
                .display()
                .to_string(),
            "--log-format".to_owned(),
            "json".to_owned(),
        ],
        ..DevServerOpts::default()
    };
    let fx = Fixture::start_with(BIN, "cs_json_logs", opts).await?;
    fx.db
        .execute(&format!(
            "CREATE TABLE customers (id int PRIMARY KEY, name text, email text, phone text, \
             ssn text, card_number text, iban text); \
             INSERT INTO customers VALUES (1, 'Alice Smith', '{EMAIL}', '+1 415 555 2671', \
             '{SSN}', '4111111111111111', 'DE89370400440532013000')"
        ))
        .await?;

    let out = Psql::new(&fx.gateway())
        .command("SELECT name, email, ssn FROM customers")
        .output()
        .await?;
    ensure!(out.contains("Alice Smith"), "{out}");
    ensure!(
        !out.contains(EMAIL) && !out.contains(SSN),
        "not masked: {out}"
    );
    let refused = Psql::new(&fx.gateway().with_password(WRONG_PASSWORD))
        .command("SELECT 1")
        .run()
        .await?;
    ensure!(!refused.success(), "{}", refused.combined());

    // The session's end is logged when the client leaves; give it a moment.
    let mut log = String::new();
    for _ in 0..50 {
        log = fx.server.stderr_log();
        if log.contains("session ended") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let token = fx.server.user_token();
    for needle in [token, WRONG_PASSWORD, EMAIL, SSN] {
        ensure!(!log.contains(needle), "{needle:?} is in the log:\n{log}");
    }
    let mut session_lines = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
        let message = v["fields"]["message"].as_str().unwrap_or_default();
        if message == "session started" || message == "session ended" {
            session_lines += 1;
            let span = &v["span"];
            ensure!(span["name"] == "session", "{line}");
            ensure!(
                span["session_id"].as_str().is_some_and(|s| !s.is_empty()),
                "{line}"
            );
            ensure!(span["identity"] == fx.server.user(), "{line}");
        }
    }
    ensure!(session_lines == 2, "session lines: {session_lines}\n{log}");
    Ok(())
}
