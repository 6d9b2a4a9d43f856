//! Is an access token's device still logged in? A token is signed for its
//! lifetime (15 minutes by default), but logout, device removal and
//! re-registration bump the device's credential generation in auth's `devices`
//! table at once. Services that see only the token (media, signaling) ask here,
//! so a revoked token stops working within [`LIVE_CACHE_TTL`], not at expiry.

use crate::Db;
use crate::token::Claims;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an answer is reused: the bound on how long a revoked token still
/// works on media and signaling (documented in docs/security.md).
pub const LIVE_CACHE_TTL: Duration = Duration::from_secs(5);
/// Answers kept at most; past it the cache starts over (one query per device
/// then, no unbounded growth from a flood of distinct tokens).
const LIVE_CACHE_MAX: usize = 100_000;

/// Why a token's device could not be checked.
#[derive(Debug, thiserror::Error)]
#[error("credential check: {0}")]
pub struct CheckError(#[from] sqlx::Error);

/// (user, device, generation) → (live, when it was looked up).
type Answers = HashMap<(String, u32, u32), (bool, Instant)>;

/// Looks devices up in the shared database, with a short cache.
pub struct LiveCredentials {
    db: Db,
    ttl: Duration,
    cache: Mutex<Answers>,
}

impl std::fmt::Debug for LiveCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveCredentials")
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl LiveCredentials {
    /// Checks against `db` (auth's `devices` table), reusing answers for `ttl`.
    pub fn new(db: Db, ttl: Duration) -> Self {
        Self {
            db,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// True while the token's device exists at the token's generation.
    pub async fn is_live(&self, claims: &Claims) -> Result<bool, CheckError> {
        let key = (claims.sub.clone(), claims.dev, claims.generation);
        let now = Instant::now();
        if let Some((live, at)) = self.lock().get(&key)
            && now.duration_since(*at) < self.ttl
        {
            return Ok(*live);
        }
        let generation = self.generation(&claims.sub, claims.dev).await?;
        let live = generation == Some(i64::from(claims.generation));
        let mut cache = self.lock();
        if cache.len() >= LIVE_CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, (live, now));
        Ok(live)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Answers> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn generation(&self, user: &str, device: u32) -> Result<Option<i64>, sqlx::Error> {
        const Q: &str = "SELECT generation FROM devices WHERE user_id = $1 AND device_id = $2";
        match &self.db {
            Db::Sqlite(p) => {
                sqlx::query_scalar(Q)
                    .bind(user)
                    .bind(i64::from(device))
                    .fetch_optional(p)
                    .await
            }
            Db::Postgres(p) => {
                sqlx::query_scalar(Q)
                    .bind(user)
                    .bind(i64::from(device))
                    .fetch_optional(p)
                    .await
            }
        }
    }
}
