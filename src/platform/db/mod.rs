//! The data layer: one diesel schema over SQLite (embedded default) and PostgreSQL.
//!
//! The backend is chosen from the URL scheme by [`crate::config::Config::database_target`], never
//! by trial: diesel's derived `establish` would fall back to SQLite and create a file named after
//! an unreachable PostgreSQL URL. Migrations exist once per backend under the same names and are
//! embedded in the binary.

pub mod schema;

use std::path::Path;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::r2d2::{self, ManageConnection, R2D2Connection};
use diesel::{Connection, PgConnection, SqliteConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::config::{redact_url, Config, DatabaseTarget};
use crate::platform::crypto::ChainKey;
use crate::platform::error::ApiError;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Any PostgreSQL session holding this advisory lock is migrating; replicas starting together
/// wait for each other instead of racing to create the same tables.
const MIGRATION_LOCK_KEY: i64 = 0x666f_756e_7461_696e; // "fountain"

/// A connection to whichever backend is configured.
#[derive(diesel::MultiConnection)]
pub enum AnyConnection {
    Postgres(PgConnection),
    Sqlite(SqliteConnection),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot connect to database {target} after {attempts} attempt(s): {reason}")]
    Unreachable { target: String, attempts: u32, reason: String },
    #[error("database migration failed: {0}")]
    Migration(String),
    #[error("cannot prepare database directory {path}: {reason}")]
    Directory { path: String, reason: String },
    #[error("no database connection available: {0}")]
    Pool(String),
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
    /// Stored data that cannot be used (damaged, or sealed with another key).
    #[error("stored data is unusable: {0}")]
    Data(String),
    /// The audit record of a change cannot be written; the change must not happen either.
    #[error("the audit trail cannot be written: {0}")]
    Audit(String),
}

impl DbError {
    /// Whether the database refused a change for want of space: SQLite's `SQLITE_FULL`
    /// ("database or disk is full") or PostgreSQL's `disk_full` ("No space left on device").
    /// diesel reports both as an unknown database error, so the message is what tells.
    pub fn is_storage_full(&self) -> bool {
        let DbError::Query(diesel::result::Error::DatabaseError(_, info)) = self else {
            return false;
        };
        let message = info.message();
        message.contains("database or disk is full") || message.contains("No space left on device")
    }
}

impl From<DbError> for ApiError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::Pool(_) | DbError::Unreachable { .. } => ApiError::unavailable("database", err),
            DbError::Audit(_) => ApiError::audit_unavailable(err),
            full if full.is_storage_full() => ApiError::storage_full(full),
            other => ApiError::internal(other),
        }
    }
}

/// How to open one connection; r2d2 calls it for every pooled connection.
#[derive(Debug, Clone)]
pub struct ConnectionFactory {
    backend: Backend,
    /// SQLite file path or libpq URL (with any password from `password_file`): never logged.
    dsn: String,
    /// What logs and errors show instead of `dsn`.
    display: String,
    sqlite_busy_timeout_ms: u64,
}

impl ConnectionFactory {
    pub fn from_config(config: &Config) -> Result<Self, DbError> {
        let target = config.database_target().map_err(|e| DbError::Unreachable {
            target: "(invalid)".into(),
            attempts: 0,
            reason: e.to_string(),
        })?;
        match target {
            DatabaseTarget::Sqlite(path) => {
                prepare_sqlite_dir(&path)?;
                Ok(Self {
                    backend: Backend::Sqlite,
                    display: path.display().to_string(),
                    dsn: path.display().to_string(),
                    sqlite_busy_timeout_ms: config.database.sqlite_busy_timeout_ms,
                })
            }
            DatabaseTarget::Postgres(url) => Ok(Self {
                backend: Backend::Postgres,
                display: redact_url(&url),
                dsn: postgres_dsn(&url, config)?,
                sqlite_busy_timeout_ms: 0,
            }),
        }
    }

    fn open(&self) -> diesel::ConnectionResult<AnyConnection> {
        match self.backend {
            Backend::Postgres => PgConnection::establish(&self.dsn).map(AnyConnection::Postgres),
            Backend::Sqlite => {
                let mut conn = SqliteConnection::establish(&self.dsn)?;
                // WAL lets readers proceed while one writer commits; the busy timeout makes a
                // second writer wait instead of failing with "database is locked".
                conn.batch_execute(&format!(
                    "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; \
                     PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
                    self.sqlite_busy_timeout_ms
                ))
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                Ok(AnyConnection::Sqlite(conn))
            }
        }
    }
}

impl ManageConnection for ConnectionFactory {
    type Connection = AnyConnection;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<AnyConnection, r2d2::Error> {
        self.open().map_err(r2d2::Error::ConnectionError)
    }

    fn is_valid(&self, conn: &mut AnyConnection) -> Result<(), r2d2::Error> {
        conn.ping().map_err(r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut AnyConnection) -> bool {
        std::thread::panicking() || conn.is_broken()
    }
}

/// The shared connection pool. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: r2d2::Pool<ConnectionFactory>,
    backend: Backend,
    display: String,
    /// Told about the events of every change this process commits (see `platform::unit`).
    pub(crate) committed: std::sync::Arc<crate::platform::unit::CommitListeners>,
    /// MACs the audit records of this handle's changes; without it every audited change fails
    /// (`DbError::Audit`) rather than write an unchained record.
    pub(crate) audit_key: Option<std::sync::Arc<ChainKey>>,
}

impl Db {
    /// Connects with retry and backoff, runs pending migrations, and builds the pool.
    /// Blocking: call it before the async runtime serves requests, or inside `spawn_blocking`.
    pub fn connect(config: &Config) -> Result<Db, DbError> {
        let factory = ConnectionFactory::from_config(config)?;
        let mut first = connect_with_retry(&factory, config)?;
        let applied = run_migrations(&mut first)?;
        if !applied.is_empty() {
            log::info!(target: "fountain::db", count = applied.len(); "applied migrations: {}", applied.join(", "));
        }
        drop(first);
        let pool = r2d2::Pool::builder()
            .max_size(config.database.pool_size)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(config.database.connect_timeout_seconds.max(1)))
            .test_on_check_out(true)
            .build_unchecked(factory.clone());
        Ok(Db {
            pool,
            backend: factory.backend,
            display: factory.display,
            committed: Default::default(),
            audit_key: None,
        })
    }

    /// This handle, chaining the audit records of its changes with `key` (from the master key).
    pub fn with_audit_key(mut self, key: ChainKey) -> Db {
        self.audit_key = Some(std::sync::Arc::new(key));
        self
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The database location as it may be shown (no password).
    pub fn display(&self) -> &str {
        &self.display
    }

    /// A pooled connection, for blocking code (CLI commands, tests).
    pub fn conn(&self) -> Result<r2d2::PooledConnection<ConnectionFactory>, DbError> {
        self.pool.get().map_err(|e| DbError::Pool(e.to_string()))
    }

    /// Runs blocking diesel work on the blocking thread pool so request threads never wait on
    /// the database.
    pub async fn run<T, F>(&self, work: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut AnyConnection) -> Result<T, DbError> + Send + 'static,
    {
        let pool = self.pool.clone();
        let joined = actix_web::rt::task::spawn_blocking(move || {
            let mut conn = pool.get().map_err(|e| DbError::Pool(e.to_string()))?;
            work(&mut conn)
        })
        .await;
        joined.map_err(|e| DbError::Pool(format!("database task failed: {e}")))?
    }

    /// Readiness: one round trip to the database.
    pub async fn ping(&self) -> Result<(), DbError> {
        self.run(|conn| conn.ping().map_err(DbError::from)).await
    }
}

fn connect_with_retry(factory: &ConnectionFactory, config: &Config) -> Result<AnyConnection, DbError> {
    let attempts = config.database.connect_attempts;
    let mut delay = Duration::from_millis(250);
    let mut last_error = String::new();
    for attempt in 1..=attempts {
        match factory.open() {
            Ok(conn) => return Ok(conn),
            Err(err) => {
                last_error = first_line(&err.to_string());
                if attempt < attempts {
                    log::warn!(
                        target: "fountain::db",
                        database = factory.display.as_str(), attempt = attempt, retry_in_ms = delay.as_millis() as u64;
                        "database not reachable yet: {last_error}"
                    );
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
    Err(DbError::Unreachable { target: factory.display.clone(), attempts, reason: last_error })
}

/// Connects (with retry) and applies pending migrations; returns the versions applied.
pub fn migrate_only(config: &Config) -> Result<Vec<String>, DbError> {
    let factory = ConnectionFactory::from_config(config)?;
    let mut conn = connect_with_retry(&factory, config)?;
    run_migrations(&mut conn)
}

/// Applies every embedded migration not yet applied to this database.
pub fn run_migrations(conn: &mut AnyConnection) -> Result<Vec<String>, DbError> {
    let applied = match conn {
        // Inside one write-locked transaction (each migration becomes a savepoint), so that two
        // processes starting on one SQLite file apply them once, not twice.
        AnyConnection::Sqlite(_) => transaction(conn, |conn| {
            let AnyConnection::Sqlite(sqlite) = conn else { unreachable!("matched above") };
            sqlite
                .run_pending_migrations(SQLITE_MIGRATIONS)
                .map(|versions| versions.iter().map(ToString::to_string).collect::<Vec<_>>())
                .map_err(|e| DbError::Migration(e.to_string()))
        })?,
        AnyConnection::Postgres(conn) => {
            conn.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))?;
            let result = conn
                .run_pending_migrations(POSTGRES_MIGRATIONS)
                .map(|versions| versions.iter().map(ToString::to_string).collect())
                .map_err(|e| DbError::Migration(e.to_string()));
            conn.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))?;
            result?
        }
    };
    Ok(applied)
}

/// Creates the database's directory (0700) and file (0600) so that neither the file nor its
/// `-wal`/`-shm` companions are ever readable by others; warns when the directory is shared.
fn prepare_sqlite_dir(path: &Path) -> Result<(), DbError> {
    use crate::platform::fs;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        fs::create_private_dir(dir)
            .map_err(|e| DbError::Directory { path: dir.display().to_string(), reason: e.to_string() })?;
        if fs::is_shared_dir(dir) {
            log::warn!(
                target: "fountain::db", directory = dir.display().to_string().as_str();
                "the database directory is readable by other users; make it private (chmod 700)"
            );
        }
    }
    fs::ensure_private_file(path)
        .map_err(|e| DbError::Directory { path: path.display().to_string(), reason: e.to_string() })
}

/// Adds the password from `database.password_file` and a connect timeout to a libpq URL.
fn postgres_dsn(url: &str, config: &Config) -> Result<String, DbError> {
    let unreachable = |reason: String| DbError::Unreachable { target: redact_url(url), attempts: 0, reason };
    let mut parsed = url::Url::parse(url).map_err(|e| unreachable(e.to_string()))?;
    let password_file = config.database.password_file.trim();
    if !password_file.is_empty() {
        let password = std::fs::read_to_string(password_file)
            .map_err(|e| unreachable(format!("cannot read database.password_file: {}", e.kind())))?;
        parsed
            .set_password(Some(password.trim_end_matches(['\r', '\n'])))
            .map_err(|_| unreachable("database URL cannot carry a password".into()))?;
    }
    if !parsed.query_pairs().any(|(k, _)| k == "connect_timeout") {
        let timeout = config.database.connect_timeout_seconds.max(1).to_string();
        parsed.query_pairs_mut().append_pair("connect_timeout", &timeout);
    }
    Ok(parsed.to_string())
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().trim().to_string()
}

/// Whether `conn` is inside a transaction (begun by [`transaction`] or diesel's own).
pub fn in_transaction(conn: &mut AnyConnection) -> bool {
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    let depth = match conn {
        AnyConnection::Postgres(pg) => {
            AnsiTransactionManager::transaction_manager_status_mut(pg).transaction_depth()
        }
        AnyConnection::Sqlite(sqlite) => {
            AnsiTransactionManager::transaction_manager_status_mut(sqlite).transaction_depth()
        }
    };
    matches!(depth, Ok(Some(_)))
}

/// Runs `work` in a transaction that takes the write lock up front on SQLite (`BEGIN
/// IMMEDIATE`). A plain deferred SQLite transaction that reads first and writes later fails with
/// "database is locked" (no busy wait) when another writer committed in between; taking the
/// lock first makes concurrent writers queue on the busy timeout instead. PostgreSQL uses its
/// ordinary transaction. Use this for every transaction in fountain.
pub fn transaction<T, E, F>(conn: &mut AnyConnection, work: F) -> Result<T, E>
where
    F: FnOnce(&mut AnyConnection) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    if !matches!(conn, AnyConnection::Sqlite(_)) {
        return conn.transaction(work);
    }
    if let AnyConnection::Sqlite(inner) = conn {
        // Nested calls become savepoints, as with `Connection::transaction`.
        let depth = AnsiTransactionManager::transaction_manager_status_mut(inner).transaction_depth()?;
        if depth.is_some() {
            return conn.transaction(work);
        }
        AnsiTransactionManager::begin_transaction_sql(inner, "BEGIN IMMEDIATE")?;
    }
    let result = work(conn);
    if let AnyConnection::Sqlite(inner) = conn {
        match &result {
            Ok(_) => {
                if let Err(err) = AnsiTransactionManager::commit_transaction(inner) {
                    let _ = AnsiTransactionManager::rollback_transaction(inner);
                    return Err(err.into());
                }
            }
            Err(_) => AnsiTransactionManager::rollback_transaction(inner)?,
        }
    }
    result
}
