//! The structure-aware fuzz body: it knows the REST secret, so its requests carry
//! valid MESSAGE-INTEGRITY and reach every handler past authentication, and it
//! drives whole allocation lifecycles (allocate with any options, permissions,
//! channels, Send, ChannelData, peer traffic, refresh, delete, time passing,
//! connections closing) with arbitrary UTF-8 in every string attribute and
//! arbitrary peer addresses of both families.
//!
//! After every step it checks invariants against an oracle written apart from
//! `policy`: nothing is relayed to a peer the default policy must refuse (loopback,
//! private, link-local, metadata… including every IPv6 wrapping of them) unless
//! the allow-list covers it; nothing is relayed to the server's own address; no
//! account exceeds its quota and the server never holds more ports than its total;
//! the source limiter stays bounded; every answer is well-formed STUN.

#![doc(hidden)]

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::auth::rest_password;
use crate::codec::{
    Attribute, AttributeType, ChannelData, Class, Family, IntegrityKind, Message, MessageBuilder,
    Method, looks_like_channel_data,
};
use crate::policy::{Cidr, PeerPolicy};
use crate::server::{Destination, FiveTuple, Quotas, Transmit, Transport};
use crate::testkit::{Harness, REALM, SECRET, START_UNIX, signed};

/// The server's own address in this harness: a public one, so that only the
/// own-address rule (not a denied range) keeps it from being a peer.
const OWN: &str = "93.184.215.14:3478";

/// Allow-list entries the input may turn on.
const ALLOW_CHOICES: [&str; 4] = ["127.0.0.1/32", "10.0.0.0/8", "::1/128", "fd00::/8"];

/// Reads the fuzzer's bytes as decisions; past the end every read is zero.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    fn bytes(&mut self, max: usize) -> &[u8] {
        let n = (usize::from(self.byte()) % (max + 1)).min(self.0.len());
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        taken
    }

    /// Arbitrary UTF-8 (invalid sequences become U+FFFD, three bytes each).
    fn text(&mut self, max: usize) -> String {
        String::from_utf8_lossy(self.bytes(max)).into_owned()
    }

    fn v4(&mut self) -> Ipv4Addr {
        Ipv4Addr::new(self.byte(), self.byte(), self.byte(), self.byte())
    }

    /// A peer address: raw IPv4 or IPv6, IPv4 in one of IPv6's wrappings, or an
    /// address known to be interesting.
    fn peer(&mut self) -> SocketAddr {
        let ip = match self.byte() % 4 {
            0 => IpAddr::V4(self.v4()),
            1 => {
                let mut o = [0u8; 16];
                for b in &mut o {
                    *b = self.byte();
                }
                IpAddr::V6(Ipv6Addr::from(o))
            }
            2 => {
                let v4 = u128::from(u32::from(self.v4()));
                let wrapped = match self.byte() % 7 {
                    0 => 0xFFFF << 32 | v4,                                  // mapped
                    1 => v4,                                                 // compatible
                    2 => 0xFFFF_0000 << 32 | v4,                             // translated
                    3 => 0x0064_FF9B << 96 | v4,                             // NAT64
                    4 => 0x0064_FF9B_0001 << 80 | v4,                        // local-use NAT64
                    5 => 0x2002 << 112 | v4 << 80,                           // 6to4
                    _ => 0x2001_0000 << 96 | v4 << 64 | (!v4 & 0xFFFF_FFFF), // Teredo
                };
                IpAddr::V6(Ipv6Addr::from(wrapped))
            }
            _ => {
                let known = [
                    "127.0.0.1",
                    "169.254.169.254",
                    "10.1.2.3",
                    "::1",
                    "fe80::1",
                    "8.8.8.8",
                    "2606:4700::1",
                    "93.184.215.14",
                ];
                known[usize::from(self.byte()) % known.len()]
                    .parse()
                    .expect("literal")
            }
        };
        let port = if self.byte().is_multiple_of(4) {
            3478
        } else {
            self.u16()
        };
        SocketAddr::new(ip, port)
    }
}

/// Runs one fuzz input. See the module docs.
pub fn turn_lifecycle(data: &[u8]) {
    run_lifecycle(data);
}

fn run_lifecycle(data: &[u8]) -> Harness {
    let mut input = Input(data);
    let quotas = Quotas {
        allocations_per_user: 1 + u32::from(input.byte() % 6),
        allocations_total: 1 + u32::from(input.byte() % 12),
        permissions_per_allocation: 1 + u32::from(input.byte() % 4),
        channels_per_allocation: 1 + u32::from(input.byte() % 4),
        bandwidth_bytes_per_sec: 1_000 + u64::from(input.u16()) * 16,
        unauthenticated_per_source_per_sec: 1 + u32::from(input.byte() % 8),
        unauthenticated_burst: 1 + u32::from(input.byte() % 16),
        unauthenticated_sources: 1 + u32::from(input.byte() % 16),
    };
    let allow_bits = input.byte();
    let allowed: Vec<Cidr> = ALLOW_CHOICES
        .iter()
        .enumerate()
        .filter(|(i, _)| allow_bits & (1 << i) != 0)
        .map(|(_, c)| c.parse().expect("literal"))
        .collect();
    let own: SocketAddr = OWN.parse().expect("literal");
    let mut h = Harness::with_config(|c| {
        c.quotas = quotas;
        c.policy = PeerPolicy::new(allowed.clone(), vec![own]);
    });
    let mut run = Run {
        accounts: HashSet::new(),
        tokens: Vec::new(),
        nonces: Vec::new(),
    };
    for _ in 0..96 {
        if input.is_empty() {
            break;
        }
        let ft = five_tuple(&mut input);
        let out = run.step(&mut h, &mut input, ft);
        check(&h, &out, &allowed, own, quotas, &run.accounts);
    }
    h
}

struct Run {
    /// Quota accounts used so far.
    accounts: HashSet<String>,
    /// RESERVATION-TOKENs handed out.
    tokens: Vec<[u8; 8]>,
    /// Nonces handed out (with the client they were issued to).
    nonces: Vec<(FiveTuple, String)>,
}

impl Run {
    fn step(&mut self, h: &mut Harness, input: &mut Input<'_>, ft: FiveTuple) -> Vec<Transmit> {
        match input.byte() % 12 {
            0 | 1 => {
                let mut attrs = vec![Attribute::RequestedTransport(
                    if input.byte().is_multiple_of(8) {
                        6
                    } else {
                        17
                    },
                )];
                match input.byte() % 5 {
                    0 => attrs.push(Attribute::EvenPort(true)),
                    1 => attrs.push(Attribute::EvenPort(false)),
                    2 => attrs.push(Attribute::RequestedAddressFamily(Family::V6)),
                    3 if !self.tokens.is_empty() => {
                        let t = self.tokens[usize::from(input.byte()) % self.tokens.len()];
                        attrs.push(Attribute::ReservationToken(t));
                    }
                    _ => {}
                }
                if input.byte().is_multiple_of(2) {
                    attrs.push(Attribute::Lifetime(u32::from(input.u16())));
                }
                self.signed(h, input, ft, Method::ALLOCATE, &attrs)
            }
            2 => {
                let peers: Vec<SocketAddr> =
                    (0..1 + input.byte() % 3).map(|_| input.peer()).collect();
                let attrs: Vec<Attribute<'_>> = peers
                    .iter()
                    .map(|p| Attribute::XorPeerAddress(*p))
                    .collect();
                self.signed(h, input, ft, Method::CREATE_PERMISSION, &attrs)
            }
            3 => {
                let number = 0x4000 | (input.u16() & 0x3FFF);
                let peer = input.peer();
                let attrs = [
                    Attribute::ChannelNumber(number),
                    Attribute::XorPeerAddress(peer),
                ];
                self.signed(h, input, ft, Method::CHANNEL_BIND, &attrs)
            }
            4 => {
                let lifetime = if input.byte().is_multiple_of(3) {
                    0
                } else {
                    u32::from(input.u16())
                };
                self.signed(
                    h,
                    input,
                    ft,
                    Method::REFRESH,
                    &[Attribute::Lifetime(lifetime)],
                )
            }
            5 => {
                let peer = input.peer();
                let data = input.bytes(64).to_vec();
                let tid = h.tid();
                let mut b = MessageBuilder::new(Class::Indication, Method::SEND, tid);
                b.add(&Attribute::XorPeerAddress(peer))
                    .add(&Attribute::Data(&data));
                h.input(ft, &b.finish(None, false))
            }
            6 => {
                let channel = 0x4000 | (input.u16() & 0x3FFF);
                let data = input.bytes(64).to_vec();
                let mut out = Vec::new();
                ChannelData {
                    channel,
                    data: &data,
                }
                .encode(ft.transport.is_stream(), &mut out);
                h.input(ft, &out)
            }
            7 => {
                let peer = input.peer();
                let data = input.bytes(64).to_vec();
                h.peer_input(ft, peer, &data)
            }
            8 => h.advance(Duration::from_secs(u64::from(input.u16() % 4000))),
            9 => {
                h.server.handle_connection_closed(h.now, ft);
                h.drain()
            }
            10 => {
                let raw = input.bytes(256).to_vec();
                h.input(ft, &raw)
            }
            _ => {
                // A request with arbitrary text in every string attribute, signed
                // with the right key for whatever the username says.
                let username = format!("{}:{}", START_UNIX + 600, input.text(48));
                let nonce = self.nonce_or_text(input, ft);
                let realm = input.text(24);
                let software = input.text(24);
                let tid = h.tid();
                let method = [Method::ALLOCATE, Method::REFRESH, Method::BINDING]
                    [usize::from(input.byte()) % 3];
                let mut b = MessageBuilder::new(Class::Request, method, tid);
                b.add(&Attribute::RequestedTransport(17))
                    .add(&Attribute::Software(&software))
                    .add(&Attribute::Username(&username))
                    .add(&Attribute::Realm(&realm))
                    .add(&Attribute::Nonce(&nonce));
                let key =
                    crate::auth::long_term_key(&username, REALM, &rest_password(SECRET, &username));
                self.account(&username);
                let out = h.input(ft, &b.finish(Some((IntegrityKind::Sha1, &key.0)), true));
                self.learn(ft, &out);
                out
            }
        }
    }

    /// A signed request as an arbitrary REST user: challenged first unless a
    /// nonce for this client is known.
    fn signed(
        &mut self,
        h: &mut Harness,
        input: &mut Input<'_>,
        ft: FiveTuple,
        method: Method,
        attrs: &[Attribute<'_>],
    ) -> Vec<Transmit> {
        let users = ["alice", "bob", "é", ""];
        let user = users[usize::from(input.byte()) % users.len()];
        let username = format!("{}:{user}", START_UNIX + 600 + u64::from(input.byte()));
        self.account(&username);
        let mut out = Vec::new();
        let nonce = match self
            .nonces
            .iter()
            .rev()
            .find(|(f, _)| f.client == ft.client)
        {
            Some((_, n)) => n.clone(),
            None => {
                let tid = h.tid();
                let mut b = MessageBuilder::new(Class::Request, method, tid);
                for a in attrs {
                    b.add(a);
                }
                out = h.input(ft, &b.finish(None, true));
                self.learn(ft, &out);
                match self
                    .nonces
                    .iter()
                    .rev()
                    .find(|(f, _)| f.client == ft.client)
                {
                    Some((_, n)) => n.clone(),
                    None => return out,
                }
            }
        };
        let password = rest_password(SECRET, &username);
        let tid = h.tid();
        let bytes = signed(
            method,
            tid,
            attrs,
            &username,
            &password,
            &nonce,
            IntegrityKind::Sha1,
        );
        let more = h.input(ft, &bytes);
        self.learn(ft, &more);
        out.extend(more);
        out
    }

    fn nonce_or_text(&mut self, input: &mut Input<'_>, ft: FiveTuple) -> String {
        if input.byte().is_multiple_of(2)
            && let Some((_, n)) = self
                .nonces
                .iter()
                .rev()
                .find(|(f, _)| f.client == ft.client)
        {
            return n.clone();
        }
        input.text(48)
    }

    fn account(&mut self, username: &str) {
        let account = username.split_once(':').map_or("", |(_, u)| u);
        self.accounts.insert(account.to_owned());
    }

    /// Remembers nonces and reservation tokens from answers.
    fn learn(&mut self, ft: FiveTuple, out: &[Transmit]) {
        for t in out {
            let Ok(msg) = Message::decode(&t.payload) else {
                continue;
            };
            if let Ok(Some(Attribute::Nonce(n))) = msg.get(AttributeType::NONCE) {
                self.nonces.push((ft, n.to_owned()));
            }
            if let Ok(Some(Attribute::ReservationToken(tok))) =
                msg.get(AttributeType::RESERVATION_TOKEN)
            {
                self.tokens.push(tok);
            }
        }
        if self.nonces.len() > 64 {
            self.nonces.drain(..32);
        }
    }
}

fn five_tuple(input: &mut Input<'_>) -> FiveTuple {
    let b = input.byte();
    let mut ft = Harness::udp(u16::from(b % 6));
    if b & 0x40 != 0 {
        ft.transport = Transport::Tcp;
    }
    if b & 0x80 != 0 {
        // Another source network, for the limiter.
        ft.client = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(8, 8, b % 8, 1)), ft.client.port());
    }
    ft
}

/// The invariants of the module docs.
fn check(
    h: &Harness,
    out: &[Transmit],
    allowed: &[Cidr],
    own: SocketAddr,
    quotas: Quotas,
    accounts: &HashSet<String>,
) {
    for t in out {
        match t.destination {
            Destination::Peer { peer, .. } => {
                assert!(
                    !must_not_relay(peer, allowed, own),
                    "relayed to a forbidden peer {peer} (allowed: {allowed:?})"
                );
            }
            Destination::Client(_) => {
                let p = &t.payload;
                if looks_like_channel_data(p) {
                    ChannelData::decode(p).expect("ChannelData to a client decodes");
                } else {
                    Message::decode(p).expect("a STUN message to a client decodes");
                }
            }
        }
    }
    for account in accounts {
        assert!(
            h.server.account_usage(account) <= quotas.allocations_per_user,
            "account {account:?} over its quota"
        );
    }
    assert!(
        h.server.allocation_count() + h.server.reservation_count()
            <= quotas.allocations_total as usize,
        "more ports held than the total quota"
    );
    assert!(h.server.limited_sources() <= 2 * quotas.unauthenticated_sources as usize);
}

/// The oracle: written from the RFCs' special-purpose registries with std's
/// classifiers, apart from `policy`, so a bug in one is caught by the other.
fn must_not_relay(peer: SocketAddr, allowed: &[Cidr], own: SocketAddr) -> bool {
    if peer.ip().to_canonical() == own.ip() && peer.port() == own.port() {
        return true;
    }
    let mut candidates = vec![peer.ip()];
    if let IpAddr::V6(v6) = peer.ip() {
        candidates.extend(wrapped_v4(v6).into_iter().map(IpAddr::V4));
    }
    if candidates
        .iter()
        .any(|ip| allowed.iter().any(|c| c.contains(*ip)))
    {
        return false;
    }
    candidates.iter().any(|ip| match ip {
        IpAddr::V4(v4) => forbidden_v4(*v4),
        IpAddr::V6(v6) => forbidden_v6(*v6),
    })
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (64..128).contains(&o[1]))
        || (o[0] == 198 && (o[1] == 18 || o[1] == 19))
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || o[0] >= 240
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || s[0] & 0xFE00 == 0xFC00
        || s[0] & 0xFFC0 == 0xFE80
        || (s[0] == 0x2001 && s[1] == 0x0DB8)
        || ip.to_ipv4_mapped().is_some()
}

/// IPv4 addresses an IPv6 address may carry (RFC 4291, 2765, 6052, 3056, 4380).
fn wrapped_v4(ip: Ipv6Addr) -> Vec<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let mut out = Vec::new();
    if s[..5] == [0; 5] && (s[5] == 0 || s[5] == 0xFFFF) {
        out.push(low);
    }
    if s[..4] == [0; 4] && s[4] == 0xFFFF && s[5] == 0 {
        out.push(low);
    }
    if (s[0], s[1]) == (0x0064, 0xFF9B) {
        out.push(low);
    }
    if s[0] == 0x2002 {
        out.push(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    if (s[0], s[1]) == (0x2001, 0) {
        out.push(Ipv4Addr::new(
            (s[2] >> 8) as u8,
            s[2] as u8,
            (s[3] >> 8) as u8,
            s[3] as u8,
        ));
        out.push(Ipv4Addr::from(!u32::from(low)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oracle_refuses_what_the_issue_listed() {
        let own: SocketAddr = OWN.parse().unwrap();
        for p in [
            "[::ffff:0:7f00:1]:9",
            "[::ffff:0:a9fe:a9fe]:80",
            "[::ffff:0:a00:1]:9",
            "[::ffff:8.8.8.8]:53",
            "127.0.0.1:9",
            "[2001:db8::1]:9",
            "93.184.215.14:3478",
        ] {
            assert!(must_not_relay(p.parse().unwrap(), &[], own), "{p}");
        }
        assert!(!must_not_relay("8.8.8.8:53".parse().unwrap(), &[], own));
        assert!(!must_not_relay(
            "127.0.0.1:9".parse().unwrap(),
            &["127.0.0.1/32".parse().unwrap()],
            own
        ));
    }

    /// The decision bytes of a whole lifecycle: allocate, permit a public peer,
    /// Send, peer data back, bind a channel, ChannelData, delete. The fuzz seed
    /// `turn-stun/fuzz/seeds/turn_lifecycle/full.bin` is the same bytes.
    pub(crate) fn full_lifecycle() -> Vec<u8> {
        let peer = [0u8, 8, 8, 8, 8, 1, 0x1F, 0x90]; // v4 8.8.8.8, port 8080
        let mut d = vec![3, 6, 3, 3, 0x10, 0x00, 7, 15, 15, 0]; // quotas, no allow-list
        d.extend([0, 0, 1, 4, 1, 0, 0]); // Allocate as alice
        d.extend([0, 2, 0]);
        d.extend(peer);
        d.extend([0, 0]); // CreatePermission
        d.extend([0, 5]);
        d.extend(peer);
        d.extend([3, b'a', b'b', b'c']); // Send
        d.extend([0, 7]);
        d.extend(peer);
        d.extend([3, b'x', b'y', b'z']); // peer -> client
        d.extend([0, 3, 0x00, 0x01]);
        d.extend(peer);
        d.extend([0, 0]); // ChannelBind 0x4001
        d.extend([0, 6, 0x00, 0x01, 2, b'h', b'i']); // ChannelData
        d.extend([0, 4, 0, 0, 0]); // Refresh 0
        d
    }

    #[test]
    fn the_full_lifecycle_seed_relays_both_ways() {
        let h = run_lifecycle(&full_lifecycle());
        let st = h.server.stats();
        assert_eq!(st.allocations_created, 1);
        assert_eq!(st.packets_to_peer, 2, "Send and ChannelData");
        assert_eq!(st.packets_to_client, 1);
        assert_eq!(st.allocations_closed, 1);
    }

    /// A fixed pseudo-random walk through many inputs: a smoke test that the body
    /// runs and its invariants hold (the fuzzer does the real search).
    #[test]
    fn many_generated_lifecycles_hold_the_invariants() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..300 {
            let data: Vec<u8> = (0..600)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            turn_lifecycle(&data);
        }
    }
}
