//! Which peers an allocation may relay to.
//!
//! A TURN server that relays anywhere is an open proxy into the networks it sits in:
//! loopback services, the private LAN, and cloud metadata at 169.254.169.254. By
//! default we refuse the special-purpose ranges below, including when an IPv4
//! address arrives wrapped in IPv6 (IPv4-mapped, IPv4-compatible, NAT64, 6to4 and
//! Teredo forms). An explicit allow-list overrides the deny-list, for tests and
//! private deployments. The server's own listening addresses are never valid peers,
//! whatever the allow-list says, so a client cannot make the server talk to itself.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// An IP network in CIDR notation, e.g. `10.0.0.0/8` or `fe80::/10`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why a string is not a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The address part does not parse.
    #[error("{0:?} is not an IP address")]
    BadAddress(String),
    /// The prefix length does not parse or is too long for the family.
    #[error("prefix length {prefix:?} is not a number from 0 to {max}")]
    BadPrefix {
        /// The text after `/`.
        prefix: String,
        /// 32 or 128.
        max: u8,
    },
}

impl Cidr {
    /// A network; bits beyond `prefix` are cleared. `None` when `prefix` is too long.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let max = max_prefix(addr);
        if prefix > max {
            return None;
        }
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask32(prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask128(prefix))),
        };
        Some(Cidr { addr, prefix })
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies in this network (same family only).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask32(self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask128(self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `addr/prefix`, or a bare address meaning a single host.
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let s = s.trim();
        let (addr_s, prefix_s) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_s
            .parse()
            .map_err(|_| CidrError::BadAddress(addr_s.to_owned()))?;
        let max = max_prefix(addr);
        let prefix =
            match prefix_s {
                None => max,
                Some(p) => p.parse::<u8>().ok().filter(|&p| p <= max).ok_or_else(|| {
                    CidrError::BadPrefix {
                        prefix: p.to_owned(),
                        max,
                    }
                })?,
            };
        Cidr::new(addr, prefix).ok_or(CidrError::BadPrefix {
            prefix: prefix.to_string(),
            max,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The ranges refused by default (see the module docs and docs/turn.md): every
/// IANA special-purpose block (RFC 6890 and its updates) that is not globally
/// reachable, as a hardened coturn `denied-peer-ip` list has it. Documentation and
/// benchmarking ranges are included: no real peer lives there, and a network that
/// uses them internally (it happens) must not become reachable through us.
pub const DEFAULT_DENIED: &[&str] = &[
    "0.0.0.0/8",          // "this network"
    "10.0.0.0/8",         // RFC 1918
    "100.64.0.0/10",      // carrier-grade NAT (RFC 6598)
    "127.0.0.0/8",        // loopback
    "169.254.0.0/16",     // link-local, including cloud metadata services
    "172.16.0.0/12",      // RFC 1918
    "192.0.0.0/24",       // IETF protocol assignments (DS-Lite, NAT64 discovery…)
    "192.0.2.0/24",       // TEST-NET-1 (documentation)
    "192.88.99.0/24",     // 6to4 relay anycast (deprecated, RFC 7526)
    "192.168.0.0/16",     // RFC 1918
    "198.18.0.0/15",      // benchmarking (RFC 2544)
    "198.51.100.0/24",    // TEST-NET-2 (documentation)
    "203.0.113.0/24",     // TEST-NET-3 (documentation)
    "224.0.0.0/4",        // multicast
    "240.0.0.0/4",        // reserved
    "255.255.255.255/32", // limited broadcast
    "::/96",              // unspecified, loopback and IPv4-compatible (deprecated)
    "::ffff:0:0/96",      // IPv4-mapped: an IPv4 peer in IPv6 clothing
    "::ffff:0:0:0/96",    // IPv4-translated (RFC 2765)
    "100::/64",           // discard-only (RFC 6666)
    "2001:2::/48",        // benchmarking (RFC 5180)
    "2001:10::/28",       // ORCHID (deprecated)
    "2001:20::/28",       // ORCHIDv2 (not routable)
    "2001:db8::/32",      // documentation
    "3fff::/20",          // documentation (RFC 9637)
    "5f00::/16",          // SRv6 SIDs (RFC 9602)
    "fc00::/7",           // unique local
    "fe80::/10",          // link-local
    "fec0::/10",          // site-local (deprecated)
    "ff00::/8",           // multicast
];

/// Why a peer address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PeerRefusal {
    /// The peer is one of the server's own listening addresses.
    #[error("{0} is one of this server's listening addresses")]
    OwnAddress(SocketAddr),
    /// The peer (or the IPv4 address it embeds) is in a denied range.
    #[error("{peer} is in the denied range {range}")]
    Denied {
        /// The peer's IP.
        peer: IpAddr,
        /// The matching range (for IPv4 embedded in IPv6, the IPv4 range).
        range: Cidr,
    },
}

/// The relay policy: deny-list, allow-list overrides, and our own addresses.
#[derive(Debug, Clone)]
pub struct PeerPolicy {
    allowed: Vec<Cidr>,
    denied: Vec<Cidr>,
    own: Vec<SocketAddr>,
}

impl PeerPolicy {
    /// The default deny-list with `allowed` overriding it. `own` are the server's
    /// listening addresses, matched exactly: a driver listening on 0.0.0.0 lists the
    /// concrete addresses it is reachable at (loopback, relay and external IPs).
    pub fn new(allowed: Vec<Cidr>, own: Vec<SocketAddr>) -> PeerPolicy {
        let denied = DEFAULT_DENIED
            .iter()
            .map(|s| {
                s.parse()
                    .expect("DEFAULT_DENIED entries are valid CIDRs (unit-tested)")
            })
            .collect();
        PeerPolicy {
            allowed,
            denied,
            own,
        }
    }

    /// Adds a listening address (e.g. once an ephemeral port is known).
    pub fn add_own(&mut self, addr: SocketAddr) {
        self.own.push(addr);
    }

    /// Replaces the server's own addresses, e.g. when a wildcard listener's host
    /// gains or loses an interface address.
    pub fn set_own(&mut self, own: Vec<SocketAddr>) {
        self.own = own;
    }

    /// The server's own addresses, never valid peers.
    pub fn own(&self) -> &[SocketAddr] {
        &self.own
    }

    /// The allow-list.
    pub fn allowed(&self) -> &[Cidr] {
        &self.allowed
    }

    /// Whether `peer` is one of the server's own listening addresses. Every
    /// loopback address reaches a listener on a loopback or wildcard address
    /// (127.0.0.2 is as local as 127.0.0.1), so any loopback peer on a port we
    /// listen on with a loopback address counts as us.
    pub fn is_own(&self, peer: SocketAddr) -> bool {
        let ip = peer.ip().to_canonical();
        self.own.iter().any(|own| {
            let own_ip = own.ip().to_canonical();
            own.port() == peer.port()
                && (own_ip == ip || (own_ip.is_loopback() && ip.is_loopback()))
        })
    }

    /// Whether relaying to `peer` is permitted.
    pub fn check(&self, peer: SocketAddr) -> Result<(), PeerRefusal> {
        if self.is_own(peer) {
            return Err(PeerRefusal::OwnAddress(peer));
        }
        // The address as written and every IPv4 address it embeds: a wrapped form
        // is refused unless the allow-list names it or the IPv4 network inside.
        let raw = peer.ip();
        let embedded = embedded_ipv4(raw);
        let candidates = std::iter::once(raw).chain(embedded.into_iter().flatten().map(IpAddr::V4));
        let mut refusal = None;
        for candidate in candidates {
            if self.allowed.iter().any(|c| c.contains(candidate)) {
                return Ok(());
            }
            if refusal.is_none()
                && let Some(range) = self.denied.iter().find(|c| c.contains(candidate))
            {
                refusal = Some(PeerRefusal::Denied {
                    peer: peer.ip(),
                    range: *range,
                });
            }
        }
        refusal.map_or(Ok(()), Err)
    }
}

/// IPv4 addresses carried inside an IPv6 address: IPv4-mapped (::ffff:0:0/96),
/// IPv4-compatible (::/96), IPv4-translated (::ffff:0:0:0/96, RFC 2765), NAT64
/// (64:ff9b::/96, 64:ff9b:1::/48), 6to4 (2002::/16) and Teredo (2001::/32, server
/// and obfuscated client). The IPv4 address is checked as well as the IPv6 one, so
/// an allow-list entry for the IPv4 network also covers its wrapped forms.
fn embedded_ipv4(ip: IpAddr) -> [Option<Ipv4Addr>; 2] {
    let IpAddr::V6(v6) = ip else {
        return [None, None];
    };
    let bits = u128::from(v6);
    let low32 = Ipv4Addr::from(bits as u32);
    let seg = v6.segments();
    if bits >> 32 == 0 || bits >> 32 == 0xFFFF || bits >> 32 == 0xFFFF_0000 {
        return [Some(low32), None];
    }
    if bits >> 32 == 0x0064_FF9B_0000_0000_0000_0000
        || (seg[0] == 0x0064 && seg[1] == 0xFF9B && seg[2] == 0x0001)
    {
        return [Some(low32), None];
    }
    if seg[0] == 0x2002 {
        return [Some(Ipv4Addr::from((bits >> 80) as u32)), None];
    }
    if seg[0] == 0x2001 && seg[1] == 0 {
        let server = Ipv4Addr::from((bits >> 64) as u32);
        let client = Ipv4Addr::from(!(bits as u32));
        return [Some(server), Some(client)];
    }
    [None, None]
}

fn max_prefix(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn default_policy() -> PeerPolicy {
        PeerPolicy::new(
            vec![],
            vec![addr("192.0.2.10:3478"), addr("[2001:db8::1]:3478")],
        )
    }

    #[test]
    fn cidr_parsing_and_errors() {
        assert_eq!(
            "10.1.2.3/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1/128");
        assert_eq!(
            "1.2.3.4/0".parse::<Cidr>().unwrap().to_string(),
            "0.0.0.0/0"
        );
        assert_eq!(
            "1.2.3.4/33".parse::<Cidr>(),
            Err(CidrError::BadPrefix {
                prefix: "33".into(),
                max: 32
            })
        );
        assert_eq!(
            "1.2.3/8".parse::<Cidr>(),
            Err(CidrError::BadAddress("1.2.3".into()))
        );
        assert_eq!(
            "::/x".parse::<Cidr>(),
            Err(CidrError::BadPrefix {
                prefix: "x".into(),
                max: 128
            })
        );
        assert!(
            "0.0.0.0/0"
                .parse::<Cidr>()
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            !"0.0.0.0/0"
                .parse::<Cidr>()
                .unwrap()
                .contains("::1".parse().unwrap())
        );
    }

    #[test]
    fn every_default_range_is_refused() {
        let p = default_policy();
        for peer in [
            "0.1.2.3:9",
            "127.0.0.1:9",
            "10.9.9.9:9",
            "172.16.0.1:9",
            "172.31.255.255:9",
            "192.168.1.1:9",
            "100.64.0.1:9",
            "169.254.169.254:80",
            "224.0.0.1:9",
            "239.1.1.1:9",
            "240.0.0.1:9",
            "255.255.255.255:9",
            "[::]:9",
            "[::1]:9",
            "[fe80::1]:9",
            "[fc00::1]:9",
            "[fd12::1]:9",
            "[fec0::1]:9",
            "[ff02::1]:9",
        ] {
            assert!(
                matches!(p.check(addr(peer)), Err(PeerRefusal::Denied { .. })),
                "{peer} must be refused"
            );
        }
        for peer in [
            "8.8.8.8:53",
            "172.32.0.1:9",
            "100.128.0.1:9",
            "192.0.1.255:9",
            "198.20.0.1:9",
            "[2606:4700::1]:443",
            "[2a00:1450:4001::1]:443",
            "[2001:4860::8888]:53",
        ] {
            assert_eq!(p.check(addr(peer)), Ok(()), "{peer} must be allowed");
        }
    }

    #[test]
    fn ipv4_wrapped_in_ipv6_is_refused() {
        let p = default_policy();
        for peer in [
            "[::ffff:127.0.0.1]:9", // IPv4-mapped
            "[::ffff:169.254.169.254]:80",
            "[::10.0.0.1]:9",        // IPv4-compatible
            "[64:ff9b::10.0.0.1]:9", // NAT64
            "[64:ff9b::7f00:1]:9",
            "[64:ff9b:1::a00:1]:9",          // local-use NAT64
            "[2002:7f00:1::]:9",             // 6to4 of 127.0.0.1
            "[2002:a9fe:a9fe::1]:80",        // 6to4 of 169.254.169.254
            "[2001:0:7f00:1::]:9",           // Teredo server 127.0.0.1
            "[2001:0:808:808::80ff:fffe]:9", // Teredo client !0x7f000001 = 127.0.0.1
        ] {
            assert!(
                matches!(p.check(addr(peer)), Err(PeerRefusal::Denied { .. })),
                "{peer} must be refused"
            );
        }
        // A mapped public address is still refused: it is an IPv4 peer, and an
        // IPv6 relay socket must not be used to reach IPv4 (the server answers 443
        // before the policy is asked; this is the second line).
        assert!(matches!(
            p.check(addr("[::ffff:8.8.8.8]:53")),
            Err(PeerRefusal::Denied { .. })
        ));
        assert_eq!(p.check(addr("[2002:808:808::1]:53")), Ok(()));
    }

    /// Every class of forbidden peer a probe tried (41 at the time of writing), in
    /// the forms an attacker would write them: plain, wrapped in each IPv6 form
    /// that embeds IPv4, and the special-purpose IPv6 blocks.
    #[test]
    fn forbidden_peer_classes_are_all_refused() {
        let classes = [
            // IPv4 special-purpose blocks
            "0.0.0.0:9",
            "0.1.2.3:9",
            "10.0.0.1:9",
            "100.64.0.1:9",
            "100.127.255.254:9",
            "127.0.0.1:9",
            "127.255.255.254:9",
            "169.254.169.254:80",
            "172.16.0.1:9",
            "172.31.255.254:9",
            "192.0.0.8:9",
            "192.0.0.170:9",
            "192.0.2.1:9",
            "192.88.99.1:9",
            "192.168.0.1:9",
            "198.18.0.1:9",
            "198.19.255.254:9",
            "198.51.100.1:9",
            "203.0.113.1:9",
            "224.0.0.251:5353",
            "239.255.255.250:1900",
            "240.0.0.1:9",
            "255.255.255.255:9",
            // IPv4 inside IPv6
            "[::ffff:127.0.0.1]:9",
            "[::ffff:0:7f00:1]:9",
            "[::ffff:0:a9fe:a9fe]:80",
            "[::ffff:0:a00:1]:9",
            "[::7f00:1]:9",
            "[::a9fe:a9fe]:80",
            "[64:ff9b::a9fe:a9fe]:80",
            "[64:ff9b:1::c0a8:1]:9",
            "[2002:a00:1::1]:9",
            "[2001:0:a9fe:a9fe::1]:80",
            "[2001:0:808:808::80ff:fffe]:9",
            // IPv6 special-purpose blocks
            "[::]:9",
            "[::1]:9",
            "[100::1]:9",
            "[2001:2::1]:9",
            "[2001:10::1]:9",
            "[2001:20::1]:9",
            "[2001:db8::1]:9",
            "[3fff::1]:9",
            "[5f00::1]:9",
            "[fc00::1]:9",
            "[fd00:ec2::254]:80",
            "[fe80::1]:9",
            "[fec0::1]:9",
            "[ff02::1]:9",
            "[ff05::1:3]:547",
        ];
        assert!(classes.len() >= 41);
        let p = PeerPolicy::new(vec![], vec![]);
        for peer in classes {
            assert!(
                matches!(p.check(addr(peer)), Err(PeerRefusal::Denied { .. })),
                "{peer} must be refused by default"
            );
        }
    }

    #[test]
    fn allow_list_overrides_but_never_for_own_addresses() {
        let own = vec![
            addr("127.0.0.1:3478"),
            addr("127.0.0.1:5349"),
            addr("[::1]:3478"),
        ];
        let p = PeerPolicy::new(
            vec!["127.0.0.1/32".parse().unwrap(), "::1/128".parse().unwrap()],
            own,
        );
        assert_eq!(p.check(addr("127.0.0.1:40000")), Ok(()));
        assert_eq!(p.check(addr("[::ffff:127.0.0.1]:40000")), Ok(()));
        assert!(matches!(
            p.check(addr("127.0.0.2:40000")),
            Err(PeerRefusal::Denied { .. })
        ));
        assert_eq!(
            p.check(addr("127.0.0.1:3478")),
            Err(PeerRefusal::OwnAddress(addr("127.0.0.1:3478")))
        );
        assert_eq!(
            p.check(addr("[::ffff:127.0.0.1]:3478")),
            Err(PeerRefusal::OwnAddress(addr("[::ffff:127.0.0.1]:3478")))
        );
        assert_eq!(
            p.check(addr("127.0.0.1:5349")),
            Err(PeerRefusal::OwnAddress(addr("127.0.0.1:5349")))
        );
        assert_eq!(
            p.check(addr("[::1]:3478")),
            Err(PeerRefusal::OwnAddress(addr("[::1]:3478")))
        );
        assert_eq!(p.check(addr("[::1]:3479")), Ok(()));
        // Every loopback address reaches a loopback or wildcard listener.
        assert_eq!(
            p.check(addr("127.0.0.2:3478")),
            Err(PeerRefusal::OwnAddress(addr("127.0.0.2:3478")))
        );
        assert_eq!(
            p.check(addr("8.8.8.8:5349")),
            Ok(()),
            "another host on our port is a fine peer"
        );
    }

    #[test]
    fn default_list_parses() {
        assert_eq!(
            PeerPolicy::new(vec![], vec![]).denied.len(),
            DEFAULT_DENIED.len()
        );
    }
}
