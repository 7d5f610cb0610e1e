//! `countersign grant`: request time-boxed access, and list, approve, deny or
//! revoke grants.
//!
//! `grant request --wait` waits for the decision and says it in its exit
//! code: 0 approved (active), 3 denied, 4 expired without a decision, 5
//! revoked or already over; 1 for any error.

use crate::client::{check, http, url};
use crate::review::{Auth, decide};
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Subcommand)]
pub enum GrantCommand {
    /// Ask for access to RESOURCE at a level, for a while; others approve.
    Request(RequestArgs),
    /// Grants you may decide (never your own), or with --mine your own requests.
    List {
        #[command(flatten)]
        auth: Auth,
        #[arg(long)]
        mine: bool,
        /// `table` or `jsonl`.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Approve a grant request.
    Approve {
        #[command(flatten)]
        auth: Auth,
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Deny a grant request.
    Deny {
        #[command(flatten)]
        auth: Auth,
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// End an active grant now; its sessions are ended.
    Revoke {
        #[command(flatten)]
        auth: Auth,
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
}

#[derive(Args)]
pub struct RequestArgs {
    #[command(flatten)]
    auth: Auth,
    resource: String,
    /// Access level, e.g. read-only or read-write.
    #[arg(long)]
    level: String,
    /// How long, once approved: 30m, 2h, ...
    #[arg(long = "for")]
    duration: String,
    /// Why you need access (required).
    #[arg(long)]
    reason: String,
    #[arg(long)]
    ticket: Option<String>,
    /// Wait for the decision; the exit code tells it.
    #[arg(long)]
    wait: bool,
}

pub async fn run(cmd: GrantCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        GrantCommand::Request(args) => request(args).await,
        GrantCommand::List { auth, mine, format } => list(auth, mine, &format).await,
        GrantCommand::Approve { auth, id, comment } => {
            decide(auth, "grant", &id, "approve", comment).await
        }
        GrantCommand::Deny { auth, id, comment } => {
            decide(auth, "grant", &id, "deny", comment).await
        }
        GrantCommand::Revoke { auth, id, comment } => {
            decide(auth, "grant", &id, "revoke", comment).await
        }
    }
}

/// The exit code for a grant's final status.
fn exit_for(status: &str) -> ExitCode {
    match status {
        "active" => ExitCode::SUCCESS,
        "denied" => ExitCode::from(3),
        "expired" => ExitCode::from(4),
        _ => ExitCode::from(5),
    }
}

async fn request(a: RequestArgs) -> anyhow::Result<ExitCode> {
    let resp = http()?
        .post(url(&a.auth.server, "/api/v1/grants"))
        .bearer_auth(a.auth.token()?)
        .json(&serde_json::json!({
            "resource": a.resource,
            "level": a.level,
            "duration": a.duration,
            "reason": a.reason,
            "ticket": a.ticket,
        }))
        .send()
        .await
        .context("contacting the control plane")?;
    let grant: serde_json::Value = check(resp).await?.json().await?;
    let id = grant["id"].as_str().unwrap_or_default().to_owned();
    println!("grant {id}: {}", grant["status"].as_str().unwrap_or("?"));
    println!("url={}", grant["url"].as_str().unwrap_or(""));
    std::io::stdout().flush()?;
    if !a.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let spinner = ['|', '/', '-', '\\'];
    let tty = std::io::stderr().is_terminal();
    let mut tick = 0usize;
    loop {
        let resp = http()?
            .get(url(&a.auth.server, &format!("/api/v1/grants/{id}")))
            .bearer_auth(a.auth.token()?)
            .query(&[("wait", "20")])
            .timeout(Duration::from_secs(40))
            .send()
            .await;
        let grant: serde_json::Value = match resp {
            Ok(resp) => check(resp).await?.json().await?,
            Err(e) if e.is_timeout() || e.is_connect() => {
                // A control plane restarting: keep waiting.
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e).context("contacting the control plane"),
        };
        let status = grant["status"].as_str().unwrap_or("?").to_owned();
        if status != "pending" {
            if tty {
                eprint!("\r");
            }
            let until = grant["active_until"].as_str().unwrap_or("");
            match status.as_str() {
                "active" => println!("grant {id}: approved, active until {until}"),
                other => println!("grant {id}: {other}"),
            }
            return Ok(exit_for(&status));
        }
        if tty {
            let approvals = grant["decisions"].as_array().map_or(0, Vec::len);
            eprint!(
                "\r{} waiting for approval ({approvals} of {}) ",
                spinner[tick % spinner.len()],
                grant["approvals_required"]
            );
            tick += 1;
        }
    }
}

async fn list(auth: Auth, mine: bool, format: &str) -> anyhow::Result<ExitCode> {
    if !matches!(format, "table" | "jsonl") {
        bail!("--format must be table or jsonl");
    }
    let resp = http()?
        .get(url(&auth.server, "/api/v1/grants"))
        .bearer_auth(auth.token()?)
        .query(&[("mine", mine.to_string())])
        .send()
        .await
        .context("contacting the control plane")?;
    let body: serde_json::Value = check(resp).await?.json().await?;
    let grants = body["grants"].as_array().cloned().unwrap_or_default();
    if format == "jsonl" {
        for g in &grants {
            println!("{g}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<38} {:<8} {:<28} {:<16} {:<11} {:>8} REASON",
        "ID", "STATUS", "REQUESTER", "RESOURCE", "LEVEL", "MINUTES"
    );
    for g in &grants {
        println!(
            "{:<38} {:<8} {:<28} {:<16} {:<11} {:>8} {}",
            g["id"].as_str().unwrap_or(""),
            g["status"].as_str().unwrap_or(""),
            g["requester"].as_str().unwrap_or(""),
            g["resource"].as_str().unwrap_or(""),
            g["level"].as_str().unwrap_or(""),
            g["duration_secs"].as_u64().unwrap_or(0).div_ceil(60),
            g["reason"].as_str().unwrap_or("").replace('\n', " ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
