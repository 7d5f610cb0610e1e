//! Grants: time-boxed access to one resource at one access level, requested
//! by one person and approved by others.
//!
//! A grant is a request for approval like a statement review, and is stored
//! and decided the same way (see [`crate::reviews`]): the same pure rule
//! decides who may approve, under the request's row lock, and the database's
//! backstops (one decision per approver, none by the requester) cover grants
//! too. So the segregation-of-duties invariant is the same: the requester
//! never counts as an approver, admins included, whatever groups they are in.
//!
//! What a request may ask for comes from the active policy: the first
//! `[[grant]]` rule that allows the level on the resource caps the duration
//! and sets k (approvals), who may approve, and whether each named approver
//! group must be represented (`one_from_each`). The requester needs a
//! `requester` role binding covering the resource and its environment. A
//! grant is active from its final approval for its duration; it ends by
//! itself, or when revoked (by its requester, an admin, or anyone who may
//! approve it). Gateways hear of revocations through `WatchConfig` and end
//! the grant's sessions.
//!
//! A session is let in ([`ControlPlane::session_access`]) with an active
//! grant, or with a standing `[[access]]` allowance of the active policy;
//! without either, it is refused. A grant wins over an allowance.
//!
//! Not guaranteed: grants are checked when a session opens and revocations
//! reach gateways within the config poll interval (500 ms by default) or at
//! once through Redis; a gateway cut off from every control plane keeps
//! enforcing what it last heard, including each grant's end time.

use crate::bindings::Role;
use crate::notify::{Notice, escape, one_line};
use crate::reviews::{DecisionView, MAX_TEXT, check_len, same_identity, validate_approvers};
use crate::service::{ControlPlane, Principal, ServiceError, validate_name};
use crate::store::StoreError;
use crate::store::resources::Resource;
use crate::store::reviews::{GrantTerms, ReviewChange, ReviewEvent, ReviewRecord, ReviewStatus};
use chrono::{DateTime, Utc};
use countersign_policy::Policy;
use std::sync::Arc;
use std::time::Duration;

/// Most grants one list returns.
const LIST_LIMIT: u64 = 500;
/// Longest any grant rule may allow; also how far back active grants are looked for.
const MAX_GRANT: Duration = Duration::from_secs(30 * 24 * 3600);
/// Longest ticket reference.
const MAX_TICKET: usize = 200;

/// What a requester asks for.
#[derive(Clone, Debug, serde::Deserialize, utoipa::ToSchema)]
pub struct GrantRequest {
    pub resource: String,
    /// The access level, e.g. `read-only` or `read-write`.
    pub level: String,
    /// How long the grant should last once approved, in seconds.
    pub duration_secs: u64,
    /// Why access is needed; required.
    pub reason: String,
    pub ticket: Option<String>,
}

/// A grant as the API shows it.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct GrantView {
    pub id: String,
    pub requester: String,
    pub resource: String,
    pub level: String,
    pub duration_secs: u64,
    pub reason: String,
    pub ticket: Option<String>,
    /// The `[[grant]]` policy rule that set its terms.
    pub rule: String,
    /// "pending", "active", "denied", "expired" (no decision in time),
    /// "ended" (its time ran out) or "revoked".
    pub status: String,
    pub approvals_required: u32,
    /// Who may decide: `group:NAME` or `user:EMAIL`.
    pub approvers: Vec<String>,
    /// Each named approver group must be represented by a different approver.
    pub one_from_each: bool,
    /// Oldest first.
    pub decisions: Vec<DecisionView>,
    pub created_at: DateTime<Utc>,
    /// Until when the request may be decided.
    pub decide_by: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    /// For an approved grant: when its access ends.
    pub active_until: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<String>,
    /// Console link: "{public_url}/grants/{id}"
    pub url: String,
}

/// Why a session may connect, and at which level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionAccess {
    pub level: String,
    pub basis: AccessBasis,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessBasis {
    /// An approved grant, active until the given time.
    Grant { id: String, until: DateTime<Utc> },
    /// A standing `[[access]]` allowance of the active policy, by name.
    Standing { rule: String },
}

/// The status a grant shows at `now`.
fn grant_status(r: &ReviewRecord, now: DateTime<Utc>) -> &'static str {
    let revoked = r.grant.as_ref().is_some_and(|g| g.revoked_at.is_some());
    match r.status {
        ReviewStatus::Approved if revoked => "revoked",
        ReviewStatus::Approved if r.grant_active_at(now) => "active",
        ReviewStatus::Approved => "ended",
        other => other.as_str(),
    }
}

impl ControlPlane {
    /// The active policy, parsed (once per version on this replica); `None`
    /// before any policy is applied.
    pub(crate) async fn active_policy(&self) -> Result<Option<(u64, Arc<Policy>)>, ServiceError> {
        let Some(latest) = self.store().latest_policy().await? else {
            return Ok(None);
        };
        let cache = self.policy_cache();
        if let Ok(guard) = cache.lock()
            && let Some((version, policy)) = guard.as_ref()
            && *version == latest.version
        {
            return Ok(Some((*version, policy.clone())));
        }
        let policy = Arc::new(Policy::parse(&latest.text).map_err(|e| {
            // Stored policies were validated when applied; this means a change
            // to the language broke an old file.
            ServiceError::InvalidPolicy(format!(
                "the active policy (version {}) no longer parses: {e}",
                latest.version
            ))
        })?);
        if let Ok(mut guard) = cache.lock() {
            *guard = Some((latest.version, policy.clone()));
        }
        Ok(Some((latest.version, policy)))
    }

    pub(crate) fn grant_view(&self, r: ReviewRecord) -> GrantView {
        let now = Utc::now();
        let status = grant_status(&r, now).to_owned();
        let active_until = r.grant_until();
        let url = format!(
            "{}/grants/{}",
            self.settings().public_url.trim_end_matches('/'),
            r.id
        );
        let terms = r.grant.unwrap_or_else(|| GrantTerms {
            access_level: String::new(),
            duration: Duration::ZERO,
            reason: String::new(),
            ticket: None,
            revoked_at: None,
            revoked_by: None,
        });
        GrantView {
            id: r.id,
            requester: r.requester,
            resource: r.resource,
            level: terms.access_level,
            duration_secs: terms.duration.as_secs(),
            reason: terms.reason,
            ticket: terms.ticket,
            rule: r.rule,
            status,
            approvals_required: r.approvals_required,
            approvers: r.approvers,
            one_from_each: r.one_from_each,
            decisions: r
                .decisions
                .into_iter()
                .map(|d| DecisionView {
                    approver: d.approver,
                    decision: d.verdict.as_str().to_owned(),
                    comment: d.comment,
                    at: d.at,
                    scope_minutes: None,
                })
                .collect(),
            created_at: r.created_at,
            decide_by: r.expires_at,
            decided_at: r.decided_at,
            active_until,
            revoked_at: terms.revoked_at,
            revoked_by: terms.revoked_by,
            url,
        }
    }

    /// Sends the notification for `r`'s current state (requested, decided,
    /// expired or revoked).
    pub(crate) fn announce_grant(&self, r: &ReviewRecord) {
        let view = self.grant_view(r.clone());
        let event = match view.status.as_str() {
            "pending" if r.decisions.is_empty() => "grant.requested",
            "active" | "ended" => "grant.approved",
            "denied" => "grant.denied",
            "expired" => "grant.expired",
            "revoked" => "grant.revoked",
            _ => return,
        };
        let what = match event {
            "grant.requested" => format!("Grant requested by {}", escape(&view.requester)),
            "grant.revoked" => format!(
                "Grant of {} revoked by {}",
                escape(&view.requester),
                escape(view.revoked_by.as_deref().unwrap_or("?"))
            ),
            _ => format!("Grant {} for {}", &event[6..], escape(&view.requester)),
        };
        let text = format!(
            "{what}: {} on {} for {} min (rule {}): {} <{}|open in console>",
            escape(&view.level),
            escape(&view.resource),
            view.duration_secs.div_ceil(60),
            escape(&view.rule),
            escape(&one_line(&view.reason, 200)),
            view.url
        );
        self.notifier()
            .send_notice(Notice::new(event, "grant", &view.id, &view, text));
    }

    /// Opens a grant request for `who` and audits it (`grant:<id>`, seq 0).
    ///
    /// Errors: `Forbidden` without a `requester` binding covering the
    /// resource, or for the bootstrap token; `Invalid` for an unknown
    /// resource, a level no `[[grant]]` rule allows there, a duration past
    /// the rule's cap, or a missing reason.
    pub async fn request_grant(
        &self,
        who: &Principal,
        req: GrantRequest,
    ) -> Result<GrantView, ServiceError> {
        let Principal::Identity { identity, .. } = who else {
            return Err(ServiceError::Forbidden(
                "the bootstrap admin token cannot request grants; use your own access token".into(),
            ));
        };
        validate_name("resource", &req.resource)?;
        validate_name("access level", &req.level)?;
        let reason = req.reason.trim().to_owned();
        if reason.is_empty() {
            return Err(ServiceError::Invalid(
                "a grant request needs a reason".into(),
            ));
        }
        check_len("reason", &reason, MAX_TEXT)?;
        let ticket = req
            .ticket
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty());
        check_len("ticket", ticket.as_deref().unwrap_or(""), MAX_TICKET)?;
        let resource = self
            .store()
            .resource_by_name(&req.resource)
            .await?
            .ok_or_else(|| {
                ServiceError::Invalid(format!("no resource named {:?}", req.resource))
            })?;
        if !self
            .identity_has_role(
                identity,
                Role::Requester,
                Some(&resource.name),
                Some(&resource.environment),
            )
            .await?
        {
            return Err(ServiceError::Forbidden(format!(
                "{} has no requester binding for {} (environment {:?}); an admin can add one",
                identity.email, resource.name, resource.environment
            )));
        }
        let policy = self.active_policy().await?.map(|(_, p)| p);
        let Some(rule) = policy
            .as_deref()
            .and_then(|p| p.grant_rule(&resource.name, &resource.environment, &req.level))
        else {
            return Err(ServiceError::Invalid(format!(
                "no [[grant]] rule of the active policy allows requesting {:?} on {}",
                req.level, resource.name
            )));
        };
        let duration = Duration::from_secs(req.duration_secs);
        if duration.is_zero() || duration > rule.max_duration || duration > MAX_GRANT {
            return Err(ServiceError::Invalid(format!(
                "rule {:?} allows grants of 1s up to {}, not {}",
                rule.name,
                humantime::format_duration(rule.max_duration),
                humantime::format_duration(duration)
            )));
        }
        let approvers = validate_approvers(
            &rule.approvers,
            rule.approvals,
            &identity.email,
            &self.settings().approver_group,
        )?;
        let created_at = Utc::now();
        let decide_within = chrono::Duration::from_std(rule.decide_within)
            .map_err(|_| ServiceError::Invalid("decide_within is too long".into()))?;
        let record = ReviewRecord {
            id: uuid::Uuid::now_v7().to_string(),
            session_id: String::new(),
            requester: identity.email.clone(),
            resource: resource.name.clone(),
            statement: String::new(),
            kinds: Vec::new(),
            rule: rule.name.clone(),
            message: None,
            status: ReviewStatus::Pending,
            approvals_required: rule.approvals,
            approvers,
            decisions: Vec::new(),
            created_at,
            expires_at: created_at + decide_within,
            decided_at: None,
            fingerprint: None,
            max_approval_minutes: 0,
            one_from_each: rule.one_from_each,
            grant: Some(GrantTerms {
                access_level: req.level.clone(),
                duration,
                reason: reason.clone(),
                ticket: ticket.clone(),
                revoked_at: None,
                revoked_by: None,
            }),
        };
        let requested = ReviewEvent {
            identity: identity.email.clone(),
            action: "requested",
            detail: serde_json::json!({
                "level": req.level,
                "duration_secs": duration.as_secs(),
                "reason": reason,
                "ticket": ticket,
                "rule": record.rule,
                "approvals_required": record.approvals_required,
                "approvers": record.approvers,
                "one_from_each": record.one_from_each,
                "decide_by": record.expires_at,
            }),
        };
        self.store().insert_review(&record, &[requested]).await?;
        tracing::info!(grant = %record.id, requester = %record.requester, resource = %record.resource, level = %req.level, "grant requested");
        self.review_changed(&record.id);
        self.announce_grant(&record);
        Ok(self.grant_view(record))
    }

    /// Grant `id` as `who` may see it: its requester, anyone who may decide
    /// it, admins and auditors. `Ok(None)` if there is no such grant.
    pub async fn grant_as(
        &self,
        who: &Principal,
        id: &str,
    ) -> Result<Option<GrantView>, ServiceError> {
        let Some(r) = self.store().review(id).await?.filter(|r| r.grant.is_some()) else {
            return Ok(None);
        };
        if !(self.is_party(who, &r).await? || self.require_auditor(who).is_ok()) {
            return Err(ServiceError::Forbidden(format!(
                "{} may not see grant {id}",
                who.name()
            )));
        }
        Ok(Some(self.grant_view(self.expire_if_due(r).await?)))
    }

    /// Approves or denies grant `id` as `who`. The same rules and errors as
    /// [`ControlPlane::decide_review`]; every attempt is audited.
    pub async fn decide_grant(
        &self,
        id: &str,
        who: &Principal,
        approve: bool,
        comment: Option<String>,
    ) -> Result<GrantView, ServiceError> {
        let r = self
            .decide_request(id, true, who, approve, comment, None)
            .await?;
        Ok(self.grant_view(r))
    }

    /// Revokes an approved grant: its sessions end within the config poll
    /// interval. Its requester, an admin, or anyone who may approve it may
    /// revoke; others get `Forbidden` (audited). Revoking a grant that is not
    /// active is `Invalid`.
    pub async fn revoke_grant(
        &self,
        id: &str,
        who: &Principal,
        reason: Option<String>,
    ) -> Result<GrantView, ServiceError> {
        let reason = reason.filter(|c| !c.trim().is_empty());
        check_len("reason", reason.as_deref().unwrap_or(""), MAX_TEXT)?;
        let Some(before) = self.store().review(id).await?.filter(|r| r.grant.is_some()) else {
            return Err(not_found(id));
        };
        let allowed = self.is_party(who, &before).await? || self.require_admin(who).is_ok();
        let now = Utc::now();
        let by = who.name().to_owned();
        let changed = self
            .store()
            .change_review(id, |r| {
                let status = grant_status(r, now);
                let refusal = if !allowed {
                    Some(ServiceError::Forbidden(format!(
                        "{by} may not revoke grant {id}: only its requester, its approvers and admins can"
                    )))
                } else if status != "active" {
                    Some(ServiceError::Invalid(format!(
                        "grant {id} is {status}; only an active grant can be revoked"
                    )))
                } else {
                    None
                };
                let (action, detail) = match &refusal {
                    Some(e) => (
                        "refused",
                        serde_json::json!({"attempted": "revoke", "reason": e.to_string(), "status": status}),
                    ),
                    None => ("revoked", serde_json::json!({"reason": reason})),
                };
                let change = ReviewChange {
                    revoke: refusal.is_none().then(|| (now, by.clone())),
                    events: vec![ReviewEvent {
                        identity: by.clone(),
                        action,
                        detail,
                    }],
                    ..ReviewChange::default()
                };
                (change, refusal)
            })
            .await?
            .ok_or_else(|| not_found(id))?;
        if let Some(refusal) = changed.value {
            tracing::info!(grant = %id, by = who.name(), reason = %refusal, "grant revocation refused");
            return Err(refusal);
        }
        tracing::info!(grant = %id, by = who.name(), "grant revoked");
        self.review_changed(id);
        self.config_changed();
        self.announce_grant(&changed.review);
        Ok(self.grant_view(changed.review))
    }

    /// Grants `who` may decide now (pending, not their own, eligible, not yet
    /// decided by them), newest first; or with `mine`, the grants `who`
    /// requested. At most 500.
    pub async fn list_grants(
        &self,
        who: &Principal,
        mine: bool,
    ) -> Result<Vec<GrantView>, ServiceError> {
        let found = self.list_requests(who, mine, true).await?;
        Ok(found.into_iter().map(|r| self.grant_view(r)).collect())
    }

    /// Why `email` (with `groups`) may open a session on `resource`: its
    /// newest active grant there, else the first standing allowance of the
    /// active policy. `Forbidden`, saying how to get access, otherwise.
    pub async fn session_access(
        &self,
        email: &str,
        groups: &[String],
        resource: &Resource,
    ) -> Result<SessionAccess, ServiceError> {
        let now = Utc::now();
        let since = now - chrono::Duration::from_std(MAX_GRANT).unwrap_or_default();
        let grants = self
            .store()
            .approved_grants(Some(email), Some(&resource.name), false, since, LIST_LIMIT)
            .await?;
        if let Some(g) = grants
            .into_iter()
            .find(|g| same_identity(&g.requester, email) && g.grant_active_at(now))
            && let (Some(terms), Some(until)) = (g.grant.as_ref(), g.grant_until())
        {
            return Ok(SessionAccess {
                level: terms.access_level.clone(),
                basis: AccessBasis::Grant {
                    id: g.id.clone(),
                    until,
                },
            });
        }
        if let Some((_, policy)) = self.active_policy().await?
            && let Some(rule) =
                policy.standing_access(email, groups, &resource.name, &resource.environment)
        {
            return Ok(SessionAccess {
                level: rule.level.clone(),
                basis: AccessBasis::Standing {
                    rule: rule.name.clone(),
                },
            });
        }
        Err(ServiceError::Forbidden(format!(
            "{email} has no access to {}: request it with `countersign grant request {} --level LEVEL --for DURATION --reason \"...\"`",
            resource.name, resource.name
        )))
    }

    /// Ids of revoked grants whose time has not run out yet: gateways end
    /// their sessions.
    pub async fn live_revoked_grant_ids(&self) -> Result<Vec<String>, ServiceError> {
        let now = Utc::now();
        let since = now - chrono::Duration::from_std(MAX_GRANT).unwrap_or_default();
        let grants = self
            .store()
            .approved_grants(None, None, true, since, 10_000)
            .await?;
        Ok(grants
            .into_iter()
            .filter(|g| {
                g.grant.as_ref().is_some_and(|t| t.revoked_at.is_some())
                    && g.grant_until().is_some_and(|until| now < until)
            })
            .map(|g| g.id)
            .collect())
    }
}

fn not_found(id: &str) -> ServiceError {
    ServiceError::Store(StoreError::NotFound {
        what: "grant",
        key: id.to_owned(),
    })
}
