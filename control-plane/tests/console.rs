//! The web console in process, on both backends: an access request decided
//! through the console's forms (CSRF, the requester refused, a different
//! person approving), the pages' access rules, and the security headers.
//! The browser tests (tests/e2e/console.rs) cover held statements, audit and
//! the admin pages end to end.

#![cfg(test)]

#[path = "support/backends.rs"]
mod backends;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use countersign_common::Secret;
use countersign_control_plane::grants::GrantRequest;
use countersign_control_plane::store::identities::IdentityKind;
use countersign_control_plane::store::resources::ResourceSpec;
use countersign_control_plane::{ControlPlane, Settings};
use http_body_util::BodyExt;
use tower::ServiceExt;

use backends::Backend;

const POLICY: &str = r#"
[[binding]]
role = "requester"
members = ["group:eng"]

[[grant]]
name = "prod"
resources = ["pg-prod"]
levels = ["read-write"]
max_duration = "1h"
approvals = 1
approvers = ["group:dba"]
"#;

/// A console session: (cookie value, CSRF token).
async fn session(cp: &ControlPlane, email: &str, groups: &[&str]) -> (String, String) {
    use sha2::Digest;
    let groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
    let identity = cp
        .store()
        .create_identity(email, IdentityKind::User, None, &groups)
        .await
        .unwrap();
    let cookie = format!("cookie-{}", uuid::Uuid::new_v4());
    let csrf = format!("csrf-{}", uuid::Uuid::new_v4());
    let now = chrono::Utc::now();
    cp.store()
        .insert_console_session(
            &hex::encode(sha2::Sha256::digest(cookie.as_bytes())),
            &identity.id,
            &csrf,
            now,
            now + chrono::Duration::hours(1),
        )
        .await
        .unwrap();
    (cookie, csrf)
}

struct Answer {
    status: StatusCode,
    location: String,
    csp: String,
    body: String,
}

async fn send(cp: &ControlPlane, req: Request<Body>) -> Answer {
    let res = countersign_control_plane::api::router(cp.clone())
        .oneshot(req)
        .await
        .unwrap();
    let text = |name: header::HeaderName| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (status, location, csp) = (
        res.status(),
        text(header::LOCATION),
        text(header::CONTENT_SECURITY_POLICY),
    );
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        location,
        csp,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

async fn get(cp: &ControlPlane, path: &str, cookie: Option<&str>) -> Answer {
    let mut req = Request::get(path);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, format!("__Host-countersign={c}"));
    }
    send(cp, req.body(Body::empty()).unwrap()).await
}

async fn post(cp: &ControlPlane, path: &str, cookie: &str, form: &str) -> Answer {
    let req = Request::post(path)
        .header(header::COOKIE, format!("__Host-countersign={cookie}"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form.to_owned()))
        .unwrap();
    send(cp, req).await
}

#[tokio::test]
async fn grants_are_decided_through_console_forms_by_someone_else() {
    for (backend, store) in Backend::stores("cs_console").await {
        let who = backend.name();
        let settings = Settings::new(Secret::new("a".repeat(32)), Secret::new("g".repeat(32)));
        let cp = ControlPlane::new(store, settings).await.unwrap();
        cp.upsert_resource(&ResourceSpec {
            name: "pg-prod".to_owned(),
            kind: "postgres".to_owned(),
            environment: "production".to_owned(),
            strict_audit: false,
        })
        .await
        .unwrap();
        cp.apply_policy(POLICY, "admin@example.com").await.unwrap();
        let (alice, alice_csrf) = session(&cp, "alice@example.com", &["eng", "dba"]).await;
        let (bob, bob_csrf) = session(&cp, "bob@example.com", &["dba"]).await;
        let alice_p = cp
            .session_principal(&cp.console_session(&alice).await.unwrap())
            .await
            .unwrap();
        let grant = cp
            .request_grant(
                &alice_p,
                GrantRequest {
                    resource: "pg-prod".to_owned(),
                    level: "read-write".to_owned(),
                    duration_secs: 1800,
                    reason: "fix <b>order</b> 7".to_owned(),
                    ticket: Some("INC-42".to_owned()),
                },
            )
            .await
            .unwrap();
        let page = format!("/grants/{}", grant.id);
        let decide = format!("{page}/decide");

        // Not signed in: to the sign-in page and back; headers on every answer.
        let bare = get(&cp, &page, None).await;
        assert_eq!(bare.status, StatusCode::SEE_OTHER, "{who}");
        assert_eq!(
            bare.location,
            format!("/auth/login?return_to=%2Fgrants%2F{}", grant.id),
            "{who}"
        );
        assert!(
            bare.csp.starts_with("default-src 'none'"),
            "{who}: {}",
            bare.csp
        );

        // Bob's inbox has it; Alice's does not (her own), though she is a dba.
        let inbox = get(&cp, "/inbox", Some(&bob)).await;
        assert_eq!(inbox.status, StatusCode::OK, "{who}");
        assert!(inbox.body.contains(&page), "{who}: {}", inbox.body);
        assert!(inbox.body.contains("fix ") && !inbox.body.contains("<b>order"),);
        let own_inbox = get(&cp, "/inbox", Some(&alice)).await;
        assert!(!own_inbox.body.contains(&page), "{who}");
        assert!(
            get(&cp, "/mine", Some(&alice)).await.body.contains(&page),
            "{who}"
        );

        // Alice's page: no buttons; a forced approval is refused by the service.
        let own = get(&cp, &page, Some(&alice)).await;
        assert_eq!(own.status, StatusCode::OK, "{who}");
        assert!(!own.body.contains("id=\"approve\""), "{who}");
        assert!(own.body.contains("id=\"own-request\""), "{who}");
        let forced = post(
            &cp,
            &decide,
            &alice,
            &format!("csrf_token={alice_csrf}&decision=approve"),
        )
        .await;
        assert_eq!(
            forced.status,
            StatusCode::FORBIDDEN,
            "{who}: {}",
            forced.body
        );
        assert!(forced.body.contains("Your decision was refused"), "{who}");

        // Bob: without the CSRF token, or with Alice's, nothing happens.
        for form in [
            "decision=approve",
            &format!("csrf_token={alice_csrf}&decision=approve"),
        ] {
            let refused = post(&cp, &decide, &bob, form).await;
            assert_eq!(refused.status, StatusCode::FORBIDDEN, "{who}: {form}");
        }
        let odd = post(
            &cp,
            &decide,
            &bob,
            &format!("csrf_token={bob_csrf}&decision=maybe"),
        )
        .await;
        assert_eq!(odd.status, StatusCode::BAD_REQUEST, "{who}");
        assert_eq!(
            cp.grant_as(&alice_p, &grant.id)
                .await
                .unwrap()
                .unwrap()
                .status,
            "pending"
        );

        // Bob approves with a comment.
        let approved = post(
            &cp,
            &decide,
            &bob,
            &format!("csrf_token={bob_csrf}&decision=approve&comment=ok+for+INC-42"),
        )
        .await;
        assert_eq!(
            approved.status,
            StatusCode::SEE_OTHER,
            "{who}: {}",
            approved.body
        );
        assert_eq!(approved.location, page, "{who}");
        let after = get(&cp, &page, Some(&bob)).await;
        assert!(after.body.contains("ok for INC-42"), "{who}");
        assert!(!after.body.contains("id=\"approve\""), "{who}: decided");
        assert_eq!(
            cp.grant_as(&alice_p, &grant.id)
                .await
                .unwrap()
                .unwrap()
                .status,
            "active"
        );

        // Neither is an auditor or admin.
        for path in [
            "/audit",
            "/sessions/x",
            "/admin/resources",
            "/admin/policies",
        ] {
            let page = get(&cp, path, Some(&bob)).await;
            assert_eq!(page.status, StatusCode::FORBIDDEN, "{who}: {path}");
            assert!(page.csp.contains("frame-ancestors 'none'"), "{who}");
        }
        // The event stream needs a session too.
        assert_eq!(
            get(&cp, "/console/events", None).await.status,
            StatusCode::SEE_OTHER
        );
        let css = get(&cp, "/static/console.css", None).await;
        assert_eq!(css.status, StatusCode::OK, "{who}");
    }
}

/// Two replicas on one PostgreSQL store with the Redis bus: a live page on
/// replica B hears of a request opened on replica A at once, well before
/// the stream's 10-second fallback re-read.
#[tokio::test]
async fn live_events_reach_another_replica_through_the_bus() {
    use futures_util::StreamExt;
    countersign_testkit::ensure_services().unwrap();
    let db = countersign_testkit::TestDb::create("cs_console_bus")
        .await
        .unwrap();
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let store = countersign_control_plane::Store::connect(&db.url())
            .await
            .unwrap();
        let mut settings = Settings::new(Secret::new("a".repeat(32)), Secret::new("g".repeat(32)));
        settings.redis_url = Some("redis://127.0.0.1:6379".to_owned());
        let cp = ControlPlane::new(store, settings).await.unwrap();
        cp.start_bus();
        replicas.push(cp);
    }
    let (a, b) = (&replicas[0], &replicas[1]);
    a.upsert_resource(&ResourceSpec {
        name: "pg-prod".to_owned(),
        kind: "postgres".to_owned(),
        environment: "production".to_owned(),
        strict_audit: false,
    })
    .await
    .unwrap();
    a.apply_policy(POLICY, "admin@example.com").await.unwrap();
    let (alice, _) = session(a, "alice@example.com", &["eng"]).await;
    let (bob, _) = session(a, "bob@example.com", &["dba"]).await;

    let res = countersign_control_plane::api::router(b.clone())
        .oneshot(
            Request::get("/console/events")
                .header(header::COOKIE, format!("__Host-countersign={bob}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers().get(header::CONTENT_TYPE).unwrap(),
        "text/event-stream"
    );
    let mut events = res.into_body().into_data_stream();
    // Let replica B's subscription to Redis settle.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    let alice_p = a
        .session_principal(&a.console_session(&alice).await.unwrap())
        .await
        .unwrap();
    a.request_grant(
        &alice_p,
        GrantRequest {
            resource: "pg-prod".to_owned(),
            level: "read-write".to_owned(),
            duration_secs: 600,
            reason: "replica test".to_owned(),
            ticket: None,
        },
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let chunk = tokio::time::timeout(std::time::Duration::from_secs(4), async {
        loop {
            let chunk = events.next().await.unwrap().unwrap();
            let text = String::from_utf8_lossy(&chunk).into_owned();
            if text.contains("event: change") {
                return text;
            }
        }
    })
    .await
    .expect("replica B's stream heard nothing of replica A's change");
    assert!(chunk.contains("data: changed"), "{chunk}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}
