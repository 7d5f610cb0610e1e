//! `[[mask]]` parsing and the masking plan: which statements are tainted, refused or have
//! their messages withheld, and which output columns are masked.

#![cfg(test)]

use countersign_policy::mask::{
    Catalog, CatalogRelation, Field, MaskIndex, RelationKind, StatementMask, Style,
};
use countersign_policy::{Policy, classify};

const POLICY: &str = r#"
[[mask]]
name = "contact"
columns = ["public.customers.email", "public.customers.ssn"]

[[mask]]
name = "cards"
columns = ["public.customers.card"]
style = "partial"
keep = 4

[[mask]]
name = "secrets"
names = ["*password*"]
style = "null"

[[mask]]
name = "anywhere"
detect = ["email", "card_number"]
resources = ["pg-prod"]
"#;

fn catalog() -> Catalog {
    let table = |oid, name: &str, cols: &[&str]| CatalogRelation {
        oid,
        schema: "public".into(),
        name: name.into(),
        kind: RelationKind::Table,
        columns: cols
            .iter()
            .enumerate()
            .map(|(i, c)| (i16::try_from(i + 1).unwrap(), (*c).to_owned()))
            .collect(),
        definition: None,
    };
    let view = |oid, name: &str, cols: &[&str], def: &str| CatalogRelation {
        kind: RelationKind::View,
        definition: Some(def.into()),
        ..table(oid, name, cols)
    };
    Catalog {
        relations: vec![
            table(100, "customers", &["id", "name", "email", "ssn", "card"]),
            table(200, "orders", &["id", "customer_id", "total"]),
            view(
                300,
                "contacts",
                &["id", "contact"],
                "SELECT customers.id, customers.email AS contact FROM customers",
            ),
            view(
                301,
                "cities",
                &["id", "name"],
                "SELECT customers.id, customers.name FROM customers",
            ),
            view(
                302,
                "contacts2",
                &["contact"],
                "SELECT contacts.contact FROM contacts",
            ),
        ],
        functions: vec!["leak".into()],
    }
}

fn index(resource: &str, level: Option<&str>) -> MaskIndex {
    let policy = Policy::parse(POLICY).unwrap();
    MaskIndex::new(policy.masking(resource, "prod", level), &catalog(), b"k")
}

fn verdict(ix: &MaskIndex, sql: &str) -> StatementMask {
    ix.statement(&classify(sql), &|_| None)
}

fn rule_name(ix: &MaskIndex, rule: Option<usize>) -> Option<String> {
    rule.and_then(|r| ix.rule(r)).map(|r| r.name.clone())
}

#[test]
fn rules_parse_with_defaults_and_scope() {
    let policy = Policy::parse(POLICY).unwrap();
    let rules = policy.mask_rules();
    assert_eq!(rules.len(), 4);
    assert_eq!(rules[0].style, Style::Redact);
    assert_eq!(rules[1].style, Style::Partial { keep: 4 });
    assert_eq!(rules[2].style, Style::Null);
    assert_eq!(rules[0].unless_levels, vec!["unmask"]);
    // Scope: "anywhere" only on pg-prod; every rule lifted at level unmask.
    assert_eq!(policy.masking("pg-prod", "prod", None).rules.len(), 4);
    assert_eq!(policy.masking("pg-dev", "prod", None).rules.len(), 3);
    assert!(policy.masking("pg-prod", "prod", Some("unmask")).is_empty());
    assert_eq!(
        policy
            .masking("pg-prod", "prod", Some("read-only"))
            .rules
            .len(),
        4
    );
}

#[test]
fn bad_mask_sections_are_reported_with_lines() {
    let bad = r#"
[[mask]]
name = "a"
columns = ["customers.email"]

[[mask]]
name = "b"
detect = ["emails"]

[[mask]]
name = "c"
columns = ["public.t.c"]
style = "scramble"

[[mask]]
name = "d"

[[mask]]
name = "e"
columns = ["public.t.c"]
keep = 2

[[mask]]
name = "f"
columns = ["public.t.c"]
style = "partial"
keep = 0
colour = "red"
"#;
    let err = Policy::parse(bad).unwrap_err().to_string();
    for want in [
        "line 4",
        "schema.table.column",
        "unknown detector \"emails\"",
        "unknown style \"scramble\"",
        "masks nothing",
        "`keep` only applies",
        "`keep` must be between 1 and 64",
        "colour",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn values_taint_filters_do_not() {
    let ix = index("pg-prod", None);
    let tainted = [
        "SELECT email FROM customers",
        "SELECT lower(email) FROM customers",
        "SELECT x FROM (SELECT email || '' AS x FROM customers) s",
        "WITH c AS (SELECT ssn FROM customers) SELECT * FROM c",
        "SELECT row_to_json(c) FROM customers c",
        "SELECT to_jsonb(customers) FROM customers",
        "SELECT c.* FROM customers c",
        "SELECT * FROM customers",
        "SELECT string_agg(email, ',') FROM customers",
        "SELECT (SELECT email FROM customers LIMIT 1)",
        "SELECT lower(contact) FROM contacts",
        "SELECT contact FROM contacts2",
    ];
    for sql in tainted {
        let v = verdict(&ix, sql);
        assert!(v.tainted.is_some(), "{sql}: {v:?}");
        assert!(v.withhold_messages, "{sql}");
        assert!(v.refuse.is_none(), "{sql}");
    }
    let clean = [
        "SELECT id, name FROM customers",
        "SELECT count(*) FROM customers WHERE email LIKE '%@x.com'",
        "SELECT name FROM customers ORDER BY ssn",
        "SELECT c.name FROM customers c JOIN orders o ON o.customer_id = c.id AND c.email <> ''",
        "SELECT name FROM customers WHERE id IN (SELECT id FROM customers WHERE ssn = '1')",
        "SELECT * FROM orders",
        "SELECT name FROM cities",
        "SELECT 1",
    ];
    for sql in clean {
        let v = verdict(&ix, sql);
        assert!(
            v.tainted.is_none() && v.all_fields.is_none(),
            "{sql}: {v:?}"
        );
    }
    // Filters still withhold error texts; tables without masked columns do not.
    assert!(verdict(&ix, "SELECT 1 FROM customers WHERE email::int = 1").withhold_messages);
    assert!(!verdict(&ix, "SELECT total::int FROM orders").withhold_messages);
}

#[test]
fn writes_of_masked_values_and_copy_are_refused() {
    let ix = index("pg-prod", None);
    for sql in [
        "INSERT INTO orders (id, customer_id, total) SELECT id, id, length(email) FROM customers",
        "UPDATE customers SET name = email",
        "DELETE FROM customers WHERE id = 1 RETURNING ssn",
        "CREATE TABLE copy AS SELECT email FROM customers",
        "SELECT email INTO loot FROM customers",
        "CREATE VIEW v AS SELECT email FROM customers",
    ] {
        let v = verdict(&ix, sql);
        assert!(v.refuse.is_some(), "{sql}: {v:?}");
    }
    // Writing with masked columns only in filters is fine.
    let v = verdict(&ix, "UPDATE customers SET name = 'x' WHERE email = 'a@b.c'");
    assert!(v.refuse.is_none(), "{v:?}");
}

#[test]
fn copy_to_gets_a_plan_per_column() {
    use countersign_policy::mask::CopyFormat;
    let ix = index("pg-prod", None);
    let plan = |sql: &str| verdict(&ix, sql).copy.unwrap();
    let p = plan("COPY customers TO STDOUT");
    assert_eq!(p.format, CopyFormat::Text);
    assert_eq!((p.delimiter, p.null.as_slice()), (b'\t', b"\\N".as_slice()));
    let names: Vec<Option<String>> = p.columns.iter().map(|r| rule_name(&ix, *r)).collect();
    assert_eq!(
        names,
        vec![
            None,
            None,
            Some("contact".into()),
            Some("contact".into()),
            Some("cards".into())
        ]
    );
    let p = plan("COPY customers (card, id) TO STDOUT WITH (FORMAT csv, HEADER, DELIMITER ';')");
    assert_eq!(
        (p.format, p.delimiter, p.header),
        (CopyFormat::Csv, b';', true)
    );
    assert_eq!(p.columns, vec![Some(1), None]);
    let p = plan("COPY customers TO STDOUT CSV HEADER");
    assert_eq!((p.format, p.header), (CopyFormat::Csv, true));
    assert_eq!(
        plan("COPY customers TO STDOUT (FORMAT binary)").format,
        CopyFormat::Binary
    );
    // A query: all masked when tainted, or when `names` rules exist (names unknown here).
    assert!(
        plan("COPY (SELECT email FROM customers) TO STDOUT")
            .all
            .is_some()
    );
    assert!(plan("COPY (SELECT id FROM orders) TO STDOUT").all.is_some());
    let only_columns =
        Policy::parse("[[mask]]\nname = \"c\"\ncolumns = [\"public.customers.email\"]\n").unwrap();
    let plain = MaskIndex::new(only_columns.masking("r", "e", None), &catalog(), &[]);
    let v = plain.statement(&classify("COPY (SELECT id FROM orders) TO STDOUT"), &|_| {
        None
    });
    assert!(v.copy.unwrap().all.is_none());
    // COPY FROM gets no plan: nothing streams to the client.
    assert!(verdict(&ix, "COPY orders FROM STDIN").copy.is_none());
}

#[test]
fn set_operations_and_returning_mask_every_column() {
    let ix = index("pg-prod", None);
    let v = verdict(
        &ix,
        "SELECT name FROM customers UNION SELECT email FROM customers",
    );
    assert_eq!(rule_name(&ix, v.all_fields).as_deref(), Some("contact"));
    // Without a masked value, a UNION is left alone.
    let v = verdict(&ix, "SELECT name FROM customers UNION SELECT 'x'");
    assert!(v.all_fields.is_none());
}

#[test]
fn columns_are_decided_by_origin_name_and_taint() {
    let ix = index("pg-prod", None);
    let f = |name, table_oid, column| Field {
        name,
        table_oid,
        column,
    };
    let clean = StatementMask::default();
    let got = ix.fields(
        &clean,
        &[
            f("id", 100, 1),
            f("email", 100, 3),
            f("card", 100, 5),
            f("user_password", 0, 0),
            f("contact", 300, 2),
            f("id", 300, 1),
            f("name", 301, 2),
            f("lower", 0, 0),
        ],
    );
    let names: Vec<Option<String>> = got.iter().map(|r| rule_name(&ix, *r)).collect();
    assert_eq!(
        names,
        vec![
            None,
            Some("contact".into()),
            Some("cards".into()),
            Some("secrets".into()),
            Some("contact".into()),
            // A view that exposes a masked value has all its columns masked.
            Some("contact".into()),
            None,
            None,
        ]
    );
    // In a tainted statement, columns without an origin are masked; unknown relations too.
    let tainted = verdict(&ix, "SELECT lower(email), id FROM customers");
    let got = ix.fields(
        &tainted,
        &[f("lower", 0, 0), f("id", 100, 1), f("x", 999, 1)],
    );
    let names: Vec<Option<String>> = got.iter().map(|r| rule_name(&ix, *r)).collect();
    assert_eq!(
        names,
        vec![Some("contact".into()), None, Some("contact".into())]
    );
}

#[test]
fn cursors_carry_taint_to_fetch() {
    let ix = index("pg-prod", None);
    let fetch = classify("FETCH ALL FROM c");
    let clean = ix.statement(&fetch, &|_| None);
    assert!(clean.tainted.is_none());
    let tainted = ix.statement(&fetch, &|name| (name == "c").then_some(0));
    assert_eq!(tainted.tainted, Some(0));
    let declare = verdict(
        &ix,
        "DECLARE c CURSOR FOR SELECT lower(email) FROM customers",
    );
    assert!(declare.tainted.is_some());
}

#[test]
fn strict_masks_what_cannot_be_seen_through() {
    let strict =
        format!("{POLICY}\n[[mask]]\nname = \"strict\"\nnames = [\"zz\"]\nstrict = true\n");
    let policy = Policy::parse(&strict).unwrap();
    let ix = MaskIndex::new(policy.masking("pg-prod", "prod", None), &catalog(), &[]);
    for sql in [
        "SELECT leak(1)",
        "DO $$ BEGIN PERFORM 1; END $$",
        "SELEC broken",
    ] {
        let v = verdict(&ix, sql);
        assert!(
            v.all_fields.is_some() && v.withhold_messages,
            "{sql}: {v:?}"
        );
    }
    // Built-in functions are seen through.
    assert!(verdict(&ix, "SELECT lower('x')").all_fields.is_none());
    // Without strict, a user function is left to the detectors.
    assert!(
        verdict(&index("pg-prod", None), "SELECT leak(1)")
            .all_fields
            .is_none()
    );
}
