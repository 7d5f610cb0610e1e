//! Statement kinds, table-driven: one row per statement type, plus the lexical corner cases
//! (comments, case, quoting, dollar quoting) that must not change what a string is.

// Integration tests always build with cfg(test); saying so lets clippy's allow-*-in-tests
// settings cover the helpers too.
#![cfg(test)]

use countersign_policy::{StatementKind, classify};

/// `(sql, kind_names())`.
const CASES: &[(&str, &[&str])] = &[
    // Queries and DML.
    ("SELECT 1", &["select"]),
    ("SELECT * FROM t WHERE id = $1", &["select"]),
    ("select * from t", &["select"]),
    ("VALUES (1), (2)", &["select"]),
    ("TABLE t", &["select"]),
    ("SELECT 1 UNION SELECT 2 EXCEPT SELECT 3", &["select"]),
    ("SELECT * FROM t FOR UPDATE", &["select"]),
    ("SELECT * INTO copy_t FROM t", &["select", "create"]),
    ("INSERT INTO t VALUES (1)", &["insert"]),
    ("INSERT INTO t SELECT * FROM u", &["insert"]),
    (
        "INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING",
        &["insert"],
    ),
    (
        "INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET v = 2",
        &["insert", "update"],
    ),
    ("UPDATE t SET v = 1 WHERE id = 2", &["update"]),
    ("DELETE FROM t WHERE id = 2", &["delete"]),
    (
        "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET v = s.v \
         WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.v)",
        &["merge", "update", "insert"],
    ),
    (
        "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DO NOTHING",
        &["merge"],
    ),
    (
        "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
        &["select", "delete"],
    ),
    (
        "WITH u AS (UPDATE t SET v = 1 RETURNING *) SELECT 1",
        &["select", "update"],
    ),
    (
        "WITH i AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM i",
        &["select", "insert"],
    ),
    ("WITH x AS (SELECT 1) SELECT * FROM x", &["select"]),
    (
        "WITH a AS (DELETE FROM t RETURNING id), b AS (INSERT INTO log SELECT id FROM a) \
         UPDATE u SET n = n + 1 WHERE true",
        &["update", "delete", "insert"],
    ),
    // DDL.
    ("CREATE TABLE t (id int PRIMARY KEY)", &["create"]),
    ("CREATE TABLE t2 AS SELECT * FROM t", &["create", "select"]),
    (
        "CREATE MATERIALIZED VIEW mv AS SELECT 1",
        &["create", "select"],
    ),
    ("CREATE VIEW v AS SELECT * FROM t", &["create"]),
    (
        "CREATE INDEX CONCURRENTLY i ON t (lower(name))",
        &["create"],
    ),
    ("CREATE SEQUENCE s", &["create"]),
    ("CREATE SCHEMA s", &["create"]),
    ("CREATE ROLE r LOGIN", &["create"]),
    ("CREATE EXTENSION pgcrypto", &["create"]),
    (
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$",
        &["create"],
    ),
    ("CREATE TYPE mood AS ENUM ('sad', 'ok')", &["create"]),
    ("CREATE DATABASE d", &["create"]),
    (
        "CREATE TRIGGER tg AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()",
        &["create"],
    ),
    ("ALTER TABLE t ADD COLUMN c int", &["alter"]),
    ("ALTER TABLE t RENAME TO t_old", &["alter"]),
    ("ALTER ROLE r SUPERUSER", &["alter"]),
    ("ALTER SYSTEM SET work_mem = '1GB'", &["alter"]),
    (
        "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO r",
        &["alter", "grant"],
    ),
    ("DROP TABLE t", &["drop"]),
    ("DROP TABLE IF EXISTS a, b CASCADE", &["drop"]),
    ("DROP ROLE r", &["drop"]),
    ("DROP DATABASE d", &["drop"]),
    ("DROP OWNED BY r", &["drop"]),
    ("TRUNCATE t", &["truncate"]),
    ("TRUNCATE TABLE a, b RESTART IDENTITY", &["truncate"]),
    // Privileges.
    ("GRANT SELECT ON t TO r", &["grant"]),
    ("GRANT admin TO bob", &["grant"]),
    ("REVOKE ALL ON t FROM r", &["revoke"]),
    ("REVOKE admin FROM bob", &["revoke"]),
    // Data movement and code.
    ("COPY t FROM STDIN", &["copy"]),
    ("COPY t TO STDOUT WITH (FORMAT csv)", &["copy"]),
    ("COPY (SELECT * FROM t) TO STDOUT", &["copy", "select"]),
    (
        "COPY (DELETE FROM t RETURNING *) TO STDOUT",
        &["copy", "delete"],
    ),
    ("CALL p(1)", &["call"]),
    ("DO $$ BEGIN NULL; END $$", &["do"]),
    (
        "DO $$ BEGIN DELETE FROM t WHERE id = 1; END $$",
        &["do", "delete"],
    ),
    // Session.
    ("SET search_path = public", &["set"]),
    ("SET LOCAL statement_timeout = 0", &["set"]),
    ("RESET ALL", &["set"]),
    ("SET ROLE admin", &["set"]),
    ("SET CONSTRAINTS ALL DEFERRED", &["set"]),
    ("DISCARD ALL", &["set"]),
    ("SHOW work_mem", &["show"]),
    ("SHOW ALL", &["show"]),
    ("BEGIN", &["transaction"]),
    (
        "START TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        &["transaction"],
    ),
    ("COMMIT", &["transaction"]),
    ("ROLLBACK", &["transaction"]),
    ("SAVEPOINT s1", &["transaction"]),
    ("ROLLBACK TO SAVEPOINT s1", &["transaction"]),
    ("RELEASE s1", &["transaction"]),
    ("PREPARE TRANSACTION 'x'", &["transaction"]),
    // Prepared statements, EXPLAIN, cursors.
    (
        "PREPARE q (int) AS SELECT * FROM t WHERE id = $1",
        &["prepare", "select"],
    ),
    ("PREPARE q AS DELETE FROM t", &["prepare", "delete"]),
    ("EXECUTE q (1)", &["execute"]),
    ("DEALLOCATE q", &["deallocate"]),
    ("DEALLOCATE ALL", &["deallocate"]),
    ("EXPLAIN SELECT 1", &["explain", "select"]),
    ("EXPLAIN ANALYZE UPDATE t SET v = 1", &["explain", "update"]),
    ("EXPLAIN EXECUTE q (1)", &["explain", "execute"]),
    (
        "DECLARE c CURSOR FOR SELECT * FROM t",
        &["cursor", "select"],
    ),
    ("FETCH 10 FROM c", &["cursor"]),
    ("MOVE NEXT IN c", &["cursor"]),
    ("CLOSE c", &["cursor"]),
    // Notifications, maintenance, locks, the rest.
    ("LISTEN chan", &["listen"]),
    ("UNLISTEN *", &["listen"]),
    ("NOTIFY chan, 'payload'", &["notify"]),
    ("VACUUM t", &["vacuum"]),
    ("VACUUM (FULL, ANALYZE) t", &["vacuum"]),
    ("ANALYZE t", &["vacuum"]),
    ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", &["lock"]),
    ("CLUSTER t USING i", &["utility"]),
    ("REINDEX TABLE t", &["utility"]),
    ("REFRESH MATERIALIZED VIEW mv", &["utility"]),
    ("CHECKPOINT", &["utility"]),
    ("LOAD 'auto_explain'", &["utility"]),
    ("COMMENT ON TABLE t IS 'x'", &["utility"]),
    // Multi-statement strings.
    (
        "BEGIN; UPDATE t SET v = 1 WHERE id = 1; COMMIT;",
        &["transaction", "update"],
    ),
    ("SELECT 1; DROP TABLE t", &["select", "drop"]),
    ("SELECT 1;;; SELECT 2;", &["select"]),
    // Comments, case, quoting, dollar quoting.
    ("", &[]),
    ("   \n\t ", &[]),
    ("-- just a comment", &[]),
    ("/* just a comment */", &[]),
    (";", &[]),
    ("-- DROP TABLE t\nSELECT 1", &["select"]),
    ("SELECT 1 -- ; DROP TABLE t", &["select"]),
    ("/* DROP TABLE t; */ SELECT 1", &["select"]),
    (
        "SELECT /* outer /* nested; DROP TABLE t; */ still comment */ 1",
        &["select"],
    ),
    (
        "SELECT 1 /* a */; /* b */ DELETE FROM t WHERE id = 1",
        &["select", "delete"],
    ),
    (
        "sElEcT 1; dElEtE fRoM t WHERE id = 1",
        &["select", "delete"],
    ),
    ("SELECT ';DROP TABLE t;'", &["select"]),
    ("SELECT 'it''s; DROP TABLE t'", &["select"]),
    ("SELECT E'\\'; DROP TABLE t; --'", &["select"]),
    ("SELECT \"weird;name\" FROM \"DROP TABLE t\"", &["select"]),
    ("SELECT $$; DROP TABLE t; $$", &["select"]),
    ("SELECT $tag$ $$; DROP TABLE t; $$ $tag$", &["select"]),
    ("SELECT $a$ x $a$; DROP TABLE t", &["select", "drop"]),
    ("SELECT U&'\\0041'; TRUNCATE t", &["select", "truncate"]),
];

#[test]
fn kinds_table() {
    let mut failures = Vec::new();
    for (sql, expected) in CASES {
        let facts = classify(sql);
        if facts.is_parse_failure() || facts.kind_names() != *expected {
            failures.push(format!(
                "{sql:?}: expected {expected:?}, got {:?} (error {:?})",
                facts.kind_names(),
                facts.parse_error
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} kind mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(CASES.len() >= 100);
}

#[test]
fn kind_names_round_trip() {
    for kind in StatementKind::ALL {
        assert_eq!(StatementKind::from_name(kind.as_str()), Some(*kind));
        assert_eq!(
            StatementKind::from_name(&kind.as_str().to_uppercase()),
            Some(*kind)
        );
        assert_eq!(kind.to_string(), kind.as_str());
    }
    assert_eq!(StatementKind::ALL.len(), 27);
    assert_eq!(StatementKind::from_name("selects"), None);
    assert_eq!(StatementKind::from_name(""), None);
}

#[test]
fn one_statement_per_top_level_statement() {
    let facts = classify("BEGIN; SELECT 1; /* c */ ; COMMIT");
    let kinds: Vec<_> = facts.statements.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        [
            StatementKind::Transaction,
            StatementKind::Select,
            StatementKind::Transaction
        ]
    );
    assert!(facts.is_multi_statement());
}
