//! The SQL behind [`AuthStore`], written once and compiled for both engines.
//!
//! Both SQLite and PostgreSQL accept `$n` placeholders, `RETURNING`, and
//! `ON CONFLICT … DO UPDATE`, so one body of SQL serves both; the macro takes the
//! few dialect fragments that differ (row locks exist only in PostgreSQL; SQLite
//! serialises writers instead).

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

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

/// Inserts a device and its first refresh token inside transaction `$tx`.
macro_rules! insert_device {
    ($tx:expr, $user_id:expr, $device_id:expr, $device:expr, $now:expr) => {{
        sqlx::query(
            "INSERT INTO devices (user_id, device_id, name, created_at, last_seen_at, generation) VALUES ($1, $2, $3, $4, $4, $5)",
        )
        .bind($user_id)
        .bind($device_id)
        .bind(&$device.name)
        .bind($now)
        .bind($device.generation)
        .execute(&mut *$tx)
        .await?;
        insert_refresh!($tx, $user_id, $device_id, &$device.refresh, $now);
    }};
}

/// Inserts a refresh token inside transaction `$tx`.
macro_rules! insert_refresh {
    ($tx:expr, $user_id:expr, $device_id:expr, $refresh:expr, $now:expr) => {{
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&$refresh.token_hash)
        .bind($user_id)
        .bind($device_id)
        .bind($now)
        .bind($refresh.expires_at)
        .execute(&mut *$tx)
        .await?;
    }};
}

macro_rules! sql_store {
    ($store:ty, for_update = $for_update:literal, skip_locked = $skip_locked:literal, migrations = ($sqlite_dir:literal, $pg_dir:literal), pool = $variant:ident) => {
        #[async_trait]
        impl AuthStore for $store {
            async fn migrate(&self) -> StoreResult<()> {
                let db = Db::$variant(self.pool.clone());
                natter_common::run_migrations!(&db, $sqlite_dir, $pg_dir)
                    .map_err(|e| StoreError(sqlx::Error::Migrate(Box::new(e))))
            }

            async fn insert_session(&self, s: &RegSession) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO auth_sessions (id, number, created_at, expires_at, code_hash, code_expires_at, sends, next_send_at, attempts, verified_at, used)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind(&s.id)
                .bind(&s.number)
                .bind(s.created_at)
                .bind(s.expires_at)
                .bind(&s.code_hash)
                .bind(s.code_expires_at)
                .bind(s.sends)
                .bind(s.next_send_at)
                .bind(s.attempts)
                .bind(s.verified_at)
                .bind(s.used)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn session(&self, id: &str) -> StoreResult<Option<RegSession>> {
                Ok(sqlx::query_as::<_, RegSession>("SELECT * FROM auth_sessions WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn record_code_sent(
                &self,
                id: &str,
                expected_sends: i64,
                code_hash: &str,
                code_expires_at: UnixMillis,
                next_send_at: UnixMillis,
            ) -> StoreResult<bool> {
                let r = sqlx::query(
                    "UPDATE auth_sessions SET sends = sends + 1, code_hash = $3, code_expires_at = $4, next_send_at = $5
                     WHERE id = $1 AND sends = $2 AND verified_at IS NULL",
                )
                .bind(id)
                .bind(expected_sends)
                .bind(code_hash)
                .bind(code_expires_at)
                .bind(next_send_at)
                .execute(&self.pool)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn take_attempt(&self, id: &str, max: i64) -> StoreResult<Option<i64>> {
                Ok(sqlx::query_scalar::<_, i64>(
                    "UPDATE auth_sessions SET attempts = attempts + 1 WHERE id = $1 AND attempts < $2 RETURNING attempts",
                )
                .bind(id)
                .bind(max)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn mark_verified(&self, id: &str, now: UnixMillis) -> StoreResult<()> {
                sqlx::query("UPDATE auth_sessions SET verified_at = $2, code_hash = NULL WHERE id = $1")
                    .bind(id)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn account(&self, user_id: &str) -> StoreResult<Option<Account>> {
                Ok(sqlx::query_as::<_, Account>("SELECT * FROM accounts WHERE user_id = $1")
                    .bind(user_id)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn account_by_number(&self, number: &str) -> StoreResult<Option<Account>> {
                Ok(sqlx::query_as::<_, Account>("SELECT * FROM accounts WHERE number = $1")
                    .bind(number)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn register(
                &self,
                session_id: &str,
                number: &str,
                new_user_id: &str,
                device: &NewDevice,
                now: UnixMillis,
            ) -> StoreResult<Registered> {
                let mut tx = self.pool.begin_write().await?;
                let consumed = sqlx::query(
                    "UPDATE auth_sessions SET used = TRUE
                     WHERE id = $1 AND number = $2 AND verified_at IS NOT NULL AND NOT used AND expires_at > $3",
                )
                .bind(session_id)
                .bind(number)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if consumed != 1 {
                    return Ok(Registered::SessionUnusable);
                }
                let existing = sqlx::query_as::<_, Account>(concat!("SELECT * FROM accounts WHERE number = $1", $for_update))
                    .bind(number)
                    .fetch_optional(&mut *tx)
                    .await?;
                let (user_id, created) = match existing {
                    Some(account) => {
                        // Re-registration: the old devices (and with them their
                        // tokens and keys) are gone; the account id and profile stay.
                        sqlx::query("DELETE FROM devices WHERE user_id = $1")
                            .bind(&account.user_id)
                            .execute(&mut *tx)
                            .await?;
                        sqlx::query("DELETE FROM link_codes WHERE user_id = $1")
                            .bind(&account.user_id)
                            .execute(&mut *tx)
                            .await?;
                        (account.user_id, false)
                    }
                    None => {
                        sqlx::query("INSERT INTO accounts (user_id, number, created_at) VALUES ($1, $2, $3)")
                            .bind(new_user_id)
                            .bind(number)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                        (new_user_id.to_owned(), true)
                    }
                };
                insert_device!(tx, &user_id, 1_i64, device, now);
                let account = sqlx::query_as::<_, Account>("SELECT * FROM accounts WHERE user_id = $1")
                    .bind(&user_id)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(if created {
                    Registered::Created(account)
                } else {
                    Registered::Reregistered(account)
                })
            }

            async fn set_reglock(&self, user_id: &str, hash: Option<&str>) -> StoreResult<()> {
                sqlx::query("UPDATE accounts SET reglock_hash = $2, sf_failures = 0, sf_locked_until = 0 WHERE user_id = $1")
                    .bind(user_id)
                    .bind(hash)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn second_factor_attempt(
                &self,
                user_id: &str,
                now: UnixMillis,
                max: i64,
                lockout_ms: i64,
            ) -> StoreResult<Option<(i64, UnixMillis)>> {
                // SET expressions see the old row, so `sf_failures + 1` is the new
                // count; the WHERE admits nothing while a lock holds.
                let row = sqlx::query_as::<_, (i64, i64)>(
                    "UPDATE accounts SET sf_failures = sf_failures + 1,
                        sf_locked_until = CASE WHEN sf_failures + 1 >= $3 THEN $2 + $4 ELSE sf_locked_until END
                     WHERE user_id = $1 AND sf_locked_until <= $2
                     RETURNING sf_failures, sf_locked_until",
                )
                .bind(user_id)
                .bind(now)
                .bind(max)
                .bind(lockout_ms)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row)
            }

            async fn second_factor_succeeded(&self, user_id: &str) -> StoreResult<()> {
                sqlx::query("UPDATE accounts SET sf_failures = 0, sf_locked_until = 0 WHERE user_id = $1")
                    .bind(user_id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn set_totp_pending(&self, user_id: &str, secret_b32: &str) -> StoreResult<()> {
                sqlx::query("UPDATE accounts SET totp_secret = $2, totp_enabled = FALSE WHERE user_id = $1")
                    .bind(user_id)
                    .bind(secret_b32)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn enable_totp(&self, user_id: &str, recovery_hashes: &[String]) -> StoreResult<()> {
                let mut tx = self.pool.begin_write().await?;
                sqlx::query("UPDATE accounts SET totp_enabled = TRUE WHERE user_id = $1")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                for h in recovery_hashes {
                    sqlx::query("INSERT INTO recovery_codes (user_id, code_hash) VALUES ($1, $2)")
                        .bind(user_id)
                        .bind(h)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn disable_totp(&self, user_id: &str) -> StoreResult<()> {
                let mut tx = self.pool.begin_write().await?;
                sqlx::query("UPDATE accounts SET totp_enabled = FALSE, totp_secret = NULL, totp_last_step = 0 WHERE user_id = $1")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn accept_totp_step(&self, user_id: &str, step: i64) -> StoreResult<bool> {
                let r = sqlx::query("UPDATE accounts SET totp_last_step = $2 WHERE user_id = $1 AND totp_last_step < $2")
                    .bind(user_id)
                    .bind(step)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn use_recovery_code(&self, user_id: &str, code_hash: &str) -> StoreResult<bool> {
                let r = sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1 AND code_hash = $2")
                    .bind(user_id)
                    .bind(code_hash)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn update_profile(&self, user_id: &str, p: &ProfileUpdate) -> StoreResult<()> {
                let mut tx = self.pool.begin_write().await?;
                if let Some(name) = &p.display_name {
                    sqlx::query("UPDATE accounts SET display_name = $2 WHERE user_id = $1")
                        .bind(user_id)
                        .bind(name)
                        .execute(&mut *tx)
                        .await?;
                }
                if let Some(about) = &p.about {
                    sqlx::query("UPDATE accounts SET about = $2 WHERE user_id = $1")
                        .bind(user_id)
                        .bind(about)
                        .execute(&mut *tx)
                        .await?;
                }
                if let Some(avatar) = &p.avatar {
                    sqlx::query("UPDATE accounts SET avatar = $2 WHERE user_id = $1")
                        .bind(user_id)
                        .bind(avatar)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn delete_account(&self, user_id: &str) -> StoreResult<bool> {
                let mut tx = self.pool.begin_write().await?;
                let number = sqlx::query_scalar::<_, String>(concat!("SELECT number FROM accounts WHERE user_id = $1", $for_update))
                    .bind(user_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(number) = number else {
                    return Ok(false);
                };
                sqlx::query("DELETE FROM auth_sessions WHERE number = $1")
                    .bind(&number)
                    .execute(&mut *tx)
                    .await?;
                // Devices, tokens, keys, prekeys, link and recovery codes cascade.
                sqlx::query("DELETE FROM accounts WHERE user_id = $1")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn count_account_rows(&self, user_id: &str, number: &str) -> StoreResult<RowCounts> {
                let mut out = Vec::new();
                for (table, sql) in [
                    ("accounts", "SELECT COUNT(*) FROM accounts WHERE user_id = $1"),
                    ("devices", "SELECT COUNT(*) FROM devices WHERE user_id = $1"),
                    ("refresh_tokens", "SELECT COUNT(*) FROM refresh_tokens WHERE user_id = $1"),
                    ("link_codes", "SELECT COUNT(*) FROM link_codes WHERE user_id = $1"),
                    ("recovery_codes", "SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1"),
                    ("device_keys", "SELECT COUNT(*) FROM device_keys WHERE user_id = $1"),
                    ("one_time_prekeys", "SELECT COUNT(*) FROM one_time_prekeys WHERE user_id = $1"),
                ] {
                    let n: i64 = sqlx::query_scalar(sql).bind(user_id).fetch_one(&self.pool).await?;
                    out.push((table, n));
                }
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM auth_sessions WHERE number = $1")
                    .bind(number)
                    .fetch_one(&self.pool)
                    .await?;
                out.push(("auth_sessions", n));
                Ok(out)
            }

            async fn devices(&self, user_id: &str) -> StoreResult<Vec<Device>> {
                Ok(sqlx::query_as::<_, Device>("SELECT * FROM devices WHERE user_id = $1 ORDER BY device_id")
                    .bind(user_id)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn device(&self, user_id: &str, device_id: i64) -> StoreResult<Option<Device>> {
                Ok(sqlx::query_as::<_, Device>("SELECT * FROM devices WHERE user_id = $1 AND device_id = $2")
                    .bind(user_id)
                    .bind(device_id)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn insert_link_code(&self, user_id: &str, code_hash: &str, expires_at: UnixMillis) -> StoreResult<()> {
                sqlx::query("INSERT INTO link_codes (code_hash, user_id, expires_at) VALUES ($1, $2, $3)")
                    .bind(code_hash)
                    .bind(user_id)
                    .bind(expires_at)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn link_device(
                &self,
                code_hash: &str,
                device: &NewDevice,
                max_linked: i64,
                now: UnixMillis,
            ) -> StoreResult<Linked> {
                let mut tx = self.pool.begin_write().await?;
                let user_id = sqlx::query_scalar::<_, String>(
                    "DELETE FROM link_codes WHERE code_hash = $1 AND expires_at > $2 RETURNING user_id",
                )
                .bind(code_hash)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(user_id) = user_id else {
                    return Ok(Linked::InvalidCode);
                };
                // Serialises concurrent links of one account so two cannot pick the same id.
                sqlx::query(concat!("SELECT user_id FROM accounts WHERE user_id = $1", $for_update))
                    .bind(&user_id)
                    .execute(&mut *tx)
                    .await?;
                let taken: Vec<i64> = sqlx::query_scalar("SELECT device_id FROM devices WHERE user_id = $1")
                    .bind(&user_id)
                    .fetch_all(&mut *tx)
                    .await?;
                let Some(device_id) = (2..=max_linked + 1).find(|id| !taken.contains(id)) else {
                    return Ok(Linked::TooManyDevices);
                };
                insert_device!(tx, &user_id, device_id, device, now);
                let created = sqlx::query_as::<_, Device>("SELECT * FROM devices WHERE user_id = $1 AND device_id = $2")
                    .bind(&user_id)
                    .bind(device_id)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(Linked::Device(created))
            }

            async fn remove_device(&self, user_id: &str, device_id: i64) -> StoreResult<bool> {
                let r = sqlx::query("DELETE FROM devices WHERE user_id = $1 AND device_id = $2")
                    .bind(user_id)
                    .bind(device_id)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn revoke_device(&self, user_id: &str, device_id: i64, new_generation: i64) -> StoreResult<()> {
                let mut tx = self.pool.begin_write().await?;
                sqlx::query("DELETE FROM refresh_tokens WHERE user_id = $1 AND device_id = $2")
                    .bind(user_id)
                    .bind(device_id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE devices SET generation = $3 WHERE user_id = $1 AND device_id = $2")
                    .bind(user_id)
                    .bind(device_id)
                    .bind(new_generation)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn rotate_refresh(
                &self,
                token_hash: &str,
                next: &NewRefresh,
                revoke_generation: i64,
                now: UnixMillis,
            ) -> StoreResult<Rotated> {
                let mut tx = self.pool.begin_write().await?;
                let row = sqlx::query_as::<_, (String, i64, i64, Option<i64>)>(concat!(
                    "SELECT user_id, device_id, expires_at, used_at FROM refresh_tokens WHERE token_hash = $1",
                    $for_update
                ))
                .bind(token_hash)
                .fetch_optional(&mut *tx)
                .await?;
                let Some((user_id, device_id, expires_at, used_at)) = row else {
                    return Ok(Rotated::Invalid);
                };
                if used_at.is_some() {
                    // A used token came back: either it was stolen or the client
                    // lost the reply. Both mean the device's credentials can no
                    // longer be trusted (RFC 6819 §5.2.2.3 refresh-token rotation).
                    sqlx::query("DELETE FROM refresh_tokens WHERE user_id = $1 AND device_id = $2")
                        .bind(&user_id)
                        .bind(device_id)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("UPDATE devices SET generation = $3 WHERE user_id = $1 AND device_id = $2")
                        .bind(&user_id)
                        .bind(device_id)
                        .bind(revoke_generation)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    return Ok(Rotated::Replayed { user_id, device_id });
                }
                if expires_at <= now {
                    return Ok(Rotated::Invalid);
                }
                sqlx::query("UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1")
                    .bind(token_hash)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                insert_refresh!(tx, &user_id, device_id, next, now);
                let device = sqlx::query_as::<_, Device>(
                    "UPDATE devices SET last_seen_at = $3 WHERE user_id = $1 AND device_id = $2 RETURNING *",
                )
                .bind(&user_id)
                .bind(device_id)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Rotated::Ok(device))
            }

            async fn purge_expired(&self, now: UnixMillis) -> StoreResult<u64> {
                let mut n = 0;
                for sql in [
                    "DELETE FROM auth_sessions WHERE expires_at <= $1",
                    "DELETE FROM link_codes WHERE expires_at <= $1",
                    "DELETE FROM refresh_tokens WHERE expires_at <= $1",
                ] {
                    n += sqlx::query(sql).bind(now).execute(&self.pool).await?.rows_affected();
                }
                Ok(n)
            }

            async fn put_device_keys(&self, user_id: &str, device_id: i64, keys: &DeviceKeys) -> StoreResult<()> {
                let mut tx = self.pool.begin_write().await?;
                let old_identity = sqlx::query_scalar::<_, Vec<u8>>(concat!(
                    "SELECT identity_key FROM device_keys WHERE user_id = $1 AND device_id = $2",
                    $for_update
                ))
                .bind(user_id)
                .bind(device_id)
                .fetch_optional(&mut *tx)
                .await?;
                if old_identity.is_some_and(|old| old != keys.identity_key) {
                    sqlx::query("DELETE FROM one_time_prekeys WHERE user_id = $1 AND device_id = $2")
                        .bind(user_id)
                        .bind(device_id)
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query(
                    "INSERT INTO device_keys (user_id, device_id, identity_key, signing_key, spk_id, spk_public, spk_signature, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (user_id, device_id) DO UPDATE SET
                        identity_key = excluded.identity_key, signing_key = excluded.signing_key,
                        spk_id = excluded.spk_id, spk_public = excluded.spk_public,
                        spk_signature = excluded.spk_signature, updated_at = excluded.updated_at",
                )
                .bind(user_id)
                .bind(device_id)
                .bind(&keys.identity_key)
                .bind(&keys.signing_key)
                .bind(keys.spk_id)
                .bind(&keys.spk_public)
                .bind(&keys.spk_signature)
                .bind(keys.updated_at)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn add_prekeys(
                &self,
                user_id: &str,
                device_id: i64,
                keys: &[OneTimePrekey],
                max: u32,
            ) -> StoreResult<PrekeysAdded> {
                let mut tx = self.pool.begin_write().await?;
                // Locks the device's key row so concurrent uploads cannot both pass the cap.
                let has_identity = sqlx::query(concat!(
                    "SELECT user_id FROM device_keys WHERE user_id = $1 AND device_id = $2",
                    $for_update
                ))
                .bind(user_id)
                .bind(device_id)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
                if !has_identity {
                    return Ok(PrekeysAdded::NoIdentity);
                }
                let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM one_time_prekeys WHERE user_id = $1 AND device_id = $2")
                    .bind(user_id)
                    .bind(device_id)
                    .fetch_one(&mut *tx)
                    .await?;
                if stored as usize + keys.len() > max as usize {
                    return Ok(PrekeysAdded::TooMany { stored: stored as u32 });
                }
                for k in keys {
                    let r = sqlx::query("INSERT INTO one_time_prekeys (user_id, device_id, key_id, public_key) VALUES ($1, $2, $3, $4)")
                        .bind(user_id)
                        .bind(device_id)
                        .bind(k.key_id)
                        .bind(&k.public_key)
                        .execute(&mut *tx)
                        .await;
                    match r {
                        Ok(_) => {}
                        Err(e) if is_unique_violation(&e) => return Ok(PrekeysAdded::DuplicateId(k.key_id)),
                        Err(e) => return Err(e.into()),
                    }
                }
                tx.commit().await?;
                Ok(PrekeysAdded::Stored(stored as u32 + keys.len() as u32))
            }

            async fn count_prekeys(&self, user_id: &str, device_id: i64) -> StoreResult<u32> {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM one_time_prekeys WHERE user_id = $1 AND device_id = $2")
                    .bind(user_id)
                    .bind(device_id)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(n as u32)
            }

            async fn claim_bundle(
                &self,
                user_id: &str,
                device_id: i64,
                take_prekey: bool,
            ) -> StoreResult<Option<(DeviceKeys, Option<OneTimePrekey>)>> {
                let keys = sqlx::query_as::<_, DeviceKeys>(
                    "SELECT identity_key, signing_key, spk_id, spk_public, spk_signature, updated_at
                     FROM device_keys WHERE user_id = $1 AND device_id = $2",
                )
                .bind(user_id)
                .bind(device_id)
                .fetch_optional(&self.pool)
                .await?;
                let Some(keys) = keys else {
                    return Ok(None);
                };
                if !take_prekey {
                    return Ok(Some((keys, None)));
                }
                // One statement: the row is chosen and deleted atomically. In
                // PostgreSQL, SKIP LOCKED lets concurrent claims take different rows
                // instead of all waiting on (and then missing) the same one.
                let prekey = sqlx::query_as::<_, OneTimePrekey>(concat!(
                    "DELETE FROM one_time_prekeys WHERE user_id = $1 AND device_id = $2 AND key_id = (
                        SELECT key_id FROM one_time_prekeys WHERE user_id = $1 AND device_id = $2
                        ORDER BY key_id LIMIT 1",
                    $skip_locked,
                    ") RETURNING key_id, public_key"
                ))
                .bind(user_id)
                .bind(device_id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(Some((keys, prekey)))
            }

            async fn devices_with_keys(&self, user_id: &str) -> StoreResult<Vec<i64>> {
                Ok(sqlx::query_scalar("SELECT device_id FROM device_keys WHERE user_id = $1 ORDER BY device_id")
                    .bind(user_id)
                    .fetch_all(&self.pool)
                    .await?)
            }
        }

    };
}

sql_store!(
    SqliteStore,
    for_update = "",
    skip_locked = "",
    migrations = ("./migrations/sqlite", "./migrations/postgres"),
    pool = Sqlite
);
sql_store!(
    PgStore,
    for_update = " FOR UPDATE",
    skip_locked = " FOR UPDATE SKIP LOCKED",
    migrations = ("./migrations/sqlite", "./migrations/postgres"),
    pool = Postgres
);
