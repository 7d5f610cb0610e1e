//! End-to-end: `countersign dev` relays PostgreSQL traffic faithfully.
//!
//! Each test runs real clients (psql, pgbench, tokio-postgres) through the gateway and
//! compares what they see with a direct connection to the same kind of database.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use countersign_testkit::process::run;
use countersign_testkit::{
    DevServer, DevServerOpts, Fixture, PrivateCluster, Psql, TestDb, check_pgbench_run,
    ensure_no_secret, ensure_same_output, ensure_services, eventually, pgbench,
};
use futures_util::TryStreamExt;
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, NoTls};

const BIN: &str = env!("CARGO_BIN_EXE_countersign");

const TYPED_SELECT: &str = "SELECT 42::int4 AS i4, 9223372036854775807::int8 AS i8, \
    3.14159::numeric(10,5) AS num, 'héllo, wörld'::text AS txt, true AS flag, NULL::text AS nothing, \
    '2024-02-29 13:45:01.123456+00'::timestamptz AS ts, '\\xdeadbeef'::bytea AS bin, \
    ARRAY[1,2,3] AS arr, '{\"k\": [1, null]}'::jsonb AS doc, 1.5::float8 AS f8, n \
    FROM generate_series(1, 3) AS n";

#[tokio::test]
async fn psql_select_output_matches_direct() -> Result<()> {
    let fx = Fixture::start(BIN, "relay_select").await?;
    let direct = Psql::new(&fx.direct())
        .aligned()
        .command(TYPED_SELECT)
        .run()
        .await?
        .ok()?;
    ensure!(direct.stdout.contains("(3 rows)") && direct.stdout.contains("\\xdeadbeef"));
    for sslmode in ["disable", "require"] {
        let gw = fx.gateway().with_sslmode(sslmode);
        let through = Psql::new(&gw).aligned().command(TYPED_SELECT).run().await?;
        ensure_same_output(&direct, &through).context(sslmode)?;
    }
    // Over TLS the client really negotiated TLS with the gateway.
    let out = Psql::new(&fx.gateway().with_sslmode("require"))
        .command("\\conninfo")
        .run()
        .await?;
    ensure!(
        out.ok()?.stdout.contains("SSL connection"),
        "no TLS to the gateway"
    );
    Ok(())
}

const SCRIPT: &str = r#"CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance numeric(12,2) DEFAULT 0);
INSERT INTO accounts VALUES (1, 'ann', 100), (2, 'bob', 50.5);
INSERT INTO accounts (id, owner) SELECT g, 'user' || g FROM generate_series(3, 20) g;
BEGIN;
UPDATE accounts SET balance = balance - 10 WHERE id = 1;
UPDATE accounts SET balance = balance + 10 WHERE id = 2;
COMMIT;
BEGIN;
INSERT INTO accounts VALUES (21, 'carol', 1);
SELECT 1 / 0;
SELECT 'not reached';
ROLLBACK;
INSERT INTO accounts VALUES (1, 'duplicate');
SELECT no_such_column FROM accounts;
DO $$ BEGIN RAISE NOTICE 'notice from plpgsql: %', 42; END $$;
CREATE VIEW rich AS SELECT owner, balance FROM accounts WHERE balance > 0 ORDER BY balance DESC;
SELECT * FROM rich;
\echo between statements
SELECT 1 AS a \; SELECT 2 AS b;
PREPARE q(int) AS SELECT owner FROM accounts WHERE id = $1;
EXECUTE q(2);
DEALLOCATE q;
SELECT count(*), sum(balance) FROM accounts;
SELECT id, owner FROM accounts WHERE id > 17 ORDER BY id;
DROP VIEW rich;
"#;

#[tokio::test]
async fn psql_script_with_errors_matches_direct() -> Result<()> {
    let fx = Fixture::start(BIN, "relay_script").await?;
    let twin = TestDb::create("relay_script_twin").await?;
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("script.sql");
    std::fs::write(&script, SCRIPT)?;
    let run = |params| {
        Psql::new(&params)
            .aligned()
            .on_error_stop(false)
            .file(&script)
            .run()
    };
    let direct = run(twin.params()).await?;
    let through = run(fx.gateway()).await?;
    ensure_same_output(&direct, &through)?;
    for expected in [
        "division by zero",
        "current transaction is aborted",
        "duplicate key",
        "no_such_column",
        "notice from plpgsql: 42",
    ] {
        ensure!(
            through.stderr.contains(expected),
            "missing {expected:?}: {through:?}"
        );
    }
    ensure!(through.stdout.contains("between statements") && through.stdout.contains("user20"));
    // The rolled-back insert is absent; the committed transfer is there.
    let client = fx.db.client().await?;
    let row = client
        .query_one("SELECT count(*), sum(balance)::text FROM accounts", &[])
        .await?;
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, String>(1)),
        (20, "150.50".to_owned())
    );
    Ok(())
}

#[tokio::test]
async fn resource_slash_dbname_picks_another_database() -> Result<()> {
    let fx = Fixture::start(BIN, "relay_slash").await?;
    let other = TestDb::create("relay_slash_other").await?;
    let params = fx.gateway().with_dbname(&format!("dev/{}", other.name()));
    let out = Psql::new(&params)
        .command("SELECT current_database()")
        .run()
        .await?
        .ok()?;
    assert_eq!(out.stdout.trim(), other.name());
    Ok(())
}

const COPY_SEED: &str = r#"
CREATE TABLE src (id int PRIMARY KEY, name text, note text, amount numeric, created date);
INSERT INTO src VALUES (1, 'plain', NULL, 1.5, '2024-01-01'),
  (2, 'comma, "quoted"', E'tab\there', -2, NULL), (3, E'line\nbreak', E'back\\slash', 0, '1999-12-31'),
  (4, 'ünïcödé', '', 1e10, '2000-02-29');
INSERT INTO src SELECT g, 'row ' || g, md5(g::text), g / 7.0, date '2020-01-01' + g
  FROM generate_series(5, 20000) g;
CREATE TABLE csv_copy (LIKE src); CREATE TABLE text_copy (LIKE src); CREATE TABLE stdin_copy (LIKE src);
"#;

#[tokio::test]
async fn copy_out_and_in_round_trip() -> Result<()> {
    let fx = Fixture::start(BIN, "relay_copy").await?;
    fx.db.execute(COPY_SEED).await?;
    let dir = tempfile::tempdir()?;
    let path = |name: &str| dir.path().join(name).display().to_string();
    let copy = |params, cmd: String| Psql::new(&params).command(&cmd).run();

    // COPY TO STDOUT streams the same bytes (20k rows: many CopyData messages).
    let to_stdout = "\\copy (SELECT * FROM src ORDER BY id) TO STDOUT".to_owned();
    let direct = copy(fx.direct(), to_stdout.clone()).await?.ok()?;
    ensure!(direct.stdout.lines().count() == 20_000);
    ensure_same_output(&direct, &copy(fx.gateway(), to_stdout).await?)?;

    // COPY TO a file, CSV and text; the CSV file matches a direct export byte for byte.
    let csv_out = |file: &str| {
        format!(
            "\\copy (SELECT * FROM src ORDER BY id) TO '{}' WITH (FORMAT csv, HEADER)",
            path(file)
        )
    };
    copy(fx.direct(), csv_out("direct.csv")).await?.ok()?;
    copy(fx.gateway(), csv_out("gateway.csv")).await?.ok()?;
    ensure!(std::fs::read(path("direct.csv"))? == std::fs::read(path("gateway.csv"))?);
    copy(
        fx.gateway(),
        format!("\\copy src TO '{}'", path("gateway.txt")),
    )
    .await?
    .ok()?;

    // COPY FROM files and from psql's stdin, all through the gateway.
    let csv_in = format!(
        "\\copy csv_copy FROM '{}' WITH (FORMAT csv, HEADER)",
        path("gateway.csv")
    );
    assert_eq!(
        copy(fx.gateway(), csv_in).await?.ok()?.stdout,
        "COPY 20000\n"
    );
    let text_in = format!("\\copy text_copy FROM '{}'", path("gateway.txt"));
    assert_eq!(
        copy(fx.gateway(), text_in).await?.ok()?.stdout,
        "COPY 20000\n"
    );
    let csv = std::fs::read(path("direct.csv"))?;
    let out = Psql::new(&fx.gateway())
        .command("\\copy stdin_copy FROM STDIN WITH (FORMAT csv, HEADER)")
        .stdin(csv)
        .run()
        .await?;
    assert_eq!(out.ok()?.stdout, "COPY 20000\n");

    let client = fx.db.client().await?;
    for table in ["csv_copy", "text_copy", "stdin_copy"] {
        let sql = format!(
            "SELECT (SELECT count(*) FROM {table}), \
             (SELECT count(*) FROM (SELECT * FROM src EXCEPT ALL SELECT * FROM {table}) a) + \
             (SELECT count(*) FROM (SELECT * FROM {table} EXCEPT ALL SELECT * FROM src) b)"
        );
        let row = client.query_one(&sql, &[]).await?;
        assert_eq!(
            (row.get::<_, i64>(0), row.get::<_, i64>(1)),
            (20_000, 0),
            "{table}"
        );
    }

    // A failing COPY FROM leaves the session usable.
    std::fs::write(
        path("bad.csv"),
        "1,ok,,1,2020-01-01\nnot-a-number,x,,1,2020-01-01\n",
    )?;
    let out = Psql::new(&fx.gateway())
        .on_error_stop(false)
        .command(&format!(
            "\\copy stdin_copy FROM '{}' WITH (FORMAT csv)",
            path("bad.csv")
        ))
        .command("SELECT count(*) FROM stdin_copy")
        .run()
        .await?;
    ensure!(out.stderr.contains("invalid input syntax"), "{out:?}");
    assert_eq!(out.stdout, "20000\n");
    Ok(())
}

#[tokio::test]
async fn pgbench_runs_in_every_query_mode() -> Result<()> {
    let fx = Fixture::start(BIN, "relay_pgbench").await?;
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
    let row = client
        .query_one("SELECT (SELECT count(*) FROM pgbench_accounts), (SELECT count(*) FROM pgbench_history)", &[])
        .await?;
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, i64>(1)),
        (100_000, 1_200)
    );
    Ok(())
}

type TypedRow = (
    Option<i32>,
    Option<i64>,
    Option<String>,
    Option<Vec<u8>>,
    Option<f64>,
    Option<bool>,
);

async fn typed_rows(client: &tokio_postgres::Client) -> Result<Vec<TypedRow>> {
    let rows = client
        .query(
            "SELECT i4, i8, t, b, f, ok FROM typed ORDER BY i4 NULLS LAST",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect())
}

#[tokio::test]
async fn tokio_postgres_binary_parameters_transactions_and_errors() -> Result<()> {
    let fx = Fixture::start(BIN, "relay_extended").await?;
    let (mut gw, _conn) = fx.gateway().connect().await?;
    gw.batch_execute("CREATE TABLE typed (i4 int4, i8 int8, t text, b bytea, f float8, ok bool)")
        .await?;
    let insert = gw
        .prepare("INSERT INTO typed VALUES ($1, $2, $3, $4, $5, $6)")
        .await?;
    let rows: Vec<TypedRow> = vec![
        (
            Some(i32::MIN),
            Some(i64::MAX),
            Some("ünïcode ☃".into()),
            Some(vec![0, 1, 255, 0]),
            Some(std::f64::consts::PI),
            Some(true),
        ),
        (
            Some(0),
            Some(-1),
            Some(String::new()),
            Some(vec![]),
            Some(f64::INFINITY),
            Some(false),
        ),
        (
            Some(7),
            Some(1 << 40),
            Some("quote ' and \\".into()),
            Some(b"\0\r\n".to_vec()),
            Some(-0.5),
            Some(true),
        ),
        (None, None, None, None, None, None),
    ];
    for r in &rows {
        assert_eq!(
            gw.execute(&insert, &[&r.0, &r.1, &r.2, &r.3, &r.4, &r.5])
                .await?,
            1
        );
    }
    let by_key = gw
        .prepare("SELECT i8, t, b FROM typed WHERE i4 = $1")
        .await?;
    let row = gw.query_one(&by_key, &[&7i32]).await?;
    assert_eq!(row.get::<_, i64>(0), 1 << 40);
    assert_eq!(row.get::<_, &[u8]>(2), b"\0\r\n");
    let mut sorted = rows.clone();
    sorted.sort_by_key(|r| (r.0.is_none(), r.0));
    assert_eq!(typed_rows(&gw).await?, sorted);
    assert_eq!(typed_rows(&fx.db.client().await?).await?, sorted);

    // Transactions: rollback discards, commit keeps.
    let tx = gw.transaction().await?;
    tx.execute(
        &insert,
        &[
            &100i32,
            &None::<i64>,
            &None::<String>,
            &None::<Vec<u8>>,
            &None::<f64>,
            &None::<bool>,
        ],
    )
    .await?;
    tx.rollback().await?;
    let tx = gw.transaction().await?;
    tx.execute("INSERT INTO typed (i4) VALUES ($1)", &[&101i32])
        .await?;
    tx.commit().await?;
    let sql =
        "SELECT count(*) FILTER (WHERE i4 = 100), count(*) FILTER (WHERE i4 = 101) FROM typed";
    let row = fx.db.client().await?.query_one(sql, &[]).await?;
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (0, 1));

    // An error, then recovery in the same session; an aborted transaction, then rollback.
    let err = gw
        .query("SELECT 1 / $1::int4", &[&0i32])
        .await
        .err()
        .context("no error")?;
    assert_eq!(err.code(), Some(&SqlState::DIVISION_BY_ZERO));
    assert_eq!(
        gw.query_one("SELECT 5::int4", &[]).await?.get::<_, i32>(0),
        5
    );
    let tx = gw.transaction().await?;
    tx.execute("INSERT INTO typed (i4) VALUES ($1)", &[&102i32])
        .await?;
    let err = tx
        .execute("INSERT INTO no_such_table VALUES (1)", &[])
        .await
        .err()
        .context("no error")?;
    assert_eq!(err.code(), Some(&SqlState::UNDEFINED_TABLE));
    let err = tx
        .query_one("SELECT 1", &[])
        .await
        .err()
        .context("no error")?;
    assert_eq!(err.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION));
    tx.rollback().await?;
    assert_eq!(
        gw.query_one("SELECT count(*) FROM typed WHERE i4 = 102", &[])
            .await?
            .get::<_, i64>(0),
        0
    );
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
    let streamed = streamed?;
    assert_eq!(streamed.len(), 50_000);
    assert_eq!(
        streamed
            .iter()
            .map(|r| i64::from(r.get::<_, i32>(0)))
            .sum::<i64>(),
        50_000 * 50_001 / 2
    );
    assert_eq!(
        simple?
            .iter()
            .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
            .count(),
        2
    );
    assert_eq!(one?.get::<_, &str>(0), "alone");
    Ok(())
}

#[tokio::test]
async fn listen_notify_is_delivered() -> Result<()> {
    let fx = Fixture::start(BIN, "relay_notify").await?;
    let (listener, mut connection) = fx.gateway().tokio_config().connect(NoTls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    let _ = tx.send((n.channel().to_owned(), n.payload().to_owned()));
                }
                Ok(_) => {}
                Err(e) => return eprintln!("listener connection failed: {e}"),
            }
        }
    });
    listener.batch_execute("LISTEN jobs").await?;
    let (notifier, _conn) = fx.gateway().connect().await?;
    notifier
        .execute("SELECT pg_notify('jobs', $1)", &[&"via gateway"])
        .await?;
    fx.db.execute("NOTIFY jobs, 'direct'").await?;
    listener
        .batch_execute("BEGIN; NOTIFY jobs, 'self'; COMMIT")
        .await?;
    for expected in ["via gateway", "direct", "self"] {
        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .context(expected)?;
        assert_eq!(got, Some(("jobs".to_owned(), expected.to_owned())));
    }
    listener.batch_execute("UNLISTEN jobs").await?;
    notifier
        .batch_execute("NOTIFY jobs, 'after unlisten'")
        .await?;
    listener.batch_execute("SELECT 1").await?;
    ensure!(
        tokio::time::timeout(Duration::from_secs(1), rx.recv())
            .await
            .is_err(),
        "notified after UNLISTEN"
    );
    Ok(())
}

#[tokio::test]
async fn cancel_request_through_gateway_stops_the_query() -> Result<()> {
    let fx = Fixture::start(BIN, "relay_cancel").await?;
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
    let (gw, result) = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .context("cancel had no effect")??;
    let err = result.err().context("pg_sleep(30) was not cancelled")?;
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err}");
    ensure!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(
        gw.query_one("SELECT 1::int4", &[]).await?.get::<_, i32>(0),
        1
    );
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

    let psql = [
        "--",
        "psql",
        "-X",
        "-At",
        "-c",
        "SELECT current_database(), current_setting('port')",
    ];
    let mut args = vec!["connect", "dev", "--gateway", pg.as_str(), "--token"];
    args.extend([banner.user_token.as_str(), "--user", banner.user.as_str()]);
    args.extend(psql);
    let out = fx.server.cli(&args).await?.ok()?;
    assert_eq!(out.stdout.trim(), format!("{}|5432", fx.db.name()));
    let env = [
        ("COUNTERSIGN_GATEWAY", pg.clone()),
        ("COUNTERSIGN_TOKEN", banner.user_token.clone()),
        ("COUNTERSIGN_USER", banner.user.clone()),
    ];
    let mut args = vec!["connect", "dev"];
    args.extend(psql);
    let out = fx.server.cli_with_env(&args, &env).await?.ok()?;
    assert_eq!(out.stdout.trim(), format!("{}|5432", fx.db.name()));
    Ok(())
}

/// Runs a session that pokes at settings, catalogs and errors through the gateway and
/// checks that no upstream password shows up anywhere the client (or the log) can see.
async fn ensure_upstream_secret_hidden(
    server: &DevServer,
    cluster: &PrivateCluster,
    resource: &str,
) -> Result<()> {
    let secrets = cluster.passwords();
    let params = server.default_params().with_dbname(resource);
    let out = Psql::new(&params)
        .on_error_stop(false)
        .command("SHOW ALL")
        .command("SELECT current_setting('password_encryption'), current_user, session_user")
        .command("SELECT * FROM pg_stat_activity")
        .command("SELECT * FROM pg_roles")
        .command("SELECT rolname, rolpassword FROM pg_authid")
        .command("SELECT usename, passwd FROM pg_shadow")
        .command("SELECT 1 / 0")
        .command("\\conninfo")
        .run()
        .await?;
    ensure!(
        out.stdout.contains("password_encryption|scram-sha-256|"),
        "SHOW ALL did not run: {out:?}"
    );
    ensure!(out.stderr.contains("permission denied"), "{out:?}");
    ensure_no_secret(&out.combined(), &secrets, "psql session")?;

    let (client, connection) = params.tokio_config().connect(NoTls).await?;
    let names = [
        "application_name",
        "session_authorization",
        "server_version",
        "client_encoding",
        "DateStyle",
        "TimeZone",
        "is_superuser",
    ];
    let reported: Vec<String> = names
        .iter()
        .map(|n| format!("{n}={:?}", connection.parameter(n)))
        .collect();
    ensure_no_secret(&reported.join("\n"), &secrets, "ParameterStatus")?;
    tokio::spawn(connection);
    let settings: Vec<String> = client
        .query("SHOW ALL", &[])
        .await?
        .iter()
        .map(|r| format!("{}={}", r.get::<_, &str>(0), r.get::<_, &str>(1)))
        .collect();
    ensure!(settings.len() > 100);
    ensure_no_secret(
        &settings.join("\n"),
        &secrets,
        "SHOW ALL via tokio-postgres",
    )?;
    let err = client
        .query("SELECT rolpassword FROM pg_authid", &[])
        .await
        .err()
        .context("pg_authid readable")?;
    ensure_no_secret(&format!("{err:?}"), &secrets, "error response")?;
    ensure_no_secret(&server.stderr_log(), &secrets, "gateway log")?;
    Ok(())
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
        let out = Psql::new(&server.default_params().with_dbname(resource))
            .command(sql)
            .run()
            .await?;
        assert_eq!(out.ok()?.stdout.trim(), expected, "{resource}");
        ensure_upstream_secret_hidden(&server, &cluster, resource)
            .await
            .context(resource)?;
    }
    Ok(())
}

#[tokio::test]
async fn upstream_md5_authentication() -> Result<()> {
    ensure_services()?;
    let cluster = PrivateCluster::start()?;
    let server = DevServer::start(
        BIN,
        DevServerOpts::default().upstream("legacy", &cluster.md5_url()),
    )
    .await?;
    let out = Psql::new(&server.default_params())
        .command("CREATE TABLE t (x int)")
        .command("INSERT INTO t SELECT generate_series(1, 3)")
        .command("SELECT current_user, sum(x) FROM t")
        .run()
        .await?;
    assert_eq!(out.ok()?.stdout, "CREATE TABLE\nINSERT 0 3\nmd5_user|6\n");
    ensure_upstream_secret_hidden(&server, &cluster, "legacy").await
}
