//! Regression tests for attacks found against the server (issue 17): each failed
//! before its fix. Driven with synthetic time, like `server_tests`.

use std::net::SocketAddr;
use std::time::Duration;

use super::tests::{SHA1, code, decode};
use crate::auth::rest_password;
use crate::codec::{Attribute, Class, Family, Method};
use crate::server::{AuthFailure, Destination, FiveTuple, Refusal};
use crate::testkit::{Harness, PASSWORD, SECRET, START_UNIX, USER, signed};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn rest_user(h: &mut Harness, ft: FiveTuple, user: &str, expiry_offset: u64) -> Vec<u8> {
    let username = format!("{}:{user}", START_UNIX + expiry_offset);
    let password = rest_password(SECRET, &username);
    h.auth_request(
        ft,
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(17)],
        &username,
        &password,
        SHA1,
    )
}

/// One unauthenticated datagram used to panic the TURN thread: a 40-byte NONCE
/// with a two-byte character across byte 16 was sliced as a `str`.
#[test]
fn a_nonce_with_a_wide_character_at_the_split_is_a_stale_nonce_not_a_panic() {
    let mut h = Harness::new();
    let ft = Harness::udp(1);
    let nonce = format!("{}é{}", "0".repeat(15), "1".repeat(23));
    assert_eq!(nonce.len(), 40);
    let tid = h.tid();
    let attack = signed(
        Method::ALLOCATE,
        tid,
        &[Attribute::RequestedTransport(17)],
        USER,
        PASSWORD,
        &nonce,
        SHA1,
    );
    let out = h.input(ft, &attack);
    assert_eq!(out.len(), 1);
    assert_eq!(code(&out[0].payload), Some(438));
    assert_eq!(
        h.server.stats().auth_failures[AuthFailure::StaleNonce as usize],
        1
    );
    // The server is still whole: a Binding and an allocation work.
    assert_eq!(
        decode(&h.request(ft, Method::BINDING, &[])).class,
        Class::Success
    );
    assert_eq!(decode(&h.allocate(ft)).class, Class::Success);
}

/// A REST username is `expiry:user`; counting quotas by the whole username let
/// one account fill the server by fetching a fresh credential each second.
#[test]
fn rest_credentials_of_one_user_share_one_quota() {
    let mut h = Harness::with_config(|c| c.quotas.allocations_per_user = 2);
    assert_eq!(
        decode(&rest_user(&mut h, Harness::udp(1), "alice", 600)).class,
        Class::Success
    );
    assert_eq!(
        decode(&rest_user(&mut h, Harness::udp(2), "alice", 601)).class,
        Class::Success
    );
    assert_eq!(
        code(&rest_user(&mut h, Harness::udp(3), "alice", 602)),
        Some(486)
    );
    assert_eq!(h.server.account_usage("alice"), 2);
    assert_eq!(
        decode(&rest_user(&mut h, Harness::udp(4), "bob", 602)).class,
        Class::Success,
        "another account has its own quota"
    );
}

fn allocate_even_reserve(h: &mut Harness, ft: FiveTuple) -> Vec<u8> {
    h.auth_request(
        ft,
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(17), Attribute::EvenPort(true)],
        USER,
        PASSWORD,
        SHA1,
    )
}

fn delete(h: &mut Harness, ft: FiveTuple) {
    let resp = h.auth_request(
        ft,
        Method::REFRESH,
        &[Attribute::Lifetime(0)],
        USER,
        PASSWORD,
        SHA1,
    );
    assert_eq!(decode(&resp).class, Class::Success);
}

/// EVEN-PORT with R holds a second port for 30 s; Allocate(R) + Refresh(0) in a
/// loop used to hold ports against no quota until the relay range ran dry.
#[test]
fn reservations_count_against_the_user_and_total_quotas() {
    let mut h = Harness::with_config(|c| c.quotas.allocations_per_user = 4);
    let mut granted = 0;
    for n in 1..=20 {
        let ft = Harness::udp(n);
        let resp = allocate_even_reserve(&mut h, ft);
        if decode(&resp).class != Class::Success {
            assert_eq!(code(&resp), Some(486), "attempt {n}");
            break;
        }
        granted += 1;
        delete(&mut h, ft);
        assert!(h.server.account_usage(USER) <= 4);
    }
    assert_eq!(granted, 3, "3 reservations plus the next pair exceed 4");
    assert_eq!(h.server.account_usage(USER), 3, "three held reservations");
    // Released reservations give the quota back.
    h.advance(Duration::from_secs(31));
    assert_eq!(h.server.account_usage(USER), 0);
    assert_eq!(decode(&h.allocate(Harness::udp(30))).class, Class::Success);

    let mut h = Harness::with_config(|c| c.quotas.allocations_total = 3);
    assert_eq!(
        decode(&allocate_even_reserve(&mut h, Harness::udp(1))).class,
        Class::Success
    );
    delete(&mut h, Harness::udp(1));
    // One reservation is held: two more ports fit, a third does not.
    assert_eq!(decode(&h.allocate(Harness::udp(2))).class, Class::Success);
    assert_eq!(decode(&h.allocate(Harness::udp(3))).class, Class::Success);
    assert_eq!(code(&h.allocate(Harness::udp(4))), Some(508));
}

/// Binding answers and 400s were never rate-limited: about 3× reflection.
#[test]
fn binding_and_bad_request_answers_share_the_per_source_limit() {
    let mut h = Harness::with_config(|c| {
        c.quotas.unauthenticated_burst = 3;
        c.quotas.unauthenticated_per_source_per_sec = 1;
    });
    let ft = Harness::udp(1);
    let answered = (0..10)
        .filter(|_| !h.request(ft, Method::BINDING, &[]).is_empty())
        .count();
    assert_eq!(answered, 3);
    // An unknown request method would earn a 400: the same budget is spent.
    assert!(h.request(ft, Method(0x0ff), &[]).is_empty());
    assert_eq!(h.server.stats().refusals[Refusal::RateLimited as usize], 8);
    h.advance(Duration::from_secs(1));
    assert_eq!(code(&h.request(ft, Method(0x0ff), &[])), Some(400));
}

/// The map of limited sources was capped; once spoofed sources filled it, new
/// clients got no challenge at all and could not log in.
#[test]
fn a_spoofed_flood_does_not_lock_new_clients_out() {
    let mut h = Harness::with_config(|c| {
        c.quotas.unauthenticated_sources = 64;
        c.quotas.unauthenticated_burst = 2;
    });
    for n in 0..5_000u32 {
        let spoofed = FiveTuple {
            client: SocketAddr::new(std::net::Ipv4Addr::from(0x5000_0000 + n).into(), 1000),
            ..Harness::udp(0)
        };
        h.request(
            spoofed,
            Method::ALLOCATE,
            &[Attribute::RequestedTransport(17)],
        );
        assert!(h.server.limited_sources() <= 128, "memory stays bounded");
    }
    let honest = FiveTuple {
        client: addr("8.8.4.4:5000"),
        ..Harness::udp(0)
    };
    assert_eq!(decode(&h.allocate(honest)).class, Class::Success);
}

fn v4_allocation() -> (Harness, FiveTuple) {
    let mut h = Harness::new();
    let ft = Harness::udp(1);
    assert_eq!(decode(&h.allocate(ft)).class, Class::Success);
    (h, ft)
}

fn v6_allocation() -> (Harness, FiveTuple) {
    let mut h = Harness::new();
    let ft = Harness::udp(1);
    let attrs = [
        Attribute::RequestedTransport(17),
        Attribute::RequestedAddressFamily(Family::V6),
    ];
    let resp = h.auth_request(ft, Method::ALLOCATE, &attrs, USER, PASSWORD, SHA1);
    assert_eq!(decode(&resp).class, Class::Success);
    (h, ft)
}

fn permit(h: &mut Harness, ft: FiveTuple, peer: &str) -> Option<u16> {
    let resp = h.auth_request(
        ft,
        Method::CREATE_PERMISSION,
        &[Attribute::XorPeerAddress(addr(peer))],
        USER,
        PASSWORD,
        SHA1,
    );
    code(&resp)
}

/// An IPv4-mapped peer on an IPv4 relay was canonicalised and treated as IPv4;
/// RFC 8656 says a peer of the other family is 443.
#[test]
fn an_ipv4_mapped_peer_is_a_family_mismatch_on_either_relay_family() {
    let (mut h, ft) = v4_allocation();
    assert_eq!(permit(&mut h, ft, "[::ffff:8.8.8.8]:53"), Some(443));
    let bind = h.auth_request(
        ft,
        Method::CHANNEL_BIND,
        &[
            Attribute::ChannelNumber(0x4000),
            Attribute::XorPeerAddress(addr("[::ffff:8.8.8.8]:53")),
        ],
        USER,
        PASSWORD,
        SHA1,
    );
    assert_eq!(code(&bind), Some(443));
    // With a permission for 8.8.8.8, a Send to its mapped form is still dropped.
    assert_eq!(permit(&mut h, ft, "8.8.8.8:53"), None);
    let tid = h.tid();
    let mut b = crate::codec::MessageBuilder::new(Class::Indication, Method::SEND, tid);
    b.add(&Attribute::XorPeerAddress(addr("[::ffff:8.8.8.8]:53")))
        .add(&Attribute::Data(b"x"));
    let out = h.input(ft, &b.finish(None, false));
    assert!(
        !out.iter()
            .any(|t| matches!(t.destination, Destination::Peer { .. })),
        "{out:?}"
    );

    let (mut h, ft) = v6_allocation();
    assert_eq!(permit(&mut h, ft, "[::ffff:8.8.8.8]:53"), Some(443));
    assert_eq!(permit(&mut h, ft, "8.8.8.8:53"), Some(443));
}

/// `::ffff:0:a.b.c.d` (IPv4-translated) was never unwrapped, so loopback, cloud
/// metadata and RFC 1918 were reachable through an IPv6 relay.
#[test]
fn ipv4_translated_peers_are_refused_on_an_ipv6_relay() {
    let (mut h, ft) = v6_allocation();
    for peer in [
        "[::ffff:0:7f00:1]:9",
        "[::ffff:0:a9fe:a9fe]:80",
        "[::ffff:0:a00:1]:9",
        "[100::1]:9",
        "[2001:db8::1]:9",
    ] {
        assert_eq!(permit(&mut h, ft, peer), Some(403), "{peer}");
    }
    assert_eq!(permit(&mut h, ft, "[2606:4700::1]:443"), None);
    assert_eq!(h.server.stats().refusals[Refusal::PeerDenied as usize], 5);
}

/// The server's own addresses, which a wildcard listener learns at run time,
/// are never peers once the driver reports them.
#[test]
fn own_addresses_reported_later_are_refused() {
    let (mut h, ft) = v4_allocation();
    assert_eq!(permit(&mut h, ft, "8.8.8.8:3478"), None);
    h.server
        .set_own_addresses(vec![addr("8.8.8.8:3478"), addr("[2606:4700::1]:3478")]);
    assert_eq!(permit(&mut h, ft, "8.8.8.8:3478"), Some(403));
    assert_eq!(permit(&mut h, ft, "8.8.8.8:3479"), None);
    assert_eq!(h.server.stats().refusals[Refusal::OwnAddress as usize], 1);
}

/// Found by the `turn_lifecycle` fuzz target: a permission covers an IP on
/// every port, so permitting one of the server's own IPs on another port and
/// then sending a Send indication to its listening port relayed into the
/// server itself.
#[test]
fn a_send_indication_to_our_own_listener_is_dropped_even_with_a_permission() {
    let (mut h, ft) = v4_allocation();
    h.server.set_own_addresses(vec![addr("8.8.8.8:3478")]);
    assert_eq!(
        permit(&mut h, ft, "8.8.8.8:9999"),
        None,
        "another port is fine"
    );
    let send = |h: &mut Harness, to: &str| {
        let tid = h.tid();
        let mut b = crate::codec::MessageBuilder::new(Class::Indication, Method::SEND, tid);
        b.add(&Attribute::XorPeerAddress(addr(to)))
            .add(&Attribute::Data(b"loop"));
        h.input(ft, &b.finish(None, false))
    };
    let relayed = |out: &[crate::server::Transmit]| {
        out.iter()
            .filter(|t| matches!(t.destination, Destination::Peer { .. }))
            .count()
    };
    assert_eq!(relayed(&send(&mut h, "8.8.8.8:9999")), 1);
    assert_eq!(
        relayed(&send(&mut h, "8.8.8.8:3478")),
        0,
        "relayed to ourselves"
    );
    assert_eq!(h.server.stats().refusals[Refusal::OwnAddress as usize], 1);
}
