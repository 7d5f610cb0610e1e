//! The audit trail streamed to a SIEM webhook, on PostgreSQL and SQLite:
//! every event once per acknowledged batch, in arrival order, signed; a failed
//! delivery resends the same events and skips none; one replica at a time; the
//! position survives a restart. Rounds are driven directly, so nothing here
//! depends on timing.

#![cfg(test)]

#[path = "support/backends.rs"]
mod backends;
#[path = "support/receiver.rs"]
mod receiver;

use backends::Backend;
use chrono::{Duration, Utc};
use countersign_common::Secret;
use countersign_control_plane::audit_stream::{AuditStreamSettings, Round, stream_client};
use countersign_control_plane::store::audit::{AuditBody, NewAuditEvent, StatementAudit};
use countersign_control_plane::{ControlPlane, Settings, Store};
use hmac::{Hmac, Mac};
use receiver::{Receiver, Recorded};
use sha2::Sha256;

const SECRET: &str = "siem-secret-for-tests";

fn event(session: &str, seq: u64) -> NewAuditEvent {
    NewAuditEvent {
        session_id: session.to_owned(),
        seq,
        at: Utc::now(),
        identity: "alice@example.com".to_owned(),
        resource: "pg-prod".to_owned(),
        body: AuditBody::Statement(StatementAudit {
            statement: format!("SELECT {seq} -- {session}"),
            kinds: vec!["select".to_owned()],
            protocol: "simple".to_owned(),
            decision: "allow".to_owned(),
            ..Default::default()
        }),
    }
}

fn stream(url: String, batch: u64, settle: std::time::Duration) -> AuditStreamSettings {
    AuditStreamSettings {
        name: "siem".to_owned(),
        url,
        secret: Secret::new(SECRET.to_owned()),
        batch,
        settle,
    }
}

async fn control_plane(store: Store) -> ControlPlane {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let settings = Settings::new(Secret::new("a".repeat(32)), Secret::new("g".repeat(32)));
    ControlPlane::new(store, settings).await.unwrap()
}

/// The event ids of one delivered body, after checking its headers and signature.
fn ids(req: &Recorded) -> Vec<String> {
    assert_eq!(req.header("content-type"), "application/x-ndjson");
    assert_eq!(req.header("x-countersign-stream"), "siem");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&req.body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(req.header("x-countersign-signature"), expected);
    let lines: Vec<String> = std::str::from_utf8(&req.body)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(req.header("x-countersign-events"), lines.len().to_string());
    lines
}

#[tokio::test]
async fn every_event_is_streamed_in_order_and_a_failure_skips_nothing() {
    for (backend, store) in Backend::stores("cs_stream").await {
        let who = backend.name();
        // Three sessions' events, interleaved over four inserts (four arrival times).
        let mut sent = Vec::new();
        for part in 0..4u64 {
            let batch: Vec<NewAuditEvent> = ["s1", "s2", "s3"]
                .iter()
                .flat_map(|s| (part * 100..part * 100 + 100).map(move |q| event(s, q)))
                .collect();
            store.insert_audit_events(&batch).await.unwrap();
            // Arrival order within one insert: session, then seq.
            sent.extend(batch.iter().map(|e| format!("{}:{}", e.session_id, e.seq)));
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // The first delivery is answered 503, the second 200, the third 500.
        let siem = Receiver::start(&[503, 200, 500]).await;
        let s = stream(siem.url("/ingest"), 500, std::time::Duration::ZERO);
        let cp = control_plane(store.clone()).await;
        let client = stream_client().unwrap();

        let round = cp.audit_stream_round(&s, &client, "replica-a").await;
        assert!(round.is_err(), "{who}: {round:?}");
        assert_eq!(
            cp.audit_stream_round(&s, &client, "replica-a")
                .await
                .unwrap(),
            Round::Delivered(500),
            "{who}"
        );
        // Another replica waits while the lease runs.
        assert_eq!(
            cp.audit_stream_round(&s, &client, "replica-b")
                .await
                .unwrap(),
            Round::HeldElsewhere,
            "{who}"
        );
        assert!(
            cp.audit_stream_round(&s, &client, "replica-a")
                .await
                .is_err()
        );
        assert_eq!(
            cp.audit_stream_round(&s, &client, "replica-a")
                .await
                .unwrap(),
            Round::Delivered(500),
            "{who}"
        );
        assert_eq!(
            cp.audit_stream_round(&s, &client, "replica-a")
                .await
                .unwrap(),
            Round::Delivered(200),
            "{who}"
        );
        assert_eq!(
            cp.audit_stream_round(&s, &client, "replica-a")
                .await
                .unwrap(),
            Round::CaughtUp,
            "{who}"
        );

        let requests = siem.requests();
        assert_eq!(requests.len(), 5, "{who}");
        assert!(requests.iter().all(|r| r.path == "/ingest"));
        // A refused batch is sent again, unchanged.
        assert_eq!(requests[0].body, requests[1].body, "{who}");
        assert_eq!(requests[2].body, requests[3].body, "{who}");
        let delivered: Vec<String> = [&requests[1], &requests[3], &requests[4]]
            .into_iter()
            .flat_map(ids)
            .collect();
        assert_eq!(delivered, sent, "{who}: every event once, in arrival order");

        // A restart (a new control plane on the same store) goes on from the
        // stored position: only new events are sent.
        drop(cp);
        let cp = control_plane(store.clone()).await;
        store
            .insert_audit_events(&[event("s4", 0), event("s4", 1)])
            .await
            .unwrap();
        assert_eq!(
            cp.audit_stream_round(&s, &client, "replica-a")
                .await
                .unwrap(),
            Round::Delivered(2),
            "{who}"
        );
        assert_eq!(ids(&siem.requests()[5]), ["s4:0", "s4:1"], "{who}");

        // Once replica-a's lease has ended, replica-b takes over where it stopped.
        store
            .lease_audit_stream("siem", "replica-a", Utc::now() - Duration::seconds(1))
            .await
            .unwrap()
            .unwrap();
        store.insert_audit_events(&[event("s5", 0)]).await.unwrap();
        assert_eq!(
            cp.audit_stream_round(&s, &client, "replica-b")
                .await
                .unwrap(),
            Round::Delivered(1),
            "{who}"
        );
        assert_eq!(ids(&siem.requests()[6]), ["s5:0"], "{who}");
        assert_eq!(
            cp.audit_stream_round(&s, &client, "replica-a")
                .await
                .unwrap(),
            Round::HeldElsewhere,
            "{who}"
        );

        // Events younger than the settling delay wait.
        store.insert_audit_events(&[event("s6", 0)]).await.unwrap();
        let patient = stream(
            siem.url("/ingest"),
            500,
            std::time::Duration::from_secs(3600),
        );
        assert_eq!(
            cp.audit_stream_round(&patient, &client, "replica-b")
                .await
                .unwrap(),
            Round::CaughtUp,
            "{who}"
        );
        assert_eq!(siem.requests().len(), 7, "{who}");
    }
}

#[tokio::test]
async fn an_unreachable_endpoint_keeps_the_position() {
    for (backend, store) in Backend::stores("cs_stream_down").await {
        let who = backend.name();
        store
            .insert_audit_events(&[event("s1", 0), event("s1", 1)])
            .await
            .unwrap();
        // A port nothing listens on.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/ingest", closed.local_addr().unwrap());
        drop(closed);
        let cp = control_plane(store.clone()).await;
        let client = stream_client().unwrap();
        let down = stream(url, 500, std::time::Duration::ZERO);
        assert!(
            cp.audit_stream_round(&down, &client, "r").await.is_err(),
            "{who}"
        );
        let siem = Receiver::start(&[]).await;
        let up = stream(siem.url("/ingest"), 500, std::time::Duration::ZERO);
        assert_eq!(
            cp.audit_stream_round(&up, &client, "r").await.unwrap(),
            Round::Delivered(2),
            "{who}"
        );
        assert_eq!(ids(&siem.requests()[0]), ["s1:0", "s1:1"], "{who}");
    }
}
