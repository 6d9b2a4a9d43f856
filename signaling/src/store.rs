//! Storage for signaling: the call log (its own table, `call_log`) and the
//! callee lookup before an offer (auth's `accounts` and `devices`, read only,
//! as chat-core reads them).
//!
//! SQLite and PostgreSQL accept the same SQL here (`$n` placeholders), so one
//! body of SQL serves both pools.

use crate::call::{CallOutcome, CallRecord, LiveCall};
use async_trait::async_trait;
use natter_common::calls::DeviceGen;
use natter_common::db::BeginWrite;
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
    /// Keeps a ringing or answered call (owned by node `owner`) as live.
    async fn live(&self, c: &LiveCall, owner: &str) -> StoreResult<()> {
        self.live_many(&[c], owner).await
    }
    /// [`CallStore::live`] for several calls, in one transaction (in order:
    /// a later state of the same call wins).
    async fn live_many(&self, calls: &[&LiveCall], owner: &str) -> StoreResult<()>;
    /// Appends an ended call and forgets it as live, in one transaction. A
    /// row for the same call written by a sweep (its owner looked dead) is
    /// replaced by this, the true end.
    async fn record(&self, r: &CallRecord) -> StoreResult<()> {
        self.record_many(std::slice::from_ref(r)).await
    }
    /// [`CallStore::record`] for several calls, in one transaction.
    async fn record_many(&self, records: &[CallRecord]) -> StoreResult<()>;
    /// The owners of live calls.
    async fn live_owners(&self) -> StoreResult<Vec<String>>;
    /// Ends `owner`'s live calls as abandoned (failed, `connection_lost`,
    /// ended `now`); returns them. Concurrent sweeps of one owner log each
    /// call once.
    async fn close_abandoned(&self, owner: &str, now: UnixMillis) -> StoreResult<Vec<CallRecord>>;
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

/// Inserts one call-log row (`$conn`: a connection or transaction of either engine).
macro_rules! insert_record {
    ($conn:expr, $r:expr) => {{
        let r: &CallRecord = $r;
        sqlx::query(INSERT_RECORD)
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
            .execute($conn)
            .await?;
    }};
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

    async fn live_many(&self, calls: &[&LiveCall], owner: &str) -> StoreResult<()> {
        const UPSERT: &str = "INSERT INTO call_live (call_id, owner, caller, caller_device, callee, \
             media, started_at, answered_device, answered_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (call_id) DO UPDATE SET answered_device = excluded.answered_device, \
             answered_at = excluded.answered_at";
        on_pool!(&self.0, |p| {
            let mut tx = p.begin_write().await?;
            for c in calls {
                sqlx::query(UPSERT)
                    .bind(c.call_id.as_str())
                    .bind(owner)
                    .bind(c.caller.as_str())
                    .bind(i64::from(c.caller_device))
                    .bind(c.callee.as_str())
                    .bind(c.media.as_str())
                    .bind(c.started_at)
                    .bind(c.answered.map(|(d, _)| i64::from(d)))
                    .bind(c.answered.map(|(_, t)| t))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    async fn record_many(&self, records: &[CallRecord]) -> StoreResult<()> {
        const FORGET: &str = "DELETE FROM call_live WHERE call_id = $1";
        const SWEPT: &str = "DELETE FROM call_log WHERE call_id = $1 AND started_at = $2";
        on_pool!(&self.0, |p| {
            let mut tx = p.begin_write().await?;
            for r in records {
                let was_live = sqlx::query(FORGET)
                    .bind(r.call_id.as_str())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if was_live == 0 && r.answered_at.is_some() {
                    // Answered, so it was live: a sweep logged it meanwhile.
                    sqlx::query(SWEPT)
                        .bind(r.call_id.as_str())
                        .bind(r.started_at)
                        .execute(&mut *tx)
                        .await?;
                }
                insert_record!(&mut *tx, r);
            }
            tx.commit().await?;
        });
        Ok(())
    }

    async fn live_owners(&self) -> StoreResult<Vec<String>> {
        const OWNERS: &str = "SELECT DISTINCT owner FROM call_live ORDER BY owner";
        Ok(on_pool!(&self.0, |p| sqlx::query_scalar(OWNERS)
            .fetch_all(p)
            .await?))
    }

    async fn close_abandoned(&self, owner: &str, now: UnixMillis) -> StoreResult<Vec<CallRecord>> {
        const TAKE: &str = "DELETE FROM call_live WHERE owner = $1 RETURNING call_id, caller, \
             caller_device, callee, media, started_at, answered_device, answered_at";
        let mut closed = Vec::new();
        on_pool!(&self.0, |p| {
            let mut tx = p.begin_write().await?;
            let rows: Vec<LiveRow> = sqlx::query_as(TAKE).bind(owner).fetch_all(&mut *tx).await?;
            for row in rows {
                let Some(c) = live_from_row(row) else {
                    continue;
                };
                let r = c.abandoned(now);
                insert_record!(&mut *tx, &r);
                closed.push(r);
            }
            tx.commit().await?;
        });
        Ok(closed)
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

/// A `call_live` row.
type LiveRow = (
    String,
    String,
    i64,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
);

fn live_from_row(r: LiveRow) -> Option<LiveCall> {
    let (call_id, caller, caller_device, callee, media, started_at, device, at) = r;
    Some(LiveCall {
        call_id: CallId(call_id),
        caller: UserId(caller),
        caller_device: DeviceId::try_from(caller_device).ok()?,
        callee: UserId(callee),
        media: media_of(&media),
        started_at,
        answered: match (device, at) {
            (Some(d), Some(t)) => Some((DeviceId::try_from(d).ok()?, t)),
            _ => None,
        },
    })
}

fn media_of(s: &str) -> CallMedia {
    match s {
        "video" => CallMedia::Video,
        _ => CallMedia::Audio,
    }
}

const INSERT_RECORD: &str = "INSERT INTO call_log (call_id, caller, caller_device, callee, \
     answered_device, media, started_at, answered_at, ended_at, outcome, reason) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

fn from_row(r: Row) -> Option<CallRecord> {
    let (call_id, caller, caller_device, callee, answered_device, media, started_at) =
        (r.0, r.1, r.2, r.3, r.4, r.5, r.6);
    let media = media_of(&media);
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
