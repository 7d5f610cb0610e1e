//! `service-account` subcommands (accounts, API keys, workload trust) and
//! `token exchange`, which trades an API key or a pipeline's OIDC token for
//! an access token.

use crate::client::{ServerArgs, check, http, url};
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use countersign_common::parse_duration;
use std::process::ExitCode;

#[derive(Args)]
pub struct AdminArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[arg(long, env = "COUNTERSIGN_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
}

#[derive(Subcommand)]
pub enum ServiceAccountCommand {
    /// Create a service account.
    Create {
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
        /// Group of the account; repeat for several.
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    /// Create, list and revoke a service account's API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Trust a CI issuer's OIDC tokens for a service account.
    Trust {
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
        /// The OIDC issuer, e.g. https://token.actions.githubusercontent.com.
        #[arg(long)]
        issuer: String,
        /// The audience the pipeline requests its token for.
        #[arg(long, default_value = "countersign")]
        audience: String,
        /// A claim the token must carry with exactly this value, `name=value`;
        /// repeat for several (all must match).
        #[arg(long = "claim", value_parser = parse_claim)]
        claims: Vec<(String, String)>,
    },
}

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Create an API key and print it on stdout; it is shown only this once.
    Create {
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List a service account's keys (never the keys themselves).
    List {
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Revoke an API key by id.
    Revoke {
        name: String,
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Args)]
pub struct ExchangeArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// A service-account API key (`csk_…`).
    #[arg(
        long,
        env = "COUNTERSIGN_API_KEY",
        hide_env_values = true,
        conflicts_with_all = ["workload_token", "service_account"],
        required_unless_present = "workload_token"
    )]
    api_key: Option<String>,
    /// The pipeline's OIDC token (a JWT).
    #[arg(
        long,
        env = "COUNTERSIGN_WORKLOAD_TOKEN",
        hide_env_values = true,
        requires = "service_account"
    )]
    workload_token: Option<String>,
    /// The service account the workload token acts as.
    #[arg(long, env = "COUNTERSIGN_SERVICE_ACCOUNT")]
    service_account: Option<String>,
    /// Lifetime of the access token, e.g. 15m (at most 1h).
    #[arg(long, value_parser = parse_duration)]
    ttl: Option<std::time::Duration>,
}

fn parse_claim(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not name=value")),
    }
}

pub async fn run(cmd: ServiceAccountCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ServiceAccountCommand::Create {
            name,
            admin,
            groups,
        } => {
            let resp = http()?
                .post(url(&admin.server, "/api/v1/service-accounts"))
                .bearer_auth(&admin.admin_token)
                .json(&serde_json::json!({"name": name, "groups": groups}))
                .send()
                .await
                .context("contacting the control plane")?;
            let created: serde_json::Value = check(resp).await?.json().await?;
            println!(
                "created service account {}",
                created["email"].as_str().unwrap_or("?")
            );
        }
        ServiceAccountCommand::Key(KeyCommand::Create { name, admin }) => {
            let resp = http()?
                .post(url(&admin.server, &keys_path(&name)))
                .bearer_auth(&admin.admin_token)
                .send()
                .await
                .context("contacting the control plane")?;
            let created: serde_json::Value = check(resp).await?.json().await?;
            let key = created["key"]
                .as_str()
                .context("the response carries no key")?;
            eprintln!(
                "key {} created; it is shown only now",
                created["id"].as_str().unwrap_or("?")
            );
            println!("{key}");
        }
        ServiceAccountCommand::Key(KeyCommand::List { name, admin }) => {
            let resp = http()?
                .get(url(&admin.server, &keys_path(&name)))
                .bearer_auth(&admin.admin_token)
                .send()
                .await
                .context("contacting the control plane")?;
            let list: serde_json::Value = check(resp).await?.json().await?;
            println!("{:<34} {:<27} {:<27} REVOKED", "ID", "CREATED", "LAST USED");
            for k in list["keys"].as_array().into_iter().flatten() {
                let s = |f: &str| k[f].as_str().unwrap_or("-").to_owned();
                println!(
                    "{:<34} {:<27} {:<27} {}",
                    s("id"),
                    s("created_at"),
                    s("last_used_at"),
                    s("revoked_at")
                );
            }
        }
        ServiceAccountCommand::Key(KeyCommand::Revoke { name, id, admin }) => {
            let resp = http()?
                .delete(url(&admin.server, &format!("{}/{id}", keys_path(&name))))
                .bearer_auth(&admin.admin_token)
                .send()
                .await
                .context("contacting the control plane")?;
            check(resp).await?;
            println!("revoked {id}");
        }
        ServiceAccountCommand::Trust {
            name,
            admin,
            issuer,
            audience,
            claims,
        } => {
            let claims: serde_json::Map<String, serde_json::Value> =
                claims.into_iter().map(|(k, v)| (k, v.into())).collect();
            let resp = http()?
                .put(url(
                    &admin.server,
                    &format!("/api/v1/service-accounts/{name}/workload"),
                ))
                .bearer_auth(&admin.admin_token)
                .json(&serde_json::json!({
                    "issuer": issuer,
                    "audience": audience,
                    "claims": claims,
                }))
                .send()
                .await
                .context("contacting the control plane")?;
            check(resp).await?;
            println!("{name} now trusts tokens from {issuer} for audience {audience}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn keys_path(name: &str) -> String {
    format!("/api/v1/service-accounts/{name}/keys")
}

/// `token exchange`: prints the access token on stdout.
pub async fn exchange(a: ExchangeArgs) -> anyhow::Result<ExitCode> {
    let ttl_seconds = a.ttl.map(|d| d.as_secs().max(1));
    let req = match (&a.api_key, &a.workload_token, &a.service_account) {
        (Some(key), None, None) => http()?
            .post(url(&a.server, "/api/v1/auth/token"))
            .bearer_auth(key)
            .json(&serde_json::json!({"ttl_seconds": ttl_seconds})),
        (None, Some(token), Some(account)) => http()?
            .post(url(&a.server, "/api/v1/auth/workload"))
            .json(&serde_json::json!({
                "service_account": account,
                "token": token,
                "ttl_seconds": ttl_seconds,
            })),
        _ => bail!("give --api-key, or --workload-token with --service-account"),
    };
    let resp = req.send().await.context("contacting the control plane")?;
    let issued: serde_json::Value = check(resp).await?.json().await?;
    let token = issued["token"]
        .as_str()
        .context("the response carries no token")?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}
