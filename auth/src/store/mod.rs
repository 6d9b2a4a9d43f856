//! Storage for auth: one trait, implemented for SQLite (`sqlite.rs`) and
//! PostgreSQL (`postgres.rs`) from one body of SQL (`sql.rs`), and checked by one
//! contract suite (`tests/store_contract.rs`) against both.
//!
//! Operations that must be atomic (registration, linking, token rotation, prekey
//! claims) are single trait methods, each one transaction, so callers cannot get
//! the ordering wrong.

mod sql;

use async_trait::async_trait;
use natter_common::{Db, UnixMillis};
use std::sync::Arc;

pub use sql::{PgStore, SqliteStore};

/// A database failure (anything that is not a domain outcome).
#[derive(Debug, thiserror::Error)]
#[error("auth store: {0}")]
pub struct StoreError(#[from] pub sqlx::Error);

/// Result alias for store calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// A registration session: one phone number proving it receives codes.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RegSession {
    /// Random id; knowing it is the right to use the session.
    pub id: String,
    /// E.164 number.
    pub number: String,
    /// Created at.
    pub created_at: UnixMillis,
    /// The session (verified or not) is useless after this.
    pub expires_at: UnixMillis,
    /// argon2 hash of the current code.
    pub code_hash: Option<String>,
    /// The current code is refused after this.
    pub code_expires_at: UnixMillis,
    /// Codes sent so far.
    pub sends: i64,
    /// The next code may be sent from this time.
    pub next_send_at: UnixMillis,
    /// Code checks so far (right or wrong).
    pub attempts: i64,
    /// When a right code was given.
    pub verified_at: Option<UnixMillis>,
    /// Already turned into an account registration.
    pub used: bool,
}

/// An account (one phone number).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Account {
    /// Stable id, kept across re-registrations.
    pub user_id: String,
    /// E.164 number.
    pub number: String,
    /// Created at.
    pub created_at: UnixMillis,
    /// argon2 hash of the registration-lock PIN.
    pub reglock_hash: Option<String>,
    /// Consecutive wrong PINs / second-factor codes.
    pub sf_failures: i64,
    /// Second-factor checks refused until then.
    pub sf_locked_until: UnixMillis,
    /// Base32 TOTP secret (pending until `totp_enabled`).
    pub totp_secret: Option<String>,
    /// TOTP confirmed and required.
    pub totp_enabled: bool,
    /// Last accepted TOTP time step (a code is accepted once).
    pub totp_last_step: i64,
    /// Profile: display name.
    pub display_name: String,
    /// Profile: about text.
    pub about: String,
    /// Profile: avatar media hash.
    pub avatar: Option<String>,
}

/// A device of an account; device 1 is the primary.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Device {
    /// Owner.
    pub user_id: String,
    /// 1 = primary; linked devices get 2, 3, ….
    pub device_id: i64,
    /// Name the user gave it.
    pub name: String,
    /// Created at.
    pub created_at: UnixMillis,
    /// Last token refresh.
    pub last_seen_at: UnixMillis,
    /// Credential generation; a token with another one is stale.
    pub generation: i64,
}

/// A refresh token to store (hashed).
#[derive(Debug, Clone)]
pub struct NewRefresh {
    /// SHA-256 hex of the token.
    pub token_hash: String,
    /// Expiry.
    pub expires_at: UnixMillis,
}

/// A new device to create.
#[derive(Debug, Clone)]
pub struct NewDevice {
    /// Name.
    pub name: String,
    /// Initial credential generation.
    pub generation: i64,
    /// Its first refresh token.
    pub refresh: NewRefresh,
}

/// Result of registering a number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// A new account.
    Created(Account),
    /// An existing account moved to a new primary device; old devices removed.
    Reregistered(Account),
    /// The session was already used or is not verified.
    SessionUnusable,
}

/// Result of redeeming a device-link code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Linked {
    /// The new device.
    Device(Device),
    /// Unknown, used or expired code.
    InvalidCode,
    /// The account already has the maximum of linked devices.
    TooManyDevices,
}

/// Result of presenting a refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotated {
    /// The old token is now used; the new one is stored.
    Ok(Device),
    /// The token was used before: every token of that device was revoked.
    Replayed {
        /// Account.
        user_id: String,
        /// Device.
        device_id: i64,
    },
    /// Unknown or expired token.
    Invalid,
}

/// A device's long-term keys.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DeviceKeys {
    /// Curve25519 identity key.
    pub identity_key: Vec<u8>,
    /// Ed25519 key that signs prekeys.
    pub signing_key: Vec<u8>,
    /// Signed prekey id.
    pub spk_id: i64,
    /// Signed prekey (Curve25519).
    pub spk_public: Vec<u8>,
    /// Ed25519 signature of `spk_public` by `signing_key`.
    pub spk_signature: Vec<u8>,
    /// Last upload.
    pub updated_at: UnixMillis,
}

/// A one-time prekey.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OneTimePrekey {
    /// Id chosen by the device.
    pub key_id: i64,
    /// Curve25519 public key.
    pub public_key: Vec<u8>,
}

/// Result of adding one-time prekeys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrekeysAdded {
    /// Stored; the device now holds this many.
    Stored(u32),
    /// Would exceed the per-device cap; nothing stored.
    TooMany {
        /// Already stored.
        stored: u32,
    },
    /// A key id is already stored for this device; nothing stored.
    DuplicateId(i64),
    /// The device has not uploaded its identity and signed prekey yet.
    NoIdentity,
}

/// Profile fields to change (`None` leaves a field as it is).
#[derive(Debug, Clone, Default)]
pub struct ProfileUpdate {
    /// Display name.
    pub display_name: Option<String>,
    /// About text.
    pub about: Option<String>,
    /// Avatar hash; `Some(None)` clears it.
    pub avatar: Option<Option<String>>,
}

/// Counts of rows still referring to an account (for tests of account deletion).
pub type RowCounts = Vec<(&'static str, i64)>;

/// Everything auth stores.
#[async_trait]
pub trait AuthStore: Send + Sync + 'static {
    /// Creates the schema (idempotent).
    async fn migrate(&self) -> StoreResult<()>;

    // --- registration sessions ---
    /// Stores a new session.
    async fn insert_session(&self, s: &RegSession) -> StoreResult<()>;
    /// A session by id.
    async fn session(&self, id: &str) -> StoreResult<Option<RegSession>>;
    /// Records a sent code if `sends` is still `expected_sends` (so two
    /// concurrent resends cannot both pass the wait check). Returns false otherwise.
    async fn record_code_sent(
        &self,
        id: &str,
        expected_sends: i64,
        code_hash: &str,
        code_expires_at: UnixMillis,
        next_send_at: UnixMillis,
    ) -> StoreResult<bool>;
    /// Counts one code check if fewer than `max` were made; returns the new count,
    /// or `None` when the session has no attempts left.
    async fn take_attempt(&self, id: &str, max: i64) -> StoreResult<Option<i64>>;
    /// Marks the session verified.
    async fn mark_verified(&self, id: &str, now: UnixMillis) -> StoreResult<()>;

    // --- accounts ---
    /// An account by id.
    async fn account(&self, user_id: &str) -> StoreResult<Option<Account>>;
    /// An account by E.164 number.
    async fn account_by_number(&self, number: &str) -> StoreResult<Option<Account>>;
    /// In one transaction: consumes the verified session; creates the account
    /// (with `new_user_id`) or removes every device of the existing one; creates
    /// primary device 1 with its first refresh token.
    async fn register(
        &self,
        session_id: &str,
        number: &str,
        new_user_id: &str,
        device: &NewDevice,
        now: UnixMillis,
    ) -> StoreResult<Registered>;
    /// Sets or clears the registration-lock PIN hash.
    async fn set_reglock(&self, user_id: &str, hash: Option<&str>) -> StoreResult<()>;
    /// Admits one PIN / second-factor attempt, counting it as a failure before
    /// it is checked (a success then clears the count), and locks for
    /// `lockout_ms` once `max` is reached. One atomic statement, so concurrent
    /// attempts cannot all pass a lock read before any failure is counted.
    /// Returns (failures, locked_until) for an admitted attempt, `None` while
    /// the account is locked (or unknown).
    async fn second_factor_attempt(
        &self,
        user_id: &str,
        now: UnixMillis,
        max: i64,
        lockout_ms: i64,
    ) -> StoreResult<Option<(i64, UnixMillis)>>;
    /// Clears the failure count after a success.
    async fn second_factor_succeeded(&self, user_id: &str) -> StoreResult<()>;
    /// Stores a pending TOTP secret (not yet required).
    async fn set_totp_pending(&self, user_id: &str, secret_b32: &str) -> StoreResult<()>;
    /// Enables TOTP and replaces the recovery codes (hashes).
    async fn enable_totp(&self, user_id: &str, recovery_hashes: &[String]) -> StoreResult<()>;
    /// Disables TOTP and removes recovery codes.
    async fn disable_totp(&self, user_id: &str) -> StoreResult<()>;
    /// Accepts TOTP step `step` once: true if it is newer than the last accepted one.
    async fn accept_totp_step(&self, user_id: &str, step: i64) -> StoreResult<bool>;
    /// Uses up a recovery code; true if it existed.
    async fn use_recovery_code(&self, user_id: &str, code_hash: &str) -> StoreResult<bool>;
    /// Changes profile fields.
    async fn update_profile(&self, user_id: &str, p: &ProfileUpdate) -> StoreResult<()>;
    /// Deletes the account and every row that belongs to it. False if unknown.
    async fn delete_account(&self, user_id: &str) -> StoreResult<bool>;
    /// Rows in every auth table that still refer to the account or its number.
    async fn count_account_rows(&self, user_id: &str, number: &str) -> StoreResult<RowCounts>;

    // --- devices and tokens ---
    /// Devices of an account, by id.
    async fn devices(&self, user_id: &str) -> StoreResult<Vec<Device>>;
    /// One device.
    async fn device(&self, user_id: &str, device_id: i64) -> StoreResult<Option<Device>>;
    /// Stores a device-link code (hashed) for the account.
    async fn insert_link_code(
        &self,
        user_id: &str,
        code_hash: &str,
        expires_at: UnixMillis,
    ) -> StoreResult<()>;
    /// In one transaction: consumes the link code and adds a device with the
    /// lowest free id in 2..=max_linked+1.
    async fn link_device(
        &self,
        code_hash: &str,
        device: &NewDevice,
        max_linked: i64,
        now: UnixMillis,
    ) -> StoreResult<Linked>;
    /// Removes a device (its tokens and keys go with it). False if unknown.
    async fn remove_device(&self, user_id: &str, device_id: i64) -> StoreResult<bool>;
    /// Revokes every refresh token of a device and moves it to `new_generation`.
    async fn revoke_device(
        &self,
        user_id: &str,
        device_id: i64,
        new_generation: i64,
    ) -> StoreResult<()>;
    /// Uses a refresh token: marks it used and stores `next`, or detects a replay
    /// (then revokes the device with `revoke_generation`).
    async fn rotate_refresh(
        &self,
        token_hash: &str,
        next: &NewRefresh,
        revoke_generation: i64,
        now: UnixMillis,
    ) -> StoreResult<Rotated>;
    /// Deletes expired sessions, link codes and refresh tokens; returns rows removed.
    async fn purge_expired(&self, now: UnixMillis) -> StoreResult<u64>;

    // --- key directory ---
    /// Sets a device's identity and signed prekey. When the identity key changes,
    /// its old one-time prekeys are dropped (they belong to the old identity).
    async fn put_device_keys(
        &self,
        user_id: &str,
        device_id: i64,
        keys: &DeviceKeys,
    ) -> StoreResult<()>;
    /// Adds one-time prekeys, all or nothing, keeping at most `max` per device.
    async fn add_prekeys(
        &self,
        user_id: &str,
        device_id: i64,
        keys: &[OneTimePrekey],
        max: u32,
    ) -> StoreResult<PrekeysAdded>;
    /// One-time prekeys a device has left.
    async fn count_prekeys(&self, user_id: &str, device_id: i64) -> StoreResult<u32>;
    /// A device's keys plus, when `take_prekey`, one one-time prekey, removed
    /// atomically so it is never handed out twice. `None` if the device has no keys.
    async fn claim_bundle(
        &self,
        user_id: &str,
        device_id: i64,
        take_prekey: bool,
    ) -> StoreResult<Option<(DeviceKeys, Option<OneTimePrekey>)>>;
    /// Device ids of an account that have uploaded keys.
    async fn devices_with_keys(&self, user_id: &str) -> StoreResult<Vec<i64>>;
}

/// Opens the store for a pool.
pub fn for_db(db: &Db) -> Arc<dyn AuthStore> {
    match db {
        Db::Sqlite(pool) => Arc::new(SqliteStore::new(pool.clone())),
        Db::Postgres(pool) => Arc::new(PgStore::new(pool.clone())),
    }
}
