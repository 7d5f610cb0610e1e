//! Audit benchmark client: ingest through `PublishAudit`, then search latency
//! through `GET /api/v1/audit`. Driven by `tests/bench/audit.sh`.
//!
//! ```text
//! audit_bench ingest --grpc URL --token T --events N [--streams S] [--batch B]
//!                    [--sessions K] [--days D]
//! audit_bench search --http URL --token T [--queries Q] [--days D]
//! audit_bench follow --grpc URL --token T --stats CONNINFO --database DB
//!                    --protocol simple|extended --stop-file PATH [--ready-file PATH]
//!                    [--sessions K] [--script select|tpcb]
//! ```
//!
//! Ingest: `S` concurrent streams, each like one gateway's uploader (one batch
//! in flight, waiting for its acknowledgement), with `K` sessions live at a
//! time and statements spread over the last `D` days. Prints one line of
//! `key=value` pairs. Identities follow a skewed distribution (a few service
//! accounts run most statements), as in a real fleet.
//!
//! Search: `Q` queries by identity + time range + text (the console's audit
//! search), newest 100 first, after a warm-up; prints latency percentiles.
//!
//! Follow: gives PgBouncer the audit work Countersign's gateway does for `pgbench -S`, so that
//! the two can be compared doing the same work (`tests/bench/cpu.sh`, target
//! `pgbouncer+audit`). Every 20 ms (the gateway's batch wait) it reads how many queries PgBouncer
//! has served to `DB` (`SHOW STATS` on its admin console, `CONNINFO`) and sends one statement
//! event for each new one, as the gateway's uploader does: batches of at most 1,000 events, one
//! in flight, each waiting for its acknowledgement. `K` sessions (pgbench's clients) start first
//! and end once the stop file exists, after a last count; the ready file, if named, is created
//! once the client has read PgBouncer's present count and opened its stream. The events are
//! those of pgbench's `select` script (`-S`, the default) or `tpcb` script (seven statements a
//! transaction, from BEGIN to END) through the gateway: with `simple`, each statement's text
//! with its own values (kept in the event's row); with `extended`, the parameterized text (kept
//! once). Prints `events=N stored=M`.

use countersign_proto::v1 as pb;
use pb::gateway_service_client::GatewayServiceClient;
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;

/// Identities: the first few are heavy service accounts.
const IDENTITIES: usize = 200;
const RESOURCES: [&str; 6] = [
    "pg-prod",
    "pg-staging",
    "orders-prod",
    "billing-prod",
    "analytics",
    "pg-dev",
];
/// Words statements are made of; the search picks among them.
const TABLES: [&str; 12] = [
    "accounts",
    "orders",
    "payments",
    "invoices",
    "customers",
    "payroll",
    "sessions",
    "audit_log",
    "shipments",
    "refunds",
    "products",
    "salary_bands",
];
const SEARCH_WORDS: [&str; 10] = [
    "payroll",
    "salary_bands",
    "refunds",
    "DELETE FROM",
    "UPDATE orders",
    "customers",
    "DROP TABLE",
    "email",
    "invoices WHERE",
    "zzz-no-such-text",
];

type Error = Box<dyn std::error::Error + Send + Sync>;

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: Option<T>) -> Result<T, Error> {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{name} needs a value").into()),
        None => default.ok_or_else(|| format!("{name} is required").into()),
    }
}

/// A skewed identity index: half the draws hit the first 5 identities.
fn identity(rng: &mut StdRng) -> String {
    let i = if rng.random_bool(0.5) {
        rng.random_range(0..5)
    } else {
        rng.random_range(0..IDENTITIES)
    };
    if i < 5 {
        format!("ci-deployer-{i}")
    } else {
        format!("engineer{i}@example.com")
    }
}

/// A statement and its kind. A parameterized one (as a driver sends it, extended protocol)
/// has `$1` where the other has a literal value, so its texts repeat.
fn statement(rng: &mut StdRng, parameterized: bool) -> (String, &'static str) {
    let table = TABLES[rng.random_range(0..TABLES.len())];
    let id: u32 = rng.random_range(1..10_000_000);
    let v = if parameterized {
        "$1".to_owned()
    } else {
        id.to_string()
    };
    match rng.random_range(0..10) {
        0..=4 => (
            format!("SELECT id, name, email, created_at FROM {table} WHERE id = {v}"),
            "select",
        ),
        5 => (
            format!("UPDATE {table} SET status = 'processed', updated_at = now() WHERE id = {v}"),
            "update",
        ),
        6 => (
            format!("INSERT INTO {table} (id, payload) VALUES ({v}, '{{\"k\": 1}}')"),
            "insert",
        ),
        7 => (
            format!("DELETE FROM {table} WHERE id = {v} AND status = 'stale'"),
            "delete",
        ),
        8 => (
            format!(
                "SELECT count(*), date_trunc('day', created_at) FROM {table} WHERE created_at > now() - {} * interval '1 day' GROUP BY 2",
                if parameterized {
                    v
                } else {
                    (id % 90).to_string()
                }
            ),
            "select",
        ),
        _ => ("BEGIN".to_owned(), "transaction"),
    }
}

struct Session {
    id: String,
    identity: String,
    resource: String,
    next_seq: u64,
    /// Sends its values as parameters (half the sessions).
    parameterized: bool,
}

impl Session {
    fn new(rng: &mut StdRng, stream: usize, n: u64) -> Self {
        Self {
            id: format!("bench-{stream}-{n}-{:08x}", rng.random::<u32>()),
            identity: identity(rng),
            resource: RESOURCES[rng.random_range(0..RESOURCES.len())].to_owned(),
            next_seq: 0,
            parameterized: rng.random_bool(0.5),
        }
    }

    fn event(&mut self, rng: &mut StdRng, at: i64) -> pb::AuditEvent {
        let seq = self.next_seq;
        self.next_seq += 1;
        let event = if seq == 0 {
            pb::audit_event::Event::SessionStarted(pb::SessionStarted {
                identity: self.identity.clone(),
                resource: self.resource.clone(),
                database: "app".to_owned(),
                client_address: "10.0.0.7:51234".to_owned(),
                application_name: "psql".to_owned(),
                tls: true,
            })
        } else {
            let (text, kind) = statement(rng, self.parameterized);
            pb::audit_event::Event::Statement(allowed(
                &self.identity,
                &self.resource,
                text,
                kind,
                if self.parameterized {
                    "extended"
                } else {
                    "simple"
                },
                u32::from(self.parameterized && kind != "transaction"),
                rng.random_range(50..50_000),
            ))
        };
        pb::AuditEvent {
            session_id: self.id.clone(),
            seq,
            at,
            event: Some(event),
        }
    }
}

/// A statement the policy allowed, which returned one row ("SELECT 1"; a caller may set another
/// command tag and row count).
fn allowed(
    identity: &str,
    resource: &str,
    statement: String,
    kind: &str,
    protocol: &str,
    parameter_count: u32,
    duration_micros: u64,
) -> pb::StatementExecuted {
    pb::StatementExecuted {
        identity: identity.to_owned(),
        resource: resource.to_owned(),
        statement,
        kinds: vec![kind.to_owned()],
        protocol: protocol.to_owned(),
        parameter_count,
        duration_micros,
        command_tag: "SELECT 1".to_owned(),
        rows: Some(1),
        error: String::new(),
        decision: "allow".to_owned(),
        rule: String::new(),
        masking: None,
    }
}

async fn ingest(args: &[String]) -> Result<(), Error> {
    let url: String = arg(args, "--grpc", None)?;
    let token: String = arg(args, "--token", None)?;
    let total: u64 = arg(args, "--events", None)?;
    let streams: usize = arg(args, "--streams", Some(4))?;
    let batch: u64 = arg(args, "--batch", Some(1000))?;
    let live: usize = arg(args, "--sessions", Some(50))?;
    let days: i64 = arg(args, "--days", Some(30))?;
    let per_stream = total / streams as u64;
    let now = chrono::Utc::now().timestamp_micros();
    let span = days * 86_400_000_000;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..streams {
        let (url, token) = (url.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            run_stream(s, &url, &token, per_stream, batch, live, now - span, span).await
        }));
    }
    let mut stored = 0u64;
    let mut latencies = Vec::new();
    for t in tasks {
        let (n, mut l) = t.await??;
        stored += n;
        latencies.append(&mut l);
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    println!(
        "events={stored} seconds={secs:.2} events_per_sec={:.0} batch_ack_p50_ms={:.1} batch_ack_p95_ms={:.1}",
        stored as f64 / secs,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.95),
    );
    if stored != per_stream * streams as u64 {
        return Err(format!("stored {stored}, sent {}", per_stream * streams as u64).into());
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn run_stream(
    stream: usize,
    url: &str,
    token: &str,
    events: u64,
    batch: u64,
    live: usize,
    start: i64,
    span: i64,
) -> Result<(u64, Vec<Duration>), Error> {
    let mut upload = Upload::open(url, token).await?;
    let mut rng = StdRng::seed_from_u64(stream as u64);
    let mut sessions: Vec<Session> = (0..live)
        .map(|n| Session::new(&mut rng, stream, n as u64))
        .collect();
    let mut opened = live as u64;
    let (mut sent, mut stored) = (0u64, 0u64);
    let mut latencies = Vec::new();
    while sent < events {
        let n = batch.min(events - sent);
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n {
            let k = rng.random_range(0..sessions.len());
            // Sessions end after a while and new ones start.
            if sessions[k].next_seq > 200 && rng.random_bool(0.02) {
                sessions[k] = Session::new(&mut rng, stream, opened);
                opened += 1;
            }
            let at = start + span * (sent + i) as i64 / events as i64;
            out.push(sessions[k].event(&mut rng, at));
        }
        sent += n;
        let t = Instant::now();
        stored += upload.send(out).await?;
        latencies.push(t.elapsed());
    }
    Ok((stored, latencies))
}

/// One `PublishAudit` stream, used as a gateway's uploader uses it: one batch in flight.
struct Upload {
    batches: tokio::sync::mpsc::Sender<pb::AuditBatch>,
    acks: tonic::Streaming<pb::AuditAck>,
    batch_id: u64,
}

impl Upload {
    async fn open(url: &str, token: &str) -> Result<Self, Error> {
        let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?
            .connect()
            .await?;
        let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse()?;
        let mut client =
            GatewayServiceClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
                r.metadata_mut().insert("authorization", bearer.clone());
                Ok(r)
            })
            .max_encoding_message_size(64 << 20);
        let (batches, rx) = tokio::sync::mpsc::channel::<pb::AuditBatch>(1);
        let acks = client
            .publish_audit(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(Self {
            batches,
            acks,
            batch_id: 0,
        })
    }

    /// Sends `events` as the next batch and waits for its acknowledgement: how many were stored.
    async fn send(&mut self, events: Vec<pb::AuditEvent>) -> Result<u64, Error> {
        self.batch_id += 1;
        let batch_id = self.batch_id;
        self.batches
            .send(pb::AuditBatch {
                batch_id,
                events,
                trace_context: Default::default(),
            })
            .await?;
        let ack = self
            .acks
            .next()
            .await
            .ok_or("the audit stream ended early")??;
        if ack.batch_id != batch_id {
            return Err(format!("ack for batch {} instead of {batch_id}", ack.batch_id).into());
        }
        Ok(u64::from(ack.stored))
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn search(args: &[String]) -> Result<(), Error> {
    let base: String = arg(args, "--http", None)?;
    let token: String = arg(args, "--token", None)?;
    let queries: usize = arg(args, "--queries", Some(200))?;
    let days: i64 = arg(args, "--days", Some(30))?;
    let http = reqwest::Client::new();
    let mut rng = StdRng::seed_from_u64(7);
    let now = chrono::Utc::now();
    let windows = [
        chrono::Duration::hours(1),
        chrono::Duration::days(1),
        chrono::Duration::days(7),
        chrono::Duration::days(days),
    ];
    let mut latencies = Vec::new();
    let mut found = 0usize;
    for q in 0..queries + 20 {
        let window = windows[rng.random_range(0..windows.len())];
        let room = (chrono::Duration::days(days) - window).num_seconds().max(1);
        let until = now - chrono::Duration::seconds(rng.random_range(0..room));
        let since = until - window;
        let who = identity(&mut rng);
        let text = SEARCH_WORDS[rng.random_range(0..SEARCH_WORDS.len())];
        let t = Instant::now();
        let response = http
            .get(format!("{base}/api/v1/audit"))
            .bearer_auth(&token)
            .query(&[
                ("identity", who.as_str()),
                ("since", &since.to_rfc3339()),
                ("until", &until.to_rfc3339()),
                ("text", text),
                ("limit", "100"),
            ])
            .send()
            .await?;
        let status = response.status();
        let body: serde_json::Value = response.json().await?;
        let elapsed = t.elapsed();
        if !status.is_success() {
            return Err(format!("search answered {status}: {body}").into());
        }
        // The first 20 warm the caches and are not counted.
        if q >= 20 {
            latencies.push(elapsed);
            found += body["events"].as_array().map_or(0, Vec::len);
        }
    }
    latencies.sort_unstable();
    println!(
        "queries={queries} p50_ms={:.1} p95_ms={:.1} p99_ms={:.1} max_ms={:.1} avg_rows={:.1}",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.95),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
        found as f64 / queries as f64,
    );
    Ok(())
}

/// The gateway's wait before it sends what its sessions wrote (`BATCH_WAIT` in its uploader).
const FOLLOW_TICK: Duration = Duration::from_millis(20);
/// The most events the gateway's uploader sends in one batch (`BATCH_EVENTS`).
const FOLLOW_BATCH: usize = 1_000;

/// Statement `step` of pgbench's TPC-B script (`tpcb`, seven a transaction) or of its select
/// script, at scale 10, as the gateway records it (with `parameterized`, as pgbench sends it in
/// its extended modes): its text, parameter count, kind and command tag. Its values are drawn for
/// each statement, not once a transaction as pgbench does: the same texts to store and index.
fn pgbench_statement(
    tpcb: bool,
    step: u64,
    parameterized: bool,
    rng: &mut StdRng,
) -> (String, u32, &'static str, &'static str) {
    let aid = rng.random_range(1..=1_000_000u32);
    let (bid, tid) = (rng.random_range(1..=10u32), rng.random_range(1..=100u32));
    let delta = rng.random_range(-5000..=5000i32);
    // (text with its values, text with parameters, kind, command tag)
    let (inline, with_parameters, kind, tag) = match (tpcb, step % 7) {
        (false, _) | (true, 2) => (
            format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid};"),
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
            "select",
            "SELECT 1",
        ),
        (true, 0) => ("BEGIN;".to_owned(), "BEGIN;", "transaction", "BEGIN"),
        (true, 1) => (
            format!("UPDATE pgbench_accounts SET abalance = abalance + {delta} WHERE aid = {aid};"),
            "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;",
            "update",
            "UPDATE 1",
        ),
        (true, 3) => (
            format!("UPDATE pgbench_tellers SET tbalance = tbalance + {delta} WHERE tid = {tid};"),
            "UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2;",
            "update",
            "UPDATE 1",
        ),
        (true, 4) => (
            format!("UPDATE pgbench_branches SET bbalance = bbalance + {delta} WHERE bid = {bid};"),
            "UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = $2;",
            "update",
            "UPDATE 1",
        ),
        (true, 5) => (
            format!(
                "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) \
                 VALUES ({tid}, {bid}, {aid}, {delta}, CURRENT_TIMESTAMP);"
            ),
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) \
             VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP);",
            "insert",
            "INSERT 0 1",
        ),
        (true, _) => ("END;".to_owned(), "END;", "transaction", "COMMIT"),
    };
    if parameterized {
        let parameters = with_parameters.matches('$').count() as u32;
        (with_parameters.to_owned(), parameters, kind, tag)
    } else {
        (inline, 0, kind, tag)
    }
}

async fn follow(args: &[String]) -> Result<(), Error> {
    let url: String = arg(args, "--grpc", None)?;
    let token: String = arg(args, "--token", None)?;
    let stats: String = arg(args, "--stats", None)?;
    let database: String = arg(args, "--database", None)?;
    let protocol: String = arg(args, "--protocol", None)?;
    let stop: std::path::PathBuf = arg(args, "--stop-file", None)?;
    let ready: Option<std::path::PathBuf> = if args.iter().any(|a| a == "--ready-file") {
        Some(arg(args, "--ready-file", None)?)
    } else {
        None
    };
    let live: u64 = arg(args, "--sessions", Some(8))?;
    let tpcb = match arg(args, "--script", Some("select".to_owned()))?.as_str() {
        "select" => false,
        "tpcb" => true,
        other => return Err(format!("--script {other}: select or tpcb").into()),
    };
    if live == 0 {
        return Err("--sessions must be at least 1".into());
    }
    let parameterized = match protocol.as_str() {
        "simple" => false,
        "extended" => true,
        other => return Err(format!("--protocol {other}: simple or extended").into()),
    };
    let (bouncer, connection) = tokio_postgres::connect(&stats, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    // The queries served to the database so far; none before PgBouncer has listed it (until its
    // first client).
    let served = async || -> Result<Option<u64>, Error> {
        for message in bouncer.simple_query("SHOW STATS").await? {
            if let tokio_postgres::SimpleQueryMessage::Row(row) = message
                && row.try_get("database")? == Some(database.as_str())
            {
                let count = row.try_get("total_query_count")?;
                return Ok(Some(
                    count
                        .ok_or("SHOW STATS without total_query_count")?
                        .parse()?,
                ));
            }
        }
        Ok(None)
    };
    let base = served().await?.unwrap_or(0);
    let mut upload = Upload::open(&url, &token).await?;
    if let Some(path) = ready {
        std::fs::write(path, b"")?;
    }
    let mut rng = StdRng::seed_from_u64(11);
    // Each run's sessions are new ones: a store ignores events it already holds.
    let run = chrono::Utc::now().timestamp_micros();
    let session_id = |k: u64| format!("follow-{run:x}-{k}");
    let (identity, resource) = ("bench@example.com", "plain");
    let now = || chrono::Utc::now().timestamp_micros();
    let event = |k: u64, seq: u64, event| pb::AuditEvent {
        session_id: session_id(k),
        seq,
        at: now(),
        event: Some(event),
    };
    let mut out: Vec<_> = (0..live)
        .map(|k| {
            event(
                k,
                0,
                pb::audit_event::Event::SessionStarted(pb::SessionStarted {
                    identity: identity.to_owned(),
                    resource: resource.to_owned(),
                    database: database.clone(),
                    client_address: "127.0.0.1:40000".to_owned(),
                    application_name: "pgbench".to_owned(),
                    tls: false,
                }),
            )
        })
        .collect();
    let (mut emitted, mut sent, mut stored) = (0u64, 0u64, 0u64);
    loop {
        let tick = Instant::now();
        // Looked at before the count, so that the last count covers every query.
        let done = stop.exists();
        let queries = match served().await? {
            Some(n) if n >= base + emitted => n - base,
            Some(n) => {
                return Err(format!(
                    "PgBouncer's query count for {database} went back ({n}, after {})",
                    base + emitted
                )
                .into());
            }
            None if done => {
                return Err(format!("PgBouncer lists no database {database} (SHOW STATS)").into());
            }
            None => emitted,
        };
        while emitted < queries {
            let (k, seq) = (emitted % live, emitted / live + 1);
            let (text, parameters, kind, tag) =
                pgbench_statement(tpcb, seq - 1, parameterized, &mut rng);
            let duration = rng.random_range(30..300);
            let mut executed = allowed(
                identity, resource, text, kind, &protocol, parameters, duration,
            );
            executed.rows = tag.ends_with(" 1").then_some(1);
            executed.command_tag = tag.to_owned();
            out.push(event(k, seq, pb::audit_event::Event::Statement(executed)));
            emitted += 1;
        }
        if done {
            for k in 0..live {
                let statements = emitted / live + u64::from(k < emitted % live);
                out.push(event(
                    k,
                    statements + 1,
                    pb::audit_event::Event::SessionEnded(pb::SessionEnded {
                        identity: identity.to_owned(),
                        resource: resource.to_owned(),
                        reason: "client terminated the session".to_owned(),
                        statements,
                    }),
                ));
            }
        }
        while !out.is_empty() {
            let batch: Vec<_> = out.drain(..out.len().min(FOLLOW_BATCH)).collect();
            sent += batch.len() as u64;
            stored += upload.send(batch).await?;
        }
        if done {
            break;
        }
        tokio::time::sleep_until((tick + FOLLOW_TICK).into()).await;
    }
    println!("events={sent} stored={stored}");
    if stored != sent {
        return Err(format!("stored {stored} of {sent} events").into());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    // reqwest's TLS stack needs a process-wide crypto provider, even for http://.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ingest") => ingest(&args).await,
        Some("search") => search(&args).await,
        Some("follow") => follow(&args).await,
        _ => Err("usage: audit_bench ingest|search|follow [options]; see the source".into()),
    }
}
