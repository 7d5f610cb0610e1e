//! Gateway enrollment and mutual TLS, each scenario on PostgreSQL and SQLite.
//!
//! The control plane runs in-process and serves its gRPC listener over real
//! TCP with TLS on `127.0.0.1:0`; clients are tonic channels with or without
//! client certificates. Enrollment tokens are created through the HTTP router.

#![cfg(test)]

#[path = "support/backends.rs"]
mod backends;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use countersign_common::Secret;
use countersign_control_plane::enrollment::GatewayTlsSettings;
use countersign_control_plane::store::audit::{AuditEventView, AuditFilter};
use countersign_control_plane::store::resources::ResourceSpec;
use countersign_control_plane::{ControlPlane, Settings, Store};
use countersign_proto::v1 as pb;
use http_body_util::BodyExt;
use pb::gateway_enrollment_client::GatewayEnrollmentClient;
use pb::gateway_service_client::GatewayServiceClient;
use serde_json::{Value, json};
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tower::ServiceExt;

use backends::Backend;

const ADMIN: &str = "admin-token-for-tests";

/// A control plane with mutual TLS, serving on loopback until dropped.
struct Server {
    cp: ControlPlane,
    grpc: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn start(store: Store, lifetime: Duration) -> Server {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut settings = Settings::new(
        Secret::new(ADMIN.to_owned()),
        Secret::new("gateway-token-not-used-with-tls".to_owned()),
    );
    let mut tls = GatewayTlsSettings::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]);
    tls.gateway_cert_lifetime = lifetime;
    settings.gateway_tls = Some(tls);
    let cp = ControlPlane::new(store, settings).await.unwrap();
    for (name, env) in [("pg-prod", "prod"), ("pg-staging", "staging")] {
        cp.upsert_resource(&ResourceSpec {
            name: name.to_owned(),
            kind: "postgres".to_owned(),
            environment: env.to_owned(),
            strict_audit: false,
        })
        .await
        .unwrap();
    }
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = grpc.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(countersign_control_plane::serve(
        cp.clone(),
        http,
        grpc,
        async move {
            let _ = stopped.await;
        },
    ));
    Server {
        cp,
        grpc: addr,
        stop: Some(stop),
    }
}

/// A fresh key pair (PEM) and a CSR for it.
fn key_and_csr() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    (key.serialize_pem(), csr)
}

async fn channel(server: &Server, ca_pem: &str, identity: Option<(&str, &str)>) -> Channel {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://{}", server.grpc))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_lazy()
}

fn ca_pem(server: &Server) -> String {
    server.cp.ca().unwrap().cert_pem().to_owned()
}

async fn create_token(cp: &ControlPlane, environment: &str, ttl_seconds: u64) -> String {
    let router = countersign_control_plane::api::router(cp.clone());
    let req = Request::builder()
        .method("POST")
        .uri("/api/v1/gateways/enrollment-tokens")
        .header("authorization", format!("Bearer {ADMIN}"))
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"environment": environment, "ttl_seconds": ttl_seconds}).to_string(),
        ))
        .unwrap();
    let res = router.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["environment"], environment);
    body["token"].as_str().unwrap().to_owned()
}

async fn enroll(
    server: &Server,
    token: &str,
    gateway_id: &str,
    csr: &str,
) -> Result<pb::GatewayCertificate, tonic::Status> {
    let mut client = GatewayEnrollmentClient::new(channel(server, &ca_pem(server), None).await);
    client
        .enroll(pb::EnrollRequest {
            token: token.to_owned(),
            csr_pem: csr.to_owned(),
            gateway_id: gateway_id.to_owned(),
            version: "test".to_owned(),
        })
        .await
        .map(|r| r.into_inner())
}

/// Enrolls a gateway and returns a client that presents its certificate.
async fn enrolled(
    server: &Server,
    environment: &str,
    id: &str,
) -> (
    GatewayServiceClient<Channel>,
    pb::GatewayCertificate,
    String,
) {
    let token = create_token(&server.cp, environment, 600).await;
    let (key, csr) = key_and_csr();
    let cert = enroll(server, &token, id, &csr).await.unwrap();
    let ch = channel(server, &cert.ca_pem, Some((&cert.cert_pem, &key))).await;
    (GatewayServiceClient::new(ch), cert, key)
}

async fn refusals(cp: &ControlPlane) -> Vec<String> {
    let events: Vec<AuditEventView> = cp
        .search_audit(&AuditFilter {
            session_id: Some("auth:gateway-enrollment".to_owned()),
            event: Some("auth".to_owned()),
            limit: 1000,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    events
        .iter()
        .filter_map(|e| e.detail.as_ref())
        .filter(|d| d["action"] == "refused")
        .map(|d| d["reason"].as_str().unwrap_or("").to_owned())
        .collect()
}

fn hello(environment: &str) -> pb::GatewayHello {
    pb::GatewayHello {
        gateway_id: "claimed".to_owned(),
        environment: environment.to_owned(),
        version: "test".to_owned(),
        resources: vec![],
    }
}

#[tokio::test]
async fn enrollment_tokens_are_one_time_and_refusals_are_audited() {
    for (backend, store) in Backend::stores("cs_enroll_tokens").await {
        let server = start(store, Duration::from_secs(3600)).await;
        let which = backend.name();

        let token = create_token(&server.cp, "prod", 600).await;
        let (_, csr) = key_and_csr();
        let cert = enroll(&server, &token, "gw-prod-1", &csr).await.unwrap();
        assert_eq!(cert.environment, "prod", "{which}");
        assert_eq!(cert.gateway_id, "gw-prod-1", "{which}");
        assert_eq!(cert.ca_pem, ca_pem(&server), "{which}");
        assert!(
            cert.not_after > chrono::Utc::now().timestamp() + 3000,
            "{which}"
        );
        let recorded = server
            .cp
            .store()
            .gateway("gw-prod-1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(recorded.environment, "prod", "{which}");
        assert_eq!(recorded.not_after.timestamp(), cert.not_after, "{which}");

        // The same token a second time.
        let (_, csr2) = key_and_csr();
        let again = enroll(&server, &token, "gw-prod-2", &csr2)
            .await
            .unwrap_err();
        assert_eq!(again.code(), tonic::Code::Unauthenticated, "{which}");
        assert!(
            again.message().contains("already been used"),
            "{which}: {again}"
        );

        // An expired token.
        let short = create_token(&server.cp, "prod", 1).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let expired = enroll(&server, &short, "gw-prod-3", &csr2)
            .await
            .unwrap_err();
        assert_eq!(expired.code(), tonic::Code::Unauthenticated, "{which}");
        assert!(expired.message().contains("expired"), "{which}: {expired}");

        // Garbage, and a well-formed token that was never issued.
        let garbage = enroll(&server, "not-a-token", "gw-prod-4", &csr2)
            .await
            .unwrap_err();
        assert_eq!(garbage.code(), tonic::Code::Unauthenticated, "{which}");
        assert!(
            garbage.message().contains("not valid"),
            "{which}: {garbage}"
        );
        let forged = format!("cse_{}", "A".repeat(43));
        let forged = enroll(&server, &forged, "gw-prod-4", &csr2)
            .await
            .unwrap_err();
        assert!(forged.message().contains("not valid"), "{which}: {forged}");

        // An id enrolled in prod cannot be taken with a staging token, and
        // the refusal leaves that token usable.
        let staging = create_token(&server.cp, "staging", 600).await;
        let taken = enroll(&server, &staging, "gw-prod-1", &csr2)
            .await
            .unwrap_err();
        assert!(
            taken
                .message()
                .contains("is enrolled in environment \"prod\""),
            "{which}: {taken}"
        );
        let staging_cert = enroll(&server, &staging, "gw-staging-1", &csr2)
            .await
            .unwrap();
        assert_eq!(staging_cert.environment, "staging", "{which}");

        let audited = refusals(&server.cp).await;
        assert_eq!(
            audited,
            vec![
                "the enrollment token has already been used",
                "the enrollment token has expired",
                "the enrollment token is not valid",
                "the enrollment token is not valid",
                "gateway id \"gw-prod-1\" is enrolled in environment \"prod\"; choose another gateway_id for \"staging\"",
            ],
            "{which}"
        );
        // The refused attempts enrolled nothing.
        let enrolled: Vec<_> = server
            .cp
            .store()
            .gateways()
            .await
            .unwrap()
            .into_iter()
            .map(|g| (g.id, g.environment))
            .collect();
        assert_eq!(
            enrolled,
            vec![
                ("gw-prod-1".to_owned(), "prod".to_owned()),
                ("gw-staging-1".to_owned(), "staging".to_owned())
            ],
            "{which}"
        );
    }
}

#[tokio::test]
async fn gateway_calls_need_a_valid_client_certificate_from_the_ca() {
    for (backend, store) in Backend::stores("cs_enroll_mtls").await {
        let server = start(store, Duration::from_secs(2)).await;
        let which = backend.name();
        let ca = ca_pem(&server);

        // No client certificate: the handshake succeeds (enrollment needs
        // that), every gateway call is refused.
        let mut anonymous = GatewayServiceClient::new(channel(&server, &ca, None).await);
        let err = anonymous.watch_config(hello("prod")).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{which}: {err}");
        let (_tx, rx) = tokio::sync::mpsc::channel::<pb::AuditBatch>(1);
        let err = anonymous
            .publish_audit(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{which}: {err}");

        // A certificate from another CA fails the handshake.
        let (other_cert, other_key) =
            countersign_control_plane::enrollment::ca::GatewayCa::generate_pem().unwrap();
        let other =
            countersign_control_plane::enrollment::ca::GatewayCa::from_pem(&other_cert, &other_key)
                .unwrap();
        let (key, csr) = key_and_csr();
        let foreign = other
            .issue_gateway_cert(&csr, "intruder", "prod", Duration::from_secs(600))
            .unwrap();
        let mut intruder =
            GatewayServiceClient::new(channel(&server, &ca, Some((&foreign.cert_pem, &key))).await);
        let err = intruder.watch_config(hello("prod")).await.unwrap_err();
        assert_ne!(err.code(), tonic::Code::Ok, "{which}");
        let (_tx, rx) = tokio::sync::mpsc::channel::<pb::AuditBatch>(1);
        assert!(
            intruder
                .publish_audit(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .is_err(),
            "{which}"
        );

        // A valid certificate works, until it expires (lifetime 2 s here).
        let (mut gateway, cert, key) = enrolled(&server, "prod", "gw-short").await;
        let mut live = gateway
            .watch_config(hello("prod"))
            .await
            .unwrap()
            .into_inner();
        live.message().await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(3500)).await;
        // A stream opened while the certificate was valid ends with it.
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match live.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => return None,
                    Err(status) => return Some(status),
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(
            ended.map(|s| s.code()),
            Some(tonic::Code::Unauthenticated),
            "{which}"
        );
        // A new connection with the expired certificate fails its handshake.
        let mut late = GatewayServiceClient::new(
            channel(&server, &cert.ca_pem, Some((&cert.cert_pem, &key))).await,
        );
        let err = late.watch_config(hello("prod")).await.unwrap_err();
        assert_ne!(err.code(), tonic::Code::Ok, "{which}");
        let (_tx, rx) = tokio::sync::mpsc::channel::<pb::AuditBatch>(1);
        assert!(
            late.publish_audit(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .is_err(),
            "{which}"
        );
        // The connection opened while it was valid is refused per call.
        let err = gateway.watch_config(hello("prod")).await.unwrap_err();
        assert!(
            matches!(
                err.code(),
                tonic::Code::Unauthenticated | tonic::Code::Unavailable
            ),
            "{which}: {err}"
        );
        let (_tx, rx) = tokio::sync::mpsc::channel::<pb::AuditBatch>(1);
        assert!(
            gateway
                .publish_audit(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .is_err(),
            "{which}"
        );
    }
}

#[tokio::test]
async fn the_certificate_decides_the_environment() {
    for (backend, store) in Backend::stores("cs_enroll_env").await {
        let server = start(store, Duration::from_secs(3600)).await;
        let which = backend.name();
        let (mut prod, _, _) = enrolled(&server, "prod", "gw-prod").await;
        let (mut staging, staging_cert, _) = enrolled(&server, "staging", "gw-staging").await;

        // The prod gateway sees prod resources only, whatever it claims.
        for claim in ["prod", "staging", ""] {
            let mut stream = prod.watch_config(hello(claim)).await.unwrap().into_inner();
            let first = stream.message().await.unwrap().unwrap();
            let names: Vec<_> = first.resources.iter().map(|r| r.name.as_str()).collect();
            assert_eq!(names, vec!["pg-prod"], "{which}: claim {claim:?}");
        }
        let mut stream = staging
            .watch_config(hello("prod"))
            .await
            .unwrap()
            .into_inner();
        let first = stream.message().await.unwrap().unwrap();
        let names: Vec<_> = first.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, vec!["pg-staging"], "{which}");

        // A staging gateway cannot open a session on a prod resource.
        let user = server
            .cp
            .issue_token("dev@example.com", &[], None, "test")
            .await
            .unwrap();
        let err = staging
            .authenticate_session(pb::AuthenticateSessionRequest {
                token: user.token.clone(),
                resource: "pg-prod".to_owned(),
                database: String::new(),
                user: "dev@example.com".to_owned(),
                client: None,
                gateway_id: "gw-staging".to_owned(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{which}: {err}");
        assert!(err.message().contains("environment"), "{which}: {err}");

        // Nor hold a prod session's statement for review, or follow a prod review.
        server
            .cp
            .apply_policy(
                "[[access]]\nname = \"all\"\nmembers = [\"*\"]\nlevel = \"read-write\"\nenvironments = [\"prod\", \"staging\"]\n",
                "test",
            )
            .await
            .unwrap();
        let session = prod
            .authenticate_session(pb::AuthenticateSessionRequest {
                token: user.token.clone(),
                resource: "pg-prod".to_owned(),
                database: String::new(),
                user: "dev@example.com".to_owned(),
                client: None,
                gateway_id: "claimed".to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
        let review = pb::OpenReviewRequest {
            session_id: session.session_id.clone(),
            identity: "dev@example.com".to_owned(),
            resource: "pg-prod".to_owned(),
            statement: "DELETE FROM orders".to_owned(),
            kinds: vec!["delete".to_owned()],
            rule: "deletes".to_owned(),
            message: String::new(),
            approvals: 1,
            approvers: vec![],
            timeout_secs: 60,
            max_approval_minutes: 0,
        };
        let err = staging.open_review(review.clone()).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{which}: {err}");
        let opened = prod.open_review(review).await.unwrap().into_inner();
        let err = staging
            .watch_review(pb::WatchReviewRequest { id: opened.id })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{which}: {err}");

        // Nor write audit for one.
        let (tx, rx) = tokio::sync::mpsc::channel::<pb::AuditBatch>(1);
        let mut acks = staging
            .publish_audit(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let event = pb::AuditEvent {
            session_id: "forged-session".to_owned(),
            seq: 1,
            at: chrono::Utc::now().timestamp_micros(),
            event: Some(pb::audit_event::Event::SessionEnded(pb::SessionEnded {
                identity: "dev@example.com".to_owned(),
                resource: "pg-prod".to_owned(),
                reason: "test".to_owned(),
                statements: 0,
            })),
        };
        tx.send(pb::AuditBatch {
            batch_id: 1,
            events: vec![event],
            trace_context: Default::default(),
        })
        .await
        .unwrap();
        let err = acks.message().await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{which}: {err}");
        drop(tx);

        // Renewal keeps the id and the environment, for the new key.
        let (new_key, csr) = key_and_csr();
        let renewed = staging
            .renew(pb::RenewRequest {
                csr_pem: csr,
                version: "test-2".to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (renewed.gateway_id.as_str(), renewed.environment.as_str()),
            ("gw-staging", "staging"),
            "{which}"
        );
        assert_ne!(renewed.cert_pem, staging_cert.cert_pem, "{which}");
        let record = server
            .cp
            .store()
            .gateway("gw-staging")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.version, "test-2", "{which}");
        let mut renewed_client = GatewayServiceClient::new(
            channel(
                &server,
                &renewed.ca_pem,
                Some((&renewed.cert_pem, &new_key)),
            )
            .await,
        );
        renewed_client.watch_config(hello("staging")).await.unwrap();
        // The replaced certificate is still valid for calls, but cannot renew again.
        let (_, csr) = key_and_csr();
        let err = staging
            .renew(pb::RenewRequest {
                csr_pem: csr,
                version: "test-3".to_owned(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{which}: {err}");
        assert!(err.message().contains("superseded"), "{which}: {err}");
        // A CSR whose signature does not verify is refused.
        let (_, csr) = key_and_csr();
        // Flip a base64 character inside the signature, at the end of the body.
        let mut tampered = csr.into_bytes();
        let end = tampered
            .windows(9)
            .position(|w| w == b"\n-----END")
            .unwrap();
        let at = (0..end)
            .rev()
            .find(|&i| tampered[i].is_ascii_alphanumeric())
            .unwrap()
            - 2;
        tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        let err = renewed_client
            .renew(pb::RenewRequest {
                csr_pem: tampered,
                version: "test-3".to_owned(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{which}: {err}");
    }
}

/// One request through the HTTP router: status and JSON body.
async fn api(
    cp: &ControlPlane,
    method: &str,
    uri: &str,
    bearer: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let router = countersign_control_plane::api::router(cp.clone());
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {bearer}"));
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
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn the_enrollment_api_is_for_admins_and_documented() {
    for (backend, store) in Backend::stores("cs_enroll_api").await {
        let server = start(store, Duration::from_secs(3600)).await;
        let which = backend.name();
        let cp = &server.cp;
        let user = cp
            .issue_token("dev@example.com", &[], None, "test")
            .await
            .unwrap();
        let body = json!({"environment": "prod", "ttl_seconds": 60});
        for (method, uri, body) in [
            (
                "POST",
                "/api/v1/gateways/enrollment-tokens",
                Some(body.clone()),
            ),
            ("GET", "/api/v1/gateways", None),
            ("GET", "/api/v1/gateways/ca", None),
        ] {
            let (status, _) = api(cp, method, uri, &user.token, body).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{which}: {uri}");
        }
        for bad in [
            json!({"environment": "prod", "ttl_seconds": 0}),
            json!({"environment": "prod", "ttl_seconds": 30 * 24 * 3600}),
            json!({"environment": "no spaces"}),
            json!({"environment": "prod", "colour": "blue"}),
        ] {
            let (status, _) = api(
                cp,
                "POST",
                "/api/v1/gateways/enrollment-tokens",
                ADMIN,
                Some(bad.clone()),
            )
            .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{which}: {bad}");
        }
        let (status, created) = api(
            cp,
            "POST",
            "/api/v1/gateways/enrollment-tokens",
            ADMIN,
            Some(body),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{which}");
        let token = created["token"].as_str().unwrap();
        assert!(token.starts_with("cse_") && token.len() == 47, "{which}");
        // Only the hash is stored.
        let stored = cp.store().enrollment_tokens().await.unwrap();
        assert_eq!(stored.len(), 1, "{which}");
        assert_eq!(stored[0].created_by, "bootstrap-admin", "{which}");
        assert!(
            !format!("{stored:?}").contains(&token[4..]),
            "{which}: the token itself is stored"
        );
        let (status, ca) = api(cp, "GET", "/api/v1/gateways/ca", ADMIN, None).await;
        assert_eq!(status, StatusCode::OK, "{which}");
        assert_eq!(ca["ca_pem"], ca_pem(&server), "{which}");
        let (_, list) = api(cp, "GET", "/api/v1/gateways", ADMIN, None).await;
        assert_eq!(list["gateways"], json!([]), "{which}");

        let (_, doc) = api(cp, "GET", "/api/v1/openapi.json", ADMIN, None).await;
        for path in [
            "/api/v1/gateways",
            "/api/v1/gateways/ca",
            "/api/v1/gateways/enrollment-tokens",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{which}: {path}");
        }
        assert!(
            doc["components"]["schemas"]
                .get("CreatedEnrollmentToken")
                .is_some(),
            "{which}"
        );
    }
}
