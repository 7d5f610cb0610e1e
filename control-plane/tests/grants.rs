//! Grants, each scenario on both PostgreSQL and SQLite: what a request may ask
//! for, one approval from each named group, segregation of duties, expiry of
//! an undecided request, a grant's end, revocation, and the session access
//! each state gives.

#![cfg(test)]

#[path = "support/backends.rs"]
mod backends;

use countersign_common::Secret;
use countersign_control_plane::grants::{AccessBasis, GrantRequest, GrantView};
use countersign_control_plane::service::Principal;
use countersign_control_plane::store::audit::AuditFilter;
use countersign_control_plane::store::identities::IdentityKind;
use countersign_control_plane::store::resources::{Resource, ResourceSpec};
use countersign_control_plane::{ControlPlane, ServiceError, Settings};
use std::time::Duration;

use backends::Backend;

const POLICY: &str = r#"
[[access]]
name = "eng-staging"
members = ["group:eng"]
level = "read-write"
environments = ["staging"]

[[binding]]
role = "requester"
members = ["group:eng"]

[[grant]]
name = "prod-two-groups"
resources = ["pg-prod"]
levels = ["read-only", "read-write"]
max_duration = "1h"
approvals = 2
approvers = ["group:dba", "group:sre"]
one_from_each = true

[[grant]]
name = "quick"
resources = ["pg-quick"]
levels = ["read-only"]
max_duration = "2s"
approvals = 1
approvers = ["group:dba"]
decide_within = "2s"
"#;

/// Both backends, each with a control plane, resources, people and the policy.
async fn backends() -> Vec<(Backend, ControlPlane)> {
    let mut out = Vec::new();
    for (backend, store) in Backend::stores("cs_grants").await {
        let settings = Settings::new(Secret::new("a".repeat(32)), Secret::new("g".repeat(32)));
        let cp = ControlPlane::new(store, settings).await.unwrap();
        for (name, environment) in [
            ("pg-prod", "production"),
            ("pg-quick", "production"),
            ("pg-staging", "staging"),
        ] {
            cp.upsert_resource(&ResourceSpec {
                name: name.to_owned(),
                kind: "postgres".to_owned(),
                environment: environment.to_owned(),
                strict_audit: false,
            })
            .await
            .unwrap();
        }
        cp.apply_policy(POLICY, "admin@example.com").await.unwrap();
        out.push((backend, cp));
    }
    out
}

/// A person with `groups`, as the API sees them.
async fn person(cp: &ControlPlane, email: &str, groups: &[&str]) -> Principal {
    let groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
    cp.store()
        .create_identity(email, IdentityKind::User, None, &groups)
        .await
        .unwrap();
    let token = cp
        .issue_token(email, &[], None, "test")
        .await
        .unwrap()
        .token;
    cp.principal(&token).await.unwrap()
}

fn request(resource: &str, level: &str, secs: u64) -> GrantRequest {
    GrantRequest {
        resource: resource.to_owned(),
        level: level.to_owned(),
        duration_secs: secs,
        reason: "INC-42: fix a stuck payment".to_owned(),
        ticket: Some("INC-42".to_owned()),
    }
}

async fn resource(cp: &ControlPlane, name: &str) -> Resource {
    cp.store().resource_by_name(name).await.unwrap().unwrap()
}

async fn access(cp: &ControlPlane, email: &str, groups: &[&str], name: &str) -> Option<String> {
    let groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
    match cp
        .session_access(email, &groups, &resource(cp, name).await)
        .await
    {
        Ok(a) => Some(format!(
            "{} {}",
            a.level,
            match a.basis {
                AccessBasis::Grant { id, .. } => format!("grant:{id}"),
                AccessBasis::Standing { rule } => format!("standing:{rule}"),
            }
        )),
        Err(ServiceError::Forbidden(_)) => None,
        Err(e) => panic!("session_access: {e}"),
    }
}

/// The audited actions of grant `g`, oldest first.
async fn actions(cp: &ControlPlane, g: &GrantView) -> Vec<String> {
    let events = cp
        .store()
        .search_audit(&AuditFilter {
            session_id: Some(format!("grant:{}", g.id)),
            limit: 100,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let mut out: Vec<(u64, String)> = events
        .into_iter()
        .map(|e| {
            let d = e.detail.unwrap_or_default();
            (e.seq, d["action"].as_str().unwrap_or("?").to_owned())
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, a)| a).collect()
}

#[tokio::test]
async fn requests_are_checked_against_the_policy() {
    for (backend, cp) in backends().await {
        let who = backend.name();
        let alice = person(&cp, "alice@example.com", &["eng"]).await;
        let mallory = person(&cp, "mallory@example.com", &["marketing"]).await;
        let invalid = [
            (
                request("pg-prod", "read-write", 7200),
                "allows grants of 1s up to 1h",
            ),
            (
                request("pg-prod", "read-write", 0),
                "allows grants of 1s up to 1h",
            ),
            (request("pg-prod", "unmask", 60), "no [[grant]] rule"),
            (request("pg-staging", "read-write", 60), "no [[grant]] rule"),
            (request("pg-nowhere", "read-write", 60), "no resource named"),
            (
                GrantRequest {
                    reason: "  ".to_owned(),
                    ..request("pg-prod", "read-write", 60)
                },
                "needs a reason",
            ),
        ];
        for (req, want) in invalid {
            match cp.request_grant(&alice, req.clone()).await {
                Err(ServiceError::Invalid(m)) => assert!(m.contains(want), "{who}: {m}"),
                other => panic!("{who}: {req:?}: {other:?}"),
            }
        }
        // No requester binding, and the bootstrap token: forbidden.
        for p in [&mallory, &Principal::Bootstrap] {
            let got = cp
                .request_grant(p, request("pg-prod", "read-write", 60))
                .await;
            assert!(
                matches!(got, Err(ServiceError::Forbidden(_))),
                "{who}: {got:?}"
            );
        }
        // Nothing was stored by the refused requests.
        assert!(
            cp.list_grants(&alice, true).await.unwrap().is_empty(),
            "{who}"
        );
    }
}

#[tokio::test]
async fn one_approval_from_each_group_activates_and_revocation_ends_access() {
    for (backend, cp) in backends().await {
        let who = backend.name();
        // alice is in an approver group herself: she still never counts.
        let alice = person(&cp, "alice@example.com", &["eng", "dba"]).await;
        let bob = person(&cp, "bob@example.com", &["dba"]).await;
        let carol = person(&cp, "carol@example.com", &["dba"]).await;
        let dave = person(&cp, "dave@example.com", &["sre"]).await;
        let erin = person(&cp, "erin@example.com", &["finance"]).await;
        let frank = person(&cp, "frank@example.com", &["sre"]).await;

        // Standing access works without any grant; pg-prod has none.
        assert_eq!(
            access(&cp, "alice@example.com", &["eng", "dba"], "pg-staging").await,
            Some("read-write standing:eng-staging".to_owned()),
            "{who}"
        );
        assert_eq!(
            access(&cp, "alice@example.com", &["eng", "dba"], "pg-prod").await,
            None,
            "{who}"
        );

        let g = cp
            .request_grant(&alice, request("pg-prod", "read-only", 600))
            .await
            .unwrap();
        assert_eq!(g.status, "pending", "{who}");
        assert_eq!(g.rule, "prod-two-groups");
        assert!(g.one_from_each && g.approvals_required == 2, "{who}: {g:?}");

        // alice cannot approve her own request; erin is no approver.
        for p in [&alice, &erin] {
            let got = cp.decide_grant(&g.id, p, true, None).await;
            assert!(
                matches!(got, Err(ServiceError::Forbidden(_))),
                "{who}: {got:?}"
            );
        }
        // Two DBAs make k = 2 but not one from each group.
        let after_bob = cp.decide_grant(&g.id, &bob, true, None).await.unwrap();
        assert_eq!(after_bob.status, "pending", "{who}");
        let twice = cp.decide_grant(&g.id, &bob, true, None).await;
        assert!(
            matches!(twice, Err(ServiceError::Forbidden(_))),
            "{who}: {twice:?}"
        );
        let after_carol = cp.decide_grant(&g.id, &carol, true, None).await.unwrap();
        assert_eq!(after_carol.status, "pending", "{who}: two DBAs");
        assert_eq!(
            access(&cp, "alice@example.com", &["eng", "dba"], "pg-prod").await,
            None,
            "{who}: not active yet"
        );
        // An SRE completes it.
        let active = cp
            .decide_grant(&g.id, &dave, true, Some("ok".into()))
            .await
            .unwrap();
        assert_eq!(active.status, "active", "{who}");
        let until = active.active_until.unwrap();
        let decided = active.decided_at.unwrap();
        assert_eq!((until - decided).num_seconds(), 600, "{who}");
        assert_eq!(
            access(&cp, "alice@example.com", &["eng", "dba"], "pg-prod").await,
            Some(format!("read-only grant:{}", g.id)),
            "{who}"
        );
        // The grant is alice's alone.
        assert_eq!(
            access(&cp, "bob@example.com", &["dba"], "pg-prod").await,
            None,
            "{who}"
        );

        // erin may not revoke; bob (an approver) may, once.
        let got = cp.revoke_grant(&g.id, &erin, None).await;
        assert!(
            matches!(got, Err(ServiceError::Forbidden(_))),
            "{who}: {got:?}"
        );
        let revoked = cp
            .revoke_grant(&g.id, &bob, Some("done".into()))
            .await
            .unwrap();
        assert_eq!(revoked.status, "revoked", "{who}");
        assert_eq!(revoked.revoked_by.as_deref(), Some("bob@example.com"));
        let again = cp.revoke_grant(&g.id, &bob, None).await;
        assert!(
            matches!(again, Err(ServiceError::Invalid(_))),
            "{who}: {again:?}"
        );
        assert_eq!(
            cp.live_revoked_grant_ids().await.unwrap(),
            vec![g.id.clone()],
            "{who}: gateways hear of it"
        );
        assert_eq!(
            access(&cp, "alice@example.com", &["eng", "dba"], "pg-prod").await,
            None,
            "{who}: no access after revocation"
        );
        // Decisions after the end are refused too.
        let late = cp.decide_grant(&g.id, &frank, true, None).await;
        assert!(late.is_err(), "{who}: {late:?}");

        assert_eq!(
            actions(&cp, &g).await,
            [
                "requested",
                "refused",
                "refused",
                "approved",
                "refused",
                "approved",
                "approved",
                "refused",
                "revoked",
                "refused",
                "refused"
            ],
            "{who}"
        );
    }
}

#[tokio::test]
async fn undecided_requests_expire_and_grants_end_by_themselves() {
    for (backend, cp) in backends().await {
        let who = backend.name();
        let alice = person(&cp, "alice@example.com", &["eng"]).await;
        let bob = person(&cp, "bob@example.com", &["dba"]).await;

        // Not decided within the rule's 2 s: expired, and approval is refused.
        let stale = cp
            .request_grant(&alice, request("pg-quick", "read-only", 2))
            .await
            .unwrap();
        assert!(
            (stale.decide_by - stale.created_at).num_milliseconds() == 2000,
            "{who}: {stale:?}"
        );
        tokio::time::sleep(Duration::from_millis(2200)).await;
        let got = cp.decide_grant(&stale.id, &bob, true, None).await;
        assert!(
            matches!(&got, Err(ServiceError::Invalid(m)) if m.contains("expired")),
            "{who}: {got:?}"
        );
        let seen = cp.grant_as(&alice, &stale.id).await.unwrap().unwrap();
        assert_eq!(seen.status, "expired", "{who}");
        assert_eq!(
            actions(&cp, &stale).await,
            ["requested", "expired", "refused"]
        );
        assert_eq!(
            access(&cp, "alice@example.com", &["eng"], "pg-quick").await,
            None,
            "{who}"
        );

        // Approved at once: active for its 2 s, then ended, with no revocation.
        let g = cp
            .request_grant(&alice, request("pg-quick", "read-only", 2))
            .await
            .unwrap();
        let active = cp.decide_grant(&g.id, &bob, true, None).await.unwrap();
        assert_eq!(active.status, "active", "{who}");
        assert!(
            access(&cp, "alice@example.com", &["eng"], "pg-quick")
                .await
                .is_some(),
            "{who}"
        );
        tokio::time::sleep(Duration::from_millis(2200)).await;
        let seen = cp.grant_as(&alice, &g.id).await.unwrap().unwrap();
        assert_eq!(seen.status, "ended", "{who}");
        assert_eq!(
            access(&cp, "alice@example.com", &["eng"], "pg-quick").await,
            None,
            "{who}"
        );
        assert!(cp.live_revoked_grant_ids().await.unwrap().is_empty());
        let got = cp.revoke_grant(&g.id, &bob, None).await;
        assert!(
            matches!(got, Err(ServiceError::Invalid(_))),
            "{who}: an ended grant cannot be revoked: {got:?}"
        );
    }
}
