//! Database pools: SQLite (the embedded default) or PostgreSQL, chosen by URL.
//!
//! Each service keeps its own tables and migrations (`<service>/migrations/{sqlite,postgres}`)
//! and implements its storage trait for both pools. Migration versions are
//! namespaced per service (auth 1xxx, chat 2xxx, media 3xxx, signaling 4xxx) so
//! that the services can share one `_sqlx_migrations` table.

use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// `[database]` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://…` or `postgres://…`; empty means SQLite at `<data-dir>/natter.db`.
    pub url: crate::Secret,
    /// Connections per process.
    pub max_connections: u32,
    /// Run pending migrations when a service starts.
    pub migrate_on_start: bool,
    /// SQLite only: `full` fsyncs every commit (durable across power loss), `normal`
    /// only at WAL checkpoints (durable across process crashes).
    pub sqlite_synchronous: SqliteSync,
    /// How long a query waits for a connection (and SQLite for a lock), in milliseconds.
    pub acquire_timeout_ms: u64,
}

/// SQLite's `synchronous` pragma.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSync {
    /// fsync on every commit.
    Full,
    /// fsync at checkpoints only.
    Normal,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: crate::Secret::default(),
            max_connections: 16,
            migrate_on_start: true,
            sqlite_synchronous: SqliteSync::Full,
            acquire_timeout_ms: 5_000,
        }
    }
}

/// Which engine a URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL names no supported engine.
    #[error("database.url: unsupported scheme in {0:?} (expected sqlite:// or postgres://)")]
    Scheme(String),
    /// The driver refused to connect.
    #[error("database: cannot connect to {engine:?}: {source}")]
    Connect {
        /// Engine tried.
        engine: Engine,
        /// Driver error.
        #[source]
        source: sqlx::Error,
    },
    /// The data directory could not be created.
    #[error("database: cannot create {path}: {source}")]
    Dir {
        /// Directory.
        path: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
}

/// An open pool of either engine.
#[derive(Debug, Clone)]
pub enum Db {
    /// SQLite.
    Sqlite(SqlitePool),
    /// PostgreSQL.
    Postgres(PgPool),
}

/// How often the background task moves the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// Runs `wal_checkpoint(PASSIVE)` every [`CHECKPOINT_EVERY`] on a pool
/// connection until the pool closes. PASSIVE never waits for readers or
/// writers, so commits go on while pages are copied; once a checkpoint has
/// caught up, the next writer restarts the WAL from its beginning, so the file
/// stays small.
fn checkpoint_in_background(pool: SqlitePool) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if pool.is_closed() {
                break;
            }
            match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&pool)
                .await
            {
                Ok(_) => {}
                Err(sqlx::Error::PoolClosed) => break,
                Err(e) => tracing::warn!(error = %e, "SQLite WAL checkpoint failed; retrying"),
            }
        }
    });
}

impl Db {
    /// Opens the configured database; an empty URL means SQLite under `data_dir`.
    pub async fn connect(cfg: &DatabaseConfig, data_dir: &Path) -> Result<Self, DbError> {
        let url = cfg.url.expose();
        let acquire = Duration::from_millis(cfg.acquire_timeout_ms);
        if url.is_empty() || url.starts_with("sqlite:") {
            let opts = if url.is_empty() {
                std::fs::create_dir_all(data_dir).map_err(|source| DbError::Dir {
                    path: data_dir.display().to_string(),
                    source,
                })?;
                SqliteConnectOptions::new().filename(data_dir.join("natter.db"))
            } else {
                SqliteConnectOptions::from_str(url).map_err(|source| DbError::Connect {
                    engine: Engine::Sqlite,
                    source,
                })?
            };
            let opts = opts
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(match cfg.sqlite_synchronous {
                    SqliteSync::Full => SqliteSynchronous::Full,
                    SqliteSync::Normal => SqliteSynchronous::Normal,
                })
                .foreign_keys(true)
                .busy_timeout(acquire)
                // Checkpoints run in `checkpoint_in_background`, not inside
                // whichever commit crosses SQLite's 1000-page threshold: an
                // inline checkpoint copies pages and fsyncs the database file
                // while that commit's callers wait, which was the latency tail.
                .pragma("wal_autocheckpoint", "0")
                // Batched statements come in a few shapes per kind (see chat's
                // store); all of them stay prepared.
                .statement_cache_capacity(512);
            let pool = SqlitePoolOptions::new()
                .max_connections(cfg.max_connections.max(1))
                .acquire_timeout(acquire)
                .connect_with(opts)
                .await
                .map_err(|source| DbError::Connect {
                    engine: Engine::Sqlite,
                    source,
                })?;
            checkpoint_in_background(pool.clone());
            Ok(Db::Sqlite(pool))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url).map_err(|source| DbError::Connect {
                engine: Engine::Postgres,
                source,
            })?;
            let pool = PgPoolOptions::new()
                .max_connections(cfg.max_connections.max(1))
                .acquire_timeout(acquire)
                .connect_with(opts)
                .await
                .map_err(|source| DbError::Connect {
                    engine: Engine::Postgres,
                    source,
                })?;
            Ok(Db::Postgres(pool))
        } else {
            let scheme = url.split(':').next().unwrap_or_default().to_owned();
            Err(DbError::Scheme(scheme))
        }
    }

    /// Which engine this is.
    pub fn engine(&self) -> Engine {
        match self {
            Db::Sqlite(_) => Engine::Sqlite,
            Db::Postgres(_) => Engine::Postgres,
        }
    }

    /// A trivial query, for `/readyz`.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        match self {
            Db::Sqlite(p) => sqlx::query("SELECT 1").execute(p).await.map(|_| ()),
            Db::Postgres(p) => sqlx::query("SELECT 1").execute(p).await.map(|_| ()),
        }
    }

    /// Closes every connection (at shutdown, after the servers have drained).
    pub async fn close(&self) {
        match self {
            Db::Sqlite(p) => p.close().await,
            Db::Postgres(p) => p.close().await,
        }
    }
}

/// Runs one service's embedded migrations, tolerating the other services' rows in
/// the shared migrations table.
#[macro_export]
macro_rules! run_migrations {
    ($db:expr, $sqlite_dir:literal, $pg_dir:literal) => {{
        match $db {
            $crate::db::Db::Sqlite(pool) => {
                let mut m = ::sqlx::migrate!($sqlite_dir);
                m.set_ignore_missing(true);
                m.run(pool).await
            }
            $crate::db::Db::Postgres(pool) => {
                let mut m = ::sqlx::migrate!($pg_dir);
                m.set_ignore_missing(true);
                m.run(pool).await
            }
        }
    }};
}
