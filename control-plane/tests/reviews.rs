//! Reviews and segregation of duties, each scenario on both PostgreSQL and SQLite.
//!
//! Decisions go through the real HTTP router (`Router::oneshot`) with real
//! tokens, so the approver is whoever the bearer token says, as in production.

#![cfg(test)]

#[path = "support/backends.rs"]
mod backends;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use countersign_common::Secret;
use countersign_control_plane::reviews::{NewReview, ReviewView};
use countersign_control_plane::service::Principal;
use countersign_control_plane::store::audit::{AuditEventView, AuditFilter};
use countersign_control_plane::store::identities::IdentityKind;
use countersign_control_plane::{ControlPlane, ServiceError, Settings, Store};
use http_body_util::BodyExt;
use sea_orm::ConnectionTrait;
use serde_json::Value;
use std::time::Duration;
use tower::ServiceExt;

/// The bootstrap admin token of every test control plane.
use backends::Backend;

/// Both backends, each with a control plane on a fresh store.
async fn backends() -> Vec<(Backend, ControlPlane)> {
    let mut out = Vec::new();
    for (backend, store) in Backend::stores("cs_reviews").await {
        out.push((backend, control_plane(store).await));
    }
    out
}

fn bootstrap_token() -> String {
    "a".repeat(32)
}

async fn control_plane(store: Store) -> ControlPlane {
    let mut settings = Settings::new(Secret::new(bootstrap_token()), Secret::new("g".repeat(32)));
    settings.public_url = "https://console.example.com/".to_owned();
    ControlPlane::new(store, settings).await.unwrap()
}

/// Creates a person with `groups` and returns an access token for them.
async fn person(cp: &ControlPlane, email: &str, groups: &[&str]) -> String {
    let groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
    cp.store()
        .create_identity(email, IdentityKind::User, None, &groups)
        .await
        .unwrap();
    cp.issue_token(email, &[], None, "test")
        .await
        .unwrap()
        .token
}

async fn set_groups(cp: &ControlPlane, email: &str, groups: &[&str]) {
    let id = cp
        .store()
        .identity_by_email(email)
        .await
        .unwrap()
        .unwrap()
        .id;
    let groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
    cp.store().set_groups(&id, &groups).await.unwrap();
}

async fn principal(cp: &ControlPlane, token: &str) -> Principal {
    cp.principal(token).await.unwrap()
}

fn new_review(requester: &str, k: u32, approvers: &[&str], timeout: Duration) -> NewReview {
    NewReview {
        session_id: "0190f000-0000-7000-8000-000000000001".to_owned(),
        requester: requester.to_owned(),
        resource: "pg-prod".to_owned(),
        statement: "DELETE FROM orders WHERE id = 42".to_owned(),
        kinds: vec!["delete".to_owned()],
        rule: "deletes-need-review".to_owned(),
        message: Some("deletes on prod need a second pair of eyes".to_owned()),
        approvals_required: k,
        approvers: approvers.iter().map(|a| (*a).to_owned()).collect(),
        timeout,
        max_approval_minutes: 0,
    }
}

/// A review of `statement` by `requester` on `resource`, under a rule that
/// lets an approval cover the statement's shape for up to `cap` minutes.
fn scoped_review(requester: &str, resource: &str, statement: &str, cap: u32) -> NewReview {
    NewReview {
        resource: resource.to_owned(),
        statement: statement.to_owned(),
        max_approval_minutes: cap,
        ..new_review(requester, 1, &["group:dba"], MINUTE)
    }
}

/// Moves review `id`'s `decided_at` back by `by`, as if decided that long ago.
async fn age_decision(cp: &ControlPlane, id: &str, by: chrono::Duration) {
    use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
    let decided = cp
        .store()
        .review(id)
        .await
        .unwrap()
        .unwrap()
        .decided_at
        .unwrap();
    let db = cp.store().db_for_tests();
    let update = Query::update()
        .table(Alias::new("reviews"))
        .value(Alias::new("decided_at"), decided - by)
        .and_where(Expr::col(Alias::new("id")).eq(id))
        .to_owned();
    db.execute(&update).await.unwrap();
}

const MINUTE: Duration = Duration::from_secs(60);

/// Sends one request through the router; returns the status and the JSON body.
async fn call(
    cp: &ControlPlane,
    method: &str,
    uri: &str,
    token: &str,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let router: Router = countersign_control_plane::api::router(cp.clone());
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {token}"));
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(Body::from(body.unwrap_or("").to_owned())).unwrap();
    let res = router.oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, json)
}

async fn approve(
    cp: &ControlPlane,
    id: &str,
    token: &str,
    body: Option<&str>,
) -> (StatusCode, Value) {
    call(
        cp,
        "POST",
        &format!("/api/v1/reviews/{id}/approve"),
        token,
        body,
    )
    .await
}

async fn deny(cp: &ControlPlane, id: &str, token: &str, body: Option<&str>) -> (StatusCode, Value) {
    call(
        cp,
        "POST",
        &format!("/api/v1/reviews/{id}/deny"),
        token,
        body,
    )
    .await
}

async fn review(cp: &ControlPlane, id: &str) -> ReviewView {
    cp.review(id).await.unwrap().unwrap()
}

/// The review's audit trail, oldest first.
async fn trail(cp: &ControlPlane, id: &str) -> Vec<AuditEventView> {
    let events = cp
        .search_audit(&AuditFilter {
            session_id: Some(format!("review:{id}")),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut sorted = events;
    sorted.sort_by_key(|e| e.seq);
    let seqs: Vec<u64> = sorted.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (0..seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "audit seqs are dense from 0");
    sorted
}

fn action(e: &AuditEventView) -> &str {
    e.detail
        .as_ref()
        .and_then(|d| d.get("action"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn reason(e: &AuditEventView) -> &str {
    e.detail
        .as_ref()
        .and_then(|d| d.get("reason"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `(identity, action)` for every event of the trail.
async fn actions(cp: &ControlPlane, id: &str) -> Vec<(String, String)> {
    trail(cp, id)
        .await
        .iter()
        .map(|e| (e.identity.clone(), action(e).to_owned()))
        .collect()
}

fn pair(identity: &str, action: &str) -> (String, String) {
    (identity.to_owned(), action.to_owned())
}

fn error_text(body: &Value) -> String {
    body.get("error")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn another_approver_approves_and_everything_is_audited() {
    for (backend, cp) in backends().await {
        let who = backend.name();
        let mut changes = cp.review_changes();
        let _alice = person(&cp, "alice@example.com", &[]).await;
        let bob = person(&cp, "bob@example.com", &["dba"]).await;

        let opened = cp
            .open_review(new_review("alice@example.com", 1, &["group:dba"], MINUTE))
            .await
            .unwrap();
        assert_eq!(opened.status, "pending", "{who}");
        assert_eq!(
            opened.url,
            format!("https://console.example.com/reviews/{}", opened.id),
            "{who}"
        );
        assert_eq!(changes.recv().await.unwrap(), opened.id, "{who}");

        let (status, body) =
            approve(&cp, &opened.id, &bob, Some(r#"{"comment":"looks right"}"#)).await;
        assert_eq!(status, StatusCode::OK, "{who}: {body}");
        assert_eq!(body["status"], "approved", "{who}");
        assert_eq!(body["decisions"][0]["approver"], "bob@example.com", "{who}");
        assert_eq!(body["decisions"][0]["decision"], "approve", "{who}");
        assert_eq!(body["decisions"][0]["comment"], "looks right", "{who}");
        assert_eq!(changes.recv().await.unwrap(), opened.id, "{who}");

        let now = review(&cp, &opened.id).await;
        assert_eq!(now.status, "approved", "{who}");
        assert_eq!(now.decisions.len(), 1, "{who}");
        assert_eq!(
            actions(&cp, &opened.id).await,
            vec![
                pair("alice@example.com", "opened"),
                pair("bob@example.com", "approved")
            ],
            "{who}"
        );
        let events = trail(&cp, &opened.id).await;
        assert!(
            events
                .iter()
                .all(|e| e.event == "review" && e.resource == "pg-prod"),
            "{who}"
        );

        // Once decided, nobody decides again.
        let carol = person(&cp, "carol@example.com", &["dba"]).await;
        let (status, body) = deny(&cp, &opened.id, &carol, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{who}: {body}");
        assert_eq!(review(&cp, &opened.id).await.status, "approved", "{who}");
    }
}

#[tokio::test]
async fn nobody_approves_their_own_review() {
    for (backend, cp) in backends().await {
        let who = backend.name();
        let alice = person(&cp, "alice@example.com", &[]).await;
        let r = cp
            .open_review(new_review("alice@example.com", 1, &["group:dba"], MINUTE))
            .await
            .unwrap();

        // The same identity; then as an admin; then as a member of the approver group.
        for groups in [
            &[][..],
            &["countersign-admins"][..],
            &["dba"][..],
            &["dba", "countersign-admins"][..],
        ] {
            set_groups(&cp, "alice@example.com", groups).await;
            for (status, body) in [
                approve(&cp, &r.id, &alice, None).await,
                approve(&cp, &r.id, &alice, Some(r#"{"comment":"trust me"}"#)).await,
                deny(&cp, &r.id, &alice, None).await,
            ] {
                assert_eq!(status, StatusCode::FORBIDDEN, "{who} {groups:?}: {body}");
                assert!(
                    error_text(&body).contains("segregation of duties"),
                    "{who} {groups:?}: {body}"
                );
            }
            // Straight through the service, with the admin check passing.
            let p = principal(&cp, &alice).await;
            let direct = cp.decide_review(&r.id, &p, true, None).await;
            assert!(
                matches!(direct, Err(ServiceError::Forbidden(_))),
                "{who}: {direct:?}"
            );
        }
        // Case games do not make a different person.
        let shouty = person(&cp, "ALICE@example.com", &["dba"]).await;
        let (status, body) = approve(&cp, &r.id, &shouty, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{who}: {body}");

        let now = review(&cp, &r.id).await;
        assert_eq!(now.status, "pending", "{who}");
        assert!(now.decisions.is_empty(), "{who}");
        let events = trail(&cp, &r.id).await;
        assert_eq!(action(&events[0]), "opened", "{who}");
        let refused: Vec<_> = events.iter().filter(|e| action(e) == "refused").collect();
        assert_eq!(refused.len(), 4 * 4 + 1, "{who}: every attempt is audited");
        assert!(
            refused
                .iter()
                .all(|e| e.identity.eq_ignore_ascii_case("alice@example.com")
                    && reason(e).contains("segregation of duties")),
            "{who}"
        );
        assert_eq!(events.len(), refused.len() + 1, "{who}");
    }
}

#[tokio::test]
async fn the_bootstrap_token_never_decides() {
    for (backend, cp) in backends().await {
        let who = backend.name();
        let r = cp
            .open_review(new_review("alice@example.com", 1, &[], MINUTE))
            .await
            .unwrap();
        assert_eq!(r.approvers, ["group:countersign-approvers"], "{who}");
        for (status, body) in [
            approve(&cp, &r.id, &bootstrap_token(), None).await,
            deny(&cp, &r.id, &bootstrap_token(), None).await,
        ] {
            assert_eq!(status, StatusCode::FORBIDDEN, "{who}: {body}");
            assert!(error_text(&body).contains("bootstrap"), "{who}: {body}");
        }
        // It may read the review (it is an admin), but has nothing to decide.
        let (status, body) = call(
            &cp,
            "GET",
            &format!("/api/v1/reviews/{}", r.id),
            &bootstrap_token(),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{who}: {body}");
        let (status, body) = call(&cp, "GET", "/api/v1/reviews", &bootstrap_token(), None).await;
        assert_eq!(status, StatusCode::OK, "{who}: {body}");
        assert_eq!(body["reviews"], Value::Array(vec![]), "{who}");

        assert_eq!(review(&cp, &r.id).await.status, "pending", "{who}");
        assert_eq!(
            actions(&cp, &r.id).await,
            vec![
                pair("alice@example.com", "opened"),
                pair("bootstrap-admin", "refused"),
                pair("bootstrap-admin", "refused"),
            ],
            "{who}"
        );
    }
}

#[tokio::test]
async fn a_forged_approver_in_the_body_is_refused_and_never_counts() {
    for (backend, cp) in backends().await {
        let who = backend.name();
        let alice = person(&cp, "alice@example.com", &["dba"]).await;
        let eve = person(&cp, "eve@example.com", &["dev"]).await;
        let _bob = person(&cp, "bob@example.com", &["dba"]).await;
        let r = cp
            .open_review(new_review("alice@example.com", 1, &["group:dba"], MINUTE))
            .await
            .unwrap();
        let forged = [
            r#"{"approver":"bob@example.com"}"#,
            r#"{"comment":"ok","approver":"bob@example.com"}"#,
            r#"{"approver":{"email":"bob@example.com"}}"#,
        ];
        for token in [&alice, &eve] {
            for body in forged {
                let (status, res) = approve(&cp, &r.id, token, Some(body)).await;
                assert_eq!(status, StatusCode::BAD_REQUEST, "{who} {body}: {res}");
                assert!(error_text(&res).contains("approver"), "{who}: {res}");
            }
        }
        // Without the forged field, both are refused for who they are.
        assert_eq!(
            approve(&cp, &r.id, &alice, None).await.0,
            StatusCode::FORBIDDEN,
            "{who}"
        );
        assert_eq!(
            approve(&cp, &r.id, &eve, None).await.0,
            StatusCode::FORBIDDEN,
            "{who}"
        );

        let now = review(&cp, &r.id).await;
        assert_eq!(now.status, "pending", "{who}");
        assert!(
            now.decisions.is_empty(),
            "{who}: a forged approval never counts"
        );
        let events = trail(&cp, &r.id).await;
        let refused: Vec<_> = events.iter().filter(|e| action(e) == "refused").collect();
        assert_eq!(refused.len(), 2 * forged.len() + 2, "{who}");
        assert!(
            refused.iter().all(|e| e.identity != "bob@example.com"),
            "{who}: the audit names the caller, not the forged approver"
        );
    }
}

#[tokio::test]
async fn each_approver_counts_once_and_k_needs_k_people() {
    for (backend, cp) in backends().await {
        let who = backend.name();
        let _alice = person(&cp, "alice@example.com", &[]).await;
        let bob = person(&cp, "bob@example.com", &["dba"]).await;
        let carol = person(&cp, "carol@example.com", &[]).await;
        let r = cp
            .open_review(new_review(
                "alice@example.com",
                2,
                &["group:dba", "user:carol@example.com"],
                MINUTE,
            ))
            .await
            .unwrap();

        let (status, body) = approve(&cp, &r.id, &bob, None).await;
        assert_eq!(status, StatusCode::OK, "{who}: {body}");
        assert_eq!(body["status"], "pending", "{who}: one of two");
        for (status, body) in [
            approve(&cp, &r.id, &bob, None).await,
            approve(&cp, &r.id, &bob, Some(r#"{"comment":"really"}"#)).await,
            deny(&cp, &r.id, &bob, None).await,
        ] {
            assert_eq!(status, StatusCode::FORBIDDEN, "{who}: {body}");
        }
        let now = review(&cp, &r.id).await;
        assert_eq!(now.status, "pending", "{who}");
        assert_eq!(now.decisions.len(), 1, "{who}: the count stays 1");

        // A listed user is an approver too; the second distinct approval decides.
        let (status, body) = approve(&cp, &r.id, &carol, None).await;
        assert_eq!(status, StatusCode::OK, "{who}: {body}");
        assert_eq!(body["status"], "approved", "{who}");
        assert_eq!(
            actions(&cp, &r.id).await,
            vec![
                pair("alice@example.com", "opened"),
                pair("bob@example.com", "approved"),
                pair("bob@example.com", "refused"),
                pair("bob@example.com", "refused"),
                pair("bob@example.com", "refused"),
                pair("carol@example.com", "approved"),
            ],
            "{who}"
        );
    }
}

#[tokio::test]
async fn concurrent_approvals_by_one_person_count_once() {
    for (backend, cp) in backends().await {
        let who = backend.name();
        let _alice = person(&cp, "alice@example.com", &[]).await;
        let bob = principal(&cp, &person(&cp, "bob@example.com", &["dba"]).await).await;
        let carol = principal(&cp, &person(&cp, "carol@example.com", &["dba"]).await).await;
        for k in [1, 2] {
            for _ in 0..5 {
                let r = cp
                    .open_review(new_review("alice@example.com", k, &["group:dba"], MINUTE))
                    .await
                    .unwrap();
                let (a, b) = tokio::join!(
                    cp.decide_review(&r.id, &bob, true, None),
                    cp.decide_review(&r.id, &bob, true, Some("again".into())),
                );
                let ok = [&a, &b].iter().filter(|x| x.is_ok()).count();
                assert_eq!(ok, 1, "{who} k={k}: {a:?} / {b:?}");
                let now = review(&cp, &r.id).await;
                assert_eq!(now.decisions.len(), 1, "{who} k={k}");
                let expected = if k == 1 { "approved" } else { "pending" };
                assert_eq!(now.status, expected, "{who} k={k}");
            }
        }
        // Concurrent approvals by different people all count.
        for _ in 0..5 {
            let r = cp
                .open_review(new_review("alice@example.com", 2, &["group:dba"], MINUTE))
                .await
                .unwrap();
            let (a, b) = tokio::join!(
                cp.decide_review(&r.id, &bob, true, None),
                cp.decide_review(&r.id, &carol, true, None),
            );
            assert!(a.is_ok() && b.is_ok(), "{who}: {a:?} / {b:?}");
            let now = review(&cp, &r.id).await;
            assert_eq!(now.status, "approved", "{who}");
            assert_eq!(now.decisions.len(), 2, "{who}");
            // Whichever came second saw the first and decided the review.
            let statuses = [a.unwrap().status, b.unwrap().status];
            assert!(
                statuses.contains(&"approved".to_owned()),
                "{who}: {statuses:?}"
            );
            assert!(
                statuses.contains(&"pending".to_owned()),
                "{who}: {statuses:?}"
            );
        }
    }
}

#[tokio::test]
async fn decisions_after_expiry_are_refused() {
    for (backend, cp) in backends().await {
        let who = backend.name();
        let _alice = person(&cp, "alice@example.com", &[]).await;
        let bob = person(&cp, "bob@example.com", &["dba"]).await;
        let mut changes = cp.review_changes();
        let late = cp
            .open_review(new_review(
                "alice@example.com",
                1,
                &["group:dba"],
                Duration::from_secs(1),
            ))
            .await
            .unwrap();
        let read = cp
            .open_review(new_review(
                "alice@example.com",
                1,
                &["group:dba"],
                Duration::from_secs(1),
            ))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;

        let (status, body) = approve(&cp, &late.id, &bob, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{who}: {body}");
        assert!(error_text(&body).contains("expired"), "{who}: {body}");
        let now = review(&cp, &late.id).await;
        assert_eq!(now.status, "expired", "{who}");
        assert!(now.decisions.is_empty(), "{who}");
        assert_eq!(
            actions(&cp, &late.id).await,
            vec![
                pair("alice@example.com", "opened"),
                pair("alice@example.com", "expired"),
                pair("bob@example.com", "refused"),
            ],
            "{who}"
        );

        // Reading a review past its deadline persists the expiry, once.
        assert_eq!(review(&cp, &read.id).await.status, "expired", "{who}");
        assert_eq!(review(&cp, &read.id).await.status, "expired", "{who}");
        assert_eq!(
            actions(&cp, &read.id).await,
            vec![
                pair("alice@example.com", "opened"),
                pair("alice@example.com", "expired")
            ],
            "{who}"
        );
        let mut seen = Vec::new();
        while let Ok(id) = changes.try_recv() {
            seen.push(id);
        }
        assert_eq!(
            seen,
            vec![late.id.clone(), read.id.clone(), late.id, read.id],
            "{who}"
        );
        // An expired review is no longer offered to approvers.
        let (_, body) = call(&cp, "GET", "/api/v1/reviews", &bob, None).await;
        assert_eq!(body["reviews"], Value::Array(vec![]), "{who}");
    }
}

#[tokio::test]
async fn a_deny_by_any_approver_ends_the_review() {
    for (backend, cp) in backends().await {
        let who = backend.name();
        let _alice = person(&cp, "alice@example.com", &[]).await;
        let bob = person(&cp, "bob@example.com", &["dba"]).await;
        let carol = person(&cp, "carol@example.com", &["dba"]).await;
        let dave = person(&cp, "dave@example.com", &["dba"]).await;
        let r = cp
            .open_review(new_review("alice@example.com", 2, &["group:dba"], MINUTE))
            .await
            .unwrap();
        assert_eq!(
            approve(&cp, &r.id, &bob, None).await.0,
            StatusCode::OK,
            "{who}"
        );
        let (status, body) =
            deny(&cp, &r.id, &carol, Some(r#"{"comment":"not on a Friday"}"#)).await;
        assert_eq!(status, StatusCode::OK, "{who}: {body}");
        assert_eq!(body["status"], "denied", "{who}");
        let (status, body) = approve(&cp, &r.id, &dave, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{who}: {body}");
        assert!(error_text(&body).contains("denied"), "{who}: {body}");
        let now = review(&cp, &r.id).await;
        assert_eq!(now.status, "denied", "{who}");
        assert_eq!(now.decisions.len(), 2, "{who}");
        assert_eq!(
            now.decisions[1].comment.as_deref(),
            Some("not on a Friday"),
            "{who}"
        );
        let last = trail(&cp, &r.id).await.pop().unwrap();
        assert_eq!(
            (last.identity.as_str(), action(&last)),
            ("dave@example.com", "refused"),
            "{who}"
        );
    }
}

#[tokio::test]
async fn listing_and_reading_follow_who_may_decide() {
    for (backend, cp) in backends().await {
        let who = backend.name();
        let alice = person(&cp, "alice@example.com", &["dba"]).await;
        let bob = person(&cp, "bob@example.com", &["dba"]).await;
        let eve = person(&cp, "eve@example.com", &["dev"]).await;
        let audrey = person(&cp, "audrey@example.com", &["countersign-auditors"]).await;
        let first = cp
            .open_review(new_review("alice@example.com", 1, &["group:dba"], MINUTE))
            .await
            .unwrap();
        let second = cp
            .open_review(new_review("bob@example.com", 1, &["group:dba"], MINUTE))
            .await
            .unwrap();

        let ids = |body: &Value| -> Vec<String> {
            body["reviews"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_owned())
                .collect()
        };
        let (status, body) = call(&cp, "GET", "/api/v1/reviews", &alice, None).await;
        assert_eq!(status, StatusCode::OK, "{who}: {body}");
        assert_eq!(ids(&body), vec![second.id.clone()], "{who}: not her own");
        let (_, body) = call(&cp, "GET", "/api/v1/reviews?mine=true", &alice, None).await;
        assert_eq!(ids(&body), vec![first.id.clone()], "{who}");
        let (_, body) = call(&cp, "GET", "/api/v1/reviews?mine=false", &bob, None).await;
        assert_eq!(ids(&body), vec![first.id.clone()], "{who}");
        let (_, body) = call(&cp, "GET", "/api/v1/reviews", &eve, None).await;
        assert_eq!(ids(&body), Vec::<String>::new(), "{who}");
        let (status, _) = call(&cp, "GET", "/api/v1/reviews?mine=maybe", &eve, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{who}");
        let (status, _) = call(&cp, "GET", "/api/v1/reviews", "not-a-token", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{who}");

        let path = format!("/api/v1/reviews/{}", first.id);
        for token in [&alice, &bob, &audrey] {
            let (status, body) = call(&cp, "GET", &path, token, None).await;
            assert_eq!(status, StatusCode::OK, "{who}: {body}");
            assert_eq!(
                body["statement"], "DELETE FROM orders WHERE id = 42",
                "{who}"
            );
        }
        assert_eq!(
            call(&cp, "GET", &path, &eve, None).await.0,
            StatusCode::FORBIDDEN,
            "{who}"
        );
        let (status, _) = call(&cp, "GET", "/api/v1/reviews/nope", &bob, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{who}");
        let (status, _) = approve(&cp, "nope", &bob, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{who}");

        // Once bob approved it, it leaves his list.
        assert_eq!(
            approve(&cp, &first.id, &bob, None).await.0,
            StatusCode::OK,
            "{who}"
        );
        let (_, body) = call(&cp, "GET", "/api/v1/reviews", &bob, None).await;
        assert_eq!(ids(&body), Vec::<String>::new(), "{who}");

        let (_, doc) = call(&cp, "GET", "/api/v1/openapi.json", &eve, None).await;
        for p in [
            "/api/v1/reviews",
            "/api/v1/reviews/{id}",
            "/api/v1/reviews/{id}/approve",
            "/api/v1/reviews/{id}/deny",
        ] {
            assert!(
                doc["paths"].get(p).is_some(),
                "{who}: {p} missing from the OpenAPI document"
            );
        }
    }
}

#[tokio::test]
async fn new_reviews_are_validated() {
    for (backend, cp) in backends().await {
        let who = backend.name();
        for bad in [
            new_review("alice@example.com", 0, &["group:dba"], MINUTE),
            new_review("alice@example.com", 1, &["dba"], MINUTE),
            new_review("alice@example.com", 1, &["user:alice@example.com"], MINUTE),
            new_review("alice@example.com", 2, &["user:bob@example.com"], MINUTE),
            new_review("alice@example.com", 1, &["group:dba"], Duration::ZERO),
        ] {
            let res = cp.open_review(bad.clone()).await;
            assert!(
                matches!(res, Err(ServiceError::Invalid(_))),
                "{who}: {bad:?} -> {res:?}"
            );
        }
    }
}

#[tokio::test]
async fn the_database_refuses_self_approval_whatever_the_path() {
    for (backend, cp) in backends().await {
        let who = backend.name();
        let _bob = person(&cp, "bob@example.com", &["dba"]).await;
        let r = cp
            .open_review(new_review("alice@example.com", 2, &["group:dba"], MINUTE))
            .await
            .unwrap();
        let id = &r.id;
        let self_approval = format!(
            "INSERT INTO approvals (review_id, approver, decision, at) \
             VALUES ('{id}', 'alice@example.com', 'approve', CURRENT_TIMESTAMP)"
        );
        let self_approval_case = self_approval.replace("alice@", "Alice@");
        let legit = format!(
            "INSERT INTO approvals (review_id, approver, decision, at) \
             VALUES ('{id}', 'bob@example.com', 'approve', CURRENT_TIMESTAMP)"
        );
        let relabel =
            format!("UPDATE approvals SET approver = 'alice@example.com' WHERE review_id = '{id}'");
        let move_requester =
            format!("UPDATE reviews SET requester = 'bob@example.com' WHERE id = '{id}'");
        let twice = legit.clone();

        match &backend {
            Backend::Postgres { db } => {
                // As the application's own database user, bypassing the service.
                let client = db.client().await.unwrap();
                for sql in [&self_approval, &self_approval_case] {
                    let err = client.batch_execute(sql).await.unwrap_err();
                    let code = err.code().map(|c| c.code().to_owned());
                    assert_eq!(code.as_deref(), Some("42501"), "{who}: {err:?}");
                    assert!(
                        format!("{err:?}").contains("segregation of duties"),
                        "{who}: {err:?}"
                    );
                }
                client.batch_execute(&legit).await.unwrap();
                let err = client.batch_execute(&twice).await.unwrap_err();
                assert_eq!(
                    err.code().map(|c| c.code().to_owned()).as_deref(),
                    Some("23505"),
                    "{who}"
                );
                for sql in [&relabel, &move_requester] {
                    let err = client.batch_execute(sql).await.unwrap_err();
                    assert_eq!(
                        err.code().map(|c| c.code().to_owned()).as_deref(),
                        Some("42501"),
                        "{who}: {sql}"
                    );
                }
            }
            Backend::Sqlite { .. } => {
                let db = cp.store().db_for_tests();
                for sql in [&self_approval, &self_approval_case] {
                    let err = db.execute_unprepared(sql).await.unwrap_err();
                    assert!(
                        err.to_string().contains("segregation of duties"),
                        "{who}: {err}"
                    );
                }
                db.execute_unprepared(&legit).await.unwrap();
                assert!(db.execute_unprepared(&twice).await.is_err(), "{who}");
                for sql in [&relabel, &move_requester] {
                    let err = db.execute_unprepared(sql).await.unwrap_err();
                    assert!(
                        err.to_string().contains("segregation of duties"),
                        "{who}: {sql}: {err}"
                    );
                }
            }
        }
        let now = review(&cp, id).await;
        assert_eq!(now.requester, "alice@example.com", "{who}");
        let approvers: Vec<_> = now.decisions.iter().map(|d| d.approver.as_str()).collect();
        assert_eq!(approvers, ["bob@example.com"], "{who}");
    }
}

#[tokio::test]
async fn an_approval_by_fingerprint_covers_the_same_shape_for_a_while() {
    for (backend, cp) in backends().await {
        let who = backend.name();
        let _alice = person(&cp, "alice@example.com", &[]).await;
        let bob = person(&cp, "bob@example.com", &["dba"]).await;
        let first = "DELETE FROM t WHERE id = 1";
        let second = "DELETE FROM t WHERE id = 2";

        // "once" (the default) covers that execution only.
        let once = cp
            .open_review(scoped_review("alice@example.com", "pg-prod", first, 10))
            .await
            .unwrap();
        assert_eq!(once.max_approval_minutes, 10, "{who}");
        let (status, body) = approve(&cp, &once.id, &bob, Some(r#"{"scope":"once"}"#)).await;
        assert_eq!(status, StatusCode::OK, "{who}: {body}");
        assert_eq!(body["decisions"][0]["scope_minutes"], Value::Null, "{who}");
        let next = cp
            .open_review(scoped_review("alice@example.com", "pg-prod", second, 10))
            .await
            .unwrap();
        assert_eq!(next.status, "pending", "{who}: once does not carry over");

        // "fingerprint" for 10 minutes covers the same shape with other constants.
        let (status, body) = approve(
            &cp,
            &next.id,
            &bob,
            Some(r#"{"comment":"fine for a while","scope":"fingerprint","minutes":10}"#),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{who}: {body}");
        assert_eq!(body["decisions"][0]["scope_minutes"], 10, "{who}");
        let covered = cp
            .open_review(scoped_review("alice@example.com", "pg-prod", first, 10))
            .await
            .unwrap();
        assert_eq!(covered.status, "approved", "{who}");
        assert!(
            covered.decisions.is_empty(),
            "{who}: nobody decided it anew"
        );
        assert_eq!(
            actions(&cp, &covered.id).await,
            vec![
                pair("alice@example.com", "opened"),
                pair("alice@example.com", "approved")
            ],
            "{who}"
        );
        let events = trail(&cp, &covered.id).await;
        let detail = events[1].detail.as_ref().unwrap();
        assert_eq!(
            detail["by_fingerprint_of"],
            next.id.as_str(),
            "{who}: {detail}"
        );
        assert_eq!(review(&cp, &covered.id).await.status, "approved", "{who}");

        // Not for another requester, another resource or another shape.
        let _carol = person(&cp, "carol@example.com", &[]).await;
        for (requester, resource, statement) in [
            ("carol@example.com", "pg-prod", first),
            ("alice@example.com", "pg-other", first),
            (
                "alice@example.com",
                "pg-prod",
                "DELETE FROM t WHERE other = 1",
            ),
            ("alice@example.com", "pg-prod", "DELETE FROM u WHERE id = 1"),
        ] {
            let r = cp
                .open_review(scoped_review(requester, resource, statement, 10))
                .await
                .unwrap();
            assert_eq!(
                r.status, "pending",
                "{who}: {requester} {resource} {statement}"
            );
        }
        // Nor under a rule that now allows "once" only.
        let r = cp
            .open_review(scoped_review("alice@example.com", "pg-prod", first, 0))
            .await
            .unwrap();
        assert_eq!(r.status, "pending", "{who}: the rule's cap is 0 now");

        // Nor after the window: 1 minute, decided 2 minutes ago.
        let short = cp
            .open_review(scoped_review("alice@example.com", "pg-short", first, 10))
            .await
            .unwrap();
        let (status, body) = approve(
            &cp,
            &short.id,
            &bob,
            Some(r#"{"scope":"fingerprint","minutes":1}"#),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{who}: {body}");
        let within = cp
            .open_review(scoped_review("alice@example.com", "pg-short", second, 10))
            .await
            .unwrap();
        assert_eq!(within.status, "approved", "{who}: within the minute");
        age_decision(&cp, &short.id, chrono::Duration::minutes(2)).await;
        let after = cp
            .open_review(scoped_review("alice@example.com", "pg-short", second, 10))
            .await
            .unwrap();
        assert_eq!(after.status, "pending", "{who}: the window has passed");
    }
}

#[tokio::test]
async fn an_approval_scope_must_fit_the_rule() {
    for (backend, cp) in backends().await {
        let who = backend.name();
        let _alice = person(&cp, "alice@example.com", &[]).await;
        let bob = person(&cp, "bob@example.com", &["dba"]).await;
        let statement = "DELETE FROM t WHERE id = 1";

        let capped = cp
            .open_review(scoped_review("alice@example.com", "pg-prod", statement, 10))
            .await
            .unwrap();
        for body in [
            r#"{"scope":"fingerprint","minutes":11}"#,
            r#"{"scope":"fingerprint","minutes":0}"#,
            r#"{"scope":"fingerprint"}"#,
            r#"{"scope":"once","minutes":5}"#,
            r#"{"scope":"forever","minutes":5}"#,
        ] {
            let (status, reply) = approve(&cp, &capped.id, &bob, Some(body)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{who}: {body}: {reply}");
        }
        let (status, reply) = deny(
            &cp,
            &capped.id,
            &bob,
            Some(r#"{"scope":"fingerprint","minutes":5}"#),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{who}: {reply}");
        let now = review(&cp, &capped.id).await;
        assert_eq!(now.status, "pending", "{who}");
        assert!(now.decisions.is_empty(), "{who}: refusals decide nothing");
        let refused = trail(&cp, &capped.id)
            .await
            .iter()
            .filter(|e| action(e) == "refused")
            .count();
        assert_eq!(refused, 6, "{who}: every refusal is audited");

        let once_only = cp
            .open_review(scoped_review("alice@example.com", "pg-prod", statement, 0))
            .await
            .unwrap();
        let (status, reply) = approve(
            &cp,
            &once_only.id,
            &bob,
            Some(r#"{"scope":"fingerprint","minutes":1}"#),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{who}: {reply}");
        assert!(
            error_text(&reply).contains("this execution only"),
            "{who}: {reply}"
        );
        assert_eq!(review(&cp, &once_only.id).await.status, "pending", "{who}");
        // And it still takes a plain approval.
        let (status, reply) = approve(&cp, &once_only.id, &bob, None).await;
        assert_eq!(status, StatusCode::OK, "{who}: {reply}");
    }
}
