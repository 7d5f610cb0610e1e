//! End-to-end: the gateway enforces the guardrails of `tests/corpus/guardrails.toml`.
//!
//! `countersign dev --policy tests/corpus/guardrails.toml` runs in front of a fresh database
//! holding the fixture of `countersign_testkit::corpus::arena`. Every entry of
//! `tests/corpus/guardrail_attacks.txt` must be denied (ERROR 42501, `countersign: denied by
//! rule "<rule>": <message>`) over psql, tokio-postgres and pipelines, leave the fixture and
//! the server's file system untouched, and leave the session usable. Every entry of
//! `tests/corpus/guardrail_legit.txt` must pass with the same results as a direct
//! connection. Denials must be audited with their decision and rule.
//!
//! Failures name the corpus entry (and its line) and show what came back; all failing
//! entries are listed, not just the first.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use countersign_testkit::corpus::attack::{
    alive, check_denial, check_psql_denial, expected_messages, psql_attack,
};
use countersign_testkit::corpus::{
    self, Arena, Entry, Protocol, Rules, reseed, run_attacks, run_directly, run_legit,
};
use countersign_testkit::{DevServerOpts, Fixture, Psql, TestDb, ensure_services, eventually};
use tokio_postgres::error::SqlState;

const BIN: &str = env!("CARGO_BIN_EXE_countersign");
/// The issue asks for at least this many attacks and legitimate statements.
const MIN_ATTACKS: usize = 150;
const MIN_LEGIT: usize = 80;
/// Each guardrail must be exercised by at least this many attacks.
const MIN_PER_RULE: usize = 10;

fn policy_path() -> String {
    corpus::corpus_dir()
        .join("guardrails.toml")
        .display()
        .to_string()
}

/// The policy's guardrails: name → message.
fn policy_rules() -> Result<Rules> {
    let text = std::fs::read_to_string(policy_path())?;
    let policy: toml::Table = toml::from_str(&text)?;
    let guardrails = policy.get("guardrail").and_then(|g| g.as_array());
    let mut rules = Rules::new();
    for rule in guardrails.context("the policy has no [[guardrail]]")? {
        let field = |key: &str| rule.get(key).and_then(|v| v.as_str()).map(str::to_owned);
        let (name, message) = (field("name"), field("message"));
        rules.insert(
            name.context("guardrail without name")?,
            message.context("guardrail without message")?,
        );
    }
    Ok(rules)
}

fn attacks() -> Result<Vec<Entry>> {
    let attacks = corpus::load("guardrail_attacks.txt")?;
    ensure!(
        attacks.len() >= MIN_ATTACKS,
        "only {} attacks; the corpus must hold at least {MIN_ATTACKS}",
        attacks.len()
    );
    Ok(attacks)
}

fn legit() -> Result<Vec<Entry>> {
    let legit = corpus::load("guardrail_legit.txt")?;
    ensure!(
        legit.len() >= MIN_LEGIT,
        "only {} legitimate statements; the corpus must hold at least {MIN_LEGIT}",
        legit.len()
    );
    Ok(legit)
}

async fn start(prefix: &str) -> Result<Fixture> {
    let opts = DevServerOpts {
        extra_args: vec!["--policy".to_owned(), policy_path()],
        ..DevServerOpts::default()
    };
    Fixture::start_with(BIN, prefix, opts).await
}

fn report(failures: Vec<String>, total: usize, what: &str) -> Result<()> {
    if failures.is_empty() {
        return Ok(());
    }
    bail!(
        "{} failures over {total} {what}:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    )
}

#[test]
fn corpora_are_well_formed_and_cover_the_policy() -> Result<()> {
    let (rules, attacks, legit) = (policy_rules()?, attacks()?, legit()?);
    let mut problems = Vec::new();
    let mut per_rule: Vec<(&str, usize)> = rules.keys().map(|r| (r.as_str(), 0)).collect();
    for entry in &attacks {
        if let Err(e) = expected_messages(entry, &rules) {
            problems.push(format!("{e:#}"));
        }
        if entry.rules.is_empty() || !entry.params.is_empty() || !entry.stdin.is_empty() {
            problems.push(format!(
                "{entry}: attacks need `rule:` and take no param/stdin"
            ));
        }
        if !(entry.runs(Protocol::Simple) && entry.runs(Protocol::Extended)) {
            problems.push(format!(
                "{entry}: every attack runs over simple and extended"
            ));
        }
        for (rule, count) in &mut per_rule {
            *count += usize::from(entry.rules.iter().any(|r| r == rule));
        }
    }
    // An attack with setup may reuse a legitimate statement: the setup makes it an attack.
    let plain_attacks = attacks.iter().filter(|e| e.setup.is_empty());
    let attack_sql: BTreeSet<&str> = plain_attacks.map(|e| e.sql.as_str()).collect();
    let attack_names: BTreeSet<&str> = attacks.iter().map(|e| e.name.as_str()).collect();
    for entry in &legit {
        if !entry.rules.is_empty() || !entry.setup.is_empty() {
            problems.push(format!("{entry}: legitimate entries take no rule/setup"));
        }
        if attack_sql.contains(entry.sql.as_str()) || attack_names.contains(entry.name.as_str()) {
            problems.push(format!("{entry}: also in the attack corpus"));
        }
    }
    for (rule, count) in &per_rule {
        eprintln!("{rule}: {count} attacks");
        if *count < MIN_PER_RULE {
            problems.push(format!("guardrail {rule} has only {count} attacks"));
        }
    }
    eprintln!("{} attacks, {} legitimate", attacks.len(), legit.len());
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

/// Without the gateway every attack succeeds and the checks see the damage: the corpus is
/// not denied by accident of being broken SQL, and the fingerprint is not blind.
#[tokio::test]
async fn attack_corpus_works_against_postgres_directly() -> Result<()> {
    ensure_services()?;
    let attacks = attacks()?;
    let db = TestDb::create("guardrails_live").await?;
    let arena = Arena::create(&db).await?;
    let live = run_directly(&arena, &db.params(), &attacks).await?;
    eprintln!(
        "{} of {} attacks did detectable damage without the gateway",
        live.damaging.len(),
        attacks.len()
    );
    let quiet = attacks.iter().filter(|e| !live.damaging.contains(&e.name));
    let quiet: Vec<&str> = quiet.map(|e| e.name.as_str()).collect();
    eprintln!("session-only or read-only attacks: {}", quiet.join(" "));
    report(live.failed, attacks.len(), "attacks run directly")?;
    let sentinels = [
        "ddl-drop-table",
        "ddl-drop-database",
        "write-delete",
        "cte-delete-select",
        "explain-analyze-delete",
        "program-copy-query-to",
        "file-copy-to",
        "file-copy-from-passwd",
        "fn-lo-import",
        "fn-lo-put",
        "fn-pg-file-write",
        "fn-dblink-exec-delete",
        "opaque-execute-drop",
        "multi-standard-strings-off-session",
    ];
    let missed: Vec<_> = sentinels
        .iter()
        .filter(|s| !live.damaging.iter().any(|d| d == *s))
        .collect();
    ensure!(missed.is_empty(), "damage not detected for {missed:?}");
    Ok(())
}

async fn attacks_are_denied(protocol: Protocol) -> Result<()> {
    let (rules, attacks) = (policy_rules()?, attacks()?);
    let fx = start(&format!("guardrails_{protocol}")).await?;
    let arena = Arena::create(&fx.db).await?;
    let failures = run_attacks(&arena, &fx.gateway(), &rules, &attacks, protocol).await?;
    let total = attacks.iter().filter(|e| e.runs(protocol)).count();
    report(failures, total, &format!("attacks over {protocol}"))
}

#[tokio::test]
async fn attacks_are_denied_over_the_simple_protocol() -> Result<()> {
    attacks_are_denied(Protocol::Simple).await
}

#[tokio::test]
async fn attacks_are_denied_over_the_extended_protocol() -> Result<()> {
    attacks_are_denied(Protocol::Extended).await
}

#[tokio::test]
async fn attacks_are_denied_inside_pipelines() -> Result<()> {
    attacks_are_denied(Protocol::Pipeline).await
}

/// In a transaction block a denial aborts the transaction, as any error does; ROLLBACK
/// recovers the session and nothing done in the transaction survives.
#[tokio::test]
async fn a_denial_aborts_the_transaction_and_the_session_recovers() -> Result<()> {
    let rules = policy_rules()?;
    let fx = start("guardrails_tx").await?;
    let arena = Arena::create(&fx.db).await?;
    let expected = |rule: &str| format!("countersign: denied by rule \"{rule}\": {}", rules[rule]);
    let bump = "UPDATE scratch SET n = n + 1 WHERE id = 1";

    let (mut client, _conn) = fx.gateway().connect().await?;
    let tx = client.transaction().await?;
    tx.execute(bump, &[]).await?;
    let denied = tx.execute("DELETE FROM victim", &[]).await;
    check_denial(denied, &[expected("no-unbounded-writes")])?;
    let aborted = tx.query_one("SELECT 1", &[]).await;
    countersign_testkit::expect_sqlstate(aborted, &SqlState::IN_FAILED_SQL_TRANSACTION)?;
    tx.rollback().await?;
    alive(&client).await?;

    let out = Psql::new(&fx.gateway())
        .on_error_stop(false)
        .arg("-v")
        .arg("VERBOSITY=verbose")
        .command("BEGIN")
        .command(bump)
        .command("TRUNCATE victim")
        .command("SELECT 1")
        .command("ROLLBACK")
        .command("SELECT 'session-ok'")
        .run()
        .await?;
    let denied = format!("ERROR:  42501: {}", expected("no-destructive-ddl"));
    ensure!(out.stderr.contains(&denied), "{out:?}");
    ensure!(out.stderr.contains("ERROR:  25P02"), "{out:?}");
    ensure!(out.stdout.ends_with("session-ok\n"), "{out:?}");

    let n = fx.db.client().await?;
    let n: i32 = n
        .query_one("SELECT n FROM scratch WHERE id = 1", &[])
        .await?
        .get(0);
    ensure!(n == 0, "a rolled-back update survived: n = {n}");
    ensure!(
        arena.damage().await?.is_none(),
        "{:?}",
        arena.damage().await?
    );
    Ok(())
}

/// Denied statements appear in `countersign audit search` with decision `deny` and the rule
/// that denied them; an allowed one with decision `allow`.
#[tokio::test]
async fn denials_are_audited_with_decision_and_rule() -> Result<()> {
    let (rules, attacks) = (policy_rules()?, attacks()?);
    let fx = start("guardrails_audit").await?;
    let _arena = Arena::create(&fx.db).await?;
    let pick = |name: &str| {
        attacks
            .iter()
            .find(|e| e.name == name)
            .context(name.to_owned())
    };
    let via_psql = [
        "ddl-drop-table",
        "write-delete",
        "role-set-role",
        "fn-pg-read-file",
    ];
    let mut sent = Vec::new();
    for name in via_psql {
        let entry = pick(name)?;
        let out = psql_attack(&fx.gateway(), &[], &entry.sql).await?;
        check_psql_denial(&out, &expected_messages(entry, &rules)?).context(name)?;
        sent.push((entry, "simple"));
    }
    let extended = pick("write-update")?;
    let (client, _conn) = fx.gateway().connect().await?;
    let denied = client.execute(extended.sql.as_str(), &[]).await;
    check_denial(denied, &expected_messages(extended, &rules)?)?;
    sent.push((extended, "extended"));
    let allowed = "SELECT 'audit: allowed'";
    client.batch_execute(allowed).await?;

    let server = &fx.server;
    let args = [
        "audit",
        "search",
        "--server",
        server.http_url(),
        "--token",
        server.admin_token(),
        "--format",
        "jsonl",
        "--event",
        "statement",
        "--limit",
        "1000",
    ];
    let (sent, args) = (&sent, &args);
    eventually(Duration::from_secs(30), || async move {
        let out = server.cli(args).await?.ok()?;
        let events: Vec<serde_json::Value> = out
            .stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        let find = |sql: &str| events.iter().find(|e| e["statement"] == sql);
        for (entry, protocol) in sent {
            let event = find(&entry.sql).with_context(|| format!("{entry} not audited"))?;
            let rule = event["rule"].as_str().unwrap_or_default();
            ensure!(
                event["decision"] == "deny"
                    && event["protocol"] == *protocol
                    && entry.rules.iter().any(|r| r == rule),
                "{entry}: audited as {event}"
            );
        }
        let event = find(allowed).context("the allowed statement was not audited")?;
        ensure!(event["decision"] == "allow", "audited as {event}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn legitimate_statements_pass_with_the_same_results_as_direct() -> Result<()> {
    let legit = legit()?;
    let fx = start("guardrails_legit").await?;
    let twin = TestDb::create("guardrails_legit_twin").await?;
    let mut failures = Vec::new();
    for protocol in [Protocol::Simple, Protocol::Extended] {
        // Every pass starts from the same, freshly seeded fixture on both sides.
        for db in [&fx.db, &twin] {
            reseed(db).await?;
        }
        let run = run_legit(&twin.params(), &fx.gateway(), &legit, protocol).await?;
        failures.extend(run);
    }
    report(failures, legit.len(), "legitimate statements")
}
