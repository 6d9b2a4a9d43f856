//! The HTTP listener every service uses: settings, the client address, and a
//! server that drains in-flight requests on shutdown.

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

/// `[http]` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address the HTTP API (and WebSocket gateway) listens on.
    pub listen: SocketAddr,
    /// Take the client's address from `X-Forwarded-For` (only behind proxies
    /// that append to it; otherwise clients could pick their own rate-limit key).
    pub trust_forwarded_for: bool,
    /// How many proxies in front of Natter append to `X-Forwarded-For`: the
    /// client is the entry this many places from the right. The leftmost entry
    /// is whatever the client sent, so it is never trusted unless it is also
    /// that entry.
    pub forwarded_hops: u8,
    /// IPv6 clients are rate-limited per network of this prefix length: one
    /// host usually holds a whole /64, so per-address keys would give it 2^64
    /// fresh budgets.
    pub ipv6_rate_prefix: u8,
    /// Public base URL clients use, for links the server hands out (signed media URLs).
    pub public_url: String,
    /// Open connections in all, WebSockets included (0: the process's
    /// open-file limit less 512 kept for files, the database and Redis).
    pub max_connections: u32,
    /// Open connections from one client address, an IPv6 network of
    /// `ipv6_rate_prefix` counting as one (0: no limit). Off behind trusted
    /// proxies, where the peer is the proxy.
    pub max_connections_per_ip: u32,
    /// A request head must arrive whole within this; kept-alive connections
    /// that send no new request are closed after it too.
    pub header_timeout_secs: u32,
    /// A request body that sends nothing for this long fails (slow uploads
    /// that keep sending are fine).
    pub body_idle_timeout_secs: u32,
    /// `/metrics` answers clients with `Authorization: Bearer <this>`; empty:
    /// no token.
    pub metrics_token: crate::Secret,
    /// `/metrics` answers every client (as behind a cluster's own network,
    /// where no Ingress routes it). Off: only loopback peers and holders of
    /// `metrics_token`.
    pub metrics_from_anywhere: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            trust_forwarded_for: false,
            forwarded_hops: 1,
            ipv6_rate_prefix: 64,
            public_url: "http://127.0.0.1:8080".into(),
            max_connections: 0,
            max_connections_per_ip: 1024,
            header_timeout_secs: 15,
            body_idle_timeout_secs: 30,
            metrics_token: crate::Secret::default(),
            metrics_from_anywhere: false,
        }
    }
}

/// How the client's address is found; put in router state via an `Extension`.
#[derive(Debug, Clone, Copy)]
pub struct ClientIpPolicy {
    /// Trusted proxies appending to `X-Forwarded-For` (0: use the socket peer).
    pub forwarded_hops: u8,
    /// IPv6 addresses are reduced to this prefix length.
    pub ipv6_prefix: u8,
}

impl Default for ClientIpPolicy {
    fn default() -> Self {
        Self {
            forwarded_hops: 0,
            ipv6_prefix: 64,
        }
    }
}

impl ClientIpPolicy {
    /// The policy `[http]` asks for.
    pub fn from_config(cfg: &HttpConfig) -> Self {
        Self {
            forwarded_hops: if cfg.trust_forwarded_for {
                cfg.forwarded_hops.max(1)
            } else {
                0
            },
            ipv6_prefix: cfg.ipv6_rate_prefix.min(128),
        }
    }

    /// The client address for a request from `peer` carrying `forwarded_for`.
    pub fn client(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        let ip = match (self.forwarded_hops, forwarded_for) {
            (0, _) | (_, None) => peer,
            (hops, Some(list)) => {
                let entries: Vec<&str> = list.split(',').map(str::trim).collect();
                // The N-th from the right; with fewer entries, every one of them
                // was appended by a trusted proxy, so the leftmost is the client.
                let at = entries.len().saturating_sub(usize::from(hops));
                match entries[at].parse::<IpAddr>() {
                    Ok(ip) => ip,
                    // A trusted proxy wrote garbage: fall back to the one talking to us.
                    Err(_) => peer,
                }
            }
        };
        self.rate_identity(ip)
    }

    /// IPv4 addresses as they are (an IPv4-mapped IPv6 address becomes one);
    /// IPv6 addresses reduced to their network.
    pub fn rate_identity(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let bits = u128::from(v6);
                    let keep = u32::from(self.ipv6_prefix.min(128));
                    let mask = if keep == 0 {
                        0
                    } else {
                        u128::MAX << (128 - keep)
                    };
                    IpAddr::V6((bits & mask).into())
                }
            },
        }
    }
}

/// The client's rate-limit identity: the socket peer, or the entry trusted
/// proxies put in `X-Forwarded-For` (see [`ClientIpPolicy`]); IPv6 addresses are
/// reduced to their /64 (configurable). Falls back to `0.0.0.0` in `oneshot`
/// tests that have no socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        let policy = parts
            .extensions
            .get::<ClientIpPolicy>()
            .copied()
            .unwrap_or_default();
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        // Several X-Forwarded-For headers form one list, in order.
        let joined: Vec<&str> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let forwarded = (!joined.is_empty()).then(|| joined.join(","));
        Ok(ClientIp(policy.client(peer, forwarded.as_deref())))
    }
}

#[cfg(test)]
mod client_ip_tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_client_is_counted_from_the_right_never_taken_from_the_left() {
        let peer = ip("10.0.0.9");
        let none = ClientIpPolicy::default();
        assert_eq!(none.client(peer, Some("1.2.3.4")), peer, "untrusted header");
        let one = ClientIpPolicy {
            forwarded_hops: 1,
            ..ClientIpPolicy::default()
        };
        // The client forged "6.6.6.6"; the proxy appended what it saw.
        assert_eq!(
            one.client(peer, Some("6.6.6.6, 203.0.113.7")),
            ip("203.0.113.7")
        );
        assert_eq!(one.client(peer, Some("203.0.113.7")), ip("203.0.113.7"));
        assert_eq!(one.client(peer, None), peer);
        let two = ClientIpPolicy {
            forwarded_hops: 2,
            ..ClientIpPolicy::default()
        };
        assert_eq!(
            two.client(peer, Some("6.6.6.6, 203.0.113.7, 10.1.1.1")),
            ip("203.0.113.7")
        );
        assert_eq!(two.client(peer, Some("203.0.113.7")), ip("203.0.113.7"));
        assert_eq!(one.client(peer, Some("6.6.6.6, garbage")), peer);
    }

    #[test]
    fn ipv6_clients_share_their_network_and_mapped_ones_are_ipv4() {
        let p = ClientIpPolicy::default();
        assert_eq!(
            p.rate_identity(ip("2001:db8:1:2:aaaa::1")),
            p.rate_identity(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"))
        );
        assert_eq!(
            p.rate_identity(ip("2001:db8:1:2:aaaa::1")),
            ip("2001:db8:1:2::")
        );
        assert_ne!(
            p.rate_identity(ip("2001:db8:1:2::1")),
            p.rate_identity(ip("2001:db8:1:3::1"))
        );
        assert_eq!(p.rate_identity(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        let whole = ClientIpPolicy {
            ipv6_prefix: 128,
            ..p
        };
        assert_eq!(whole.rate_identity(ip("2001:db8::1")), ip("2001:db8::1"));
    }
}
