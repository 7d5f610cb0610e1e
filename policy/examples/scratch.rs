use std::time::Instant;
fn main() {
    let sql = "SELECT c.name, o.id, sum(li.qty * li.price) FROM customers c JOIN orders o ON o.customer_id = c.id JOIN line_items li ON li.order_id = o.id WHERE c.region = 'EU' AND o.created_at > now() - interval '7 days' GROUP BY c.name, o.id ORDER BY 3 DESC LIMIT 50";
    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(pg_query::parse(sql, 0).ok());
    }
    println!("parse {:?}", t.elapsed() / n);
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(pg_query::fingerprint(sql, 0, 0).ok());
    }
    println!("fingerprint {:?}", t.elapsed() / n);
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(pg_query::scan(sql).ok());
    }
    println!("scan {:?}", t.elapsed() / n);
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(countersign_policy::classify(sql));
    }
    println!("classify {:?}", t.elapsed() / n);
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(pg_query::split_with_parser(sql).ok());
    }
    println!("split {:?}", t.elapsed() / n);
}
