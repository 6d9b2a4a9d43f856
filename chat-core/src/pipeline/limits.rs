//! Per-connection rate limits and the push-coalescing rule: small pure state
//! machines with time as an argument.

use natter_common::UnixMillis;
use natter_common::ratelimit::Quota;
use natter_proto::{DeviceId, UserId};
use std::collections::HashMap;

/// GCRA for one key: `count` events per `period`, bursts up to `count`.
#[derive(Debug, Clone)]
pub struct Gcra {
    interval_ms: i64,
    window_ms: i64,
    tat: UnixMillis,
}

impl Gcra {
    /// A limiter for `quota`.
    pub fn new(quota: Quota) -> Self {
        let count = i64::from(quota.count.max(1));
        let interval_ms = (i64::from(quota.period_secs) * 1000 / count).max(1);
        Self {
            interval_ms,
            window_ms: interval_ms * count,
            tat: i64::MIN,
        }
    }

    /// Counts one event, or says how many milliseconds to wait.
    pub fn check(&mut self, now: UnixMillis) -> Result<(), u64> {
        let tat = self.tat.max(now);
        let next = tat + self.interval_ms;
        if next - now > self.window_ms {
            return Err((next - now - self.window_ms) as u64);
        }
        self.tat = next;
        Ok(())
    }
}

/// "One push per burst": a device without a socket is pushed for the first
/// message after it went offline, then at most once per `min_interval_ms`
/// while it stays offline. Connecting starts a new burst.
#[derive(Debug, Default)]
pub struct PushPolicy {
    min_interval_ms: i64,
    last: HashMap<(UserId, DeviceId), UnixMillis>,
}

/// Entries kept before old ones are swept (an entry older than the interval
/// means the same as no entry).
const SWEEP_AT: usize = 100_000;

impl PushPolicy {
    /// A policy with the given minimum interval.
    pub fn new(min_interval_ms: i64) -> Self {
        Self {
            min_interval_ms,
            last: HashMap::new(),
        }
    }

    /// The device connected: its next offline message pushes again.
    pub fn handle_connected(&mut self, user: &UserId, device: DeviceId) {
        self.last.remove(&(user.clone(), device));
    }

    /// A message was queued for an offline device: push now?
    pub fn should_push(&mut self, user: &UserId, device: DeviceId, now: UnixMillis) -> bool {
        if self.last.len() >= SWEEP_AT {
            let min = self.min_interval_ms;
            self.last.retain(|_, t| now - *t < min);
        }
        match self.last.get_mut(&(user.clone(), device)) {
            Some(t) if now - *t < self.min_interval_ms => false,
            Some(t) => {
                *t = now;
                true
            }
            None => {
                self.last.insert((user.clone(), device), now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_burst_then_waits() {
        let mut g = Gcra::new(Quota::new(3, 3));
        for _ in 0..3 {
            g.check(10_000).unwrap();
        }
        assert_eq!(g.check(10_000), Err(1000));
        g.check(11_000).unwrap();
        assert!(g.check(11_000).is_err());
    }

    #[test]
    fn one_push_per_burst() {
        let mut p = PushPolicy::new(60_000);
        let u = UserId::new("u");
        assert!(p.should_push(&u, 1, 0));
        assert!(!p.should_push(&u, 1, 1_000));
        assert!(!p.should_push(&u, 1, 59_999));
        assert!(p.should_push(&u, 2, 1_000), "devices are independent");
        assert!(
            p.should_push(&u, 1, 60_000),
            "a long burst is reminded once per interval"
        );
        p.handle_connected(&u, 1);
        assert!(
            p.should_push(&u, 1, 60_001),
            "a new burst after reconnecting"
        );
    }
}
