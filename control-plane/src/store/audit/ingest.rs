//! The PostgreSQL ingest transaction: a batch's chain heads are locked and moved with the same
//! sea-orm queries as on SQLite, and its rows go in with one binary `COPY`, all on one
//! connection in one transaction.
//!
//! sea-orm's own transaction does not hand out its connection, and `COPY` needs the
//! connection's copy sub-protocol. So [`PgIngest`] holds a sqlx transaction and implements
//! sea-orm's [`ConnectionTrait`] over it: the head queries in [`super::chain`] run on it
//! unchanged, and [`PgIngest::copy_and_commit`] streams the rows in PostgreSQL's binary copy format.
//! Compared with one `INSERT … SELECT FROM json_populate_recordset($1)` per batch, neither
//! side builds or parses JSON: the control plane writes each value's binary form once, and
//! the server reads it with the columns' binary input functions.
//!
//! What it guarantees: the rows, the heads they move and the head locks are one transaction.
//! An error before [`PgIngest::copy_and_commit`] drops the transaction, which sqlx rolls back
//! before the connection is used again. The `COPY` and the commit run on a task of their own,
//! so a caller that is cancelled (a request whose client went away) cannot stop them halfway
//! through the copy sub-protocol, where sqlx would hand the connection back to the pool out of
//! step with the server; the batch is then stored or not as if the caller had waited. A `COPY`
//! that stores another number of rows than it was given is an error and commits nothing, so
//! nothing is acknowledged that was not stored.

use super::super::StoreError;
use super::super::entity::audit_event;
use chrono::{DateTime, Utc};
use sea_orm::sqlx::{self, Postgres};
use sea_orm::{DbBackend, DbErr, ExecResult, QueryResult, RuntimeErr, Statement};
use sea_query_sqlx::SqlxValues;
use tokio::sync::Mutex;

/// The statement of [`PgIngest::copy_and_commit`]: its columns in the order each row's fields are
/// written by [`encode_rows`].
const COPY: &str = "COPY audit_events (session_id, seq, at, event, identity, resource, \
    statement, kinds, protocol, parameter_count, duration_us, command_tag, rows, error, \
    decision, rule, detail, received_at, prev_seq, prev_hash, chain_hash) \
    FROM STDIN (FORMAT binary)";
const FIELDS: i16 = 21;

/// One ingest transaction on a connection of the store's pool.
pub(crate) struct PgIngest {
    tx: Mutex<sqlx::Transaction<'static, Postgres>>,
}

fn exec_err(e: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(e.into()))
}

fn query_err(e: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(e.into()))
}

impl PgIngest {
    /// Begins a transaction on a connection of `pool`.
    pub(crate) async fn begin(pool: &sqlx::PgPool) -> Result<Self, StoreError> {
        let tx = pool
            .begin()
            .await
            .map_err(|e| DbErr::Conn(RuntimeErr::SqlxError(e.into())))?;
        Ok(Self { tx: Mutex::new(tx) })
    }

    /// Writes `rows` with one binary `COPY`, checks that the server stored all of them, and
    /// commits; on a task of its own (see the module docs).
    pub(crate) async fn copy_and_commit(
        self,
        rows: &[audit_event::Model],
    ) -> Result<(), StoreError> {
        let data = encode_rows(rows)?;
        let expected = rows.len() as u64;
        let mut tx = self.tx.into_inner();
        let done = tokio::spawn(async move {
            if expected > 0 {
                let mut copy = tx.copy_in_raw(COPY).await.map_err(exec_err)?;
                if let Err(e) = copy.send(data).await {
                    // Ends the copy so that the connection is usable for the rollback.
                    let _ = copy
                        .abort("the control plane could not send the rows")
                        .await;
                    return Err(exec_err(e).into());
                }
                let stored = copy.finish().await.map_err(exec_err)?;
                if stored != expected {
                    return Err(StoreError::Corrupt(format!(
                        "COPY stored {stored} of {expected} audit rows"
                    )));
                }
            }
            tx.commit().await.map_err(exec_err)?;
            Ok(())
        });
        done.await
            .map_err(|e| StoreError::Corrupt(format!("the audit ingest task failed: {e}")))?
    }
}

#[async_trait::async_trait]
impl sea_orm::ConnectionTrait for PgIngest {
    fn get_database_backend(&self) -> DbBackend {
        DbBackend::Postgres
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        let mut tx = self.tx.lock().await;
        query(&stmt)
            .execute(&mut **tx)
            .await
            .map(Into::into)
            .map_err(exec_err)
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        use sqlx::Executor;
        let mut tx = self.tx.lock().await;
        (&mut **tx)
            .execute(sqlx::AssertSqlSafe(sql.to_owned()))
            .await
            .map(Into::into)
            .map_err(exec_err)
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        let mut tx = self.tx.lock().await;
        query(&stmt)
            .fetch_optional(&mut **tx)
            .await
            .map(|row| row.map(Into::into))
            .map_err(query_err)
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        let mut tx = self.tx.lock().await;
        query(&stmt)
            .fetch_all(&mut **tx)
            .await
            .map(|rows| rows.into_iter().map(Into::into).collect())
            .map_err(query_err)
    }
}

/// `stmt` as a sqlx query with its values bound (prepared and cached per connection by sqlx).
fn query(stmt: &Statement) -> sqlx::query::Query<'_, Postgres, SqlxValues> {
    let values = stmt.values.clone().unwrap_or(sea_orm::Values(Vec::new()));
    sqlx::query_with(sqlx::AssertSqlSafe(stmt.sql.as_str()), SqlxValues(values))
}

/// PostgreSQL's epoch (2000-01-01T00:00:00Z) in microseconds after the Unix epoch.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// `rows` in PostgreSQL's binary copy format: the signature and header, each row as a field
/// count and the fields (a 32-bit length, -1 for NULL, then the value in the column type's
/// binary form), and the trailer. A value too long for a field's length is an error.
fn encode_rows(rows: &[audit_event::Model]) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(19 + rows.len() * 512 + 2);
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
    out.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    for m in rows {
        let mut row = Row {
            out: &mut out,
            too_long: None,
        };
        row.out.extend_from_slice(&FIELDS.to_be_bytes());
        row.text(Some(&m.session_id));
        row.int8(Some(m.seq));
        row.time(m.at);
        row.text(Some(&m.event));
        row.text(Some(&m.identity));
        row.text(Some(&m.resource));
        row.text(m.statement.as_deref());
        row.text(Some(&m.kinds));
        row.text(m.protocol.as_deref());
        row.int4(m.parameter_count);
        row.int8(m.duration_us);
        row.text(m.command_tag.as_deref());
        row.int8(m.rows);
        row.text(m.error.as_deref());
        row.text(m.decision.as_deref());
        row.text(m.rule.as_deref());
        row.text(m.detail.as_deref());
        row.time(m.received_at);
        row.int8(m.prev_seq);
        row.text(m.prev_hash.as_deref());
        row.text(m.chain_hash.as_deref());
        if let Some(len) = row.too_long {
            return Err(StoreError::Corrupt(format!(
                "an audit value of {len} bytes in session {} seq {}",
                m.session_id, m.seq
            )));
        }
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    Ok(out)
}

/// Appends one row's fields; `too_long` keeps the length of a value no field can hold.
struct Row<'a> {
    out: &'a mut Vec<u8>,
    too_long: Option<usize>,
}

impl Row<'_> {
    fn field(&mut self, value: Option<&[u8]>) {
        match value {
            None => self.out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => match i32::try_from(v.len()) {
                Ok(len) => {
                    self.out.extend_from_slice(&len.to_be_bytes());
                    self.out.extend_from_slice(v);
                }
                Err(_) => self.too_long = Some(v.len()),
            },
        }
    }

    /// `text` and `varchar`: the UTF-8 bytes (sqlx sets `client_encoding` to UTF8).
    fn text(&mut self, v: Option<&str>) {
        self.field(v.map(str::as_bytes));
    }

    fn int8(&mut self, v: Option<i64>) {
        self.field(v.map(i64::to_be_bytes).as_ref().map(|b| &b[..]));
    }

    fn int4(&mut self, v: Option<i32>) {
        self.field(v.map(i32::to_be_bytes).as_ref().map(|b| &b[..]));
    }

    /// `timestamptz`: microseconds since PostgreSQL's epoch.
    fn time(&mut self, t: DateTime<Utc>) {
        self.int8(Some(t.timestamp_micros() - PG_EPOCH_MICROS));
    }
}

#[cfg(test)]
mod tests {
    use super::super::{AuditBody, NewAuditEvent, to_model};
    use super::*;

    #[test]
    fn rows_are_framed_as_binary_copy() {
        let at = DateTime::from_timestamp_micros(PG_EPOCH_MICROS + 1).unwrap();
        let event = NewAuditEvent {
            session_id: "s".into(),
            seq: 2,
            at,
            identity: "i".into(),
            resource: "r".into(),
            body: AuditBody::SessionEnded {
                reason: "client closed".into(),
                statements: 0,
            },
        };
        let m = to_model(&event, at).unwrap();
        let rows = [m.clone(), m];
        let out = encode_rows(&rows).unwrap();
        assert_eq!(&out[..11], b"PGCOPY\n\xff\r\n\0");
        assert_eq!(&out[11..19], &[0; 8]);
        assert_eq!(&out[out.len() - 2..], &(-1i16).to_be_bytes());
        // Each row: 21 fields, each a 32-bit length (-1: NULL) and that many bytes; the two
        // rows end exactly at the trailer.
        let mut at_byte = 19;
        let mut nulls = 0;
        for _ in &rows {
            assert_eq!(&out[at_byte..at_byte + 2], &21i16.to_be_bytes());
            at_byte += 2;
            let first = at_byte;
            for _ in 0..21 {
                let len = i32::from_be_bytes(out[at_byte..at_byte + 4].try_into().unwrap());
                at_byte += 4 + usize::try_from(len).unwrap_or(0);
                nulls += usize::from(len == -1);
            }
            // session_id "s", then seq 2 and `at` (one microsecond after PostgreSQL's
            // epoch) as eight bytes each.
            assert_eq!(&out[first..first + 5], &[0, 0, 0, 1, b's']);
            assert_eq!(&out[first + 9..first + 17], &2i64.to_be_bytes());
            assert_eq!(&out[first + 21..first + 29], &1i64.to_be_bytes());
        }
        assert_eq!(at_byte, out.len() - 2);
        // A session's end has no statement, outcome, decision or chain yet.
        assert_eq!(nulls, 2 * 12);
    }
}
