//! The tamper-evident audit chain, on both PostgreSQL and SQLite: an intact
//! log verifies, and each kind of tampering is found at the right place.
//!
//! Tampering goes around the append-only triggers the way a database owner
//! would: `session_replication_role = replica` on PostgreSQL, dropping and
//! re-creating the triggers on SQLite.

#![cfg(test)]

#[path = "support/backends.rs"]
mod backends;

use backends::Backend;
use chrono::{Duration, Utc};
use countersign_control_plane::Store;
use countersign_control_plane::store::audit::verify::{Finding, FindingKind, VerifyReport};
use countersign_control_plane::store::audit::{AuditBody, NewAuditEvent, StatementAudit};
use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};

fn statement(session: &str, seq: u64, sql: &str) -> NewAuditEvent {
    NewAuditEvent {
        session_id: session.to_owned(),
        seq,
        at: Utc::now(),
        identity: "alice@example.com".to_owned(),
        resource: "pg-prod".to_owned(),
        body: AuditBody::Statement(StatementAudit {
            statement: sql.to_owned(),
            kinds: vec!["select".to_owned()],
            protocol: "simple".to_owned(),
            parameter_count: 0,
            duration_us: 12,
            command_tag: Some("SELECT 1".to_owned()),
            rows: Some(1),
            error: None,
            decision: "allow".to_owned(),
            rule: None,
            masking: None,
        }),
    }
}

/// `n` statements in `session`, seqs 0..n.
fn session(session: &str, n: u64) -> Vec<NewAuditEvent> {
    (0..n)
        .map(|i| statement(session, i, &format!("SELECT {i} -- {session}")))
        .collect()
}

/// Runs `sql` around the append-only triggers.
async fn tamper(backend: &Backend, store: &Store, sql: &str) {
    let db = store.db_for_tests();
    let txn = db.begin().await.unwrap();
    match backend {
        Backend::Postgres { .. } => {
            txn.execute_unprepared("SET LOCAL session_replication_role = replica")
                .await
                .unwrap();
            txn.execute_unprepared(sql).await.unwrap();
        }
        Backend::Sqlite { .. } => {
            let triggers = txn
                .query_all_raw(Statement::from_string(
                    DbBackend::Sqlite,
                    "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' \
                     AND tbl_name IN ('audit_events', 'audit_checkpoints')",
                ))
                .await
                .unwrap();
            let triggers: Vec<(String, String)> = triggers
                .iter()
                .map(|r| {
                    (
                        r.try_get::<String>("", "name").unwrap(),
                        r.try_get::<String>("", "sql").unwrap(),
                    )
                })
                .collect();
            for (name, _) in &triggers {
                txn.execute_unprepared(&format!("DROP TRIGGER {name}"))
                    .await
                    .unwrap();
            }
            txn.execute_unprepared(sql).await.unwrap();
            for (_, create) in &triggers {
                txn.execute_unprepared(create).await.unwrap();
            }
        }
    }
    txn.commit().await.unwrap();
}

fn kinds(report: &VerifyReport) -> Vec<(FindingKind, Option<String>, Option<i64>)> {
    let mut v: Vec<_> = report
        .findings
        .iter()
        .map(|f: &Finding| (f.kind, f.session_id.clone(), f.seq))
        .collect();
    v.sort_by_key(|(k, s, q)| (format!("{k:?}"), s.clone(), *q));
    v
}

fn at(kind: FindingKind, session: &str, seq: i64) -> (FindingKind, Option<String>, Option<i64>) {
    (kind, Some(session.to_owned()), Some(seq))
}

/// Three sessions of ten events, checkpointed, plus two more events in `s1`
/// after the checkpoint.
async fn populated(store: &Store) {
    let mut batch = session("s1", 10);
    batch.extend(session("s2", 10));
    batch.extend(session("s3", 10));
    assert_eq!(store.insert_audit_events(&batch).await.unwrap(), 30);
    assert_eq!(store.write_audit_checkpoint().await.unwrap(), Some(1));
    let more = vec![
        statement("s1", 10, "SELECT 10"),
        statement("s1", 11, "SELECT 11"),
    ];
    assert_eq!(store.insert_audit_events(&more).await.unwrap(), 2);
}

async fn verify_intact(store: &Store, who: &str) {
    let report = store.verify_audit().await.unwrap();
    assert!(report.intact, "{who}: {:?}", report.findings);
    assert!(report.findings.is_empty(), "{who}");
}

#[tokio::test]
async fn an_intact_log_verifies_and_resends_change_nothing() {
    for (backend, store) in Backend::stores("cs_chain_intact").await {
        let who = backend.name();
        populated(&store).await;
        let report = store.verify_audit().await.unwrap();
        assert!(report.intact, "{who}: {:?}", report.findings);
        assert_eq!(report.events_checked, 32, "{who}");
        assert_eq!(report.sessions_checked, 3, "{who}");
        assert_eq!(report.checkpoints_checked, 1, "{who}");

        let hashes = || async {
            store
                .db_for_tests()
                .query_all_raw(Statement::from_string(
                    store.db_for_tests().get_database_backend(),
                    "SELECT session_id, seq, chain_hash FROM audit_events ORDER BY session_id, seq",
                ))
                .await
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r.try_get::<String>("", "session_id").unwrap(),
                        r.try_get::<i64>("", "seq").unwrap(),
                        r.try_get::<Option<String>>("", "chain_hash").unwrap(),
                    )
                })
                .collect::<Vec<_>>()
        };
        let before = hashes().await;
        assert!(before.iter().all(|(_, _, h)| h.is_some()), "{who}");
        // A resend (a lost ack) stores nothing and changes no hash, even
        // mixed with new events and with the batch out of order.
        let mut resend = session("s2", 10);
        resend.reverse();
        assert_eq!(
            store.insert_audit_events(&resend).await.unwrap(),
            0,
            "{who}"
        );
        assert_eq!(hashes().await, before, "{who}");
        let mut mixed = session("s3", 12);
        mixed.reverse();
        assert_eq!(store.insert_audit_events(&mixed).await.unwrap(), 2, "{who}");
        let after = hashes().await;
        assert_eq!(after.len(), before.len() + 2, "{who}");
        assert!(before.iter().all(|h| after.contains(h)), "{who}");
        // A second checkpoint only covers what changed.
        assert_eq!(
            store.write_audit_checkpoint().await.unwrap(),
            Some(2),
            "{who}"
        );
        assert_eq!(store.write_audit_checkpoint().await.unwrap(), None, "{who}");
        verify_intact(&store, who).await;
    }
}

/// A batch whose rows the database refuses stores nothing and moves no chain head: the rows,
/// the heads and their locks are one transaction (on PostgreSQL the rows go in with `COPY`
/// after the heads were moved). The same batch, once accepted, chains as if nothing happened.
#[tokio::test]
async fn a_refused_batch_moves_no_head() {
    for (backend, store) in Backend::stores("cs_chain_refused").await {
        let who = backend.name();
        let db = store.db_for_tests();
        assert_eq!(
            store.insert_audit_events(&session("s1", 3)).await.unwrap(),
            3
        );
        let (refuse, accept) = match db.get_database_backend() {
            DbBackend::Postgres => (
                "ALTER TABLE audit_events ADD CONSTRAINT refuse_boom \
                 CHECK (statement NOT LIKE '%boom%')",
                "ALTER TABLE audit_events DROP CONSTRAINT refuse_boom",
            ),
            _ => (
                "CREATE TRIGGER refuse_boom BEFORE INSERT ON audit_events \
                 WHEN NEW.statement LIKE '%boom%' BEGIN SELECT RAISE(ABORT, 'boom'); END",
                "DROP TRIGGER refuse_boom",
            ),
        };
        db.execute_unprepared(refuse).await.unwrap();
        let batch = vec![
            statement("s1", 3, "SELECT 3"),
            statement("s2", 0, "SELECT 'boom'"),
            statement("s1", 4, "SELECT 4"),
        ];
        assert!(store.insert_audit_events(&batch).await.is_err(), "{who}");
        let heads = || async {
            db.query_all_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT session_id, events, last_seq FROM audit_heads ORDER BY session_id",
            ))
            .await
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r.try_get::<String>("", "session_id").unwrap(),
                    r.try_get::<i64>("", "events").unwrap(),
                    r.try_get::<Option<i64>>("", "last_seq").unwrap(),
                )
            })
            .collect::<Vec<_>>()
        };
        assert_eq!(heads().await, vec![("s1".to_owned(), 3, Some(2))], "{who}");
        assert_eq!(
            store.verify_audit().await.unwrap().events_checked,
            3,
            "{who}"
        );

        db.execute_unprepared(accept).await.unwrap();
        assert_eq!(store.insert_audit_events(&batch).await.unwrap(), 3, "{who}");
        assert_eq!(
            heads().await,
            vec![("s1".to_owned(), 5, Some(4)), ("s2".to_owned(), 1, Some(0))],
            "{who}"
        );
        verify_intact(&store, who).await;
    }
}

/// An ingest cancelled at any point (a request whose client went away) stores its batch whole
/// or not at all, and leaves the store's connections in step: every later query on the pool
/// gets its own answer, and resending each batch completes the log.
#[tokio::test]
async fn a_cancelled_ingest_leaves_the_store_consistent() {
    for (backend, store) in Backend::stores("cs_chain_cancel").await {
        let who = backend.name();
        const BATCHES: u64 = 40;
        const ROWS: u64 = 300;
        // Cut after 0, 0.25, 0.5, … ms: before, during and after the rows are written.
        for i in 0..BATCHES {
            let batch = session(&format!("c{i:02}"), ROWS);
            let cut = std::time::Duration::from_micros(250 * i);
            let _ = tokio::time::timeout(cut, store.insert_audit_events(&batch)).await;
        }
        let db = store.db_for_tests();
        for i in 0..BATCHES {
            let name = format!("c{i:02}");
            let stored = || async {
                db.query_one_raw(Statement::from_sql_and_values(
                    db.get_database_backend(),
                    match db.get_database_backend() {
                        DbBackend::Postgres => {
                            "SELECT count(*) AS n FROM audit_events WHERE session_id = $1"
                        }
                        _ => "SELECT count(*) AS n FROM audit_events WHERE session_id = ?",
                    },
                    [name.clone().into()],
                ))
                .await
                .unwrap()
                .unwrap()
                .try_get::<i64>("", "n")
                .unwrap()
            };
            // Resending waits on the head locks of a batch still being written.
            let added = store
                .insert_audit_events(&session(&name, ROWS))
                .await
                .unwrap();
            assert!(
                added == 0 || added == ROWS,
                "{who}: {name} was stored in part"
            );
            assert_eq!(stored().await, ROWS as i64, "{who}: {name}");
        }
        let report = store.verify_audit().await.unwrap();
        assert!(report.intact, "{who}: {:?}", report.findings);
        assert_eq!(report.events_checked, BATCHES * ROWS, "{who}");
    }
}

#[tokio::test]
async fn triggers_refuse_changes_outside_the_purge() {
    for (backend, store) in Backend::stores("cs_chain_triggers").await {
        let who = backend.name();
        populated(&store).await;
        let db = store.db_for_tests();
        for sql in [
            "UPDATE audit_events SET statement = 'x' WHERE session_id = 's1' AND seq = 1",
            "DELETE FROM audit_events WHERE session_id = 's1' AND seq = 1",
            "UPDATE audit_checkpoints SET entries = '[]'",
            "DELETE FROM audit_checkpoints",
        ] {
            let err = db.execute_unprepared(sql).await.unwrap_err();
            assert!(
                err.to_string().contains("append-only"),
                "{who}: {sql}: {err}"
            );
        }
        verify_intact(&store, who).await;
    }
}

#[tokio::test]
async fn a_modified_statement_is_named() {
    for (backend, store) in Backend::stores("cs_chain_modified").await {
        let who = backend.name();
        populated(&store).await;
        tamper(
            &backend,
            &store,
            "UPDATE audit_events SET statement = 'SELECT harmless' WHERE session_id = 's1' AND seq = 4",
        )
        .await;
        // The newest event, not covered by a checkpoint yet, too.
        tamper(
            &backend,
            &store,
            "UPDATE audit_events SET rows = 0 WHERE session_id = 's1' AND seq = 11",
        )
        .await;
        let report = store.verify_audit().await.unwrap();
        assert!(!report.intact, "{who}");
        assert_eq!(
            kinds(&report),
            vec![
                at(FindingKind::Modified, "s1", 4),
                at(FindingKind::Modified, "s1", 11)
            ],
            "{who}"
        );
    }
}

#[tokio::test]
async fn a_deleted_row_is_missing() {
    for (backend, store) in Backend::stores("cs_chain_missing").await {
        let who = backend.name();
        populated(&store).await;
        tamper(
            &backend,
            &store,
            "DELETE FROM audit_events WHERE session_id = 's2' AND seq = 3",
        )
        .await;
        // The checkpointed head of s3 (its last event) too.
        tamper(
            &backend,
            &store,
            "DELETE FROM audit_events WHERE session_id = 's3' AND seq = 9",
        )
        .await;
        let report = store.verify_audit().await.unwrap();
        assert_eq!(
            kinds(&report),
            vec![
                at(FindingKind::Missing, "s2", 3),
                at(FindingKind::Missing, "s3", 9)
            ],
            "{who}: {:?}",
            report.findings
        );
    }
}

#[tokio::test]
async fn a_truncated_session_is_missing() {
    for (backend, store) in Backend::stores("cs_chain_truncated").await {
        let who = backend.name();
        populated(&store).await;
        tamper(
            &backend,
            &store,
            "DELETE FROM audit_events WHERE session_id = 's2'",
        )
        .await;
        let report = store.verify_audit().await.unwrap();
        assert_eq!(
            kinds(&report),
            vec![at(FindingKind::Missing, "s2", 9)],
            "{who}: {:?}",
            report.findings
        );
    }
}

#[tokio::test]
async fn a_forged_row_is_inserted() {
    for (backend, store) in Backend::stores("cs_chain_forged").await {
        let who = backend.name();
        populated(&store).await;
        // Copy a real row's fields and hash to a new seq, and forge a session.
        tamper(
            &backend,
            &store,
            "INSERT INTO audit_events (session_id, seq, at, event, identity, resource, statement, \
             kinds, protocol, parameter_count, duration_us, command_tag, rows, error, decision, \
             rule, detail, received_at, prev_seq, prev_hash, chain_hash) \
             SELECT session_id, 12, at, event, identity, resource, 'DROP TABLE evidence', kinds, \
             protocol, parameter_count, duration_us, command_tag, rows, error, decision, rule, \
             detail, received_at, 11, chain_hash, chain_hash FROM audit_events \
             WHERE session_id = 's1' AND seq = 11",
        )
        .await;
        tamper(
            &backend,
            &store,
            "INSERT INTO audit_events (session_id, seq, at, event, identity, resource, statement, \
             kinds, protocol, parameter_count, duration_us, command_tag, rows, error, decision, \
             rule, detail, received_at, prev_seq, prev_hash, chain_hash) \
             SELECT 'forged', 0, at, event, identity, resource, statement, kinds, protocol, \
             parameter_count, duration_us, command_tag, rows, error, decision, rule, detail, \
             received_at, NULL, NULL, chain_hash FROM audit_events \
             WHERE session_id = 's1' AND seq = 0",
        )
        .await;
        let report = store.verify_audit().await.unwrap();
        assert_eq!(
            kinds(&report),
            vec![
                at(FindingKind::Inserted, "forged", 0),
                at(FindingKind::Inserted, "s1", 12)
            ],
            "{who}: {:?}",
            report.findings
        );
    }
}

#[tokio::test]
async fn swapped_seqs_are_reordered() {
    for (backend, store) in Backend::stores("cs_chain_reordered").await {
        let who = backend.name();
        populated(&store).await;
        tamper(
            &backend,
            &store,
            "UPDATE audit_events SET seq = -1 WHERE session_id = 's3' AND seq = 5; \
             UPDATE audit_events SET seq = 5 WHERE session_id = 's3' AND seq = 6; \
             UPDATE audit_events SET seq = 6 WHERE session_id = 's3' AND seq = -1;",
        )
        .await;
        let report = store.verify_audit().await.unwrap();
        assert_eq!(
            kinds(&report),
            vec![
                at(FindingKind::Reordered, "s3", 5),
                at(FindingKind::Reordered, "s3", 6)
            ],
            "{who}: {:?}",
            report.findings
        );
    }
}

#[tokio::test]
async fn a_tampered_checkpoint_is_reported() {
    for (backend, store) in Backend::stores("cs_chain_checkpoint").await {
        let who = backend.name();
        populated(&store).await;
        assert_eq!(store.write_audit_checkpoint().await.unwrap(), Some(2));
        assert_eq!(
            store
                .insert_audit_events(&[statement("s2", 10, "SELECT 10")])
                .await
                .unwrap(),
            1
        );
        assert_eq!(store.write_audit_checkpoint().await.unwrap(), Some(3));
        // Hide s1's head from checkpoint 1.
        tamper(
            &backend,
            &store,
            "UPDATE audit_checkpoints SET entries = replace(entries, '\"s1\"', '\"sX\"') WHERE number = 1",
        )
        .await;
        let report = store.verify_audit().await.unwrap();
        let found: Vec<_> = report
            .findings
            .iter()
            .map(|f| (f.kind, f.checkpoint))
            .collect();
        assert_eq!(
            found,
            vec![(FindingKind::CheckpointMismatch, Some(1))],
            "{who}: {:?}",
            report.findings
        );
        // Deleting a checkpoint breaks the chain of checkpoints.
        tamper(
            &backend,
            &store,
            "DELETE FROM audit_checkpoints WHERE number = 2",
        )
        .await;
        let report = store.verify_audit().await.unwrap();
        assert!(
            report
                .findings
                .iter()
                .any(|f| f.kind == FindingKind::CheckpointChainBroken && f.checkpoint == Some(2)),
            "{who}: {:?}",
            report.findings
        );
    }
}

#[tokio::test]
async fn concurrent_sessions_all_verify() {
    for (backend, store) in Backend::stores("cs_chain_concurrent").await {
        let who = backend.name();
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                // Each task writes its own session and a share of a common one;
                // batches are resent once, as after a lost ack.
                for chunk in 0..5u64 {
                    let mut batch: Vec<NewAuditEvent> = (0..10)
                        .map(|i| {
                            let seq = chunk * 10 + i;
                            statement(&format!("task-{t}"), seq, &format!("SELECT {seq}"))
                        })
                        .collect();
                    batch.push(statement(
                        &format!("shared-{}", t % 2),
                        t * 100 + chunk,
                        "SELECT 1",
                    ));
                    store.insert_audit_events(&batch).await.unwrap();
                    store.insert_audit_events(&batch).await.unwrap();
                    if chunk == 2 {
                        store.write_audit_checkpoint().await.unwrap();
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        store.write_audit_checkpoint().await.unwrap();
        let report = store.verify_audit().await.unwrap();
        assert!(report.intact, "{who}: {:?}", report.findings);
        assert_eq!(report.events_checked, 8 * 50 + 8 * 5, "{who}");
        assert_eq!(report.sessions_checked, 10, "{who}");
    }
}

#[tokio::test]
async fn retention_purge_leaves_a_log_that_verifies() {
    for (backend, store) in Backend::stores("cs_chain_retention").await {
        let who = backend.name();
        let old = Utc::now() - Duration::days(40);
        let aged = |mut e: NewAuditEvent, days_ago: i64| {
            e.at = Utc::now() - Duration::days(days_ago);
            e
        };
        // `old-1` expired entirely; `mixed` has three expired events, then new ones.
        let mut batch: Vec<_> = session("old-1", 5)
            .into_iter()
            .map(|e| aged(e, 40))
            .collect();
        batch.extend(
            session("mixed", 6)
                .into_iter()
                .map(|e| if e.seq < 3 { aged(e, 40) } else { e }),
        );
        let mut other = statement("other", 0, "SELECT 1");
        other.resource = "pg-staging".to_owned();
        other.at = old;
        batch.push(other);
        store.insert_audit_events(&batch).await.unwrap();
        store.write_audit_checkpoint().await.unwrap();

        let purged = store
            .purge_audit("pg-prod", Utc::now() - Duration::days(30))
            .await
            .unwrap();
        assert_eq!(purged, 5 + 3, "{who}");
        let report = store.verify_audit().await.unwrap();
        assert!(report.intact, "{who}: {:?}", report.findings);
        assert_eq!(report.events_checked, 3 + 1, "{who}");
        // New events after the purge chain on, and still verify.
        store
            .insert_audit_events(&[
                statement("mixed", 6, "SELECT 6"),
                statement("old-1", 5, "SELECT 5"),
            ])
            .await
            .unwrap();
        store.write_audit_checkpoint().await.unwrap();
        verify_intact(&store, who).await;
        // A deletion beyond the purged range is still found.
        tamper(
            &backend,
            &store,
            "DELETE FROM audit_events WHERE session_id = 'mixed' AND seq = 4",
        )
        .await;
        let report = store.verify_audit().await.unwrap();
        assert_eq!(
            kinds(&report),
            vec![at(FindingKind::Missing, "mixed", 4)],
            "{who}: {:?}",
            report.findings
        );
    }
}

/// Ingest rate through the store on PostgreSQL, chained versus the plain
/// idempotent `INSERT … ON CONFLICT DO NOTHING` used before the chain.
/// `cargo test -p countersign-control-plane --test audit_chain -- --ignored --nocapture`
#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn ingest_rate() {
    use countersign_control_plane::store::entity::audit_event;
    use sea_orm::{ActiveValue::Set, EntityTrait};
    const SESSIONS: u64 = 50;
    const PER_SESSION: u64 = 400;
    const BATCH: usize = 500;
    let stores = Backend::stores("cs_chain_rate").await;
    let (_db, store) = stores.into_iter().next().unwrap();
    let events: Vec<NewAuditEvent> = (0..PER_SESSION)
        .flat_map(|seq| {
            (0..SESSIONS).map(move |s| statement(&format!("rate-{s}"), seq, "SELECT 1"))
        })
        .collect();

    let start = std::time::Instant::now();
    for batch in events.chunks(BATCH) {
        store.insert_audit_events(batch).await.unwrap();
    }
    let chained = events.len() as f64 / start.elapsed().as_secs_f64();

    let now = Utc::now();
    let start = std::time::Instant::now();
    for batch in events.chunks(BATCH) {
        for chunk in batch.chunks(256) {
            let rows = chunk.iter().map(|e| audit_event::ActiveModel {
                session_id: Set(format!("plain-{}", e.session_id)),
                seq: Set(e.seq as i64),
                at: Set(now),
                event: Set("statement".to_owned()),
                identity: Set(e.identity.clone()),
                resource: Set(e.resource.clone()),
                statement: Set(Some("SELECT 1".to_owned())),
                kinds: Set("[\"select\"]".to_owned()),
                protocol: Set(Some("simple".to_owned())),
                parameter_count: Set(Some(0)),
                duration_us: Set(Some(12)),
                command_tag: Set(Some("SELECT 1".to_owned())),
                rows: Set(Some(1)),
                error: Set(None),
                decision: Set(Some("allow".to_owned())),
                rule: Set(None),
                detail: Set(None),
                received_at: Set(now),
                prev_seq: Set(None),
                prev_hash: Set(None),
                chain_hash: Set(Some(String::new())),
            });
            audit_event::Entity::insert_many(rows.collect::<Vec<_>>())
                .on_conflict_do_nothing_on([
                    audit_event::Column::SessionId,
                    audit_event::Column::Seq,
                ])
                .exec_without_returning(store.db_for_tests())
                .await
                .unwrap();
        }
    }
    let plain = events.len() as f64 / start.elapsed().as_secs_f64();
    println!(
        "postgres ingest, {} events, {SESSIONS} sessions, batches of {BATCH}: chained {chained:.0}/s, plain {plain:.0}/s",
        events.len()
    );
}
