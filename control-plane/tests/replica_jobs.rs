//! The audit jobs (checkpoint and retention purge) run on every replica at
//! once: two `ControlPlane` instances on one PostgreSQL database run them
//! concurrently, round after round, and every change is checkpointed once,
//! every expired event purged once (and the texts only they used with them),
//! and the log still verifies.

#![cfg(test)]

#[path = "support/backends.rs"]
mod backends;

use backends::{EVENTS_WITHOUT_THEIR_TEXT, count};
use chrono::{Duration, Utc};
use countersign_common::Secret;
use countersign_control_plane::store::audit::checkpoint::CheckpointEntry;
use countersign_control_plane::store::audit::{AuditBody, NewAuditEvent, StatementAudit};
use countersign_control_plane::{ControlPlane, Settings, Store};
use countersign_testkit::{TestDb, ensure_services};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use std::collections::HashSet;

/// An event `days_ago`: the expired ones (and the new ones after the first six) are sent with
/// parameters, so their texts are kept once in `audit_texts`, a text of its own per session for
/// the expired ones.
fn statement(session: &str, seq: u64, days_ago: i64) -> NewAuditEvent {
    let (statement, parameter_count) = match (days_ago, seq) {
        (1.., _) => (format!("SELECT * FROM gone_{session} WHERE id = $1"), 1),
        (_, 6..) => ("SELECT * FROM kept WHERE id = $1".to_owned(), 1),
        _ => (format!("SELECT {seq}"), 0),
    };
    NewAuditEvent {
        session_id: session.to_owned(),
        seq,
        at: Utc::now() - Duration::days(days_ago),
        identity: "alice@example.com".to_owned(),
        resource: "pg-prod".to_owned(),
        body: AuditBody::Statement(StatementAudit {
            statement,
            kinds: vec!["select".to_owned()],
            protocol: if parameter_count > 0 {
                "extended"
            } else {
                "simple"
            }
            .to_owned(),
            parameter_count,
            duration_us: 5,
            command_tag: Some("SELECT 1".to_owned()),
            rows: Some(1),
            error: None,
            decision: "allow".to_owned(),
            rule: None,
            masking: None,
        }),
    }
}

async fn replica(url: &str) -> ControlPlane {
    let store = Store::connect(url).await.unwrap();
    let mut settings = Settings::new(Secret::new("a".repeat(32)), Secret::new("g".repeat(32)));
    settings.audit_retention = vec![(
        "pg-prod".to_owned(),
        std::time::Duration::from_secs(30 * 86_400),
    )];
    ControlPlane::new(store, settings).await.unwrap()
}

/// Every checkpoint as (kind, entries), oldest first.
async fn checkpoints(store: &Store) -> Vec<(String, Vec<CheckpointEntry>)> {
    store
        .db_for_tests()
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT kind, entries FROM audit_checkpoints ORDER BY number",
        ))
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let kind: String = r.try_get("", "kind").unwrap();
            let entries: String = r.try_get("", "entries").unwrap();
            (kind, serde_json::from_str(&entries).unwrap())
        })
        .collect()
}

#[tokio::test]
async fn two_replicas_run_the_audit_jobs_without_double_effects() {
    ensure_services().unwrap();
    let db = TestDb::create("cs_replica_jobs").await.unwrap();
    let a = replica(&db.url()).await;
    let b = replica(&db.url()).await;

    // 40 sessions whose first 3 events expired long ago.
    let mut batch = Vec::new();
    for s in 0..40 {
        for seq in 0..6 {
            batch.push(statement(
                &format!("s{s:02}"),
                seq,
                if seq < 3 { 60 } else { 0 },
            ));
        }
    }
    a.store().insert_audit_events(&batch).await.unwrap();

    for round in 0..15u64 {
        // New events in a few sessions, through either replica.
        let more: Vec<_> = (0..5)
            .map(|s| statement(&format!("s{:02}", (round * 5 + s) % 40), 6 + round, 0))
            .collect();
        let via = if round % 2 == 0 { &a } else { &b };
        via.store().insert_audit_events(&more).await.unwrap();
        tokio::join!(
            a.run_audit_upkeep(),
            b.run_audit_upkeep(),
            a.run_audit_upkeep(),
            b.run_audit_upkeep()
        );
    }
    tokio::join!(a.run_audit_upkeep(), b.run_audit_upkeep());

    let all = checkpoints(a.store()).await;
    // Each session was purged once, through seq 2.
    let purges: Vec<&CheckpointEntry> = all
        .iter()
        .filter(|(kind, _)| kind == "purge")
        .flat_map(|(_, e)| e)
        .collect();
    assert_eq!(purges.len(), 40, "{purges:?}");
    assert!(purges.iter().all(|e| e.seq == 2), "{purges:?}");
    // No session head is in two periodic checkpoints.
    let mut seen = HashSet::new();
    for (_, entries) in all.iter().filter(|(kind, _)| kind == "periodic") {
        for e in entries {
            assert!(
                seen.insert((e.session_id.clone(), e.seq)),
                "head {}@{} checkpointed twice",
                e.session_id,
                e.seq
            );
        }
    }
    // Every session's final head is covered.
    let heads = a
        .store()
        .db_for_tests()
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT session_id, last_seq FROM audit_heads",
        ))
        .await
        .unwrap();
    assert_eq!(heads.len(), 40);
    for h in heads {
        let session: String = h.try_get("", "session_id").unwrap();
        let seq: i64 = h.try_get("", "last_seq").unwrap();
        assert!(seen.contains(&(session.clone(), seq)), "{session}@{seq}");
    }
    let store = a.store();
    assert_eq!(
        count(store, "SELECT count(*) AS n FROM audit_events").await,
        40 * 3 + 15 * 5
    );
    // The expired events' texts went with them; the one still in use stayed.
    assert_eq!(
        count(store, "SELECT count(*) AS n FROM audit_texts").await,
        1
    );
    assert_eq!(count(store, EVENTS_WITHOUT_THEIR_TEXT).await, 0);
    let report = a.store().verify_audit().await.unwrap();
    assert!(report.intact, "{:?}", report.findings);
}
