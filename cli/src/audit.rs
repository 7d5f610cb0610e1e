//! `countersign audit verify|export|timeline`.

use crate::client::{ServerArgs, check, url};
use anyhow::Context;
use clap::Args;
use countersign_common::parse_duration;
use std::io::Write;
use std::process::ExitCode;

/// Exit code when the log is not intact: "the answer is no".
const TAMPERED: u8 = 3;

#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Access token. Default: the one `countersign login` saved for the server.
    #[arg(long, env = "COUNTERSIGN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the whole report as JSON instead of one line per finding.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Access token. Default: the one `countersign login` saved for the server.
    #[arg(long, env = "COUNTERSIGN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[arg(long)]
    identity: Option<String>,
    #[arg(long)]
    resource: Option<String>,
    #[arg(long)]
    session_id: Option<String>,
    /// `session_started`, `statement`, `session_ended`, `review`, `grant` or `auth`.
    #[arg(long)]
    event: Option<String>,
    /// Substring of the statement text, case-insensitive.
    #[arg(long)]
    text: Option<String>,
    /// `allow`, `deny` or `review`.
    #[arg(long)]
    decision: Option<String>,
    /// A statement kind: `select`, `delete`, `ddl`, ...
    #[arg(long)]
    kind: Option<String>,
    /// How far back, e.g. 1h, 7d.
    #[arg(long, value_parser = parse_duration)]
    since: Option<std::time::Duration>,
    /// `jsonl` (one JSON event per line) or `csv` (a header row, then one row per event).
    #[arg(long, default_value = "jsonl", value_parser = ["jsonl", "csv"])]
    format: String,
    /// Write here instead of stdout.
    #[arg(long)]
    output: Option<std::path::PathBuf>,
}

#[derive(Args)]
pub struct TimelineArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Access token. Default: the one `countersign login` saved for the server.
    #[arg(long, env = "COUNTERSIGN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The session id.
    session: String,
}

/// A client without an overall timeout: verify and export take as long as the log is big.
fn long_http() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()
        .context("building the HTTP client")
}

/// Exit 0 when the log is intact, 3 when anything was found.
pub async fn verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let resp = long_http()?
        .get(url(&a.server, "/api/v1/audit/verify"))
        .bearer_auth(crate::credentials::resolve(&a.server, &a.token)?)
        .send()
        .await
        .context("contacting the control plane")?;
    let report: serde_json::Value = check(resp).await?.json().await?;
    let intact = report["intact"].as_bool() == Some(true);
    if a.json {
        println!("{report}");
    } else {
        for f in report["findings"].as_array().into_iter().flatten() {
            let place = match (f["session_id"].as_str(), f["seq"].as_i64()) {
                (Some(s), Some(q)) => format!("session {s} seq {q}"),
                (Some(s), None) => format!("session {s}"),
                _ => match f["checkpoint"].as_i64() {
                    Some(n) => format!("checkpoint {n}"),
                    None => "log".to_owned(),
                },
            };
            println!(
                "{}: {place}: {}",
                f["kind"].as_str().unwrap_or("?"),
                f["detail"].as_str().unwrap_or("")
            );
        }
        let shown = report["findings"].as_array().map_or(0, Vec::len) as u64;
        let total = report["finding_count"].as_u64().unwrap_or(shown);
        if total > shown {
            println!("… and {} more findings", total - shown);
        }
        println!(
            "{}: {} events in {} sessions, {} checkpoints checked",
            if intact { "intact" } else { "TAMPERED" },
            report["events_checked"],
            report["sessions_checked"],
            report["checkpoints_checked"],
        );
    }
    Ok(if intact {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(TAMPERED)
    })
}

/// Streams JSONL or CSV from the server to stdout or `--output`.
pub async fn export(a: ExportArgs) -> anyhow::Result<ExitCode> {
    let query = crate::client::audit_query(
        vec![("format", a.format.clone())],
        [
            ("identity", &a.identity),
            ("resource", &a.resource),
            ("session_id", &a.session_id),
            ("event", &a.event),
            ("text", &a.text),
            ("decision", &a.decision),
            ("kind", &a.kind),
        ],
        a.since,
    )?;
    let mut resp = check(
        long_http()?
            .get(url(&a.server, "/api/v1/audit/export"))
            .bearer_auth(crate::credentials::resolve(&a.server, &a.token)?)
            .query(&query)
            .send()
            .await
            .context("contacting the control plane")?,
    )
    .await?;
    let mut out: Box<dyn Write> = match &a.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    while let Some(chunk) = resp.chunk().await.context("reading the export")? {
        out.write_all(&chunk)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Prints a session's timeline as JSON.
pub async fn timeline(a: TimelineArgs) -> anyhow::Result<ExitCode> {
    let resp = long_http()?
        .get(url(
            &a.server,
            &format!("/api/v1/sessions/{}/timeline", a.session),
        ))
        .bearer_auth(crate::credentials::resolve(&a.server, &a.token)?)
        .send()
        .await
        .context("contacting the control plane")?;
    let t: serde_json::Value = check(resp).await?.json().await?;
    println!("{}", serde_json::to_string_pretty(&t)?);
    Ok(ExitCode::SUCCESS)
}
