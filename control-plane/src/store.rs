//! The control plane's store: sea-orm over PostgreSQL (production) or SQLite
//! (`countersign dev`), with one migration set for both.
//!
//! Every query here is written once and runs on both backends; the store tests
//! run against each. Nothing outside this module names a table or a column.

pub mod audit;
pub mod credentials;
pub mod entity;
pub mod gateways;
pub mod identities;
pub mod policies;
pub mod resources;
pub mod reviews;
pub mod role_bindings;
pub mod sessions;
pub mod settings;
pub mod sso;
pub mod tokens;

use countersign_migrations::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};
use std::time::Duration;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    #[error("{what} {key:?} was not found")]
    NotFound { what: &'static str, key: String },
    #[error("{what} {key:?} already exists")]
    Conflict { what: &'static str, key: String },
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
}

/// A handle on the control-plane database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    /// Key of the audit chain; see [`audit::chain`].
    audit_key: audit::chain::AuditKey,
}

impl Store {
    /// Connects to `url` (`postgres://…` or `sqlite://PATH?mode=rwc`), applies
    /// pending migrations, loads the audit key (generating it into the
    /// settings on first start, so every replica shares it) and chains any
    /// audit events stored before the chain existed.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with_audit_key(url, None).await
    }

    /// [`Store::connect`], with the audit key given (held outside the
    /// database; see `docs/audit.md`) instead of kept in the store.
    pub async fn connect_with_audit_key(
        url: &str,
        audit_key: Option<audit::chain::AuditKey>,
    ) -> Result<Self, StoreError> {
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .max_connections(if url.starts_with("sqlite") { 1 } else { 16 })
            .connect_timeout(Duration::from_secs(10))
            .sqlx_logging(false);
        let db = Database::connect(options).await?;
        if url.starts_with("sqlite") {
            // WAL lets audit search read while the uploader writes.
            use sea_orm::ConnectionTrait;
            db.execute_unprepared("PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON;")
                .await?;
        }
        // Replicas starting together migrate one at a time: the first applies what is
        // missing, the others then find nothing to do.
        let lock = MigrationLock::acquire(url).await?;
        let migrated = match lock.session() {
            Some(session) => migrate_giving_way(session, MIGRATION_RETRY_FOR).await,
            None => Migrator::up(&db, None).await.map_err(StoreError::from),
        };
        if let Err(e) = migrated {
            lock.release().await;
            return Err(e);
        }
        let audit_key = match audit_key {
            Some(key) => key,
            None => audit::chain::AuditKey::from_hex(
                &settings::setting_or_insert(
                    &db,
                    audit::chain::AUDIT_KEY_SETTING,
                    &audit::chain::AuditKey::generate_hex(),
                )
                .await?,
            )?,
        };
        let store = Self { db, audit_key };
        let sealed = audit::chain::seal_unchained(&store).await;
        lock.release().await;
        sealed?;
        if store.db.get_database_backend() == sea_orm::DbBackend::Postgres
            && !store.audit_text_index().await?
        {
            tracing::warn!(
                "audit text search is not indexed: the pg_trgm extension could not be created \
                 (see docs/audit.md); searches by text read every event in range"
            );
        }
        if let Some(encoding) = store.lossy_encoding().await? {
            tracing::warn!(
                encoding,
                "the store's database does not use the UTF8 encoding: a statement whose text \
                 does not convert to it and back unchanged fails the store's digest check, and \
                 its batch is refused (see docs/deploy.md, \"Upgrades\")"
            );
        }
        Ok(store)
    }

    /// The database's encoding if it is neither UTF8 nor SQL_ASCII (which stores the bytes it
    /// is given), where a statement's text may not keep its bytes (PostgreSQL). Logged as a
    /// warning at start.
    pub async fn lossy_encoding(&self) -> Result<Option<String>, StoreError> {
        if self.db.get_database_backend() != sea_orm::DbBackend::Postgres {
            return Ok(None);
        }
        let encoding: String =
            pg_value(&self.db, "SELECT current_setting('server_encoding')").await?;
        Ok((!matches!(encoding.as_str(), "UTF8" | "SQL_ASCII")).then_some(encoding))
    }

    pub(crate) fn audit_key(&self) -> &audit::chain::AuditKey {
        &self.audit_key
    }

    pub(crate) fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Whether the trigram indexes behind audit text search exist, over the
    /// events and over the parameterized texts (PostgreSQL; see migrations m0009
    /// and m0012). Always false on SQLite.
    pub async fn audit_text_index(&self) -> Result<bool, StoreError> {
        if self.db.get_database_backend() != sea_orm::DbBackend::Postgres {
            return Ok(false);
        }
        pg_value(
            &self.db,
            "SELECT count(*) = 2 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE c.relname IN ('audit_events_statement_trgm', 'audit_texts_statement_trgm') \
             AND i.indisvalid",
        )
        .await
    }

    /// A round trip to the database.
    pub async fn ping(&self) -> Result<(), StoreError> {
        Ok(self.db.ping().await?)
    }

    /// The raw connection, for tests that must bypass the store (for example
    /// to show that the database itself refuses a self-approval).
    #[doc(hidden)]
    pub fn db_for_tests(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Closes the pool; used by tests and at shutdown.
    pub async fn close(self) -> Result<(), StoreError> {
        self.db.close().await?;
        Ok(())
    }
}

/// Maps a unique-constraint violation to [`StoreError::Conflict`].
fn conflict_or(err: DbErr, what: &'static str, key: &str) -> StoreError {
    match err.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => StoreError::Conflict {
            what,
            key: key.to_owned(),
        },
        _ => StoreError::Db(err),
    }
}

/// The first column of the one row `sql` returns, or its first columns as a tuple (PostgreSQL).
pub(crate) async fn pg_value<T: sea_orm::TryGetableMany>(
    conn: &impl sea_orm::ConnectionTrait,
    sql: &str,
) -> Result<T, StoreError> {
    let row = conn
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            sql,
        ))
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("{sql} returned no row")))?;
    Ok(row.try_get_many_by_index()?)
}

/// A PostgreSQL session-level advisory lock, held on a connection of its own while a replica
/// migrates the store; nothing on SQLite (one process owns the file). The migrations run on
/// that same connection, which the pool never closes for being idle or old, nor tests before
/// handing it out: a session that ended would take the lock with it, and another replica could
/// then migrate at the same time. Should the session end anyway, the pool would open another
/// one without the lock; [`migrate_giving_way`] checks the session's backend pid around every
/// migration and stops when it changed.
struct MigrationLock(Option<LockSession>);

/// The connection holding the migration lock, and its backend's pid.
struct LockSession {
    conn: DatabaseConnection,
    pid: i32,
}

/// How long a migration that runs in a transaction waits for a lock before it gives way. While
/// it waits for a table, every statement that needs a conflicting lock on that table (ingest,
/// search, sign-in) queues behind it, so a long transaction elsewhere would stall them all.
const MIGRATION_LOCK_TIMEOUT: &str = "5s";
/// How long start-up keeps retrying one migration that keeps giving way before it fails.
const MIGRATION_RETRY_FOR: Duration = Duration::from_secs(600);
/// The pause between two attempts at a migration that gave way.
const MIGRATION_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Applies the pending migrations on PostgreSQL one at a time, on the migration lock's session.
///
/// A migration that runs in a transaction (the default) waits at most
/// [`MIGRATION_LOCK_TIMEOUT`] for each lock; when it times out its transaction is rolled back,
/// the statements queued behind it go ahead, and it is tried again after a pause. Once the same
/// migration has kept giving way for `retry_for` ([`MIGRATION_RETRY_FOR`]) since it first did,
/// start-up fails naming it. A migration that runs outside a transaction (m0012) is written to
/// be applied online and resumed: it waits without a limit, as `CREATE INDEX CONCURRENTLY` must
/// wait for older transactions (which blocks nothing but other schema changes), and a lock
/// timeout there would only throw away an index build.
async fn migrate_giving_way(lock: &LockSession, retry_for: Duration) -> Result<(), StoreError> {
    let conn = &lock.conn;
    let mut gave_way_since: Option<std::time::Instant> = None;
    loop {
        let pending = Migrator::get_pending_migrations(conn).await?;
        let Some(next) = pending.first() else {
            return Ok(());
        };
        let name = next.name().to_owned();
        let transactional = Migrator::migrations()
            .iter()
            .find(|m| m.name() == name)
            .is_none_or(|m| m.use_transaction() != Some(false));
        let timeout = if transactional {
            MIGRATION_LOCK_TIMEOUT
        } else {
            "0"
        };
        // Sets the timeout and reads the pid in one statement, so both are of one session.
        let pid: i32 = pg_value(
            conn,
            &format!("SELECT pg_backend_pid() FROM set_config('lock_timeout', '{timeout}', false)"),
        )
        .await?;
        lock.check_session(pid)?;
        match Migrator::up(conn, Some(1)).await {
            Ok(()) => {
                lock.check_session(pg_value(conn, "SELECT pg_backend_pid()").await?)?;
                gave_way_since = None;
            }
            Err(e) if transactional && lock_timed_out(&e) => {
                let since = *gave_way_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= retry_for {
                    return Err(StoreError::Db(DbErr::Migration(format!(
                        "migration {name} could not take its locks in {} s of trying: a long \
                         transaction on the store holds them (see pg_stat_activity): {e}",
                        retry_for.as_secs()
                    ))));
                }
                tracing::warn!(
                    migration = %name,
                    "a migration gave way to a transaction holding a lock it needs, after \
                     waiting {MIGRATION_LOCK_TIMEOUT}; trying again"
                );
                tokio::time::sleep(MIGRATION_RETRY_PAUSE).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether `e` is PostgreSQL's `lock_not_available` (a lock wait cut off by `lock_timeout`).
fn lock_timed_out(e: &DbErr) -> bool {
    use sea_orm::RuntimeErr;
    let (DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e))) = e else {
        return false;
    };
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "55P03")
}

/// Consecutive failed polls (a second apart) after which a replica waiting for the migration
/// lock gives up.
const MIGRATION_LOCK_POLL_FAILURES: u32 = 30;

/// The advisory lock key: "cs-migr" as a number, unlikely to clash with an application's.
const MIGRATION_LOCK_KEY: i64 = 0x0063_732d_6d69_6772;

impl MigrationLock {
    async fn acquire(url: &str) -> Result<MigrationLock, StoreError> {
        if !url.starts_with("postgres") {
            return Ok(MigrationLock(None));
        }
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false)
            .connect_timeout(Duration::from_secs(10))
            .sqlx_logging(false);
        let conn = Database::connect(options).await?;
        // Polled rather than waited for in `pg_advisory_lock`: a replica waiting inside a
        // statement has a transaction open, and `CREATE INDEX CONCURRENTLY` in the migrating
        // replica's migrations waits for every open transaction to end, so the two would wait
        // for each other forever.
        let mut waited = false;
        let mut failures = 0;
        loop {
            let (locked, pid): (bool, i32) = match Self::try_lock(&conn).await {
                Ok(polled) => {
                    failures = 0;
                    polled
                }
                // No lock is held yet, so a session that ended (the pool does not test its
                // connection before handing it out) is replaced and the wait goes on.
                Err(e) if failures < MIGRATION_LOCK_POLL_FAILURES => {
                    failures += 1;
                    tracing::warn!(
                        error = %e,
                        "polling for the migration lock failed; trying again on a new connection"
                    );
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if locked {
                return Ok(MigrationLock(Some(LockSession { conn, pid })));
            }
            if !waited {
                tracing::info!("waiting for another replica to finish migrating the store");
                waited = true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One try at the lock: whether it was taken, and the session's backend pid.
    async fn try_lock(conn: &DatabaseConnection) -> Result<(bool, i32), StoreError> {
        pg_value(
            conn,
            &format!("SELECT pg_try_advisory_lock({MIGRATION_LOCK_KEY}), pg_backend_pid()"),
        )
        .await
    }

    /// The session holding the lock (PostgreSQL).
    fn session(&self) -> Option<&LockSession> {
        self.0.as_ref()
    }

    async fn release(self) {
        use sea_orm::ConnectionTrait;
        if let Some(LockSession { conn, .. }) = self.0 {
            let _ = conn
                .execute_unprepared(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))
                .await;
            let _ = conn.close().await;
        }
    }
}

impl LockSession {
    /// Fails when the statement that returned `pid` ran on another session than the one that
    /// took the lock: the lock ended with its session, and another replica may be migrating.
    fn check_session(&self, pid: i32) -> Result<(), StoreError> {
        if pid == self.pid {
            return Ok(());
        }
        Err(StoreError::Db(DbErr::Migration(format!(
            "the session holding the migration lock ended (backend {} replaced by {pid}); \
             start the control plane again",
            self.pid
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A replica waiting for the migration lock whose connection ends goes on waiting on a new
    /// one, and takes the lock once it is free.
    #[tokio::test]
    async fn waiting_for_the_migration_lock_survives_a_lost_connection() {
        countersign_testkit::ensure_services().unwrap();
        let db = countersign_testkit::TestDb::create("cs_migrate_lock_poll")
            .await
            .unwrap();
        let other = db.client().await.unwrap();
        other
            .execute(
                &format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"),
                &[],
            )
            .await
            .unwrap();
        let url = db.url();
        let waiting = tokio::spawn(async move { MigrationLock::acquire(&url).await });
        let poller = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
                      AND pid <> pg_backend_pid() AND query LIKE 'SELECT pg_try_advisory_lock%'";
        let pid: i32 = countersign_testkit::eventually(Duration::from_secs(10), || async {
            let row = other.query_opt(poller, &[]).await?;
            row.map(|r| r.get(0))
                .ok_or_else(|| anyhow::anyhow!("no replica polled for the lock"))
        })
        .await
        .unwrap();
        other
            .execute("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!waiting.is_finished(), "the wait ended with its connection");
        other
            .execute(
                &format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"),
                &[],
            )
            .await
            .unwrap();
        let lock = tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .expect("the lock was not taken once free")
            .unwrap()
            .unwrap();
        let session = lock.session().unwrap();
        assert_ne!(session.pid, pid, "the lock is held on the ended session");
        let held: i32 = pg_value(&session.conn, "SELECT pg_backend_pid()")
            .await
            .unwrap();
        assert_eq!(held, session.pid);
        lock.release().await;
    }

    /// A migration that cannot take its locks fails start-up once it has kept giving way for the
    /// retry window, with an error naming it, and leaves nothing of itself behind.
    #[tokio::test]
    async fn a_migration_that_never_gets_its_locks_fails_naming_itself() {
        countersign_testkit::ensure_services().unwrap();
        let db = countersign_testkit::TestDb::create("cs_migrate_lock_gives_up")
            .await
            .unwrap();
        let lock = MigrationLock::acquire(&db.url()).await.unwrap();
        let session = lock.session().unwrap();
        Migrator::up(&session.conn, Some(10)).await.unwrap();
        let holder = db.client().await.unwrap();
        holder
            .batch_execute("BEGIN; LOCK TABLE identities IN ROW EXCLUSIVE MODE")
            .await
            .unwrap();
        // Gives way after 5 s, tries again a second later, gives way again, and stops: the
        // window (1 s) has passed since it first gave way.
        let began = std::time::Instant::now();
        let attempt = tokio::time::timeout(
            Duration::from_secs(60),
            migrate_giving_way(session, Duration::from_secs(1)),
        )
        .await
        .expect("the migration waited past its lock timeout");
        // Two lock timeouts and the pause between them: the window counts from the first.
        assert!(
            began.elapsed() >= Duration::from_secs(10),
            "gave up after {:?}, before trying again",
            began.elapsed()
        );
        let text = attempt
            .expect_err("the migration took a lock that was held")
            .to_string();
        assert!(
            text.contains("migration m0011_sso could not take its locks in 1 s"),
            "{text}"
        );
        holder.batch_execute("ROLLBACK").await.unwrap();
        let pending = Migrator::get_pending_migrations(&session.conn)
            .await
            .unwrap();
        assert_eq!(pending.len(), 2, "m0011 and m0012 are still pending");
        let tables: i64 = holder
            .query_one(
                "SELECT count(*) FROM pg_tables WHERE tablename IN \
                 ('oidc_logins', 'oidc_subjects', 'console_sessions', 'cli_login_codes')",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(tables, 0, "m0011 left tables behind");
        lock.release().await;
    }
}
