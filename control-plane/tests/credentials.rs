//! Service-account credentials: API keys and workload (CI OIDC) tokens
//! exchanged for access tokens, each scenario on PostgreSQL and SQLite.
//!
//! Exchanges go through the real HTTP router (`Router::oneshot`). The
//! workload tests run an OIDC issuer in-process on `127.0.0.1:0` (discovery
//! document and JWKS) and sign pipeline tokens with its Ed25519 and P-256 keys.

#![cfg(test)]

#[path = "support/backends.rs"]
mod backends;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use countersign_common::Secret;
use countersign_control_plane::store::audit::{AuditEventView, AuditFilter};
use countersign_control_plane::store::identities::IdentityKind;
use countersign_control_plane::{ControlPlane, Settings, Store};
use http_body_util::BodyExt;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use tower::ServiceExt;

use backends::Backend;
use countersign_testkit::oidc::Issuer;

/// Both backends, each with a fresh store.
async fn backends() -> Vec<(Backend, Store)> {
    Backend::stores("cs_creds").await
}

const ADMIN: &str = "admin-token-for-tests";
const ACCOUNT: &str = "ci-deploy";

async fn control_plane(store: Store) -> ControlPlane {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let settings = Settings::new(
        Secret::new(ADMIN.to_owned()),
        Secret::new("gateway-token".to_owned()),
    );
    ControlPlane::new(store, settings).await.unwrap()
}

/// Sends one request through the router; returns the status and the JSON body.
async fn call(
    cp: &ControlPlane,
    method: &str,
    uri: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let router: Router = countersign_control_plane::api::router(cp.clone());
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(b) = bearer {
        req = req.header("authorization", format!("Bearer {b}"));
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let text = body.map(|b| b.to_string()).unwrap_or_default();
    let res = router
        .oneshot(req.body(Body::from(text)).unwrap())
        .await
        .unwrap();
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

async fn auth_events(cp: &ControlPlane) -> Vec<AuditEventView> {
    cp.search_audit(&AuditFilter {
        session_id: Some(format!("auth:{ACCOUNT}")),
        event: Some("auth".to_owned()),
        limit: 1000,
        ..AuditFilter::default()
    })
    .await
    .unwrap()
}

fn refusals(events: &[AuditEventView]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e.detail.as_ref())
        .filter(|d| d["action"] == "refused")
        .map(|d| d["reason"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test]
async fn api_keys_exchange_authenticate_and_revoke() {
    for (backend, store) in backends().await {
        let who = backend.name();
        let cp = control_plane(store).await;
        let account = cp
            .store()
            .create_identity(
                ACCOUNT,
                IdentityKind::Service,
                None,
                &["deployers".to_owned()],
            )
            .await
            .unwrap();

        // Created once; the listing never shows the key.
        let (status, created) = call(
            &cp,
            "POST",
            &format!("/api/v1/service-accounts/{ACCOUNT}/keys"),
            Some(ADMIN),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{who}: {created}");
        let key = created["key"].as_str().unwrap().to_owned();
        let key_id = created["id"].as_str().unwrap().to_owned();
        assert!(key.starts_with(&format!("csk_{key_id}_")), "{who}: {key}");
        let (status, list) = call(
            &cp,
            "GET",
            &format!("/api/v1/service-accounts/{ACCOUNT}/keys"),
            Some(ADMIN),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{who}");
        assert_eq!(list["keys"].as_array().unwrap().len(), 1, "{who}");
        assert!(
            !list.to_string().contains(&key[key_id.len() + 5..]),
            "{who}"
        );
        assert!(list["keys"][0]["last_used_at"].is_null(), "{who}");

        // Exchange, with and without a body; the token authenticates.
        let (status, issued) = call(&cp, "POST", "/api/v1/auth/token", Some(&key), None).await;
        assert_eq!(status, StatusCode::OK, "{who}: {issued}");
        let (identity, claims) = cp
            .authenticate(issued["token"].as_str().unwrap())
            .await
            .unwrap();
        assert_eq!(identity.id, account.id, "{who}");
        assert_eq!(claims.groups, vec!["deployers"], "{who}");
        let lifetime = claims.exp - claims.iat;
        assert_eq!(lifetime, 900, "{who}: default lifetime is 15 minutes");
        let (status, issued) = call(
            &cp,
            "POST",
            "/api/v1/auth/token",
            Some(&key),
            Some(json!({"ttl_seconds": 60})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{who}: {issued}");
        let (status, body) = call(
            &cp,
            "POST",
            "/api/v1/auth/token",
            Some(&key),
            Some(json!({"ttl_seconds": 7200})),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{who}: {body}");
        let (_, list) = call(
            &cp,
            "GET",
            &format!("/api/v1/service-accounts/{ACCOUNT}/keys"),
            Some(ADMIN),
            None,
        )
        .await;
        assert!(!list["keys"][0]["last_used_at"].is_null(), "{who}");

        // A forged secret for a real key id is refused and audited.
        let forged = format!("csk_{key_id}_{}", URL_SAFE_NO_PAD.encode([1u8; 32]));
        let (status, body) = call(&cp, "POST", "/api/v1/auth/token", Some(&forged), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{who}: {body}");
        assert_eq!(body["error"], "API key is not valid", "{who}");
        let (status, _) = call(&cp, "POST", "/api/v1/auth/token", Some("csk_garbage"), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{who}");
        // An admin token is not an API key.
        let (status, _) = call(&cp, "POST", "/api/v1/auth/token", Some(ADMIN), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{who}");

        // Revoked: refused.
        let (status, revoked) = call(
            &cp,
            "DELETE",
            &format!("/api/v1/service-accounts/{ACCOUNT}/keys/{key_id}"),
            Some(ADMIN),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{who}: {revoked}");
        assert!(!revoked["revoked_at"].is_null(), "{who}");
        let (status, body) = call(&cp, "POST", "/api/v1/auth/token", Some(&key), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{who}: {body}");
        assert_eq!(body["error"], "API key has been revoked", "{who}");

        // A disabled account's key: refused.
        let second = cp.create_api_key(ACCOUNT).await.unwrap();
        assert!(
            cp.exchange_api_key(&second.key, None).await.is_ok(),
            "{who}"
        );
        cp.store().set_disabled(&account.id, true).await.unwrap();
        let (status, body) = call(&cp, "POST", "/api/v1/auth/token", Some(&second.key), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{who}: {body}");
        assert_eq!(
            body["error"],
            format!("service account {ACCOUNT} is disabled"),
            "{who}"
        );

        // Keys only for service accounts; only admins manage them.
        cp.store()
            .create_identity("alice@example.com", IdentityKind::User, None, &[])
            .await
            .unwrap();
        let (status, _) = call(
            &cp,
            "POST",
            "/api/v1/service-accounts/alice@example.com/keys",
            Some(ADMIN),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{who}");
        let user = cp
            .issue_token("bob@example.com", &[], None, "test")
            .await
            .unwrap();
        let (status, _) = call(
            &cp,
            "POST",
            &format!("/api/v1/service-accounts/{ACCOUNT}/keys"),
            Some(&user.token),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{who}");

        let (status, doc) = call(&cp, "GET", "/api/v1/openapi.json", None, None).await;
        assert_eq!(status, StatusCode::OK, "{who}");
        for path in [
            "/api/v1/service-accounts/{name}/keys",
            "/api/v1/service-accounts/{name}/keys/{id}",
            "/api/v1/service-accounts/{name}/workload",
            "/api/v1/auth/token",
            "/api/v1/auth/workload",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{who}: {path}");
        }

        let events = auth_events(&cp).await;
        let accepted = events
            .iter()
            .filter(|e| e.detail.as_ref().unwrap()["action"] == "api_key_exchanged")
            .count();
        assert_eq!(accepted, 3, "{who}: {events:?}");
        assert_eq!(
            refusals(&events),
            vec![
                "API key is not valid".to_owned(),
                "API key has been revoked".to_owned(),
                format!("service account {ACCOUNT} is disabled"),
            ],
            "{who}"
        );
        cp.store().clone().close().await.unwrap();
    }
}

async fn exchange(cp: &ControlPlane, token: &str) -> (StatusCode, Value) {
    call(
        cp,
        "POST",
        "/api/v1/auth/workload",
        None,
        Some(json!({"service_account": ACCOUNT, "token": token})),
    )
    .await
}

#[tokio::test]
async fn workload_tokens_are_checked_claim_by_claim() {
    let issuer = Issuer::start().await.unwrap();
    for (backend, store) in backends().await {
        let who = backend.name();
        let cp = control_plane(store).await;
        cp.store()
            .create_identity(
                ACCOUNT,
                IdentityKind::Service,
                None,
                &["deployers".to_owned()],
            )
            .await
            .unwrap();

        // An unknown account looks like one without trust.
        let (status, body) = call(
            &cp,
            "POST",
            "/api/v1/auth/workload",
            None,
            Some(json!({"service_account": "nobody", "token": issuer.sign(&issuer.claims()).unwrap()})),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{who}: {body}");
        assert_eq!(
            body["error"], "no workload trust is configured for this service account",
            "{who}"
        );

        // No trust yet: refused.
        let (status, body) = exchange(&cp, &issuer.sign(&issuer.claims()).unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{who}: {body}");

        // Trust is admin-only and validated.
        let trust = json!({
            "issuer": issuer.url,
            "audience": "countersign",
            "claims": {"repository": "acme/app", "ref": "refs/heads/main"},
        });
        let path = format!("/api/v1/service-accounts/{ACCOUNT}/workload");
        let (status, _) = call(&cp, "PUT", &path, None, Some(trust.clone())).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{who}");
        let (status, body) = call(
            &cp,
            "PUT",
            &path,
            Some(ADMIN),
            Some(json!({"issuer": "http://issuer.example.com", "audience": "countersign"})),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{who}: {body}");
        let (status, body) = call(&cp, "PUT", &path, Some(ADMIN), Some(trust)).await;
        assert_eq!(status, StatusCode::OK, "{who}: {body}");

        // A good token (EdDSA, then ES256, then RS256) is exchanged, and the access token works.
        let (status, issued) = exchange(&cp, &issuer.sign(&issuer.claims()).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{who}: {issued}");
        let (identity, claims) = cp
            .authenticate(issued["token"].as_str().unwrap())
            .await
            .unwrap();
        assert_eq!(identity.email, ACCOUNT, "{who}");
        assert_eq!(claims.groups, vec!["deployers"], "{who}");
        assert!(claims.exp - claims.iat <= 3600, "{who}");
        let es = issuer
            .sign_with(&issuer.ec, Algorithm::ES256, "ec1", &issuer.claims())
            .unwrap();
        let (status, body) = exchange(&cp, &es).await;
        assert_eq!(status, StatusCode::OK, "{who}: {body}");
        let rs = issuer
            .sign_with(&issuer.rs, Algorithm::RS256, "rs1", &issuer.claims())
            .unwrap();
        let (status, body) = exchange(&cp, &rs).await;
        assert_eq!(status, StatusCode::OK, "{who}: {body}");

        // Each mismatch is refused with its reason.
        let with = |k: &str, v: Value| {
            let mut c = issuer.claims();
            c[k] = v;
            c
        };
        let mut no_ref = issuer.claims();
        no_ref.as_object_mut().unwrap().remove("ref");
        let now = chrono::Utc::now().timestamp();
        let mut expired = issuer.claims();
        expired["iat"] = json!(now - 900);
        expired["nbf"] = json!(now - 900);
        expired["exp"] = json!(now - 120);
        let cases = [
            (
                issuer.sign(&with("aud", json!("someone-else"))).unwrap(),
                "audience mismatch",
            ),
            (
                issuer
                    .sign(&with("repository", json!("acme/evil")))
                    .unwrap(),
                "claim repository mismatch",
            ),
            (issuer.sign(&no_ref).unwrap(), "claim ref missing"),
            (
                issuer
                    .sign(&with("iss", json!("https://evil.example.com")))
                    .unwrap(),
                "issuer mismatch",
            ),
            (issuer.sign(&expired).unwrap(), "token expired"),
            (
                issuer
                    .sign_with(&issuer.ed, Algorithm::EdDSA, "nope", &issuer.claims())
                    .unwrap(),
                "unknown signing key",
            ),
            (
                issuer
                    .sign_with(&issuer.other, Algorithm::EdDSA, "ed1", &issuer.claims())
                    .unwrap(),
                "signature invalid",
            ),
            // An RSA signature under the Ed25519 key's id.
            (
                issuer
                    .sign_with(&issuer.rs, Algorithm::RS256, "ed1", &issuer.claims())
                    .unwrap(),
                "signing key does not fit the token's algorithm",
            ),
            // The EC key used as if it were the Ed25519 one.
            (
                issuer
                    .sign_with(&issuer.ec, Algorithm::ES256, "ed1", &issuer.claims())
                    .unwrap(),
                "signing key does not fit the token's algorithm",
            ),
            ("not-a-jwt".to_owned(), "token malformed"),
        ];
        for (token, reason) in &cases {
            let (status, body) = exchange(&cp, token).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{who}: {reason}: {body}");
            assert_eq!(body["error"], *reason, "{who}");
        }
        // Within the 30 s leeway, a just-expired token still passes.
        let (status, body) =
            exchange(&cp, &issuer.sign(&with("exp", json!(now - 5))).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{who}: {body}");

        // Every exchange was audited.
        let events = auth_events(&cp).await;
        let accepted: Vec<_> = events
            .iter()
            .filter_map(|e| e.detail.as_ref())
            .filter(|d| d["action"] == "workload_exchanged")
            .collect();
        assert_eq!(accepted.len(), 4, "{who}: {events:?}");
        assert_eq!(
            accepted[0]["token_sub"], "repo:acme/app:ref:refs/heads/main",
            "{who}"
        );
        let mut want = vec!["no workload trust is configured for this service account"];
        want.extend(cases.iter().map(|(_, r)| *r));
        assert_eq!(refusals(&events), want, "{who}");
        cp.store().clone().close().await.unwrap();
    }
}
