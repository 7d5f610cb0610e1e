//! End-to-end: `countersign dev` relays PostgreSQL traffic faithfully.
//!
//! Each test runs real clients (psql, pgbench, tokio-postgres) through the gateway and
//! compares what they see with a direct connection to the same kind of database.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use countersign_testkit::process::run;
use countersign_testkit::workload::{
    COPY_SEED, RELAY_SCRIPT, TYPED_INSERT, TYPED_SELECT, TYPED_TABLE, read_typed_rows, typed_rows,
};
use countersign_testkit::{
    ConnParams, DevServer, DevServerOpts, Fixture, PrivateCluster, Psql, TestDb, check_pgbench_run,
    default_session_threads, ensure_no_secret, ensure_same_output, ensure_services,
    ensure_session_hides, eventually, expect_sqlstate, pgbench, query_count,
};
use futures_util::TryStreamExt;
use tokio::time::timeout;
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, SimpleQueryMessage};

const BIN: &str = env!("CARGO_BIN_EXE_countersign");

/// A gateway whose sessions are spread over two session threads more than the default, so
/// that sessions (and a cancel request and the session it cancels) run on different threads.
async fn on_more_session_threads(prefix: &str) -> Result<Fixture> {
    let n = default_session_threads() + 2;
    let opts = DevServerOpts {
        extra_args: vec!["--session-threads".to_owned(), n.to_string()],
        ..DevServerOpts::default()
    };
    let fx = Fixture::start_with(BIN, prefix, opts).await?;
    assert_eq!(fx.server.session_threads()?, n);
    Ok(fx)
}

#[tokio::test]
async fn psql_select_output_matches_direct() -> Result<()> {
    let fx = Fixture::start(BIN, "relay_select").await?;
    let select = |params: &ConnParams| Psql::new(params).aligned().command(TYPED_SELECT).run();
    let direct = select(&fx.direct()).await?.ok()?;
    ensure!(direct.stdout.contains("(3 rows)") && direct.stdout.contains("\\xdeadbeef"));
    for sslmode in ["disable", "require"] {
        let through = select(&fx.gateway().with_sslmode(sslmode)).await?;
        ensure_same_output(&direct, &through).context(sslmode)?;
    }
    // With sslmode=require the client really negotiated TLS with the gateway.
    let tls = fx.gateway().with_sslmode("require");
    let conninfo = Psql::new(&tls).command("\\conninfo").output().await?;
    ensure!(
        conninfo.contains("SSL connection"),
        "no TLS to the gateway: {conninfo}"
    );
    Ok(())
}

/// What the relay script must make psql print on stderr.
const SCRIPT_MESSAGES: [&str; 5] = [
    "division by zero",
    "current transaction is aborted",
    "duplicate key",
    "no_such_column",
    "notice from plpgsql: 42",
];

#[tokio::test]
async fn psql_script_with_errors_matches_direct() -> Result<()> {
    let fx = Fixture::start(BIN, "relay_script").await?;
    let twin = TestDb::create("relay_script_twin").await?;
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("script.sql");
    std::fs::write(&script, RELAY_SCRIPT)?;
    let play = |params| {
        Psql::new(&params)
            .aligned()
            .on_error_stop(false)
            .file(&script)
            .run()
    };
    let direct = play(twin.params()).await?;
    let through = play(fx.gateway()).await?;
    ensure_same_output(&direct, &through)?;
    for expected in SCRIPT_MESSAGES {
        ensure!(
            through.stderr.contains(expected),
            "missing {expected:?}: {through:?}"
        );
    }
    ensure!(through.stdout.contains("between statements") && through.stdout.contains("user20"));
    // The rolled-back insert is absent; the committed transfer is there.
    let summary = "SELECT count(*) || ' rows, ' || sum(balance) FROM accounts";
    let row = fx.db.client().await?.query_one(summary, &[]).await?;
    assert_eq!(row.get::<_, String>(0), "20 rows, 150.50");
    Ok(())
}

#[tokio::test]
async fn resource_slash_dbname_picks_another_database() -> Result<()> {
    let fx = Fixture::start(BIN, "relay_slash").await?;
    let other = TestDb::create("relay_slash_other").await?;
    let params = fx.gateway().with_dbname(&format!("dev/{}", other.name()));
    let out = Psql::new(&params)
        .command("SELECT current_database()")
        .output()
        .await?;
    assert_eq!(out.trim(), other.name());
    Ok(())
}

#[tokio::test]
async fn copy_out_and_in_round_trip() -> Result<()> {
    let fx = Fixture::start(BIN, "relay_copy").await?;
    fx.db.execute(COPY_SEED).await?;
    let dir = tempfile::tempdir()?;
    let file = |name: &str| dir.path().join(name).display().to_string();
    let (direct, gateway) = (Psql::new(&fx.direct()), Psql::new(&fx.gateway()));
    let via = |psql: &Psql, command: &str| psql.clone().command(command).output();

    // COPY TO STDOUT streams the same bytes (20k rows: many CopyData messages).
    let to_stdout = r"\copy (SELECT * FROM src ORDER BY id) TO STDOUT";
    let expected = via(&direct, to_stdout).await?;
    ensure!(expected.lines().count() == 20_000);
    ensure!(
        via(&gateway, to_stdout).await? == expected,
        "COPY TO STDOUT differs"
    );

    // COPY TO files; the CSV matches a direct export byte for byte.
    let export = r"\copy (SELECT * FROM src ORDER BY id) TO";
    via(
        &direct,
        &format!("{export} '{}' CSV HEADER", file("direct.csv")),
    )
    .await?;
    via(
        &gateway,
        &format!("{export} '{}' CSV HEADER", file("gw.csv")),
    )
    .await?;
    ensure!(std::fs::read(file("direct.csv"))? == std::fs::read(file("gw.csv"))?);
    via(&gateway, &format!(r"\copy src TO '{}'", file("gw.txt"))).await?;

    // COPY FROM files and from psql's stdin, all through the gateway.
    let from_csv = format!(r"\copy csv_copy FROM '{}' CSV HEADER", file("gw.csv"));
    assert_eq!(via(&gateway, &from_csv).await?, "COPY 20000\n");
    let from_text = format!(r"\copy text_copy FROM '{}'", file("gw.txt"));
    assert_eq!(via(&gateway, &from_text).await?, "COPY 20000\n");
    let stdin = gateway.clone().stdin(std::fs::read(file("direct.csv"))?);
    assert_eq!(
        via(&stdin, r"\copy stdin_copy FROM STDIN CSV HEADER").await?,
        "COPY 20000\n"
    );
    for table in ["csv_copy", "text_copy", "stdin_copy"] {
        let rows = fx.db.ensure_same_rows("src", table).await?;
        assert_eq!(rows, 20_000, "{table}");
    }

    // A failing COPY FROM leaves the session usable.
    std::fs::write(
        file("bad.csv"),
        "1,ok,,1,2020-01-01\nnot-a-number,x,,1,2020-01-01\n",
    )?;
    let out = gateway
        .on_error_stop(false)
        .command(&format!(r"\copy stdin_copy FROM '{}' CSV", file("bad.csv")))
        .command("SELECT count(*) FROM stdin_copy")
        .run()
        .await?;
    ensure!(out.stderr.contains("invalid input syntax"), "{out:?}");
    assert_eq!(out.stdout, "20000\n");
    Ok(())
}

#[tokio::test]
async fn pgbench_runs_in_every_query_mode() -> Result<()> {
    let fx = on_more_session_threads("relay_pgbench").await?;
    pgbench(&fx.gateway(), &["-i", "-s", "1"]).await?.ok()?;
    for mode in ["simple", "extended", "prepared"] {
        let out = pgbench(
            &fx.gateway(),
            &["-n", "-M", mode, "-c", "4", "-j", "2", "-t", "100"],
        )
        .await?;
        check_pgbench_run(&out, 400).context(mode)?;
    }
    let client = fx.db.client().await?;
    assert_eq!(
        query_count(&client, "SELECT count(*) FROM pgbench_accounts").await?,
        100_000
    );
    assert_eq!(
        query_count(&client, "SELECT count(*) FROM pgbench_history").await?,
        1_200
    );
    Ok(())
}

#[tokio::test]
async fn tokio_postgres_binary_parameters_transactions_and_errors() -> Result<()> {
    let fx = Fixture::start(BIN, "relay_extended").await?;
    assert_eq!(fx.server.session_threads()?, default_session_threads());
    let direct = fx.db.client().await?;
    let (mut gw, _conn) = fx.gateway().connect().await?;
    gw.batch_execute(TYPED_TABLE).await?;
    let insert = gw.prepare(TYPED_INSERT).await?;
    for r in typed_rows() {
        let inserted = gw
            .execute(&insert, &[&r.0, &r.1, &r.2, &r.3, &r.4, &r.5])
            .await?;
        ensure!(inserted == 1);
    }
    let by_key = gw.prepare("SELECT i8, b FROM typed WHERE i4 = $1").await?;
    let row = gw.query_one(&by_key, &[&7i32]).await?;
    let (i8, bytes): (i64, Vec<u8>) = (row.get(0), row.get(1));
    assert_eq!((i8, bytes.as_slice()), (1 << 40, &b"\0\r\n"[..]));
    assert_eq!(read_typed_rows(&gw).await?, typed_rows());
    assert_eq!(read_typed_rows(&direct).await?, typed_rows());

    // Transactions: rollback discards, commit keeps.
    let insert_key = "INSERT INTO typed (i4) VALUES ($1)";
    let tx = gw.transaction().await?;
    tx.execute(insert_key, &[&100i32]).await?;
    tx.rollback().await?;
    let tx = gw.transaction().await?;
    tx.execute(insert_key, &[&101i32]).await?;
    tx.commit().await?;
    let keys = "SELECT count(*) FROM typed WHERE i4 >= 100";
    assert_eq!(query_count(&direct, keys).await?, 1);

    // An error, then recovery in the same session.
    let failed = gw.query("SELECT 1 / $1::int4", &[&0i32]).await;
    expect_sqlstate(failed, &SqlState::DIVISION_BY_ZERO)?;
    assert_eq!(query_count(&gw, "SELECT 5::int8").await?, 5);
    // An aborted transaction refuses work until it is rolled back.
    let tx = gw.transaction().await?;
    tx.execute(insert_key, &[&102i32]).await?;
    let missing = tx
        .execute("INSERT INTO no_such_table VALUES (1)", &[])
        .await;
    expect_sqlstate(missing, &SqlState::UNDEFINED_TABLE)?;
    let refused = tx.query_one("SELECT 1", &[]).await;
    expect_sqlstate(refused, &SqlState::IN_FAILED_SQL_TRANSACTION)?;
    tx.rollback().await?;
    assert_eq!(query_count(&gw, keys).await?, 1);
    Ok(())
}

#[tokio::test]
async fn tokio_postgres_pipelines_on_one_connection() -> Result<()> {
    let fx = Fixture::start(BIN, "relay_pipeline").await?;
    let gw = Arc::new(fx.gateway().connect().await?.0);
    let stmt = gw.prepare("SELECT $1::int8 * 2").await?;
    // Many requests in flight at once on one connection, answered in order.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50i64 {
        let (gw, stmt) = (gw.clone(), stmt.clone());
        tasks.spawn(
            async move { anyhow::Ok((i, gw.query_one(&stmt, &[&i]).await?.get::<_, i64>(0))) },
        );
    }
    while let Some(joined) = tasks.join_next().await {
        let (i, doubled) = joined??;
        assert_eq!(doubled, i * 2);
    }
    let big = "SELECT n, md5(n::text) FROM generate_series(1, 50000) n";
    let (streamed, simple, one) = tokio::join!(
        async {
            gw.query_raw(big, std::iter::empty::<i64>())
                .await?
                .try_collect::<Vec<_>>()
                .await
        },
        gw.simple_query("SELECT 'x'; SELECT 'y'"),
        gw.query_one("SELECT 'alone'::text", &[]),
    );
    let numbers: Vec<i32> = streamed?.iter().map(|r| r.get(0)).collect();
    ensure!(
        numbers.iter().copied().eq(1..=50_000),
        "streamed rows out of order or missing"
    );
    let is_row = |m: &SimpleQueryMessage| matches!(m, SimpleQueryMessage::Row(_));
    assert_eq!(simple?.iter().filter(|m| is_row(m)).count(), 2);
    assert_eq!(one?.get::<_, &str>(0), "alone");
    Ok(())
}

#[tokio::test]
async fn listen_notify_is_delivered() -> Result<()> {
    let fx = Fixture::start(BIN, "relay_notify").await?;
    let (listener, mut notifications) = fx.gateway().connect_listening().await?;
    listener.batch_execute("LISTEN jobs").await?;
    let (notifier, _conn) = fx.gateway().connect().await?;
    let payload = "via gateway";
    notifier
        .execute("SELECT pg_notify('jobs', $1)", &[&payload])
        .await?;
    fx.db.execute("NOTIFY jobs, 'direct'").await?;
    listener
        .batch_execute("BEGIN; NOTIFY jobs, 'self'; COMMIT")
        .await?;
    for expected in [payload, "direct", "self"] {
        let next = timeout(Duration::from_secs(10), notifications.recv());
        let got = next.await.context(expected)?;
        assert_eq!(got, Some(("jobs".to_owned(), expected.to_owned())));
    }
    listener.batch_execute("UNLISTEN jobs").await?;
    notifier
        .batch_execute("NOTIFY jobs, 'after unlisten'")
        .await?;
    listener.batch_execute("SELECT 1").await?;
    let late = timeout(Duration::from_secs(1), notifications.recv()).await;
    ensure!(late.is_err(), "notified after UNLISTEN: {late:?}");
    Ok(())
}

#[tokio::test]
async fn cancel_request_through_gateway_stops_the_query() -> Result<()> {
    let fx = on_more_session_threads("relay_cancel").await?;
    let (gw, _conn) = fx.gateway().connect().await?;
    // The cancel token targets the gateway's address, so the gateway must map the keys.
    let cancel = gw.cancel_token();
    let started = Instant::now();
    let running = tokio::spawn(async move {
        let result = gw.query("SELECT pg_sleep($1)", &[&30f64]).await.map(|_| ());
        (gw, result)
    });
    let direct = &fx.db.client().await?;
    let db_name = fx.db.name();
    eventually(Duration::from_secs(10), || async move {
        let sql = "SELECT count(*) FROM pg_stat_activity \
            WHERE datname = $1 AND state = 'active' AND query LIKE 'SELECT pg_sleep%'";
        let active = direct.query_one(sql, &[&db_name]).await?.get::<_, i64>(0);
        ensure!(active == 1, "query not running yet");
        Ok(())
    })
    .await?;
    cancel.cancel_query(NoTls).await?;
    let finished = timeout(Duration::from_secs(10), running).await;
    let (gw, result) = finished.context("cancel had no effect")??;
    let err = result.err().context("pg_sleep(30) was not cancelled")?;
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err}");
    ensure!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(query_count(&gw, "SELECT 1::int8").await?, 1);
    Ok(())
}

#[tokio::test]
async fn banner_psql_hint_and_connect_command_reach_the_database() -> Result<()> {
    let fx = Fixture::start(BIN, "relay_connect").await?;
    let banner = fx.server.banner().clone();
    let pg = banner.pg.to_string();
    assert_eq!(banner.resources, ["dev"]);
    assert_eq!(banner.admin_token, fx.server.admin_token());
    assert_eq!(banner.user, "dev@localhost");
    ensure!(
        banner.http.starts_with("http://127.0.0.1:")
            && banner.grpc.starts_with("http://127.0.0.1:")
    );
    let hint = format!("{} -X -At -c 'SELECT current_database()'", banner.psql_hint);
    let sh_args: [std::ffi::OsString; 2] = ["-c".into(), hint.into()];
    let via_hint = run("sh", &sh_args, &[], None, Duration::from_secs(30)).await?;
    assert_eq!(via_hint.ok()?.stdout.trim(), fx.db.name());

    let query = "SELECT current_database(), current_setting('port')";
    let psql: Vec<&str> = "-- psql -X -At -c".split(' ').chain([query]).collect();
    let mut args = vec!["connect", "dev", "--gateway", pg.as_str(), "--token"];
    args.extend([banner.user_token.as_str(), "--user", banner.user.as_str()]);
    args.extend(&psql);
    let out = fx.server.cli(&args).await?.ok()?;
    assert_eq!(out.stdout.trim(), format!("{}|5432", fx.db.name()));
    let env = [
        ("COUNTERSIGN_GATEWAY", pg.clone()),
        ("COUNTERSIGN_TOKEN", banner.user_token.clone()),
        ("COUNTERSIGN_USER", banner.user.clone()),
    ];
    let args: Vec<&str> = ["connect", "dev"].into_iter().chain(psql).collect();
    let out = fx.server.cli_with_env(&args, &env).await?.ok()?;
    assert_eq!(out.stdout.trim(), format!("{}|5432", fx.db.name()));
    Ok(())
}

/// No upstream password reaches the client of `resource`, nor the gateway's log.
async fn ensure_upstream_secret_hidden(
    server: &DevServer,
    cluster: &PrivateCluster,
    resource: &str,
) -> Result<()> {
    let params = server.default_params().with_dbname(resource);
    ensure_session_hides(&params, &cluster.passwords()).await?;
    ensure_no_secret(&server.stderr_log(), &cluster.passwords(), "gateway log")
}

#[tokio::test]
async fn upstream_tls_and_scram_authentication() -> Result<()> {
    ensure_services()?;
    let cluster = PrivateCluster::start()?;
    let opts = DevServerOpts::default()
        .upstream("secure", &cluster.tls_url())
        .upstream("scram", &cluster.scram_url());
    let server = DevServer::start(BIN, opts).await?;
    let sql = "SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    for (resource, expected) in [("secure", "tls_user|t"), ("scram", "scram_user|f")] {
        let params = server.default_params().with_dbname(resource);
        let out = Psql::new(&params).command(sql).output().await?;
        assert_eq!(out.trim(), expected, "{resource}");
        let hidden = ensure_upstream_secret_hidden(&server, &cluster, resource).await;
        hidden.context(resource)?;
    }
    Ok(())
}

#[tokio::test]
async fn upstream_md5_authentication() -> Result<()> {
    ensure_services()?;
    let cluster = PrivateCluster::start()?;
    let opts = DevServerOpts::default().upstream("legacy", &cluster.md5_url());
    let server = DevServer::start(BIN, opts).await?;
    let out = Psql::new(&server.default_params())
        .command("CREATE TABLE t (x int)")
        .command("INSERT INTO t SELECT generate_series(1, 3)")
        .command("SELECT current_user, sum(x) FROM t")
        .output()
        .await?;
    assert_eq!(out, "CREATE TABLE\nINSERT 0 3\nmd5_user|6\n");
    ensure_upstream_secret_hidden(&server, &cluster, "legacy").await
}
