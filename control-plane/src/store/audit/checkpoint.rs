//! Checkpoints: an append-only list, each HMAC-chained to the one before.
//!
//! - A `periodic` checkpoint commits to the head (last chained seq and its
//!   `chain_hash`) of every session that changed since the last checkpoint.
//!   It is what makes deleting a session's newest events, or a whole session,
//!   detectable.
//! - A `purge` checkpoint records, per session, the seq through which the
//!   retention purge removed events, so that verify accepts links into the
//!   purged range and still checks everything after it.
//!
//! Several replicas may run the job at once. On PostgreSQL every transaction
//! that appends a checkpoint first takes one transaction-level advisory lock
//! ([`lock`]): the periodic job skips its round when another replica holds
//! it, and the purge waits for it, then re-reads what is left. Without the
//! lock, a replica could read the dirty heads before another's checkpoint
//! committed and the last checkpoint after it, and write a second checkpoint
//! over the same heads. The checkpoint number is also the primary key, so of
//! two writers of number N one commits and the other's insert fails and is
//! rolled back, heads included (SQLite has one writer at a time anyway). A
//! head is marked checkpointed only with the event count it was read at, so
//! events stored while a checkpoint is written stay due for the next one.

use super::super::entity::{audit_checkpoint, audit_head};
use super::super::{Store, StoreError};
use super::chain::AuditKey;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::ExprTrait;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
};
use serde::{Deserialize, Serialize};

/// Most sessions one periodic checkpoint covers; the rest wait for the next.
const MAX_ENTRIES: u64 = 10_000;

/// One session in a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointEntry {
    pub session_id: String,
    /// Periodic: the head's seq. Purge: every event at or below this seq was purged.
    pub seq: i64,
    /// Periodic: the head's `chain_hash`. Purge: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

/// The advisory lock key of checkpoint writers: "cs-ckpt" as a number.
const CHECKPOINT_LOCK_KEY: i64 = 0x0063_732d_636b_7074;

/// Takes the checkpoint writers' lock for the rest of `txn` (PostgreSQL; on
/// SQLite the database serializes writers). With `wait` false, returns
/// `false` at once when another transaction holds it.
pub(crate) async fn lock(conn: &impl ConnectionTrait, wait: bool) -> Result<bool, StoreError> {
    if conn.get_database_backend() != sea_orm::DbBackend::Postgres {
        return Ok(true);
    }
    if wait {
        conn.execute_unprepared(&format!(
            "SELECT pg_advisory_xact_lock({CHECKPOINT_LOCK_KEY})"
        ))
        .await?;
        return Ok(true);
    }
    super::super::pg_value(
        conn,
        &format!("SELECT pg_try_advisory_xact_lock({CHECKPOINT_LOCK_KEY})"),
    )
    .await
}

/// The HMAC a checkpoint row must carry.
pub(crate) fn checkpoint_hash(
    key: &AuditKey,
    number: i64,
    kind: &str,
    created_at: DateTime<Utc>,
    prev_hash: &str,
    entries: &str,
) -> String {
    let mut c = key.mac(b"countersign audit checkpoint v1");
    c.int(number);
    c.str(kind);
    c.time(created_at);
    c.str(prev_hash);
    c.str(entries);
    c.finish_hex()
}

/// Appends a checkpoint inside `conn`'s transaction. Returns its number, or
/// `None` when another writer took that number first (the caller's
/// transaction must then be rolled back).
pub(crate) async fn append(
    conn: &impl ConnectionTrait,
    key: &AuditKey,
    kind: &str,
    entries: &[CheckpointEntry],
) -> Result<Option<i64>, StoreError> {
    let last = audit_checkpoint::Entity::find()
        .order_by_desc(audit_checkpoint::Column::Number)
        .limit(1)
        .one(conn)
        .await?;
    let (number, prev_hash) = match last {
        Some(l) => (l.number + 1, l.hash),
        None => (1, String::new()),
    };
    let created_at = super::micros(Utc::now());
    let entries = serde_json::to_string(entries)
        .map_err(|e| StoreError::Corrupt(format!("checkpoint entries: {e}")))?;
    let hash = checkpoint_hash(key, number, kind, created_at, &prev_hash, &entries);
    let res = audit_checkpoint::Entity::insert(audit_checkpoint::ActiveModel {
        number: Set(number),
        kind: Set(kind.to_owned()),
        created_at: Set(created_at),
        prev_hash: Set(prev_hash),
        entries: Set(entries),
        hash: Set(hash),
    })
    .exec_without_returning(conn)
    .await;
    match res {
        Ok(_) => Ok(Some(number)),
        Err(e)
            if matches!(
                e.sql_err(),
                Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

impl Store {
    /// Writes a periodic checkpoint over the sessions changed since the last
    /// one. Returns its number, or `None` when nothing changed or another
    /// replica wrote the checkpoint at the same moment.
    pub async fn write_audit_checkpoint(&self) -> Result<Option<i64>, StoreError> {
        let txn = self.db().begin().await?;
        if !lock(&txn, false).await? {
            // Another replica is writing a checkpoint (or purging) now.
            txn.rollback().await?;
            return Ok(None);
        }
        let dirty = audit_head::Entity::find()
            .filter(
                sea_orm::sea_query::Expr::col(audit_head::Column::Events).gt(
                    sea_orm::sea_query::Expr::col(audit_head::Column::CheckpointedEvents),
                ),
            )
            .order_by_asc(audit_head::Column::SessionId)
            .limit(MAX_ENTRIES)
            .all(&txn)
            .await?;
        let entries: Vec<CheckpointEntry> = dirty
            .iter()
            .filter_map(|h| {
                Some(CheckpointEntry {
                    session_id: h.session_id.clone(),
                    seq: h.last_seq?,
                    hash: Some(h.last_hash.clone()?),
                })
            })
            .collect();
        if entries.is_empty() {
            return Ok(None);
        }
        let Some(number) = append(&txn, self.audit_key(), "periodic", &entries).await? else {
            txn.rollback().await?;
            return Ok(None);
        };
        for h in dirty {
            audit_head::Entity::update_many()
                .col_expr(
                    audit_head::Column::CheckpointedEvents,
                    sea_orm::sea_query::Expr::value(h.events),
                )
                .filter(audit_head::Column::SessionId.eq(h.session_id.as_str()))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(Some(number))
    }
}
