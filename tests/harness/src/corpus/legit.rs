//! Runs legitimate entries through the gateway and straight against a twin database, and
//! checks they succeed with the same results.
//!
//! Simple protocol: one `psql -X -At -c` per entry on each side; exit status, stdout and
//! stderr must match and the direct run must succeed (otherwise the entry itself is wrong).
//! Extended protocol: tokio-postgres `query` with text parameters on one connection per side
//! for the whole pass; column names and rows (as text, for the common types) must match.

use anyhow::{Context, Result, bail};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row};

use super::format::{Entry, Protocol};
use crate::conn::ConnParams;
use crate::process::{Psql, ensure_same_output};

/// Runs the entries listing `protocol`, in order, direct then through the gateway; returns
/// one message per failing entry.
pub async fn run_legit(
    direct: &ConnParams,
    gateway: &ConnParams,
    entries: &[Entry],
    protocol: Protocol,
) -> Result<Vec<String>> {
    let clients = match protocol {
        Protocol::Extended => Some((direct.connect().await?.0, gateway.connect().await?.0)),
        _ => None,
    };
    let mut failures = Vec::new();
    for entry in entries.iter().filter(|e| e.runs(protocol)) {
        let outcome = match &clients {
            Some((d, g)) => same_rows(d, g, entry).await,
            None => same_psql_output(direct, gateway, entry).await,
        };
        if let Err(e) = outcome {
            failures.push(format!(
                "{entry} via {protocol}: {e:#}\n    sql: {}",
                entry.sql
            ));
        }
    }
    Ok(failures)
}

async fn same_psql_output(direct: &ConnParams, gateway: &ConnParams, entry: &Entry) -> Result<()> {
    let run = |params: &ConnParams| {
        let mut psql = Psql::new(params).command(&entry.sql);
        if !entry.stdin.is_empty() {
            psql = psql.stdin(format!("{}\n", entry.stdin.join("\n")));
        }
        psql.run()
    };
    let expected = run(direct).await?;
    if !expected.success() {
        bail!("fails even without the gateway (fix the entry): {expected:?}");
    }
    let through = run(gateway).await?;
    ensure_same_output(&expected, &through)
}

async fn same_rows(direct: &Client, gateway: &Client, entry: &Entry) -> Result<()> {
    let params: Vec<&(dyn ToSql + Sync)> = entry
        .params
        .iter()
        .map(|p| p as &(dyn ToSql + Sync))
        .collect();
    let expected = direct
        .query(entry.sql.as_str(), &params)
        .await
        .context("fails even without the gateway (fix the entry)")?;
    let through = gateway.query(entry.sql.as_str(), &params).await?;
    let (expected, through) = (render(&expected), render(&through));
    if expected != through {
        bail!("results differ\n  direct:  {expected:?}\n  gateway: {through:?}");
    }
    Ok(())
}

/// A header line of column names, then one line per row.
fn render(rows: &[Row]) -> Vec<String> {
    let Some(first) = rows.first() else {
        return Vec::new();
    };
    let header = first.columns().iter().map(|c| c.name()).collect::<Vec<_>>();
    let mut out = vec![header.join("|")];
    for row in rows {
        let cells: Vec<String> = (0..row.len()).map(|i| cell(row, i)).collect();
        out.push(cells.join("|"));
    }
    out
}

/// A cell as text for the common types; other types show as `<type>`.
fn cell(row: &Row, i: usize) -> String {
    fn show<'a, T: tokio_postgres::types::FromSql<'a> + ToString>(
        row: &'a Row,
        i: usize,
    ) -> String {
        match row.try_get::<_, Option<T>>(i) {
            Ok(Some(v)) => v.to_string(),
            Ok(None) => "NULL".to_owned(),
            Err(e) => format!("<{e}>"),
        }
    }
    let Some(column) = row.columns().get(i) else {
        return "<no such column>".to_owned();
    };
    match *column.type_() {
        Type::BOOL => show::<bool>(row, i),
        Type::INT2 => show::<i16>(row, i),
        Type::INT4 => show::<i32>(row, i),
        Type::INT8 => show::<i64>(row, i),
        Type::FLOAT4 => show::<f32>(row, i),
        Type::FLOAT8 => show::<f64>(row, i),
        Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => show::<String>(row, i),
        ref other => format!("<{}>", other.name()),
    }
}
