//! The facts cache's shape key is sound: whenever `shape_determines_facts` admits a statement's
//! facts, every other text of that shape (the same text with other constant values) has exactly
//! those facts. Each statement of the corpus is varied one constant at a time, through values
//! chosen to flip every value-dependent fact the classifier has (setting names, boolean option
//! spellings, formats, code in dollar quotes), and each variant of the same shape is classified
//! and compared.

// Integration tests always build with cfg(test); saying so lets clippy's allow-*-in-tests
// settings cover the helpers too.
#![cfg(test)]

use countersign_policy::{classify, shape_determines_facts, shape_key};
use pg_query::protobuf::Token;

const CORPUS: &[&str] = &[
    // pgbench's statements, as -M simple sends them.
    "SELECT abalance FROM pgbench_accounts WHERE aid = 4711;",
    "UPDATE pgbench_accounts SET abalance = abalance + -4321 WHERE aid = 1234;",
    "UPDATE pgbench_tellers SET tbalance = tbalance + 17 WHERE tid = 3;",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (7, 1, 1234, -4321, CURRENT_TIMESTAMP);",
    // Queries with constants in every kind of place.
    "SELECT * FROM orders WHERE status = 'open' AND total > 10.5 ORDER BY id LIMIT 50 OFFSET 100",
    "SELECT c.name, sum(o.total) FROM customers c JOIN orders o ON o.customer_id = c.id \
     WHERE c.region IN ('EU', 'US') AND o.created_at > now() - interval '7 days' GROUP BY 1",
    "SELECT 'pg_authid'::regclass, X'ff', B'0101', U&'data', E'it''s'",
    "SELECT current_setting('role'), pg_read_file('/etc/passwd', 0, 100)",
    "SELECT format('%s', 'x'), jsonb_path_query(doc, '$.a[*] ? (@ > 1)') FROM docs WHERE id = 1",
    "SELECT $body$ DELETE FROM accounts $body$ AS text_only FROM t WHERE a = $$x$$",
    "SELECT * FROM accounts WHERE id = 1 FOR UPDATE",
    "SELECT * INTO TEMP copy_t FROM t WHERE a = 'x'",
    "WITH gone AS (DELETE FROM queue WHERE run_at < '2024-01-01' RETURNING *) \
     INSERT INTO queue_archive SELECT * FROM gone",
    "INSERT INTO kv (k, v) VALUES ('a', 1) ON CONFLICT (k) DO UPDATE SET v = 2",
    "MERGE INTO stock s USING incoming i ON s.item = i.item AND i.day = '2024-01-01' \
     WHEN MATCHED THEN UPDATE SET qty = s.qty + 1 WHEN NOT MATCHED THEN INSERT VALUES (i.item, 5)",
    "DELETE FROM sessions WHERE expires < now() - interval '1 hour' AND kind <> 'pinned'",
    "UPDATE t SET a = 'x'",
    "SELECT 1; UPDATE t SET a = 2 WHERE id = 3",
    "SELECT * FROM t TABLESAMPLE bernoulli (10) REPEATABLE (42) WHERE a = 1",
    "SELECT CAST('1' AS int), '{1,2}'::int[], 1::bigint, 9223372036854775807, 1e10",
    // Facts that depend on a constant's value: never admitted (and varied below to prove why).
    "SELECT set_config('work_mem', '64MB', false)",
    "SELECT pg_catalog.set_config('search_path', 'public', true) FROM t WHERE id = 1",
    "EXPLAIN (ANALYZE 'off') DELETE FROM t WHERE id = 1",
    "EXPLAIN (ANALYZE 'off', FORMAT 'json') SELECT * FROM t WHERE a = 'x'",
    "COPY t TO STDOUT WITH (FORMAT 'text', HEADER 'false', DELIMITER ',')",
    "COPY (SELECT * FROM t WHERE a = 1) TO '/tmp/out.csv'",
    "DO $$BEGIN PERFORM 1; END$$",
    "DO LANGUAGE 'plpgsql' $$BEGIN PERFORM 1; END$$",
    "SET work_mem = '64MB'",
    "SET ROLE 'app'",
    "PREPARE p AS SELECT * FROM t WHERE a = 1",
    "CREATE TABLE t2 AS SELECT * FROM t WHERE a = 'x'",
];

/// Replacement values by constant token type, chosen to flip value-dependent facts.
fn alternatives(token: Token) -> &'static [&'static str] {
    match token {
        Token::Iconst => &["0", "1", "7", "2147483647"],
        Token::Fconst => &["0.0", "1.5", "1e3", "9223372036854775808"],
        Token::Sconst => &[
            "'role'",
            "'session_authorization'",
            "'ROLE '",
            "'on'",
            "'off'",
            "'true'",
            "'0'",
            "''",
            "'csv'",
            "'binary'",
            "'plpython3u'",
            "'sql'",
            "$$BEGIN DELETE FROM accounts; END$$",
            "$$BEGIN EXECUTE 'DROP TABLE t'; END$$",
            "$x$SELECT 1$x$",
            "'/etc/passwd'",
            "'{}'",
        ],
        Token::Usconst => &["U&'x'", "U&'role'"],
        Token::Bconst => &["B'1'", "B''"],
        Token::Xconst => &["X'00'", "X''"],
        _ => &[],
    }
}

/// Every text made from `sql` by replacing one constant with another value.
fn variants(sql: &str) -> Vec<String> {
    let Ok(tokens) = pg_query::scan_tokens(sql) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in tokens {
        let Ok(token) = Token::try_from(t.token) else {
            continue;
        };
        let (start, end) = (t.start as usize, t.end as usize);
        for value in alternatives(token) {
            out.push(format!("{}{value}{}", &sql[..start], &sql[end..]));
        }
    }
    out
}

#[test]
fn an_admitted_shape_has_the_facts_of_every_text_of_that_shape() {
    let mut admitted = 0;
    let mut compared = 0;
    for sql in CORPUS {
        let facts = classify(sql);
        assert!(
            !facts.is_parse_failure(),
            "corpus entry does not parse: {sql}"
        );
        let key = shape_key(sql);
        assert!(key.is_some(), "corpus entry has no constant: {sql}");
        if !shape_determines_facts(&facts) {
            continue;
        }
        admitted += 1;
        for variant in variants(sql) {
            if shape_key(&variant) != key {
                continue;
            }
            let other = classify(&variant);
            if other.is_parse_failure() {
                // The server refuses it too; nothing of it runs.
                continue;
            }
            compared += 1;
            assert_eq!(facts, other, "{sql:?} and {variant:?} share a shape");
        }
    }
    // Every plain DML entry above but `SELECT ... INTO` (which nests a `create`).
    assert!(admitted >= 19, "only {admitted} corpus entries admitted");
    assert!(compared >= 200, "only {compared} variants compared");
}

/// Without the admission rule the shape would be unsound: each of these statements has a
/// variant of its own shape whose facts differ, and `shape_determines_facts` rejects it.
#[test]
fn value_dependent_statements_are_rejected_and_would_have_been_wrong() {
    let sensitive = [
        "SELECT set_config('work_mem', '64MB', false)",
        "SELECT pg_catalog.set_config('search_path', 'public', true) FROM t WHERE id = 1",
        "EXPLAIN (ANALYZE 'off') DELETE FROM t WHERE id = 1",
        "COPY t TO STDOUT WITH (FORMAT 'text', HEADER 'false', DELIMITER ',')",
        "DO $$BEGIN PERFORM 1; END$$",
    ];
    for sql in sensitive {
        let facts = classify(sql);
        assert!(!shape_determines_facts(&facts), "{sql} admitted");
        let key = shape_key(sql);
        let differs = variants(sql).iter().any(|v| {
            let other = classify(v);
            shape_key(v) == key && !other.is_parse_failure() && other != facts
        });
        assert!(differs, "{sql}: no variant of the same shape differs");
    }
}
