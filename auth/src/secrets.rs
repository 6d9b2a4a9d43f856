//! Hashing of the secrets auth keeps: one-time codes and PINs with argon2id
//! (slow, because they are guessable), high-entropy tokens with SHA-256 (fast,
//! because they are not).

use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD as PHC_B64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
use subtle::ConstantTimeEq;
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
    memory: Arc<WorkingMemory>,
}

/// argon2's working memory (`memory_kib` per hash), kept for the next hash
/// instead of freed. Freed, the allocator keeps it anyway: glibc raises its
/// mmap threshold after the first free of a 19 MiB block and then serves the
/// next ones from per-thread arenas it never returns, so RSS once grew to
/// 450 MB and more under unauthenticated code checks with `max_concurrent` 2.
/// Kept here, at most `max_concurrent` buffers ever exist (one per permit).
#[derive(Default)]
struct WorkingMemory {
    free: Mutex<Vec<Vec<Block>>>,
    /// Buffers kept at most (the permit count).
    keep: usize,
}

impl WorkingMemory {
    fn take(&self, blocks: usize) -> Vec<Block> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        match free.iter().position(|b| b.len() == blocks) {
            Some(i) => free.swap_remove(i),
            None => vec![Block::new(); blocks],
        }
    }

    fn give(&self, buffer: Vec<Block>, configured_blocks: usize) {
        // Only the configured size is kept: a stored hash with other
        // parameters (from before a cost change) gets a buffer of its own.
        if buffer.len() != configured_blocks {
            return;
        }
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < self.keep {
            free.push(buffer);
        }
    }
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
            memory: Arc::new(WorkingMemory {
                free: Mutex::default(),
                keep: p.max_concurrent as usize,
            }),
        })
    }

    /// argon2id with `params` into `out`, in reused working memory.
    fn compute(
        &self,
        params: Params,
        secret: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> Result<(), HashError> {
        let blocks = params.block_count();
        let mut memory = self.memory.take(blocks);
        let result = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into_with_memory(secret, salt, out, &mut memory[..])
            .map_err(|e| HashError(e.to_string()));
        self.memory.give(memory, self.params.block_count());
        result
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

    /// Synchronous hash (benchmarks, blocking contexts): a PHC string,
    /// `$argon2id$v=19$m=…,t=…,p=…$<salt>$<hash>`.
    pub fn hash_blocking(&self, secret: &str) -> Result<String, HashError> {
        let salt: [u8; 16] = natter_common::random::bytes();
        let mut out = [0u8; 32];
        self.compute(self.params.clone(), secret.as_bytes(), &salt, &mut out)?;
        let p = &self.params;
        Ok(format!(
            "$argon2id$v=19$m={},t={},p={}${}${}",
            p.m_cost(),
            p.t_cost(),
            p.p_cost(),
            PHC_B64.encode(salt),
            PHC_B64.encode(out)
        ))
    }

    /// Synchronous verify (benchmarks, blocking contexts). The comparison is
    /// constant-time.
    pub fn verify_blocking(&self, secret: &str, stored: &str) -> Result<bool, HashError> {
        let parsed =
            PasswordHash::new(stored).map_err(|e| HashError(format!("stored hash: {e}")))?;
        if parsed.algorithm.as_str() != "argon2id" || parsed.version.is_some_and(|v| v != 0x13) {
            return Err(HashError(format!(
                "stored hash: not argon2id v19 ({})",
                parsed.algorithm
            )));
        }
        // The stored hash carries its own parameters, so old hashes keep verifying
        // after the configured cost changes.
        let params =
            Params::try_from(&parsed).map_err(|e| HashError(format!("stored hash: {e}")))?;
        let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
            return Err(HashError("stored hash: no salt or hash".into()));
        };
        let expected = expected.as_bytes();
        let mut out = vec![0u8; expected.len()];
        self.compute(params, secret.as_bytes(), salt.as_ref(), &mut out)?;
        Ok(bool::from(out.ct_eq(expected)))
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
    fn the_phc_strings_match_the_argon2_crates_both_ways() {
        use argon2::{PasswordHasher, PasswordVerifier};
        let h = cheap();
        let theirs = Argon2::new(Algorithm::Argon2id, Version::V0x13, h.params.clone());
        let stored_by_them = theirs
            .hash_password_with_salt(b"424242", b"0123456789abcdef")
            .unwrap()
            .to_string();
        assert!(h.verify_blocking("424242", &stored_by_them).unwrap());
        assert!(!h.verify_blocking("424243", &stored_by_them).unwrap());
        let ours = h.hash_blocking("424242").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(theirs.verify_password(b"424242", &parsed).is_ok());
        assert!(theirs.verify_password(b"424243", &parsed).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn working_memory_is_reused_never_more_buffers_than_permits() {
        let h = SecretHasher::new(Argon2Params {
            memory_kib: 256,
            iterations: 1,
            parallelism: 1,
            max_concurrent: 2,
        })
        .unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..24 {
            let h = h.clone();
            tasks.spawn(async move { h.hash(format!("{i:06}")).await.unwrap() });
        }
        while let Some(stored) = tasks.join_next().await {
            assert!(stored.unwrap().starts_with("$argon2id$v=19$m=256,t=1,p=1$"));
        }
        let kept = h.memory.free.lock().unwrap();
        assert!(
            !kept.is_empty() && kept.len() <= 2,
            "{} buffers",
            kept.len()
        );
        assert!(kept.iter().all(|b| b.len() == 256));
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
