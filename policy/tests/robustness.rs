//! `classify` never panics and never reports a failure as "no statements": garbage, random
//! bytes, every truncation of valid statements, deep nesting, NUL bytes and huge inputs.

// Integration tests always build with cfg(test); saying so lets clippy's allow-*-in-tests
// settings cover the helpers too.
#![cfg(test)]

use countersign_policy::{StatementFacts, classify};

/// Asserts the invariant every result must hold.
fn check(sql: &str) -> StatementFacts {
    let facts = classify(sql);
    if facts.is_parse_failure() {
        assert!(
            facts.statements.is_empty(),
            "{sql:?}: statements next to a parse error"
        );
        assert!(facts.kind_names().is_empty());
    }
    facts
}

#[test]
fn garbage_sets_parse_error() {
    let garbage = [
        "SELEC 1",
        "SELECT 1 +",
        "DROP TABLE",
        "SELECT 'unterminated",
        "SELECT $$unterminated",
        "SELECT /* unterminated comment",
        "SELECT \"unterminated",
        "UPDATE SET x = 1",
        "this is not sql",
        "SELECT 1; this is not sql; SELECT 2",
        "DELETE FROM t; SELECT (",
        ")",
        "\u{feff}\u{202e}SELECT",
        "SELECT 1 /* a /* b */",
        "🙂",
    ];
    for sql in garbage {
        let facts = check(sql);
        assert!(facts.is_parse_failure(), "{sql:?} should fail to parse");
        assert!(!facts.parse_error.as_deref().unwrap_or_default().is_empty());
    }
}

#[test]
fn a_valid_statement_before_garbage_does_not_hide_the_failure() {
    let facts = check("SELECT 1; DELETE FROM t WHERE");
    assert!(facts.is_parse_failure());
}

#[test]
fn nul_byte_is_a_parse_error() {
    let facts = check("SELECT 1\0; DROP TABLE t");
    assert!(facts.is_parse_failure());
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    for depth in [10, 100, 1_000, 10_000] {
        check(&format!(
            "SELECT {}1{}",
            "(".repeat(depth),
            ")".repeat(depth)
        ));
        check(&format!("SELECT {}", vec!["1"; depth].join(" + ")));
        check(&format!(
            "SELECT * FROM {}t{}",
            "(SELECT * FROM ".repeat(depth),
            ") x".repeat(depth)
        ));
        check(&format!(
            "SELECT {}1{}",
            "ARRAY[".repeat(depth),
            "]".repeat(depth)
        ));
    }
    // A modest sum still parses.
    assert!(!check(&format!("SELECT {}", vec!["1"; 30].join(" + "))).is_parse_failure());
}

#[test]
fn deep_nesting_on_a_small_stack() {
    let handle = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            for depth in [100, 1_000, 10_000] {
                check(&format!(
                    "SELECT {}1{}",
                    "(".repeat(depth),
                    ")".repeat(depth)
                ));
                check(&format!("SELECT {}", vec!["x"; depth].join(" || ")));
            }
        })
        .unwrap();
    handle.join().unwrap();
}

#[test]
fn large_inputs() {
    let values = vec!["(1, 'x')"; 20_000].join(", ");
    let facts = check(&format!("INSERT INTO t VALUES {values}"));
    assert_eq!(facts.kind_names(), ["insert"]);
    let many = "SELECT 1;".repeat(5_000);
    assert_eq!(check(&many).statements.len(), 5_000);
}

const VALID: &[&str] = &[
    "SELECT abalance FROM pgbench_accounts WHERE aid = 1234;",
    "WITH d AS (DELETE FROM t WHERE id = 1 RETURNING *) INSERT INTO a SELECT * FROM d",
    "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET v = s.v",
    "EXPLAIN (ANALYZE, FORMAT json) SELECT * FROM a JOIN b USING (id) FOR UPDATE",
    "COPY (SELECT 'é', $$x;y$$) TO PROGRAM 'cat'",
    "DO $$ DECLARE r record; BEGIN FOR r IN SELECT * FROM t LOOP EXECUTE 'x'; END LOOP; END $$",
    "CREATE TABLE t (id int REFERENCES o (id), d text DEFAULT now()::text) /* c */ ;",
    "SET SESSION AUTHORIZATION 'bob'; RESET ROLE; SELECT set_config('role', 'x', true)",
];

#[test]
fn every_truncation_of_valid_statements() {
    for sql in VALID {
        assert!(!check(sql).is_parse_failure(), "{sql} must parse");
        for (end, _) in sql.char_indices() {
            check(&sql[..end]);
            check(&sql[end..]);
        }
    }
}

/// A small deterministic xorshift generator, so failures reproduce.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..3_000 {
        let len = (rng.next() % 64) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        check(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn random_splices_of_sql_tokens_never_panic() {
    const TOKENS: &[&str] = &[
        "SELECT",
        "FROM",
        "WHERE",
        "WITH",
        "AS",
        "(",
        ")",
        ";",
        ",",
        "'",
        "$$",
        "$a$",
        "/*",
        "*/",
        "--",
        "\n",
        "t",
        "s.t",
        "\"Q\"",
        "1",
        "DELETE",
        "UPDATE",
        "SET",
        "INSERT INTO",
        "VALUES",
        "DO",
        "EXPLAIN",
        "ANALYZE",
        "COPY",
        "TO",
        "STDOUT",
        "RETURNING",
        "*",
        "E'\\''",
        "::",
        "=",
        "FOR UPDATE",
        "PREPARE",
        "EXECUTE",
        "CALL",
        "f(",
        "BEGIN",
        "END",
        "MERGE",
        "USING",
        "ON",
    ];
    let mut rng = XorShift(42);
    for _ in 0..3_000 {
        let n = (rng.next() % 16) as usize;
        let sql: Vec<&str> = (0..n)
            .map(|_| TOKENS[(rng.next() as usize) % TOKENS.len()])
            .collect();
        check(&sql.join(" "));
    }
}
