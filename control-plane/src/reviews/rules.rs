//! The pure rules of reviews: who may decide, what a decision does, and
//! what a new review must look like. No I/O: the service runs [`judge`] while
//! the store holds the review's row lock and applies what it returns.

use super::NewReview;
use crate::service::{Principal, ServiceError, validate_identity_name, validate_name};
use crate::store::identities::{Identity, IdentityKind};
use crate::store::reviews::{
    DecisionRecord, ReviewChange, ReviewEvent, ReviewRecord, ReviewStatus, Verdict,
};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// Most approvals a review can require.
pub const MAX_APPROVALS: u32 = 32;
/// Longest a review may stay open.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest statement a review holds (bytes).
const MAX_STATEMENT: usize = 1 << 20;
/// Longest message, rule or comment (bytes).
pub(crate) const MAX_TEXT: usize = 4096;
/// Longest an approval may cover a statement shape: a day, as policy allows.
const MAX_APPROVAL_MINUTES: u32 = 1440;
/// Most entries in `approvers` and `kinds`.
const MAX_LIST: usize = 64;

/// An entry of a review's approver list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Approver<'a> {
    Group(&'a str),
    User(&'a str),
}

fn parse_approver(s: &str) -> Option<Approver<'_>> {
    if let Some(g) = s.strip_prefix("group:") {
        Some(Approver::Group(g))
    } else {
        s.strip_prefix("user:").map(Approver::User)
    }
}

/// Whether `identity` is named by `approvers`, by group or as a user.
pub(crate) fn eligible(approvers: &[String], identity: &Identity) -> bool {
    approvers
        .iter()
        .filter_map(|a| parse_approver(a))
        .any(|a| match a {
            Approver::Group(g) => identity.groups.iter().any(|x| x == g),
            Approver::User(u) => u.eq_ignore_ascii_case(&identity.email),
        })
}

/// The `group:` entries of `approvers` (names only) that `identity` belongs to.
fn named_groups(approvers: &[String], identity: &Identity) -> Vec<String> {
    approvers
        .iter()
        .filter_map(|a| match parse_approver(a) {
            Some(Approver::Group(g)) if identity.groups.iter().any(|x| x == g) => {
                Some(g.to_owned())
            }
            _ => None,
        })
        .collect()
}

/// Whether each `group:` entry of `approvers` can be given its own approver
/// among `approvals`, an approver standing for one group they were in when
/// deciding (a matching found by augmenting paths: small sets, exact answer).
fn every_group_represented<'a>(
    approvers: &[String],
    approvals: impl Iterator<Item = &'a DecisionRecord>,
) -> bool {
    let groups: Vec<&str> = approvers
        .iter()
        .filter_map(|a| match parse_approver(a) {
            Some(Approver::Group(g)) => Some(g),
            _ => None,
        })
        .collect();
    let people: Vec<&DecisionRecord> = approvals.collect();
    // owner[g] = index of the approver standing for group g.
    let mut owner: Vec<Option<usize>> = vec![None; groups.len()];
    fn assign(
        p: usize,
        people: &[&DecisionRecord],
        groups: &[&str],
        owner: &mut [Option<usize>],
        seen: &mut [bool],
    ) -> bool {
        for (g, name) in groups.iter().enumerate() {
            if seen[g] || !people[p].groups.iter().any(|x| x == name) {
                continue;
            }
            seen[g] = true;
            let free = match owner[g] {
                None => true,
                Some(other) => assign(other, people, groups, owner, seen),
            };
            if free {
                owner[g] = Some(p);
                return true;
            }
        }
        false
    }
    for p in 0..people.len() {
        let mut seen = vec![false; groups.len()];
        assign(p, &people, &groups, &mut owner, &mut seen);
    }
    owner.iter().all(Option::is_some)
}

pub(crate) fn same_identity(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Why a decision was not taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Segregation of duties or eligibility: HTTP 403.
    Forbidden(String),
    /// The review is decided or expired: it takes no more decisions.
    Closed(String),
    /// The decision asks for something the review does not allow (a scope
    /// past the rule's cap): HTTP 400.
    Invalid(String),
}

impl Refusal {
    pub(super) fn reason(&self) -> &str {
        match self {
            Self::Forbidden(m) | Self::Closed(m) | Self::Invalid(m) => m,
        }
    }
}

impl From<Refusal> for ServiceError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Forbidden(m) => Self::Forbidden(m),
            Refusal::Closed(m) | Refusal::Invalid(m) => Self::Invalid(m),
        }
    }
}

/// What [`judge`] ruled, besides the change to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Ruling {
    pub(super) refusal: Option<Refusal>,
    /// Whether the review's state changes (a decision, or expiry).
    pub(super) changes_state: bool,
}

/// Expires a pending review whose time is up.
pub(super) fn expire_if_due(
    r: &ReviewRecord,
    now: DateTime<Utc>,
    change: &mut ReviewChange,
) -> bool {
    if r.status != ReviewStatus::Pending || now < r.expires_at {
        return false;
    }
    change.status = Some(ReviewStatus::Expired);
    change.events.push(ReviewEvent {
        identity: r.requester.clone(),
        action: "expired",
        detail: serde_json::json!({
            "expires_at": r.expires_at,
            "approvals": approvals(r),
            "approvals_required": r.approvals_required,
        }),
    });
    true
}

fn approvals(r: &ReviewRecord) -> usize {
    r.decisions
        .iter()
        .filter(|d| d.verdict == Verdict::Approve)
        .count()
}

/// The rule for one decision attempt by `who` on review `r` at `now`.
/// `bound_approver`: `who` holds an approver role binding that covers this
/// review (the caller checks; it only widens eligibility, and never past the
/// requester check above it). Pure: the caller applies the change under the
/// review's lock.
pub(super) fn judge(
    r: &ReviewRecord,
    who: &Principal,
    verdict: Verdict,
    comment: Option<&str>,
    now: DateTime<Utc>,
    bound_approver: bool,
) -> (ReviewChange, Ruling) {
    let mut change = ReviewChange::default();
    let expired = expire_if_due(r, now, &mut change);
    let status = change.status.unwrap_or(r.status);
    let id = &r.id;
    let noun = r.noun();
    let verb = verdict.as_str();
    let refusal = match who {
        Principal::Bootstrap => Some(Refusal::Forbidden(format!(
            "the bootstrap admin token is not a person and cannot {verb} {noun}s; \
             use your own access token"
        ))),
        Principal::Identity { identity, .. } => {
            if same_identity(&identity.email, &r.requester) {
                Some(Refusal::Forbidden(format!(
                    "segregation of duties: {} requested {noun} {id} and cannot {verb} it; \
                     another approver must decide",
                    identity.email
                )))
            } else if identity.kind == IdentityKind::Service {
                Some(Refusal::Forbidden(format!(
                    "{} is a service account; only people can {verb} {noun}s",
                    identity.email
                )))
            } else if !eligible(&r.approvers, identity) && !bound_approver {
                Some(Refusal::Forbidden(format!(
                    "{} may not decide {noun} {id}: it needs {}",
                    identity.email,
                    r.approvers.join(" or ")
                )))
            } else if let Some(d) = r
                .decisions
                .iter()
                .find(|d| same_identity(&d.approver, &identity.email))
            {
                Some(Refusal::Forbidden(format!(
                    "{} has already decided {noun} {id} ({}); each approver counts once",
                    identity.email,
                    d.verdict.as_str()
                )))
            } else if status != ReviewStatus::Pending {
                Some(Refusal::Closed(format!(
                    "{noun} {id} is {}; it takes no more decisions",
                    status.as_str()
                )))
            } else {
                None
            }
        }
    };
    if let Some(refusal) = refusal {
        change.events.push(ReviewEvent {
            identity: who.name().to_owned(),
            action: "refused",
            detail: serde_json::json!({
                "reason": refusal.reason(),
                "attempted": verb,
                "status": status.as_str(),
            }),
        });
        let ruling = Ruling {
            refusal: Some(refusal),
            changes_state: expired,
        };
        return (change, ruling);
    }
    let decision = DecisionRecord {
        approver: who.name().to_owned(),
        verdict,
        comment: comment.map(str::to_owned),
        at: now,
        scope_minutes: None,
        groups: match who {
            Principal::Identity { identity, .. } => named_groups(&r.approvers, identity),
            Principal::Bootstrap => Vec::new(),
        },
    };
    let count = approvals(r) + usize::from(verdict == Verdict::Approve);
    let required = usize::try_from(r.approvals_required).unwrap_or(usize::MAX);
    let represented = !r.one_from_each || {
        let approving = r
            .decisions
            .iter()
            .chain(std::iter::once(&decision))
            .filter(|d| d.verdict == Verdict::Approve);
        every_group_represented(&r.approvers, approving)
    };
    let next = match verdict {
        Verdict::Deny => ReviewStatus::Denied,
        Verdict::Approve if count >= required && represented => ReviewStatus::Approved,
        Verdict::Approve => ReviewStatus::Pending,
    };
    change.status = Some(next);
    change.decision = Some(decision);
    change.events.push(ReviewEvent {
        identity: who.name().to_owned(),
        action: match verdict {
            Verdict::Approve => "approved",
            Verdict::Deny => "denied",
        },
        detail: serde_json::json!({
            "comment": comment,
            "approvals": count,
            "approvals_required": r.approvals_required,
            "status": next.as_str(),
        }),
    });
    let ruling = Ruling {
        refusal: None,
        changes_state: true,
    };
    (change, ruling)
}

/// Until when the approved review `earlier` covers new statements of its
/// shape, under a rule that now allows at most `cap` minutes. Only approvals
/// decided by people count, and every one of them must have chosen a scope:
/// the shortest wins, so one approver's "once" keeps it to one execution. A
/// review approved through another's scope has no decisions and so covers
/// nothing itself: windows never chain. The caller checks that requester,
/// resource, rule and fingerprint match.
pub(super) fn covered_until(earlier: &ReviewRecord, cap: u32) -> Option<DateTime<Utc>> {
    if earlier.status != ReviewStatus::Approved {
        return None;
    }
    let mut minutes = cap;
    let mut approvals = 0;
    for d in earlier
        .decisions
        .iter()
        .filter(|d| d.verdict == Verdict::Approve)
    {
        minutes = minutes.min(d.scope_minutes?);
        approvals += 1;
    }
    if approvals == 0 || minutes == 0 {
        return None;
    }
    Some(earlier.decided_at? + chrono::Duration::minutes(i64::from(minutes)))
}

/// Gives an approval that [`judge`] let through the scope its approver chose:
/// `Some(n)` minutes for the statement's shape, within `1..=` the review's
/// cap, or `None` for this execution only. A scope outside the cap refuses
/// the whole decision (audited, nothing else changes). Refusals and denials
/// pass through untouched: the caller rejects a scope on a denial earlier.
pub(super) fn with_scope(
    r: &ReviewRecord,
    who: &Principal,
    (mut change, ruling): (ReviewChange, Ruling),
    scope_minutes: Option<u32>,
) -> (ReviewChange, Ruling) {
    let Some(minutes) = scope_minutes else {
        return (change, ruling);
    };
    let Some(decision) = change.decision.as_mut() else {
        return (change, ruling);
    };
    if decision.verdict != Verdict::Approve {
        return (change, ruling);
    }
    if (1..=r.max_approval_minutes).contains(&minutes) {
        decision.scope_minutes = Some(minutes);
        for e in &mut change.events {
            if let Some(detail) = e.detail.as_object_mut() {
                detail.insert("scope".into(), "fingerprint".into());
                detail.insert("scope_minutes".into(), minutes.into());
            }
        }
        return (change, ruling);
    }
    let reason = if r.max_approval_minutes == 0 {
        format!(
            "review {}'s rule allows approving this execution only (scope \"once\")",
            r.id
        )
    } else {
        format!(
            "scope \"fingerprint\" needs minutes between 1 and {} for review {}, not {minutes}",
            r.max_approval_minutes, r.id
        )
    };
    let refused = ReviewChange {
        events: vec![ReviewEvent {
            identity: who.name().to_owned(),
            action: "refused",
            detail: serde_json::json!({
                "reason": reason,
                "attempted": "approve",
                "status": r.status.as_str(),
            }),
        }],
        ..ReviewChange::default()
    };
    let ruling = Ruling {
        refusal: Some(Refusal::Invalid(reason)),
        changes_state: false,
    };
    (refused, ruling)
}

pub(crate) fn check_len(what: &str, s: &str, max: usize) -> Result<(), ServiceError> {
    if s.len() > max {
        return Err(ServiceError::Invalid(format!(
            "{what} is longer than {max} bytes"
        )));
    }
    Ok(())
}

/// Checks a new review and returns its approver list with the default filled in.
pub(super) fn validate(r: &NewReview, default_group: &str) -> Result<Vec<String>, ServiceError> {
    validate_identity_name(&r.requester)?;
    validate_name("resource", &r.resource)?;
    if r.session_id.is_empty() {
        return Err(ServiceError::Invalid("a review needs a session id".into()));
    }
    check_len("session id", &r.session_id, 255)?;
    if r.statement.is_empty() {
        return Err(ServiceError::Invalid("a review needs a statement".into()));
    }
    check_len("statement", &r.statement, MAX_STATEMENT)?;
    check_len("rule", &r.rule, MAX_TEXT)?;
    check_len("message", r.message.as_deref().unwrap_or(""), MAX_TEXT)?;
    if r.kinds.len() > MAX_LIST {
        return Err(ServiceError::Invalid(format!(
            "kinds hold at most {MAX_LIST} entries"
        )));
    }
    for k in &r.kinds {
        check_len("statement kind", k, 64)?;
    }
    if r.timeout.is_zero() || r.timeout > MAX_TIMEOUT {
        return Err(ServiceError::Invalid(format!(
            "a review's timeout must be between 1s and {}s",
            MAX_TIMEOUT.as_secs()
        )));
    }
    if r.max_approval_minutes > MAX_APPROVAL_MINUTES {
        return Err(ServiceError::Invalid(format!(
            "max_approval_minutes is at most {MAX_APPROVAL_MINUTES}, not {}",
            r.max_approval_minutes
        )));
    }
    validate_approvers(
        &r.approvers,
        r.approvals_required,
        &r.requester,
        default_group,
    )
}

/// Checks who may decide a new review or grant, and returns the approver
/// list with the default group filled in when it names none.
pub(crate) fn validate_approvers(
    named: &[String],
    approvals_required: u32,
    requester: &str,
    default_group: &str,
) -> Result<Vec<String>, ServiceError> {
    if named.len() > MAX_LIST {
        return Err(ServiceError::Invalid(format!(
            "approvers hold at most {MAX_LIST} entries"
        )));
    }
    if approvals_required == 0 || approvals_required > MAX_APPROVALS {
        return Err(ServiceError::Invalid(format!(
            "approval needs 1..={MAX_APPROVALS} approvers, not {approvals_required}"
        )));
    }
    let mut approvers = Vec::with_capacity(named.len().max(1));
    for a in named {
        match parse_approver(a) {
            Some(Approver::Group(g)) => validate_name("group", g)?,
            Some(Approver::User(u)) => validate_identity_name(u)?,
            None => {
                return Err(ServiceError::Invalid(format!(
                    "approver {a:?} must be `group:NAME` or `user:EMAIL`"
                )));
            }
        }
        if !approvers.contains(a) {
            approvers.push(a.clone());
        }
    }
    if approvers.is_empty() {
        validate_name("approver group", default_group)?;
        approvers.push(format!("group:{default_group}"));
    }
    // With only named users, k of them other than the requester must exist,
    // or the statement would wait for nothing but its timeout.
    if approvers
        .iter()
        .all(|a| matches!(parse_approver(a), Some(Approver::User(_))))
    {
        let mut others: Vec<String> = approvers
            .iter()
            .filter_map(|a| match parse_approver(a) {
                Some(Approver::User(u)) if !same_identity(u, requester) => {
                    Some(u.to_ascii_lowercase())
                }
                _ => None,
            })
            .collect();
        others.sort();
        others.dedup();
        if others.len() < usize::try_from(approvals_required).unwrap_or(usize::MAX) {
            return Err(ServiceError::Invalid(format!(
                "this needs {approvals_required} approvals but names only {} approvers other than the requester",
                others.len()
            )));
        }
    }
    Ok(approvers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::Claims;

    fn person(email: &str, groups: &[&str]) -> Principal {
        let identity = Identity {
            id: format!("id-{email}"),
            email: email.to_owned(),
            kind: IdentityKind::User,
            display_name: None,
            disabled: false,
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            created_at: Utc::now(),
        };
        let claims = Claims {
            sub: email.to_owned(),
            uid: identity.id.clone(),
            groups: identity.groups.clone(),
            jti: "t".to_owned(),
            iat: 0,
            exp: 0,
            iss: crate::tokens::ISSUER.to_owned(),
        };
        Principal::Identity {
            identity: Box::new(identity),
            claims: Box::new(claims),
            bound_roles: Vec::new(),
        }
    }

    fn review(k: u32, approvers: &[&str]) -> ReviewRecord {
        let now = Utc::now();
        ReviewRecord {
            id: "r1".into(),
            session_id: "s1".into(),
            requester: "alice@example.com".into(),
            resource: "pg".into(),
            statement: "DELETE FROM t".into(),
            kinds: vec!["delete".into()],
            rule: "deletes".into(),
            message: None,
            status: ReviewStatus::Pending,
            approvals_required: k,
            approvers: approvers.iter().map(|a| (*a).to_owned()).collect(),
            decisions: Vec::new(),
            created_at: now,
            expires_at: now + chrono::Duration::minutes(5),
            decided_at: None,
            fingerprint: None,
            max_approval_minutes: 10,
            one_from_each: false,
            grant: None,
        }
    }

    #[test]
    fn one_from_each_needs_a_distinct_approver_per_group() {
        let mut r = review(2, &["group:dba", "group:sre"]);
        r.one_from_each = true;
        let now = Utc::now();
        let both = person("bob@example.com", &["dba", "sre"]);
        let dba = person("carol@example.com", &["dba"]);
        let sre = person("dave@example.com", &["sre"]);
        // Bob is in both groups but stands for only one of them.
        let (change, _) = judge(&r, &both, Verdict::Approve, None, now, false);
        assert_eq!(change.status, Some(ReviewStatus::Pending));
        r.decisions.push(change.decision.unwrap());
        // Another DBA makes k = 2 when Bob stands for sre: approved.
        let (change, _) = judge(&r, &dba, Verdict::Approve, None, now, false);
        assert_eq!(change.status, Some(ReviewStatus::Approved));
        // Two DBAs alone are not enough.
        let mut only_dba = review(2, &["group:dba", "group:sre"]);
        only_dba.one_from_each = true;
        let (change, _) = judge(&only_dba, &dba, Verdict::Approve, None, now, false);
        only_dba.decisions.push(change.decision.unwrap());
        let other_dba = person("erin@example.com", &["dba"]);
        let (change, _) = judge(&only_dba, &other_dba, Verdict::Approve, None, now, false);
        assert_eq!(change.status, Some(ReviewStatus::Pending));
        only_dba.decisions.push(change.decision.unwrap());
        let (change, _) = judge(&only_dba, &sre, Verdict::Approve, None, now, false);
        assert_eq!(change.status, Some(ReviewStatus::Approved));
    }

    #[test]
    fn a_scope_must_fit_the_cap_and_windows_never_chain() {
        let r = review(2, &["group:dba"]);
        let bob = person("bob@example.com", &["dba"]);
        let (change, ruling) = with_scope(
            &r,
            &bob,
            judge(&r, &bob, Verdict::Approve, None, Utc::now(), false),
            Some(11),
        );
        assert!(matches!(ruling.refusal, Some(Refusal::Invalid(_))));
        assert!(change.decision.is_none() && change.status.is_none());

        let (change, ruling) = with_scope(
            &r,
            &bob,
            judge(&r, &bob, Verdict::Approve, None, Utc::now(), false),
            Some(10),
        );
        assert!(ruling.refusal.is_none());
        let first = change.decision.unwrap();
        assert_eq!(first.scope_minutes, Some(10));

        // Approved by two: the shortest scope wins; one "once" means no window.
        let decided = Utc::now();
        let mut approved = ReviewRecord {
            status: ReviewStatus::Approved,
            decided_at: Some(decided),
            decisions: vec![
                first.clone(),
                DecisionRecord {
                    approver: "carol@example.com".into(),
                    scope_minutes: Some(3),
                    ..first.clone()
                },
            ],
            ..r.clone()
        };
        assert_eq!(
            covered_until(&approved, 10),
            Some(decided + chrono::Duration::minutes(3))
        );
        assert_eq!(
            covered_until(&approved, 2),
            Some(decided + chrono::Duration::minutes(2))
        );
        assert_eq!(covered_until(&approved, 0), None);
        if let Some(d) = approved.decisions.get_mut(1) {
            d.scope_minutes = None;
        }
        assert_eq!(covered_until(&approved, 10), None);
        // Approved through another review's window: no decisions, no window.
        approved.decisions.clear();
        assert_eq!(covered_until(&approved, 10), None);
    }

    fn forbidden(ruling: &Ruling) -> bool {
        matches!(ruling.refusal, Some(Refusal::Forbidden(_)))
    }

    #[test]
    fn the_requester_never_decides_their_own_review() {
        let r = review(1, &["group:dba", "user:alice@example.com"]);
        for who in [
            person("alice@example.com", &["dba"]),
            person("ALICE@example.com", &["dba", "countersign-admins"]),
        ] {
            for verdict in [Verdict::Approve, Verdict::Deny] {
                let (change, ruling) = judge(&r, &who, verdict, None, Utc::now(), false);
                assert!(forbidden(&ruling), "{ruling:?}");
                assert_eq!(change.decision, None);
                assert_eq!(change.status, None);
                assert_eq!(change.events.len(), 1);
                assert_eq!(change.events[0].action, "refused");
            }
        }
        let (_, ruling) = judge(
            &r,
            &Principal::Bootstrap,
            Verdict::Approve,
            None,
            Utc::now(),
            false,
        );
        assert!(forbidden(&ruling));
    }

    #[test]
    fn an_approver_binding_never_lets_the_requester_decide() {
        let r = review(1, &["group:countersign-approvers"]);
        let alice = person("alice@example.com", &[]);
        let (_, ruling) = judge(&r, &alice, Verdict::Approve, None, Utc::now(), true);
        assert!(forbidden(&ruling), "{ruling:?}");
        let carol = person("carol@example.com", &[]);
        let (_, ruling) = judge(&r, &carol, Verdict::Approve, None, Utc::now(), false);
        assert!(forbidden(&ruling), "{ruling:?}");
        let (change, ruling) = judge(&r, &carol, Verdict::Approve, None, Utc::now(), true);
        assert_eq!(ruling.refusal, None);
        assert_eq!(change.status, Some(ReviewStatus::Approved));
    }

    #[test]
    fn k_distinct_approvals_approve_and_one_deny_ends_it() {
        let mut r = review(2, &["group:dba"]);
        let bob = person("bob@example.com", &["dba"]);
        let (change, ruling) = judge(&r, &bob, Verdict::Approve, Some("ok"), Utc::now(), false);
        assert_eq!(ruling.refusal, None);
        assert_eq!(change.status, Some(ReviewStatus::Pending));
        r.decisions.push(change.decision.unwrap());
        let (_, again) = judge(&r, &bob, Verdict::Approve, None, Utc::now(), false);
        assert!(forbidden(&again), "a second approval by bob must not count");
        let carol = person("carol@example.com", &["dba"]);
        let (change, _) = judge(&r, &carol, Verdict::Approve, None, Utc::now(), false);
        assert_eq!(change.status, Some(ReviewStatus::Approved));
        let (change, _) = judge(&r, &carol, Verdict::Deny, None, Utc::now(), false);
        assert_eq!(change.status, Some(ReviewStatus::Denied));
        let (_, outsider) = judge(
            &r,
            &person("eve@example.com", &["dev"]),
            Verdict::Approve,
            None,
            Utc::now(),
            false,
        );
        assert!(forbidden(&outsider));
    }

    #[test]
    fn late_and_closed_reviews_take_no_decisions() {
        let r = review(1, &["group:dba"]);
        let bob = person("bob@example.com", &["dba"]);
        let late = r.expires_at + chrono::Duration::seconds(1);
        let (change, ruling) = judge(&r, &bob, Verdict::Approve, None, late, false);
        assert!(matches!(ruling.refusal, Some(Refusal::Closed(_))));
        assert!(ruling.changes_state);
        assert_eq!(change.status, Some(ReviewStatus::Expired));
        assert_eq!(change.decision, None);
        let actions: Vec<_> = change.events.iter().map(|e| e.action).collect();
        assert_eq!(actions, ["expired", "refused"]);

        let denied = ReviewRecord {
            status: ReviewStatus::Denied,
            ..r
        };
        let (_, ruling) = judge(&denied, &bob, Verdict::Approve, None, Utc::now(), false);
        assert!(matches!(ruling.refusal, Some(Refusal::Closed(_))));
    }

    #[test]
    fn new_reviews_are_checked() {
        let base = NewReview {
            session_id: "s".into(),
            requester: "alice@example.com".into(),
            resource: "pg".into(),
            statement: "DELETE FROM t".into(),
            kinds: vec![],
            rule: "r".into(),
            message: None,
            approvals_required: 1,
            approvers: vec![],
            timeout: Duration::from_secs(60),
            max_approval_minutes: 0,
        };
        assert_eq!(
            validate(&base, "countersign-approvers").unwrap(),
            ["group:countersign-approvers"]
        );
        let only_self = NewReview {
            approvers: vec!["user:alice@example.com".into()],
            ..base.clone()
        };
        assert!(validate(&only_self, "x").is_err());
        let bad = NewReview {
            approvers: vec!["dba".into()],
            ..base.clone()
        };
        assert!(validate(&bad, "x").is_err());
        let zero = NewReview {
            approvals_required: 0,
            ..base
        };
        assert!(validate(&zero, "x").is_err());
    }
}
