//! Keyed rate limiting with GCRA (the generic cell rate algorithm): one timestamp
//! per key, exact `Retry-After` values, and no background task.
//!
//! Limits live in process memory: in the distributed shape each pod enforces its
//! own share, unless its owner shares counts between pods ([`KeyedLimiter::charge`],
//! as chat's per-account limits do). Counters that must be exact and global
//! (wrong-code tries, resend waits) are stored with the data they protect instead.

use crate::clock::UnixMillis;
use std::collections::HashMap;
use std::sync::Mutex;

/// `burst` events at once, refilled at one event per `period_ms / burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Events allowed in one period (also the burst size).
    pub count: u32,
    /// The period, in seconds.
    pub period_secs: u32,
}

impl Quota {
    /// `count` events per `period_secs`.
    pub const fn new(count: u32, period_secs: u32) -> Self {
        Self { count, period_secs }
    }

    fn interval_ms(&self) -> i64 {
        (i64::from(self.period_secs) * 1000) / i64::from(self.count.max(1))
    }
}

/// Refused: try again after this many milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter {
    /// Milliseconds until one more event is allowed.
    pub wait_ms: i64,
}

impl RetryAfter {
    /// The wait in whole seconds, rounded up, at least 1 (for the `Retry-After` header).
    pub fn secs(&self) -> u64 {
        ((self.wait_ms + 999) / 1000).max(1) as u64
    }
}

/// A set of GCRA buckets keyed by string (phone number, IP, prefix…).
///
/// Memory is bounded: keys live in two generations of at most
/// [`KEYS_PER_GENERATION`] each. When the current one fills, it becomes the
/// previous one and the old previous one is dropped whole, so no check ever
/// scans the map (a sweep of every key under the lock once ran on each check
/// past 100,000 keys). A key touched in either generation keeps its state; a
/// key left alone for a whole generation of newer keys is forgotten, which
/// only ever gives it a fresh budget.
#[derive(Debug)]
pub struct KeyedLimiter {
    quota: Quota,
    buckets: Mutex<Generations>,
}

/// Keys per generation; a limiter holds at most twice this many.
pub const KEYS_PER_GENERATION: usize = 50_000;

/// Theoretical arrival time per key, in two generations.
#[derive(Debug, Default)]
struct Generations {
    current: HashMap<String, UnixMillis>,
    previous: HashMap<String, UnixMillis>,
    cap: usize,
}

impl Generations {
    fn get(&self, key: &str) -> Option<UnixMillis> {
        self.current
            .get(key)
            .or_else(|| self.previous.get(key))
            .copied()
    }

    fn set(&mut self, key: &str, tat: UnixMillis) {
        if let Some(v) = self.current.get_mut(key) {
            *v = tat;
            return;
        }
        self.previous.remove(key);
        if self.current.len() >= self.cap {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key.to_owned(), tat);
    }

    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

impl KeyedLimiter {
    /// A limiter enforcing `quota` per key.
    pub fn new(quota: Quota) -> Self {
        Self::with_capacity(quota, KEYS_PER_GENERATION)
    }

    /// Like [`KeyedLimiter::new`] with `per_generation` keys per generation.
    pub fn with_capacity(quota: Quota, per_generation: usize) -> Self {
        Self {
            quota,
            buckets: Mutex::new(Generations {
                cap: per_generation.max(1),
                ..Generations::default()
            }),
        }
    }

    /// Keys held now (at most twice the generation size).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one event for `key` at `now`, or says how long to wait.
    pub fn check(&self, key: &str, now: UnixMillis) -> Result<(), RetryAfter> {
        let interval = self.quota.interval_ms();
        let burst_window = interval * i64::from(self.quota.count.max(1));
        // The lock is held for two hash-map lookups only; no await happens under it.
        let mut buckets = self.lock();
        let tat = buckets.get(key).unwrap_or(now).max(now);
        let new_tat = tat + interval;
        if new_tat - now > burst_window {
            // Refused keys stay in the current generation: a flood of fresh
            // keys must not age a limited key out and give it a new budget.
            buckets.set(key, tat);
            return Err(RetryAfter {
                wait_ms: new_tat - now - burst_window,
            });
        }
        buckets.set(key, new_tat);
        Ok(())
    }

    /// Counts `n` events that happened elsewhere (another node let them
    /// through) without refusing any: the key's budget shrinks by them, but
    /// never below empty, so others' use can hold the key back for at most
    /// one interval per event it later tries.
    pub fn charge(&self, key: &str, n: u32, now: UnixMillis) {
        let interval = self.quota.interval_ms();
        let burst_window = interval * i64::from(self.quota.count.max(1));
        let mut buckets = self.lock();
        let tat = buckets.get(key).unwrap_or(now).max(now);
        let charged = tat.saturating_add(interval.saturating_mul(i64::from(n)));
        buckets.set(key, charged.min(now + burst_window));
    }

    /// Checks without counting (used to refuse before doing expensive work).
    pub fn peek(&self, key: &str, now: UnixMillis) -> Result<(), RetryAfter> {
        let interval = self.quota.interval_ms();
        let burst_window = interval * i64::from(self.quota.count.max(1));
        let tat = self.lock().get(key).unwrap_or(now).max(now);
        let new_tat = tat + interval;
        if new_tat - now > burst_window {
            Err(RetryAfter {
                wait_ms: new_tat - now - burst_window,
            })
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_refuses_with_the_exact_wait() {
        let l = KeyedLimiter::new(Quota::new(3, 60));
        for _ in 0..3 {
            l.check("a", 0).unwrap();
        }
        let refused = l.check("a", 0).unwrap_err();
        assert_eq!(refused.wait_ms, 20_000);
        assert_eq!(refused.secs(), 20);
        // Another key is independent.
        l.check("b", 0).unwrap();
        // After one interval, exactly one more event fits.
        l.check("a", 20_000).unwrap();
        assert!(l.check("a", 20_000).is_err());
    }

    #[test]
    fn memory_is_bounded_and_busy_keys_keep_their_state() {
        let l = KeyedLimiter::with_capacity(Quota::new(1, 3600), 1000);
        l.check("victim", 0).unwrap();
        for i in 0..100_000 {
            l.check(&format!("flood-{i}"), 0).unwrap();
            if i % 500 == 0 {
                // Touched within every generation: never forgotten.
                assert!(l.check("victim", 0).is_err(), "after {i} other keys");
            }
            assert!(l.len() <= 2000, "{} keys held", l.len());
        }
    }

    #[test]
    fn charged_events_spend_the_budget_but_never_past_empty() {
        let l = KeyedLimiter::new(Quota::new(10, 10));
        l.charge("a", 7, 0);
        for _ in 0..3 {
            l.check("a", 0).unwrap();
        }
        assert_eq!(l.check("a", 0).unwrap_err().wait_ms, 1000);
        // A huge charge only empties the bucket: one interval later one fits.
        l.charge("b", 1_000_000, 0);
        assert_eq!(l.check("b", 0).unwrap_err().wait_ms, 1000);
        l.check("b", 1000).unwrap();
    }

    #[test]
    fn peek_does_not_count() {
        let l = KeyedLimiter::new(Quota::new(1, 10));
        l.peek("k", 0).unwrap();
        l.peek("k", 0).unwrap();
        l.check("k", 0).unwrap();
        assert_eq!(l.peek("k", 0).unwrap_err().wait_ms, 10_000);
    }
}
