//! Role bindings, each scenario on both PostgreSQL and SQLite: CRUD, the admin
//! role through a binding, approver bindings on reviews (never for the
//! requester), and `[[binding]]` sections synced from the policy.

#![cfg(test)]

#[path = "support/backends.rs"]
mod backends;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use countersign_common::Secret;
use countersign_control_plane::bindings::Role;
use countersign_control_plane::reviews::NewReview;
use countersign_control_plane::store::StoreError;
use countersign_control_plane::store::audit::AuditFilter;
use countersign_control_plane::store::identities::IdentityKind;
use countersign_control_plane::store::resources::ResourceSpec;
use countersign_control_plane::store::role_bindings::RoleBindingSpec;
use countersign_control_plane::{ControlPlane, ServiceError, Settings, Store};
use http_body_util::BodyExt;
use serde_json::Value;
use std::time::Duration;
use tower::ServiceExt;

use backends::Backend;

/// Both backends, each with a control plane on a fresh store.
async fn backends() -> Vec<(Backend, ControlPlane)> {
    let mut out = Vec::new();
    for (backend, store) in Backend::stores("cs_bindings").await {
        out.push((backend, control_plane(store).await));
    }
    out
}

fn bootstrap_token() -> String {
    "a".repeat(32)
}

async fn control_plane(store: Store) -> ControlPlane {
    let settings = Settings::new(Secret::new(bootstrap_token()), Secret::new("g".repeat(32)));
    let cp = ControlPlane::new(store, settings).await.unwrap();
    for (name, environment) in [("pg-prod-eu", "production"), ("pg-staging", "staging")] {
        cp.upsert_resource(&ResourceSpec {
            name: name.to_owned(),
            kind: "postgres".to_owned(),
            environment: environment.to_owned(),
            strict_audit: false,
        })
        .await
        .unwrap();
    }
    cp
}

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

fn spec(role: &str, member: &str, resources: &[&str], environments: &[&str]) -> RoleBindingSpec {
    RoleBindingSpec {
        role: role.to_owned(),
        member: member.to_owned(),
        resources: resources.iter().map(|s| (*s).to_owned()).collect(),
        environments: environments.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn new_review(requester: &str, resource: &str) -> NewReview {
    NewReview {
        session_id: "0190f000-0000-7000-8000-000000000001".to_owned(),
        requester: requester.to_owned(),
        resource: resource.to_owned(),
        statement: "DELETE FROM orders WHERE id = 42".to_owned(),
        kinds: vec!["delete".to_owned()],
        rule: "deletes-need-review".to_owned(),
        message: None,
        approvals_required: 1,
        approvers: Vec::new(),
        timeout: Duration::from_secs(60),
        max_approval_minutes: 0,
    }
}

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

#[tokio::test]
async fn bindings_are_created_listed_deleted_and_unique() {
    for (backend, cp) in backends().await {
        let who = backend.name();
        let b = cp
            .create_binding(
                &spec("approver", "group:dba", &["pg-prod*", "pg-prod*"], &[]),
                "admin@example.com",
            )
            .await
            .unwrap();
        assert_eq!(b.resources, vec!["pg-prod*"], "{who}: globs deduplicated");
        assert_eq!(b.created_by, "admin@example.com");
        // The same scope, spelt again, is the same binding.
        let again = cp
            .create_binding(
                &spec("approver", "group:dba", &["pg-prod*"], &[]),
                "someone-else",
            )
            .await;
        assert!(
            matches!(again, Err(ServiceError::Store(StoreError::Conflict { .. }))),
            "{who}: {again:?}"
        );
        // Another role or scope is another binding.
        let other = cp
            .create_binding(&spec("auditor", "group:dba", &["pg-prod*"], &[]), "x")
            .await
            .unwrap();
        for bad in [
            spec("superuser", "group:dba", &[], &[]),
            spec("admin", "dba", &[], &[]),
            spec("admin", "user:not-an-email", &[], &[]),
            spec("admin", "group:dba", &["pg_[a-z]"], &[]),
        ] {
            let err = cp.create_binding(&bad, "x").await;
            assert!(
                matches!(err, Err(ServiceError::Invalid(_))),
                "{who}: {bad:?}: {err:?}"
            );
        }
        let all = cp.list_bindings().await.unwrap();
        assert_eq!(all.len(), 2, "{who}");
        assert!(cp.delete_binding(&b.id).await.unwrap());
        assert!(!cp.delete_binding(&b.id).await.unwrap(), "{who}: gone");
        let all = cp.list_bindings().await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].id, other.id);
    }
}

#[tokio::test]
async fn an_admin_binding_opens_the_admin_api() {
    for (backend, cp) in backends().await {
        let who = backend.name();
        let dana = person(&cp, "dana@example.com", &["platform"]).await;
        let (status, _) = call(&cp, "GET", "/api/v1/bindings", &dana, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{who}");
        let body = r#"{"role":"admin","member":"group:platform"}"#;
        let (status, _) = call(&cp, "POST", "/api/v1/bindings", &dana, Some(body)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{who}: not yet an admin");

        let (status, created) = call(
            &cp,
            "POST",
            "/api/v1/bindings",
            &bootstrap_token(),
            Some(body),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{who}: {created}");
        let (status, _) = call(
            &cp,
            "POST",
            "/api/v1/bindings",
            &bootstrap_token(),
            Some(body),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "{who}");

        // Dana is now an admin through the binding (same token, no new group).
        let p = cp.principal(&dana).await.unwrap();
        assert!(cp.has_role(&p, Role::Admin, None, None).await.unwrap());
        let (status, body) = call(&cp, "GET", "/api/v1/identities", &dana, None).await;
        assert_eq!(status, StatusCode::OK, "{who}: {body}");
        let spec =
            r#"{"role":"approver","member":"user:carol@example.com","resources":["pg-prod*"]}"#;
        let (status, b) = call(&cp, "POST", "/api/v1/bindings", &dana, Some(spec)).await;
        assert_eq!(status, StatusCode::CREATED, "{who}: {b}");
        let (status, list) = call(&cp, "GET", "/api/v1/bindings", &dana, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list["bindings"].as_array().unwrap().len(), 2, "{who}");
        let id = b["id"].as_str().unwrap();
        let uri = format!("/api/v1/bindings/{id}");
        let (status, _) = call(&cp, "DELETE", &uri, &dana, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{who}");
        let (status, _) = call(&cp, "DELETE", &uri, &dana, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{who}");

        // Removing the admin binding takes the role away at once.
        let admin_id = created["id"].as_str().unwrap();
        let uri = format!("/api/v1/bindings/{admin_id}");
        let (status, _) = call(&cp, "DELETE", &uri, &dana, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{who}");
        let (status, _) = call(&cp, "GET", "/api/v1/identities", &dana, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{who}");

        // The document lists the new routes.
        let (_, doc) = call(&cp, "GET", "/api/v1/openapi.json", &dana, None).await;
        assert!(doc["paths"]["/api/v1/bindings"].is_object(), "{who}");
        assert!(doc["paths"]["/api/v1/bindings/{id}"].is_object(), "{who}");
    }
}

#[tokio::test]
async fn an_auditor_binding_allows_audit_search_only() {
    for (backend, cp) in backends().await {
        let who = backend.name();
        let ann = person(&cp, "ann@example.com", &[]).await;
        let (status, _) = call(&cp, "GET", "/api/v1/audit", &ann, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{who}");
        cp.create_binding(&spec("auditor", "user:ann@example.com", &[], &[]), "t")
            .await
            .unwrap();
        let (status, body) = call(&cp, "GET", "/api/v1/audit", &ann, None).await;
        assert_eq!(status, StatusCode::OK, "{who}: {body}");
        let (status, _) = call(&cp, "GET", "/api/v1/identities", &ann, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{who}: auditor is not admin");
    }
}

#[tokio::test]
async fn a_scoped_approver_binding_makes_carol_eligible_on_matching_resources_only() {
    for (backend, cp) in backends().await {
        let who = backend.name();
        person(&cp, "alice@example.com", &[]).await;
        let carol = person(&cp, "carol@example.com", &["dev"]).await;
        cp.create_binding(&spec("approver", "group:dev", &["pg-prod*"], &[]), "t")
            .await
            .unwrap();
        let p = cp.principal(&carol).await.unwrap();
        assert!(
            cp.has_role(&p, Role::Approver, Some("pg-prod-eu"), Some("production"))
                .await
                .unwrap()
        );
        assert!(
            !cp.has_role(&p, Role::Approver, Some("pg-staging"), Some("staging"))
                .await
                .unwrap()
        );

        let prod = cp
            .open_review(new_review("alice@example.com", "pg-prod-eu"))
            .await
            .unwrap();
        let staging = cp
            .open_review(new_review("alice@example.com", "pg-staging"))
            .await
            .unwrap();
        let listed = cp.list_reviews(&p, false).await.unwrap();
        let ids: Vec<&str> = listed.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, vec![prod.id.as_str()], "{who}");

        let uri = format!("/api/v1/reviews/{}/approve", staging.id);
        let (status, body) = call(&cp, "POST", &uri, &carol, Some("{}")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{who}: {body}");
        let uri = format!("/api/v1/reviews/{}/approve", prod.id);
        let (status, body) = call(&cp, "POST", &uri, &carol, Some("{}")).await;
        assert_eq!(status, StatusCode::OK, "{who}: {body}");
        assert_eq!(body["status"], "approved", "{who}");

        // A review that names its own approvers is not widened by bindings.
        let mut named = new_review("alice@example.com", "pg-prod-eu");
        named.approvers = vec!["group:dba".to_owned()];
        let named = cp.open_review(named).await.unwrap();
        let uri = format!("/api/v1/reviews/{}/approve", named.id);
        let (status, _) = call(&cp, "POST", &uri, &carol, Some("{}")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{who}");

        // An environment-scoped binding works on the resource's environment.
        let erin = person(&cp, "erin@example.com", &[]).await;
        cp.create_binding(
            &spec("approver", "user:erin@example.com", &[], &["stag*"]),
            "t",
        )
        .await
        .unwrap();
        let uri = format!("/api/v1/reviews/{}/approve", staging.id);
        let (status, body) = call(&cp, "POST", &uri, &erin, Some("{}")).await;
        assert_eq!(status, StatusCode::OK, "{who}: {body}");
    }
}

#[tokio::test]
async fn a_requester_with_an_approver_binding_is_still_refused_and_audited() {
    for (backend, cp) in backends().await {
        let who = backend.name();
        let alice = person(&cp, "alice@example.com", &[]).await;
        for binding in [
            spec("approver", "user:alice@example.com", &["pg-prod-eu"], &[]),
            spec("approver", "user:alice@example.com", &[], &[]),
            spec("admin", "user:alice@example.com", &[], &[]),
        ] {
            cp.create_binding(&binding, "t").await.unwrap();
        }
        let r = cp
            .open_review(new_review("alice@example.com", "pg-prod-eu"))
            .await
            .unwrap();
        for verb in ["approve", "deny"] {
            let uri = format!("/api/v1/reviews/{}/{verb}", r.id);
            let (status, body) = call(&cp, "POST", &uri, &alice, Some("{}")).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{who}: {verb}: {body}");
            let error = body["error"].as_str().unwrap_or_default();
            assert!(error.contains("segregation of duties"), "{who}: {error}");
        }
        let p = cp.principal(&alice).await.unwrap();
        assert!(
            cp.list_reviews(&p, false).await.unwrap().is_empty(),
            "{who}"
        );
        let after = cp.review(&r.id).await.unwrap().unwrap();
        assert_eq!(after.status, "pending", "{who}");
        assert!(after.decisions.is_empty(), "{who}");

        let events = cp
            .search_audit(&AuditFilter {
                session_id: Some(format!("review:{}", r.id)),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        let refused: Vec<_> = events
            .iter()
            .filter(|e| {
                e.detail
                    .as_ref()
                    .and_then(|d| d.get("action"))
                    .and_then(Value::as_str)
                    == Some("refused")
            })
            .collect();
        assert_eq!(refused.len(), 2, "{who}: both attempts audited");
        assert!(refused.iter().all(|e| e.identity == "alice@example.com"));
    }
}

#[tokio::test]
async fn policy_bindings_are_synced_and_api_bindings_left_alone() {
    for (backend, cp) in backends().await {
        let who = backend.name();
        let api = cp
            .create_binding(&spec("auditor", "group:sec", &[], &[]), "admin@example.com")
            .await
            .unwrap();
        let v1 = cp
            .apply_policy(
                r#"
[[binding]]
role = "approver"
members = ["group:dba", "user:carol@example.com"]
resources = ["pg-prod*"]

[[binding]]
role = "auditor"
members = ["group:sec"]
"#,
                "admin@example.com",
            )
            .await
            .unwrap();
        let all = cp.list_bindings().await.unwrap();
        let from_policy: Vec<_> = all
            .iter()
            .filter(|b| b.created_by.starts_with("policy:"))
            .collect();
        assert_eq!(from_policy.len(), 2, "{who}: {all:?}");
        assert!(
            from_policy
                .iter()
                .all(|b| b.created_by == format!("policy:{}", v1.version)
                    && b.role == "approver"
                    && b.resources == vec!["pg-prod*"])
        );
        // The auditor binding the policy repeats already exists via the API: kept as is.
        assert!(
            all.iter()
                .any(|b| b.id == api.id && b.created_by == "admin@example.com")
        );
        assert_eq!(all.len(), 3, "{who}");

        // A new version keeps one binding, drops the other.
        let v2 = cp
            .apply_policy(
                r#"
[[binding]]
role = "approver"
members = ["group:dba"]
resources = ["pg-prod*"]
"#,
                "admin@example.com",
            )
            .await
            .unwrap();
        let all = cp.list_bindings().await.unwrap();
        assert_eq!(all.len(), 2, "{who}: {all:?}");
        assert!(
            all.iter().any(
                |b| b.member == "group:dba" && b.created_by == format!("policy:{}", v2.version)
            )
        );
        assert!(all.iter().any(|b| b.id == api.id));

        // A version without bindings removes them; the API binding stays.
        cp.apply_policy("on_parse_error = \"deny\"\n", "admin@example.com")
            .await
            .unwrap();
        let all = cp.list_bindings().await.unwrap();
        assert_eq!(all.len(), 1, "{who}: {all:?}");
        assert_eq!(all[0].id, api.id);

        // An invalid binding refuses the whole policy, and stores nothing.
        let bad = cp
            .apply_policy(
                "[[binding]]\nrole = \"owner\"\nmembers = [\"group:dba\"]\n",
                "admin@example.com",
            )
            .await;
        assert!(
            matches!(bad, Err(ServiceError::InvalidPolicy(_))),
            "{who}: {bad:?}"
        );
        assert_eq!(cp.list_bindings().await.unwrap().len(), 1);
    }
}
