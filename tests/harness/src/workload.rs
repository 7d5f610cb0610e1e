//! Workloads shared by the end-to-end tests: SQL kept as `.sql` files under `sql/`, and a
//! typed table for binary-parameter round trips.

use anyhow::Result;
use tokio_postgres::Client;

/// One query returning three rows of many column types (psql output comparison).
pub const TYPED_SELECT: &str = include_str!("../sql/typed_select.sql");

/// A psql script with DDL, transactions, errors and notices; run with ON_ERROR_STOP off.
pub const RELAY_SCRIPT: &str = include_str!("../sql/relay_script.sql");

/// Creates `src` (20,000 awkward rows) and empty `csv_copy`, `text_copy`, `stdin_copy`.
pub const COPY_SEED: &str = include_str!("../sql/copy_seed.sql");

/// The table [`TypedRow`]s live in.
pub const TYPED_TABLE: &str =
    "CREATE TABLE typed (i4 int4, i8 int8, t text, b bytea, f float8, ok bool)";

/// Inserts one [`TypedRow`] (six parameters, sent in binary by tokio-postgres).
pub const TYPED_INSERT: &str = "INSERT INTO typed VALUES ($1, $2, $3, $4, $5, $6)";

/// One row of `typed`.
pub type TypedRow = (
    Option<i32>,
    Option<i64>,
    Option<String>,
    Option<Vec<u8>>,
    Option<f64>,
    Option<bool>,
);

/// Rows with edge values of each type (extremes, empty, NUL bytes, infinity) and one
/// all-NULL row, in the order [`read_typed_rows`] returns them.
#[rustfmt::skip]
pub fn typed_rows() -> Vec<TypedRow> {
    vec![
        (Some(i32::MIN), Some(i64::MAX), Some("ünïcode ☃".into()), Some(vec![0, 1, 255, 0]), Some(std::f64::consts::PI), Some(true)),
        (Some(0), Some(-1), Some(String::new()), Some(vec![]), Some(f64::INFINITY), Some(false)),
        (Some(7), Some(1 << 40), Some("quote ' and \\".into()), Some(b"\0\r\n".to_vec()), Some(-0.5), Some(true)),
        (None, None, None, None, None, None),
    ]
}

/// Reads all of `typed`, ordered by `i4` with NULLs last.
pub async fn read_typed_rows(client: &Client) -> Result<Vec<TypedRow>> {
    let sql = "SELECT i4, i8, t, b, f, ok FROM typed ORDER BY i4 NULLS LAST";
    let rows = client.query(sql, &[]).await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn typed_rows_round_trip_directly() {
        crate::services::ensure_services().unwrap();
        let db = crate::db::TestDb::create("kit_typed").await.unwrap();
        let client = db.client().await.unwrap();
        client.batch_execute(TYPED_TABLE).await.unwrap();
        let insert = client.prepare(TYPED_INSERT).await.unwrap();
        for r in typed_rows() {
            client
                .execute(&insert, &[&r.0, &r.1, &r.2, &r.3, &r.4, &r.5])
                .await
                .unwrap();
        }
        assert_eq!(read_typed_rows(&client).await.unwrap(), typed_rows());
        // The SQL workloads run cleanly where they are meant to.
        client.batch_execute(COPY_SEED).await.unwrap();
        let out = crate::process::Psql::new(&db.params())
            .command(TYPED_SELECT)
            .run()
            .await
            .unwrap();
        assert_eq!(out.ok().unwrap().stdout.lines().count(), 3);
    }
}
