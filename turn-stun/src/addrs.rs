//! The host's own addresses: which IPs a wildcard listener is reachable on (they
//! are never valid peers), and which IPv6 address relays can use when none is
//! configured.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Every IP configured on this host's interfaces (empty if they cannot be read).
pub(crate) fn host_ips() -> Vec<IpAddr> {
    let Ok(ifaddrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut ips: Vec<IpAddr> = ifaddrs
        .filter_map(|i| i.address)
        .filter_map(|a| {
            if let Some(v4) = a.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

/// What a listener set counts as "ourselves": every IP in `ips` (plus each
/// listener's own IP when it is specific) on every listening port. NAT can map an
/// external address back to us on any listener port, so each pair is refused.
pub(crate) fn own_addresses(listeners: &[SocketAddr], ips: &[IpAddr]) -> Vec<SocketAddr> {
    let mut own = Vec::new();
    for listener in listeners {
        if !listener.ip().is_unspecified() {
            own.push(*listener);
        }
        own.extend(ips.iter().map(|ip| SocketAddr::new(*ip, listener.port())));
    }
    own.sort();
    own.dedup();
    own
}

/// The IPv6 address this host would use to reach the IPv6 internet, if it has a
/// global one: the source the kernel picks for a route to a documentation address
/// (a UDP `connect` sends nothing), else the first global address on an interface.
pub(crate) fn global_ipv6() -> Option<IpAddr> {
    let routed = std::net::UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0))
        .and_then(|s| {
            s.connect((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 9))
                .map(|()| s)
        })
        .and_then(|s| s.local_addr())
        .ok()
        .map(|a| a.ip());
    routed
        .filter(is_global_ipv6)
        .or_else(|| host_ips().into_iter().find(is_global_ipv6))
}

/// Global unicast (2000::/3) and not a documentation address.
fn is_global_ipv6(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            seg[0] & 0xE000 == 0x2000 && !(seg[0] == 0x2001 && seg[1] == 0x0db8)
        }
        IpAddr::V4(_) => false,
    }
}

/// The loopback addresses, always our own.
pub(crate) fn loopbacks() -> [IpAddr; 2] {
    [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ips_include_loopback() {
        let ips = host_ips();
        assert!(ips.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{ips:?}");
    }

    #[test]
    fn own_addresses_pair_every_ip_with_every_port() {
        let own = own_addresses(
            &[
                "0.0.0.0:3478".parse().unwrap(),
                "192.0.2.1:5349".parse().unwrap(),
            ],
            &["10.0.0.5".parse().unwrap()],
        );
        let want: Vec<SocketAddr> = ["10.0.0.5:3478", "10.0.0.5:5349", "192.0.2.1:5349"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(own, want);
    }

    #[test]
    fn only_global_unicast_ipv6_counts() {
        for (ip, global) in [
            ("2a00:1450::1", true),
            ("2001:db8::1", false),
            ("fe80::1", false),
            ("fd00::1", false),
            ("::1", false),
            ("10.0.0.1", false),
        ] {
            assert_eq!(is_global_ipv6(&ip.parse().unwrap()), global, "{ip}");
        }
    }
}
