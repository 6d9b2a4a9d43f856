//! The SQL behind [`MediaStore`], written once and compiled for both engines.
//!
//! Both SQLite and PostgreSQL accept `$n` placeholders, `RETURNING` and
//! `ON CONFLICT … DO NOTHING`, so one body of SQL serves both; the macro takes
//! the one fragment that differs (row locks exist only in PostgreSQL; SQLite
//! serialises writers instead). Sums are cast to BIGINT because PostgreSQL
//! widens `SUM(bigint)` to NUMERIC.

use super::*;
use natter_common::db::BeginWrite;
use sqlx::{PgPool, SqlitePool};

/// SQLite implementation.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Wraps a pool.
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

/// PostgreSQL implementation.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Wraps a pool.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn over_quota(quota: u64, used: u64, add: u64) -> bool {
    quota != 0 && used.saturating_add(add) > quota
}

/// Creates (if needed) and locks the usage row of `$user` inside `$tx`, and
/// returns (bytes, reserved, open uploads), not counting upload `$except`.
/// The INSERT comes first so SQLite takes its write lock at once.
macro_rules! lock_usage {
    ($tx:expr, $user:expr, $except:expr, $for_update:literal) => {{
        sqlx::query("INSERT INTO media_usage (user_id, bytes) VALUES ($1, 0) ON CONFLICT (user_id) DO NOTHING")
            .bind($user)
            .execute(&mut *$tx)
            .await?;
        let bytes: i64 = sqlx::query_scalar(concat!("SELECT bytes FROM media_usage WHERE user_id = $1", $for_update))
            .bind($user)
            .fetch_one(&mut *$tx)
            .await?;
        let (reserved, open): (i64, i64) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(length), 0) AS BIGINT), COUNT(*) FROM media_uploads
             WHERE user_id = $1 AND completed_hash IS NULL AND id <> $2",
        )
        .bind($user)
        .bind($except)
        .fetch_one(&mut *$tx)
        .await?;
        (bytes.max(0) as u64, reserved.max(0) as u64, open.max(0) as u32)
    }};
}

/// If blob `$hash` is in state `$state`: refunds every owner and deletes the
/// row, its owners and its references, inside `$tx`. A blob in another state
/// (revived, or not this caller's to delete) is left alone.
macro_rules! delete_blob_row {
    ($tx:expr, $hash:expr, $state:expr, $for_update:literal) => {{
        // A write first, so SQLite takes its lock now (see lock_usage!).
        sqlx::query("UPDATE media_blobs SET state = state WHERE hash = $1")
            .bind($hash)
            .execute(&mut *$tx)
            .await?;
        let st: Option<String> = sqlx::query_scalar(concat!(
            "SELECT state FROM media_blobs WHERE hash = $1",
            $for_update
        ))
        .bind($hash)
        .fetch_optional(&mut *$tx)
        .await?;
        if st.as_deref() == Some($state) {
            let owners: Vec<(String, i64)> =
                sqlx::query_as("SELECT user_id, size FROM media_owners WHERE hash = $1")
                    .bind($hash)
                    .fetch_all(&mut *$tx)
                    .await?;
            for (user, size) in owners {
                sqlx::query("UPDATE media_usage SET bytes = bytes - $2 WHERE user_id = $1")
                    .bind(&user)
                    .bind(size)
                    .execute(&mut *$tx)
                    .await?;
            }
            sqlx::query("DELETE FROM media_owners WHERE hash = $1")
                .bind($hash)
                .execute(&mut *$tx)
                .await?;
            sqlx::query("DELETE FROM media_refs WHERE hash = $1")
                .bind($hash)
                .execute(&mut *$tx)
                .await?;
            sqlx::query("DELETE FROM media_blobs WHERE hash = $1")
                .bind($hash)
                .execute(&mut *$tx)
                .await?;
        }
    }};
}

/// A blob is collectable when ready, unheld and unreferenced since the ref
/// cutoff; pending since before the pending cutoff (a crashed upload); or
/// already being deleted. `$r`/`$p` are the placeholders of the two cutoffs.
macro_rules! collectable {
    ($r:literal, $p:literal) => {
        concat!(
            "((state = 'ready' AND held_refs = 0 AND last_ref_at <= ",
            $r,
            ") OR (state = 'pending' AND created_at <= ",
            $p,
            ") OR state = 'deleting')"
        )
    };
}

macro_rules! sql_store {
    ($store:ty, for_update = $for_update:literal, pool = $variant:ident) => {
        #[async_trait]
        impl MediaStore for $store {
            async fn migrate(&self) -> StoreResult<()> {
                let db = Db::$variant(self.pool.clone());
                natter_common::run_migrations!(&db, "./migrations/sqlite", "./migrations/postgres")
                    .map_err(|e| StoreError(sqlx::Error::Migrate(Box::new(e))))
            }

            async fn blob(&self, hash: &str) -> StoreResult<Option<BlobRecord>> {
                Ok(sqlx::query_as::<_, BlobRecord>("SELECT * FROM media_blobs WHERE hash = $1")
                    .bind(hash)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn claim_blob(
                &self,
                blob: &BlobRecord,
                owner: &str,
                quota: u64,
                finishing_upload: Option<&str>,
                now: UnixMillis,
            ) -> StoreResult<Claim> {
                let mut tx = self.pool.begin_write().await?;
                let (bytes, reserved, _) = lock_usage!(tx, owner, finishing_upload.unwrap_or(""), $for_update);
                let used = bytes + reserved;
                let existing = sqlx::query_as::<_, BlobRecord>(concat!("SELECT * FROM media_blobs WHERE hash = $1", $for_update))
                    .bind(&blob.hash)
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some(existing) = existing {
                    if existing.state != state::READY {
                        return Ok(Claim::Busy);
                    }
                    let owned: Option<String> = sqlx::query_scalar("SELECT user_id FROM media_owners WHERE hash = $1 AND user_id = $2")
                        .bind(&blob.hash)
                        .bind(owner)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if owned.is_none() {
                        if over_quota(quota, used, existing.size as u64) {
                            return Ok(Claim::QuotaExceeded { used, quota });
                        }
                        sqlx::query("INSERT INTO media_owners (hash, user_id, size, created_at) VALUES ($1, $2, $3, $4)")
                            .bind(&blob.hash)
                            .bind(owner)
                            .bind(existing.size)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                        sqlx::query("UPDATE media_usage SET bytes = bytes + $2 WHERE user_id = $1")
                            .bind(owner)
                            .bind(existing.size)
                            .execute(&mut *tx)
                            .await?;
                    }
                    let updated = sqlx::query_as::<_, BlobRecord>(
                        "UPDATE media_blobs SET last_ref_at = CASE WHEN last_ref_at < $2 THEN $2 ELSE last_ref_at END
                         WHERE hash = $1 RETURNING *",
                    )
                    .bind(&blob.hash)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    return Ok(Claim::Existing(Box::new(updated)));
                }
                if over_quota(quota, used, blob.size as u64) {
                    return Ok(Claim::QuotaExceeded { used, quota });
                }
                let inserted = sqlx::query(
                    "INSERT INTO media_blobs (hash, size, content_type, opaque, state, width, height, thumb_width, thumb_height,
                         preview, preview_width, preview_height, thumb_note, uploader, created_at, last_ref_at, held_refs)
                     VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14, 0)
                     ON CONFLICT (hash) DO NOTHING",
                )
                .bind(&blob.hash)
                .bind(blob.size)
                .bind(&blob.content_type)
                .bind(blob.opaque)
                .bind(blob.width)
                .bind(blob.height)
                .bind(blob.thumb_width)
                .bind(blob.thumb_height)
                .bind(&blob.preview)
                .bind(blob.preview_width)
                .bind(blob.preview_height)
                .bind(&blob.thumb_note)
                .bind(owner)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if inserted.rows_affected() == 0 {
                    // Another upload of the same bytes inserted it meanwhile.
                    return Ok(Claim::Busy);
                }
                sqlx::query("INSERT INTO media_owners (hash, user_id, size, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(&blob.hash)
                    .bind(owner)
                    .bind(blob.size)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE media_usage SET bytes = bytes + $2 WHERE user_id = $1")
                    .bind(owner)
                    .bind(blob.size)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(Claim::Created)
            }

            async fn mark_ready(&self, hash: &str) -> StoreResult<()> {
                let r = sqlx::query("UPDATE media_blobs SET state = 'ready' WHERE hash = $1 AND state = 'pending'")
                    .bind(hash)
                    .execute(&self.pool)
                    .await?;
                if r.rows_affected() == 0 {
                    // Collected as a crashed upload while this one was still running.
                    return Err(StoreError(sqlx::Error::RowNotFound));
                }
                Ok(())
            }

            async fn unclaim(&self, hash: &str) -> StoreResult<()> {
                let mut tx = self.pool.begin_write().await?;
                delete_blob_row!(tx, hash, state::PENDING, $for_update);
                tx.commit().await?;
                Ok(())
            }

            async fn add_ref(&self, hash: &str, kind: &str, ref_id: &str, holds: bool, by: &str, now: UnixMillis) -> StoreResult<RefAdded> {
                let mut tx = self.pool.begin_write().await?;
                // A write first, so SQLite takes its lock now (see lock_usage!);
                // in PostgreSQL the row lock orders us against the collector.
                sqlx::query("UPDATE media_blobs SET held_refs = held_refs WHERE hash = $1")
                    .bind(hash)
                    .execute(&mut *tx)
                    .await?;
                let st: Option<String> = sqlx::query_scalar(concat!("SELECT state FROM media_blobs WHERE hash = $1", $for_update))
                    .bind(hash)
                    .fetch_optional(&mut *tx)
                    .await?;
                if st.as_deref() != Some(state::READY) {
                    return Ok(RefAdded::NoBlob);
                }
                let inserted = sqlx::query(
                    "INSERT INTO media_refs (hash, kind, ref_id, holds, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (hash, kind, ref_id) DO NOTHING",
                )
                .bind(hash)
                .bind(kind)
                .bind(ref_id)
                .bind(holds)
                .bind(by)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if inserted.rows_affected() == 0 {
                    return Ok(RefAdded::Exists);
                }
                sqlx::query(
                    "UPDATE media_blobs SET last_ref_at = CASE WHEN last_ref_at < $2 THEN $2 ELSE last_ref_at END,
                         held_refs = held_refs + $3 WHERE hash = $1",
                )
                .bind(hash)
                .bind(now)
                .bind(i64::from(holds))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(RefAdded::Added)
            }

            async fn remove_ref(&self, hash: &str, kind: &str, ref_id: &str, now: UnixMillis) -> StoreResult<bool> {
                let mut tx = self.pool.begin_write().await?;
                let holds: Option<bool> =
                    sqlx::query_scalar("DELETE FROM media_refs WHERE hash = $1 AND kind = $2 AND ref_id = $3 RETURNING holds")
                        .bind(hash)
                        .bind(kind)
                        .bind(ref_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some(holds) = holds else {
                    return Ok(false);
                };
                sqlx::query(
                    "UPDATE media_blobs SET last_ref_at = CASE WHEN last_ref_at < $2 THEN $2 ELSE last_ref_at END,
                         held_refs = held_refs - $3 WHERE hash = $1",
                )
                .bind(hash)
                .bind(now)
                .bind(i64::from(holds))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn refs(&self, hash: &str) -> StoreResult<Vec<BlobRef>> {
                Ok(sqlx::query_as::<_, BlobRef>(
                    "SELECT kind, ref_id, holds, created_by, created_at FROM media_refs WHERE hash = $1 ORDER BY created_at, kind, ref_id",
                )
                .bind(hash)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn is_owner(&self, hash: &str, user_id: &str) -> StoreResult<bool> {
                let found: Option<String> = sqlx::query_scalar("SELECT user_id FROM media_owners WHERE hash = $1 AND user_id = $2")
                    .bind(hash)
                    .bind(user_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(found.is_some())
            }

            async fn usage(&self, user_id: &str) -> StoreResult<Usage> {
                let bytes: Option<i64> = sqlx::query_scalar("SELECT bytes FROM media_usage WHERE user_id = $1")
                    .bind(user_id)
                    .fetch_optional(&self.pool)
                    .await?;
                let (reserved, open): (i64, i64) = sqlx::query_as(
                    "SELECT CAST(COALESCE(SUM(length), 0) AS BIGINT), COUNT(*) FROM media_uploads
                     WHERE user_id = $1 AND completed_hash IS NULL",
                )
                .bind(user_id)
                .fetch_one(&self.pool)
                .await?;
                Ok(Usage {
                    bytes: bytes.unwrap_or(0).max(0) as u64,
                    reserved: reserved.max(0) as u64,
                    open_uploads: open.max(0) as u32,
                })
            }

            async fn create_upload(&self, u: &UploadRow, quota: u64, max_open: u32) -> StoreResult<UploadCreated> {
                let mut tx = self.pool.begin_write().await?;
                let (bytes, reserved, open) = lock_usage!(tx, &u.user_id, "", $for_update);
                if open >= max_open {
                    return Ok(UploadCreated::TooManyOpen(open));
                }
                if over_quota(quota, bytes + reserved, u.length.max(0) as u64) {
                    return Ok(UploadCreated::QuotaExceeded { used: bytes + reserved, quota });
                }
                sqlx::query(
                    "INSERT INTO media_uploads (id, user_id, length, received, opaque, claimed_hash, metadata, hash_state, head,
                         backend_state, created_at, expires_at, lease_token, lease_until, completed_hash)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                )
                .bind(&u.id)
                .bind(&u.user_id)
                .bind(u.length)
                .bind(u.received)
                .bind(u.opaque)
                .bind(&u.claimed_hash)
                .bind(&u.metadata)
                .bind(&u.hash_state)
                .bind(&u.head)
                .bind(&u.backend_state)
                .bind(u.created_at)
                .bind(u.expires_at)
                .bind(&u.lease_token)
                .bind(u.lease_until)
                .bind(&u.completed_hash)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(UploadCreated::Created)
            }

            async fn upload(&self, id: &str) -> StoreResult<Option<UploadRow>> {
                Ok(sqlx::query_as::<_, UploadRow>("SELECT * FROM media_uploads WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn lease_upload(&self, id: &str, token: &str, now: UnixMillis, until: UnixMillis) -> StoreResult<Option<UploadRow>> {
                Ok(sqlx::query_as::<_, UploadRow>(
                    "UPDATE media_uploads SET lease_token = $2, lease_until = $4
                     WHERE id = $1 AND (lease_token IS NULL OR lease_until <= $3) RETURNING *",
                )
                .bind(id)
                .bind(token)
                .bind(now)
                .bind(until)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn save_upload_progress(&self, id: &str, token: &str, expected_received: i64, p: &UploadProgress, release: bool) -> StoreResult<bool> {
                let r = sqlx::query(
                    "UPDATE media_uploads SET received = $4, hash_state = $5, head = $6, backend_state = $7, expires_at = $8,
                         lease_token = CASE WHEN $9 THEN NULL ELSE lease_token END,
                         lease_until = CASE WHEN $9 THEN 0 ELSE lease_until END
                     WHERE id = $1 AND lease_token = $2 AND received = $3",
                )
                .bind(id)
                .bind(token)
                .bind(expected_received)
                .bind(p.received)
                .bind(&p.hash_state)
                .bind(&p.head)
                .bind(&p.backend_state)
                .bind(p.expires_at)
                .bind(release)
                .execute(&self.pool)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn release_upload(&self, id: &str, token: &str) -> StoreResult<()> {
                sqlx::query("UPDATE media_uploads SET lease_token = NULL, lease_until = 0 WHERE id = $1 AND lease_token = $2")
                    .bind(id)
                    .bind(token)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn complete_upload(&self, id: &str, hash: &str) -> StoreResult<()> {
                sqlx::query("UPDATE media_uploads SET completed_hash = $2, lease_token = NULL, lease_until = 0 WHERE id = $1")
                    .bind(id)
                    .bind(hash)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn delete_upload(&self, id: &str) -> StoreResult<Option<UploadRow>> {
                Ok(sqlx::query_as::<_, UploadRow>("DELETE FROM media_uploads WHERE id = $1 RETURNING *")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn expired_uploads(&self, now: UnixMillis, limit: i64) -> StoreResult<Vec<UploadRow>> {
                Ok(sqlx::query_as::<_, UploadRow>(
                    "SELECT * FROM media_uploads WHERE expires_at <= $1 AND lease_until <= $1 ORDER BY expires_at LIMIT $2",
                )
                .bind(now)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn delete_expired_upload(&self, id: &str, now: UnixMillis) -> StoreResult<bool> {
                let r = sqlx::query("DELETE FROM media_uploads WHERE id = $1 AND expires_at <= $2 AND lease_until <= $2")
                    .bind(id)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn collectable_blobs(&self, ref_cutoff: UnixMillis, pending_cutoff: UnixMillis, limit: i64) -> StoreResult<Vec<BlobRecord>> {
                Ok(sqlx::query_as::<_, BlobRecord>(concat!(
                    "SELECT * FROM media_blobs WHERE ",
                    collectable!("$1", "$2"),
                    " ORDER BY last_ref_at LIMIT $3"
                ))
                .bind(ref_cutoff)
                .bind(pending_cutoff)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn begin_delete(&self, hash: &str, ref_cutoff: UnixMillis, pending_cutoff: UnixMillis) -> StoreResult<bool> {
                let r = sqlx::query(concat!(
                    "UPDATE media_blobs SET state = 'deleting' WHERE hash = $1 AND ",
                    collectable!("$2", "$3")
                ))
                .bind(hash)
                .bind(ref_cutoff)
                .bind(pending_cutoff)
                .execute(&self.pool)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn finish_delete(&self, hash: &str) -> StoreResult<()> {
                let mut tx = self.pool.begin_write().await?;
                delete_blob_row!(tx, hash, state::DELETING, $for_update);
                tx.commit().await?;
                Ok(())
            }
        }
    };
}

sql_store!(SqliteStore, for_update = "", pool = Sqlite);
sql_store!(PgStore, for_update = " FOR UPDATE", pool = Postgres);
