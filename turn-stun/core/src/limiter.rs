//! The per-source limit on answers to unauthenticated requests (401/438 challenges,
//! Binding responses, 400/420 errors).
//!
//! Why: on UDP the source address is not proven, and each of those answers is two
//! to three times the size of the request that earned it, so an unlimited server
//! reflects and amplifies traffic at whoever the attacker names as the source.
//!
//! Sources are keyed by IPv4 address or IPv6 /64 (one subscriber's usual
//! assignment; keying by full IPv6 address would give every attacker 2^64 fresh
//! budgets). Memory is bounded without ever refusing a *new* source: buckets live
//! in two generations of at most `capacity` entries each. A source found in the old
//! generation moves to the new one; when the new one fills, or every
//! [`ROTATE_INTERVAL`], the old generation is dropped whole. Every operation is
//! O(1), and a spoofing flood can only make the limiter forget sources, which
//! hands each forgotten source one fresh burst: an attacker must send about
//! `capacity` spoofed packets to win one burst of answers at a victim, which is no
//! amplification at all.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::alloc::TokenBucket;

/// The old generation is dropped at least this often, so idle sources are
/// forgotten (their buckets have long refilled: the default burst refills in 4 s).
pub(crate) const ROTATE_INTERVAL: Duration = Duration::from_secs(10);

/// A source's identity for rate limiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum SourceKey {
    /// A whole IPv4 address.
    V4(u32),
    /// The upper 64 bits of an IPv6 address.
    V6Prefix(u64),
}

impl SourceKey {
    /// IPv4-mapped IPv6 sources (dual-stack sockets) count as their IPv4 address.
    pub(crate) fn of(ip: IpAddr) -> SourceKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => SourceKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => SourceKey::V6Prefix((u128::from(v6) >> 64) as u64),
        }
    }
}

/// Token buckets per source, bounded as the module docs describe.
#[derive(Debug)]
pub(crate) struct SourceLimiter {
    rate_per_sec: u64,
    burst: u64,
    capacity: usize,
    current: HashMap<SourceKey, TokenBucket>,
    previous: HashMap<SourceKey, TokenBucket>,
    next_rotation: Option<Instant>,
}

impl SourceLimiter {
    /// `rate_per_sec` answers per source, bursts of `burst`; at most `capacity`
    /// sources per generation (so at most twice that in memory).
    pub(crate) fn new(rate_per_sec: u64, burst: u64, capacity: usize) -> SourceLimiter {
        SourceLimiter {
            rate_per_sec,
            burst,
            capacity: capacity.max(1),
            current: HashMap::new(),
            previous: HashMap::new(),
            next_rotation: None,
        }
    }

    /// Takes one answer from `source`'s budget; false when it is spent.
    pub(crate) fn allow(&mut self, now: Instant, source: IpAddr) -> bool {
        let key = SourceKey::of(source);
        if let Some(bucket) = self.current.get_mut(&key) {
            return bucket.take(1, now);
        }
        let mut bucket = self
            .previous
            .remove(&key)
            .unwrap_or_else(|| TokenBucket::with_capacity(self.rate_per_sec, self.burst, now));
        let allowed = bucket.take(1, now);
        if self.current.len() >= self.capacity {
            self.rotate(now);
        }
        self.current.insert(key, bucket);
        self.next_rotation.get_or_insert(now + ROTATE_INTERVAL);
        allowed
    }

    /// Drops the old generation when its time has come.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.next_rotation.is_some_and(|t| t <= now) {
            self.rotate(now);
            if self.current.is_empty() && self.previous.is_empty() {
                self.next_rotation = None;
            }
        }
    }

    /// When [`SourceLimiter::handle_timeout`] has work to do.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.next_rotation
    }

    /// Sources currently remembered (both generations).
    pub(crate) fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    fn rotate(&mut self, now: Instant) {
        self.previous = std::mem::take(&mut self.current);
        self.next_rotation = Some(now + ROTATE_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(n: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + n))
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut l = SourceLimiter::new(10, 20, 100);
        let a = v4(1);
        assert_eq!((0..25).filter(|_| l.allow(t0, a)).count(), 20);
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!((0..25).filter(|_| l.allow(t1, a)).count(), 5);
        assert!(l.allow(t0, v4(2)), "another source has its own budget");
    }

    #[test]
    fn ipv6_sources_share_a_budget_per_64_and_mapped_is_ipv4() {
        let t0 = Instant::now();
        let mut l = SourceLimiter::new(1, 3, 100);
        for host in 1..=3u16 {
            let ip: IpAddr = format!("2001:db8:1:2::{host:x}").parse().unwrap();
            assert!(l.allow(t0, ip));
        }
        assert!(!l.allow(t0, "2001:db8:1:2:ffff::9".parse().unwrap()));
        assert!(l.allow(t0, "2001:db8:1:3::1".parse().unwrap()));
        let mut l = SourceLimiter::new(1, 1, 100);
        assert!(l.allow(t0, "192.0.2.7".parse().unwrap()));
        assert!(!l.allow(t0, "::ffff:192.0.2.7".parse().unwrap()));
    }

    /// The bug this replaced: once the map was full, new sources got no answer at
    /// all, so a spoofed flood locked every new client out.
    #[test]
    fn a_full_table_still_answers_new_sources_and_stays_bounded() {
        let t0 = Instant::now();
        let cap = 1000;
        let mut l = SourceLimiter::new(1, 2, cap);
        for n in 0..50_000 {
            assert!(l.allow(t0, v4(n)), "fresh source {n} is answered");
            assert!(l.len() <= 2 * cap);
        }
        assert!(l.allow(t0, "203.0.113.9".parse().unwrap()));
    }

    #[test]
    fn a_busy_source_keeps_its_spent_budget_across_rotations() {
        let t0 = Instant::now();
        let mut l = SourceLimiter::new(1, 2, 4);
        let victim = v4(999);
        assert!(l.allow(t0, victim));
        assert!(l.allow(t0, victim));
        assert!(!l.allow(t0, victim));
        // Four other sources fill the generation and rotate it; the victim moves
        // back from the old generation with its spent bucket, not a fresh one.
        for n in 0..4 {
            l.allow(t0, v4(n));
        }
        assert!(!l.allow(t0, victim));
        l.handle_timeout(t0 + ROTATE_INTERVAL);
        assert!(l.len() > 0, "one rotation keeps the last generation");
        l.handle_timeout(t0 + 2 * ROTATE_INTERVAL);
        l.handle_timeout(t0 + 3 * ROTATE_INTERVAL);
        assert_eq!(l.len(), 0, "idle sources are forgotten");
        assert_eq!(l.poll_timeout(), None);
    }
}
