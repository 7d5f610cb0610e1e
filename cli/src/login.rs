//! `countersign login --server URL`: signs in through the control plane's
//! OpenID Connect provider in a browser and saves an access token.
//!
//! The CLI listens on `127.0.0.1:<random port>`, prints the control plane's
//! login URL carrying that loopback address and the S256 challenge of a
//! random verifier, and waits. After the person signs in, the control plane
//! redirects the browser to the loopback address with a one-time code, which
//! only this process can redeem (it alone holds the verifier) for an access
//! token. The token is saved (see [`crate::credentials`]).

use crate::client::{ServerArgs, check, http, url};
use crate::credentials::{self, SavedToken};
use anyhow::{Context, bail};
use base64::Engine;
use clap::Args;
use sha2::Digest;
use std::process::ExitCode;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Args)]
pub struct LoginArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// How long to wait for the browser sign-in.
    #[arg(long, default_value = "5m", value_parser = countersign_common::parse_duration)]
    timeout: Duration,
}

/// Longest request line and headers the loopback listener reads.
const MAX_REQUEST: usize = 16 * 1024;

pub async fn run(a: LoginArgs) -> anyhow::Result<ExitCode> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("listening on a loopback port")?;
    let port = listener.local_addr()?.port();
    let redirect = format!("http://127.0.0.1:{port}/callback");
    let verifier =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    let mut login_url = reqwest::Url::parse(&url(&a.server, "/auth/login"))
        .with_context(|| format!("--server {:?} is not a URL", a.server.server))?;
    login_url
        .query_pairs_mut()
        .append_pair("cli_redirect", &redirect)
        .append_pair("cli_challenge", &challenge);
    eprintln!("Open this URL in your browser to sign in:\n\n  {login_url}\n");
    let code = tokio::time::timeout(a.timeout, wait_for_code(&listener))
        .await
        .context("timed out waiting for the browser sign-in")??;
    let resp = http()?
        .post(url(&a.server, "/auth/cli/token"))
        .json(&serde_json::json!({ "code": code, "verifier": verifier }))
        .send()
        .await
        .context("contacting the control plane")?;
    let issued: serde_json::Value = check(resp).await?.json().await?;
    let saved = SavedToken {
        token: issued["token"]
            .as_str()
            .context("the response carries no token")?
            .to_owned(),
        identity: issued["identity"].as_str().unwrap_or_default().to_owned(),
        expires_at: issued["expires_at"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .context("the response carries no expiry")?,
    };
    let path = credentials::save(&a.server.server, saved.clone())?;
    eprintln!(
        "Signed in as {} until {}; token saved in {}",
        saved.identity,
        saved.expires_at,
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Serves the loopback listener until a request brings `code` (or an error).
/// Anything else (a favicon request, a stray connection) gets a 404 and the
/// wait goes on.
async fn wait_for_code(listener: &TcpListener) -> anyhow::Result<String> {
    loop {
        let (mut stream, _) = listener.accept().await.context("accepting the browser")?;
        let target = match read_request_target(&mut stream).await {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(error = %e, "ignoring a malformed loopback request");
                continue;
            }
        };
        let parsed = reqwest::Url::parse(&format!("http://127.0.0.1{target}")).ok();
        let Some(parsed) = parsed.filter(|u| u.path() == "/callback") else {
            respond(&mut stream, "404 Not Found", "Not found.").await;
            continue;
        };
        let mut code = None;
        let mut error = None;
        for (k, v) in parsed.query_pairs() {
            match k.as_ref() {
                "code" => code = Some(v.into_owned()),
                "error" => error = Some(v.into_owned()),
                _ => {}
            }
        }
        match (code, error) {
            (Some(code), None) if !code.is_empty() => {
                respond(
                    &mut stream,
                    "200 OK",
                    "Signed in. You can close this window and return to the terminal.",
                )
                .await;
                return Ok(code);
            }
            (_, Some(error)) => {
                respond(&mut stream, "400 Bad Request", "Sign-in failed.").await;
                bail!("the sign-in failed: {error}");
            }
            _ => respond(&mut stream, "400 Bad Request", "No code in this request.").await,
        }
    }
}

/// Reads an HTTP/1.1 request head and returns its target (`/callback?…`).
async fn read_request_target(stream: &mut tokio::net::TcpStream) -> anyhow::Result<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > MAX_REQUEST {
            bail!("request head longer than {MAX_REQUEST} bytes");
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .context("the request head did not arrive")??;
        if n == 0 {
            bail!("connection closed before the request head ended");
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
    let head = String::from_utf8_lossy(&buf);
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    match (parts.next(), parts.next()) {
        (Some("GET"), Some(target)) if target.starts_with('/') => Ok(target.to_owned()),
        _ => bail!("not a GET request: {line:?}"),
    }
}

async fn respond(stream: &mut tokio::net::TcpStream, status: &str, text: &str) {
    let body =
        format!("<!doctype html><meta charset=utf-8><title>Countersign</title><p>{text}</p>\n");
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
