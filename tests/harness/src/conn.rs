//! Connection parameters shared by psql, pgbench and tokio-postgres.
//!
//! The password never goes into a command line: psql and pgbench get it through
//! `PGPASSWORD`, tokio-postgres through its `Config`.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;
use tokio_postgres::config::SslMode;
use tokio_postgres::{AsyncMessage, Client, NoTls};

/// Where and as whom to connect. `sslmode` is a libpq value (`disable`, `prefer`, `require`).
#[derive(Clone, Debug)]
pub struct ConnParams {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
    pub sslmode: String,
}

impl ConnParams {
    pub fn new(host: &str, port: u16, user: &str, dbname: &str) -> Self {
        ConnParams {
            host: host.to_owned(),
            port,
            user: user.to_owned(),
            password: None,
            dbname: dbname.to_owned(),
            sslmode: "disable".to_owned(),
        }
    }

    pub fn with_password(mut self, password: &str) -> Self {
        self.password = Some(password.to_owned());
        self
    }

    pub fn without_password(mut self) -> Self {
        self.password = None;
        self
    }

    pub fn with_user(mut self, user: &str) -> Self {
        self.user = user.to_owned();
        self
    }

    pub fn with_dbname(mut self, dbname: &str) -> Self {
        self.dbname = dbname.to_owned();
        self
    }

    pub fn with_sslmode(mut self, sslmode: &str) -> Self {
        self.sslmode = sslmode.to_owned();
        self
    }

    /// A libpq keyword/value string without the password, e.g. `host=127.0.0.1 port=5432 ...`.
    pub fn conninfo(&self) -> String {
        [
            ("host", self.host.as_str()),
            ("port", &self.port.to_string()),
            ("user", &self.user),
            ("dbname", &self.dbname),
            ("sslmode", &self.sslmode),
            ("connect_timeout", "10"),
        ]
        .iter()
        .map(|(k, v)| format!("{k}={}", quote_conninfo(v)))
        .collect::<Vec<_>>()
        .join(" ")
    }

    /// libpq environment for clients that take no conninfo (pgbench). Includes `PGPASSWORD`.
    pub fn libpq_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("PGHOST", self.host.clone()),
            ("PGPORT", self.port.to_string()),
            ("PGUSER", self.user.clone()),
            ("PGDATABASE", self.dbname.clone()),
            ("PGSSLMODE", self.sslmode.clone()),
            ("PGCONNECT_TIMEOUT", "10".to_owned()),
        ];
        if let Some(password) = &self.password {
            env.push(("PGPASSWORD", password.clone()));
        }
        env
    }

    /// A tokio-postgres config for a plain-TCP client (`NoTls`).
    pub fn tokio_config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .connect_timeout(Duration::from_secs(10))
            .ssl_mode(match self.sslmode.as_str() {
                "require" => SslMode::Require,
                "prefer" => SslMode::Prefer,
                _ => SslMode::Disable,
            });
        if let Some(password) = &self.password {
            config.password(password);
        }
        config
    }

    /// Connects without TLS and returns the raw driver error, for tests that expect failure.
    pub async fn try_connect(&self) -> Result<(Client, JoinHandle<()>), tokio_postgres::Error> {
        let (client, connection) = self.tokio_config().connect(NoTls).await?;
        let task = tokio::spawn(async move {
            if let Err(e) = connection.await {
                eprintln!("tokio-postgres connection ended with an error: {e}");
            }
        });
        Ok((client, task))
    }

    /// Connects without TLS; the connection is driven by a spawned task.
    pub async fn connect(&self) -> Result<(Client, JoinHandle<()>)> {
        self.try_connect()
            .await
            .with_context(|| format!("connecting to {} as {}", self.conninfo(), self.user))
    }

    /// Connects without TLS and forwards each notification as `(channel, payload)`; the
    /// sender closes when the connection ends.
    pub async fn connect_listening(&self) -> Result<(Client, UnboundedReceiver<(String, String)>)> {
        let (client, mut connection) = self.tokio_config().connect(NoTls).await?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        let _ = tx.send((n.channel().to_owned(), n.payload().to_owned()));
                    }
                    Ok(_) => {}
                    Err(e) => return eprintln!("listening connection failed: {e}"),
                }
            }
        });
        Ok((client, rx))
    }
}

/// Quotes a conninfo value when needed (libpq: single quotes, `\'` and `\\` escapes).
fn quote_conninfo(value: &str) -> String {
    let plain = !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\');
    if plain {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

/// Runs a query returning one `bigint` (typically `SELECT count(*) ...`).
pub async fn query_count(client: &Client, sql: &str) -> Result<i64> {
    let row = client
        .query_one(sql, &[])
        .await
        .with_context(|| format!("running {sql}"))?;
    Ok(row.try_get(0)?)
}

/// Fails unless `result` is a server error with SQLSTATE `code`.
pub fn expect_sqlstate<T>(
    result: Result<T, tokio_postgres::Error>,
    code: &tokio_postgres::error::SqlState,
) -> Result<()> {
    match result {
        Ok(_) => bail!("expected SQLSTATE {}, but the call succeeded", code.code()),
        Err(e) if e.code() == Some(code) => Ok(()),
        Err(e) => bail!("expected SQLSTATE {}, got {e:?}", code.code()),
    }
}

/// Asserts that a connect attempt failed with a server `FATAL` whose SQLSTATE is one of
/// `codes`, and returns that error.
pub fn expect_fatal<T>(
    result: Result<T, tokio_postgres::Error>,
    codes: &[&tokio_postgres::error::SqlState],
) -> Result<tokio_postgres::error::DbError> {
    let err = match result {
        Ok(_) => bail!("expected a FATAL error, but the connection succeeded"),
        Err(e) => e,
    };
    let Some(db) = err.as_db_error() else {
        bail!("expected a server ErrorResponse, got a client-side error: {err:?}");
    };
    if db.severity() != "FATAL" {
        bail!(
            "expected severity FATAL, got {}: {}",
            db.severity(),
            db.message()
        );
    }
    if !codes.contains(&db.code()) {
        let want: Vec<_> = codes.iter().map(|c| c.code()).collect();
        bail!(
            "expected SQLSTATE in {want:?}, got {}: {}",
            db.code().code(),
            db.message()
        );
    }
    Ok(db.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn listening_connection_delivers_notifications() {
        crate::services::ensure_services().unwrap();
        let db = crate::db::TestDb::create("kit_listen").await.unwrap();
        let (client, mut rx) = db.params().connect_listening().await.unwrap();
        client.batch_execute("LISTEN ch").await.unwrap();
        db.execute("NOTIFY ch, 'hi'").await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap();
        assert_eq!(got, Some(("ch".to_owned(), "hi".to_owned())));
    }

    #[test]
    fn conninfo_quotes_odd_values() {
        let p = ConnParams::new("127.0.0.1", 5432, "a b", "x'y\\z").with_password("secret");
        let info = p.conninfo();
        assert_eq!(
            info,
            "host=127.0.0.1 port=5432 user='a b' dbname='x\\'y\\\\z' sslmode=disable connect_timeout=10"
        );
        assert!(!info.contains("secret"));
        assert!(p.libpq_env().contains(&("PGPASSWORD", "secret".to_owned())));
    }
}
