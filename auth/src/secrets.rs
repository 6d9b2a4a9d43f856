//! Hashing of the secrets auth keeps: one-time codes and PINs with argon2id
//! (slow, because they are guessable), high-entropy tokens with SHA-256 (fast,
//! because they are not).

use argon2::{Algorithm, Argon2, Params, Version};
use argon2::{PasswordHash, PasswordHasher, PasswordVerifier};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// argon2id cost. The default is OWASP's first recommendation for argon2id:
/// 19 MiB of memory, 2 passes, 1 lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Argon2Params {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
    /// Hashes computed at once; callers beyond it wait their turn. Bounds memory
    /// (each hash holds `memory_kib`) and keeps a flood of code checks from
    /// starving the blocking pool. Default: the number of CPUs.
    pub max_concurrent: u32,
}

impl Default for Argon2Params {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
            max_concurrent: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(2),
        }
    }
}

/// A hashing failure (only from invalid parameters or a corrupt stored hash).
#[derive(Debug, thiserror::Error)]
#[error("argon2: {0}")]
pub struct HashError(String);

/// argon2id hashing with fixed parameters; cheap to clone (clones share the
/// concurrency limit).
#[derive(Clone)]
pub struct SecretHasher {
    params: Params,
    permits: Arc<Semaphore>,
}

impl SecretHasher {
    /// Builds a hasher; refuses parameters argon2 cannot use.
    pub fn new(p: Argon2Params) -> Result<Self, HashError> {
        let params = Params::new(p.memory_kib, p.iterations, p.parallelism, None)
            .map_err(|e| HashError(format!("invalid parameters: {e}")))?;
        if p.max_concurrent == 0 {
            return Err(HashError("max_concurrent must be at least 1".into()));
        }
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(p.max_concurrent as usize)),
        })
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// Hashes `secret` with a fresh random salt, on a blocking thread (argon2 takes
    /// tens of milliseconds and must not stall the async runtime).
    pub async fn hash(&self, secret: String) -> Result<String, HashError> {
        let this = self.clone();
        let permit = self.permit().await?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            this.hash_blocking(&secret)
        })
        .await
        .map_err(|e| HashError(format!("hashing task failed: {e}")))?
    }

    /// Checks `secret` against a stored PHC string, on a blocking thread. The
    /// comparison inside argon2 is constant-time.
    pub async fn verify(&self, secret: String, stored: String) -> Result<bool, HashError> {
        let this = self.clone();
        let permit = self.permit().await?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            this.verify_blocking(&secret, &stored)
        })
        .await
        .map_err(|e| HashError(format!("verification task failed: {e}")))?
    }

    async fn permit(&self) -> Result<OwnedSemaphorePermit, HashError> {
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| HashError("hasher closed".into()))
    }

    /// Synchronous hash (benchmarks, blocking contexts).
    pub fn hash_blocking(&self, secret: &str) -> Result<String, HashError> {
        let salt: [u8; 16] = natter_common::random::bytes();
        let hash: PasswordHash = self
            .argon2()
            .hash_password_with_salt(secret.as_bytes(), &salt)
            .map_err(|e| HashError(e.to_string()))?;
        Ok(hash.to_string())
    }

    /// Synchronous verify (benchmarks, blocking contexts).
    pub fn verify_blocking(&self, secret: &str, stored: &str) -> Result<bool, HashError> {
        let parsed =
            PasswordHash::new(stored).map_err(|e| HashError(format!("stored hash: {e}")))?;
        // The stored hash carries its own parameters, so old hashes keep verifying
        // after the configured cost changes.
        match self.argon2().verify_password(secret.as_bytes(), &parsed) {
            Ok(()) => Ok(true),
            Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
            Err(e) => Err(HashError(e.to_string())),
        }
    }
}

/// SHA-256 of a high-entropy token, hex: the form refresh tokens, link codes and
/// recovery codes are stored and looked up in.
pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> SecretHasher {
        SecretHasher::new(Argon2Params {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
            max_concurrent: 1,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn hash_and_verify() {
        let h = cheap();
        let stored = h.hash("123456".into()).await.unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(!stored.contains("123456"));
        assert!(h.verify("123456".into(), stored.clone()).await.unwrap());
        assert!(!h.verify("123457".into(), stored.clone()).await.unwrap());
        // Hashes made with other parameters still verify.
        let strong = SecretHasher::new(Argon2Params::default()).unwrap();
        assert!(strong.verify("123456".into(), stored).await.unwrap());
    }

    #[test]
    fn corrupt_stored_hash_is_an_error_not_a_match() {
        assert!(cheap().verify_blocking("x", "not a phc string").is_err());
    }

    #[test]
    fn invalid_params_are_refused() {
        assert!(
            SecretHasher::new(Argon2Params {
                memory_kib: 1,
                iterations: 0,
                parallelism: 0,
                ..Argon2Params::default()
            })
            .is_err()
        );
    }

    #[test]
    fn zero_concurrency_is_refused() {
        let err = SecretHasher::new(Argon2Params {
            max_concurrent: 0,
            ..Argon2Params::default()
        })
        .err()
        .expect("refused");
        assert!(err.to_string().contains("max_concurrent"), "{err}");
    }

    #[tokio::test]
    async fn hashes_beyond_the_limit_wait_for_a_permit() {
        let h = cheap(); // max_concurrent = 1
        let held = h.permit().await.unwrap();
        let waiting = tokio::spawn({
            let h = h.clone();
            async move { h.hash("123456".into()).await }
        });
        // With the only permit held, the hash cannot start.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!waiting.is_finished());
        drop(held);
        let stored = waiting.await.unwrap().unwrap();
        assert!(h.verify("123456".into(), stored).await.unwrap());
    }
}
