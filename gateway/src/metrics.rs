//! The gateway's Prometheus metrics and its health endpoints, served over plain HTTP on
//! `metrics_addr`: `GET /metrics` (OpenMetrics text), `GET /healthz` (the process answers)
//! and `GET /readyz` (it holds a config from the control plane, so it can admit sessions).
//!
//! Metric names start with `countersign_gateway_`. Labels never carry an identity, a
//! statement or a value: only a resource name, a decision or a reason.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabel {
    /// `allow`, `deny` or `review`.
    pub decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabel {
    pub resource: String,
}

/// Every metric the gateway keeps. Cheap to update from any task.
pub struct Metrics {
    registry: Registry,
    pub sessions_active: Gauge,
    pub sessions_total: Counter,
    pub sessions_refused: Counter,
    pub statements: Family<DecisionLabel, Counter>,
    pub review_wait_seconds: Histogram,
    pub upstream_connect_errors: Family<ResourceLabel, Counter>,
    pub masked_values: Counter,
    pub audit_spool_bytes: Gauge,
    pub audit_events_uploaded: Counter,
    pub audit_upload_lag_seconds: Gauge<f64, AtomicU64>,
    pub policy_version: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("countersign_gateway");
        let m = Metrics {
            sessions_active: Gauge::default(),
            sessions_total: Counter::default(),
            sessions_refused: Counter::default(),
            statements: Family::default(),
            // 10 ms to ~20 min.
            review_wait_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 18)),
            upstream_connect_errors: Family::default(),
            masked_values: Counter::default(),
            audit_spool_bytes: Gauge::default(),
            audit_events_uploaded: Counter::default(),
            audit_upload_lag_seconds: Gauge::default(),
            policy_version: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "sessions_active",
            "Client sessions open now",
            m.sessions_active.clone(),
        );
        registry.register(
            "sessions",
            "Client sessions admitted",
            m.sessions_total.clone(),
        );
        registry.register(
            "sessions_refused",
            "Client sessions refused after startup (credentials, access, upstream, masking)",
            m.sessions_refused.clone(),
        );
        registry.register(
            "statements",
            "Statements decided, by decision",
            m.statements.clone(),
        );
        registry.register(
            "review_wait_seconds",
            "How long held statements waited for a decision",
            m.review_wait_seconds.clone(),
        );
        registry.register(
            "upstream_connect_errors",
            "Failed connections to an upstream database",
            m.upstream_connect_errors.clone(),
        );
        registry.register(
            "masked_values",
            "Values replaced by masking",
            m.masked_values.clone(),
        );
        registry.register(
            "audit_spool_bytes",
            "Bytes of audit events in the spool, not yet acknowledged by the control plane",
            m.audit_spool_bytes.clone(),
        );
        registry.register(
            "audit_events_uploaded",
            "Audit events acknowledged by the control plane",
            m.audit_events_uploaded.clone(),
        );
        registry.register(
            "audit_upload_lag_seconds",
            "How long the oldest audit event waiting for the control plane's acknowledgement has waited (0 when none waits)",
            m.audit_upload_lag_seconds.clone(),
        );
        registry.register(
            "policy_version",
            "Version of the policy this gateway enforces",
            m.policy_version.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn statement(&self, decision: &str) {
        self.statements
            .get_or_create(&DecisionLabel {
                decision: decision.to_owned(),
            })
            .inc();
    }

    pub fn resource(resource: &str) -> ResourceLabel {
        ResourceLabel {
            resource: resource.to_owned(),
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until `shutdown`.
pub async fn serve(
    gw: crate::Gateway,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper::service::service_fn;
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let gw = gw.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let gw = gw.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(&gw, &req)) }
            });
            let io = hyper_util::rt::TokioIo::new(tcp);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

fn respond<B>(
    gw: &crate::Gateway,
    req: &hyper::Request<B>,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let (status, content_type, body) = match (req.method().as_str(), req.uri().path()) {
        ("GET", "/metrics") => {
            gw.refresh_gauges();
            (
                200,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                gw.metrics.encode(),
            )
        }
        ("GET", "/healthz") => (200, "text/plain", "ok\n".to_owned()),
        ("GET", "/readyz") if gw.config.borrow().is_some() => {
            (200, "text/plain", "ready\n".to_owned())
        }
        ("GET", "/readyz") => (
            503,
            "text/plain",
            "no config from the control plane yet\n".to_owned(),
        ),
        _ => (404, "text/plain", "not found\n".to_owned()),
    };
    let mut res = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *res.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        res.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_named_metrics_with_labels() {
        let m = Metrics::new();
        m.sessions_total.inc();
        m.statement("deny");
        m.upstream_connect_errors
            .get_or_create(&Metrics::resource("pg-prod"))
            .inc();
        let text = m.encode();
        assert!(
            text.contains("countersign_gateway_sessions_total 1"),
            "{text}"
        );
        assert!(
            text.contains("countersign_gateway_statements_total{decision=\"deny\"} 1"),
            "{text}"
        );
        assert!(text.contains("resource=\"pg-prod\""), "{text}");
        assert!(
            text.contains("countersign_gateway_review_wait_seconds_bucket"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
