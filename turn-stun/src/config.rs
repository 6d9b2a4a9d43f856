//! `[turn]` configuration: defaults in code, overridable from the environment
//! (`NATTER_TURN__LISTEN`, `NATTER_TURN__ALLOWED_PEERS`, …) through figment.
//!
//! Environment values arrive as strings (or as whatever figment guesses: a bare
//! number for `NATTER_TURN__PORT_RANGE=50000`), so every non-trivial field parses
//! from a string as well as from its structured form.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use natter_common::Secret;
use natter_turn_core::policy::Cidr;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Configuration of the TURN server. All fields are public; start from
/// [`TurnConfig::default`] (or [`TurnConfig::for_tests`]) and override.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TurnConfig {
    /// UDP and TCP listening address (`NATTER_TURN__LISTEN`).
    pub listen: SocketAddr,
    /// TLS (TURNS) listening address; off when unset.
    #[serde(deserialize_with = "opt_from_str")]
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain for TLS; reloaded on SIGHUP.
    #[serde(deserialize_with = "opt_from_str")]
    pub tls_cert_path: Option<PathBuf>,
    /// PEM private key for TLS; reloaded on SIGHUP.
    #[serde(deserialize_with = "opt_from_str")]
    pub tls_key_path: Option<PathBuf>,
    /// TURN REST API shared secret (`NATTER_TURN__AUTH_SECRET`). Empty disables the
    /// REST scheme; with no static users either, every allocation is refused.
    #[serde(deserialize_with = "secret_from_scalar")]
    pub auth_secret: Secret,
    /// Authentication realm (`NATTER_TURN__REALM`).
    pub realm: String,
    /// Fixed `user:password` accounts, for tests and small deployments
    /// (`NATTER_TURN__STATIC_USERS=alice:pw1,bob:pw2`).
    pub static_users: StaticUsers,
    /// Peer networks allowed even though the default policy denies them
    /// (`NATTER_TURN__ALLOWED_PEERS=10.0.0.0/8,fd00::/8`).
    pub allowed_peers: CidrList,
    /// IP that relay sockets bind to (`NATTER_TURN__RELAY_IP`). Defaults to the
    /// listen IP when that is specific, else the host's primary address.
    #[serde(deserialize_with = "opt_from_str")]
    pub relay_ip: Option<IpAddr>,
    /// Public IP advertised in XOR-RELAYED-ADDRESS when the relay IP is behind NAT
    /// or a cloud load balancer (`NATTER_TURN__EXTERNAL_IP`).
    #[serde(deserialize_with = "opt_from_str")]
    pub external_ip: Option<IpAddr>,
    /// A second, IPv6, relay address for dual-stack relaying (RFC 6156) when
    /// `relay_ip` is IPv4 (`NATTER_TURN__RELAY_IPV6`).
    #[serde(deserialize_with = "opt_from_str")]
    pub relay_ipv6: Option<IpAddr>,
    /// Public IPv6 advertised for `relay_ipv6` relays behind NAT (`NATTER_TURN__EXTERNAL_IPV6`).
    #[serde(deserialize_with = "opt_from_str")]
    pub external_ipv6: Option<IpAddr>,
    /// Where to learn `external_ip` at start (`NATTER_TURN__EXTERNAL_IP_STUN_SERVER`,
    /// `host:port`, port 3478 when omitted): a STUN Binding is sent from the relay
    /// IP and the address the server saw is advertised. Exclusive with `external_ip`.
    #[serde(deserialize_with = "opt_from_str")]
    pub external_ip_stun_server: Option<String>,
    /// How long discovery may take, retransmissions included.
    pub external_ip_stun_timeout_secs: u64,
    /// When discovery fails: true refuses to start (an unreachable advertised
    /// relay address fails calls silently); false starts with the relay IP.
    pub external_ip_stun_required: bool,
    /// Relay port range (`NATTER_TURN__PORT_RANGE`, default `20000-29999`: outside
    /// Linux's ephemeral range 32768-60999 and Kubernetes' NodePort range
    /// 30000-32767).
    pub port_range: PortRange,
    /// After SIGTERM: how long live allocations keep relaying while new ones are
    /// refused (`NATTER_TURN__DRAIN_GRACE_SECS`); the server stops earlier once
    /// the last one ends. 0 stops at once.
    pub drain_grace_secs: u64,
    /// When set, new allocations are redirected there with 300 Try Alternate.
    #[serde(deserialize_with = "opt_from_str")]
    pub alternate_server: Option<SocketAddr>,
    /// TCP relaying (RFC 6062). Not implemented: must stay false (validate refuses true).
    pub tcp_relay: bool,
    /// Allocation lifetime granted by default (RFC 8656: 600).
    pub default_lifetime_secs: u32,
    /// Longest allocation lifetime a client may ask for (RFC 8656: 3600).
    pub max_lifetime_secs: u32,
    /// How long a nonce stays valid before 438 Stale Nonce.
    pub nonce_lifetime_secs: u64,
    /// Live allocations per username.
    pub max_allocations_per_user: u32,
    /// Live allocations on this server.
    pub max_allocations: u32,
    /// Live permissions per allocation.
    pub max_permissions_per_allocation: u32,
    /// Live channel bindings per allocation.
    pub max_channels_per_allocation: u32,
    /// Relayed bytes per second per allocation and direction; excess is dropped.
    pub bandwidth_bytes_per_sec: u64,
    /// Sustained answers per second to unauthenticated requests (401/438, Binding,
    /// 400/420) per source: an IPv4 address or an IPv6 /64.
    pub unauthenticated_per_source_per_sec: u32,
    /// Burst of unauthenticated answers per source.
    pub unauthenticated_burst: u32,
    /// Sources the unauthenticated-answer limiter remembers per generation; its
    /// memory bound (two generations are kept). New sources are always answered.
    pub unauthenticated_sources: u32,
    /// Concurrent TCP + TLS client connections.
    pub max_tcp_connections: u32,
}

/// The default relay ports: below Linux's default ephemeral range (32768-60999,
/// from which the kernel picks every outgoing connection's local port) and
/// Kubernetes' NodePort range (30000-32767, which kube-proxy intercepts on every
/// node), and clear of the usual host daemons' ports. 10,000 ports: one per
/// allocation, two for an EVEN-PORT reservation.
pub const DEFAULT_PORT_RANGE: PortRange = PortRange {
    start: 20000,
    end: 29999,
};

/// Longest drain the configuration accepts (a day): anything longer is a typo.
const MAX_DRAIN_GRACE_SECS: u64 = 86_400;

impl Default for TurnConfig {
    fn default() -> TurnConfig {
        let quotas = natter_turn_core::Quotas::default();
        TurnConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 3478)),
            tls_listen: None,
            tls_cert_path: None,
            tls_key_path: None,
            auth_secret: Secret::default(),
            realm: "natter".to_owned(),
            static_users: StaticUsers::default(),
            allowed_peers: CidrList::default(),
            relay_ip: None,
            external_ip: None,
            relay_ipv6: None,
            external_ipv6: None,
            external_ip_stun_server: None,
            external_ip_stun_timeout_secs: 5,
            external_ip_stun_required: true,
            port_range: DEFAULT_PORT_RANGE,
            drain_grace_secs: 60,
            alternate_server: None,
            tcp_relay: false,
            default_lifetime_secs: 600,
            max_lifetime_secs: 3600,
            nonce_lifetime_secs: 600,
            max_allocations_per_user: quotas.allocations_per_user,
            max_allocations: quotas.allocations_total,
            max_permissions_per_allocation: quotas.permissions_per_allocation,
            max_channels_per_allocation: quotas.channels_per_allocation,
            bandwidth_bytes_per_sec: quotas.bandwidth_bytes_per_sec,
            unauthenticated_per_source_per_sec: quotas.unauthenticated_per_source_per_sec,
            unauthenticated_burst: quotas.unauthenticated_burst,
            unauthenticated_sources: quotas.unauthenticated_sources,
            max_tcp_connections: 4096,
        }
    }
}

impl TurnConfig {
    /// Loopback on ephemeral ports with a REST secret; relaying to loopback peers is
    /// still refused unless a test adds `127.0.0.1/32` to `allowed_peers`.
    pub fn for_tests() -> TurnConfig {
        TurnConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            auth_secret: Secret::new("test-secret"),
            relay_ip: Some(IpAddr::from([127, 0, 0, 1])),
            ..TurnConfig::default()
        }
    }

    /// Checks values that parse but make no sense; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        let PortRange { start, end } = self.port_range;
        if start > end {
            return Err(format!("turn.port_range: start {start} > end {end}"));
        }
        if start == 0 {
            return Err("turn.port_range: port 0 is not a usable relay port".to_owned());
        }
        if self.drain_grace_secs > MAX_DRAIN_GRACE_SECS {
            return Err(format!(
                "turn.drain_grace_secs: {} is longer than a day ({MAX_DRAIN_GRACE_SECS})",
                self.drain_grace_secs
            ));
        }
        if let Some(server) = &self.external_ip_stun_server {
            if self.external_ip.is_some() {
                return Err(
                    "turn.external_ip_stun_server: set either it or turn.external_ip, not both"
                        .to_owned(),
                );
            }
            crate::discover::split_host_port(server)
                .map_err(|e| format!("turn.external_ip_stun_server: {e}"))?;
        }
        if self.external_ip_stun_timeout_secs == 0 || self.external_ip_stun_timeout_secs > 60 {
            return Err(format!(
                "turn.external_ip_stun_timeout_secs: {} must be between 1 and 60",
                self.external_ip_stun_timeout_secs
            ));
        }
        if self.realm.is_empty() {
            return Err("turn.realm: must not be empty".to_owned());
        }
        if self.realm.len() > 763 || self.realm.contains('"') {
            return Err(
                "turn.realm: must be at most 763 bytes without double quotes (RFC 8489 §14.9)"
                    .to_owned(),
            );
        }
        if self.tcp_relay {
            return Err(
                "turn.tcp_relay: TCP relaying (RFC 6062) is not implemented; leave it false"
                    .to_owned(),
            );
        }
        match (self.tls_listen, &self.tls_cert_path, &self.tls_key_path) {
            (Some(_), None, _) => {
                return Err("turn.tls_cert_path: required when turn.tls_listen is set".to_owned());
            }
            (Some(_), _, None) => {
                return Err("turn.tls_key_path: required when turn.tls_listen is set".to_owned());
            }
            _ => {}
        }
        if self
            .tls_listen
            .is_some_and(|t| t.port() != 0 && t == self.listen)
        {
            return Err(format!(
                "turn.tls_listen: {} is also turn.listen",
                self.listen
            ));
        }
        for (key, ip) in [
            ("turn.relay_ip", self.relay_ip),
            ("turn.external_ip", self.external_ip),
            ("turn.relay_ipv6", self.relay_ipv6),
            ("turn.external_ipv6", self.external_ipv6),
        ] {
            if let Some(ip) = ip
                && (ip.is_unspecified() || ip.is_multicast())
            {
                return Err(format!("{key}: {ip} cannot be a relay address"));
            }
        }
        if let (Some(relay), Some(external)) = (self.relay_ip, self.external_ip)
            && relay.is_ipv4() != external.is_ipv4()
        {
            return Err(format!(
                "turn.external_ip: {external} is not the same address family as turn.relay_ip {relay}"
            ));
        }
        for (key, ip) in [
            ("turn.relay_ipv6", self.relay_ipv6),
            ("turn.external_ipv6", self.external_ipv6),
        ] {
            if let Some(ip) = ip
                && !ip.is_ipv6()
            {
                return Err(format!("{key}: {ip} is not an IPv6 address"));
            }
        }
        if self.relay_ipv6.is_some() && self.relay_ip.is_some_and(|ip| ip.is_ipv6()) {
            return Err("turn.relay_ipv6: turn.relay_ip is already IPv6; set one IPv4 relay_ip and one relay_ipv6".to_owned());
        }
        if self.external_ipv6.is_some() && self.relay_ipv6.is_none() {
            return Err("turn.external_ipv6: needs turn.relay_ipv6".to_owned());
        }
        if self.default_lifetime_secs == 0 || self.default_lifetime_secs > self.max_lifetime_secs {
            return Err(format!(
                "turn.default_lifetime_secs: {} must be between 1 and turn.max_lifetime_secs ({})",
                self.default_lifetime_secs, self.max_lifetime_secs
            ));
        }
        if self.nonce_lifetime_secs < 30 {
            return Err(format!(
                "turn.nonce_lifetime_secs: {} is too short (at least 30)",
                self.nonce_lifetime_secs
            ));
        }
        for (key, value) in [
            (
                "turn.max_allocations_per_user",
                u64::from(self.max_allocations_per_user),
            ),
            ("turn.max_allocations", u64::from(self.max_allocations)),
            (
                "turn.max_permissions_per_allocation",
                u64::from(self.max_permissions_per_allocation),
            ),
            (
                "turn.max_channels_per_allocation",
                u64::from(self.max_channels_per_allocation),
            ),
            ("turn.bandwidth_bytes_per_sec", self.bandwidth_bytes_per_sec),
            (
                "turn.unauthenticated_per_source_per_sec",
                u64::from(self.unauthenticated_per_source_per_sec),
            ),
            (
                "turn.unauthenticated_burst",
                u64::from(self.unauthenticated_burst),
            ),
            (
                "turn.unauthenticated_sources",
                u64::from(self.unauthenticated_sources),
            ),
            (
                "turn.max_tcp_connections",
                u64::from(self.max_tcp_connections),
            ),
        ] {
            if value == 0 {
                return Err(format!(
                    "{key}: must be greater than 0 (quotas have no unlimited setting)"
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn quotas(&self) -> natter_turn_core::Quotas {
        natter_turn_core::Quotas {
            allocations_per_user: self.max_allocations_per_user,
            allocations_total: self.max_allocations,
            permissions_per_allocation: self.max_permissions_per_allocation,
            channels_per_allocation: self.max_channels_per_allocation,
            bandwidth_bytes_per_sec: self.bandwidth_bytes_per_sec,
            unauthenticated_per_source_per_sec: self.unauthenticated_per_source_per_sec,
            unauthenticated_burst: self.unauthenticated_burst,
            unauthenticated_sources: self.unauthenticated_sources,
        }
    }
}

/// An inclusive port range, written `start-end` (or a single port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub start: u16,
    /// Last port (inclusive).
    pub end: u16,
}

impl PortRange {
    /// Number of ports in the range (0 when inverted).
    pub fn len(&self) -> u32 {
        (u32::from(self.end) + 1).saturating_sub(u32::from(self.start))
    }

    /// True when the range holds no port.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<PortRange, String> {
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .map_err(|_| format!("{:?} is not a port number", p.trim()))
        };
        match s.split_once('-') {
            Some((a, b)) => Ok(PortRange {
                start: port(a)?,
                end: port(b)?,
            }),
            None => {
                let p = port(s)?;
                Ok(PortRange { start: p, end: p })
            }
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PortRange, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PortRange;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port range like \"20000-29999\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortRange, E> {
                v.parse()
                    .map_err(|e| E::custom(format!("turn.port_range: {e}")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortRange, E> {
                let p = u16::try_from(v)
                    .map_err(|_| E::custom(format!("turn.port_range: {v} is not a port number")))?;
                Ok(PortRange { start: p, end: p })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortRange, E> {
                let v = u64::try_from(v)
                    .map_err(|_| E::custom(format!("turn.port_range: {v} is not a port number")))?;
                self.visit_u64(v)
            }
        }
        d.deserialize_any(V)
    }
}

/// A list of CIDRs; from a comma-separated string or a list of strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CidrList(pub Vec<Cidr>);

impl FromStr for CidrList {
    type Err = String;

    fn from_str(s: &str) -> Result<CidrList, String> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse::<Cidr>()
                    .map_err(|e| format!("turn.allowed_peers: {p:?}: {e}"))
            })
            .collect::<Result<_, _>>()
            .map(CidrList)
    }
}

impl Serialize for CidrList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(ToString::to_string))
    }
}

impl<'de> Deserialize<'de> for CidrList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<CidrList, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CidrList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("CIDRs as a comma-separated string or a list")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CidrList, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CidrList, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    out.extend(item.parse::<CidrList>().map_err(de::Error::custom)?.0);
                }
                Ok(CidrList(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Static `user:password` accounts. Passwords never print: `Debug` and `Serialize`
/// show only the usernames.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StaticUsers(pub Vec<(String, Secret)>);

impl fmt::Debug for StaticUsers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(u, _)| format!("{u}:[redacted]")))
            .finish()
    }
}

impl FromStr for StaticUsers {
    type Err = String;

    fn from_str(s: &str) -> Result<StaticUsers, String> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|entry| match entry.split_once(':') {
                Some((u, p)) if !u.is_empty() && !p.is_empty() => {
                    Ok((u.to_owned(), Secret::new(p)))
                }
                // Never echo the entry: it may be a password.
                _ => Err("turn.static_users: each entry must be user:password".to_owned()),
            })
            .collect::<Result<_, _>>()
            .map(StaticUsers)
    }
}

impl Serialize for StaticUsers {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(u, _)| format!("{u}:[redacted]")))
    }
}

impl<'de> Deserialize<'de> for StaticUsers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<StaticUsers, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StaticUsers;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("user:password entries as a comma-separated string or a list")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StaticUsers, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StaticUsers, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    out.extend(item.parse::<StaticUsers>().map_err(de::Error::custom)?.0);
                }
                Ok(StaticUsers(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A secret from a string, or from a number: figment turns an all-digit environment
/// value into an integer, which `Secret`'s own impl (strings only) would reject.
/// (Leading zeros are lost by that conversion; quote such secrets in TOML.)
fn secret_from_scalar<'de, D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Secret;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a secret string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Secret, E> {
            Ok(Secret::new(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Secret, E> {
            Ok(Secret::new(v.to_string()))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Secret, E> {
            Ok(Secret::new(v.to_string()))
        }
    }
    d.deserialize_any(V)
}

/// `Option<T>` from a string, where an empty string (an unset env override) is `None`.
fn opt_from_str<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    let s: Option<String> = Option::deserialize(d)?;
    match s.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|e| de::Error::custom(format!("{v:?}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::Figment;
    use figment::providers::{Env, Serialized};

    /// Extracts a config the way the binary does: defaults, then `NATTER_TURN__*` env.
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the error type
    fn from_env(vars: &[(&str, &str)], check: impl FnOnce(TurnConfig)) {
        figment::Jail::expect_with(|jail| {
            for (k, v) in vars {
                jail.set_env(k, v);
            }
            let c: TurnConfig = Figment::from(Serialized::defaults(TurnConfig::default()))
                .merge(Env::prefixed("NATTER_TURN__"))
                .extract()?;
            check(c);
            Ok(())
        });
    }

    #[test]
    fn defaults_are_the_documented_ones_and_valid() {
        let c = TurnConfig::default();
        assert_eq!(c.listen, "0.0.0.0:3478".parse().unwrap());
        assert_eq!(
            c.port_range,
            PortRange {
                start: 20000,
                end: 29999
            }
        );
        assert_eq!(c.drain_grace_secs, 60);
        assert_eq!(c.external_ip_stun_server, None);
        assert!(!c.tcp_relay);
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(TurnConfig::for_tests().validate(), Ok(()));
    }

    #[test]
    fn env_style_strings_parse() {
        let vars = [
            ("NATTER_TURN__LISTEN", "127.0.0.1:3479"),
            ("NATTER_TURN__ALLOWED_PEERS", "127.0.0.1/32,::1/128"),
            ("NATTER_TURN__PORT_RANGE", "40000-40100"),
            ("NATTER_TURN__RELAY_IP", "10.0.0.5"),
            ("NATTER_TURN__EXTERNAL_IP", ""),
            ("NATTER_TURN__STATIC_USERS", "alice:pw1, bob:pw2"),
            ("NATTER_TURN__AUTH_SECRET", "s3cret"),
            ("NATTER_TURN__REALM", "example.org"),
        ];
        from_env(&vars, |c| {
            assert_eq!(c.listen, "127.0.0.1:3479".parse().unwrap());
            assert_eq!(
                c.allowed_peers.0,
                vec!["127.0.0.1/32".parse().unwrap(), "::1/128".parse().unwrap()]
            );
            assert_eq!(
                c.port_range,
                PortRange {
                    start: 40000,
                    end: 40100
                }
            );
            assert_eq!(c.relay_ip, Some("10.0.0.5".parse().unwrap()));
            assert_eq!(c.external_ip, None);
            assert_eq!(c.static_users.0.len(), 2);
            assert_eq!(c.auth_secret.expose(), "s3cret");
            assert_eq!(c.realm, "example.org");
        });
        // A numeric secret arrives from the environment as a number.
        from_env(&[("NATTER_TURN__AUTH_SECRET", "123456")], |c| {
            assert_eq!(c.auth_secret.expose(), "123456");
        });
        // A single port arrives from the environment as a number.
        from_env(&[("NATTER_TURN__PORT_RANGE", "50000")], |c| {
            assert_eq!(
                c.port_range,
                PortRange {
                    start: 50000,
                    end: 50000
                }
            );
        });
    }

    #[test]
    fn structured_forms_parse_too() {
        let c: TurnConfig = serde_json::from_value(serde_json::json!({
            "allowed_peers": ["10.0.0.0/8", "fd00::/8"],
            "port_range": 50000,
            "static_users": ["u:p"],
        }))
        .unwrap();
        assert_eq!(c.allowed_peers.0.len(), 2);
        assert_eq!(
            c.port_range,
            PortRange {
                start: 50000,
                end: 50000
            }
        );
        assert_eq!(c.static_users.0[0].0, "u");
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = serde_json::from_value::<TurnConfig>(
            serde_json::json!({"allowed_peers": "10.0.0.0/33"}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("turn.allowed_peers"), "{err}");
        let err = serde_json::from_value::<TurnConfig>(serde_json::json!({"port_range": "a-b"}))
            .unwrap_err();
        assert!(err.to_string().contains("turn.port_range"), "{err}");
        let err =
            serde_json::from_value::<TurnConfig>(serde_json::json!({"static_users": "alice"}))
                .unwrap_err();
        assert!(err.to_string().contains("turn.static_users"), "{err}");
        let err = serde_json::from_value::<TurnConfig>(serde_json::json!({"no_such_key": 1}))
            .unwrap_err();
        assert!(err.to_string().contains("no_such_key"), "{err}");
    }

    #[test]
    fn validate_names_the_key() {
        let check = |edit: fn(&mut TurnConfig), needle: &str| {
            let mut c = TurnConfig::default();
            edit(&mut c);
            let err = c.validate().unwrap_err();
            assert!(err.contains(needle), "{err} should mention {needle}");
        };
        check(
            |c| {
                c.port_range = PortRange {
                    start: 60000,
                    end: 50000,
                }
            },
            "turn.port_range: start 60000 > end 50000",
        );
        check(|c| c.realm.clear(), "turn.realm");
        check(|c| c.drain_grace_secs = 100_000, "turn.drain_grace_secs");
        check(
            |c| {
                c.external_ip_stun_server = Some("stun.example.org:3478".to_owned());
                c.external_ip = Some("192.0.2.1".parse().unwrap());
            },
            "turn.external_ip_stun_server: set either",
        );
        check(
            |c| c.external_ip_stun_server = Some("stun.example.org:99999".to_owned()),
            "turn.external_ip_stun_server",
        );
        check(
            |c| c.external_ip_stun_timeout_secs = 0,
            "turn.external_ip_stun_timeout_secs",
        );
        check(|c| c.tcp_relay = true, "turn.tcp_relay");
        check(
            |c| c.tls_listen = Some("0.0.0.0:5349".parse().unwrap()),
            "turn.tls_cert_path",
        );
        check(|c| c.max_allocations = 0, "turn.max_allocations");
        check(
            |c| c.bandwidth_bytes_per_sec = 0,
            "turn.bandwidth_bytes_per_sec",
        );
        check(
            |c| c.relay_ip = Some("0.0.0.0".parse().unwrap()),
            "turn.relay_ip",
        );
        check(
            |c| c.default_lifetime_secs = 7200,
            "turn.default_lifetime_secs",
        );
        check(
            |c| c.relay_ipv6 = Some("192.0.2.1".parse().unwrap()),
            "turn.relay_ipv6: 192.0.2.1 is not an IPv6 address",
        );
        check(
            |c| c.external_ipv6 = Some("2001:db8::1".parse().unwrap()),
            "turn.external_ipv6: needs turn.relay_ipv6",
        );
        check(
            |c| {
                c.relay_ip = Some("192.0.2.1".parse().unwrap());
                c.external_ip = Some("2001:db8::1".parse().unwrap());
            },
            "turn.external_ip",
        );
    }

    #[test]
    fn secrets_never_print() {
        let c = TurnConfig {
            auth_secret: Secret::new("topsecret"),
            static_users: "alice:hunter2".parse().unwrap(),
            ..TurnConfig::default()
        };
        let debug = format!("{c:?}");
        let json = serde_json::to_string(&c).unwrap();
        for out in [&debug, &json] {
            assert!(
                !out.contains("topsecret") && !out.contains("hunter2"),
                "{out}"
            );
            assert!(out.contains("alice"));
        }
    }
}
