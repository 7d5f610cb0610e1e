//! The retention purge: removes a resource's expired events and leaves a
//! `purge` checkpoint, so that verify still passes over what remains.
//!
//! Per session it removes a *prefix* in seq order: every event up to the
//! first one that has not expired. An old event stored after a newer one
//! (clock skew between gateways) waits until everything before it expires, so
//! the purge never punches a hole into the middle of a chain.
//!
//! Replicas may purge at once: each transaction first waits for the
//! checkpoint writers' lock ([`checkpoint::lock`]), so a second purger sees
//! the first one's deletes and finds nothing left to remove or record.
//!
//! On PostgreSQL, the parameterized statement texts (`audit_texts`, migration m0012) that no
//! event points to any more are removed by [`Store::purge_audit_texts`], which the retention
//! job runs after a round that purged events (see `ControlPlane::run_audit_upkeep`).
//!
//! The deletes run in the same transaction as the checkpoint that records
//! them, with a row in `audit_purge_permits` that the append-only trigger
//! looks for; no other transaction sees that row, so nothing else can delete.

use super::super::entity::{audit_event, audit_purge_permit};
use super::super::{Store, StoreError};
use super::checkpoint::{self, CheckpointEntry};
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
};

/// Sessions purged per transaction.
const SESSIONS_PER_TXN: u64 = 100;

impl Store {
    /// Purges events of `resource` stored with `at` before `cutoff`. Returns
    /// how many events were removed.
    pub async fn purge_audit(
        &self,
        resource: &str,
        cutoff: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        use audit_event::Column as C;
        let mut purged = 0;
        let mut after = String::new();
        loop {
            let sessions: Vec<String> = audit_event::Entity::find()
                .select_only()
                .column(C::SessionId)
                .distinct()
                .filter(C::Resource.eq(resource))
                .filter(C::At.lt(cutoff))
                .filter(C::SessionId.gt(after.as_str()))
                .order_by_asc(C::SessionId)
                .limit(SESSIONS_PER_TXN)
                .into_tuple()
                .all(self.db())
                .await?;
            let Some(last) = sessions.last().cloned() else {
                return Ok(purged);
            };
            let txn = self.db().begin().await?;
            checkpoint::lock(&txn, true).await?;
            let permit = begin_permit(&txn).await?;
            let mut entries = Vec::new();
            let mut removed = 0;
            for session in &sessions {
                let first_kept: Option<i64> = audit_event::Entity::find()
                    .select_only()
                    .column_as(C::Seq.min(), "seq")
                    .filter(C::SessionId.eq(session.as_str()))
                    .filter(C::At.gte(cutoff))
                    .into_tuple::<Option<i64>>()
                    .one(&txn)
                    .await?
                    .flatten();
                let mut delete = audit_event::Entity::delete_many()
                    .filter(C::SessionId.eq(session.as_str()))
                    .filter(C::At.lt(cutoff));
                let through = match first_kept {
                    Some(kept) => {
                        delete = delete.filter(C::Seq.lt(kept));
                        kept - 1
                    }
                    None => audit_event::Entity::find()
                        .select_only()
                        .column_as(C::Seq.max(), "seq")
                        .filter(C::SessionId.eq(session.as_str()))
                        .into_tuple::<Option<i64>>()
                        .one(&txn)
                        .await?
                        .flatten()
                        .unwrap_or(-1),
                };
                let n = delete.exec(&txn).await?.rows_affected;
                if n > 0 {
                    removed += n;
                    entries.push(CheckpointEntry {
                        session_id: session.clone(),
                        seq: through,
                        hash: None,
                    });
                }
            }
            if !entries.is_empty()
                && checkpoint::append(&txn, self.audit_key(), "purge", &entries)
                    .await?
                    .is_none()
            {
                // Another replica wrote a checkpoint at the same moment: try
                // these sessions again.
                txn.rollback().await?;
                continue;
            }
            end_permit(&txn, permit).await?;
            txn.commit().await?;
            purged += removed;
            after = last;
        }
    }

    /// Removes the texts in `audit_texts` that no event points to (PostgreSQL; SQLite keeps
    /// none). Returns how many were removed.
    ///
    /// It holds the ingest lock ([`super::ingest::TEXTS_LOCK_KEY`]) exclusively, taken before
    /// the delete reads the events, so the events it checks include every committed one, and
    /// an ingest that would find a text present waits until the text is gone or kept. Ingests
    /// with texts wait for the delete, one anti-join of the texts against the digest index; if
    /// the lock is not granted within 2 s (long ingests in progress) it gives up with an error,
    /// and the retention job tries again next round.
    pub async fn purge_audit_texts(&self) -> Result<u64, StoreError> {
        use sea_orm::{ConnectionTrait, DbBackend, IsolationLevel, Statement};
        if self.db().get_database_backend() != DbBackend::Postgres {
            return Ok(0);
        }
        // READ COMMITTED whatever the server's default: the delete's snapshot must be taken
        // after the lock is granted, which a transaction-wide snapshot would not be.
        let txn = self
            .db()
            .begin_with_config(Some(IsolationLevel::ReadCommitted), None)
            .await?;
        // While it waits for the ingests in progress, every new ingest with texts queues
        // behind it: waiting long is worse than trying again next round.
        txn.execute_unprepared("SET LOCAL lock_timeout = '2s'")
            .await?;
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT 1 FROM pg_advisory_xact_lock($1)",
            [super::ingest::TEXTS_LOCK_KEY.into()],
        ))
        .await?;
        let permit = begin_permit(&txn).await?;
        let removed = txn
            .execute_unprepared(
                "DELETE FROM audit_texts t WHERE NOT EXISTS \
                 (SELECT 1 FROM audit_events e WHERE e.statement_digest = t.digest)",
            )
            .await?
            .rows_affected();
        end_permit(&txn, permit).await?;
        txn.commit().await?;
        Ok(removed)
    }
}

/// Lets `txn` delete audit rows until [`end_permit`]: the append-only triggers let a delete
/// through while a row of `audit_purge_permits` is visible, and no other transaction sees this
/// one before it commits, by which time [`end_permit`] has removed it.
async fn begin_permit(txn: &DatabaseTransaction) -> Result<String, StoreError> {
    let permit = uuid::Uuid::new_v4().to_string();
    audit_purge_permit::Entity::insert(audit_purge_permit::ActiveModel {
        id: Set(permit.clone()),
    })
    .exec_without_returning(txn)
    .await?;
    Ok(permit)
}

async fn end_permit(txn: &DatabaseTransaction, permit: String) -> Result<(), StoreError> {
    audit_purge_permit::Entity::delete_by_id(permit)
        .exec(txn)
        .await?;
    Ok(())
}
