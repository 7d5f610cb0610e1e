//! Reviews: a statement held by the gateway until other people approve it.
//!
//! The invariant: nobody ever counts as an approver of their own review,
//! admins included. [`rules::judge`] is the pure rule every decision goes through,
//! and it runs while the store holds the review's row lock, so concurrent
//! decisions see each other. The database repeats the two checks that matter
//! most (one decision per approver, none by the requester) with a primary key
//! and a trigger, so no code path and no race gets around them.
//!
//! Eligibility uses the caller's groups as the store has them now (like the
//! admin check), not the groups frozen into their token: taking someone out of
//! an approver group takes effect at once. A review that names no approvers
//! (the default group) is also open to anyone with an `approver` role binding
//! covering its resource and environment (see [`crate::bindings`]); the
//! requester check comes first, so a binding never lets anyone decide their
//! own review.
//!
//! Not guaranteed here: that `requester` is really the session's identity (the
//! gateway, authenticated by its token, says so); that other replicas hear of
//! a change at once ([`ControlPlane::review_changes`] covers this replica only;
//! others must poll the store).
//!
//! Scope: an approver may let an approval cover this one execution (the
//! default) or, for up to the policy rule's `max_approval_minutes`, every
//! statement of the same shape (`countersign_policy::fingerprint`) that the
//! same requester sends to the same resource under the same rule. Such a
//! review opens already approved, audited `opened` then `approved` with
//! `by_fingerprint_of`. This does not weaken the invariant: the approval
//! reused was made by someone else, and nothing is approved by the requester.
//! Not guaranteed: a shape is syntax, so the same shape with other constants
//! can touch other rows; that is what the approver agrees to.
//!
//! Layout: this file is the service (open, read, decide, list); [`rules`]
//! holds the pure rules (who may decide, what a decision does, what a new
//! review must look like), tested without a database.

mod rules;

pub use rules::{MAX_APPROVALS, MAX_TIMEOUT};

use crate::bindings::Role;
use crate::notify::Event;
use crate::service::{ControlPlane, Principal, ServiceError};
use crate::store::StoreError;
use crate::store::identities::{Identity, IdentityKind};
use crate::store::reviews::{ReviewChange, ReviewEvent, ReviewRecord, ReviewStatus, Verdict};
use chrono::{DateTime, Utc};
pub(crate) use rules::{MAX_TEXT, check_len, eligible, same_identity, validate_approvers};
use rules::{covered_until, expire_if_due, judge, validate, with_scope};
use std::time::Duration;
use tokio::sync::broadcast;

/// Most reviews one list returns.
const LIST_LIMIT: u64 = 500;
/// Most earlier approvals looked at for one new review's fingerprint.
const REUSE_LIMIT: u64 = 20;

/// A review the gateway asks for.
#[derive(Clone, Debug)]
pub struct NewReview {
    pub session_id: String,
    /// The session's identity (email). Never counts as an approver.
    pub requester: String,
    pub resource: String,
    pub statement: String,
    pub kinds: Vec<String>,
    /// The policy rule that asked for review.
    pub rule: String,
    pub message: Option<String>,
    /// Distinct approvals needed, at least 1.
    pub approvals_required: u32,
    /// `group:NAME` or `user:EMAIL`; empty means anyone in
    /// [`Settings::approver_group`](crate::Settings::approver_group).
    pub approvers: Vec<String>,
    pub timeout: Duration,
    /// The rule's cap on an approval's scope, in minutes (at most 1440); 0:
    /// an approval covers this one execution only.
    pub max_approval_minutes: u32,
}

/// One approver's decision, as the API shows it.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DecisionView {
    pub approver: String,
    /// `approve` or `deny`.
    pub decision: String,
    pub comment: Option<String>,
    pub at: DateTime<Utc>,
    /// Approvals only: minutes this approval also covers the same statement
    /// shape for; `None`: this execution only.
    pub scope_minutes: Option<u32>,
}

/// A review as the API and the gateway see it.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ReviewView {
    pub id: String,
    pub session_id: String,
    pub requester: String,
    pub resource: String,
    pub statement: String,
    pub kinds: Vec<String>,
    pub rule: String,
    pub message: Option<String>,
    /// "pending" | "approved" | "denied" | "expired"
    pub status: String,
    pub approvals_required: u32,
    /// Longest an approver may let an approval cover this statement's shape
    /// (minutes); 0: this execution only.
    pub max_approval_minutes: u32,
    /// Who may decide: `group:NAME` or `user:EMAIL` (the default group filled in).
    pub approvers: Vec<String>,
    /// Oldest first.
    pub decisions: Vec<DecisionView>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Console link: "{public_url}/reviews/{id}"
    pub url: String,
}

impl ControlPlane {
    fn review_view(&self, r: ReviewRecord) -> ReviewView {
        let url = format!(
            "{}/reviews/{}",
            self.settings().public_url.trim_end_matches('/'),
            r.id
        );
        ReviewView {
            url,
            status: r.status.as_str().to_owned(),
            decisions: r
                .decisions
                .into_iter()
                .map(|d| DecisionView {
                    approver: d.approver,
                    decision: d.verdict.as_str().to_owned(),
                    comment: d.comment,
                    at: d.at,
                    scope_minutes: d.scope_minutes,
                })
                .collect(),
            id: r.id,
            session_id: r.session_id,
            requester: r.requester,
            resource: r.resource,
            statement: r.statement,
            kinds: r.kinds,
            rule: r.rule,
            message: r.message,
            approvals_required: r.approvals_required,
            max_approval_minutes: r.max_approval_minutes,
            approvers: r.approvers,
            created_at: r.created_at,
            expires_at: r.expires_at,
        }
    }

    /// Whether `identity` may decide `r` through an approver role binding: only
    /// when the review names no approvers of its own (the default group), and
    /// only with a binding whose scope covers the review's resource and its
    /// environment. Never a way around the requester check, which `judge`
    /// makes first.
    pub(crate) async fn bound_approver(
        &self,
        identity: &Identity,
        r: &ReviewRecord,
    ) -> Result<bool, ServiceError> {
        let default = format!("group:{}", self.settings().approver_group);
        if r.approvers.len() != 1 || r.approvers.first() != Some(&default) {
            return Ok(false);
        }
        // A resource deleted since the review opened has no environment; only
        // bindings for any environment (or a pattern matching "") cover it.
        let environment = self
            .store()
            .resource_by_name(&r.resource)
            .await?
            .map(|res| res.environment)
            .unwrap_or_default();
        self.identity_has_role(
            identity,
            Role::Approver,
            Some(&r.resource),
            Some(&environment),
        )
        .await
    }

    pub(crate) fn review_changed(&self, id: &str) {
        self.publish_review_change(id);
    }

    /// Tells the notification targets that `r` has just been decided or has
    /// expired; nothing while it is still pending. See [`crate::notify`].
    pub(crate) fn announce_outcome(&self, r: &ReviewRecord) {
        if !self.notifier().is_enabled() {
            return;
        }
        if r.grant.is_some() {
            self.announce_grant(r);
        } else if let Some(event) = Event::outcome(r.status) {
            self.notifier().send(event, &self.review_view(r.clone()));
        }
    }

    /// Fires the review id on every state change: this replica's at once,
    /// other replicas' through Redis when it is configured (see `bus`).
    pub fn review_changes(&self) -> broadcast::Receiver<String> {
        self.review_notifier().subscribe()
    }

    /// The newest approved review whose approvers' scope still covers a new
    /// review of `fingerprint` by `requester` on `resource` under `rule`,
    /// which allows at most `cap` minutes.
    async fn covering_review(
        &self,
        requester: &str,
        resource: &str,
        rule: &str,
        fingerprint: Option<&str>,
        cap: u32,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, ServiceError> {
        let Some(fingerprint) = fingerprint.filter(|_| cap > 0) else {
            return Ok(None);
        };
        let since = now - chrono::Duration::minutes(i64::from(cap));
        let found = self
            .store()
            .approved_by_fingerprint(requester, resource, rule, fingerprint, since, REUSE_LIMIT)
            .await?;
        Ok(found
            .into_iter()
            .find(|e| {
                same_identity(&e.requester, requester)
                    && e.resource == resource
                    && e.rule == rule
                    && e.fingerprint.as_deref() == Some(fingerprint)
                    && covered_until(e, cap).is_some_and(|until| now < until)
            })
            .map(|e| e.id))
    }

    /// Opens a review for a held statement and audits it (`review:<id>`, seq
    /// 0). When an earlier approval's scope covers it (see the module docs),
    /// it opens approved, and `approved` is audited too (seq 1).
    pub async fn open_review(&self, r: NewReview) -> Result<ReviewView, ServiceError> {
        let approvers = validate(&r, &self.settings().approver_group)?;
        let created_at = Utc::now();
        let timeout = chrono::Duration::from_std(r.timeout)
            .map_err(|_| ServiceError::Invalid("the review timeout is too long".into()))?;
        let fingerprint = countersign_policy::fingerprint(&r.statement);
        let covered_by = self
            .covering_review(
                &r.requester,
                &r.resource,
                &r.rule,
                fingerprint.as_deref(),
                r.max_approval_minutes,
                created_at,
            )
            .await?;
        let (status, decided_at) = match covered_by {
            Some(_) => (ReviewStatus::Approved, Some(created_at)),
            None => (ReviewStatus::Pending, None),
        };
        let record = ReviewRecord {
            id: uuid::Uuid::now_v7().to_string(),
            session_id: r.session_id,
            requester: r.requester,
            resource: r.resource,
            statement: r.statement,
            kinds: r.kinds,
            rule: r.rule,
            message: r.message,
            status,
            approvals_required: r.approvals_required,
            approvers,
            decisions: Vec::new(),
            created_at,
            expires_at: created_at + timeout,
            decided_at,
            fingerprint,
            max_approval_minutes: r.max_approval_minutes,
            one_from_each: false,
            grant: None,
        };
        let opened = ReviewEvent {
            identity: record.requester.clone(),
            action: "opened",
            detail: serde_json::json!({
                "session_id": record.session_id,
                "statement": record.statement,
                "kinds": record.kinds,
                "rule": record.rule,
                "message": record.message,
                "approvals_required": record.approvals_required,
                "approvers": record.approvers,
                "expires_at": record.expires_at,
            }),
        };
        let mut events = vec![opened];
        if let Some(earlier) = &covered_by {
            events.push(ReviewEvent {
                identity: record.requester.clone(),
                action: "approved",
                detail: serde_json::json!({ "by_fingerprint_of": earlier }),
            });
        }
        self.store().insert_review(&record, &events).await?;
        tracing::info!(review = %record.id, requester = %record.requester, resource = %record.resource, rule = %record.rule, by_fingerprint_of = ?covered_by, "review opened");
        self.review_changed(&record.id);
        if covered_by.is_some() {
            // Nobody needs asking: tell the targets the outcome, not the request.
            self.announce_outcome(&record);
            return Ok(self.review_view(record));
        }
        let view = self.review_view(record);
        self.notifier().send(Event::Opened, &view);
        Ok(view)
    }

    /// Persists expiry if `r` is pending past its deadline; returns it as it stands.
    pub(crate) async fn expire_if_due(
        &self,
        r: ReviewRecord,
    ) -> Result<ReviewRecord, ServiceError> {
        let now = Utc::now();
        if r.status != ReviewStatus::Pending || now < r.expires_at {
            return Ok(r);
        }
        let changed = self
            .store()
            .change_review(&r.id, |current| {
                let mut change = ReviewChange::default();
                let expired = expire_if_due(current, now, &mut change);
                (change, expired)
            })
            .await?
            .ok_or_else(|| not_found(&r.id, r.grant.is_some()))?;
        if changed.value {
            tracing::info!(review = %r.id, "review expired");
            self.review_changed(&r.id);
            self.announce_outcome(&changed.review);
        }
        Ok(changed.review)
    }

    /// The review, or `None`. A pending review past its deadline is marked
    /// (and audited) `expired` first.
    pub async fn review(&self, id: &str) -> Result<Option<ReviewView>, ServiceError> {
        match self.store().review(id).await?.filter(|r| r.grant.is_none()) {
            Some(r) => Ok(Some(self.review_view(self.expire_if_due(r).await?))),
            None => Ok(None),
        }
    }

    /// The review as `who` may see it: its requester, anyone who may decide
    /// it, admins and auditors. Others get `Forbidden`.
    pub async fn review_as(
        &self,
        who: &Principal,
        id: &str,
    ) -> Result<Option<ReviewView>, ServiceError> {
        let Some(r) = self.store().review(id).await?.filter(|r| r.grant.is_none()) else {
            return Ok(None);
        };
        let allowed = self.is_party(who, &r).await? || self.require_auditor(who).is_ok();
        if !allowed {
            return Err(ServiceError::Forbidden(format!(
                "{} may not see review {id}",
                who.name()
            )));
        }
        Ok(Some(self.review_view(self.expire_if_due(r).await?)))
    }

    /// Approves (`approve`) or denies review `id` as `who`, the authenticated
    /// caller: never anyone a request names. Every attempt is audited.
    ///
    /// Errors: `Forbidden` for every segregation-of-duties or eligibility
    /// refusal (the requester, the bootstrap token, a service account, someone
    /// not named by the review, a second decision by the same approver);
    /// `Invalid` for a review that is already decided or expired;
    /// `Store(NotFound)` for an unknown id.
    pub async fn decide_review(
        &self,
        id: &str,
        who: &Principal,
        approve: bool,
        comment: Option<String>,
    ) -> Result<ReviewView, ServiceError> {
        self.decide_review_scoped(id, who, approve, comment, None)
            .await
    }

    /// [`ControlPlane::decide_review`], with the scope an approver chose:
    /// `Some(n)` lets the approval also cover the statement's shape for n
    /// minutes (1 up to the review's `max_approval_minutes`, else `Invalid`);
    /// `None` covers this execution only. Ignored for a denial.
    pub async fn decide_review_scoped(
        &self,
        id: &str,
        who: &Principal,
        approve: bool,
        comment: Option<String>,
        scope_minutes: Option<u32>,
    ) -> Result<ReviewView, ServiceError> {
        let r = self
            .decide_request(id, false, who, approve, comment, scope_minutes)
            .await?;
        Ok(self.review_view(r))
    }

    /// A decision on review or grant `id` (`grants` says which kind it must
    /// be; the other kind is "not found"), by the rules of [`judge`].
    pub(crate) async fn decide_request(
        &self,
        id: &str,
        grants: bool,
        who: &Principal,
        approve: bool,
        comment: Option<String>,
        scope_minutes: Option<u32>,
    ) -> Result<ReviewRecord, ServiceError> {
        let comment = comment.filter(|c| !c.trim().is_empty());
        check_len("comment", comment.as_deref().unwrap_or(""), MAX_TEXT)?;
        let verdict = if approve {
            Verdict::Approve
        } else {
            Verdict::Deny
        };
        let Some(before) = self.store().review(id).await? else {
            return Err(not_found(id, grants));
        };
        if before.grant.is_some() != grants {
            return Err(not_found(id, grants));
        }
        // Resource and approvers never change after a review opens, so the
        // binding check can run before the row lock is taken.
        let bound = match who {
            Principal::Identity { identity, .. } => self.bound_approver(identity, &before).await?,
            Principal::Bootstrap => false,
        };
        let now = Utc::now();
        let changed = self
            .store()
            .change_review(id, |r| {
                let ruling = judge(r, who, verdict, comment.as_deref(), now, bound);
                with_scope(r, who, ruling, scope_minutes)
            })
            .await?
            .ok_or_else(|| not_found(id, grants))?;
        let ruling = changed.value;
        let noun = changed.review.noun();
        if let Some(reason) = changed.rejected {
            // The database caught what `judge` should have: a bug, but no harm done.
            // Nothing changed: the store applies a decision whole or not at all.
            tracing::error!(id = %id, noun, by = who.name(), %reason, "database refused a decision");
            return Err(ServiceError::Forbidden(reason));
        }
        if ruling.changes_state {
            self.review_changed(id);
            self.announce_outcome(&changed.review);
        }
        if let Some(refusal) = ruling.refusal {
            tracing::info!(id = %id, noun, by = who.name(), attempted = verdict.as_str(), reason = refusal.reason(), "decision refused");
            return Err(refusal.into());
        }
        tracing::info!(id = %id, noun, by = who.name(), decision = verdict.as_str(), status = changed.review.status.as_str(), "decided");
        Ok(changed.review)
    }

    /// Audits a decision attempt that was refused before it reached
    /// [`ControlPlane::decide_review`] (for example a malformed request body).
    pub(crate) async fn audit_review_refusal(
        &self,
        id: &str,
        who: &Principal,
        approve: bool,
        reason: &str,
    ) -> Result<(), ServiceError> {
        let attempted = if approve { "approve" } else { "deny" };
        self.store()
            .change_review(id, |r| {
                let change = ReviewChange {
                    events: vec![ReviewEvent {
                        identity: who.name().to_owned(),
                        action: "refused",
                        detail: serde_json::json!({
                            "reason": reason,
                            "attempted": attempted,
                            "status": r.status.as_str(),
                        }),
                    }],
                    ..ReviewChange::default()
                };
                (change, ())
            })
            .await?
            .ok_or_else(|| not_found(id, false))?;
        Ok(())
    }

    /// Reviews `who` may decide now (pending, not their own, eligible, not yet
    /// decided by them), newest first; or with `mine`, the reviews `who`
    /// requested. At most 500.
    pub async fn list_reviews(
        &self,
        who: &Principal,
        mine: bool,
    ) -> Result<Vec<ReviewView>, ServiceError> {
        let found = self.list_requests(who, mine, false).await?;
        Ok(found.into_iter().map(|r| self.review_view(r)).collect())
    }

    /// Whether `who` is a party to review or grant `r`: its requester, or
    /// someone who may decide it (named, or through an approver binding).
    pub(crate) async fn is_party(
        &self,
        who: &Principal,
        r: &ReviewRecord,
    ) -> Result<bool, ServiceError> {
        Ok(match who {
            Principal::Identity { identity, .. } => {
                same_identity(&identity.email, &r.requester)
                    || eligible(&r.approvers, identity)
                    || self.bound_approver(identity, r).await?
            }
            Principal::Bootstrap => false,
        })
    }

    /// The reviews (`grants`: grants) `who` may decide now, or with `mine`
    /// the ones `who` requested, newest first, expired ones marked so. See
    /// [`ControlPlane::list_reviews`].
    pub(crate) async fn list_requests(
        &self,
        who: &Principal,
        mine: bool,
        grants: bool,
    ) -> Result<Vec<ReviewRecord>, ServiceError> {
        let found = if mine {
            self.store()
                .reviews_requested_by(grants, who.name(), LIST_LIMIT)
                .await?
        } else {
            let Principal::Identity { identity, .. } = who else {
                // The bootstrap token decides nothing.
                return Ok(Vec::new());
            };
            if identity.kind == IdentityKind::Service {
                return Ok(Vec::new());
            }
            let mut decidable = Vec::new();
            for r in self
                .store()
                .pending_reviews(grants, &identity.email, LIST_LIMIT)
                .await?
            {
                let open_to_them = !same_identity(&r.requester, &identity.email)
                    && !r
                        .decisions
                        .iter()
                        .any(|d| same_identity(&d.approver, &identity.email));
                if open_to_them
                    && (eligible(&r.approvers, identity)
                        || self.bound_approver(identity, &r).await?)
                {
                    decidable.push(r);
                }
            }
            decidable
        };
        let mut out = Vec::with_capacity(found.len());
        for r in found {
            let r = self.expire_if_due(r).await?;
            if mine || r.status == ReviewStatus::Pending {
                out.push(r);
            }
        }
        Ok(out)
    }
}

fn not_found(id: &str, grant: bool) -> ServiceError {
    ServiceError::Store(StoreError::NotFound {
        what: if grant { "grant" } else { "review" },
        key: id.to_owned(),
    })
}
