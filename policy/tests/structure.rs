//! The structured facts: COPY details, prepared-statement names, inner and nested statements,
//! settings, options, and the helpers on the public types.

// Integration tests always build with cfg(test); saying so lets clippy's allow-*-in-tests
// settings cover the helpers too.
#![cfg(test)]

use countersign_policy::{
    ClassifyOptions, CopyDirection, Statement, StatementKind, TableRef, classify, classify_with,
};

fn first(sql: &str) -> Statement {
    let facts = classify(sql);
    assert!(!facts.is_parse_failure(), "{sql}: {:?}", facts.parse_error);
    facts.statements.into_iter().next().unwrap()
}

#[test]
fn copy_direction_program_and_server_file() {
    let cases = [
        ("COPY t FROM STDIN", (CopyDirection::From, false, false)),
        ("COPY t TO STDOUT", (CopyDirection::To, false, false)),
        (
            "COPY t FROM '/etc/passwd'",
            (CopyDirection::From, false, true),
        ),
        (
            "COPY t TO '/tmp/out.csv' WITH (FORMAT csv)",
            (CopyDirection::To, false, true),
        ),
        (
            "COPY t FROM PROGRAM 'curl http://x'",
            (CopyDirection::From, true, false),
        ),
        (
            "COPY (SELECT 1) TO PROGRAM 'gzip > /tmp/x.gz'",
            (CopyDirection::To, true, false),
        ),
    ];
    for (sql, expected) in cases {
        assert_eq!(first(sql).copy, Some(expected), "{sql}");
    }
    assert_eq!(first("SELECT 1").copy, None);
}

#[test]
fn prepared_statement_names() {
    assert_eq!(
        first("PREPARE q1 (int) AS SELECT $1")
            .prepared_name
            .as_deref(),
        Some("q1")
    );
    assert_eq!(first("EXECUTE q1 (5)").prepared_name.as_deref(), Some("q1"));
    assert_eq!(first("DEALLOCATE q1").prepared_name.as_deref(), Some("q1"));
    assert_eq!(
        first("DEALLOCATE PREPARE q1").prepared_name.as_deref(),
        Some("q1")
    );
    assert_eq!(first("DEALLOCATE ALL").prepared_name, None);
    assert_eq!(
        first("PREPARE \"Mixed\" AS SELECT 1")
            .prepared_name
            .as_deref(),
        Some("Mixed")
    );
}

#[test]
fn wrapped_statements_are_classified_as_inner() {
    let cases = [
        (
            "EXPLAIN ANALYZE UPDATE t SET v = 1 WHERE id = 1",
            StatementKind::Update,
        ),
        (
            "PREPARE p AS DELETE FROM t WHERE id = $1",
            StatementKind::Delete,
        ),
        ("CREATE TABLE t2 AS SELECT * FROM t", StatementKind::Select),
        (
            "CREATE MATERIALIZED VIEW mv AS SELECT * FROM t",
            StatementKind::Select,
        ),
        (
            "DECLARE c CURSOR WITH HOLD FOR SELECT * FROM t",
            StatementKind::Select,
        ),
        ("COPY (SELECT * FROM t) TO STDOUT", StatementKind::Select),
        ("EXPLAIN EXECUTE p (1)", StatementKind::Execute),
    ];
    for (sql, inner_kind) in cases {
        let stmt = first(sql);
        let inner = stmt
            .inner
            .as_deref()
            .unwrap_or_else(|| panic!("{sql}: no inner"));
        assert_eq!(inner.kind, inner_kind, "{sql}");
        // The outer statement absorbs the inner facts.
        for table in &inner.tables_read {
            assert!(
                stmt.tables_read.contains(table),
                "{sql}: {table} not absorbed"
            );
        }
        for table in &inner.tables_written {
            assert!(
                stmt.tables_written.contains(table),
                "{sql}: {table} not absorbed"
            );
        }
    }
    let explain = first("EXPLAIN EXECUTE p (1)");
    assert_eq!(explain.inner.unwrap().prepared_name.as_deref(), Some("p"));
    assert!(first("SELECT 1").inner.is_none());
}

#[test]
fn modifying_cte_is_a_reachable_nested_statement() {
    let stmt = first("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d");
    assert_eq!(stmt.kind, StatementKind::Select);
    assert!(stmt.modifying_cte && stmt.without_where);
    assert_eq!(stmt.nested.len(), 1);
    let delete = &stmt.nested[0];
    assert_eq!(delete.kind, StatementKind::Delete);
    assert_eq!(delete.tables_written, [TableRef::new(None, "t")]);
    assert!(delete.without_where);
    assert_eq!(
        classify("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d").kind_names(),
        ["select", "delete"]
    );
}

#[test]
fn nested_statements_keep_their_own_facts() {
    let stmt = first(
        "WITH a AS (DELETE FROM t WHERE id = 1 RETURNING id), \
              b AS (UPDATE u SET n = 0 RETURNING id) \
         INSERT INTO log SELECT id FROM a UNION ALL SELECT id FROM b",
    );
    assert_eq!(stmt.kind, StatementKind::Insert);
    let kinds: Vec<_> = stmt.nested.iter().map(|s| s.kind).collect();
    assert_eq!(kinds, [StatementKind::Delete, StatementKind::Update]);
    assert!(!stmt.nested[0].without_where);
    assert!(stmt.nested[1].without_where);
    assert!(stmt.without_where, "aggregated up");
    assert_eq!(
        stmt.tables_written,
        [
            TableRef::new(None, "log"),
            TableRef::new(None, "t"),
            TableRef::new(None, "u")
        ]
    );
}

#[test]
fn merge_and_upsert_actions_are_nested() {
    let merge = first(
        "MERGE INTO s.t USING src ON t.id = src.id WHEN MATCHED AND src.gone THEN DELETE \
         WHEN MATCHED THEN UPDATE SET v = src.v WHEN NOT MATCHED THEN INSERT VALUES (src.id)",
    );
    let kinds: Vec<_> = merge.nested.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        [
            StatementKind::Delete,
            StatementKind::Update,
            StatementKind::Insert
        ]
    );
    assert!(
        merge
            .nested
            .iter()
            .all(|s| s.tables_written == [TableRef::new(Some("s"), "t")])
    );
    let upsert = first("INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET v = 2");
    assert_eq!(upsert.nested.len(), 1);
    assert_eq!(upsert.nested[0].kind, StatementKind::Update);
}

#[test]
fn do_block_statements_are_nested_and_kind_stays_do() {
    let facts = classify(
        "DO $$ BEGIN INSERT INTO audit VALUES (now()); DELETE FROM t WHERE id = 1; END $$",
    );
    let stmt = &facts.statements[0];
    assert_eq!(stmt.kind, StatementKind::Do);
    assert!(!stmt.opaque);
    let mut kinds: Vec<_> = stmt.nested.iter().map(|s| s.kind).collect();
    kinds.sort();
    assert_eq!(kinds, [StatementKind::Insert, StatementKind::Delete]);
    assert_eq!(facts.kind_names()[0], "do");
}

#[test]
fn create_schema_elements_are_nested() {
    let stmt = first("CREATE SCHEMA s CREATE TABLE t (a int) GRANT SELECT ON t TO public");
    let kinds: Vec<_> = stmt.nested.iter().map(|s| s.kind).collect();
    assert_eq!(kinds, [StatementKind::Create, StatementKind::Grant]);
}

#[test]
fn settings_are_named() {
    assert_eq!(
        first("SET Search_Path TO a, b").setting.as_deref(),
        Some("search_path")
    );
    assert_eq!(first("RESET work_mem").setting.as_deref(), Some("work_mem"));
    assert_eq!(first("SHOW TimeZone").setting.as_deref(), Some("timezone"));
    assert_eq!(
        first("SET TIME ZONE 'UTC'").setting.as_deref(),
        Some("timezone")
    );
    assert_eq!(first("SHOW ALL").setting, None);
    assert_eq!(first("RESET ALL").setting, None);
    assert_eq!(first("SELECT 1").setting, None);
}

#[test]
fn kind_names_are_distinct_and_in_first_seen_order() {
    let facts = classify(
        "EXPLAIN ANALYZE WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d; \
         SELECT 1; DELETE FROM t WHERE id = 1; BEGIN",
    );
    assert_eq!(
        facts.kind_names(),
        ["explain", "select", "delete", "transaction"]
    );
    assert_eq!(facts.all().len(), 6);
}

#[test]
fn table_ref_display_and_calls() {
    assert_eq!(TableRef::new(Some("s"), "t").to_string(), "s.t");
    assert_eq!(TableRef::new(None, "t").to_string(), "t");
    let stmt = first("SELECT pg_catalog.pg_read_file('x'), lower('A'), s.f()");
    assert!(stmt.calls("pg_read_file"));
    assert!(stmt.calls("PG_READ_FILE"));
    assert!(stmt.calls("pg_catalog.pg_read_file"));
    assert!(!stmt.calls("other.pg_read_file"));
    assert!(stmt.calls("lower"));
    assert!(
        !stmt.calls("pg_catalog.lower"),
        "qualified names match exactly"
    );
    assert!(stmt.calls("f"));
    assert!(!stmt.calls("read_file"));
}

#[test]
fn standard_conforming_strings_moves_statement_boundaries() {
    // With backslashes as plain characters the quote closes early and a DROP follows; with
    // backslash escapes (standard_conforming_strings = off) it is all one string literal.
    let sql = "SELECT 'a\\'; DROP TABLE t; --'";
    assert_eq!(classify(sql).kind_names(), ["select", "drop"]);
    let off = ClassifyOptions {
        standard_conforming_strings: false,
    };
    assert_eq!(classify_with(sql, off).kind_names(), ["select"]);
}

#[test]
fn unqualified_and_quoted_names_keep_postgres_folding() {
    let stmt = first("SELECT * FROM Public.Accounts JOIN \"Public\".\"Accounts\" USING (id)");
    assert_eq!(
        stmt.tables_read,
        [
            TableRef::new(Some("public"), "accounts"),
            TableRef::new(Some("Public"), "Accounts")
        ]
    );
}
