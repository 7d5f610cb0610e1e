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
//! The same transaction stores the batch's parameterized statement texts in `audit_texts`
//! (see [`batch_texts`]) before it locks the chain heads, under [`TEXTS_LOCK_KEY`]
//! ([`PgIngest::store_texts`]).
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
use super::{AuditBody, NewAuditEvent};
use chrono::{DateTime, Utc};
use sea_orm::sqlx::{self, Postgres};
use sea_orm::{DbBackend, DbErr, ExecResult, QueryResult, RuntimeErr, Statement};
use sea_query_sqlx::SqlxValues;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use tokio::sync::Mutex;

/// The statement of [`PgIngest::copy_and_commit`]: its columns in the order each row's fields are
/// written by [`encode_rows`].
const COPY: &str = "COPY audit_events (session_id, seq, at, event, identity, resource, \
    statement, kinds, protocol, parameter_count, duration_us, command_tag, rows, error, \
    decision, rule, detail, received_at, prev_seq, prev_hash, chain_hash, statement_digest) \
    FROM STDIN (FORMAT binary)";
const FIELDS: i16 = 22;

/// Stores a batch's parameterized statement texts in `audit_texts`, once each: a text already
/// there is left as it is.
const INSERT_TEXTS: &str = "INSERT INTO audit_texts (digest, statement) \
    SELECT * FROM unnest($1::bytea[], $2::text[]) ON CONFLICT (digest) DO NOTHING";

/// The advisory lock between ingest and the purge of unreferenced texts ("cs-text" as a
/// number). Ingest holds it shared from before it looks for its texts in `audit_texts` until
/// its events that point to them are committed; the purge takes it exclusively, so the events
/// it checks a text against include every committed event that points to it, and no ingest can
/// find a text present that the purge is about to delete.
pub(crate) const TEXTS_LOCK_KEY: i64 = 0x0063_732d_7465_7874;

/// Whether a statement's text is kept once in `audit_texts`: sent with its values as separate
/// parameters (the extended protocol with at least one parameter), so that its text repeats by
/// construction. Other events keep their text only in their row, where the trigram index covers
/// it.
fn parameterized(protocol: &str, parameter_count: i64) -> bool {
    protocol == "extended" && parameter_count > 0
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// The parameterized texts of `events` (see [`parameterized`]), each once, with the key under
/// which it is kept in `audit_texts`: the SHA-256 of its text, computed once per distinct text.
/// SHA-256 rather than anything shorter: a text crafted to collide with another would have its
/// events found under the other's text only, hidden from a search for its own. The store's CHECK
/// constraints hold every digest to its text (migration m0012).
pub(crate) fn batch_texts(events: &[NewAuditEvent]) -> HashMap<&str, [u8; 32]> {
    let mut texts = HashMap::new();
    for e in events {
        if let AuditBody::Statement(s) = &e.body
            && parameterized(&s.protocol, s.parameter_count.into())
        {
            texts
                .entry(s.statement.as_str())
                .or_insert_with(|| digest(&s.statement));
        }
    }
    texts
}

/// The digest `m` is stored with: its text's, from `stored`, if it is a parameterized statement
/// (the same rule as [`batch_texts`]); an error if its text is not among them.
fn row_digest(
    stored: &HashMap<String, [u8; 32]>,
    m: &audit_event::Model,
) -> Result<Option<[u8; 32]>, StoreError> {
    let kept = m.event == "statement"
        && parameterized(
            m.protocol.as_deref().unwrap_or_default(),
            m.parameter_count.unwrap_or_default().into(),
        );
    match m.statement.as_deref() {
        Some(statement) if kept => match stored.get(statement) {
            Some(d) => Ok(Some(*d)),
            None => Err(StoreError::Corrupt(format!(
                "audit {}:{}: its text was not stored in audit_texts",
                m.session_id, m.seq
            ))),
        },
        _ => Ok(None),
    }
}

/// One ingest transaction on a connection of the store's pool.
pub(crate) struct PgIngest {
    tx: Mutex<sqlx::Transaction<'static, Postgres>>,
    /// The texts [`PgIngest::store_texts`] stored (or found stored) in this transaction, with
    /// their digests.
    texts: HashMap<String, [u8; 32]>,
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
        // READ COMMITTED whatever the server's default: under a snapshot for the whole
        // transaction, two ingests storing the same new text would fail each other.
        let tx = pool
            .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await
            .map_err(|e| DbErr::Conn(RuntimeErr::SqlxError(e.into())))?;
        Ok(Self {
            tx: Mutex::new(tx),
            texts: Default::default(),
        })
    }

    /// Stores those of `texts` that `audit_texts` lacks, in digest order, and holds the texts
    /// lock ([`TEXTS_LOCK_KEY`]) shared until the transaction ends. Called before the batch's
    /// chain heads are locked and its rows stamped with `received_at`: every wait here (for the
    /// lock while a purge of texts runs, for another ingest that is storing the same new text)
    /// comes before the stamp, so it cannot make events arrive late for the SIEM stream, and
    /// it holds no head lock another ingest could be waiting for.
    pub(crate) async fn store_texts(
        &mut self,
        texts: &HashMap<&str, [u8; 32]>,
    ) -> Result<(), StoreError> {
        if texts.is_empty() {
            return Ok(());
        }
        let mut by_digest: Vec<(&[u8], &str)> = texts.iter().map(|(s, d)| (&d[..], *s)).collect();
        by_digest.sort_unstable();
        let (digests, statements): (Vec<&[u8]>, Vec<&str>) = by_digest.into_iter().unzip();
        let tx = self.tx.get_mut();
        sqlx::query("SELECT 1 FROM pg_advisory_xact_lock_shared($1)")
            .bind(TEXTS_LOCK_KEY)
            .execute(&mut **tx)
            .await
            .map_err(exec_err)?;
        sqlx::query(INSERT_TEXTS)
            .bind(digests)
            .bind(statements)
            .execute(&mut **tx)
            .await
            .map_err(exec_err)?;
        self.texts
            .extend(texts.iter().map(|(s, d)| ((*s).to_owned(), *d)));
        Ok(())
    }

    /// Writes `rows` with one binary `COPY`, checks that the server stored all of them, and
    /// commits; on a task of its own (see the module docs). Each parameterized row carries its
    /// text's digest, which must be among those [`Self::store_texts`] stored in this
    /// transaction: a row whose text is not is refused, and nothing is committed.
    pub(crate) async fn copy_and_commit(
        self,
        rows: &[audit_event::Model],
    ) -> Result<(), StoreError> {
        let digests = rows
            .iter()
            .map(|m| row_digest(&self.texts, m))
            .collect::<Result<Vec<_>, _>>()?;
        let data = encode_rows(rows, &digests)?;
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
fn encode_rows(
    rows: &[audit_event::Model],
    digests: &[Option<[u8; 32]>],
) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(19 + rows.len() * 512 + 2);
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
    out.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    for (m, digest) in rows.iter().zip(digests) {
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
        row.field(digest.as_ref().map(|d| &d[..]));
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
        let out = encode_rows(&rows, &[None, None]).unwrap();
        assert_eq!(&out[..11], b"PGCOPY\n\xff\r\n\0");
        assert_eq!(&out[11..19], &[0; 8]);
        assert_eq!(&out[out.len() - 2..], &(-1i16).to_be_bytes());
        // Each row: 22 fields, each a 32-bit length (-1: NULL) and that many bytes; the two
        // rows end exactly at the trailer.
        let mut at_byte = 19;
        let mut nulls = 0;
        for _ in &rows {
            assert_eq!(&out[at_byte..at_byte + 2], &22i16.to_be_bytes());
            at_byte += 2;
            let first = at_byte;
            for _ in 0..22 {
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
        // A session's end has no statement, outcome, decision, chain yet or text digest.
        assert_eq!(nulls, 2 * 13);
    }

    fn statement(sql: &str, protocol: &str, parameter_count: u32) -> NewAuditEvent {
        NewAuditEvent {
            session_id: "s".into(),
            seq: 1,
            at: Utc::now(),
            identity: "i".into(),
            resource: "r".into(),
            body: AuditBody::Statement(super::super::StatementAudit {
                statement: sql.into(),
                kinds: vec!["select".into()],
                protocol: protocol.into(),
                parameter_count,
                duration_us: 1,
                command_tag: None,
                rows: None,
                error: None,
                decision: "allow".into(),
                rule: None,
                masking: None,
            }),
        }
    }

    #[test]
    fn only_parameterized_texts_are_kept_once() {
        let sql = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
        let events = [
            statement(sql, "extended", 1),
            // Values inline (simple protocol, or extended without parameters): texts that do
            // not repeat stay in their rows only.
            statement("SELECT 1", "simple", 0),
            statement("SELECT 1", "extended", 0),
            statement("SELECT $1::int", "extended", 1),
            statement(sql, "extended", 1),
        ];
        let rows: Vec<_> = events
            .iter()
            .map(|e| to_model(e, Utc::now()).unwrap())
            .collect();
        let sha = |t: &str| <[u8; 32]>::from(Sha256::digest(t.as_bytes()));
        // The batch's texts: each once, with its digest.
        let texts = batch_texts(&events);
        assert_eq!(
            texts,
            HashMap::from([(sql, sha(sql)), ("SELECT $1::int", sha("SELECT $1::int"))])
        );
        // Each row: its text's digest by the same rule, once its text is stored.
        let stored: HashMap<String, [u8; 32]> =
            texts.iter().map(|(s, d)| ((*s).to_owned(), *d)).collect();
        let digests: Vec<_> = rows
            .iter()
            .map(|m| row_digest(&stored, m).unwrap())
            .collect();
        assert_eq!(
            digests,
            vec![
                Some(sha(sql)),
                None,
                None,
                Some(sha("SELECT $1::int")),
                Some(sha(sql))
            ]
        );
        // A parameterized row whose text was not stored is refused.
        assert!(row_digest(&HashMap::new(), &rows[0]).is_err());
        assert_eq!(row_digest(&HashMap::new(), &rows[1]).unwrap(), None);
        // The digest goes out as the row's last field, 32 bytes.
        let out = encode_rows(&rows[..1], &digests[..1]).unwrap();
        let tail = &out[out.len() - 2 - 36..out.len() - 2];
        assert_eq!(&tail[..4], &32i32.to_be_bytes());
        assert_eq!(&tail[4..], &sha(sql)[..]);
    }
}
