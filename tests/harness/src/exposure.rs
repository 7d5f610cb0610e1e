//! Checks that a client session cannot see given secrets (for example the upstream
//! password the gateway logs in with).
//!
//! This probes the places a careless proxy could leak a secret to: ParameterStatus,
//! `SHOW ALL`, catalogs, `\conninfo` and error messages. It cannot prove absence in
//! places it does not look.

use anyhow::{Context, Result, ensure};
use tokio_postgres::NoTls;

use crate::conn::ConnParams;
use crate::ensure_no_secret;
use crate::process::Psql;

/// Runs a psql session and a tokio-postgres session with `params` and fails if any of
/// `secrets` appears in what they receive. The role must not be a superuser (the session
/// expects `pg_authid` to be unreadable).
pub async fn ensure_session_hides(params: &ConnParams, secrets: &[&str]) -> Result<()> {
    let out = Psql::new(params)
        .on_error_stop(false)
        .command("SHOW ALL")
        .command("SELECT current_setting('password_encryption'), current_user, session_user")
        .command("SELECT * FROM pg_stat_activity")
        .command("SELECT * FROM pg_roles")
        .command("SELECT rolname, rolpassword FROM pg_authid")
        .command("SELECT usename, passwd FROM pg_shadow")
        .command("SELECT 1 / 0")
        .command("\\conninfo")
        .run()
        .await?;
    ensure!(
        out.stdout.contains("password_encryption|scram-sha-256|"),
        "SHOW ALL did not run: {out:?}"
    );
    ensure!(out.stderr.contains("permission denied"), "{out:?}");
    ensure_no_secret(&out.combined(), secrets, "psql session")?;

    let (client, connection) = params.tokio_config().connect(NoTls).await?;
    let names = [
        "application_name",
        "session_authorization",
        "server_version",
        "client_encoding",
        "DateStyle",
        "TimeZone",
        "is_superuser",
    ];
    let reported: Vec<String> = names
        .iter()
        .map(|n| format!("{n}={:?}", connection.parameter(n)))
        .collect();
    ensure_no_secret(&reported.join("\n"), secrets, "ParameterStatus")?;
    tokio::spawn(connection);
    let rows = client.query("SHOW ALL", &[]).await?;
    ensure!(rows.len() > 100, "SHOW ALL returned {} rows", rows.len());
    let settings: Vec<String> = rows
        .iter()
        .map(|r| format!("{}={}", r.get::<_, &str>(0), r.get::<_, &str>(1)))
        .collect();
    ensure_no_secret(&settings.join("\n"), secrets, "SHOW ALL via tokio-postgres")?;
    let err = client
        .query("SELECT rolpassword FROM pg_authid", &[])
        .await
        .err()
        .context("pg_authid is readable")?;
    ensure_no_secret(&format!("{err:?}"), secrets, "error response")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::PrivateCluster;

    #[tokio::test]
    async fn passes_for_a_clean_session_and_catches_a_leak() {
        let cluster = PrivateCluster::start().unwrap();
        let params = cluster
            .params("scram_user")
            .with_password(cluster.scram_password());
        ensure_session_hides(&params, &cluster.passwords())
            .await
            .unwrap();
        // The role name is visible in current_user, so treating it as a secret must fail.
        assert!(
            ensure_session_hides(&params, &["scram_user"])
                .await
                .is_err()
        );
    }
}
