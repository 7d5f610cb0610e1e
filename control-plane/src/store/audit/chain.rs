//! The per-session hash chain over stored audit events.
//!
//! Each stored event carries `chain_hash = HMAC(key, prev_hash ‖ canonical
//! bytes of its stored fields)`, where `prev_hash` is the `chain_hash` of the
//! event chained before it in the same session, and `prev_seq` names that
//! event. The chain runs in the order events were *stored*. Gateways send a
//! session's events in seq order, so normally that is seq order; an event that
//! arrives late (after a higher seq) is chained after the current head rather
//! than spliced in, so the chain never forks and every stored event but the
//! newest is named by exactly one successor. A seq that never arrives is a gap,
//! not a broken link: verify only reports a seq as missing when something
//! chained to it (or a checkpoint committed to it) and it is gone.
//!
//! Ordering: `audit_heads` has one row per session, locked (`FOR UPDATE` on
//! PostgreSQL) for the length of the insert. Inserts into different sessions
//! lock different rows and never wait on each other; SQLite has a single
//! writer anyway. Heads are locked in session-id order, so two batches that
//! touch the same sessions cannot deadlock. (On PostgreSQL an ingest stores
//! its batch's parameterized texts before it locks any head, and may wait
//! there; see `ingest::PgIngest::store_texts`.)
//!
//! Idempotence: under the head lock, events already stored are dropped before
//! chaining, so a resend neither fails nor changes any stored hash.

use super::super::entity::{audit_event, audit_head};
use super::super::{Store, StoreError};
use super::{NewAuditEvent, to_model};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel,
    QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::sync::Arc;

type HmacSha256 = Hmac<Sha256>;

/// Settings key under which the audit key is kept when none is configured.
pub const AUDIT_KEY_SETTING: &str = "audit_hmac_key";

/// Rows per INSERT: keeps bound parameters well under SQLite's and PostgreSQL's limits.
const INSERT_CHUNK: usize = 256;

/// The HMAC-SHA256 key of the audit chain and checkpoints, kept as a keyed
/// MAC that is cloned per use. Prints as `<secret>`.
#[derive(Clone)]
pub struct AuditKey(Arc<HmacSha256>);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(<secret>)")
    }
}

impl AuditKey {
    /// A key from its hex form (at least 32 bytes).
    pub fn from_hex(text: &str) -> Result<Self, StoreError> {
        let bytes = hex::decode(text.trim())
            .map_err(|_| StoreError::Corrupt("the audit key is not hex".to_owned()))?;
        if bytes.len() < 32 {
            return Err(StoreError::Corrupt(
                "the audit key must be at least 32 bytes".to_owned(),
            ));
        }
        let mac = <HmacSha256 as Mac>::new_from_slice(&bytes)
            .map_err(|_| StoreError::Corrupt("the audit key has a bad length".to_owned()))?;
        Ok(Self(Arc::new(mac)))
    }

    /// A fresh random key, hex.
    pub fn generate_hex() -> String {
        use rand::RngCore;
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        hex::encode(bytes)
    }

    pub(crate) fn mac(&self, domain: &[u8]) -> Canonical {
        let mut c = Canonical(HmacSha256::clone(&self.0));
        c.bytes(domain);
        c
    }
}

/// An unambiguous encoding fed straight into the MAC: every field is tagged
/// and length-prefixed, so no two different rows encode alike.
pub(crate) struct Canonical(HmacSha256);

impl Canonical {
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.0.update(&[1]);
        self.0.update(&(b.len() as u64).to_be_bytes());
        self.0.update(b);
    }

    pub(crate) fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    pub(crate) fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.str(s),
            None => self.0.update(&[0]),
        }
    }

    pub(crate) fn int(&mut self, v: i64) {
        self.0.update(&[2]);
        self.0.update(&v.to_be_bytes());
    }

    pub(crate) fn opt_int(&mut self, v: Option<i64>) {
        match v {
            Some(v) => self.int(v),
            None => self.0.update(&[0]),
        }
    }

    pub(crate) fn time(&mut self, t: DateTime<Utc>) {
        self.int(t.timestamp_micros());
    }

    pub(crate) fn finish_hex(self) -> String {
        hex::encode(self.0.finalize().into_bytes())
    }
}

/// `chain_hash` of a stored event: over `prev_hash`, `prev_seq` and every
/// stored field. `seq` stands apart so that verify can ask "would this row
/// verify at another seq?" to tell a reordering from an edit.
pub(crate) fn event_hash(key: &AuditKey, m: &audit_event::Model, seq: i64) -> String {
    let mut c = key.mac(b"countersign audit event v1");
    c.opt_str(m.prev_hash.as_deref());
    c.opt_int(m.prev_seq);
    c.str(&m.session_id);
    c.int(seq);
    c.time(m.at);
    c.str(&m.event);
    c.str(&m.identity);
    c.str(&m.resource);
    c.opt_str(m.statement.as_deref());
    c.str(&m.kinds);
    c.opt_str(m.protocol.as_deref());
    c.opt_int(m.parameter_count.map(i64::from));
    c.opt_int(m.duration_us);
    c.opt_str(m.command_tag.as_deref());
    c.opt_int(m.rows);
    c.opt_str(m.error.as_deref());
    c.opt_str(m.decision.as_deref());
    c.opt_str(m.rule.as_deref());
    c.opt_str(m.detail.as_deref());
    c.time(m.received_at);
    c.finish_hex()
}

/// Locks the heads of `sessions` (creating missing ones), in session-id order.
async fn lock_heads(
    conn: &impl ConnectionTrait,
    sessions: impl Iterator<Item = &String> + Clone,
) -> Result<BTreeMap<String, audit_head::Model>, StoreError> {
    let fresh = sessions.clone().map(|s| audit_head::ActiveModel {
        session_id: Set(s.clone()),
        last_seq: Set(None),
        last_hash: Set(None),
        max_seq: Set(None),
        events: Set(0),
        checkpointed_events: Set(0),
    });
    audit_head::Entity::insert_many(fresh.collect::<Vec<_>>())
        .on_conflict_do_nothing_on([audit_head::Column::SessionId])
        .exec_without_returning(conn)
        .await?;
    let ids: Vec<String> = sessions.cloned().collect();
    let mut heads = BTreeMap::new();
    // FOR UPDATE on PostgreSQL; sea-query leaves it out for SQLite, whose
    // single writer serializes inserts anyway.
    for chunk in ids.chunks(INSERT_CHUNK) {
        let rows = audit_head::Entity::find()
            .filter(audit_head::Column::SessionId.is_in(chunk.iter().map(String::as_str)))
            .order_by_asc(audit_head::Column::SessionId)
            .lock_exclusive()
            .all(conn)
            .await?;
        for h in rows {
            heads.insert(h.session_id.clone(), h);
        }
    }
    Ok(heads)
}

/// Chains `rows` (one session's new events, in the order to chain them) after
/// `head`, and advances the head. Returns the chained rows.
fn chain_after(
    key: &AuditKey,
    head: &mut audit_head::Model,
    rows: Vec<audit_event::Model>,
) -> Vec<audit_event::Model> {
    rows.into_iter()
        .map(|mut m| {
            m.prev_seq = head.last_seq;
            m.prev_hash = head.last_hash.clone();
            let hash = event_hash(key, &m, m.seq);
            m.chain_hash = Some(hash.clone());
            head.last_seq = Some(m.seq);
            head.last_hash = Some(hash);
            head.max_seq = Some(head.max_seq.map_or(m.seq, |s| s.max(m.seq)));
            head.events += 1;
            m
        })
        .collect()
}

async fn save_head(conn: &impl ConnectionTrait, head: audit_head::Model) -> Result<(), StoreError> {
    audit_head::ActiveModel {
        session_id: Set(head.session_id),
        last_seq: Set(head.last_seq),
        last_hash: Set(head.last_hash),
        max_seq: Set(head.max_seq),
        events: Set(head.events),
        checkpointed_events: sea_orm::ActiveValue::NotSet,
    }
    .update(conn)
    .await?;
    Ok(())
}

/// Stores and chains `events`, skipping any already stored. Returns how many
/// were new. Run inside a transaction: the head locks last until it ends.
pub(crate) async fn insert_chained(
    conn: &impl ConnectionTrait,
    key: &AuditKey,
    events: &[NewAuditEvent],
) -> Result<u64, StoreError> {
    let rows = chain_new(conn, key, events).await?;
    let stored = rows.len() as u64;
    insert_rows(conn, rows).await?;
    Ok(stored)
}

/// Chains the `events` not stored yet after their sessions' heads, and moves the heads:
/// everything of [`insert_chained`] but writing the rows, which it returns. Run inside a
/// transaction that writes the rows before it commits: the head locks last until it ends.
pub(crate) async fn chain_new(
    conn: &impl ConnectionTrait,
    key: &AuditKey,
    events: &[NewAuditEvent],
) -> Result<Vec<audit_event::Model>, StoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let received_at = super::micros(Utc::now());
    let mut by_session: BTreeMap<String, BTreeMap<i64, audit_event::Model>> = BTreeMap::new();
    for e in events {
        let m = to_model(e, received_at)?;
        by_session
            .entry(m.session_id.clone())
            .or_default()
            .entry(m.seq)
            .or_insert(m);
    }
    let mut heads = lock_heads(conn, by_session.keys()).await?;
    // Stamped once the head locks are held, so that only this transaction's
    // own statements lie between `received_at` and its commit: the SIEM
    // stream reads in `received_at` order and relies on that gap being short.
    let received_at = super::micros(Utc::now());
    for m in by_session.values_mut().flat_map(BTreeMap::values_mut) {
        m.received_at = received_at;
    }
    let mut new_rows = Vec::new();
    let mut moved = Vec::new();
    for (session, mut rows) in by_session {
        let Some(mut head) = heads.remove(&session) else {
            return Err(StoreError::Corrupt(format!("no audit head for {session}")));
        };
        // Only seqs at or below the highest stored one can be resends.
        let maybe_stored: Vec<i64> = match head.max_seq {
            Some(max) => rows.keys().copied().filter(|s| *s <= max).collect(),
            None => Vec::new(),
        };
        for chunk in maybe_stored.chunks(INSERT_CHUNK) {
            let stored: Vec<i64> = audit_event::Entity::find()
                .select_only()
                .column(audit_event::Column::Seq)
                .filter(audit_event::Column::SessionId.eq(session.as_str()))
                .filter(audit_event::Column::Seq.is_in(chunk.iter().copied()))
                .into_tuple()
                .all(conn)
                .await?;
            for s in stored {
                rows.remove(&s);
            }
        }
        if rows.is_empty() {
            continue;
        }
        new_rows.extend(chain_after(key, &mut head, rows.into_values().collect()));
        moved.push(head);
    }
    save_heads(conn, moved).await?;
    Ok(new_rows)
}

/// A head as [`save_heads`] sends it: the columns a chained insert moves.
#[derive(serde::Serialize)]
struct JsonHead<'a> {
    session_id: &'a str,
    last_seq: Option<i64>,
    last_hash: Option<&'a str>,
    max_seq: Option<i64>,
    events: i64,
}

/// Writes the heads a chained insert moved. On PostgreSQL in one `UPDATE` whatever the number
/// of sessions in the batch (the heads travel as one JSON parameter); on SQLite one by one.
async fn save_heads(
    conn: &impl ConnectionTrait,
    heads: Vec<audit_head::Model>,
) -> Result<(), StoreError> {
    let backend = conn.get_database_backend();
    if backend != sea_orm::DbBackend::Postgres {
        for head in heads {
            save_head(conn, head).await?;
        }
        return Ok(());
    }
    if heads.is_empty() {
        return Ok(());
    }
    let rows: Vec<JsonHead<'_>> = heads
        .iter()
        .map(|h| JsonHead {
            session_id: &h.session_id,
            last_seq: h.last_seq,
            last_hash: h.last_hash.as_deref(),
            max_seq: h.max_seq,
            events: h.events,
        })
        .collect();
    let json = serde_json::to_string(&rows)
        .map_err(|e| StoreError::Corrupt(format!("audit heads as JSON: {e}")))?;
    let done = conn
        .execute_raw(sea_orm::Statement::from_sql_and_values(
            backend,
            "UPDATE audit_heads AS h SET last_seq = v.last_seq, last_hash = v.last_hash, \
             max_seq = v.max_seq, events = v.events \
             FROM json_populate_recordset(NULL::audit_heads, $1::text::json) AS v \
             WHERE h.session_id = v.session_id",
            [sea_orm::Value::from(json)],
        ))
        .await?;
    // Every head was locked by this transaction, so every one must have been updated.
    if done.rows_affected() != heads.len() as u64 {
        return Err(StoreError::Corrupt(format!(
            "{} of {} audit heads updated",
            done.rows_affected(),
            heads.len()
        )));
    }
    Ok(())
}

/// Inserts chained rows in `VALUES` lists of [`INSERT_CHUNK`] rows: SQLite's path, and
/// PostgreSQL's for the single events of reviews (everything `Store::insert_audit_events`
/// stores, a gateway's batches and authentication events, takes
/// [`super::ingest::PgIngest::copy_and_commit`]).
async fn insert_rows(
    conn: &impl ConnectionTrait,
    rows: Vec<audit_event::Model>,
) -> Result<(), StoreError> {
    let mut rows = rows.into_iter().map(IntoActiveModel::into_active_model);
    loop {
        let chunk: Vec<_> = rows.by_ref().take(INSERT_CHUNK).collect();
        if chunk.is_empty() {
            return Ok(());
        }
        audit_event::Entity::insert_many(chunk)
            .exec_without_returning(conn)
            .await?;
    }
}

/// Chains events stored before the chain existed (`chain_hash IS NULL`), in
/// seq order after each session's head. Safe to run on several replicas at
/// once: each session is sealed under its head lock.
pub(crate) async fn seal_unchained(store: &Store) -> Result<u64, StoreError> {
    let mut sealed = 0;
    loop {
        let sessions: Vec<String> = audit_event::Entity::find()
            .select_only()
            .column(audit_event::Column::SessionId)
            .distinct()
            .filter(audit_event::Column::ChainHash.is_null())
            .limit(100)
            .into_tuple()
            .all(store.db())
            .await?;
        if sessions.is_empty() {
            return Ok(sealed);
        }
        for session in sessions {
            let txn = store.db().begin().await?;
            let mut heads = lock_heads(&txn, std::iter::once(&session)).await?;
            let Some(mut head) = heads.remove(&session) else {
                return Err(StoreError::Corrupt(format!("no audit head for {session}")));
            };
            let rows = audit_event::Entity::find()
                .filter(audit_event::Column::SessionId.eq(session.as_str()))
                .filter(audit_event::Column::ChainHash.is_null())
                .order_by_asc(audit_event::Column::Seq)
                .all(&txn)
                .await?;
            for m in chain_after(store.audit_key(), &mut head, rows) {
                audit_event::ActiveModel {
                    session_id: Set(m.session_id),
                    seq: Set(m.seq),
                    prev_seq: Set(m.prev_seq),
                    prev_hash: Set(m.prev_hash),
                    chain_hash: Set(m.chain_hash),
                    ..Default::default()
                }
                .update(&txn)
                .await?;
                sealed += 1;
            }
            save_head(&txn, head).await?;
            txn.commit().await?;
        }
    }
}
