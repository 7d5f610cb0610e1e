//! `countersign gateway enroll-token create`, `gateway list` and `gateway ca`:
//! the admin side of gateway enrollment (see docs/enrollment.md).

use crate::client::{ServerArgs, check, http, url};
use anyhow::Context;
use clap::{Args, Subcommand};
use countersign_common::parse_duration;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
pub struct GatewayAdmin {
    #[command(flatten)]
    server: ServerArgs,
    /// Bootstrap admin token or an admin's access token.
    #[arg(
        long = "admin-token",
        alias = "token",
        env = "COUNTERSIGN_ADMIN_TOKEN",
        hide_env_values = true
    )]
    admin_token: String,
}

#[derive(Subcommand)]
pub enum GatewayCommand {
    /// One-time tokens that enroll a gateway into an environment.
    #[command(subcommand)]
    EnrollToken(EnrollTokenCommand),
    /// List enrolled gateways.
    List {
        #[command(flatten)]
        admin: GatewayAdmin,
    },
    /// Print the gateway CA certificate (PEM), for gateways' `control_plane_ca`.
    Ca {
        #[command(flatten)]
        admin: GatewayAdmin,
    },
}

#[derive(Subcommand)]
pub enum EnrollTokenCommand {
    /// Create a token and print it on stdout; it is shown only this once.
    Create {
        /// The environment the enrolled gateway serves.
        #[arg(long)]
        environment: String,
        /// How long the token stays usable, e.g. 1h (at most 7d).
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        ttl: Duration,
        #[command(flatten)]
        admin: GatewayAdmin,
    },
}

pub async fn run(cmd: GatewayCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        GatewayCommand::EnrollToken(EnrollTokenCommand::Create {
            environment,
            ttl,
            admin,
        }) => {
            let resp = http()?
                .post(url(&admin.server, "/api/v1/gateways/enrollment-tokens"))
                .bearer_auth(&admin.admin_token)
                .json(&serde_json::json!({
                    "environment": environment,
                    "ttl_seconds": ttl.as_secs().max(1),
                }))
                .send()
                .await
                .context("contacting the control plane")?;
            let created: serde_json::Value = check(resp).await?.json().await?;
            let token = created["token"]
                .as_str()
                .context("the response carries no token")?;
            eprintln!(
                "enrollment token for environment {} created, usable once until {}; it is shown only now",
                created["environment"].as_str().unwrap_or("?"),
                created["expires_at"].as_str().unwrap_or("?")
            );
            println!("{token}");
        }
        GatewayCommand::Ca { admin } => {
            let resp = http()?
                .get(url(&admin.server, "/api/v1/gateways/ca"))
                .bearer_auth(&admin.admin_token)
                .send()
                .await
                .context("contacting the control plane")?;
            let ca: serde_json::Value = check(resp).await?.json().await?;
            print!(
                "{}",
                ca["ca_pem"]
                    .as_str()
                    .context("the response carries no certificate")?
            );
        }
        GatewayCommand::List { admin } => {
            let resp = http()?
                .get(url(&admin.server, "/api/v1/gateways"))
                .bearer_auth(&admin.admin_token)
                .send()
                .await
                .context("contacting the control plane")?;
            let list: serde_json::Value = check(resp).await?.json().await?;
            println!(
                "{:<24} {:<12} {:<27} {:<27} VERSION",
                "ID", "ENVIRONMENT", "CERT NOT AFTER", "LAST SEEN"
            );
            for g in list["gateways"].as_array().into_iter().flatten() {
                let s = |f: &str| g[f].as_str().unwrap_or("-").to_owned();
                println!(
                    "{:<24} {:<12} {:<27} {:<27} {}",
                    s("id"),
                    s("environment"),
                    s("not_after"),
                    s("last_seen"),
                    s("version")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
