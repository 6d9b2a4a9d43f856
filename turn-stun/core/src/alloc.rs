//! One allocation's state: lifetime, permissions, channels and bandwidth buckets.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::auth::LongTermKey;
use crate::codec::{Family, TransactionId};
use crate::server::types::{AllocationId, FiveTuple};

/// RFC 8656 §9: permissions last 300 s and cannot be given another lifetime.
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// RFC 8656 §12: channel bindings last 600 s.
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// RFC 8656 §12: after a binding expires, its number and peer stay unusable for
/// another 300 s so that late packets are not delivered to a new binding.
pub const CHANNEL_COOLDOWN: Duration = Duration::from_secs(300);

#[derive(Debug)]
pub(crate) struct Channel {
    pub(crate) peer: SocketAddr,
    pub(crate) expires: Instant,
}

/// Outcome of a ChannelBind against the existing bindings.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BindCheck {
    /// A new binding; counts against the channel quota.
    New,
    /// Refreshes the same channel/peer pair.
    Refresh,
    /// The channel is bound (or cooling down) for another peer, or the peer has another channel.
    Conflict,
}

#[derive(Debug)]
pub(crate) struct Allocation {
    pub(crate) id: AllocationId,
    pub(crate) five_tuple: FiveTuple,
    pub(crate) family: Family,
    /// What clients and peers are told (external IP substituted).
    pub(crate) advertised: SocketAddr,
    pub(crate) username: String,
    /// Whose quota this allocation counts against.
    pub(crate) account: String,
    pub(crate) key: LongTermKey,
    /// The Allocate transaction that created it, for answering retransmissions.
    pub(crate) allocate_tid: TransactionId,
    pub(crate) reservation_token: Option<[u8; 8]>,
    pub(crate) expires: Instant,
    pub(crate) lifetime: Duration,
    permissions: HashMap<IpAddr, Instant>,
    channels: HashMap<u16, Channel>,
    peer_channels: HashMap<SocketAddr, u16>,
    pub(crate) to_peer: TokenBucket,
    pub(crate) to_client: TokenBucket,
}

impl Allocation {
    #[allow(clippy::too_many_arguments)] // a constructor of plain fields; a builder would add nothing
    pub(crate) fn new(
        id: AllocationId,
        five_tuple: FiveTuple,
        family: Family,
        advertised: SocketAddr,
        username: String,
        account: String,
        key: LongTermKey,
        allocate_tid: TransactionId,
        lifetime: Duration,
        bandwidth: u64,
        now: Instant,
    ) -> Allocation {
        Allocation {
            id,
            five_tuple,
            family,
            advertised,
            username,
            account,
            key,
            allocate_tid,
            reservation_token: None,
            expires: now + lifetime,
            lifetime,
            permissions: HashMap::new(),
            channels: HashMap::new(),
            peer_channels: HashMap::new(),
            to_peer: TokenBucket::new(bandwidth, now),
            to_client: TokenBucket::new(bandwidth, now),
        }
    }

    pub(crate) fn has_permission(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions
            .get(&ip.to_canonical())
            .is_some_and(|&exp| exp > now)
    }

    /// Permissions that are still live.
    pub(crate) fn live_permissions(&self, now: Instant) -> usize {
        self.permissions.values().filter(|&&exp| exp > now).count()
    }

    pub(crate) fn install_permission(&mut self, ip: IpAddr, now: Instant) {
        self.permissions
            .insert(ip.to_canonical(), now + PERMISSION_LIFETIME);
    }

    /// How many of `ips` are not yet live permissions.
    pub(crate) fn new_permissions<'a>(
        &self,
        ips: impl Iterator<Item = &'a IpAddr>,
        now: Instant,
    ) -> usize {
        let mut seen: Vec<IpAddr> = Vec::new();
        for ip in ips {
            let ip = ip.to_canonical();
            if !self.has_permission(ip, now) && !seen.contains(&ip) {
                seen.push(ip);
            }
        }
        seen.len()
    }

    /// The live channel bound to `peer`, if any.
    pub(crate) fn channel_for_peer(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        let number = *self.peer_channels.get(&peer)?;
        self.channels
            .get(&number)
            .filter(|c| c.expires > now)
            .map(|_| number)
    }

    /// The peer of a live channel.
    pub(crate) fn channel_peer(&self, number: u16, now: Instant) -> Option<SocketAddr> {
        self.channels
            .get(&number)
            .filter(|c| c.expires > now)
            .map(|c| c.peer)
    }

    pub(crate) fn live_channels(&self, now: Instant) -> usize {
        self.channels.values().filter(|c| c.expires > now).count()
    }

    pub(crate) fn check_bind(&self, number: u16, peer: SocketAddr, now: Instant) -> BindCheck {
        let cooling = |c: &Channel| c.expires + CHANNEL_COOLDOWN > now;
        match self.channels.get(&number) {
            Some(c) if c.peer == peer => BindCheck::Refresh,
            Some(c) if cooling(c) => BindCheck::Conflict,
            _ => match self.peer_channels.get(&peer) {
                Some(other)
                    if *other != number && self.channels.get(other).is_some_and(cooling) =>
                {
                    BindCheck::Conflict
                }
                _ => BindCheck::New,
            },
        }
    }

    pub(crate) fn bind_channel(&mut self, number: u16, peer: SocketAddr, now: Instant) {
        if let Some(old) = self.channels.insert(
            number,
            Channel {
                peer,
                expires: now + CHANNEL_LIFETIME,
            },
        ) && old.peer != peer
        {
            self.peer_channels.remove(&old.peer);
        }
        if let Some(old_number) = self.peer_channels.insert(peer, number)
            && old_number != number
        {
            self.channels.remove(&old_number);
        }
        self.install_permission(peer.ip(), now);
    }

    /// Drops permissions that have expired and channels past their cooldown.
    pub(crate) fn purge(&mut self, now: Instant) {
        self.permissions.retain(|_, exp| *exp > now);
        let peer_channels = &mut self.peer_channels;
        self.channels.retain(|_, c| {
            let keep = c.expires + CHANNEL_COOLDOWN > now;
            if !keep {
                peer_channels.remove(&c.peer);
            }
            keep
        });
    }
}

/// A token bucket in bytes: `rate` per second, holding at most one second's worth
/// (and never less than 64 KiB, so one burst of full-size datagrams fits).
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    tokens: f64,
    capacity: f64,
    rate: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(rate_per_sec: u64, now: Instant) -> TokenBucket {
        let rate = rate_per_sec as f64;
        let capacity = rate.max(65_536.0);
        TokenBucket {
            tokens: capacity,
            capacity,
            rate,
            last: now,
        }
    }

    /// A bucket with an explicit capacity (used for request rate limits).
    pub(crate) fn with_capacity(rate_per_sec: u64, capacity: u64, now: Instant) -> TokenBucket {
        let capacity = capacity as f64;
        TokenBucket {
            tokens: capacity,
            capacity,
            rate: rate_per_sec as f64,
            last: now,
        }
    }

    /// Takes `amount` tokens if available.
    pub(crate) fn take(&mut self, amount: u64, now: Instant) -> bool {
        self.refill(now);
        let amount = amount as f64;
        if self.tokens >= amount {
            self.tokens -= amount;
            true
        } else {
            false
        }
    }

    /// True when the bucket has refilled completely (and can be forgotten).
    #[cfg(test)]
    pub(crate) fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.capacity
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::types::Transport;

    fn alloc(now: Instant) -> Allocation {
        let ft = FiveTuple {
            transport: Transport::Udp,
            client: "192.0.2.1:5000".parse().unwrap(),
            server: "192.0.2.10:3478".parse().unwrap(),
        };
        Allocation::new(
            AllocationId(1),
            ft,
            Family::V4,
            "192.0.2.10:50000".parse().unwrap(),
            "u".into(),
            "u".into(),
            LongTermKey([0; 16]),
            TransactionId([0; 12]),
            Duration::from_secs(600),
            1000,
            now,
        )
    }

    #[test]
    fn permissions_expire_after_300_seconds() {
        let t0 = Instant::now();
        let mut a = alloc(t0);
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        a.install_permission(ip, t0);
        assert!(a.has_permission(ip, t0 + Duration::from_secs(299)));
        assert!(!a.has_permission(ip, t0 + Duration::from_secs(300)));
        assert!(a.has_permission("::ffff:198.51.100.1".parse().unwrap(), t0));
        a.purge(t0 + Duration::from_secs(300));
        assert_eq!(a.live_permissions(t0), 0);
    }

    #[test]
    fn channel_rules_follow_rfc8656() {
        let t0 = Instant::now();
        let mut a = alloc(t0);
        let p1: SocketAddr = "198.51.100.1:1000".parse().unwrap();
        let p2: SocketAddr = "198.51.100.2:1000".parse().unwrap();
        assert_eq!(a.check_bind(0x4000, p1, t0), BindCheck::New);
        a.bind_channel(0x4000, p1, t0);
        assert!(
            a.has_permission(p1.ip(), t0),
            "a channel binding installs a permission"
        );
        assert_eq!(a.check_bind(0x4000, p1, t0), BindCheck::Refresh);
        assert_eq!(a.check_bind(0x4000, p2, t0), BindCheck::Conflict);
        assert_eq!(a.check_bind(0x4001, p1, t0), BindCheck::Conflict);
        assert_eq!(a.channel_for_peer(p1, t0), Some(0x4000));
        let expired = t0 + CHANNEL_LIFETIME;
        assert_eq!(a.channel_peer(0x4000, expired), None);
        // Still cooling down: neither the number nor the peer can move yet.
        assert_eq!(a.check_bind(0x4000, p2, expired), BindCheck::Conflict);
        let cooled = expired + CHANNEL_COOLDOWN;
        assert_eq!(a.check_bind(0x4000, p2, cooled), BindCheck::New);
        a.purge(cooled);
        assert_eq!(a.live_channels(t0), 0);
        assert_eq!(a.check_bind(0x4001, p1, cooled), BindCheck::New);
    }

    #[test]
    fn token_bucket_limits_and_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::with_capacity(10, 20, t0);
        assert!(b.take(20, t0));
        assert!(!b.take(1, t0));
        assert!(b.take(10, t0 + Duration::from_secs(1)));
        assert!(!b.is_full(t0 + Duration::from_secs(1)));
        assert!(b.is_full(t0 + Duration::from_secs(3)));
    }
}
