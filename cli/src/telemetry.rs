//! Logs and traces of every `countersign` command.
//!
//! Logs go to stderr as text or JSON (`--log-format`, `COUNTERSIGN_LOG_FORMAT`),
//! filtered by `COUNTERSIGN_LOG` (default `info`).
//!
//! Traces are opt-in, with the standard OpenTelemetry variables, for the
//! serving commands only (`control-plane`, `gateway`, `dev`):
//! - `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
//!   turns them on; spans are sent over OTLP/HTTP with protobuf
//!   (`/v1/traces` is appended to the first). Without it nothing is sent.
//! - `OTEL_TRACES_EXPORTER`: `otlp` (the default) or `none`.
//! - `OTEL_EXPORTER_OTLP_PROTOCOL`: only `http/protobuf` is built in; any
//!   other value is refused at start rather than ignored.
//! - `OTEL_SERVICE_NAME`: default `countersign-<command>`.
//! - `OTEL_BSP_*` tune the batch span processor as the specification says.
//!
//! The W3C trace context travels from the gateway to the control plane in
//! gRPC metadata (`traceparent`), so one client session is one trace.
//! Spans carry the same fields as the logs: never a token, a password or a
//! masked value.

use anyhow::{Context, bail};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// What must be flushed before the process exits.
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered. Call outside the Tokio runtime.
    pub fn shutdown(self) {
        if let Some(provider) = self.traces
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: flushing traces failed: {e}");
        }
    }
}

/// Installs the log subscriber, with an OpenTelemetry layer when traces are
/// configured for `service` (`None`: a client command, never traced).
pub fn init(format: &str, service: Option<&str>) -> anyhow::Result<Telemetry> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("COUNTERSIGN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let traces = match service {
        Some(service) => traces(service)?,
        None => None,
    };
    let otel = traces
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer("countersign")));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        "json" => registry.with(fmt.json()).try_init()?,
        "text" => registry
            .with(fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())))
            .try_init()?,
        other => bail!("--log-format must be text or json, not {other:?}"),
    }
    Ok(Telemetry { traces })
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The tracer provider the `OTEL_*` variables ask for, if any.
fn traces(default_service: &str) -> anyhow::Result<Option<SdkTracerProvider>> {
    match env("OTEL_TRACES_EXPORTER").as_deref() {
        None | Some("otlp") => {}
        Some("none") => return Ok(None),
        Some(other) => bail!("OTEL_TRACES_EXPORTER={other:?} is not supported: use otlp or none"),
    }
    if env("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
        && env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
    {
        return Ok(None);
    }
    for var in [
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    ] {
        if let Some(p) = env(var)
            && p != "http/protobuf"
        {
            bail!("{var}={p:?} is not supported: Countersign exports traces over http/protobuf");
        }
    }
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("building the OTLP HTTP client")?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(BlockingHttp(client))
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
        .context("setting up the OTLP trace exporter (OTEL_EXPORTER_OTLP_*)")?;
    let service = env("OTEL_SERVICE_NAME").unwrap_or_else(|| default_service.to_owned());
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    Ok(Some(provider))
}

/// The exporter's HTTP client. The batch span processor exports from a
/// thread of its own, outside the Tokio runtime, so a blocking client fits
/// (and reuses the reqwest the CLI already links).
#[derive(Debug)]
struct BlockingHttp(reqwest::blocking::Client);

#[async_trait::async_trait]
impl HttpClient for BlockingHttp {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let mut call = self
            .0
            .request(parts.method, parts.uri.to_string())
            .body(body.to_vec());
        for (name, value) in &parts.headers {
            call = call.header(name, value);
        }
        let reply = call.send()?;
        let mut response = Response::builder().status(reply.status());
        for (name, value) in reply.headers() {
            response = response.header(name, value);
        }
        Ok(response.body(Bytes::from(reply.bytes()?.to_vec()))?)
    }
}
