//! Statement facts other than the kind, table-driven: tables read and written, functions, and
//! the guardrail flags. Tables and functions are compared as sets; each row checks the first
//! statement of its string.

// Integration tests always build with cfg(test); saying so lets clippy's allow-*-in-tests
// settings cover the helpers too.
#![cfg(test)]

use countersign_policy::{Statement, classify};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Flag {
    WithoutWhere,
    ModifyingCte,
    ExplainAnalyze,
    SetRole,
    Opaque,
    LocksRows,
}
use Flag::*;

struct Case {
    sql: &'static str,
    read: &'static [&'static str],
    written: &'static [&'static str],
    functions: &'static [&'static str],
    flags: &'static [Flag],
}

const fn case(
    sql: &'static str,
    read: &'static [&'static str],
    written: &'static [&'static str],
    functions: &'static [&'static str],
    flags: &'static [Flag],
) -> Case {
    Case {
        sql,
        read,
        written,
        functions,
        flags,
    }
}

const CASES: &[Case] = &[
    // Reads.
    case(
        "SELECT abalance FROM pgbench_accounts WHERE aid = 1",
        &["pgbench_accounts"],
        &[],
        &[],
        &[],
    ),
    case(
        "SELECT * FROM a JOIN s.b ON true LEFT JOIN c USING (id)",
        &["a", "s.b", "c"],
        &[],
        &[],
        &[],
    ),
    case(
        "SELECT * FROM t WHERE id IN (SELECT id FROM u) AND EXISTS (SELECT 1 FROM v)",
        &["t", "u", "v"],
        &[],
        &[],
        &[],
    ),
    case(
        "SELECT (SELECT max(x) FROM u) FROM t",
        &["t", "u"],
        &[],
        &["max"],
        &[],
    ),
    case(
        "SELECT * FROM generate_series(1, 3) g, LATERAL (SELECT * FROM t WHERE t.id = g) x",
        &["t"],
        &[],
        &["generate_series"],
        &[],
    ),
    case(
        "SELECT * FROM t WHERE x = ANY(ARRAY(SELECT y FROM u))",
        &["t", "u"],
        &[],
        &[],
        &[],
    ),
    case("SELECT * FROM s.t AS alias", &["s.t"], &[], &[], &[]),
    case("SELECT * FROM db.s.t", &["s.t"], &[], &[], &[]),
    case(
        "SELECT \"MyFunc\"(1) FROM \"MyTable\", OtherTable",
        &["MyTable", "othertable"],
        &[],
        &["myfunc"],
        &[],
    ),
    case(
        "SELECT 1 FROM a UNION SELECT 2 FROM b",
        &["a", "b"],
        &[],
        &[],
        &[],
    ),
    // SELECT INTO and row locks write.
    case("SELECT * INTO new_t FROM t", &["t"], &["new_t"], &[], &[]),
    case(
        "SELECT * FROM t FOR UPDATE",
        &["t"],
        &["t"],
        &[],
        &[LocksRows],
    ),
    case(
        "SELECT * FROM t, u FOR SHARE OF t",
        &["t", "u"],
        &["t", "u"],
        &[],
        &[LocksRows],
    ),
    case(
        "SELECT * FROM (SELECT * FROM t) x FOR NO KEY UPDATE",
        &["t"],
        &["t"],
        &[],
        &[LocksRows],
    ),
    // DML: the target is written, everything else read.
    case("INSERT INTO s.t (a) VALUES (1)", &[], &["s.t"], &[], &[]),
    case("INSERT INTO t SELECT * FROM u", &["u"], &["t"], &[], &[]),
    case(
        "INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET v = excluded.v",
        &[],
        &["t"],
        &[],
        &[],
    ),
    case(
        "UPDATE t SET v = u.v FROM u WHERE t.id = u.id",
        &["u"],
        &["t"],
        &[],
        &[],
    ),
    case("UPDATE t SET v = 1", &[], &["t"], &[], &[WithoutWhere]),
    case(
        "UPDATE t SET v = (SELECT max(v) FROM t)",
        &["t"],
        &["t"],
        &["max"],
        &[WithoutWhere],
    ),
    case("DELETE FROM t", &[], &["t"], &[], &[WithoutWhere]),
    case(
        "DELETE FROM t USING u WHERE t.id = u.id",
        &["u"],
        &["t"],
        &[],
        &[],
    ),
    case("DELETE FROM t WHERE CURRENT OF c", &[], &["t"], &[], &[]),
    case("DELETE FROM t WHERE true", &[], &["t"], &[], &[]),
    case(
        "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
        &["s"],
        &["t"],
        &[],
        &[],
    ),
    case(
        "MERGE INTO t USING (SELECT * FROM a JOIN b USING (id)) s ON t.id = s.id \
         WHEN NOT MATCHED THEN INSERT VALUES (s.id)",
        &["a", "b"],
        &["t"],
        &[],
        &[],
    ),
    // CTEs: data-modifying ones, and CTE names versus tables.
    case(
        "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
        &[],
        &["t"],
        &[],
        &[WithoutWhere, ModifyingCte],
    ),
    case(
        "WITH d AS (DELETE FROM t WHERE id = 1 RETURNING *) INSERT INTO archive SELECT * FROM d",
        &[],
        &["archive", "t"],
        &[],
        &[ModifyingCte],
    ),
    case(
        "WITH u AS (UPDATE t SET v = 1 WHERE id = 2 RETURNING id) SELECT * FROM u JOIN w USING (id)",
        &["w"],
        &["t"],
        &[],
        &[ModifyingCte],
    ),
    case(
        "WITH t AS (SELECT * FROM t) SELECT * FROM t",
        &["t"],
        &[],
        &[],
        &[],
    ),
    case(
        "WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a, b",
        &["b"],
        &[],
        &[],
        &[],
    ),
    case(
        "WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT * FROM r",
        &[],
        &[],
        &[],
        &[],
    ),
    case(
        "WITH x AS (SELECT 1) SELECT * FROM s.x",
        &["s.x"],
        &[],
        &[],
        &[],
    ),
    case(
        "SELECT * FROM (WITH x AS (SELECT 1) SELECT * FROM x) a, x",
        &["x"],
        &[],
        &[],
        &[],
    ),
    case(
        "WITH x AS (SELECT * FROM base) SELECT * FROM t WHERE id IN (SELECT id FROM x)",
        &["base", "t"],
        &[],
        &[],
        &[],
    ),
    // Functions anywhere.
    case(
        "SELECT pg_catalog.pg_read_file('/etc/passwd')",
        &[],
        &[],
        &["pg_catalog.pg_read_file"],
        &[],
    ),
    case(
        "SELECT lo_import('/etc/passwd'), COUNT(*) FROM t",
        &["t"],
        &[],
        &["lo_import", "count"],
        &[],
    ),
    case(
        "SELECT * FROM t ORDER BY random() LIMIT abs(-1)",
        &["t"],
        &[],
        &["random", "abs"],
        &[],
    ),
    case(
        "CALL s.proc(pg_sleep(1))",
        &[],
        &[],
        &["s.proc", "pg_sleep"],
        &[],
    ),
    case(
        "SELECT extract(year FROM now())",
        &[],
        &[],
        &["pg_catalog.extract", "now"],
        &[],
    ),
    case(
        "EXECUTE p (pg_read_file('x'))",
        &[],
        &[],
        &["pg_read_file"],
        &[],
    ),
    // Utility statements write the relations they name.
    case(
        "CREATE TABLE t (id int DEFAULT nextval('s'), ref int REFERENCES other (id))",
        &[],
        &["t", "other"],
        &["nextval"],
        &[],
    ),
    case("CREATE VIEW v AS SELECT * FROM t", &["t"], &["v"], &[], &[]),
    case(
        "CREATE TABLE t2 AS SELECT * FROM t",
        &["t"],
        &["t2"],
        &[],
        &[],
    ),
    case(
        "CREATE INDEX i ON t (lower(name))",
        &[],
        &["t"],
        &["lower"],
        &[],
    ),
    case("ALTER TABLE s.t ADD COLUMN c int", &[], &["s.t"], &[], &[]),
    case("DROP TABLE a, s.b", &[], &["a", "s.b"], &[], &[]),
    case("DROP VIEW IF EXISTS v", &[], &["v"], &[], &[]),
    case("DROP FUNCTION f()", &[], &[], &[], &[]),
    case("DROP TRIGGER tg ON s.t", &[], &["s.t"], &[], &[]),
    case("TRUNCATE a, s.b", &[], &["a", "s.b"], &[], &[]),
    case("GRANT SELECT ON t TO r", &[], &["t"], &[], &[]),
    case("LOCK TABLE t IN SHARE MODE", &[], &["t"], &[], &[]),
    case("VACUUM ANALYZE t", &[], &["t"], &[], &[]),
    case(
        "CREATE FUNCTION f() RETURNS void LANGUAGE sql BEGIN ATOMIC DELETE FROM t; END",
        &[],
        &["t"],
        &[],
        &[WithoutWhere],
    ),
    // COPY.
    case("COPY t FROM STDIN", &[], &["t"], &[], &[]),
    case("COPY t TO STDOUT", &["t"], &[], &[], &[]),
    case(
        "COPY (SELECT * FROM t JOIN u USING (id)) TO STDOUT",
        &["t", "u"],
        &[],
        &[],
        &[],
    ),
    // EXPLAIN: the wrapped statement's facts, and ANALYZE spelled every way.
    case(
        "EXPLAIN ANALYZE DELETE FROM t",
        &[],
        &["t"],
        &[],
        &[ExplainAnalyze, WithoutWhere],
    ),
    case("EXPLAIN SELECT * FROM t", &["t"], &[], &[], &[]),
    case("EXPLAIN (ANALYZE false) SELECT 1", &[], &[], &[], &[]),
    case("EXPLAIN (ANALYZE 0, VERBOSE) SELECT 1", &[], &[], &[], &[]),
    case("EXPLAIN (ANALYZE off) SELECT 1", &[], &[], &[], &[]),
    case(
        "EXPLAIN (ANALYZE on) SELECT 1",
        &[],
        &[],
        &[],
        &[ExplainAnalyze],
    ),
    case(
        "EXPLAIN (ANALYZE) SELECT 1",
        &[],
        &[],
        &[],
        &[ExplainAnalyze],
    ),
    case(
        "EXPLAIN (ANALYZE 1) SELECT 1",
        &[],
        &[],
        &[],
        &[ExplainAnalyze],
    ),
    case("EXPLAIN ANALYSE SELECT 1", &[], &[], &[], &[ExplainAnalyze]),
    case(
        "EXPLAIN (ANALYZE bogus) SELECT 1",
        &[],
        &[],
        &[],
        &[ExplainAnalyze],
    ),
    // Role changes.
    case("SET ROLE admin", &[], &[], &[], &[SetRole]),
    case("SET LOCAL ROLE admin", &[], &[], &[], &[SetRole]),
    case("RESET ROLE", &[], &[], &[], &[SetRole]),
    case("SET SESSION AUTHORIZATION bob", &[], &[], &[], &[SetRole]),
    case("RESET SESSION AUTHORIZATION", &[], &[], &[], &[SetRole]),
    case("RESET ALL", &[], &[], &[], &[SetRole]),
    case("DISCARD ALL", &[], &[], &[], &[SetRole]),
    case("DISCARD PLANS", &[], &[], &[], &[]),
    case("SET search_path = x", &[], &[], &[], &[]),
    case(
        "SELECT set_config('role', 'admin', false)",
        &[],
        &[],
        &["set_config"],
        &[SetRole],
    ),
    case(
        "SELECT set_config(' ROLE ', 'admin', false)",
        &[],
        &[],
        &["set_config"],
        &[SetRole],
    ),
    case(
        "SELECT pg_catalog.set_config('search_path', '', false)",
        &[],
        &[],
        &["pg_catalog.set_config"],
        &[],
    ),
    case(
        "SELECT set_config(name, 'x', false) FROM settings",
        &["settings"],
        &[],
        &["set_config"],
        &[SetRole],
    ),
    // DO blocks.
    case("DO $$ BEGIN NULL; END $$", &[], &[], &[], &[]),
    case(
        "DO $$ BEGIN EXECUTE 'DROP TABLE t'; END $$",
        &[],
        &[],
        &[],
        &[Opaque],
    ),
    case(
        "DO LANGUAGE plperlu $$ system('id') $$",
        &[],
        &[],
        &[],
        &[Opaque],
    ),
    case("DO $$ this is not pl/pgsql $$", &[], &[], &[], &[Opaque]),
    case(
        "DO $$ BEGIN PERFORM pg_read_file('/etc/passwd'); UPDATE t SET v = 1; END $$",
        &[],
        &["t"],
        &["pg_read_file"],
        &[WithoutWhere],
    ),
    case(
        "DO $$ BEGIN SET ROLE admin; END $$",
        &[],
        &[],
        &[],
        &[SetRole],
    ),
    case(
        "DO $$ DECLARE r record; BEGIN FOR r IN SELECT * FROM t LOOP NULL; END LOOP; END $$",
        &["t"],
        &[],
        &[],
        &[],
    ),
    case(
        "DO $$ DECLARE n int; BEGIN n := (SELECT count(*) FROM t); IF n > 1 THEN RAISE NOTICE 'x'; END IF; END $$",
        &["t"],
        &[],
        &["count"],
        &[],
    ),
    case(
        "DO $a$ BEGIN DO $b$ BEGIN DELETE FROM t; END $b$; END $a$",
        &[],
        &["t"],
        &[],
        &[WithoutWhere],
    ),
    case(
        "DO $$ BEGIN WITH d AS (DELETE FROM t RETURNING 1) SELECT 1; END $$",
        &[],
        &["t"],
        &[],
        &[WithoutWhere, ModifyingCte],
    ),
    // Cursors.
    case(
        "DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE",
        &["t"],
        &["t"],
        &[],
        &[LocksRows],
    ),
];

fn names(tables: &[countersign_policy::TableRef]) -> Vec<String> {
    let mut names: Vec<String> = tables.iter().map(ToString::to_string).collect();
    names.sort();
    names
}

fn sorted(items: &[&str]) -> Vec<String> {
    let mut items: Vec<String> = items.iter().map(|s| (*s).to_owned()).collect();
    items.sort();
    items
}

fn flags(s: &Statement) -> Vec<Flag> {
    [
        (s.without_where, WithoutWhere),
        (s.modifying_cte, ModifyingCte),
        (s.explain_analyze, ExplainAnalyze),
        (s.set_role, SetRole),
        (s.opaque, Opaque),
        (s.locks_rows, LocksRows),
    ]
    .into_iter()
    .filter_map(|(on, flag)| on.then_some(flag))
    .collect()
}

#[test]
fn facts_table() {
    let mut failures = Vec::new();
    for c in CASES {
        let facts = classify(c.sql);
        let Some(s) = facts.statements.first() else {
            failures.push(format!(
                "{:?}: no statement ({:?})",
                c.sql, facts.parse_error
            ));
            continue;
        };
        let mut functions = s.functions.clone();
        functions.sort();
        let mut expected_flags = c.flags.to_vec();
        expected_flags.sort_by_key(|f| *f as u8);
        let got = (
            names(&s.tables_read),
            names(&s.tables_written),
            functions,
            flags(s),
        );
        let want = (
            sorted(c.read),
            sorted(c.written),
            sorted(c.functions),
            expected_flags,
        );
        if got != want {
            failures.push(format!("{:?}:\n   got  {got:?}\n   want {want:?}", c.sql));
        }
    }
    assert!(
        failures.is_empty(),
        "{} fact mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(CASES.len() >= 80);
}
