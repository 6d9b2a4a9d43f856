//! Storage for signaling: the call log (its own table, `call_log`) and the
//! callee lookup before an offer (auth's `accounts` and `devices`, read only,
//! as chat-core reads them).
//!
//! SQLite and PostgreSQL accept the same SQL here (`$n` placeholders), so one
//! body of SQL serves both pools.

use crate::call::{CallOutcome, CallRecord};
use async_trait::async_trait;
use natter_common::calls::DeviceGen;
use natter_common::{Db, UnixMillis};
use natter_proto::{CallId, CallMedia, DeviceId, EndReason, UserId};
use std::sync::Arc;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// What the store knows about a callee.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CalleeInfo {
    /// The account exists.
    pub exists: bool,
    /// Its registered devices.
    pub devices: Vec<DeviceGen>,
}

/// The call log and callee lookups.
#[async_trait]
pub trait CallStore: Send + Sync + 'static {
    /// Applies signaling's migrations.
    async fn migrate(&self) -> StoreResult<()>;
    /// Whether `user` exists and its devices.
    async fn callee(&self, user: &UserId) -> StoreResult<CalleeInfo>;
    /// Appends an ended call.
    async fn record(&self, r: &CallRecord) -> StoreResult<()>;
    /// Calls `user` placed or received that started before `before`, newest
    /// first, at most `limit`.
    async fn history(
        &self,
        user: &UserId,
        before: UnixMillis,
        limit: u32,
    ) -> StoreResult<Vec<CallRecord>>;
}

/// The store for an open pool.
pub fn for_db(db: &Db) -> Arc<dyn CallStore> {
    Arc::new(SqlStore(db.clone()))
}

/// [`CallStore`] on SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub struct SqlStore(pub Db);

type Row = (
    String,
    String,
    i64,
    String,
    Option<i64>,
    String,
    i64,
    Option<i64>,
    i64,
    String,
    String,
);

/// Runs one query shape on whichever pool this is.
macro_rules! on_pool {
    ($db:expr, |$p:ident| $body:expr) => {
        match $db {
            Db::Sqlite($p) => $body,
            Db::Postgres($p) => $body,
        }
    };
}

#[async_trait]
impl CallStore for SqlStore {
    async fn migrate(&self) -> StoreResult<()> {
        natter_common::run_migrations!(&self.0, "./migrations/sqlite", "./migrations/postgres")?;
        Ok(())
    }

    async fn callee(&self, user: &UserId) -> StoreResult<CalleeInfo> {
        const EXISTS: &str = "SELECT COUNT(*) FROM accounts WHERE user_id = $1";
        const DEVICES: &str =
            "SELECT device_id, generation FROM devices WHERE user_id = $1 ORDER BY device_id";
        let (n, rows): (i64, Vec<(i64, i64)>) = on_pool!(&self.0, |p| {
            let n = sqlx::query_scalar(EXISTS)
                .bind(user.as_str())
                .fetch_one(p)
                .await?;
            let rows = sqlx::query_as(DEVICES)
                .bind(user.as_str())
                .fetch_all(p)
                .await?;
            (n, rows)
        });
        Ok(CalleeInfo {
            exists: n > 0,
            devices: rows
                .into_iter()
                .filter_map(|(d, generation)| {
                    Some(DeviceGen {
                        device: DeviceId::try_from(d).ok()?,
                        generation,
                    })
                })
                .collect(),
        })
    }

    async fn record(&self, r: &CallRecord) -> StoreResult<()> {
        const INSERT: &str = "INSERT INTO call_log (call_id, caller, caller_device, callee, \
             answered_device, media, started_at, answered_at, ended_at, outcome, reason) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
        on_pool!(&self.0, |p| {
            sqlx::query(INSERT)
                .bind(r.call_id.as_str())
                .bind(r.caller.as_str())
                .bind(i64::from(r.caller_device))
                .bind(r.callee.as_str())
                .bind(r.answered_device.map(i64::from))
                .bind(r.media.as_str())
                .bind(r.started_at)
                .bind(r.answered_at)
                .bind(r.ended_at)
                .bind(r.outcome.as_str())
                .bind(r.reason.as_str())
                .execute(p)
                .await?;
        });
        Ok(())
    }

    async fn history(
        &self,
        user: &UserId,
        before: UnixMillis,
        limit: u32,
    ) -> StoreResult<Vec<CallRecord>> {
        const SELECT: &str = "SELECT call_id, caller, caller_device, callee, answered_device, \
             media, started_at, answered_at, ended_at, outcome, reason FROM call_log \
             WHERE (caller = $1 OR callee = $1) AND started_at < $2 \
             ORDER BY started_at DESC, id DESC LIMIT $3";
        let rows: Vec<Row> = on_pool!(&self.0, |p| {
            sqlx::query_as(SELECT)
                .bind(user.as_str())
                .bind(before)
                .bind(i64::from(limit))
                .fetch_all(p)
                .await?
        });
        Ok(rows.into_iter().filter_map(from_row).collect())
    }
}

fn from_row(r: Row) -> Option<CallRecord> {
    let (call_id, caller, caller_device, callee, answered_device, media, started_at) =
        (r.0, r.1, r.2, r.3, r.4, r.5, r.6);
    let media = match media.as_str() {
        "video" => CallMedia::Video,
        _ => CallMedia::Audio,
    };
    let reason = EndReason::ALL
        .iter()
        .copied()
        .find(|x| x.as_str() == r.10)?;
    Some(CallRecord {
        call_id: CallId(call_id),
        caller: UserId(caller),
        caller_device: DeviceId::try_from(caller_device).ok()?,
        callee: UserId(callee),
        answered_device: answered_device.and_then(|d| DeviceId::try_from(d).ok()),
        media,
        started_at,
        answered_at: r.7,
        ended_at: r.8,
        outcome: CallOutcome::parse(&r.9)?,
        reason,
    })
}
