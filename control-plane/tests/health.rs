//! Health, readiness and metrics endpoints, on both backends.

#![cfg(test)]

#[path = "support/backends.rs"]
mod backends;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use countersign_common::Secret;
use countersign_control_plane::{ControlPlane, Settings};
use http_body_util::BodyExt;
use tower::ServiceExt;

use backends::Backend;

async fn get(cp: &ControlPlane, path: &str) -> (StatusCode, String) {
    let router = countersign_control_plane::api::router(cp.clone());
    let res = router
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn health_readiness_and_metrics_answer_without_a_token() {
    for (backend, store) in Backend::stores("cs_health").await {
        let who = backend.name();
        let settings = Settings::new(Secret::new("a".repeat(32)), Secret::new("g".repeat(32)));
        let cp = ControlPlane::new(store, settings).await.unwrap();
        cp.apply_policy(
            "[[access]]\nname = \"all\"\nmembers = [\"*\"]\nlevel = \"read-write\"\n",
            "admin",
        )
        .await
        .unwrap();
        assert_eq!(get(&cp, "/healthz").await.0, StatusCode::OK, "{who}");
        assert_eq!(get(&cp, "/readyz").await.0, StatusCode::OK, "{who}");
        let (status, text) = get(&cp, "/metrics").await;
        assert_eq!(status, StatusCode::OK, "{who}");
        for name in [
            "countersign_control_plane_sessions_authenticated_total 0",
            "countersign_control_plane_audit_events_ingested_total 0",
            "countersign_control_plane_gateways_watching 0",
            "countersign_control_plane_policy_version 1",
        ] {
            assert!(text.contains(name), "{who}: {name} missing in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{who}: {text}");

        // Draining (on SIGTERM): not ready any more, still alive.
        cp.start_draining();
        let (status, text) = get(&cp, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{who}");
        assert_eq!(text, "draining\n", "{who}");
        assert_eq!(get(&cp, "/healthz").await.0, StatusCode::OK, "{who}");
    }
}
