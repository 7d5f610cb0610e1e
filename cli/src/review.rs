//! `countersign review`: list, approve and deny statements held for review.

use crate::client::{ServerArgs, check, http, url};
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use std::process::ExitCode;

#[derive(Args)]
pub struct Auth {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Your own access token: approvals are made by a person. Default: the
    /// token `countersign login` saved for the server.
    #[arg(long, env = "COUNTERSIGN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl Auth {
    /// `--token`, or the token saved for `--server` by `countersign login`.
    pub fn token(&self) -> anyhow::Result<String> {
        crate::credentials::resolve(&self.server, &self.token)
    }
}

#[derive(Subcommand)]
pub enum ReviewCommand {
    /// Reviews you may decide (never your own), or with --mine your own requests.
    List {
        #[command(flatten)]
        auth: Auth,
        #[arg(long)]
        mine: bool,
        /// `table` or `jsonl`.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Approve a held statement.
    Approve {
        #[command(flatten)]
        auth: Auth,
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Deny a held statement.
    Deny {
        #[command(flatten)]
        auth: Auth,
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
}

pub async fn run(cmd: ReviewCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ReviewCommand::List { auth, mine, format } => {
            if !matches!(format.as_str(), "table" | "jsonl") {
                bail!("--format must be table or jsonl");
            }
            let resp = http()?
                .get(url(&auth.server, "/api/v1/reviews"))
                .bearer_auth(auth.token()?)
                .query(&[("mine", mine.to_string())])
                .send()
                .await
                .context("contacting the control plane")?;
            let body: serde_json::Value = check(resp).await?.json().await?;
            let reviews = body["reviews"].as_array().cloned().unwrap_or_default();
            if format == "jsonl" {
                for r in &reviews {
                    println!("{r}");
                }
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<38} {:<9} {:<28} {:<22} STATEMENT",
                "ID", "STATUS", "REQUESTER", "RULE"
            );
            for r in &reviews {
                println!(
                    "{:<38} {:<9} {:<28} {:<22} {}",
                    r["id"].as_str().unwrap_or(""),
                    r["status"].as_str().unwrap_or(""),
                    r["requester"].as_str().unwrap_or(""),
                    r["rule"].as_str().unwrap_or(""),
                    r["statement"].as_str().unwrap_or("").replace('\n', " ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ReviewCommand::Approve { auth, id, comment } => {
            decide(auth, "review", &id, "approve", comment).await
        }
        ReviewCommand::Deny { auth, id, comment } => {
            decide(auth, "review", &id, "deny", comment).await
        }
    }
}

/// Posts `verb` (`approve`, `deny`, `revoke`) with an optional comment to
/// the `noun` (`review` or `grant`) `id`, as the caller, and prints its status.
pub(crate) async fn decide(
    auth: Auth,
    noun: &str,
    id: &str,
    verb: &str,
    comment: Option<String>,
) -> anyhow::Result<ExitCode> {
    let resp = http()?
        .post(url(&auth.server, &format!("/api/v1/{noun}s/{id}/{verb}")))
        .bearer_auth(auth.token()?)
        .json(&serde_json::json!({ "comment": comment }))
        .send()
        .await
        .context("contacting the control plane")?;
    let body: serde_json::Value = check(resp).await?.json().await?;
    println!("{noun} {id}: {}", body["status"].as_str().unwrap_or("?"));
    Ok(ExitCode::SUCCESS)
}
