//! End-to-end: the gateway authenticates every client and fails closed.
//!
//! Each rejection must be a FATAL ErrorResponse with the contract's SQLSTATE, readable in
//! psql, and must leave the gateway serving good clients.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use countersign_testkit::wire::{
    expect_closed, password_message, query_message, read_message, startup_message,
};
use countersign_testkit::{ConnParams, Fixture, Psql, eventually, expect_fatal};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_postgres::error::SqlState;

const BIN: &str = env!("CARGO_BIN_EXE_countersign");
const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";

const BAD_CREDENTIALS: &[&SqlState] = &[&SqlState::INVALID_PASSWORD];
const NO_CREDENTIALS: &[&SqlState] = &[
    &SqlState::INVALID_PASSWORD,
    &SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
];
const UNKNOWN_TARGET: &[&SqlState] = &[
    &SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
    &SqlState::INVALID_CATALOG_NAME,
];

/// A good client still gets a working session.
async fn ensure_still_serves(fx: &Fixture) -> Result<()> {
    let (client, _conn) = fx
        .gateway()
        .connect()
        .await
        .context("gateway stopped serving")?;
    let row = client.query_one("SELECT 41::int4 + 1", &[]).await?;
    ensure!(row.get::<_, i32>(0) == 42);
    Ok(())
}

/// Checks the rejection with tokio-postgres and psql, then that the gateway still serves.
async fn ensure_rejected(fx: &Fixture, params: &ConnParams, codes: &[&SqlState]) -> Result<()> {
    let db = expect_fatal(params.try_connect().await, codes)?;
    if db.code() == &SqlState::INVALID_PASSWORD {
        ensure!(
            db.message().starts_with("countersign: "),
            "unreadable message {:?}",
            db.message()
        );
    }
    let out = Psql::new(params)
        .command("SELECT 1")
        .run()
        .await?
        .failed()?;
    ensure!(
        out.status.code() == Some(2),
        "psql should fail to connect: {out:?}"
    );
    ensure!(
        out.stderr.contains("FATAL") && out.stderr.contains(db.message()),
        "psql stderr lacks the FATAL message {:?}: {out:?}",
        db.message()
    );
    ensure_still_serves(fx).await
}

#[tokio::test]
async fn garbage_tokens_are_rejected() -> Result<()> {
    let fx = Fixture::start(BIN, "auth_garbage").await?;
    let user = fx.server.user().to_owned();
    for token in [
        "not-a-token",
        "eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl",
        &"x".repeat(900),
    ] {
        let params = fx.gateway().with_password(token);
        ensure_rejected(&fx, &params, BAD_CREDENTIALS)
            .await
            .context(format!("{user} with {token:.20}"))?;
    }
    // A real token with one character in the middle changed (not the last one: base64
    // padding bits could make that a no-op).
    let token = fx.server.user_token();
    let at = (token.len() / 2..token.len())
        .find(|&i| token.as_bytes()[i].is_ascii_alphanumeric())
        .context("no alphanumeric character in the token")?;
    let swapped = if token.as_bytes()[at] == b'A' {
        "B"
    } else {
        "A"
    };
    let tampered = format!("{}{swapped}{}", &token[..at], &token[at + 1..]);
    ensure_rejected(&fx, &fx.gateway().with_password(&tampered), BAD_CREDENTIALS).await
}

#[tokio::test]
async fn expired_token_is_rejected() -> Result<()> {
    let fx = Fixture::start(BIN, "auth_expired").await?;
    let short = fx.server.mint_token(ALICE, &[], Some("1s")).await?;
    let long = fx.server.mint_token(ALICE, &[], Some("1h")).await?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    ensure_rejected(&fx, &fx.gateway_as(ALICE, &short), BAD_CREDENTIALS).await?;
    // Same identity, unexpired token: accepted.
    fx.gateway_as(ALICE, &long).connect().await?;
    Ok(())
}

#[tokio::test]
async fn revoked_token_is_rejected() -> Result<()> {
    let fx = Fixture::start(BIN, "auth_revoked").await?;
    let revoked = fx.server.mint_token(ALICE, &["dba"], None).await?;
    let kept = fx.server.mint_token(ALICE, &[], None).await?;
    fx.gateway_as(ALICE, &revoked)
        .connect()
        .await
        .context("fresh token refused")?;
    fx.server.revoke_token(&revoked).await?;
    let params = fx.gateway_as(ALICE, &revoked);
    // Revocation may reach the gateway asynchronously; it must within a few seconds.
    eventually(Duration::from_secs(5), || async {
        expect_fatal(params.try_connect().await, BAD_CREDENTIALS).map(|_| ())
    })
    .await?;
    ensure_rejected(&fx, &params, BAD_CREDENTIALS).await?;
    fx.gateway_as(ALICE, &kept)
        .connect()
        .await
        .context("unrelated token was revoked too")?;
    Ok(())
}

#[tokio::test]
async fn token_revoked_by_id_over_http_is_rejected() -> Result<()> {
    let fx = Fixture::start(BIN, "auth_http_revoke").await?;
    let body = serde_json::json!({"identity": ALICE, "groups": [], "ttl_seconds": 3600});
    let resp = fx
        .server
        .http("POST", "/api/v1/tokens", Some(""), Some(&body))
        .await?;
    ensure!(
        resp.status == 401 || resp.status == 403,
        "token minted without auth: {resp:?}"
    );
    let resp = fx
        .server
        .http(
            "POST",
            "/api/v1/tokens",
            Some("wrong-admin-token"),
            Some(&body),
        )
        .await?;
    ensure!(
        resp.status == 401 || resp.status == 403,
        "token minted with a bad token: {resp:?}"
    );
    let resp = fx
        .server
        .http("POST", "/api/v1/tokens", None, Some(&body))
        .await?;
    ensure!((200..300).contains(&resp.status), "{resp:?}");
    let json = resp.json()?;
    let token = json["token"].as_str().context("no token")?;
    let token_id = json["token_id"].as_str().context("no token_id")?;
    let expires_at = json["expires_at"].as_str().context("no expires_at")?;
    let expires = chrono::DateTime::parse_from_rfc3339(expires_at)?;
    let ttl = expires
        .signed_duration_since(chrono::Utc::now())
        .num_seconds();
    ensure!(
        (3500..=3700).contains(&ttl),
        "expires_at {expires_at} is not ~1h away"
    );
    ensure!(
        token != token_id,
        "the token id must not be the secret itself"
    );

    let params = fx.gateway_as(ALICE, token);
    params.connect().await.context("minted token refused")?;
    let resp = fx
        .server
        .http("DELETE", &format!("/api/v1/tokens/{token_id}"), None, None)
        .await?;
    ensure!((200..300).contains(&resp.status), "{resp:?}");
    eventually(Duration::from_secs(5), || async {
        expect_fatal(params.try_connect().await, BAD_CREDENTIALS).map(|_| ())
    })
    .await
}

#[tokio::test]
async fn token_for_another_identity_is_rejected() -> Result<()> {
    let fx = Fixture::start(BIN, "auth_wrong_user").await?;
    let alice = fx.server.mint_token(ALICE, &[], None).await?;
    let bob = fx.server.mint_token(BOB, &[], None).await?;
    ensure_rejected(&fx, &fx.gateway_as(BOB, &alice), BAD_CREDENTIALS).await?;
    ensure_rejected(&fx, &fx.gateway_as(ALICE, &bob), BAD_CREDENTIALS).await?;
    let dev_user = fx.server.user().to_owned();
    ensure_rejected(&fx, &fx.gateway_as(&dev_user, &alice), BAD_CREDENTIALS).await?;
    fx.gateway_as(BOB, &bob)
        .connect()
        .await
        .context("bob's own token refused")?;
    Ok(())
}

#[tokio::test]
async fn missing_or_empty_password_is_rejected() -> Result<()> {
    let fx = Fixture::start(BIN, "auth_no_password").await?;
    // tokio-postgres sends an empty PasswordMessage.
    let empty = fx.gateway().with_password("");
    expect_fatal(empty.try_connect().await, NO_CREDENTIALS)?;
    // libpq refuses to send an empty or missing password, so the gateway must have asked.
    for params in [empty, fx.gateway().without_password()] {
        let out = Psql::new(&params)
            .command("SELECT 1")
            .run()
            .await?
            .failed()?;
        ensure!(out.stderr.contains("no password supplied"), "{out:?}");
    }

    // Raw: the gateway asks for a password (never AuthenticationOk), then refuses "".
    let mut stream = TcpStream::connect(fx.server.pg_addr()).await?;
    stream
        .write_all(&startup_message(&[
            ("user", fx.server.user()),
            ("database", "dev"),
        ]))
        .await?;
    let (tag, body) = read_message(&mut stream)
        .await?
        .context("closed before auth")?;
    ensure!(
        tag == b'R' && body.get(..4) != Some(&[0, 0, 0, 0][..]),
        "no password request: {tag} {body:?}"
    );
    stream.write_all(&password_message("")).await?;
    let fields = expect_closed(&mut stream, Duration::from_secs(10))
        .await?
        .context("no ErrorResponse")?;
    ensure!(
        fields.get(&'S').map(String::as_str) == Some("FATAL"),
        "{fields:?}"
    );
    ensure!(
        matches!(
            fields.get(&'C').map(String::as_str),
            Some("28P01" | "28000")
        ),
        "{fields:?}"
    );

    // Raw: a query instead of a password is never run.
    let mut stream = TcpStream::connect(fx.server.pg_addr()).await?;
    stream
        .write_all(&startup_message(&[
            ("user", fx.server.user()),
            ("database", "dev"),
        ]))
        .await?;
    ensure!(read_message(&mut stream).await?.map(|m| m.0) == Some(b'R'));
    stream.write_all(&query_message("SELECT 1")).await?;
    if let Some(fields) = expect_closed(&mut stream, Duration::from_secs(10)).await? {
        ensure!(
            fields.get(&'S').map(String::as_str) == Some("FATAL"),
            "{fields:?}"
        );
    }
    ensure_still_serves(&fx).await
}

#[tokio::test]
async fn unknown_resource_or_database_is_rejected() -> Result<()> {
    let fx = Fixture::start(BIN, "auth_unknown").await?;
    ensure_rejected(
        &fx,
        &fx.gateway().with_dbname("no-such-resource"),
        UNKNOWN_TARGET,
    )
    .await?;
    ensure_rejected(
        &fx,
        &fx.gateway().with_dbname("dev/no_such_database_here"),
        UNKNOWN_TARGET,
    )
    .await
}

/// Startup packets no client should send. Each must end the connection promptly.
fn malformed_startups() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "http request",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        ("negative length", vec![0x80, 0, 0, 8, 0, 3, 0, 0]),
        ("minus one length", vec![0xff, 0xff, 0xff, 0xff, 0, 3, 0, 0]),
        (
            "oversized length",
            vec![0x7f, 0xff, 0xff, 0xf0, 0, 3, 0, 0, b'u'],
        ),
        ("length below header", vec![0, 0, 0, 2]),
        ("unknown protocol", vec![0, 0, 0, 8, 0, 9, 0, 9]),
        (
            "unterminated params",
            [&[0, 0, 0, 13, 0, 3, 0, 0][..], b"user\0"].concat(),
        ),
        (
            "tls hello without SSLRequest",
            vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0, 1, 0xfc],
        ),
        (
            "unterminated 4k body",
            [&[0, 0, 0x10, 0, 0, 3, 0, 0][..], &[b'A'; 4088]].concat(),
        ),
    ]
}

#[tokio::test]
async fn malformed_startup_packets_close_the_connection() -> Result<()> {
    let fx = Fixture::start(BIN, "auth_malformed").await?;
    for (name, bytes) in malformed_startups() {
        let mut stream = TcpStream::connect(fx.server.pg_addr()).await?;
        // The server may close before reading everything; a failed write is fine then.
        let _ = stream.write_all(&bytes).await;
        match expect_closed(&mut stream, Duration::from_secs(10)).await {
            Ok(Some(fields)) => {
                ensure!(
                    fields.get(&'S').map(String::as_str) == Some("FATAL"),
                    "{name}: {fields:?}"
                )
            }
            Ok(None) => {}
            Err(e) => bail!("{name}: {e:#}"),
        }
    }
    // A length promising more than is sent, then a half-close: no hang.
    let mut stream = TcpStream::connect(fx.server.pg_addr()).await?;
    stream
        .write_all(&[0, 1, 0, 0, 0, 3, 0, 0, b'u', b's'])
        .await?;
    stream.shutdown().await?;
    expect_closed(&mut stream, Duration::from_secs(10))
        .await
        .context("truncated packet")?;
    ensure_still_serves(&fx).await
}

#[tokio::test]
async fn tokens_and_identities_survive_a_restart() -> Result<()> {
    let mut fx = Fixture::start(BIN, "auth_restart").await?;
    let alice = fx.server.mint_token(ALICE, &[], None).await?;
    let revoked = fx.server.mint_token(ALICE, &[], None).await?;
    fx.server.revoke_token(&revoked).await?;
    fx.server.restart().await?;
    fx.gateway_as(ALICE, &alice)
        .connect()
        .await
        .context("token lost on restart")?;
    expect_fatal(
        fx.gateway_as(ALICE, &revoked).try_connect().await,
        BAD_CREDENTIALS,
    )
    .context("revocation lost on restart")?;
    let fresh = fx.server.mint_token(BOB, &[], None).await?;
    fx.gateway_as(BOB, &fresh).connect().await?;
    ensure_still_serves(&fx).await
}

/// A live session ends soon after its token is revoked, and when its token expires,
/// with a FATAL the client can read; other sessions carry on.
#[tokio::test]
async fn revocation_and_expiry_end_live_sessions() -> Result<()> {
    let fx = Fixture::start(BIN, "auth_live_revoke").await?;
    let doomed = fx.server.mint_token(ALICE, &[], None).await?;
    let kept = fx.server.mint_token(ALICE, &[], None).await?;
    let (live, _t1) = fx.gateway_as(ALICE, &doomed).connect().await?;
    let (other, _t2) = fx.gateway_as(ALICE, &kept).connect().await?;
    live.simple_query("SELECT 1").await?;

    let revoked_at = std::time::Instant::now();
    fx.server.revoke_token(&doomed).await?;
    let ended = eventually(Duration::from_secs(5), || async {
        match live.simple_query("SELECT 1").await {
            Ok(_) => anyhow::bail!("session still open"),
            Err(e) => Ok(e),
        }
    })
    .await?;
    let took = revoked_at.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "revocation took {took:?} to end the session"
    );
    if let Some(db) = ended.as_db_error() {
        assert_eq!(db.code().code(), "57P01", "{db:?}");
        assert!(db.message().contains("revoked"), "{db:?}");
    } else {
        assert!(live.is_closed(), "expected a closed session, got {ended}");
    }
    other
        .simple_query("SELECT 1")
        .await
        .context("an unrelated session was ended")?;

    // Expiry ends a session too, without any revocation.
    let short = fx.server.mint_token(ALICE, &[], Some("2s")).await?;
    let (brief, _t3) = fx.gateway_as(ALICE, &short).connect().await?;
    brief.simple_query("SELECT 1").await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let err = brief
        .simple_query("SELECT 1")
        .await
        .err()
        .context("session outlived its token")?;
    if let Some(db) = err.as_db_error() {
        assert!(db.message().contains("expired"), "{db:?}");
    }
    Ok(())
}

/// A client that sends its startup packet but never its token is cut off after
/// the handshake timeout, with a FATAL, and the gateway keeps serving others.
#[tokio::test]
async fn a_client_that_never_sends_its_token_is_cut_off() -> Result<()> {
    let opts = countersign_testkit::DevServerOpts {
        extra_args: vec!["--handshake-timeout".into(), "1s".into()],
        ..Default::default()
    };
    let fx = Fixture::start_with(BIN, "auth_slow_client", opts).await?;
    let mut stream = TcpStream::connect(fx.server.pg_addr()).await?;
    stream
        .write_all(&countersign_testkit::wire::startup_message(&[
            ("user", ALICE),
            ("database", "dev"),
        ]))
        .await?;
    let (tag, _) = countersign_testkit::wire::read_message(&mut stream)
        .await?
        .context("no authentication request")?;
    assert_eq!(tag, b'R');
    let started = std::time::Instant::now();
    let next = tokio::time::timeout(
        Duration::from_secs(10),
        countersign_testkit::wire::read_message(&mut stream),
    )
    .await
    .context("the gateway kept waiting")??;
    if let Some((tag, body)) = next {
        assert_eq!(tag, b'E', "expected a FATAL");
        let fields = countersign_testkit::wire::error_fields(&body);
        assert_eq!(
            fields.get(&'S').map(String::as_str),
            Some("FATAL"),
            "{fields:?}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    ensure_still_serves(&fx).await
}
