//! `countersign`: the one binary. It runs each part (`dev`, `control-plane`,
//! `gateway`) and acts as the client (`token`, `audit`, `connect`).
//!
//! This crate only parses arguments and config, builds the services and runs
//! them; the behaviour lives in the library crates.

mod audit;
mod binding;
mod client;
mod config;
mod credentials;
mod dev;
mod gateway_admin;
mod grant;
mod login;
mod policy;
mod review;
mod serve;
mod service_account;
mod telemetry;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "countersign",
    version,
    about = "Identity-aware access gateway with segregation of duties"
)]
struct Cli {
    /// Log format on stderr: `text` or `json`.
    #[arg(
        long,
        global = true,
        env = "COUNTERSIGN_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run control plane and gateway in one process on SQLite, with no config.
    Dev(dev::DevArgs),
    /// Run a control-plane replica (PostgreSQL store).
    ControlPlane(serve::ConfigArg),
    /// Run a gateway for one environment (`--config`), or manage gateway
    /// enrollment (`enroll-token create`, `list`).
    Gateway(GatewayArgs),
    /// Mint and revoke access tokens.
    #[command(subcommand)]
    Token(client::TokenCommand),
    /// Search, verify and export the audit trail.
    #[command(subcommand)]
    Audit(client::AuditCommand),
    /// Sign in through the control plane's identity provider and save an access token.
    Login(login::LoginArgs),
    /// Run a database client through the gateway with your token.
    Connect(client::ConnectArgs),
    /// Service accounts for pipelines: API keys and workload (CI OIDC) trust.
    #[command(subcommand)]
    ServiceAccount(service_account::ServiceAccountCommand),
    /// Request time-boxed access; list, approve, deny and revoke grants.
    #[command(subcommand)]
    Grant(grant::GrantCommand),
    /// List, approve and deny statements held for review.
    #[command(subcommand)]
    Review(review::ReviewCommand),
    /// Apply, test and replay guardrail policies.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Add, list and remove role bindings.
    #[command(subcommand)]
    Binding(binding::BindingCommand),
    /// Config file tools.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct GatewayArgs {
    #[command(subcommand)]
    command: Option<gateway_admin::GatewayCommand>,
    /// TOML config file of the gateway to run.
    #[arg(long, env = "COUNTERSIGN_CONFIG")]
    config: Option<std::path::PathBuf>,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the JSON schema of a config file (`control-plane` or `gateway`); the same as
    /// deploy/schema/NAME.schema.json.
    Schema { which: config::ConfigKind },
    /// Load a config file (`control-plane` or `gateway`) as the process would, with the
    /// COUNTERSIGN_* environment overrides, and report every error in it at once. Exit 0
    /// when it is valid, 2 when it is not.
    Check {
        which: config::ConfigKind,
        file: std::path::PathBuf,
        /// Do not check that the files it names (certificates, keys, CA) exist: for a
        /// config checked away from the host that runs it.
        #[arg(long)]
        skip_files: bool,
    },
}

/// The OpenTelemetry service name of a serving command; `None` for client
/// commands, which are never traced.
fn traced_service(command: &Command) -> Option<&'static str> {
    match command {
        Command::Dev(_) => Some("countersign-dev"),
        Command::ControlPlane(_) => Some("countersign-control-plane"),
        Command::Gateway(GatewayArgs {
            command: None,
            config: Some(_),
        }) => Some("countersign-gateway"),
        _ => None,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One TLS provider everywhere (the trace exporter's client needs it too).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let telemetry = match telemetry::init(&cli.log_format, traced_service(&cli.command)) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Dev(args) => dev::run(args).await,
            Command::ControlPlane(args) => serve::control_plane(args).await,
            Command::Gateway(GatewayArgs {
                command: Some(cmd), ..
            }) => gateway_admin::run(cmd).await,
            Command::Gateway(GatewayArgs {
                command: None,
                config: Some(config),
            }) => serve::gateway(serve::ConfigArg { config }).await,
            Command::Gateway(GatewayArgs {
                command: None,
                config: None,
            }) => anyhow::bail!(
                "give --config FILE to run a gateway, or a subcommand (see `countersign gateway --help`)"
            ),
            Command::Token(cmd) => client::token(cmd).await,
            Command::Audit(cmd) => client::audit(cmd).await,
            Command::Connect(args) => client::connect(args).await,
            Command::Login(args) => login::run(args).await,
            Command::ServiceAccount(cmd) => service_account::run(cmd).await,
            Command::Policy(cmd) => policy::run(cmd).await,
            Command::Review(cmd) => review::run(cmd).await,
            Command::Grant(cmd) => grant::run(cmd).await,
            Command::Binding(cmd) => binding::run(cmd).await,
            Command::Config(ConfigCommand::Schema { which }) => {
                print!("{}", config::schema(which)?);
                Ok(ExitCode::SUCCESS)
            }
            Command::Config(ConfigCommand::Check {
                which,
                file,
                skip_files,
            }) => Ok(config::check(which, &file, !skip_files)),
        }
    });
    // Stop the runtime's tasks first: the trace flush must run outside it.
    drop(runtime);
    telemetry.shutdown();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutting down");
}
