//! OTLP traces across processes: a control plane and a gateway, both with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at a small OTLP/HTTP receiver in
//! this test. One client session, with a statement held for review, is one
//! trace: the gateway's `session` span is the parent of the control plane's
//! `AuthenticateSession` and `OpenReview` spans (W3C `traceparent` in gRPC
//! metadata), and the audit batch the gateway uploads is traced the same way.

#![cfg(test)]

use anyhow::{Context, Result, ensure};
use countersign_testkit::http::request;
use countersign_testkit::{
    AdminCli, ConnParams, TestDb, ensure_services, eventually, free_port, spawn_server, wait_port,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_countersign");
const ADMIN: &str = "traces-admin-token-0123456789abcdef0123";
const GATEWAY: &str = "traces-gateway-token-0123456789abcdef01";
const POLICY: &str = "[[access]]\nname = \"everyone\"\nmembers = [\"*\"]\nlevel = \"read-write\"\n\n\
[[guardrail]]\nname = \"deletes-need-review\"\nmatch = { kinds = [\"delete\"] }\naction = \"review\"\napprovers = [\"group:dba\"]\n";

/// The part of OTLP's `ExportTraceServiceRequest` this test reads.
mod otlp {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTraceServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_spans: Vec<ResourceSpans>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceSpans {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_spans: Vec<ScopeSpans>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(string, tag = "1")]
        pub string_value: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeSpans {
        #[prost(message, repeated, tag = "2")]
        pub spans: Vec<Span>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "4")]
        pub parent_span_id: Vec<u8>,
        #[prost(string, tag = "5")]
        pub name: String,
    }
}

#[derive(Clone, Debug)]
struct Received {
    service: String,
    name: String,
    trace: String,
    span: String,
    parent: String,
}

/// An OTLP/HTTP receiver on 127.0.0.1:0; returns its URL and what it got.
async fn receiver() -> Result<(String, Arc<Mutex<Vec<Received>>>)> {
    use axum::body::Bytes;
    use prost::Message as _;
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                let Ok(req) = otlp::ExportTraceServiceRequest::decode(body) else {
                    return axum::http::StatusCode::BAD_REQUEST;
                };
                let mut out = sink.lock().unwrap();
                for rs in req.resource_spans {
                    let service = rs
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|kv| kv.key == "service.name")
                        .and_then(|kv| kv.value.as_ref())
                        .map(|v| v.string_value.clone())
                        .unwrap_or_default();
                    for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                        out.push(Received {
                            service: service.clone(),
                            name: span.name,
                            trace: hex(&span.trace_id),
                            span: hex(&span.span_id),
                            parent: hex(&span.parent_span_id),
                        });
                    }
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, got))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn one_session_is_one_trace_across_gateway_and_control_plane() -> Result<()> {
    ensure_services()?;
    let dir = tempfile::tempdir()?;
    let store = TestDb::create("cs_traces_store").await?;
    let app = TestDb::create("cs_traces_app").await?;
    app.execute("CREATE TABLE orders (id int primary key); INSERT INTO orders VALUES (1), (2)")
        .await?;
    let (otlp, got) = receiver().await?;

    let (http, grpc, pg) = (free_port()?, free_port()?, free_port()?);
    let cp_config = dir.path().join("cp.toml");
    std::fs::write(
        &cp_config,
        format!(
            "database_url = \"{}\"\nhttp_addr = \"127.0.0.1:{http}\"\ngrpc_addr = \"127.0.0.1:{grpc}\"\n\
             admin_token = \"{ADMIN}\"\ngateway_token = \"{GATEWAY}\"\n\n\
             [[resource]]\nname = \"pg-prod\"\nenvironment = \"prod\"\n",
            store.url()
        ),
    )?;
    // Traces go to the test's collector, exported every 100 ms.
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let cp_log = dir.path().join("cp.log");
    let _cp = spawn_server(
        BIN.as_ref(),
        &[
            "control-plane",
            "--config",
            cp_config.to_str().context("path")?,
        ],
        &otel,
        &cp_log,
    )?;
    wait_port(http, &cp_log).await?;
    let gw_config = dir.path().join("gw.toml");
    std::fs::write(
        &gw_config,
        format!(
            "environment = \"prod\"\ncontrol_plane_url = \"http://127.0.0.1:{grpc}\"\ngateway_token = \"{GATEWAY}\"\n\
             pg_addr = \"127.0.0.1:{pg}\"\nspool_dir = \"{}\"\n\n[[upstream]]\nname = \"pg-prod\"\nurl = \"{}\"\n",
            dir.path().join("spool").display(),
            app.upstream_url()
        ),
    )?;
    let gw_log = dir.path().join("gw.log");
    let _gw = spawn_server(
        BIN.as_ref(),
        &["gateway", "--config", gw_config.to_str().context("path")?],
        &otel,
        &gw_log,
    )?;
    wait_port(pg, &gw_log).await?;
    let server = format!("http://127.0.0.1:{http}");
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, POLICY)?;
    let minter = AdminCli {
        bin: BIN.as_ref(),
        server: &server,
        admin_token: ADMIN,
    };
    minter.apply_policy(&policy).await?;
    let alice = minter.mint("alice@example.com", &[], None).await?;
    let bob = minter.mint("bob@example.com", &["dba"], None).await?;

    // One session: a held delete, approved by bob.
    let params =
        ConnParams::new("127.0.0.1", pg, "alice@example.com", "pg-prod").with_password(&alice);
    let (client, conn) = eventually(Duration::from_secs(30), || params.connect())
        .await
        .with_context(|| std::fs::read_to_string(&gw_log).unwrap_or_default())?;
    let held = tokio::spawn(async move {
        let r = client.simple_query("DELETE FROM orders WHERE id = 1").await;
        drop(client);
        r
    });
    let review = eventually(Duration::from_secs(15), || async {
        let list = request("GET", &format!("{server}/api/v1/reviews"), Some(&bob), None)
            .await?
            .json()?;
        list["reviews"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["status"] == "pending"))
            .and_then(|r| r["id"].as_str().map(str::to_owned))
            .context("no pending review yet")
    })
    .await?;
    let approved = request(
        "POST",
        &format!("{server}/api/v1/reviews/{review}/approve"),
        Some(&bob),
        Some(&serde_json::json!({})),
    )
    .await?;
    ensure!(approved.status == 200, "{}", approved.body);
    tokio::time::timeout(Duration::from_secs(20), held).await???;
    // The session span ends when the client leaves.
    tokio::time::timeout(Duration::from_secs(10), conn).await??;

    let spans = eventually(Duration::from_secs(20), || {
        let got = got.clone();
        async move {
            let spans = got.lock().unwrap().clone();
            let session = spans
                .iter()
                .find(|s| s.service == "countersign-gateway" && s.name == "session")
                .context("no gateway session span yet")?;
            let children: Vec<&str> = spans
                .iter()
                .filter(|s| {
                    s.service == "countersign-control-plane"
                        && s.trace == session.trace
                        && s.parent == session.span
                })
                .map(|s| s.name.as_str())
                .collect();
            ensure!(
                children.contains(&"AuthenticateSession") && children.contains(&"OpenReview"),
                "control-plane spans under the session so far: {children:?}"
            );
            Ok(spans)
        }
    })
    .await
    .with_context(|| format!("{:?}", got.lock().unwrap()))?;
    // The uploaded audit batch: the gateway's upload span and the control
    // plane's ingest span share a trace too.
    eventually(Duration::from_secs(20), || {
        let got = got.clone();
        async move {
            let spans = got.lock().unwrap().clone();
            let linked = spans.iter().any(|upload| {
                upload.service == "countersign-gateway"
                    && upload.name == "publish_audit_batch"
                    && spans.iter().any(|s| {
                        s.service == "countersign-control-plane"
                            && s.name == "ingest_audit_batch"
                            && s.trace == upload.trace
                            && s.parent == upload.span
                    })
            });
            ensure!(linked, "no linked audit batch spans yet: {spans:?}");
            Ok(())
        }
    })
    .await?;
    // Spans name methods, never data.
    let all = format!("{spans:?}");
    ensure!(
        !all.contains(&alice) && !all.contains("DELETE FROM"),
        "{all}"
    );
    Ok(())
}
