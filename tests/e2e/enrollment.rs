//! Gateway enrollment and mutual TLS end to end: `countersign control-plane`
//! with `[grpc_tls]` on a PostgreSQL store, and `countersign gateway`
//! processes that enroll with one-time tokens from the CLI, serve psql, stay
//! inside the environment their certificate names, and renew a 6-second
//! certificate while they keep serving.

#![cfg(test)]

use anyhow::{Context, Result, bail};
use countersign_testkit::{
    AdminCli, AuditQuery, ConnParams, Psql, TestDb, cli_stdout, ensure_services, eventually,
    free_port, spawn_server, wait_port,
};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::Child;

const BIN: &str = env!("CARGO_BIN_EXE_countersign");
const ADMIN: &str = "enroll-admin-token-0123456789abcdef01";
const ALICE: &str = "alice@example.com";

struct Gateway {
    config: PathBuf,
    state_dir: PathBuf,
    log: PathBuf,
    pg: u16,
}

/// Writes a gateway config using mutual TLS; `upstreams` are (name, url).
fn gateway_config(
    dir: &Path,
    name: &str,
    environment: &str,
    grpc: u16,
    ca: &Path,
    upstreams: &[(&str, String)],
) -> Result<Gateway> {
    let pg = free_port()?;
    let state_dir = dir.join(format!("{name}-state"));
    let mut text = format!(
        "gateway_id = \"{name}\"\nenvironment = \"{environment}\"\n\
         control_plane_url = \"https://127.0.0.1:{grpc}\"\ncontrol_plane_ca = \"{}\"\n\
         state_dir = \"{}\"\npg_addr = \"127.0.0.1:{pg}\"\nspool_dir = \"{}\"\n",
        ca.display(),
        state_dir.display(),
        dir.join(format!("{name}-spool")).display(),
    );
    for (resource, url) in upstreams {
        text.push_str(&format!(
            "\n[[upstream]]\nname = \"{resource}\"\nurl = \"{url}\"\n"
        ));
    }
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, text)?;
    Ok(Gateway {
        config,
        state_dir,
        log: dir.join(format!("{name}.log")),
        pg,
    })
}

impl Gateway {
    fn start(&self, enrollment_token: Option<&str>) -> Result<Child> {
        let env: Vec<(&str, &str)> = enrollment_token
            .map(|t| ("COUNTERSIGN_ENROLLMENT_TOKEN", t))
            .into_iter()
            .collect();
        self.start_with(&env)
    }

    fn start_with(&self, env: &[(&str, &str)]) -> Result<Child> {
        spawn_server(
            BIN.as_ref(),
            &["gateway", "--config", self.config.to_str().context("path")?],
            env,
            &self.log,
        )
    }

    fn conn(&self, token: &str, resource: &str) -> ConnParams {
        ConnParams::new("127.0.0.1", self.pg, ALICE, resource).with_password(token)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Runs `sql` through `conn` until the gateway has its first config.
async fn query(conn: &ConnParams, sql: &str) -> Result<String> {
    eventually(Duration::from_secs(30), || {
        let conn = conn.clone();
        let sql = sql.to_owned();
        async move { Psql::new(&conn).command(&sql).output().await }
    })
    .await
}

#[tokio::test]
async fn enrolled_gateways_stay_in_their_environment_and_rotate() -> Result<()> {
    ensure_services()?;
    let store = TestDb::create("cs_enroll_store").await?;
    let upstream = TestDb::create("cs_enroll_app").await?;
    upstream
        .execute("CREATE TABLE orders (id int primary key, total numeric)")
        .await?;
    let dir = tempfile::tempdir()?;
    let (http, grpc) = (free_port()?, free_port()?);

    let cp_config = dir.path().join("control-plane.toml");
    std::fs::write(
        &cp_config,
        format!(
            "http_addr = \"127.0.0.1:{http}\"\ngrpc_addr = \"127.0.0.1:{grpc}\"\n\
             admin_token = \"{ADMIN}\"\n\n\
             [grpc_tls]\nnames = [\"localhost\", \"127.0.0.1\"]\ngateway_cert_lifetime = \"6s\"\n\n\
             [[resource]]\nname = \"pg-prod\"\nenvironment = \"prod\"\n\n\
             [[resource]]\nname = \"pg-staging\"\nenvironment = \"staging\"\n"
        ),
    )?;
    let cp_log = dir.path().join("cp.log");
    let store_url = store.url();
    let _cp = spawn_server(
        BIN.as_ref(),
        &[
            "control-plane",
            "--config",
            cp_config.to_str().context("path")?,
        ],
        &[("COUNTERSIGN_DATABASE_URL", &store_url)],
        &cp_log,
    )?;
    wait_port(http, &cp_log).await?;
    let server = format!("http://127.0.0.1:{http}");

    // The CA gateways trust, as an admin exports it.
    let ca = dir.path().join("control-plane-ca.pem");
    std::fs::write(
        &ca,
        cli_stdout(
            BIN.as_ref(),
            &["gateway", "ca", "--server", &server, "--token", ADMIN],
        )
        .await?,
    )?;

    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[[access]]\nname = \"alice\"\nmembers = [\"user:{ALICE}\"]\nlevel = \"read-write\"\nenvironments = [\"prod\", \"staging\"]\n"
        ),
    )?;
    let minter = AdminCli {
        bin: BIN.as_ref(),
        server: &server,
        admin_token: ADMIN,
    };
    minter.apply_policy(&policy).await?;
    let user = minter.mint(ALICE, &[], Some("30m")).await?;
    let user = user.as_str();

    // A prod gateway enrolls with a fresh token.
    let prod_token = minter.enroll_token("prod", "10m").await?;
    assert!(prod_token.starts_with("cse_"), "{prod_token}");
    let prod = gateway_config(
        dir.path(),
        "gw-prod",
        "prod",
        grpc,
        &ca,
        &[("pg-prod", upstream.upstream_url())],
    )?;
    let mut prod_process = prod.start(Some(&prod_token))?;
    wait_port(prod.pg, &prod.log).await?;
    let out = query(
        &prod.conn(user, "pg-prod"),
        "INSERT INTO orders VALUES (1, 10.00) RETURNING id",
    )
    .await
    .with_context(|| prod.log())?;
    assert_eq!(out.lines().next(), Some("1"), "{out}");
    let first_cert = std::fs::read_to_string(prod.state_dir.join("gateway.pem"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["gateway.pem", "ca.pem"] {
            let mode = std::fs::metadata(prod.state_dir.join(f))?
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
    }

    // A second gateway with the same, spent token is refused and stops.
    let thief = gateway_config(
        dir.path(),
        "gw-thief",
        "prod",
        grpc,
        &ca,
        &[("pg-prod", upstream.upstream_url())],
    )?;
    let status = tokio::time::timeout(
        Duration::from_secs(30),
        thief.start(Some(&prod_token))?.wait(),
    )
    .await??;
    assert!(!status.success());
    assert!(thief.log().contains("already been used"), "{}", thief.log());

    // A staging gateway that also holds credentials for the prod resource:
    // the control plane refuses it sessions there, whatever it claims.
    let staging_token = minter.enroll_token("staging", "10m").await?;
    let staging = gateway_config(
        dir.path(),
        "gw-staging",
        "prod",
        grpc,
        &ca,
        &[
            ("pg-staging", upstream.upstream_url()),
            ("pg-prod", upstream.upstream_url()),
        ],
    )?;
    // Staging reads its token from a file, as a mounted Kubernetes Secret provides it.
    let token_file = dir.path().join("staging-token");
    std::fs::write(&token_file, format!("{staging_token}\n"))?;
    let _staging_process = staging.start_with(&[(
        "COUNTERSIGN_ENROLLMENT_TOKEN_FILE",
        token_file.to_str().context("path")?,
    )])?;
    wait_port(staging.pg, &staging.log).await?;
    query(&staging.conn(user, "pg-staging"), "SELECT 1")
        .await
        .with_context(|| staging.log())?;
    let refused = Psql::new(&staging.conn(user, "pg-prod"))
        .command("SELECT count(*) FROM orders")
        .run()
        .await?;
    assert!(
        !refused.success()
            && refused
                .stderr
                .contains("is not in this gateway's environment \"staging\""),
        "{}",
        refused.combined()
    );

    // Both are listed, each in the environment of its token.
    let listed = cli_stdout(
        BIN.as_ref(),
        &["gateway", "list", "--server", &server, "--token", ADMIN],
    )
    .await?;
    let rows: Vec<Vec<&str>> = listed
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{listed}");
    assert_eq!(&rows[0][..2], ["gw-prod", "prod"], "{listed}");
    assert_eq!(&rows[1][..2], ["gw-staging", "staging"], "{listed}");

    // Rotation: the 6 s certificate is renewed at 4 s; well after the
    // original one ended, the gateway still serves and its audit still
    // reaches the control plane.
    tokio::time::sleep(Duration::from_secs(9)).await;
    let out = Psql::new(&prod.conn(user, "pg-prod"))
        .command("INSERT INTO orders VALUES (2, 20.00) RETURNING id")
        .output()
        .await
        .with_context(|| prod.log())?;
    assert_eq!(out.lines().next(), Some("2"), "{out}");
    assert!(
        prod.log().contains("gateway certificate renewed"),
        "{}",
        prod.log()
    );
    let renewed_cert = std::fs::read_to_string(prod.state_dir.join("gateway.pem"))?;
    assert_ne!(first_cert, renewed_cert);
    eventually(Duration::from_secs(20), || async {
        let events = minter
            .audit_search(&AuditQuery::statements_of(ALICE))
            .await?;
        let seen: Vec<&str> = events
            .iter()
            .filter_map(|e| e.statement.as_deref())
            .collect();
        if seen.iter().any(|s| s.contains("VALUES (2, 20.00)")) {
            Ok(())
        } else {
            bail!("audit so far: {seen:?}")
        }
    })
    .await?;

    // A restart uses the stored (renewed) certificate: no token needed.
    prod_process.kill().await?;
    let _prod_again = prod.start(None)?;
    wait_port(prod.pg, &prod.log).await?;
    let out = query(&prod.conn(user, "pg-prod"), "SELECT count(*) FROM orders")
        .await
        .with_context(|| prod.log())?;
    assert_eq!(out.trim(), "2");
    Ok(())
}
