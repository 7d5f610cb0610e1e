//! `countersign policy`: apply, test, replay and show policies.

use crate::client::{ServerArgs, check, http, url};
use anyhow::{Context, bail};
use chrono::Utc;
use clap::{Args, Subcommand};
use countersign_common::parse_duration;
use countersign_policy::{Action, Policy, SessionContext, classify, decide};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Upload a policy file as the new active version.
    Apply {
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long, env = "COUNTERSIGN_ADMIN_TOKEN", hide_env_values = true)]
        token: String,
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Print a statement's facts and the policy's decision, locally. Exit code:
    /// 0 allow, 3 deny, 4 review.
    Test(TestArgs),
    /// Run a draft policy over recorded statements; print what it would have denied or held.
    Replay {
        #[command(flatten)]
        server: ServerArgs,
        /// Access token. Default: the one `countersign login` saved for the server.
        #[arg(long, env = "COUNTERSIGN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// How far back, e.g. 24h, 7d.
        #[arg(long, value_parser = parse_duration, default_value = "24h")]
        since: std::time::Duration,
        /// `text` or `json`.
        #[arg(long, default_value = "text")]
        format: String,
    },
    /// Print a stored policy version (default: the active one).
    Show {
        #[command(flatten)]
        server: ServerArgs,
        /// Access token. Default: the one `countersign login` saved for the server.
        #[arg(long, env = "COUNTERSIGN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[arg(long, default_value = "active")]
        version: String,
    },
}

#[derive(Args)]
pub struct TestArgs {
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// The statement(s) to test.
    #[arg(long)]
    sql: String,
    #[arg(long, default_value = "someone@example.com")]
    identity: String,
    #[arg(long = "group")]
    groups: Vec<String>,
    #[arg(long, default_value = "dev")]
    resource: String,
    #[arg(long, default_value = "default")]
    environment: String,
    #[arg(long)]
    access_level: Option<String>,
}

fn read_policy(path: &PathBuf) -> anyhow::Result<(String, Policy)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    match Policy::parse(&text) {
        Ok(p) => Ok((text, p)),
        Err(e) => bail!("{} is not a valid policy:\n{e}", path.display()),
    }
}

pub async fn run(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Apply {
            server,
            token,
            file,
        } => {
            // Validate locally first: the same checks, with the file's line numbers.
            let (text, _) = read_policy(&file)?;
            let resp = http()?
                .post(url(&server, "/api/v1/policies"))
                .bearer_auth(token)
                .json(&serde_json::json!({ "text": text }))
                .send()
                .await
                .context("contacting the control plane")?;
            let v: serde_json::Value = check(resp).await?.json().await?;
            println!("policy version {} is active", v["version"]);
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Test(a) => test(a),
        PolicyCommand::Replay {
            server,
            token,
            file,
            since,
            format,
        } => {
            let (text, _) = read_policy(&file)?;
            let since =
                Utc::now() - chrono::Duration::from_std(since).context("--since is too long")?;
            let resp = http()?
                .post(url(&server, "/api/v1/policies/replay"))
                .bearer_auth(crate::credentials::resolve(&server, &token)?)
                .json(&serde_json::json!({ "text": text, "since": since }))
                .send()
                .await
                .context("contacting the control plane")?;
            let report: serde_json::Value = check(resp).await?.json().await?;
            if format == "json" {
                println!("{report}");
                return Ok(ExitCode::SUCCESS);
            }
            for f in report["findings"].as_array().into_iter().flatten() {
                println!(
                    "{} {:<6} {:<24} {:<28} {:<10} {}",
                    f["at"].as_str().unwrap_or(""),
                    f["would"].as_str().unwrap_or(""),
                    f["rule"].as_str().unwrap_or("-"),
                    f["identity"].as_str().unwrap_or(""),
                    f["resource"].as_str().unwrap_or(""),
                    f["statement"].as_str().unwrap_or("").replace('\n', " ")
                );
            }
            println!(
                "{} statements examined since {}: {} would be denied, {} held for review{}",
                report["examined"],
                since.to_rfc3339(),
                report["would_deny"],
                report["would_review"],
                if report["truncated"] == true {
                    " (list truncated)"
                } else {
                    ""
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Show {
            server,
            token,
            version,
        } => {
            let resp = http()?
                .get(url(&server, &format!("/api/v1/policies/{version}")))
                .bearer_auth(crate::credentials::resolve(&server, &token)?)
                .send()
                .await
                .context("contacting the control plane")?;
            let v: serde_json::Value = check(resp).await?.json().await?;
            println!(
                "# version {} by {} at {}",
                v["version"],
                v["created_by"].as_str().unwrap_or("?"),
                v["created_at"].as_str().unwrap_or("?")
            );
            print!("{}", v["text"].as_str().unwrap_or(""));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn test(a: TestArgs) -> anyhow::Result<ExitCode> {
    let (_, policy) = read_policy(&a.file)?;
    let facts = classify(&a.sql);
    let ctx = SessionContext {
        identity: &a.identity,
        groups: &a.groups,
        resource: &a.resource,
        environment: &a.environment,
        access_level: a.access_level.as_deref(),
    };
    let d = decide(&policy, &ctx, &facts, &a.sql);
    println!("facts:");
    println!("{}", serde_json::to_string_pretty(&facts)?);
    println!("kinds: {}", facts.kind_names().join(", "));
    println!("decision: {}", d.action.as_str());
    if let Some(rule) = &d.rule {
        println!("rule: {rule}");
    }
    if let Some(message) = &d.message {
        println!("message: {message}");
    }
    if d.action == Action::Review {
        println!("approvals: {} from {}", d.approvals, d.approvers.join(", "));
    }
    if !d.matched.is_empty() {
        println!("matched: {}", d.matched.join(", "));
    }
    Ok(match d.action {
        Action::Allow => ExitCode::SUCCESS,
        Action::Deny => ExitCode::from(3),
        Action::Review => ExitCode::from(4),
    })
}
