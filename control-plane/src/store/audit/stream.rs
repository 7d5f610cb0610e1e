//! The SIEM stream's store side: events in arrival order, and each stream's
//! cursor with a lease, so that one replica at a time delivers a stream.
//!
//! Arrival order is `(received_at, session_id, seq)`. `received_at` is
//! stamped inside the insert transaction once its head locks are held (see
//! [`super::chain`]), so a reader that stays a settling delay behind the
//! clock sees every event of that range committed. Guaranteed: an event
//! whose insert committed within the settling delay of its `received_at` is
//! delivered. Not guaranteed: an insert transaction that stalls for longer
//! than the delay after stamping (a frozen database connection) could commit
//! behind the cursor; the delay is configurable, and verify and export still
//! hold every event.
//!
//! The cursor lives in `settings` under `audit_stream:<name>` as JSON. Every
//! change is a compare-and-swap on the stored text, so a replica that lost
//! its lease (it stalled past `lease_until` and another took over) finds out
//! at its next write and stops, instead of moving the cursor backwards.

use super::super::entity::{audit_event, setting};
use super::super::{Store, StoreError};
use super::{AuditEventView, to_view};
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde::{Deserialize, Serialize};

/// Where a stream stopped: the last delivered event's `(received_at, session_id, seq)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrivalCursor {
    pub received_at: DateTime<Utc>,
    pub session_id: String,
    pub seq: i64,
}

/// A stream's stored state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct StreamState {
    cursor: Option<ArrivalCursor>,
    holder: Option<String>,
    lease_until: Option<DateTime<Utc>>,
}

/// A held lease on a stream: the cursor to go on from, and the stored text
/// the next compare-and-swap expects.
#[derive(Clone, Debug)]
pub struct StreamLease {
    pub cursor: Option<ArrivalCursor>,
    stored: String,
}

fn encode(state: &StreamState) -> Result<String, StoreError> {
    serde_json::to_string(state).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn key(name: &str) -> String {
    format!("audit_stream:{name}")
}

impl Store {
    /// Takes or renews `holder`'s lease on stream `name` until `until`.
    /// `None` while another holder's lease runs.
    pub async fn lease_audit_stream(
        &self,
        name: &str,
        holder: &str,
        until: DateTime<Utc>,
    ) -> Result<Option<StreamLease>, StoreError> {
        let stored = self
            .setting_or_insert(&key(name), &encode(&StreamState::default())?)
            .await?;
        let state: StreamState = serde_json::from_str(&stored)
            .map_err(|_| StoreError::Corrupt(format!("audit stream {name}: bad state")))?;
        let held_by_other = state.holder.as_deref().is_some_and(|h| h != holder)
            && state.lease_until.is_some_and(|t| t > Utc::now());
        if held_by_other {
            return Ok(None);
        }
        let next = StreamState {
            cursor: state.cursor,
            holder: Some(holder.to_owned()),
            lease_until: Some(until),
        };
        self.swap_stream_state(name, &stored, next).await
    }

    /// Moves the stream's cursor to `cursor` under `lease`, renewing it until
    /// `until`. `None` when the lease was lost meanwhile.
    pub async fn advance_audit_stream(
        &self,
        name: &str,
        holder: &str,
        lease: &StreamLease,
        cursor: ArrivalCursor,
        until: DateTime<Utc>,
    ) -> Result<Option<StreamLease>, StoreError> {
        let next = StreamState {
            cursor: Some(cursor),
            holder: Some(holder.to_owned()),
            lease_until: Some(until),
        };
        self.swap_stream_state(name, &lease.stored, next).await
    }

    async fn swap_stream_state(
        &self,
        name: &str,
        expected: &str,
        next: StreamState,
    ) -> Result<Option<StreamLease>, StoreError> {
        let text = encode(&next)?;
        let swapped = setting::Entity::update_many()
            .set(setting::ActiveModel {
                value: Set(text.clone()),
                ..Default::default()
            })
            .filter(setting::Column::Key.eq(key(name)))
            .filter(setting::Column::Value.eq(expected))
            .exec(self.db())
            .await?
            .rows_affected
            == 1;
        Ok(swapped.then_some(StreamLease {
            cursor: next.cursor,
            stored: text,
        }))
    }

    /// Events that arrived before `before`, strictly after `cursor` in
    /// arrival order, at most `limit`, with the cursor of the last one.
    pub async fn audit_arrivals(
        &self,
        cursor: Option<&ArrivalCursor>,
        before: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<(AuditEventView, ArrivalCursor)>, StoreError> {
        use audit_event::Column as C;
        let mut q = audit_event::Entity::find().filter(C::ReceivedAt.lt(before));
        if let Some(c) = cursor {
            q = q.filter(
                Condition::any().add(C::ReceivedAt.gt(c.received_at)).add(
                    Condition::all().add(C::ReceivedAt.eq(c.received_at)).add(
                        Condition::any()
                            .add(C::SessionId.gt(c.session_id.as_str()))
                            .add(
                                Condition::all()
                                    .add(C::SessionId.eq(c.session_id.as_str()))
                                    .add(C::Seq.gt(c.seq)),
                            ),
                    ),
                ),
            );
        }
        q.order_by_asc(C::ReceivedAt)
            .order_by_asc(C::SessionId)
            .order_by_asc(C::Seq)
            .limit(limit)
            .all(self.db())
            .await?
            .into_iter()
            .map(|m| {
                let cursor = ArrivalCursor {
                    received_at: m.received_at,
                    session_id: m.session_id.clone(),
                    seq: m.seq,
                };
                Ok((to_view(m)?, cursor))
            })
            .collect()
    }
}
