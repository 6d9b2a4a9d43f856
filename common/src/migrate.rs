//! Applying a service's embedded migrations to PostgreSQL without blocking
//! the pods that keep serving meanwhile (`natter migrate` runs as a Helm hook
//! while the old release still serves; docs/runbook.md "Migrations and locks").
//!
//! sqlx's own runner does two things that get in the way there:
//!
//! - A migration marked `-- no-transaction` is sent as one query string, and
//!   PostgreSQL runs a multi-statement string as one implicit transaction, in
//!   which `CREATE INDEX CONCURRENTLY` is refused. So such a migration is
//!   split here into steps (at lines starting with [`STEP_MARKER`]) and each
//!   step is sent on its own: a step is one transaction (several statements
//!   in it are atomic), or one concurrent index build, or a top-level `DO`
//!   block that commits between batches. A step that cannot get a table lock
//!   within its `lock_timeout` (SQLSTATE 55P03) gave way to the queries queued
//!   behind it; it is tried again after a pause instead of failing the
//!   migration. Steps must be safe to run again: a failed no-transaction
//!   migration is not recorded and starts over from its first step.
//! - The checksum of an applied migration must equal that of its file. A
//!   migration rewritten after release (to lock less, say) is given the
//!   checksum of its released text ([`Released`]): databases that applied
//!   the released text still validate, and a database migrated with the new
//!   text records the same checksum, so the previous binary (a rollback) still
//!   starts on it. A rewrite must leave the schema where the released text did.
//!
//! Everything else is sqlx's behaviour: the same advisory lock (so two
//! migrators never interleave), the same `_sqlx_migrations` table, applied
//! versions of other services tolerated (`set_ignore_missing`), and an
//! ordinary migration applied in one transaction with its bookkeeping row.

use sqlx::migrate::{AppliedMigration, Migrate, MigrateError, Migration, MigrationType, Migrator};
use sqlx::{AssertSqlSafe, PgPool, SqlSafeStr};
use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A line starting with this begins a step of a no-transaction migration.
pub const STEP_MARKER: &str = "-- step:";

/// How long a step waits before trying again after a lock timeout: long
/// enough for the queries that queued behind its lock request to run.
const LOCK_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Lock timeouts a step survives before the migration fails (with 200 ms
/// timeouts and the pause, about 12 minutes of a table held by others).
const LOCK_RETRIES: u32 = 1_000;

/// PostgreSQL's `lock_not_available`, raised when `lock_timeout` expires.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// The text a migration was released with, whose checksum databases recorded.
#[derive(Debug, Clone, Copy)]
pub struct Released {
    /// Migration version.
    pub version: i64,
    /// The released SQL, byte for byte.
    pub sql: &'static str,
}

impl Released {
    /// sqlx's checksum of the released text (SHA-384 of the SQL).
    pub fn checksum(&self) -> Vec<u8> {
        Migration::new(
            self.version,
            Cow::Borrowed(""),
            MigrationType::Simple,
            AssertSqlSafe(self.sql).into_sql_str(),
            false,
        )
        .checksum
        .into_owned()
    }
}

/// Runs the pending migrations of `migrator` (from `sqlx::migrate!`) on
/// PostgreSQL; see the module documentation for how this differs from
/// [`Migrator::run`].
pub async fn run_postgres(
    migrator: Migrator,
    pool: &PgPool,
    released: &[Released],
) -> Result<(), MigrateError> {
    let table = migrator.table_name.clone();
    let mut migrations = migrator.migrations.into_owned();
    for r in released {
        if let Some(m) = migrations.iter_mut().find(|m| m.version == r.version) {
            m.checksum = Cow::Owned(r.checksum());
        }
    }
    let mut conn = pool.acquire().await?;
    conn.lock().await?;
    let outcome = apply_pending(&mut conn, &table, &migrations).await;
    // The advisory lock belongs to the session: a pooled connection that kept
    // it would block every later migrator. If unlocking fails, the connection
    // is closed instead of going back to the pool.
    match conn.unlock().await {
        Ok(()) => {}
        Err(e) => {
            let _ = conn.detach();
            if outcome.is_ok() {
                return Err(e);
            }
        }
    }
    outcome
}

async fn apply_pending(
    conn: &mut sqlx::pool::PoolConnection<sqlx::Postgres>,
    table: &str,
    migrations: &[Migration],
) -> Result<(), MigrateError> {
    conn.ensure_migrations_table(table).await?;
    if let Some(version) = conn.dirty_version(table).await? {
        return Err(MigrateError::Dirty(version));
    }
    let applied: HashMap<i64, AppliedMigration> = conn
        .list_applied_migrations(table)
        .await?
        .into_iter()
        .map(|m| (m.version, m))
        .collect();
    for m in migrations {
        if m.migration_type.is_down_migration() {
            continue;
        }
        match applied.get(&m.version) {
            Some(done) if done.checksum != m.checksum => {
                return Err(MigrateError::VersionMismatch(m.version));
            }
            Some(_) => {}
            None if m.no_tx => {
                let started = Instant::now();
                for step in steps(m.sql.as_str()) {
                    run_step(conn, m.version, step).await?;
                }
                // Recorded only once every step is done (sqlx's `skip` writes
                // the same row `apply` would).
                conn.skip(table, m).await?;
                tracing::info!(
                    version = m.version,
                    ms = started.elapsed().as_millis() as u64,
                    "migration applied step by step"
                );
            }
            None => {
                let took = conn.apply(table, m).await?;
                tracing::info!(
                    version = m.version,
                    ms = took.as_millis() as u64,
                    "migration applied"
                );
            }
        }
    }
    Ok(())
}

/// The steps of a no-transaction migration: the text between step markers,
/// leaving out parts that hold only comments (the header).
pub fn steps(sql: &str) -> Vec<&str> {
    let mut starts: Vec<usize> = vec![0];
    let mut offset = 0;
    for line in sql.split_inclusive('\n') {
        if line.starts_with(STEP_MARKER) && offset > 0 {
            starts.push(offset);
        }
        offset += line.len();
    }
    starts.push(sql.len());
    starts
        .windows(2)
        .map(|w| &sql[w[0]..w[1]])
        .filter(|s| {
            s.lines().any(|l| {
                let l = l.trim();
                !l.is_empty() && !l.starts_with("--")
            })
        })
        .collect()
}

async fn run_step(
    conn: &mut sqlx::pool::PoolConnection<sqlx::Postgres>,
    version: i64,
    step: &str,
) -> Result<(), MigrateError> {
    let name = step
        .lines()
        .find_map(|l| l.strip_prefix(STEP_MARKER))
        .unwrap_or("")
        .trim()
        .to_owned();
    let started = Instant::now();
    let mut lock_timeouts = 0u32;
    loop {
        // The step is our own embedded migration text, never user input.
        match sqlx::raw_sql(AssertSqlSafe(step.to_owned()))
            .execute(&mut **conn)
            .await
        {
            Ok(_) => break,
            Err(sqlx::Error::Database(e))
                if e.code().as_deref() == Some(LOCK_NOT_AVAILABLE)
                    && lock_timeouts < LOCK_RETRIES =>
            {
                lock_timeouts += 1;
                tracing::warn!(
                    version,
                    step = %name,
                    lock_timeouts,
                    "migration step could not lock its table in time; trying again"
                );
                tokio::time::sleep(LOCK_RETRY_PAUSE).await;
            }
            Err(e) => return Err(MigrateError::ExecuteMigration(e, version)),
        }
    }
    tracing::info!(
        version,
        step = %name,
        ms = started.elapsed().as_millis() as u64,
        lock_timeouts,
        "migration step done"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_split_at_markers_and_skip_the_comment_header() {
        let sql = "-- no-transaction\n-- why\n\n-- step: one\nSELECT 1;\nSELECT 2;\n-- step: two\n-- a comment\nCREATE INDEX CONCURRENTLY i ON t (a);\n";
        assert_eq!(
            steps(sql),
            [
                "-- step: one\nSELECT 1;\nSELECT 2;\n",
                "-- step: two\n-- a comment\nCREATE INDEX CONCURRENTLY i ON t (a);\n"
            ]
        );
        assert_eq!(steps("SELECT 1;"), ["SELECT 1;"]);
    }

    #[test]
    fn a_released_checksum_is_sqlx_s_checksum_of_the_text() {
        let r = Released {
            version: 1,
            sql: "SELECT 1;\n",
        };
        use sha2::Digest;
        assert_eq!(r.checksum(), sha2::Sha384::digest(r.sql).to_vec());
    }
}
