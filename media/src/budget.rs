//! The process-wide memory budget of image decoding (`media.decode_memory_bytes`).
//!
//! Counting decodes (`media.thumbnail_concurrency`) does not bound memory: each
//! decode may hold up to `max_image_pixels` × 12 bytes, so the bound would grow
//! with the number of CPUs. Instead every decode reserves what it may hold
//! ([`crate::thumb::decode_cost`]) from one budget before it reads the file,
//! waits while others hold it, and gives it back when it ends. A decode that
//! needs more than the whole budget is refused at once (waiting could never end).

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Reservations are counted in KiB so that budgets of terabytes fit the
/// semaphore's `u32` requests.
const UNIT: u64 = 1024;

/// Why a reservation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// More than the whole budget.
    #[error(
        "decoding this image needs about {need} bytes of memory; this server decodes at most {budget} bytes at once (media.decode_memory_bytes)"
    )]
    TooLarge {
        /// Bytes asked for.
        need: u64,
        /// The whole budget.
        budget: u64,
    },
    /// The budget was closed (never done; kept so no path can panic).
    #[error("the decode memory budget is closed")]
    Closed,
}

/// One budget, shared by every decode of the process.
#[derive(Debug, Clone)]
pub struct DecodeBudget {
    permits: Arc<Semaphore>,
    total_units: u32,
}

/// Memory held for one decode; given back when dropped. Move it into the
/// blocking task that decodes, so it lasts exactly as long as the decode.
#[derive(Debug)]
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
}

impl DecodeBudget {
    /// A budget of `bytes`, rounded up to whole KiB as reservations are (so a
    /// budget of exactly one image's cost still holds it), at most `u32::MAX` KiB.
    pub fn new(bytes: u64) -> Self {
        let total_units = u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX);
        Self {
            permits: Arc::new(Semaphore::new(total_units as usize)),
            total_units,
        }
    }

    /// The whole budget in bytes.
    pub fn total(&self) -> u64 {
        u64::from(self.total_units) * UNIT
    }

    /// Bytes not reserved right now.
    pub fn available(&self) -> u64 {
        self.permits.available_permits() as u64 * UNIT
    }

    fn units(&self, bytes: u64) -> Result<u32, BudgetError> {
        let too_large = || BudgetError::TooLarge {
            need: bytes,
            budget: self.total(),
        };
        let units = u32::try_from(bytes.div_ceil(UNIT)).map_err(|_| too_large())?;
        if units > self.total_units {
            return Err(too_large());
        }
        Ok(units)
    }

    /// Refuses at once what could never be reserved, without waiting.
    pub fn check(&self, bytes: u64) -> Result<(), BudgetError> {
        self.units(bytes).map(|_| ())
    }

    /// Waits until `bytes` are free and holds them. Waiters are served in
    /// order (tokio's semaphore is fair), so a large decode is not starved by
    /// a stream of small ones.
    pub async fn reserve(&self, bytes: u64) -> Result<Reservation, BudgetError> {
        let units = self.units(bytes)?;
        let permit = self
            .permits
            .clone()
            .acquire_many_owned(units)
            .await
            .map_err(|_| BudgetError::Closed)?;
        Ok(Reservation { _permit: permit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reservations_never_add_up_to_more_than_the_budget() {
        const MIB: u64 = 1 << 20;
        let budget = DecodeBudget::new(100 * MIB);
        let held = Arc::new(AtomicU64::new(0));
        let peak = Arc::new(AtomicU64::new(0));
        // Twelve decodes of 30 MiB at once: at most three fit.
        let tasks: Vec<_> = (0..12)
            .map(|_| {
                let (budget, held, peak) = (budget.clone(), held.clone(), peak.clone());
                tokio::spawn(async move {
                    let r = budget.reserve(30 * MIB).await.unwrap();
                    let now = held.fetch_add(30 * MIB, Ordering::SeqCst) + 30 * MIB;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    held.fetch_sub(30 * MIB, Ordering::SeqCst);
                    drop(r);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 90 * MIB);
        assert_eq!(budget.available(), 100 * MIB);
    }

    #[tokio::test]
    async fn more_than_the_whole_budget_is_refused_without_waiting() {
        let budget = DecodeBudget::new(10 << 20);
        assert_eq!(budget.total(), 10 << 20);
        // Taken in full by someone else: a request that can never fit still
        // returns at once, one that fits waits.
        let all = budget.reserve(10 << 20).await.unwrap();
        assert_eq!(
            budget.reserve((10 << 20) + 1).await.unwrap_err(),
            BudgetError::TooLarge {
                need: (10 << 20) + 1,
                budget: 10 << 20
            }
        );
        assert!(budget.check(u64::MAX).is_err());
        let waiting = tokio::time::timeout(Duration::from_millis(50), budget.reserve(1)).await;
        assert!(waiting.is_err(), "a reservation went past the budget");
        drop(all);
        assert_eq!(budget.available(), 10 << 20);
        let small = budget.reserve(1).await.unwrap();
        // Reservations are whole KiB.
        assert_eq!(budget.available(), (10 << 20) - 1024);
        drop(small);
    }
}
