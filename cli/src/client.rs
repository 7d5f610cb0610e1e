//! Client subcommands: `token`, `audit` and `connect`.

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use countersign_common::parse_duration;
use std::process::ExitCode;

#[derive(Args)]
pub struct ServerArgs {
    /// Control-plane HTTP URL.
    #[arg(long, env = "COUNTERSIGN_SERVER")]
    pub server: String,
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Mint an access token and print it on stdout.
    Create {
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long, env = "COUNTERSIGN_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: String,
        /// The identity (email) the token is for.
        #[arg(long)]
        identity: String,
        /// Extra group for the token; repeat for several.
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Lifetime, e.g. 15m, 1h.
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<std::time::Duration>,
    },
    /// Revoke a token, given its id or the token itself.
    Revoke {
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long, env = "COUNTERSIGN_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: String,
        token: String,
    },
    /// Trade a service-account API key or a pipeline's OIDC token for an
    /// access token, printed on stdout.
    Exchange(crate::service_account::ExchangeArgs),
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Search audit events.
    Search(AuditSearchArgs),
    /// Check the audit chain and checkpoints; exit 0 when intact, 3 when not.
    Verify(crate::audit::VerifyArgs),
    /// Stream audit events as JSONL.
    Export(crate::audit::ExportArgs),
    /// Show one session's events in order, with totals.
    Timeline(crate::audit::TimelineArgs),
}

#[derive(Args)]
pub struct AuditSearchArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Access token. Default: the one `countersign login` saved for the server.
    #[arg(long, env = "COUNTERSIGN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[arg(long)]
    identity: Option<String>,
    #[arg(long)]
    resource: Option<String>,
    /// `session_started`, `statement` or `session_ended`.
    #[arg(long)]
    event: Option<String>,
    /// Substring of the statement text.
    #[arg(long)]
    text: Option<String>,
    /// How far back, e.g. 1h, 7d.
    #[arg(long, value_parser = parse_duration)]
    since: Option<std::time::Duration>,
    #[arg(long, default_value_t = 100)]
    limit: u64,
    /// `table` or `jsonl`.
    #[arg(long, default_value = "table")]
    format: String,
}

#[derive(Args)]
pub struct ConnectArgs {
    /// The resource to connect to (optionally `resource/dbname`).
    resource: String,
    /// Gateway address, HOST:PORT.
    #[arg(long, env = "COUNTERSIGN_GATEWAY")]
    gateway: String,
    #[arg(long, env = "COUNTERSIGN_TOKEN", hide_env_values = true)]
    token: String,
    /// Your identity (the token's email).
    #[arg(long, env = "COUNTERSIGN_USER")]
    user: String,
    /// libpq sslmode for the client.
    #[arg(long, env = "COUNTERSIGN_SSLMODE", default_value = "require")]
    sslmode: String,
    /// The client and its arguments, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub fn http() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .context("building the HTTP client")
}

pub fn url(server: &ServerArgs, path: &str) -> String {
    format!("{}{}", server.server.trim_end_matches('/'), path)
}

/// Turns a non-2xx response into an error carrying the server's message.
pub async fn check(resp: reqwest::Response) -> anyhow::Result<reqwest::Response> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let msg = body["error"].as_str().unwrap_or("no details");
    bail!("{status}: {msg}")
}

pub async fn token(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Create {
            server,
            admin_token,
            identity,
            groups,
            ttl,
        } => {
            let body = serde_json::json!({
                "identity": identity,
                "groups": groups,
                "ttl_seconds": ttl.map(|d| d.as_secs().max(1)),
            });
            let resp = http()?
                .post(url(&server, "/api/v1/tokens"))
                .bearer_auth(admin_token)
                .json(&body)
                .send()
                .await
                .context("contacting the control plane")?;
            let issued: serde_json::Value = check(resp).await?.json().await?;
            let token = issued["token"]
                .as_str()
                .context("the response carries no token")?;
            println!("{token}");
        }
        TokenCommand::Revoke {
            server,
            admin_token,
            token,
        } => {
            let resp = http()?
                .delete(url(&server, &format!("/api/v1/tokens/{token}")))
                .bearer_auth(admin_token)
                .send()
                .await
                .context("contacting the control plane")?;
            let record: serde_json::Value = check(resp).await?.json().await?;
            println!("revoked {}", record["id"].as_str().unwrap_or("?"));
        }
        TokenCommand::Exchange(args) => return crate::service_account::exchange(args).await,
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn audit(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    let a = match cmd {
        AuditCommand::Search(a) => a,
        AuditCommand::Verify(a) => return crate::audit::verify(a).await,
        AuditCommand::Export(a) => return crate::audit::export(a).await,
        AuditCommand::Timeline(a) => return crate::audit::timeline(a).await,
    };
    if !matches!(a.format.as_str(), "table" | "jsonl") {
        bail!("--format must be table or jsonl");
    }
    let query = audit_query(
        vec![("limit", a.limit.to_string())],
        [
            ("identity", &a.identity),
            ("resource", &a.resource),
            ("event", &a.event),
            ("text", &a.text),
        ],
        a.since,
    )?;
    let resp = http()?
        .get(url(&a.server, "/api/v1/audit"))
        .bearer_auth(crate::credentials::resolve(&a.server, &a.token)?)
        .query(&query)
        .send()
        .await
        .context("contacting the control plane")?;
    let page: serde_json::Value = check(resp).await?.json().await?;
    let events = page["events"].as_array().cloned().unwrap_or_default();
    if a.format == "jsonl" {
        for e in &events {
            println!("{e}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<25} {:<28} {:<12} {:<16} {:<8} STATEMENT",
        "AT", "IDENTITY", "RESOURCE", "KINDS", "DECISION"
    );
    for e in &events {
        let at = e["at"]
            .as_str()
            .and_then(|s| s.parse::<DateTime<Utc>>().ok())
            .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
            .unwrap_or_default();
        let kinds: Vec<&str> = e["kinds"]
            .as_array()
            .map(|k| k.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        let statement = match e["event"].as_str() {
            Some("statement") => e["statement"].as_str().unwrap_or("").replace('\n', " "),
            other => format!("[{}]", other.unwrap_or("?")),
        };
        println!(
            "{:<25} {:<28} {:<12} {:<16} {:<8} {}",
            at,
            e["identity"].as_str().unwrap_or(""),
            e["resource"].as_str().unwrap_or(""),
            kinds.join(","),
            e["decision"].as_str().unwrap_or("-"),
            statement.chars().take(120).collect::<String>()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn connect(a: ConnectArgs) -> anyhow::Result<ExitCode> {
    let (host, port) = a
        .gateway
        .rsplit_once(':')
        .with_context(|| format!("--gateway {:?} must be HOST:PORT", a.gateway))?;
    port.parse::<u16>()
        .with_context(|| format!("--gateway port {port:?} is not a number"))?;
    let (program, args) = a
        .command
        .split_first()
        .context("name the client to run after --")?;
    let status = tokio::process::Command::new(program)
        .args(args)
        .env("PGHOST", host.trim_start_matches('[').trim_end_matches(']'))
        .env("PGPORT", port)
        .env("PGUSER", &a.user)
        .env("PGPASSWORD", &a.token)
        .env("PGDATABASE", &a.resource)
        .env("PGSSLMODE", &a.sslmode)
        .status()
        .await
        .with_context(|| format!("running {program}"))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

/// Query parameters of an audit request: `base`, the filters that are set, and `since`
/// (a duration back from now) as an RFC 3339 time.
pub(crate) fn audit_query<'a, const N: usize>(
    mut query: Vec<(&'a str, String)>,
    filters: [(&'a str, &Option<String>); N],
    since: Option<std::time::Duration>,
) -> anyhow::Result<Vec<(&'a str, String)>> {
    for (k, v) in filters {
        if let Some(v) = v {
            query.push((k, v.clone()));
        }
    }
    if let Some(since) = since {
        let since = chrono::Duration::from_std(since).context("--since is too long")?;
        query.push(("since", (Utc::now() - since).to_rfc3339()));
    }
    Ok(query)
}
