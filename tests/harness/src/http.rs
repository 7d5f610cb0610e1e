//! Minimal HTTP client for the control-plane API, using curl (a real client, and no TLS
//! stack to configure in the test crate).

use std::ffi::OsString;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::process::run;

const STATUS_MARK: &str = "\n__countersign_status__=";

/// Status and body of an HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

impl HttpResponse {
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.body)
            .with_context(|| format!("HTTP {} body is not JSON: {}", self.status, self.body))
    }
}

/// Sends `method url` with an optional bearer token and JSON body.
pub async fn request(
    method: &str,
    url: &str,
    bearer: Option<&str>,
    body: Option<&serde_json::Value>,
) -> Result<HttpResponse> {
    let mut args: Vec<OsString> = vec!["-sS".into(), "-X".into(), method.into()];
    args.push("-w".into());
    args.push(format!("{STATUS_MARK}%{{http_code}}").into());
    if let Some(token) = bearer {
        args.push("-H".into());
        args.push(format!("Authorization: Bearer {token}").into());
    }
    let payload = body.map(serde_json::Value::to_string);
    if payload.is_some() {
        args.extend(["-H".into(), "Content-Type: application/json".into()]);
        args.extend(["--data-binary".into(), "@-".into()]);
    }
    args.push(url.into());
    let out = run(
        "curl",
        &args,
        &[],
        payload.as_deref().map(str::as_bytes),
        Duration::from_secs(30),
    )
    .await?
    .ok()?;
    let (body, status) = out
        .stdout
        .rsplit_once(STATUS_MARK)
        .with_context(|| format!("no status in curl output: {out:?}"))?;
    Ok(HttpResponse {
        status: status
            .trim()
            .parse()
            .with_context(|| format!("status {status:?}"))?,
        body: body.to_owned(),
    })
}

/// The id of the pending review of `statement` as `GET <server>/api/v1/reviews` lists it for
/// `bearer`, polled until it shows or `timeout` passes (a held statement reaches the
/// control plane asynchronously).
pub async fn pending_review(
    server: &str,
    bearer: &str,
    statement: &str,
    timeout: Duration,
) -> Result<String> {
    crate::eventually(timeout, || async {
        let list = request(
            "GET",
            &format!("{server}/api/v1/reviews"),
            Some(bearer),
            None,
        )
        .await?
        .json()?;
        list["reviews"]
            .as_array()
            .and_then(|rs| {
                rs.iter()
                    .find(|r| r["statement"] == statement && r["status"] == "pending")
            })
            .and_then(|r| r["id"].as_str().map(str::to_owned))
            .with_context(|| format!("no pending review of {statement:?} yet: {list}"))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[tokio::test]
    async fn reads_status_and_body_and_sends_headers() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&request).contains("{\"a\":1}") {
                let n = conn.read(&mut buf).unwrap();
                assert!(n > 0, "request ended early");
                request.extend_from_slice(&buf[..n]);
            }
            let body = "{\"ok\":true}";
            write!(
                conn,
                "HTTP/1.1 201 Created\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            String::from_utf8(request).unwrap()
        });
        let url = format!("http://{addr}/x");
        let body = serde_json::json!({"a": 1});
        let resp = request("POST", &url, Some("tok"), Some(&body))
            .await
            .unwrap();
        assert_eq!(resp.status, 201);
        assert_eq!(resp.json().unwrap()["ok"], true);
        let seen = server.join().unwrap();
        assert!(seen.starts_with("POST /x HTTP/1.1"), "{seen}");
        assert!(seen.contains("Authorization: Bearer tok"), "{seen}");
    }
}
