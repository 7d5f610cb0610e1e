//! Sends attack entries through the gateway, one protocol at a time, and checks each was
//! denied the way the contract says and left the fixture alone.
//!
//! A denial is an ErrorResponse with severity `ERROR`, SQLSTATE `42501` and a message that
//! starts with `countersign: denied by rule "<rule>": <message>` for one of the entry's
//! rules, after which the same session still answers `SELECT 1`. Every run is followed by
//! [`Arena::damage`]; damage is reported and repaired, so one entry that got through does
//! not spoil the rest. Failures are collected, never fatal, so one run lists them all.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail, ensure};
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use super::arena::Arena;
use super::format::{Entry, Protocol};
use super::raw::pipeline_denial;
use crate::conn::ConnParams;
use crate::process::{CmdOutput, Psql};

/// Guardrail name → the message its denials carry, as in the policy file.
pub type Rules = BTreeMap<String, String>;

/// What a denial of `entry` may say, one message prefix per rule it lists.
pub fn expected_messages(entry: &Entry, rules: &Rules) -> Result<Vec<String>> {
    entry
        .rules
        .iter()
        .map(|rule| {
            let message = rules
                .get(rule)
                .with_context(|| format!("{entry}: rule {rule:?} is not in the policy"))?;
            Ok(format!("countersign: denied by rule \"{rule}\": {message}"))
        })
        .collect()
}

/// Runs every entry that lists `protocol` through the gateway at `gateway`; returns one
/// message per failure (an entry that was not denied properly, or that did damage).
pub async fn run_attacks(
    arena: &Arena,
    gateway: &ConnParams,
    rules: &Rules,
    entries: &[Entry],
    protocol: Protocol,
) -> Result<Vec<String>> {
    let mut shared = gateway.connect().await?.0;
    let mut failures = Vec::new();
    for entry in entries.iter().filter(|e| e.runs(protocol)) {
        let expected = expected_messages(entry, rules)?;
        let sql = arena.render(&entry.sql)?;
        let setup = entry
            .setup
            .iter()
            .map(|s| arena.render(s))
            .collect::<Result<Vec<_>>>()?;
        // Entries with setup change session state, so they get a session of their own.
        let own = if setup.is_empty() {
            None
        } else {
            let client = gateway.connect().await?.0;
            for statement in &setup {
                client.batch_execute(statement).await.context("setup")?;
            }
            Some(client)
        };
        let client = own.as_ref().unwrap_or(&shared);
        let outcome = match protocol {
            Protocol::Simple => simple(gateway, client, &setup, &sql, &expected).await,
            Protocol::Extended => extended(client, &sql, &expected).await,
            Protocol::Pipeline => pipeline(gateway, client, &setup, &sql, &expected).await,
        };
        if let Err(e) = outcome {
            failures.push(format!("{entry} via {protocol}: {e:#}\n    sql: {sql}"));
            // Whatever got through may have left the session in a transaction.
            let _ = client.batch_execute("ROLLBACK").await;
        }
        if let Some(damage) = arena.damage().await? {
            failures.push(format!(
                "{entry} via {protocol} changed the fixture:\n{damage}\n    sql: {sql}"
            ));
            arena.restore().await?;
        }
        if shared.is_closed() {
            failures.push(format!(
                "{entry} via {protocol}: the shared session was closed"
            ));
            shared = gateway.connect().await?.0;
        }
    }
    Ok(failures)
}

/// psql (one process, `-c` per message) and tokio-postgres `simple_query`.
async fn simple(
    gateway: &ConnParams,
    client: &Client,
    setup: &[String],
    sql: &str,
    expected: &[String],
) -> Result<()> {
    let out = psql_attack(gateway, setup, sql).await?;
    check_psql_denial(&out, expected).context("psql")?;
    check_denial(client.simple_query(sql).await, expected).context("simple_query")?;
    alive(client).await.context("after simple_query")
}

/// `psql -X -At -v ON_ERROR_STOP=0 -v VERBOSITY=verbose -c SETUP... -c SQL -c "SELECT
/// 'session-ok'"`, so stderr shows the SQLSTATE and stdout shows whether the session lived.
pub async fn psql_attack(gateway: &ConnParams, setup: &[String], sql: &str) -> Result<CmdOutput> {
    let mut psql = Psql::new(gateway)
        .on_error_stop(false)
        .arg("-v")
        .arg("VERBOSITY=verbose");
    for statement in setup {
        psql = psql.command(statement);
    }
    psql.command(sql).command("SELECT 'session-ok'").run().await
}

/// The psql run was denied with one of `expected` and then ran `SELECT 'session-ok'`.
pub fn check_psql_denial(out: &CmdOutput, expected: &[String]) -> Result<()> {
    let denied = expected
        .iter()
        .any(|m| out.stderr.contains(&format!("ERROR:  42501: {m}")));
    let errors = out.stderr.matches("ERROR:").count();
    ensure!(
        denied && errors == 1,
        "expected exactly one `ERROR:  42501: {}`: {out:?}",
        expected.join("` or `")
    );
    ensure!(
        out.stdout.ends_with("session-ok\n"),
        "the session did not survive: {out:?}"
    );
    Ok(())
}

/// tokio-postgres `execute` (Parse/Describe/Sync first), `prepare`, and `query_typed`
/// (Parse/Bind/Describe/Execute/Sync in one flight), each followed by `SELECT 1`.
async fn extended(client: &Client, sql: &str, expected: &[String]) -> Result<()> {
    check_denial(client.execute(sql, &[]).await, expected).context("execute")?;
    alive(client).await.context("after execute")?;
    check_denial(client.prepare(sql).await, expected).context("prepare")?;
    alive(client).await.context("after prepare")?;
    check_denial(client.query_typed(sql, &[]).await, expected).context("query_typed")?;
    alive(client).await.context("after query_typed")
}

/// The attack between two harmless queries, all in flight at once on one connection (first
/// as prepare-then-execute, then as one-flight `query_typed`), then the raw-protocol
/// pipeline with a single Sync on a connection of its own.
async fn pipeline(
    gateway: &ConnParams,
    client: &Client,
    setup: &[String],
    sql: &str,
    expected: &[String],
) -> Result<()> {
    let (before, attack, after) = tokio::join!(
        client.query_one("SELECT 'before'::text", &[]),
        client.execute(sql, &[]),
        client.query_one("SELECT 'after'::text", &[]),
    );
    check_denial(attack, expected).context("pipelined execute")?;
    ensure!(before?.try_get::<_, String>(0)? == "before");
    ensure!(after?.try_get::<_, String>(0)? == "after");
    let (before, attack, after) = tokio::join!(
        client.query_typed("SELECT 'before'::text", &[]),
        client.query_typed(sql, &[]),
        client.query_typed("SELECT 'after'::text", &[]),
    );
    check_denial(attack, expected).context("pipelined query_typed")?;
    ensure!(
        before?.len() == 1 && after?.len() == 1,
        "neighbours lost rows"
    );
    alive(client).await.context("after the pipelines")?;
    let fields = pipeline_denial(gateway, setup, sql)
        .await
        .context("raw pipeline")?;
    let field = |code| fields.get(&code).map(String::as_str).unwrap_or_default();
    let message = field('M');
    ensure!(
        field('S') == "ERROR"
            && field('C') == "42501"
            && expected.iter().any(|m| message.starts_with(m.as_str())),
        "raw pipeline: wrong denial {fields:?}"
    );
    Ok(())
}

/// `result` is the contract's denial: ERROR, 42501, one of `expected` as message prefix.
pub fn check_denial<T>(
    result: Result<T, tokio_postgres::Error>,
    expected: &[String],
) -> Result<()> {
    let err = match result {
        Ok(_) => bail!("not denied: the statement ran"),
        Err(e) => e,
    };
    let Some(db) = err.as_db_error() else {
        bail!("expected a denial, got a client-side error: {err:?}");
    };
    let prefix_ok = expected
        .iter()
        .any(|m| db.message().starts_with(m.as_str()));
    if db.severity() != "ERROR" || db.code() != &SqlState::INSUFFICIENT_PRIVILEGE || !prefix_ok {
        bail!(
            "expected ERROR 42501 `{}`, got {} {}: {}",
            expected.join("` or `"),
            db.severity(),
            db.code().code(),
            db.message()
        );
    }
    Ok(())
}

/// The session still runs a query.
pub async fn alive(client: &Client) -> Result<()> {
    let row = client.query_one("SELECT 1::int4", &[]).await?;
    ensure!(
        row.try_get::<_, i32>(0)? == 1,
        "SELECT 1 returned something else"
    );
    Ok(())
}

/// Runs every attack straight against PostgreSQL (no gateway) with psql; returns the names
/// of entries that failed there, with psql's output, and the names of those whose damage
/// was detected. Proves the corpus attacks something real rather than failing on its own.
pub async fn run_directly(arena: &Arena, direct: &ConnParams, entries: &[Entry]) -> Result<Live> {
    let mut live = Live::default();
    for entry in entries {
        let sql = arena.render(&entry.sql)?;
        let setup = entry
            .setup
            .iter()
            .map(|s| arena.render(s))
            .collect::<Result<Vec<_>>>()?;
        let mut psql = Psql::new(direct).arg("-v").arg("VERBOSITY=verbose");
        for statement in &setup {
            psql = psql.command(statement);
        }
        let out = psql.command(&sql).run().await?;
        if !out.success() {
            live.failed.push(format!("{entry}: {out:?}"));
        }
        if arena.damage().await?.is_some() {
            live.damaging.push(entry.name.clone());
            arena.restore().await?;
        }
    }
    Ok(live)
}

/// The result of [`run_directly`].
#[derive(Debug, Default)]
pub struct Live {
    pub failed: Vec<String>,
    pub damaging: Vec<String>,
}
