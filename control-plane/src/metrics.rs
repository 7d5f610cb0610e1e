//! The control plane's Prometheus metrics, served at `GET /metrics` next to the API, and
//! its readiness (`GET /readyz`: the store answers). Names start with
//! `countersign_control_plane_`; labels never carry an identity or a statement.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub struct Metrics {
    registry: Registry,
    pub sessions_authenticated: Counter,
    pub sessions_refused: Counter,
    pub audit_events_ingested: Counter,
    pub audit_streamed: Counter,
    pub audit_stream_failures: Counter,
    pub gateways_watching: Gauge,
    pub policy_version: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("countersign_control_plane");
        let m = Metrics {
            registry: Registry::default(),
            sessions_authenticated: Counter::default(),
            sessions_refused: Counter::default(),
            audit_events_ingested: Counter::default(),
            audit_streamed: Counter::default(),
            audit_stream_failures: Counter::default(),
            gateways_watching: Gauge::default(),
            policy_version: Gauge::default(),
        };
        registry.register(
            "sessions_authenticated",
            "Gateway sessions admitted (token, resource and access checked)",
            m.sessions_authenticated.clone(),
        );
        registry.register(
            "sessions_refused",
            "Gateway sessions refused at authentication",
            m.sessions_refused.clone(),
        );
        registry.register(
            "audit_events_ingested",
            "Audit events stored from gateways (resends not counted)",
            m.audit_events_ingested.clone(),
        );
        registry.register(
            "audit_streamed",
            "Audit events delivered to SIEM streams by this replica (acknowledged batches)",
            m.audit_streamed.clone(),
        );
        registry.register(
            "audit_stream_failures",
            "Failed SIEM stream deliveries (each retried)",
            m.audit_stream_failures.clone(),
        );
        registry.register(
            "gateways_watching",
            "WatchConfig streams open on this replica",
            m.gateways_watching.clone(),
        );
        registry.register(
            "policy_version",
            "Version of the active policy",
            m.policy_version.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
