//! A local HTTP receiver for delivery tests: it records every request and
//! answers with scripted statuses. Included by test files with `#[path]`.

// Each test binary includes this file and uses a different part of it.
#![allow(dead_code)]

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest a test waits for deliveries that should come.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// One request a receiver got.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Recorded>>,
    /// Statuses to answer, in order; 200 once it runs out.
    script: Mutex<VecDeque<u16>>,
    /// How long to wait before answering.
    delay: Duration,
}

/// An HTTP server on 127.0.0.1:0 that records requests and answers as scripted.
pub struct Receiver {
    pub base: String,
    shared: Arc<Shared>,
}

impl Receiver {
    pub async fn start(script: &[u16]) -> Self {
        Self::start_with(script, Duration::ZERO).await
    }

    pub async fn start_with(script: &[u16], delay: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, script, delay)
    }

    pub fn serve(listener: tokio::net::TcpListener, script: &[u16], delay: Duration) -> Self {
        let shared = Arc::new(Shared {
            script: Mutex::new(script.iter().copied().collect()),
            delay,
            ..Shared::default()
        });
        let router = Router::new().fallback(record).with_state(shared.clone());
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { base, shared }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The requests once there are at least `n`; fails after [`PATIENCE`].
    pub async fn wait_for(&self, n: usize) -> Vec<Recorded> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let got = self.requests();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} requests, got {}: {got:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn record(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    shared.requests.lock().unwrap().push(Recorded {
        path: uri.path().to_owned(),
        headers,
        body,
        at: Instant::now(),
    });
    tokio::time::sleep(shared.delay).await;
    let status = shared.script.lock().unwrap().pop_front().unwrap_or(200);
    StatusCode::from_u16(status).unwrap()
}
