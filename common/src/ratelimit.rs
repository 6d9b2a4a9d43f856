//! Keyed rate limiting with GCRA (the generic cell rate algorithm): one timestamp
//! per key, exact `Retry-After` values, and no background task.
//!
//! Limits live in process memory: in the distributed shape each pod enforces its
//! own share. Counters that must be global (wrong-code tries, resend waits) are
//! stored with the data they protect instead.

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
#[derive(Debug)]
pub struct KeyedLimiter {
    quota: Quota,
    /// Theoretical arrival time per key.
    tats: Mutex<HashMap<String, UnixMillis>>,
}

/// Above this many keys, expired ones are swept on the next insert.
const SWEEP_AT: usize = 100_000;

impl KeyedLimiter {
    /// A limiter enforcing `quota` per key.
    pub fn new(quota: Quota) -> Self {
        Self {
            quota,
            tats: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one event for `key` at `now`, or says how long to wait.
    pub fn check(&self, key: &str, now: UnixMillis) -> Result<(), RetryAfter> {
        let interval = self.quota.interval_ms();
        let burst_window = interval * i64::from(self.quota.count.max(1));
        // The lock is held for a hash-map lookup only; no await happens under it.
        let mut tats = self.tats.lock().unwrap_or_else(|p| p.into_inner());
        if tats.len() >= SWEEP_AT {
            tats.retain(|_, tat| *tat > now);
        }
        let tat = tats.get(key).copied().unwrap_or(now).max(now);
        let new_tat = tat + interval;
        if new_tat - now > burst_window {
            return Err(RetryAfter {
                wait_ms: new_tat - now - burst_window,
            });
        }
        tats.insert(key.to_owned(), new_tat);
        Ok(())
    }

    /// Checks without counting (used to refuse before doing expensive work).
    pub fn peek(&self, key: &str, now: UnixMillis) -> Result<(), RetryAfter> {
        let interval = self.quota.interval_ms();
        let burst_window = interval * i64::from(self.quota.count.max(1));
        let tats = self.tats.lock().unwrap_or_else(|p| p.into_inner());
        let tat = tats.get(key).copied().unwrap_or(now).max(now);
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
    fn peek_does_not_count() {
        let l = KeyedLimiter::new(Quota::new(1, 10));
        l.peek("k", 0).unwrap();
        l.peek("k", 0).unwrap();
        l.check("k", 0).unwrap();
        assert_eq!(l.peek("k", 0).unwrap_err().wait_ms, 10_000);
    }
}
