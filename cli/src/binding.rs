//! `countersign binding`: add, list and remove role bindings.

use crate::client::{ServerArgs, check, http, url};
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use std::process::ExitCode;

#[derive(Args)]
pub struct Auth {
    #[command(flatten)]
    server: ServerArgs,
    /// The bootstrap admin token, or the access token of an admin. Default:
    /// the token `countersign login` saved for the server.
    #[arg(long, env = "COUNTERSIGN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
pub enum BindingCommand {
    /// Bind a role to a group or user, optionally on some resources and environments.
    Add {
        #[command(flatten)]
        auth: Auth,
        /// requester, approver, admin or auditor.
        #[arg(long)]
        role: String,
        /// `group:NAME` or `user:EMAIL`.
        #[arg(long)]
        member: String,
        /// Resource glob (`*`, `?`); repeat for several. Default: any resource.
        #[arg(long = "resource")]
        resources: Vec<String>,
        /// Environment glob; repeat for several. Default: any environment.
        #[arg(long = "environment")]
        environments: Vec<String>,
    },
    /// List every binding.
    List {
        #[command(flatten)]
        auth: Auth,
        /// `table` or `jsonl`.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Remove a binding by id.
    Remove {
        #[command(flatten)]
        auth: Auth,
        id: String,
    },
}

pub async fn run(cmd: BindingCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BindingCommand::Add {
            auth,
            role,
            member,
            resources,
            environments,
        } => {
            let resp = http()?
                .post(url(&auth.server, "/api/v1/bindings"))
                .bearer_auth(crate::credentials::resolve(&auth.server, &auth.token)?)
                .json(&serde_json::json!({
                    "role": role,
                    "member": member,
                    "resources": resources,
                    "environments": environments,
                }))
                .send()
                .await
                .context("contacting the control plane")?;
            let b: serde_json::Value = check(resp).await?.json().await?;
            println!("{}", b["id"].as_str().unwrap_or(""));
            Ok(ExitCode::SUCCESS)
        }
        BindingCommand::List { auth, format } => {
            if !matches!(format.as_str(), "table" | "jsonl") {
                bail!("--format must be table or jsonl");
            }
            let resp = http()?
                .get(url(&auth.server, "/api/v1/bindings"))
                .bearer_auth(crate::credentials::resolve(&auth.server, &auth.token)?)
                .send()
                .await
                .context("contacting the control plane")?;
            let body: serde_json::Value = check(resp).await?.json().await?;
            let bindings = body["bindings"].as_array().cloned().unwrap_or_default();
            if format == "jsonl" {
                for b in &bindings {
                    println!("{b}");
                }
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<38} {:<10} {:<32} {:<20} {:<20} CREATED BY",
                "ID", "ROLE", "MEMBER", "RESOURCES", "ENVIRONMENTS"
            );
            for b in &bindings {
                println!(
                    "{:<38} {:<10} {:<32} {:<20} {:<20} {}",
                    b["id"].as_str().unwrap_or(""),
                    b["role"].as_str().unwrap_or(""),
                    b["member"].as_str().unwrap_or(""),
                    globs(&b["resources"]),
                    globs(&b["environments"]),
                    b["created_by"].as_str().unwrap_or(""),
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        BindingCommand::Remove { auth, id } => {
            let resp = http()?
                .delete(url(&auth.server, &format!("/api/v1/bindings/{id}")))
                .bearer_auth(crate::credentials::resolve(&auth.server, &auth.token)?)
                .send()
                .await
                .context("contacting the control plane")?;
            check(resp).await?;
            println!("removed binding {id}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A glob list for the table: comma-separated, `*` when empty (any).
fn globs(v: &serde_json::Value) -> String {
    let list: Vec<&str> = v
        .as_array()
        .map(|a| a.iter().filter_map(|g| g.as_str()).collect())
        .unwrap_or_default();
    if list.is_empty() {
        "*".to_owned()
    } else {
        list.join(",")
    }
}
