//! Rough per-statement cost of `classify` (uncached) and of a `FactsCache` hit.
//!
//! Run with `cargo run --release -p countersign-policy --example classify_bench`. A plain
//! `Instant` loop: numbers are indicative, not statistically rigorous, and include allocator
//! noise. Not guaranteed to be stable across machines.

use std::hint::black_box;
use std::time::{Duration, Instant};

use countersign_policy::{FactsCache, classify, shape_determines_facts, shape_key};

const STATEMENTS: &[(&str, &str)] = &[
    (
        "pgbench select",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 1234;",
    ),
    (
        "pgbench tpc-b update",
        "UPDATE pgbench_accounts SET abalance = abalance + -4321 WHERE aid = 1234;",
    ),
    (
        "pgbench insert",
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) \
         VALUES (7, 1, 1234, -4321, CURRENT_TIMESTAMP);",
    ),
    ("begin", "BEGIN;"),
    (
        "3-way join",
        "SELECT c.name, o.id, sum(li.qty * li.price) FROM customers c \
         JOIN orders o ON o.customer_id = c.id JOIN line_items li ON li.order_id = o.id \
         WHERE c.region = 'EU' AND o.created_at > now() - interval '7 days' \
         GROUP BY c.name, o.id ORDER BY 3 DESC LIMIT 50",
    ),
    (
        "cte",
        "WITH recent AS (SELECT customer_id, count(*) AS n FROM orders \
         WHERE created_at > now() - interval '1 day' GROUP BY customer_id) \
         SELECT c.email, r.n FROM customers c JOIN recent r ON r.customer_id = c.id \
         WHERE r.n > 3",
    ),
    (
        "modifying cte",
        "WITH moved AS (DELETE FROM queue WHERE run_at < now() RETURNING *) \
         INSERT INTO queue_archive SELECT * FROM moved",
    ),
    ("set", "SET application_name = 'psql'"),
    (
        "explain analyze",
        "EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM pgbench_accounts WHERE aid = 1",
    ),
    (
        "do block",
        "DO $$ BEGIN UPDATE accounts SET locked = true WHERE id = 7; \
         PERFORM pg_notify('acct', '7'); END $$",
    ),
];

fn per_op(iterations: u32, mut f: impl FnMut()) -> Duration {
    for _ in 0..iterations / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed() / iterations
}

/// `sql` with every run of digits replaced by `n`: another text of the same shape.
fn with_numbers(sql: &str, n: u32) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut in_number = false;
    for c in sql.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                out.push_str(&n.to_string());
            }
            in_number = true;
        } else {
            out.push(c);
            in_number = false;
        }
    }
    out
}

fn main() {
    let mut cache = FactsCache::new(1024);
    println!(
        "{:<22} {:>14} {:>14} {:>14}",
        "statement", "uncached µs", "cached µs", "by shape µs"
    );
    for (label, sql) in STATEMENTS {
        assert!(!classify(sql).is_parse_failure(), "{label} must parse");
        let uncached = per_op(2_000, || {
            black_box(classify(black_box(sql)));
        });
        cache.get_or_classify(sql);
        let cached = per_op(200_000, || {
            black_box(cache.get_or_classify(black_box(sql)));
        });
        // New constants in a known shape (what `-M simple` sends): a lexer pass and a hit.
        let by_shape =
            (shape_key(sql).is_some() && shape_determines_facts(&classify(sql))).then(|| {
                let texts: Vec<String> = (0..20_000).map(|n| with_numbers(sql, n + 7)).collect();
                let mut i = 0;
                per_op(20_000, || {
                    i = (i + 1) % texts.len();
                    black_box(cache.get_or_classify(black_box(&texts[i])));
                })
            });
        println!(
            "{label:<22} {:>14.2} {:>14.3} {:>14}",
            uncached.as_secs_f64() * 1e6,
            cached.as_secs_f64() * 1e6,
            by_shape.map_or("-".to_owned(), |d| format!("{:.2}", d.as_secs_f64() * 1e6))
        );
    }
}
