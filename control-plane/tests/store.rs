//! Store and service tests, each run against both PostgreSQL and SQLite.

#![cfg(test)]

#[path = "support/backends.rs"]
mod backends;

use chrono::{Duration, Utc};
use countersign_common::Secret;
use countersign_control_plane::service::SessionRequest;
use countersign_control_plane::store::audit::{
    AuditBody, AuditFilter, NewAuditEvent, StatementAudit,
};
use countersign_control_plane::store::identities::IdentityKind;
use countersign_control_plane::store::resources::ResourceSpec;
use countersign_control_plane::{ControlPlane, ServiceError, Settings, Store, StoreError};

/// A store on a fresh PostgreSQL database or SQLite file, dropped at the end.
use backends::{Backend, EVENTS_WITHOUT_THEIR_TEXT, count};

/// Both backends, each with a fresh store.
async fn backends() -> Vec<(Backend, Store)> {
    Backend::stores("cs_store").await
}

fn statement(session: &str, seq: u64, identity: &str, sql: &str) -> NewAuditEvent {
    NewAuditEvent {
        session_id: session.to_owned(),
        seq,
        at: Utc::now(),
        identity: identity.to_owned(),
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

/// `statement` sent with its values as separate parameters (extended protocol).
fn parameterized(session: &str, seq: u64, identity: &str, sql: &str) -> NewAuditEvent {
    let mut e = statement(session, seq, identity, sql);
    if let AuditBody::Statement(s) = &mut e.body {
        s.protocol = "extended".to_owned();
        s.parameter_count = 1;
    }
    e
}

/// Text search: case-insensitive, `%` and `_` taken literally, and matches
/// found both among the newest 10,000 events (the search's first step) and
/// beyond them (its second step), newest first across both; texts sent with
/// separate parameters (kept once in `audit_texts` on PostgreSQL) among them.
#[tokio::test]
async fn text_search_reaches_past_its_window_escapes_and_ignores_case() {
    for (backend, store) in backends().await {
        let who = backend.name();
        let base = Utc::now() - Duration::hours(2);
        let events: Vec<NewAuditEvent> = (0..10_050u64)
            .map(|i| {
                let (sql, params) = match i {
                    0..=2 => (format!("SELECT 'Needle' FROM hay -- {i}"), false),
                    5..=7 => ("SELECT * FROM needles WHERE id = $1".to_owned(), true),
                    10_040..=10_044 => (format!("select needle from hay -- {i}"), false),
                    10_045..=10_046 => ("UPDATE needles SET n = $1".to_owned(), true),
                    100 => ("SELECT '50% off'".to_owned(), false),
                    101 => ("SELECT '50x off'".to_owned(), false),
                    102 => ("SELECT a_b FROM t".to_owned(), false),
                    103 => ("SELECT axb FROM t".to_owned(), false),
                    _ if i % 3 == 0 => ("SELECT v FROM t WHERE k = $1".to_owned(), true),
                    _ => (format!("SELECT {i} FROM t"), false),
                };
                let mut e = if params {
                    parameterized("bulk", i, "bob@example.com", &sql)
                } else {
                    statement("bulk", i, "bob@example.com", &sql)
                };
                e.at = base + Duration::milliseconds(i as i64);
                e
            })
            .collect();
        for chunk in events.chunks(2_000) {
            store.insert_audit_events(chunk).await.unwrap();
        }
        let search = |text: &str, limit: u64| {
            let filter = AuditFilter {
                identity: Some("bob@example.com".into()),
                since: Some(base - Duration::minutes(1)),
                until: Some(Utc::now()),
                text: Some(text.into()),
                limit,
                ..Default::default()
            };
            let store = &store;
            async move {
                store
                    .search_audit(&filter)
                    .await
                    .unwrap()
                    .iter()
                    .map(|e| e.seq)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            search("NEEDLE", 100).await,
            vec![
                0, 1, 2, 5, 6, 7, 10_040, 10_041, 10_042, 10_043, 10_044, 10_045, 10_046
            ],
            "{who}: both steps, oldest first"
        );
        assert_eq!(
            search("needle", 9).await,
            vec![
                5, 6, 7, 10_040, 10_041, 10_042, 10_043, 10_044, 10_045, 10_046
            ][1..]
                .to_vec(),
            "{who}: the newest 9"
        );
        assert_eq!(
            search("needle", 11).await,
            vec![
                2, 5, 6, 7, 10_040, 10_041, 10_042, 10_043, 10_044, 10_045, 10_046
            ],
            "{who}: the newest 11, across both kinds of text"
        );
        assert_eq!(
            search("needle", 3).await,
            vec![10_044, 10_045, 10_046],
            "{who}: the window alone"
        );
        assert_eq!(
            search("FROM NEEDLES", 100).await,
            vec![5, 6, 7],
            "{who}: a parameterized text beyond the window"
        );
        assert_eq!(search("50%", 100).await, vec![100], "{who}");
        assert_eq!(search("a_b", 100).await, vec![102], "{who}");
        assert!(search("no such text", 100).await.is_empty(), "{who}");
        // The common parameterized text: every one of its events, newest first across the
        // window and beyond.
        let common = search("WHERE k = $1", 20_000).await;
        assert_eq!(common.len(), 3_345, "{who}");
        assert!(common.windows(2).all(|w| w[0] < w[1]), "{who}");
        if let Backend::Postgres { .. } = backend {
            // Each parameterized text once; only parameterized events carry its digest.
            assert_eq!(
                count(&store, "SELECT count(*) AS n FROM audit_texts").await,
                3,
                "{who}"
            );
            assert_eq!(
                count(
                    &store,
                    "SELECT count(*) AS n FROM audit_events WHERE statement_digest IS NOT NULL"
                )
                .await,
                3_345 + 5,
                "{who}"
            );
        }
    }
}

/// PostgreSQL keeps each parameterized text once (`audit_texts`): the
/// retention purge removes a text with the last event that points to it and
/// keeps the others, nothing else may change or delete a text, and a purge of
/// texts racing an ingest of the same text never leaves an event whose text is
/// missing (it would be invisible to text search).
#[tokio::test]
async fn parameterized_texts_are_purged_with_their_last_event() {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    for (backend, store) in backends().await {
        let who = backend.name();
        let old = Utc::now() - Duration::days(40);
        let mut batch = Vec::new();
        for (session, sql) in [
            ("gone", "SELECT * FROM gone WHERE id = $1"),
            ("kept", "SELECT * FROM kept WHERE id = $1"),
        ] {
            let mut e = parameterized(session, 0, "bob@example.com", sql);
            e.at = old;
            batch.push(e);
            batch.push(parameterized(
                session,
                1,
                "bob@example.com",
                "SELECT * FROM kept WHERE id = $1",
            ));
        }
        store.insert_audit_events(&batch).await.unwrap();
        let purged = store
            .purge_audit("pg-prod", Utc::now() - Duration::days(30))
            .await
            .unwrap();
        assert_eq!(purged, 2, "{who}");
        let search = |text: &str| {
            let filter = AuditFilter {
                text: Some(text.into()),
                limit: 10,
                ..Default::default()
            };
            let store = &store;
            async move { store.search_audit(&filter).await.unwrap().len() }
        };
        assert_eq!(search("FROM gone").await, 0, "{who}");
        assert_eq!(search("FROM kept").await, 2, "{who}");
        let Backend::Postgres { .. } = backend else {
            assert_eq!(store.purge_audit_texts().await.unwrap(), 0, "{who}");
            continue;
        };
        let texts = "SELECT count(*) AS n FROM audit_texts";
        assert_eq!(count(&store, texts).await, 2, "{who}");
        assert_eq!(store.purge_audit_texts().await.unwrap(), 1, "{who}");
        assert_eq!(
            count(&store, texts).await,
            1,
            "{who}: the purged text is gone"
        );
        assert_eq!(store.purge_audit_texts().await.unwrap(), 0, "{who}");
        let db = store.db_for_tests();
        for sql in [
            "DELETE FROM audit_texts",
            "UPDATE audit_texts SET statement = 'SELECT 1'",
            "TRUNCATE audit_texts",
        ] {
            let refused = db.execute_unprepared(sql).await;
            assert!(
                refused
                    .as_ref()
                    .is_err_and(|e| e.to_string().contains("append-only")),
                "{who}: {sql}: {refused:?}"
            );
        }
        assert_eq!(count(&store, texts).await, 1, "{who}");
        // A text filed under another text's digest, or an event under a digest not its own's,
        // is refused: either would hide events from a search for their own text.
        for sql in [
            "INSERT INTO audit_texts VALUES (sha256('SELECT 1'), 'SELECT 2')",
            "INSERT INTO audit_events (session_id, seq, at, event, identity, resource, statement, \
             kinds, received_at, statement_digest) VALUES ('x', 0, now(), 'statement', 'i', 'r', \
             'SELECT 2', '[]', now(), sha256('SELECT 1'))",
        ] {
            let refused = db.execute_unprepared(sql).await;
            assert!(
                refused
                    .as_ref()
                    .is_err_and(|e| e.to_string().contains("digest_of_statement")),
                "{who}: {sql}: {refused:?}"
            );
        }

        // Ingests store their new texts in digest order, so two that store the same texts
        // never wait for each other in a cycle. Another transaction stores the smaller digest's
        // text and keeps it uncommitted; an ingest whose events list the larger one first must
        // then wait before storing anything, so that the other transaction can go on to store
        // the larger one and commit (an ingest holding it would deadlock, failing one of them).
        let [small, large] = {
            let mut texts = [
                "SELECT a FROM pair WHERE id = $1".to_owned(),
                "SELECT b FROM pair WHERE id = $1".to_owned(),
            ];
            texts.sort_by_key(|t| <sha2::Sha256 as sha2::Digest>::digest(t.as_bytes()));
            texts
        };
        let insert = |t: &str| {
            format!("INSERT INTO audit_texts VALUES (sha256(convert_to('{t}', 'UTF8')), '{t}')")
        };
        let other = db.begin().await.unwrap();
        other.execute_unprepared(&insert(&small)).await.unwrap();
        let ingest = {
            let store = store.clone();
            let events = [
                parameterized("pair", 0, "bob@example.com", &large),
                parameterized("pair", 1, "bob@example.com", &small),
            ];
            tokio::spawn(async move { store.insert_audit_events(&events).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(
            !ingest.is_finished(),
            "{who}: the ingest waits for the uncommitted text"
        );
        other.execute_unprepared(&insert(&large)).await.unwrap();
        other.commit().await.unwrap();
        assert_eq!(ingest.await.unwrap().unwrap(), 2, "{who}");
        assert_eq!(count(&store, texts).await, 3, "{who}");

        // Each round: a text no event points to, then an ingest of an event with that text and
        // a purge of texts at once. Whichever goes first, the event's text must be there after.
        for round in 0..40u64 {
            let sql = format!("SELECT * FROM race_{round} WHERE id = $1");
            let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(sql.as_bytes()));
            db.execute_unprepared(&format!(
                "INSERT INTO audit_texts VALUES ('\\x{digest}', '{sql}')"
            ))
            .await
            .unwrap();
            let event = [parameterized(
                &format!("race-{round}"),
                0,
                "bob@example.com",
                &sql,
            )];
            let (stored, purged) =
                tokio::join!(store.insert_audit_events(&event), store.purge_audit_texts());
            assert_eq!(stored.unwrap(), 1, "{who}");
            assert!(purged.is_ok(), "{who}: {purged:?}");
        }
        assert_eq!(count(&store, EVENTS_WITHOUT_THEIR_TEXT).await, 0, "{who}");
        assert_eq!(search("FROM race_").await, 10, "{who}");
    }
}

#[tokio::test]
async fn identities_groups_and_conflicts() {
    for (backend, store) in backends().await {
        let who = backend.name();
        let groups = vec!["dba".to_owned(), "dev".to_owned(), "dba".to_owned()];
        let alice = store
            .create_identity(
                "alice@example.com",
                IdentityKind::User,
                Some("Alice"),
                &groups,
            )
            .await
            .unwrap();
        assert_eq!(alice.groups, vec!["dba", "dev"], "{who}");
        let dup = store
            .create_identity("alice@example.com", IdentityKind::User, None, &[])
            .await;
        assert!(
            matches!(dup, Err(StoreError::Conflict { .. })),
            "{who}: {dup:?}"
        );
        store
            .set_groups(&alice.id, &["ops".to_owned()])
            .await
            .unwrap();
        let again = store
            .identity_by_email("alice@example.com")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.groups, vec!["ops"], "{who}");
        let ci = store.ensure_user("ci@example.com").await.unwrap();
        assert_eq!(
            store.ensure_user("ci@example.com").await.unwrap().id,
            ci.id,
            "{who}"
        );
        assert_eq!(store.list_identities().await.unwrap().len(), 2, "{who}");
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn resources_upsert_and_delete() {
    for (backend, store) in backends().await {
        let who = backend.name();
        let spec = ResourceSpec {
            name: "pg-prod".into(),
            kind: "postgres".into(),
            environment: "prod".into(),
            strict_audit: false,
        };
        let first = store.upsert_resource(&spec).await.unwrap();
        let second = store
            .upsert_resource(&ResourceSpec {
                strict_audit: true,
                ..spec.clone()
            })
            .await
            .unwrap();
        assert_eq!(first.id, second.id, "{who}: upsert keeps the row");
        assert!(second.strict_audit, "{who}");
        assert_eq!(store.list_resources().await.unwrap().len(), 1, "{who}");
        assert!(store.delete_resource("pg-prod").await.unwrap(), "{who}");
        assert!(!store.delete_resource("pg-prod").await.unwrap(), "{who}");
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn audit_inserts_are_idempotent_and_searchable() {
    for (backend, store) in backends().await {
        let who = backend.name();
        let batch: Vec<_> = (0..300)
            .map(|i| {
                statement(
                    "s1",
                    i,
                    if i % 2 == 0 {
                        "alice@example.com"
                    } else {
                        "bob@example.com"
                    },
                    &format!("select {i}"),
                )
            })
            .collect();
        assert_eq!(
            store.insert_audit_events(&batch).await.unwrap(),
            300,
            "{who}"
        );
        // A resent batch (lost acknowledgement) stores nothing new.
        assert_eq!(store.insert_audit_events(&batch).await.unwrap(), 0, "{who}");
        assert_eq!(
            store.insert_audit_events(&batch[100..200]).await.unwrap(),
            0,
            "{who}"
        );

        let alice = store
            .search_audit(&AuditFilter {
                identity: Some("alice@example.com".into()),
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(alice.len(), 150, "{who}");
        assert!(
            alice
                .iter()
                .all(|e| e.identity == "alice@example.com" && e.kinds == ["select"])
        );
        assert_eq!(alice[0].id, "s1:0", "{who}: oldest first");

        let text = store
            .search_audit(&AuditFilter {
                text: Some("select 29".into()),
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        let ids: Vec<_> = text.iter().map(|e| e.seq).collect();
        assert_eq!(
            ids,
            vec![29, 290, 291, 292, 293, 294, 295, 296, 297, 298, 299],
            "{who}"
        );

        let future = store
            .search_audit(&AuditFilter {
                since: Some(Utc::now() + Duration::hours(1)),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(future.is_empty(), "{who}");
        let newest = store
            .search_audit(&AuditFilter {
                limit: 5,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(newest.len(), 5, "{who}");
        store.close().await.unwrap();
    }
}

/// The console's search filters: decision, statement kind (one element of
/// the kinds, not a substring of another), and newest-first keyset pages.
#[tokio::test]
async fn audit_filters_by_decision_and_kind_and_pages_backwards() {
    for (backend, store) in backends().await {
        let who = backend.name();
        let base = Utc::now() - Duration::minutes(10);
        let events: Vec<NewAuditEvent> = (0..30u64)
            .map(|i| {
                let mut e = statement("p1", i, "alice@example.com", &format!("stmt {i}"));
                e.at = base + Duration::seconds(i as i64);
                if let AuditBody::Statement(s) = &mut e.body {
                    if i % 3 == 0 {
                        s.kinds = vec!["delete".to_owned()];
                        s.decision = "review".to_owned();
                    } else if i % 3 == 1 {
                        s.kinds = vec!["select_into".to_owned()];
                    }
                }
                e
            })
            .collect();
        store.insert_audit_events(&events).await.unwrap();
        let find = |f: AuditFilter| {
            let store = &store;
            async move { store.search_audit(&f).await.unwrap() }
        };
        let reviewed = find(AuditFilter {
            decision: Some("review".into()),
            limit: 100,
            ..Default::default()
        })
        .await;
        assert_eq!(reviewed.len(), 10, "{who}");
        assert!(reviewed.iter().all(|e| e.kinds == ["delete"]), "{who}");
        let selects = find(AuditFilter {
            kind: Some("select".into()),
            limit: 100,
            ..Default::default()
        })
        .await;
        assert_eq!(selects.len(), 10, "{who}: select, not select_into");
        assert!(selects.iter().all(|e| e.kinds == ["select"]), "{who}");

        // Pages of 7, newest first, each older than the last one's oldest.
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = find(AuditFilter {
                older_than: cursor.clone(),
                limit: 7,
                ..Default::default()
            })
            .await;
            let Some(oldest) = page.first() else { break };
            cursor = Some((oldest.at, oldest.session_id.clone(), oldest.seq as i64));
            seen.extend(page.iter().rev().map(|e| e.seq));
        }
        assert_eq!(seen, (0..30u64).rev().collect::<Vec<_>>(), "{who}");
        store.close().await.unwrap();
    }
}

async fn control_plane(store: Store) -> ControlPlane {
    let settings = Settings::new(Secret::new("a".repeat(32)), Secret::new("g".repeat(32)));
    ControlPlane::new(store, settings).await.unwrap()
}

fn session_request(token: &str, user: &str, resource: &str) -> SessionRequest {
    SessionRequest {
        token: Secret::new(token.to_owned()),
        resource: resource.to_owned(),
        database: "app".into(),
        user: user.to_owned(),
        client_address: "127.0.0.1:5555".into(),
        application_name: "psql".into(),
        tls: true,
        gateway_id: "gw".into(),
    }
}

#[tokio::test]
async fn tokens_authenticate_revoke_and_open_sessions() {
    for (backend, store) in backends().await {
        let who = backend.name();
        let cp = control_plane(store.clone()).await;
        cp.upsert_resource(&ResourceSpec {
            name: "pg-prod".into(),
            kind: "postgres".into(),
            environment: "prod".into(),
            strict_audit: false,
        })
        .await
        .unwrap();
        let issued = cp
            .issue_token("alice@example.com", &["dba".into()], None, "test")
            .await
            .unwrap();
        // No policy: no access at all.
        let denied = cp
            .open_session(&session_request(
                &issued.token,
                "alice@example.com",
                "pg-prod",
            ))
            .await
            .unwrap_err();
        assert!(
            denied.to_string().contains("has no access"),
            "{who}: {denied}"
        );
        cp.apply_policy(
            "[[access]]\nname = \"dba\"\nmembers = [\"group:dba\"]\nlevel = \"read-write\"\n",
            "test",
        )
        .await
        .unwrap();
        let grant = cp
            .open_session(&session_request(
                &issued.token,
                "alice@example.com",
                "pg-prod",
            ))
            .await
            .unwrap();
        assert_eq!(grant.identity, "alice@example.com", "{who}");
        assert_eq!(grant.groups, vec!["dba"], "{who}");
        assert!(
            store.session(&grant.session_id).await.unwrap().is_some(),
            "{who}"
        );

        let wrong_user = cp
            .open_session(&session_request(
                &issued.token,
                "bob@example.com",
                "pg-prod",
            ))
            .await;
        assert!(
            matches!(wrong_user, Err(ServiceError::Unauthenticated(_))),
            "{who}"
        );
        let no_resource = cp
            .open_session(&session_request(&issued.token, "alice@example.com", "nope"))
            .await;
        assert!(
            matches!(no_resource, Err(ServiceError::Forbidden(_))),
            "{who}"
        );
        let empty = cp
            .open_session(&session_request("", "alice@example.com", "pg-prod"))
            .await;
        assert!(
            matches!(empty, Err(ServiceError::Unauthenticated(_))),
            "{who}"
        );

        cp.revoke_token(&issued.token_id).await.unwrap();
        let revoked = cp.authenticate(&issued.token).await;
        assert!(
            matches!(
                revoked,
                Err(ServiceError::Token(
                    countersign_control_plane::tokens::TokenError::Revoked
                ))
            ),
            "{who}: {revoked:?}"
        );
        assert_eq!(
            store.live_revoked_token_ids().await.unwrap(),
            vec![issued.token_id.clone()],
            "{who}"
        );

        // A second replica on the same store shares the signing key.
        let other = control_plane(store.clone()).await;
        let t2 = cp
            .issue_token("carol@example.com", &[], None, "test")
            .await
            .unwrap();
        assert!(other.authenticate(&t2.token).await.is_ok(), "{who}");

        let too_long = cp
            .issue_token(
                "carol@example.com",
                &[],
                Some(std::time::Duration::from_secs(7 * 86400)),
                "test",
            )
            .await;
        assert!(matches!(too_long, Err(ServiceError::Invalid(_))), "{who}");
        store.close().await.unwrap();
    }
}

/// Replicas starting at once on an empty PostgreSQL database: one migrates under the
/// advisory lock, the others wait and find nothing left to do; all of them come up.
#[tokio::test]
async fn replicas_starting_together_migrate_once() {
    countersign_testkit::ensure_services().unwrap();
    let db = countersign_testkit::TestDb::create("cs_migrate_race")
        .await
        .unwrap();
    let url = db.url();
    let starts = (0..4).map(|_| Store::connect(&url));
    let stores = futures_util::future::join_all(starts).await;
    for store in &stores {
        assert!(store.is_ok(), "{:?}", store.as_ref().err());
    }
    let client = db.client().await.unwrap();
    let row = client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE version = 'm0008_audit_chain') \
             FROM seaql_migrations",
            &[],
        )
        .await
        .unwrap();
    let (all, newest): (i64, i64) = (row.get(0), row.get(1));
    assert!(
        all >= 8 && newest == 1,
        "{all} migrations recorded, newest {newest}"
    );
}

/// A PostgreSQL store migrated up to m0010, a write left open on `table`, and a replica
/// starting on it (migrating m0011 and m0012) in the background.
struct StartBehindAWrite {
    db: countersign_testkit::TestDb,
    table: &'static str,
    holder: tokio_postgres::Client,
    watcher: tokio_postgres::Client,
    start: tokio::task::JoinHandle<Result<Store, StoreError>>,
}

impl StartBehindAWrite {
    async fn new(prefix: &str, table: &'static str) -> Self {
        use countersign_migrations::{Migrator, MigratorTrait};
        countersign_testkit::ensure_services().unwrap();
        let db = countersign_testkit::TestDb::create(prefix).await.unwrap();
        let raw = sea_orm::Database::connect(&db.url()).await.unwrap();
        Migrator::up(&raw, Some(10)).await.unwrap();
        raw.close().await.unwrap();
        let holder = db.client().await.unwrap();
        holder
            .batch_execute(&format!("BEGIN; LOCK TABLE {table} IN ROW EXCLUSIVE MODE"))
            .await
            .unwrap();
        let start = tokio::spawn({
            let url = db.url();
            async move { Store::connect(&url).await }
        });
        let watcher = db.client().await.unwrap();
        Self {
            db,
            table,
            holder,
            watcher,
            start,
        }
    }

    /// The statement waiting for a lock on the table, as its backend and start time.
    async fn waiting(&self) -> Option<(i32, String)> {
        self.watcher
            .query_opt(
                "SELECT a.pid, a.query_start::text FROM pg_locks l \
                 JOIN pg_class c ON c.oid = l.relation JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE c.relname = $1 AND NOT l.granted LIMIT 1",
                &[&self.table],
            )
            .await
            .unwrap()
            .map(|r| (r.get(0), r.get(1)))
    }

    /// Waits (at most 30 s) until a migration waits for the table, and returns that statement.
    async fn blocked(&self) -> (i32, String) {
        countersign_testkit::eventually(std::time::Duration::from_secs(30), || async {
            self.waiting().await.ok_or_else(|| {
                anyhow::anyhow!("no migration waited for the lock on {}", self.table)
            })
        })
        .await
        .unwrap()
    }

    /// Ends the open write; start-up then completes, with every migration applied.
    async fn finish(self) {
        self.holder.batch_execute("COMMIT").await.unwrap();
        let store = tokio::time::timeout(std::time::Duration::from_secs(60), self.start)
            .await
            .expect("start-up did not finish once the lock was free")
            .unwrap()
            .unwrap();
        let newest: i64 = self
            .watcher
            .query_one(
                "SELECT count(*) FROM seaql_migrations WHERE version = 'm0012_audit_texts'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(newest, 1, "the migrations were not all applied");
        store.close().await.unwrap();
        drop(self.db);
    }
}

/// A migration that needs a lock another transaction holds gives way after its lock timeout
/// rather than queueing everyone behind it: a writer that arrives while the migration waits
/// gets through while that transaction is still open, and start-up completes once it ends.
/// (m0011 creates tables that reference `identities`, so it needs a lock on `identities` that
/// conflicts with a write in progress there.)
#[tokio::test]
async fn a_migration_waiting_for_a_lock_gives_way_to_other_writers() {
    let s = StartBehindAWrite::new("cs_migrate_lock", "identities").await;
    s.blocked().await;
    // A second writer now queues behind the waiting migration, which must give way to it
    // while the first write is still open.
    let writer = s.db.client().await.unwrap();
    let wrote = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        writer.batch_execute("BEGIN; LOCK TABLE identities IN ROW EXCLUSIVE MODE; COMMIT"),
    )
    .await;
    assert!(
        matches!(wrote, Ok(Ok(()))),
        "a writer stayed queued behind the migration: {wrote:?}"
    );
    assert!(
        !s.start.is_finished(),
        "start-up finished while the lock was held"
    );
    s.finish().await;
}

/// m0012 runs outside a transaction and is not held to the lock timeout: its steps wait for
/// what they need for as long as it takes (here a write on `audit_events` left open for longer
/// than the timeout), rather than failing halfway. It runs after m0011, on the same session,
/// so it must not inherit m0011's timeout either.
#[tokio::test]
async fn the_online_migration_waits_for_its_locks_without_a_limit() {
    let s = StartBehindAWrite::new("cs_migrate_online_wait", "audit_events").await;
    let first = s.blocked().await;
    // Longer than the 5 s a transactional migration waits: the same statement still waits.
    tokio::time::sleep(std::time::Duration::from_secs(7)).await;
    assert!(!s.start.is_finished(), "start-up ended while m0012 waited");
    assert_eq!(
        s.waiting().await,
        Some(first),
        "m0012's statement gave up waiting and was started again"
    );
    s.finish().await;
}

/// An existing PostgreSQL store, with more events than the search window, upgraded to keep
/// parameterized texts once (migration m0012): its events stay where text search finds them
/// (their digest is NULL, the rebuilt inline index covers them), new parameterized events go
/// to `audit_texts`, and the migration rolls back and forward again.
#[tokio::test]
async fn the_texts_migration_upgrades_a_store_and_rolls_back() {
    use countersign_migrations::{Migrator, MigratorTrait};
    use sea_orm::ConnectionTrait;
    countersign_testkit::ensure_services().unwrap();
    let db = countersign_testkit::TestDb::create("cs_texts_upgrade")
        .await
        .unwrap();
    let url = db.url();
    let raw = sea_orm::Database::connect(&url).await.unwrap();
    Migrator::up(&raw, Some(11)).await.unwrap();
    raw.execute_unprepared(
        "INSERT INTO audit_events (session_id, seq, at, event, identity, resource, statement, \
         kinds, protocol, parameter_count, received_at) \
         SELECT 'old', g, now() - interval '1 hour' + g * interval '1 ms', 'statement', \
         'bob@example.com', 'pg-prod', CASE WHEN g = 0 THEN 'SELECT * FROM legacy WHERE id = $1' \
         ELSE 'SELECT ' || g END, '[\"select\"]', 'extended', 1, now() \
         FROM generate_series(0, 10050) g",
    )
    .await
    .unwrap();
    let store = Store::connect(&url).await.unwrap();
    assert!(store.audit_text_index().await.unwrap());
    store
        .insert_audit_events(&[parameterized(
            "new",
            0,
            "bob@example.com",
            "SELECT * FROM legacy WHERE id = $1",
        )])
        .await
        .unwrap();
    let legacy = || async {
        let filter = AuditFilter {
            text: Some("from LEGACY".into()),
            limit: 10,
            ..Default::default()
        };
        store
            .search_audit(&filter)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.session_id)
            .collect::<Vec<_>>()
    };
    // The old event is beyond the newest 10,000: the search's second step finds it through the
    // inline index, the new one through `audit_texts`.
    assert_eq!(legacy().await, vec!["old", "new"]);
    assert_eq!(
        count(&store, "SELECT count(*) AS n FROM audit_texts").await,
        1
    );

    // Cut off after its first steps, the migration completes when it runs again.
    raw.execute_unprepared(
        "DROP INDEX audit_events_statement_digest; DROP INDEX audit_texts_statement_trgm; \
         DELETE FROM seaql_migrations WHERE version = 'm0012_audit_texts'",
    )
    .await
    .unwrap();
    Migrator::up(&raw, None).await.unwrap();
    assert!(store.audit_text_index().await.unwrap());
    let digest_index = "SELECT count(*) AS n FROM pg_indexes \
        WHERE indexname = 'audit_events_statement_digest'";
    assert_eq!(count(&store, digest_index).await, 1);

    Migrator::down(&raw, Some(1)).await.unwrap();
    let trigram = |partial: bool| {
        format!(
            "SELECT count(*) AS n FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE c.relname = 'audit_events_statement_trgm' AND i.indisvalid \
             AND (i.indpred IS NOT NULL) = {partial}"
        )
    };
    assert_eq!(
        count(&store, &trigram(false)).await,
        1,
        "the index covers every text again"
    );
    assert_eq!(
        count(
            &store,
            "SELECT count(*) AS n FROM information_schema.columns \
             WHERE table_name = 'audit_events' AND column_name = 'statement_digest'"
        )
        .await,
        0
    );
    Migrator::up(&raw, None).await.unwrap();
    assert_eq!(count(&store, &trigram(true)).await, 1);
    assert_eq!(count(&store, &trigram(false)).await, 0);
    assert!(store.audit_text_index().await.unwrap());
    store.close().await.unwrap();
}

/// A store whose database encoding may not keep a statement's text unchanged is named at start
/// (the control plane logs a warning): LATIN1 is, UTF8 is not.
#[tokio::test]
async fn a_store_database_in_a_lossy_encoding_is_named() {
    use sea_orm::ConnectionTrait;
    countersign_testkit::ensure_services().unwrap();
    let utf8 = countersign_testkit::TestDb::create("cs_encoding")
        .await
        .unwrap();
    let store = Store::connect(&utf8.url()).await.unwrap();
    assert_eq!(store.lossy_encoding().await.unwrap(), None);
    store.close().await.unwrap();

    // The same database created again in LATIN1 (dropped at the end like any test database).
    let latin1 = countersign_testkit::TestDb::create("cs_encoding")
        .await
        .unwrap();
    let url = latin1.url();
    let name = url.rsplit('/').next().unwrap();
    let admin = sea_orm::Database::connect("postgres://postgres@127.0.0.1:5432/postgres")
        .await
        .unwrap();
    for sql in [
        format!("DROP DATABASE {name}"),
        format!(
            "CREATE DATABASE {name} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' \
             TEMPLATE template0"
        ),
    ] {
        admin.execute_unprepared(&sql).await.unwrap();
    }
    admin.close().await.unwrap();
    let store = Store::connect(&url).await.unwrap();
    assert_eq!(
        store.lossy_encoding().await.unwrap().as_deref(),
        Some("LATIN1")
    );
    store.close().await.unwrap();
}
