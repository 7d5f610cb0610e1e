//! Reviews (a held statement waiting for approval) and their decisions.
//!
//! Every change to a review runs in one transaction that first locks the
//! review row (`SELECT … FOR UPDATE` on PostgreSQL; SQLite serializes writers
//! anyway), so decisions on one review are applied one at a time and each sees
//! the others. The decision, the new status and the audit events commit
//! together or not at all.
//!
//! The rules (who may decide, what the new status is) are the caller's: this
//! module stores what [`Store::change_review`]'s closure asks for. The
//! database adds two backstops of its own (see `m0003_reviews`): one decision
//! per approver and review, and never one by the review's requester.

use super::audit::{AuditBody, NewAuditEvent, chain};
use super::entity::{approval, audit_event, review};
use super::{Store, StoreError};
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
};
use std::collections::HashMap;

/// Attempts at the next audit sequence number before giving up.
const SEQ_ATTEMPTS: usize = 5;

/// Where a review stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReviewStatus {
    Pending,
    Approved,
    Denied,
    Expired,
}

impl ReviewStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "pending" => Ok(Self::Pending),
            "approved" => Ok(Self::Approved),
            "denied" => Ok(Self::Denied),
            "expired" => Ok(Self::Expired),
            other => Err(StoreError::Corrupt(format!("review status {other:?}"))),
        }
    }
}

/// One approver's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Deny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Deny => "deny",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "approve" => Ok(Self::Approve),
            "deny" => Ok(Self::Deny),
            other => Err(StoreError::Corrupt(format!("review decision {other:?}"))),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionRecord {
    pub approver: String,
    pub verdict: Verdict,
    pub comment: Option<String>,
    pub at: DateTime<Utc>,
    /// Approvals only: `None` covers this one execution; `Some(n)` also covers
    /// the same statement shape for n minutes from the review's `decided_at`.
    pub scope_minutes: Option<u32>,
    /// The `group:` approver entries (names only) the approver was in when deciding.
    pub groups: Vec<String>,
}

/// What a grant asks for; only grants have them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantTerms {
    pub access_level: String,
    /// How long the grant lasts once approved, counted from `decided_at`.
    pub duration: std::time::Duration,
    pub reason: String,
    pub ticket: Option<String>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<String>,
}

/// A request for approval: a held statement (a review) or time-boxed access
/// (a grant). Both share the rules of who may decide (`reviews::rules`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewRecord {
    pub id: String,
    pub session_id: String,
    pub requester: String,
    pub resource: String,
    pub statement: String,
    pub kinds: Vec<String>,
    pub rule: String,
    pub message: Option<String>,
    pub status: ReviewStatus,
    pub approvals_required: u32,
    /// `group:NAME` or `user:EMAIL`.
    pub approvers: Vec<String>,
    /// Oldest first.
    pub decisions: Vec<DecisionRecord>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    /// The statement's shape; `None` if it does not parse (never reused then).
    pub fingerprint: Option<String>,
    /// The policy rule's cap on an approval's scope, in minutes; 0: once only.
    pub max_approval_minutes: u32,
    /// Each `group:` entry of `approvers` must be represented by a different approver.
    pub one_from_each: bool,
    /// Set for grants, `None` for statement reviews.
    pub grant: Option<GrantTerms>,
}

impl ReviewRecord {
    /// "review" or "grant", for messages.
    pub fn noun(&self) -> &'static str {
        if self.grant.is_some() {
            "grant"
        } else {
            "review"
        }
    }

    /// The audit session its events are stored under: `review:<id>` or `grant:<id>`.
    pub fn audit_session(&self) -> String {
        format!("{}:{}", self.noun(), self.id)
    }

    /// For an approved grant: until when it gives access.
    pub fn grant_until(&self) -> Option<DateTime<Utc>> {
        let g = self.grant.as_ref()?;
        if self.status != ReviewStatus::Approved {
            return None;
        }
        let length = chrono::Duration::from_std(g.duration).ok()?;
        Some(self.decided_at? + length)
    }

    /// An approved grant, not revoked, not yet over at `now`.
    pub fn grant_active_at(&self, now: DateTime<Utc>) -> bool {
        self.grant.as_ref().is_some_and(|g| g.revoked_at.is_none())
            && self.grant_until().is_some_and(|until| now < until)
    }
}

const SUBJECT_STATEMENT: &str = "statement";
const SUBJECT_GRANT: &str = "grant";

/// An audit entry about a review, appended under `review:<id>` with the next seq.
#[derive(Clone, Debug, PartialEq)]
pub struct ReviewEvent {
    /// Who acted (the requester for `opened` and `expired`).
    pub identity: String,
    /// `opened`, `approved`, `denied`, `refused` or `expired`; for grants also
    /// `requested`, `revoked` and `used` (a session opened under the grant).
    pub action: &'static str,
    pub detail: serde_json::Value,
}

/// What to do to a locked review; all of it commits together.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReviewChange {
    /// The new status, if it changes. A final status also sets `decided_at`.
    pub status: Option<ReviewStatus>,
    /// Grants: revoke, at this time by this identity.
    pub revoke: Option<(DateTime<Utc>, String)>,
    /// A decision to record.
    pub decision: Option<DecisionRecord>,
    pub events: Vec<ReviewEvent>,
}

/// The result of [`Store::change_review`].
#[derive(Clone, Debug, PartialEq)]
pub struct Changed<T> {
    /// The review after the change.
    pub review: ReviewRecord,
    /// Set when the database refused the decision (a second decision by the
    /// same approver, or one by the requester). Then neither the decision
    /// nor the status change was applied, and a `refused` event with this
    /// reason was audited in place of the change's events.
    pub rejected: Option<String>,
    /// What the closure returned.
    pub value: T,
}

fn subject(grants: bool) -> &'static str {
    if grants {
        SUBJECT_GRANT
    } else {
        SUBJECT_STATEMENT
    }
}

/// How to tell what the database refused, from the error it gave.
fn rejection(err: &sea_orm::DbErr) -> Option<String> {
    if matches!(
        err.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    ) {
        return Some("this approver has already decided this review".to_owned());
    }
    // Raised by the triggers of m0003 on both backends.
    let text = err.to_string();
    text.contains("segregation of duties").then(|| {
        "segregation of duties: the database refused a decision by the review's requester"
            .to_owned()
    })
}

fn to_record(m: review::Model, decisions: Vec<DecisionRecord>) -> Result<ReviewRecord, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("review {} {what}", m.id));
    let kinds = serde_json::from_str(&m.kinds).map_err(|_| corrupt("kinds"))?;
    let approvers = serde_json::from_str(&m.approvers).map_err(|_| corrupt("approvers"))?;
    let approvals_required =
        u32::try_from(m.approvals_required).map_err(|_| corrupt("approvals_required"))?;
    let max_approval_minutes =
        u32::try_from(m.max_approval_minutes).map_err(|_| corrupt("max_approval_minutes"))?;
    let grant = match m.subject.as_str() {
        SUBJECT_STATEMENT => None,
        SUBJECT_GRANT => Some(GrantTerms {
            access_level: m.access_level.ok_or_else(|| corrupt("access_level"))?,
            duration: m
                .duration_secs
                .and_then(|s| u64::try_from(s).ok())
                .map(std::time::Duration::from_secs)
                .ok_or_else(|| corrupt("duration_secs"))?,
            reason: m.reason.unwrap_or_default(),
            ticket: m.ticket,
            revoked_at: m.revoked_at,
            revoked_by: m.revoked_by,
        }),
        _ => return Err(corrupt("subject")),
    };
    Ok(ReviewRecord {
        grant,
        one_from_each: m.one_from_each,
        status: ReviewStatus::parse(&m.status)?,
        id: m.id,
        session_id: m.session_id,
        requester: m.requester,
        resource: m.resource,
        statement: m.statement,
        kinds,
        rule: m.rule,
        message: m.message,
        approvals_required,
        approvers,
        decisions,
        created_at: m.created_at,
        expires_at: m.expires_at,
        decided_at: m.decided_at,
        fingerprint: m.fingerprint,
        max_approval_minutes,
    })
}

/// Loads the decisions of `models` (one query) and builds the records.
async fn with_decisions(
    conn: &impl ConnectionTrait,
    models: Vec<review::Model>,
) -> Result<Vec<ReviewRecord>, StoreError> {
    if models.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = models.iter().map(|m| m.id.clone()).collect();
    let rows = approval::Entity::find()
        .filter(approval::Column::ReviewId.is_in(ids))
        .order_by_asc(approval::Column::At)
        .order_by_asc(approval::Column::Approver)
        .all(conn)
        .await?;
    let mut by_review: HashMap<String, Vec<DecisionRecord>> = HashMap::new();
    for a in rows {
        let scope_minutes = a
            .scope_minutes
            .map(u32::try_from)
            .transpose()
            .map_err(|_| StoreError::Corrupt(format!("approval scope of {}", a.review_id)))?;
        let groups = match &a.approver_groups {
            Some(text) => serde_json::from_str(text)
                .map_err(|_| StoreError::Corrupt(format!("approver groups of {}", a.review_id)))?,
            None => Vec::new(),
        };
        by_review
            .entry(a.review_id)
            .or_default()
            .push(DecisionRecord {
                groups,
                verdict: Verdict::parse(&a.decision)?,
                scope_minutes,
                approver: a.approver,
                comment: a.comment,
                at: a.at,
            });
    }
    models
        .into_iter()
        .map(|m| {
            let decisions = by_review.remove(&m.id).unwrap_or_default();
            to_record(m, decisions)
        })
        .collect()
}

/// Appends `events` under `review:<id>`, each with the next free sequence
/// number. Callers hold the review's row lock, so the numbers do not race
/// among themselves; the retry covers anything else writing that session.
async fn append_events(
    conn: &impl ConnectionTrait,
    key: &chain::AuditKey,
    r: &ReviewRecord,
    events: &[ReviewEvent],
) -> Result<(), StoreError> {
    let session_id = r.audit_session();
    let now = Utc::now();
    for e in events {
        let mut stored = false;
        for _ in 0..SEQ_ATTEMPTS {
            let max: Option<i64> = audit_event::Entity::find()
                .select_only()
                .column_as(audit_event::Column::Seq.max(), "max_seq")
                .filter(audit_event::Column::SessionId.eq(session_id.as_str()))
                .into_tuple::<Option<i64>>()
                .one(conn)
                .await?
                .flatten();
            let seq = max.map_or(Ok(0), |m| {
                u64::try_from(m + 1).map_err(|_| StoreError::Corrupt(format!("seq {m}")))
            })?;
            let event = NewAuditEvent {
                session_id: session_id.clone(),
                seq,
                at: now,
                identity: e.identity.clone(),
                resource: r.resource.clone(),
                body: match r.grant {
                    None => AuditBody::Review {
                        action: e.action.to_owned(),
                        review_id: r.id.clone(),
                        detail: e.detail.clone(),
                    },
                    Some(_) => AuditBody::Grant {
                        action: e.action.to_owned(),
                        grant_id: r.id.clone(),
                        detail: e.detail.clone(),
                    },
                },
            };
            if chain::insert_chained(conn, key, std::slice::from_ref(&event)).await? > 0 {
                stored = true;
                break;
            }
        }
        if !stored {
            return Err(StoreError::Conflict {
                what: "audit sequence number",
                key: session_id,
            });
        }
    }
    Ok(())
}

impl Store {
    /// Stores a new review (its `decisions` must be empty) and audits `events`
    /// (`opened`, and `approved` when an earlier approval covers it).
    pub async fn insert_review(
        &self,
        r: &ReviewRecord,
        events: &[ReviewEvent],
    ) -> Result<(), StoreError> {
        let json = |v: &[String]| serde_json::Value::from(v.to_vec()).to_string();
        let required = i32::try_from(r.approvals_required)
            .map_err(|_| StoreError::Corrupt("approvals_required".to_owned()))?;
        let cap = i32::try_from(r.max_approval_minutes)
            .map_err(|_| StoreError::Corrupt("max_approval_minutes".to_owned()))?;
        let txn = self.db().begin().await?;
        review::Entity::insert(review::ActiveModel {
            id: Set(r.id.clone()),
            session_id: Set(r.session_id.clone()),
            requester: Set(r.requester.clone()),
            resource: Set(r.resource.clone()),
            statement: Set(r.statement.clone()),
            kinds: Set(json(&r.kinds)),
            rule: Set(r.rule.clone()),
            message: Set(r.message.clone()),
            status: Set(r.status.as_str().to_owned()),
            approvals_required: Set(required),
            approvers: Set(json(&r.approvers)),
            created_at: Set(r.created_at),
            expires_at: Set(r.expires_at),
            decided_at: Set(r.decided_at),
            fingerprint: Set(r.fingerprint.clone()),
            max_approval_minutes: Set(cap),
            subject: Set(if r.grant.is_some() {
                SUBJECT_GRANT
            } else {
                SUBJECT_STATEMENT
            }
            .to_owned()),
            access_level: Set(r.grant.as_ref().map(|g| g.access_level.clone())),
            duration_secs: Set(r
                .grant
                .as_ref()
                .map(|g| i64::try_from(g.duration.as_secs()).unwrap_or(i64::MAX))),
            reason: Set(r.grant.as_ref().map(|g| g.reason.clone())),
            ticket: Set(r.grant.as_ref().and_then(|g| g.ticket.clone())),
            one_from_each: Set(r.one_from_each),
            revoked_at: Set(None),
            revoked_by: Set(None),
        })
        .exec_without_returning(&txn)
        .await
        .map_err(|e| super::conflict_or(e, "review", &r.id))?;
        append_events(&txn, self.audit_key(), r, events).await?;
        txn.commit().await?;
        Ok(())
    }

    pub async fn review(&self, id: &str) -> Result<Option<ReviewRecord>, StoreError> {
        let Some(m) = review::Entity::find_by_id(id).one(self.db()).await? else {
            return Ok(None);
        };
        Ok(with_decisions(self.db(), vec![m]).await?.pop())
    }

    /// Pending reviews (`grants`: grants) not requested by `not_requester`,
    /// newest first, at most `limit`.
    pub async fn pending_reviews(
        &self,
        grants: bool,
        not_requester: &str,
        limit: u64,
    ) -> Result<Vec<ReviewRecord>, StoreError> {
        let models = review::Entity::find()
            .filter(review::Column::Subject.eq(subject(grants)))
            .filter(review::Column::Status.eq(ReviewStatus::Pending.as_str()))
            .filter(review::Column::Requester.ne(not_requester))
            .order_by_desc(review::Column::CreatedAt)
            .order_by_desc(review::Column::Id)
            .limit(limit)
            .all(self.db())
            .await?;
        with_decisions(self.db(), models).await
    }

    /// Reviews (`grants`: grants) requested by `requester`, newest first, at
    /// most `limit`.
    pub async fn reviews_requested_by(
        &self,
        grants: bool,
        requester: &str,
        limit: u64,
    ) -> Result<Vec<ReviewRecord>, StoreError> {
        let models = review::Entity::find()
            .filter(review::Column::Subject.eq(subject(grants)))
            .filter(review::Column::Requester.eq(requester))
            .order_by_desc(review::Column::CreatedAt)
            .order_by_desc(review::Column::Id)
            .limit(limit)
            .all(self.db())
            .await?;
        with_decisions(self.db(), models).await
    }

    /// Approved reviews by `requester` on `resource` for statements of shape
    /// `fingerprint` under `rule`, decided at or after `since`, newest first,
    /// at most `limit`. Whether one still covers a new statement is the
    /// caller's rule; this only narrows the search.
    pub async fn approved_by_fingerprint(
        &self,
        requester: &str,
        resource: &str,
        rule: &str,
        fingerprint: &str,
        since: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<ReviewRecord>, StoreError> {
        let models = review::Entity::find()
            .filter(review::Column::Subject.eq(SUBJECT_STATEMENT))
            .filter(review::Column::Status.eq(ReviewStatus::Approved.as_str()))
            .filter(review::Column::Requester.eq(requester))
            .filter(review::Column::Resource.eq(resource))
            .filter(review::Column::Rule.eq(rule))
            .filter(review::Column::Fingerprint.eq(fingerprint))
            .filter(review::Column::DecidedAt.gte(since))
            .order_by_desc(review::Column::DecidedAt)
            .order_by_desc(review::Column::Id)
            .limit(limit)
            .all(self.db())
            .await?;
        with_decisions(self.db(), models).await
    }

    /// Approved grants decided at or after `since`, newest first, at most
    /// `limit`; only `requester`'s on `resource` when given. Whether one is
    /// still active (not revoked, not over) is the caller's test
    /// ([`ReviewRecord::grant_active_at`]); `since` only narrows the search.
    pub async fn approved_grants(
        &self,
        requester: Option<&str>,
        resource: Option<&str>,
        revoked_only: bool,
        since: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<ReviewRecord>, StoreError> {
        let mut q = review::Entity::find()
            .filter(review::Column::Subject.eq(SUBJECT_GRANT))
            .filter(review::Column::Status.eq(ReviewStatus::Approved.as_str()))
            .filter(review::Column::DecidedAt.gte(since));
        if let Some(r) = requester {
            q = q.filter(review::Column::Requester.eq(r));
        }
        if revoked_only {
            q = q.filter(review::Column::RevokedAt.is_not_null());
        }
        if let Some(r) = resource {
            q = q.filter(review::Column::Resource.eq(r));
        }
        let models = q
            .order_by_desc(review::Column::DecidedAt)
            .order_by_desc(review::Column::Id)
            .limit(limit)
            .all(self.db())
            .await?;
        with_decisions(self.db(), models).await
    }

    /// Locks review `id`, asks `decide` what to change given its current
    /// state, applies that, and returns the review as it then stands.
    /// `Ok(None)` if there is no such review.
    pub async fn change_review<T>(
        &self,
        id: &str,
        decide: impl FnOnce(&ReviewRecord) -> (ReviewChange, T),
    ) -> Result<Option<Changed<T>>, StoreError> {
        let txn = self.db().begin().await?;
        // FOR UPDATE on PostgreSQL; sea-query leaves it out for SQLite, whose
        // single writer serializes these transactions anyway.
        let Some(m) = review::Entity::find_by_id(id)
            .lock_exclusive()
            .one(&txn)
            .await?
        else {
            return Ok(None);
        };
        let Some(current) = with_decisions(&txn, vec![m]).await?.pop() else {
            return Ok(None);
        };
        let (change, value) = decide(&current);
        let mut rejected = None;
        if let Some(d) = &change.decision {
            // A savepoint, so that a refusal by the database can still be audited.
            let sp = txn.begin().await?;
            let inserted = approval::Entity::insert(approval::ActiveModel {
                review_id: Set(current.id.clone()),
                approver: Set(d.approver.clone()),
                decision: Set(d.verdict.as_str().to_owned()),
                comment: Set(d.comment.clone()),
                at: Set(d.at),
                scope_minutes: Set(d
                    .scope_minutes
                    .map(|m| i32::try_from(m).unwrap_or(i32::MAX))),
                approver_groups: Set(Some(serde_json::Value::from(d.groups.clone()).to_string())),
            })
            .exec_without_returning(&sp)
            .await;
            match inserted {
                Ok(_) => sp.commit().await?,
                Err(e) => match rejection(&e) {
                    Some(reason) => {
                        sp.rollback().await?;
                        tracing::warn!(review = %current.id, approver = %d.approver, %reason, "database refused a review decision");
                        append_events(
                            &txn,
                            self.audit_key(),
                            &current,
                            &[ReviewEvent {
                                identity: d.approver.clone(),
                                action: "refused",
                                detail: serde_json::json!({
                                    "reason": reason,
                                    "attempted": d.verdict.as_str(),
                                }),
                            }],
                        )
                        .await?;
                        rejected = Some(reason);
                    }
                    None => return Err(e.into()),
                },
            }
        }
        if rejected.is_none() {
            if let Some(status) = change.status
                && status != current.status
            {
                let decided_at = (status != ReviewStatus::Pending).then(Utc::now);
                review::Entity::update_many()
                    .col_expr(
                        review::Column::Status,
                        sea_orm::sea_query::Expr::value(status.as_str()),
                    )
                    .col_expr(
                        review::Column::DecidedAt,
                        sea_orm::sea_query::Expr::value(decided_at),
                    )
                    .filter(review::Column::Id.eq(current.id.as_str()))
                    .exec(&txn)
                    .await?;
            }
            if let Some((at, by)) = &change.revoke {
                review::Entity::update_many()
                    .col_expr(
                        review::Column::RevokedAt,
                        sea_orm::sea_query::Expr::value(*at),
                    )
                    .col_expr(
                        review::Column::RevokedBy,
                        sea_orm::sea_query::Expr::value(by.clone()),
                    )
                    .filter(review::Column::Id.eq(current.id.as_str()))
                    .filter(review::Column::RevokedAt.is_null())
                    .exec(&txn)
                    .await?;
            }
            append_events(&txn, self.audit_key(), &current, &change.events).await?;
        }
        let after = review::Entity::find_by_id(id).one(&txn).await?;
        let review = match after {
            Some(m) => with_decisions(&txn, vec![m]).await?.pop(),
            None => None,
        }
        .ok_or_else(|| StoreError::NotFound {
            what: "review",
            key: id.to_owned(),
        })?;
        txn.commit().await?;
        Ok(Some(Changed {
            review,
            rejected,
            value,
        }))
    }
}
