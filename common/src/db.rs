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
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
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
    /// SQLite only: how long a second `natter` process on the same database
    /// file waits for the first to exit before it gives up (one process per
    /// SQLite database; a replacement pod waits for the old one to drain).
    pub sqlite_lock_wait_secs: u64,
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
            sqlite_lock_wait_secs: 90,
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

/// PASSIVE passes per tick at most while writers keep appending.
const MAX_PASSES: usize = 4;

/// A pass that found at most this many frames added since the previous one
/// leaves so little behind that the writer can finish the job itself.
const NEARLY_CAUGHT_UP_FRAMES: i64 = 64;

/// Below this many frames the WAL is not worth a restart.
const RESTART_FROM_FRAMES: i64 = 256;

/// From this many frames (64 MiB of 4 KiB pages) on, the writer is told to
/// finish even if the passes did not converge: a longer catch-up once beats
/// a WAL that grows until the writes pause.
const FORCE_RESTART_FROM_FRAMES: i64 = 16 * 1024;

/// A WAL that grew past this during a burst is truncated back to it when it
/// restarts (SQLite's `journal_size_limit`).
pub const WAL_SIZE_LIMIT_BYTES: i64 = 64 * 1024 * 1024;

/// The background checkpoint's word to a database's dedicated writer (the
/// chat store's direct SQLite writer): "the WAL is nearly all copied; one
/// PASSIVE checkpoint on your connection, between two commits, finishes it".
///
/// Why the writer: SQLite restarts the WAL from its beginning only when a
/// write transaction begins with every frame already copied. Under sustained
/// commits the background checkpoint never gets there (each pass copies what
/// was in the WAL when it began while new commits append), so the WAL grew
/// without end: 1 GB in 15 s at 5,000 messages/s, every append a new block
/// for the file system to allocate and zero. A RESTART checkpoint from the
/// background connection would have to win the write lock from a writer
/// that holds it nearly all the time.
#[derive(Debug, Default)]
pub struct WalCatchUp {
    nearly_done: AtomicBool,
}

impl WalCatchUp {
    /// Whether the writer should checkpoint now; clears the flag.
    pub fn take(&self) -> bool {
        self.nearly_done.swap(false, Ordering::AcqRel)
    }

    /// Asks the writer to checkpoint before its next commit.
    pub fn signal(&self) {
        self.nearly_done.store(true, Ordering::Release);
    }
}

/// The [`WalCatchUp`] of a database file, shared by its pool's background
/// checkpoint and any direct writer on the same file in this process.
pub fn wal_catch_up(path: &Path) -> Arc<WalCatchUp> {
    static BY_FILE: OnceLock<Mutex<HashMap<PathBuf, Arc<WalCatchUp>>>> = OnceLock::new();
    let mut files = BY_FILE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    files.entry(path.to_path_buf()).or_default().clone()
}

/// Moves the WAL into the database file every [`CHECKPOINT_EVERY`] on a pool
/// connection until the pool closes. PASSIVE never waits for readers or
/// writers, so commits go on while pages are copied. Passes repeat while
/// writers keep appending; once a pass finds little new, the file's writer
/// is told to finish (see [`WalCatchUp`]).
fn checkpoint_in_background(pool: SqlitePool, catch_up: Arc<WalCatchUp>) {
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
            match checkpoint_passes(&pool).await {
                Ok(true) => catch_up.signal(),
                Ok(false) => {}
                Err(sqlx::Error::PoolClosed) => break,
                Err(e) => tracing::warn!(error = %e, "SQLite WAL checkpoint failed; retrying"),
            }
        }
    });
}

/// One tick's PASSIVE passes; true when the WAL is large and nearly copied.
async fn checkpoint_passes(pool: &SqlitePool) -> Result<bool, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let mut previous: Option<i64> = None;
    for _ in 0..MAX_PASSES {
        // (busy, frames in the WAL when the pass began, frames copied)
        let (busy, log, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&mut *conn)
            .await?;
        if busy != 0 || log < RESTART_FROM_FRAMES {
            return Ok(false);
        }
        if previous.is_some_and(|p| log - p <= NEARLY_CAUGHT_UP_FRAMES) {
            return Ok(true);
        }
        previous = Some(log);
    }
    Ok(previous.is_some_and(|log| log >= FORCE_RESTART_FROM_FRAMES))
}

/// Opens a transaction that will write.
///
/// Why not `Pool::begin`: on SQLite that is a deferred `BEGIN`, which takes
/// the write lock only at the first write, and a transaction that already
/// read cannot wait for that lock (SQLite skips the busy handler there, as
/// waiting could deadlock): it fails at once with "database is locked" when
/// another connection holds the lock, even for a moment. `BEGIN IMMEDIATE`
/// takes the lock first and waits for it up to the busy timeout. PostgreSQL
/// locks rows, not the database: its plain `BEGIN` is right.
pub trait BeginWrite {
    type Database: sqlx::Database;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<
        Output = Result<sqlx::Transaction<'static, Self::Database>, sqlx::Error>,
    > + Send;
}

impl BeginWrite for SqlitePool {
    type Database = sqlx::Sqlite;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<
        Output = Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error>,
    > + Send {
        self.begin_with("BEGIN IMMEDIATE")
    }
}

impl BeginWrite for PgPool {
    type Database = sqlx::Postgres;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<
        Output = Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error>,
    > + Send {
        self.begin()
    }
}

/// The SQLite database file `cfg` names (`None` for PostgreSQL or an in-memory
/// SQLite URL): `<data_dir>/natter.db` when the URL is empty.
pub fn sqlite_file(cfg: &DatabaseConfig, data_dir: &Path) -> Option<PathBuf> {
    let url = cfg.url.expose();
    if url.is_empty() {
        return Some(data_dir.join("natter.db"));
    }
    if !url.starts_with("sqlite:") {
        return None;
    }
    let opts = SqliteConnectOptions::from_str(url).ok()?;
    let file = opts.get_filename();
    (!file.as_os_str().is_empty() && file != Path::new(":memory:")).then(|| file.to_path_buf())
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
                .pragma("journal_size_limit", WAL_SIZE_LIMIT_BYTES.to_string())
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
            let catch_up = wal_catch_up(pool.connect_options().get_filename());
            checkpoint_in_background(pool.clone(), catch_up);
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
/// the shared migrations table. SQLite runs them through sqlx (one process,
/// before it serves); PostgreSQL through [`crate::migrate::run_postgres`],
/// which can apply a migration step by step outside a transaction (concurrent
/// index builds) and accepts the released checksums of rewritten migrations
/// (`released: &[...]`).
#[macro_export]
macro_rules! run_migrations {
    ($db:expr, $sqlite_dir:literal, $pg_dir:literal) => {
        $crate::run_migrations!($db, $sqlite_dir, $pg_dir, released: &[])
    };
    ($db:expr, $sqlite_dir:literal, $pg_dir:literal, released: $released:expr) => {{
        match $db {
            $crate::db::Db::Sqlite(pool) => {
                let mut m = ::sqlx::migrate!($sqlite_dir);
                m.set_ignore_missing(true);
                m.run(pool).await
            }
            $crate::db::Db::Postgres(pool) => {
                $crate::migrate::run_postgres(::sqlx::migrate!($pg_dir), pool, $released).await
            }
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TempDir;

    /// A WAL-mode pool without the background task, so that only the test
    /// checkpoints.
    async fn quiet_pool(dir: &TempDir) -> SqlitePool {
        let opts = SqliteConnectOptions::new()
            .filename(dir.path().join("t.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .pragma("wal_autocheckpoint", "0");
        SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(opts)
            .await
            .expect("open")
    }

    /// A write transaction that finds another writer holding the lock waits
    /// for it; a deferred one that already read fails at once (why
    /// [`BeginWrite`] exists: CI saw a token refresh fail so).
    #[tokio::test]
    async fn a_write_transaction_waits_for_another_writer() {
        let dir = TempDir::new("db-begin-write");
        let pool = quiet_pool(&dir).await;
        sqlx::query("CREATE TABLE t (k INTEGER PRIMARY KEY, v INTEGER)")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO t VALUES (1, 0)")
            .execute(&pool)
            .await
            .unwrap();
        let mut holder = pool.begin_write().await.unwrap();
        sqlx::query("UPDATE t SET v = v + 1 WHERE k = 1")
            .execute(&mut *holder)
            .await
            .unwrap();
        let mut deferred = pool.begin().await.unwrap();
        sqlx::query("SELECT v FROM t WHERE k = 1")
            .fetch_one(&mut *deferred)
            .await
            .unwrap();
        let e = sqlx::query("UPDATE t SET v = 100 WHERE k = 1")
            .execute(&mut *deferred)
            .await
            .expect_err("a read transaction cannot wait for the write lock");
        assert!(e.to_string().contains("database is locked"), "{e}");
        deferred.rollback().await.unwrap();
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move {
                let mut tx = pool.begin_write().await?;
                let v: i64 = sqlx::query_scalar("SELECT v FROM t WHERE k = 1")
                    .fetch_one(&mut *tx)
                    .await?;
                sqlx::query("UPDATE t SET v = $1 WHERE k = 1")
                    .bind(v + 10)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiter.is_finished(), "waits while the lock is held");
        holder.commit().await.unwrap();
        waiter
            .await
            .unwrap()
            .expect("got the lock once it was free");
        let v: i64 = sqlx::query_scalar("SELECT v FROM t WHERE k = 1")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(v, 11, "the waiter read the holder's committed write");
    }

    async fn write_pages(pool: &SqlitePool, pages: u32) {
        sqlx::query("CREATE TABLE IF NOT EXISTS filler (x BLOB)")
            .execute(pool)
            .await
            .unwrap();
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1)
             INSERT INTO filler SELECT randomblob(3000) FROM n",
        )
        .bind(pages)
        .execute(pool)
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_large_wal_with_nothing_new_is_reported_nearly_done() {
        let dir = TempDir::new("natter-wal");
        let pool = quiet_pool(&dir).await;
        write_pages(&pool, 600).await;
        assert!(
            checkpoint_passes(&pool).await.unwrap(),
            "600 pages copied and no new frames: the writer should finish the job"
        );
    }

    #[tokio::test]
    async fn a_small_wal_is_left_alone() {
        let dir = TempDir::new("natter-wal");
        let pool = quiet_pool(&dir).await;
        write_pages(&pool, 10).await;
        assert!(!checkpoint_passes(&pool).await.unwrap());
    }

    #[test]
    fn a_file_has_one_catch_up_flag_and_taking_it_clears_it() {
        let dir = TempDir::new("natter-wal");
        let path = dir.path().join("x.db");
        let flag = wal_catch_up(&path);
        assert!(!flag.take());
        wal_catch_up(&path).signal();
        assert!(flag.take(), "the same file shares one flag");
        assert!(!flag.take(), "taking the flag clears it");
        wal_catch_up(&dir.path().join("other.db")).signal();
        assert!(!flag.take(), "another file's flag is its own");
    }
}
