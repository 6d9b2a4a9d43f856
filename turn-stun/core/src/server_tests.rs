//! Unit tests of the server state machine, driven with synthetic time.

use std::net::SocketAddr;
use std::time::Duration;

use crate::auth::{long_term_key, rest_password};
use crate::codec::{
    Attribute, AttributeType, Class, ErrorCode, Family, IntegrityKind, Message, MessageBuilder,
    Method,
};
use crate::server::{AuthFailure, CloseReason, Destination, Event, FiveTuple, Refusal, Transport};
use crate::testkit::{Harness, PASSWORD, REALM, SECRET, START_UNIX, USER};

pub(super) const SHA1: IntegrityKind = IntegrityKind::Sha1;

pub(super) fn decode(bytes: &[u8]) -> Message<'_> {
    Message::decode(bytes).expect("server output decodes")
}

pub(super) fn code(bytes: &[u8]) -> Option<u16> {
    match decode(bytes).get(AttributeType::ERROR_CODE) {
        Ok(Some(Attribute::ErrorCode(e))) => Some(e.code),
        _ => None,
    }
}

pub(super) fn peer(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub(super) fn user_key() -> Vec<u8> {
    long_term_key(USER, REALM, PASSWORD).0.to_vec()
}

pub(super) fn permit(h: &mut Harness, ft: FiveTuple, peers: &[&str]) -> Vec<u8> {
    let attrs: Vec<Attribute<'_>> = peers
        .iter()
        .map(|p| Attribute::XorPeerAddress(peer(p)))
        .collect();
    h.auth_request(ft, Method::CREATE_PERMISSION, &attrs, USER, PASSWORD, SHA1)
}

pub(super) fn bind(h: &mut Harness, ft: FiveTuple, channel: u16, p: &str) -> Vec<u8> {
    h.auth_request(
        ft,
        Method::CHANNEL_BIND,
        &[
            Attribute::ChannelNumber(channel),
            Attribute::XorPeerAddress(peer(p)),
        ],
        USER,
        PASSWORD,
        SHA1,
    )
}

#[test]
fn binding_reflects_the_client_address() {
    let mut h = Harness::new();
    let ft = Harness::udp(1);
    let resp = h.request(ft, Method::BINDING, &[]);
    let msg = decode(&resp);
    assert_eq!((msg.class, msg.method), (Class::Success, Method::BINDING));
    assert_eq!(
        msg.get(AttributeType::XOR_MAPPED_ADDRESS).unwrap(),
        Some(Attribute::XorMappedAddress(ft.client))
    );
    assert!(
        msg.has_fingerprint(),
        "a request with FINGERPRINT gets one back"
    );
    assert_eq!(h.server.stats().binding_requests, 1);
}

#[test]
fn binding_with_unknown_required_attribute_gets_420() {
    let mut h = Harness::new();
    let resp = h.request(
        Harness::udp(1),
        Method::BINDING,
        &[Attribute::Other(0x0030, b"x")],
    );
    assert_eq!(code(&resp), Some(420));
    assert_eq!(
        decode(&resp)
            .get(AttributeType::UNKNOWN_ATTRIBUTES)
            .unwrap(),
        Some(Attribute::UnknownAttributes(vec![0x0030]))
    );
}

#[test]
fn allocate_challenges_then_succeeds_with_integrity() {
    let mut h = Harness::new();
    let ft = Harness::udp(1);
    let challenge = h.request(ft, Method::ALLOCATE, &[Attribute::RequestedTransport(17)]);
    let msg = decode(&challenge);
    assert_eq!(code(&challenge), Some(401));
    assert_eq!(
        msg.get(AttributeType::REALM).unwrap(),
        Some(Attribute::Realm(REALM))
    );
    assert!(matches!(
        msg.get(AttributeType::NONCE).unwrap(),
        Some(Attribute::Nonce(_))
    ));
    assert_eq!(
        msg.integrity_kind(),
        None,
        "a 401 carries no MESSAGE-INTEGRITY"
    );

    let resp = h.allocate(ft);
    let msg = decode(&resp);
    assert_eq!(msg.class, Class::Success, "{:?}", msg.attributes());
    assert_eq!(msg.verify_integrity(&user_key()), Ok(SHA1));
    assert_eq!(
        msg.get(AttributeType::XOR_RELAYED_ADDRESS).unwrap(),
        Some(Attribute::XorRelayedAddress(peer("192.0.2.10:50000")))
    );
    assert_eq!(
        msg.get(AttributeType::LIFETIME).unwrap(),
        Some(Attribute::Lifetime(600))
    );
    assert_eq!(
        msg.get(AttributeType::XOR_MAPPED_ADDRESS).unwrap(),
        Some(Attribute::XorMappedAddress(ft.client))
    );
    assert!(
        h.events
            .iter()
            .any(|e| matches!(e, Event::AllocationCreated { username, .. } if username == USER))
    );
    assert_eq!(h.server.allocation_count(), 1);
    assert_eq!(h.server.stats().allocations_created, 1);
}

#[test]
fn sha256_integrity_is_answered_in_kind() {
    let mut h = Harness::new();
    let ft = Harness::udp(1);
    let resp = h.auth_request(
        ft,
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(17)],
        USER,
        PASSWORD,
        IntegrityKind::Sha256,
    );
    let msg = decode(&resp);
    assert_eq!(msg.class, Class::Success);
    assert_eq!(msg.integrity_kind(), Some(IntegrityKind::Sha256));
    assert_eq!(msg.verify_integrity(&user_key()), Ok(IntegrityKind::Sha256));
}

#[test]
fn wrong_password_unknown_user_and_expired_rest_credentials_are_refused() {
    let mut h = Harness::new();
    let transport = [Attribute::RequestedTransport(17)];
    let resp = h.auth_request(
        Harness::udp(1),
        Method::ALLOCATE,
        &transport,
        USER,
        "wrong",
        SHA1,
    );
    assert_eq!(code(&resp), Some(401));
    let resp = h.auth_request(
        Harness::udp(2),
        Method::ALLOCATE,
        &transport,
        "nobody",
        "x",
        SHA1,
    );
    assert_eq!(code(&resp), Some(401));
    let expired = format!("{}:alice", START_UNIX - 1);
    let resp = h.auth_request(
        Harness::udp(3),
        Method::ALLOCATE,
        &transport,
        &expired,
        &rest_password(SECRET, &expired),
        SHA1,
    );
    assert_eq!(code(&resp), Some(401));
    let valid = format!("{}:alice", START_UNIX + 60);
    let resp = h.auth_request(
        Harness::udp(4),
        Method::ALLOCATE,
        &transport,
        &valid,
        &rest_password(SECRET, &valid),
        SHA1,
    );
    assert_eq!(decode(&resp).class, Class::Success);
    // ...and the same REST username is refused once its expiry passes.
    h.advance(Duration::from_secs(61));
    let resp = h.auth_request(
        Harness::udp(5),
        Method::ALLOCATE,
        &transport,
        &valid,
        &rest_password(SECRET, &valid),
        SHA1,
    );
    assert_eq!(code(&resp), Some(401));
    let f = &h.server.stats().auth_failures;
    assert_eq!(f[AuthFailure::BadIntegrity as usize], 1);
    assert_eq!(f[AuthFailure::UnknownUser as usize], 1);
    assert_eq!(f[AuthFailure::ExpiredCredentials as usize], 2);
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn integrity_without_username_is_a_bad_request() {
    let mut h = Harness::new();
    let tid = h.tid();
    let mut b = MessageBuilder::new(Class::Request, Method::ALLOCATE, tid);
    b.add(&Attribute::RequestedTransport(17));
    let out = h.input(Harness::udp(1), &b.finish(Some((SHA1, b"k")), false));
    assert_eq!(code(&out[0].payload), Some(400));
    assert_eq!(
        h.server.stats().auth_failures[AuthFailure::MissingAttributes as usize],
        1
    );
}

#[test]
fn stale_nonce_gets_438_with_a_fresh_nonce() {
    let mut h = Harness::new();
    let ft = Harness::udp(1);
    let challenge = h.request(ft, Method::ALLOCATE, &[Attribute::RequestedTransport(17)]);
    let Ok(Some(Attribute::Nonce(nonce))) = decode(&challenge).get(AttributeType::NONCE) else {
        panic!("no nonce")
    };
    let nonce = nonce.to_owned();
    h.advance(Duration::from_secs(600));
    let resp = h.request_with_nonce(
        ft,
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(17)],
        USER,
        PASSWORD,
        &nonce,
        SHA1,
    );
    assert_eq!(code(&resp), Some(438));
    let Ok(Some(Attribute::Nonce(fresh))) = decode(&resp).get(AttributeType::NONCE) else {
        panic!("no nonce")
    };
    assert_ne!(fresh, nonce);
    let fresh = fresh.to_owned();
    let resp = h.request_with_nonce(
        ft,
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(17)],
        USER,
        PASSWORD,
        &fresh,
        SHA1,
    );
    assert_eq!(decode(&resp).class, Class::Success);
    // A nonce minted for another client IP is not accepted either.
    let other = FiveTuple {
        client: peer("203.0.113.99:1"),
        ..Harness::udp(2)
    };
    let resp = h.request_with_nonce(
        other,
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(17)],
        USER,
        PASSWORD,
        &fresh,
        SHA1,
    );
    assert_eq!(code(&resp), Some(438));
}

#[test]
fn unauthenticated_answers_are_rate_limited_per_source() {
    let mut h = Harness::with_config(|c| {
        c.quotas.unauthenticated_burst = 3;
        c.quotas.unauthenticated_per_source_per_sec = 1;
    });
    let ft = Harness::udp(1);
    let answered = (0..10)
        .filter(|_| {
            !h.request(ft, Method::ALLOCATE, &[Attribute::RequestedTransport(17)])
                .is_empty()
        })
        .count();
    assert_eq!(answered, 3);
    assert_eq!(h.server.stats().refusals[Refusal::RateLimited as usize], 7);
    // Another source is unaffected, and the first recovers with time.
    let other = FiveTuple {
        client: peer("203.0.113.77:1"),
        ..ft
    };
    assert!(!h.request(other, Method::ALLOCATE, &[]).is_empty());
    h.advance(Duration::from_secs(1));
    assert!(!h.request(ft, Method::ALLOCATE, &[]).is_empty());
}

#[test]
fn second_allocate_on_same_five_tuple_is_437_but_retransmission_is_answered() {
    let mut h = Harness::new();
    let ft = Harness::udp(1);
    h.allocate(ft);
    let challenge = h.request(ft, Method::REFRESH, &[]);
    let Ok(Some(Attribute::Nonce(nonce))) = decode(&challenge).get(AttributeType::NONCE) else {
        panic!()
    };
    let nonce = nonce.to_owned();
    let tid = h.tid();
    let req = crate::testkit::signed(
        Method::ALLOCATE,
        tid,
        &[Attribute::RequestedTransport(17)],
        USER,
        PASSWORD,
        &nonce,
        SHA1,
    );
    let out = h.input(ft, &req);
    assert_eq!(code(&out[0].payload), Some(437));
    // The original Allocate's transaction id: recover it from the created allocation.
    let orig = h.server.allocations[&h.server.allocation_for(&ft).unwrap()].allocate_tid;
    let req = crate::testkit::signed(
        Method::ALLOCATE,
        orig,
        &[Attribute::RequestedTransport(17)],
        USER,
        PASSWORD,
        &nonce,
        SHA1,
    );
    let out = h.input(ft, &req);
    let msg = decode(&out[0].payload);
    assert_eq!((msg.class, msg.transaction_id), (Class::Success, orig));
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn allocate_attribute_errors() {
    let mut h = Harness::new();
    let cases: Vec<(Vec<Attribute<'_>>, u16)> = vec![
        (vec![], 400),
        (vec![Attribute::RequestedTransport(6)], 442),
        (
            vec![Attribute::RequestedTransport(17), Attribute::DontFragment],
            420,
        ),
        (
            vec![
                Attribute::RequestedTransport(17),
                Attribute::EvenPort(false),
                Attribute::ReservationToken([1; 8]),
            ],
            400,
        ),
        (
            vec![
                Attribute::RequestedTransport(17),
                Attribute::RequestedAddressFamily(Family::V4),
                Attribute::AdditionalAddressFamily(Family::V6),
            ],
            400,
        ),
        (
            vec![
                Attribute::RequestedTransport(17),
                Attribute::ReservationToken([1; 8]),
            ],
            508,
        ),
    ];
    for (i, (attrs, expected)) in cases.into_iter().enumerate() {
        let resp = h.auth_request(
            Harness::udp(i as u16),
            Method::ALLOCATE,
            &attrs,
            USER,
            PASSWORD,
            SHA1,
        );
        assert_eq!(code(&resp), Some(expected), "case {i}: {attrs:?}");
        assert!(
            decode(&resp).verify_integrity(&user_key()).is_ok(),
            "errors after authentication are signed"
        );
    }
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn lifetimes_are_clamped_refreshed_and_expire() {
    let mut h = Harness::new();
    let ft = Harness::udp(1);
    let long = [
        Attribute::RequestedTransport(17),
        Attribute::Lifetime(100_000),
    ];
    let resp = h.auth_request(ft, Method::ALLOCATE, &long, USER, PASSWORD, SHA1);
    assert_eq!(
        decode(&resp).get(AttributeType::LIFETIME).unwrap(),
        Some(Attribute::Lifetime(3600))
    );
    let resp = h.auth_request(
        ft,
        Method::REFRESH,
        &[Attribute::Lifetime(30)],
        USER,
        PASSWORD,
        SHA1,
    );
    assert_eq!(
        decode(&resp).get(AttributeType::LIFETIME).unwrap(),
        Some(Attribute::Lifetime(600)),
        "below default → default"
    );
    h.advance(Duration::from_secs(599));
    assert_eq!(h.server.allocation_count(), 1);
    h.advance(Duration::from_secs(2));
    assert_eq!(h.server.allocation_count(), 0);
    assert!(h.events.iter().any(|e| matches!(
        e,
        Event::AllocationClosed {
            reason: CloseReason::Expired,
            ..
        }
    )));
    // The unauthenticated-answer limiter forgets its sources in two rotations.
    h.advance(Duration::from_secs(30));
    h.advance(Duration::from_secs(30));
    assert_eq!(h.server.limited_sources(), 0);
    assert_eq!(h.server.poll_timeout(), None, "nothing left to time out");
}

#[test]
fn refresh_zero_deletes_and_refresh_without_allocation_is_437() {
    let mut h = Harness::new();
    let ft = Harness::udp(1);
    h.allocate(ft);
    let resp = h.auth_request(
        ft,
        Method::REFRESH,
        &[Attribute::Lifetime(0)],
        USER,
        PASSWORD,
        SHA1,
    );
    assert_eq!(decode(&resp).class, Class::Success);
    assert_eq!(h.server.allocation_count(), 0);
    assert!(h.events.iter().any(|e| matches!(
        e,
        Event::AllocationClosed {
            reason: CloseReason::Deleted,
            ..
        }
    )));
    let resp = h.auth_request(ft, Method::REFRESH, &[], USER, PASSWORD, SHA1);
    assert_eq!(code(&resp), Some(437));
}

#[test]
fn another_user_cannot_touch_an_allocation() {
    let mut h = Harness::new();
    let ft = Harness::udp(1);
    h.allocate(ft);
    let other = format!("{}:mallory", START_UNIX + 600);
    let resp = h.auth_request(
        ft,
        Method::REFRESH,
        &[],
        &other,
        &rest_password(SECRET, &other),
        SHA1,
    );
    assert_eq!(code(&resp), Some(441));
}

#[test]
fn permissions_gate_relaying_both_ways_and_expire() {
    let mut h = Harness::new();
    let ft = Harness::udp(1);
    h.allocate(ft);
    let p = peer("93.184.215.1:7000");
    assert_eq!(h.peer_input(ft, p, b"early").len(), 0, "no permission yet");
    assert_eq!(
        decode(&permit(&mut h, ft, &["93.184.215.1:1"])).class,
        Class::Success
    );

    // Peer → client: a Data indication carrying the peer address (any port).
    let out = h.peer_input(ft, p, b"hello");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].destination, Destination::Client(ft));
    let msg = decode(&out[0].payload);
    assert_eq!((msg.class, msg.method), (Class::Indication, Method::DATA));
    assert_eq!(
        msg.get(AttributeType::XOR_PEER_ADDRESS).unwrap(),
        Some(Attribute::XorPeerAddress(p))
    );
    assert_eq!(
        msg.get(AttributeType::DATA).unwrap(),
        Some(Attribute::Data(b"hello"))
    );
    assert_eq!(
        h.peer_input(ft, peer("93.184.215.2:7000"), b"x").len(),
        0,
        "other IP has no permission"
    );

    // Client → peer: Send indication.
    let tid = h.tid();
    let mut b = MessageBuilder::new(Class::Indication, Method::SEND, tid);
    b.add(&Attribute::XorPeerAddress(p))
        .add(&Attribute::Data(b"world"));
    let send = b.finish(None, false);
    let out = h.input(ft, &send);
    let id = h.server.allocation_for(&ft).unwrap();
    assert_eq!(
        out,
        vec![crate::Transmit {
            destination: Destination::Peer {
                allocation: id,
                peer: p
            },
            payload: b"world".to_vec()
        }]
    );

    // Permissions last 300 s.
    h.advance(Duration::from_secs(300));
    assert_eq!(h.input(ft, &send).len(), 0);
    assert_eq!(h.peer_input(ft, p, b"late").len(), 0);
    let s = h.server.stats();
    assert_eq!(
        (
            s.packets_to_peer,
            s.bytes_to_peer,
            s.packets_to_client,
            s.bytes_to_client
        ),
        (1, 5, 1, 5)
    );
    assert_eq!(s.refusals[Refusal::NoPermission as usize], 4);
}

#[test]
fn denied_peers_are_refused_with_403_and_family_mismatch_with_443() {
    let mut h = Harness::new();
    let ft = Harness::udp(1);
    h.allocate(ft);
    for p in [
        "127.0.0.1:9",
        "169.254.169.254:80",
        "10.1.2.3:9",
        "192.0.2.10:3478",
    ] {
        assert_eq!(code(&permit(&mut h, ft, &[p])), Some(403), "{p}");
    }
    // One bad peer fails the whole request; nothing is installed.
    assert_eq!(
        code(&permit(&mut h, ft, &["93.184.215.1:1", "192.168.0.1:1"])),
        Some(403)
    );
    assert_eq!(h.peer_input(ft, peer("93.184.215.1:1"), b"x").len(), 0);
    assert_eq!(code(&permit(&mut h, ft, &["[2001:db8::1]:9"])), Some(443));
    assert_eq!(code(&bind(&mut h, ft, 0x4000, "127.0.0.1:9")), Some(403));
    let r = &h.server.stats().refusals;
    assert_eq!(r[Refusal::PeerDenied as usize], 5);
    assert_eq!(r[Refusal::OwnAddress as usize], 1);
}

#[test]
fn ipv4_mapped_peer_is_refused_on_an_ipv6_allocation() {
    let mut h = Harness::new();
    let ft = Harness::udp(1);
    let attrs = [
        Attribute::RequestedTransport(17),
        Attribute::RequestedAddressFamily(Family::V6),
    ];
    let resp = h.auth_request(ft, Method::ALLOCATE, &attrs, USER, PASSWORD, SHA1);
    assert_eq!(decode(&resp).class, Class::Success);
    for p in [
        "[::ffff:127.0.0.1]:9",
        "[64:ff9b::a9fe:a9fe]:80",
        "[::1]:9",
        "[fe80::1]:9",
    ] {
        let c = code(&permit(&mut h, ft, &[p]));
        assert!(c == Some(403) || c == Some(443), "{p}: {c:?}");
    }
    assert_eq!(
        decode(&permit(&mut h, ft, &["[2606:4700::1]:9"])).class,
        Class::Success
    );
}

#[test]
fn allow_list_overrides_the_deny_list() {
    let mut h = Harness::with_config(|c| {
        c.policy = crate::policy::PeerPolicy::new(
            vec!["127.0.0.1/32".parse().unwrap()],
            vec![peer("127.0.0.1:3478")],
        );
    });
    let ft = Harness::udp(1);
    h.allocate(ft);
    assert_eq!(
        decode(&permit(&mut h, ft, &["127.0.0.1:9"])).class,
        Class::Success
    );
    assert_eq!(
        code(&permit(&mut h, ft, &["127.0.0.1:3478"])),
        Some(403),
        "never our own address"
    );
    assert_eq!(code(&permit(&mut h, ft, &["10.0.0.1:9"])), Some(403));
}

#[test]
fn channels_relay_both_ways_with_padding_on_streams() {
    let mut h = Harness::new();
    for ft in [
        Harness::udp(1),
        FiveTuple {
            transport: Transport::Tcp,
            ..Harness::udp(2)
        },
    ] {
        h.allocate(ft);
        let p = "93.184.215.1:7000";
        assert_eq!(decode(&bind(&mut h, ft, 0x4001, p)).class, Class::Success);
        let id = h.server.allocation_for(&ft).unwrap();
        let out = h.input(ft, &[0x40, 0x01, 0x00, 0x03, b'a', b'b', b'c', 0]);
        assert_eq!(
            out,
            vec![crate::Transmit {
                destination: Destination::Peer {
                    allocation: id,
                    peer: peer(p)
                },
                payload: b"abc".to_vec()
            }]
        );
        let out = h.peer_input(ft, peer(p), b"xyz");
        let expected: &[u8] = if ft.transport == Transport::Udp {
            &[0x40, 0x01, 0, 3, b'x', b'y', b'z']
        } else {
            &[0x40, 0x01, 0, 3, b'x', b'y', b'z', 0]
        };
        assert_eq!(out[0].payload, expected);
        // Another port on the same IP has a permission but no channel: Data indication.
        let out = h.peer_input(ft, peer("93.184.215.1:7001"), b"q");
        assert_eq!(decode(&out[0].payload).method, Method::DATA);
        // An unbound channel number is dropped.
        assert!(h.input(ft, &[0x40, 0x02, 0x00, 0x00]).is_empty());
    }
}

#[test]
fn channel_bind_errors() {
    let mut h = Harness::new();
    let ft = Harness::udp(1);
    h.allocate(ft);
    assert_eq!(code(&bind(&mut h, ft, 0x3FFF, "93.184.215.1:1")), Some(400));
    assert_eq!(code(&bind(&mut h, ft, 0x8000, "93.184.215.1:1")), Some(400));
    assert_eq!(
        decode(&bind(&mut h, ft, 0x4000, "93.184.215.1:1")).class,
        Class::Success
    );
    assert_eq!(
        decode(&bind(&mut h, ft, 0x4000, "93.184.215.1:1")).class,
        Class::Success,
        "refresh"
    );
    assert_eq!(
        code(&bind(&mut h, ft, 0x4000, "93.184.215.2:1")),
        Some(400),
        "number taken"
    );
    assert_eq!(
        code(&bind(&mut h, ft, 0x4001, "93.184.215.1:1")),
        Some(400),
        "peer taken"
    );
    assert_eq!(
        code(&bind(&mut h, ft, 0x4001, "[2001:db8::1]:1")),
        Some(443)
    );
    let resp = h.auth_request(
        ft,
        Method::CHANNEL_BIND,
        &[Attribute::ChannelNumber(0x4002)],
        USER,
        PASSWORD,
        SHA1,
    );
    assert_eq!(code(&resp), Some(400), "no peer");
}

#[test]
fn channel_expires_after_600_seconds_even_with_permission_refreshed() {
    let mut h = Harness::new();
    let ft = Harness::udp(1);
    h.allocate(ft);
    bind(&mut h, ft, 0x4000, "93.184.215.1:1");
    h.advance(Duration::from_secs(290));
    h.auth_request(ft, Method::REFRESH, &[], USER, PASSWORD, SHA1);
    h.advance(Duration::from_secs(200));
    permit(&mut h, ft, &["93.184.215.1:1"]);
    h.advance(Duration::from_secs(110));
    assert!(
        h.input(ft, &[0x40, 0x00, 0x00, 0x01, 1, 0, 0, 0])
            .is_empty(),
        "channel expired at 600 s"
    );
    let out = h.peer_input(ft, peer("93.184.215.1:1"), b"x");
    assert_eq!(
        decode(&out[0].payload).method,
        Method::DATA,
        "permission still live: Data indication"
    );
}

#[test]
fn allocation_quotas_per_user_and_total() {
    let mut h = Harness::with_config(|c| c.quotas.allocations_per_user = 2);
    assert_eq!(decode(&h.allocate(Harness::udp(1))).class, Class::Success);
    assert_eq!(decode(&h.allocate(Harness::udp(2))).class, Class::Success);
    assert_eq!(code(&h.allocate(Harness::udp(3))), Some(486));
    let rest = format!("{}:bob", START_UNIX + 600);
    let resp = h.auth_request(
        Harness::udp(4),
        Method::ALLOCATE,
        &[Attribute::RequestedTransport(17)],
        &rest,
        &rest_password(SECRET, &rest),
        SHA1,
    );
    assert_eq!(
        decode(&resp).class,
        Class::Success,
        "another user has their own quota"
    );
    // Deleting one frees a slot.
    h.auth_request(
        Harness::udp(1),
        Method::REFRESH,
        &[Attribute::Lifetime(0)],
        USER,
        PASSWORD,
        SHA1,
    );
    assert_eq!(decode(&h.allocate(Harness::udp(3))).class, Class::Success);

    let mut h = Harness::with_config(|c| c.quotas.allocations_total = 1);
    h.allocate(Harness::udp(1));
    assert_eq!(code(&h.allocate(Harness::udp(2))), Some(508));
    let r = &h.server.stats().refusals;
    assert_eq!(r[Refusal::TotalQuota as usize], 1);
}

#[test]
fn permission_and_channel_quotas() {
    let mut h = Harness::with_config(|c| {
        c.quotas.permissions_per_allocation = 2;
        c.quotas.channels_per_allocation = 1;
    });
    let ft = Harness::udp(1);
    h.allocate(ft);
    assert_eq!(
        decode(&permit(&mut h, ft, &["93.184.215.1:1", "93.184.215.1:2"])).class,
        Class::Success,
        "same IP counts once"
    );
    assert_eq!(
        decode(&permit(&mut h, ft, &["93.184.215.2:1"])).class,
        Class::Success
    );
    assert_eq!(code(&permit(&mut h, ft, &["93.184.215.3:1"])), Some(508));
    assert_eq!(
        decode(&permit(&mut h, ft, &["93.184.215.1:1"])).class,
        Class::Success,
        "refreshing is free"
    );
    assert_eq!(
        decode(&bind(&mut h, ft, 0x4000, "93.184.215.1:5")).class,
        Class::Success
    );
    assert_eq!(code(&bind(&mut h, ft, 0x4001, "93.184.215.2:5")), Some(508));
    // Once permissions expire, their slots are free again.
    h.advance(Duration::from_secs(301));
    assert_eq!(
        decode(&permit(&mut h, ft, &["93.184.215.3:1"])).class,
        Class::Success
    );
    let r = &h.server.stats().refusals;
    assert_eq!(
        (
            r[Refusal::PermissionQuota as usize],
            r[Refusal::ChannelQuota as usize]
        ),
        (1, 1)
    );
}

#[test]
fn bandwidth_is_limited_per_allocation() {
    let mut h = Harness::with_config(|c| c.quotas.bandwidth_bytes_per_sec = 100_000);
    let ft = Harness::udp(1);
    h.allocate(ft);
    bind(&mut h, ft, 0x4000, "93.184.215.1:1");
    let mut frame = vec![0x40, 0x00, 0x03, 0xE8];
    frame.resize(4 + 1000, 7);
    let relayed = (0..150).map(|_| h.input(ft, &frame).len()).sum::<usize>();
    assert_eq!(
        relayed, 100,
        "one second's worth (100 kB) passes, the rest is dropped"
    );
    h.advance(Duration::from_millis(500));
    let relayed = (0..100).map(|_| h.input(ft, &frame).len()).sum::<usize>();
    assert_eq!(relayed, 50);
    assert_eq!(h.server.stats().refusals[Refusal::Bandwidth as usize], 100);
}

#[test]
fn even_port_reservation_is_claimed_by_token_or_released() {
    let mut h = Harness::new();
    let (a, b, c) = (Harness::udp(1), Harness::udp(2), Harness::udp(3));
    let attrs = [Attribute::RequestedTransport(17), Attribute::EvenPort(true)];
    let resp = h.auth_request(a, Method::ALLOCATE, &attrs, USER, PASSWORD, SHA1);
    let msg = decode(&resp);
    let Ok(Some(Attribute::XorRelayedAddress(relay))) = msg.get(AttributeType::XOR_RELAYED_ADDRESS)
    else {
        panic!()
    };
    assert_eq!(relay.port() % 2, 0);
    let Ok(Some(Attribute::ReservationToken(token))) = msg.get(AttributeType::RESERVATION_TOKEN)
    else {
        panic!("no token")
    };
    let req = h.events.iter().find_map(|e| match e {
        Event::RelayRequested(r) => Some(*r),
        _ => None,
    });
    let Some(crate::RelayRequest {
        port: crate::PortRequest::Even {
            reserve_next: Some(rid),
        },
        ..
    }) = req
    else {
        panic!("{req:?}")
    };

    let resp = h.auth_request(
        b,
        Method::ALLOCATE,
        &[
            Attribute::RequestedTransport(17),
            Attribute::ReservationToken(token),
        ],
        USER,
        PASSWORD,
        SHA1,
    );
    assert_eq!(decode(&resp).class, Class::Success);
    assert!(h.events.iter().any(
        |e| matches!(e, Event::RelayRequested(r) if r.port == crate::PortRequest::Reserved(rid))
    ));
    // A token works once.
    let resp = h.auth_request(
        c,
        Method::ALLOCATE,
        &[
            Attribute::RequestedTransport(17),
            Attribute::ReservationToken(token),
        ],
        USER,
        PASSWORD,
        SHA1,
    );
    assert_eq!(code(&resp), Some(508));

    // An unclaimed reservation is released after 30 s.
    let d = Harness::udp(4);
    h.auth_request(d, Method::ALLOCATE, &attrs, USER, PASSWORD, SHA1);
    h.advance(Duration::from_secs(31));
    assert!(
        h.events
            .iter()
            .any(|e| matches!(e, Event::ReservationReleased(_)))
    );
}

#[test]
fn dual_allocation_falls_back_to_ipv4_with_address_error() {
    let mut h = Harness::new();
    let attrs = [
        Attribute::RequestedTransport(17),
        Attribute::AdditionalAddressFamily(Family::V6),
    ];
    let resp = h.auth_request(
        Harness::udp(1),
        Method::ALLOCATE,
        &attrs,
        USER,
        PASSWORD,
        SHA1,
    );
    let msg = decode(&resp);
    assert_eq!(msg.class, Class::Success);
    assert_eq!(
        msg.get(AttributeType::ADDRESS_ERROR_CODE).unwrap(),
        Some(Attribute::AddressErrorCode(
            Family::V6,
            ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED
        ))
    );
}

#[test]
fn unavailable_family_is_440() {
    let mut h = Harness::with_config(|c| c.relay_ipv6 = false);
    let attrs = [
        Attribute::RequestedTransport(17),
        Attribute::RequestedAddressFamily(Family::V6),
    ];
    let resp = h.auth_request(
        Harness::udp(1),
        Method::ALLOCATE,
        &attrs,
        USER,
        PASSWORD,
        SHA1,
    );
    assert_eq!(code(&resp), Some(440));
}

#[test]
fn relay_bind_failure_is_508() {
    let mut h = Harness::new();
    h.relay_bind_ok = false;
    assert_eq!(code(&h.allocate(Harness::udp(1))), Some(508));
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(
        h.server.stats().refusals[Refusal::RelayUnavailable as usize],
        1
    );
}

#[test]
fn external_ip_is_advertised() {
    let mut h = Harness::with_config(|c| {
        c.external_ips = vec![
            "2001:db8::200".parse().unwrap(),
            "93.184.215.200".parse().unwrap(),
        ]
    });
    let resp = h.allocate(Harness::udp(1));
    assert_eq!(
        decode(&resp)
            .get(AttributeType::XOR_RELAYED_ADDRESS)
            .unwrap(),
        Some(Attribute::XorRelayedAddress(peer("93.184.215.200:50000")))
    );
}

#[test]
fn alternate_server_redirects_allocations_after_authentication() {
    let mut h = Harness::with_config(|c| c.alternate_server = Some(peer("93.184.215.50:3478")));
    let resp = h.allocate(Harness::udp(1));
    let msg = decode(&resp);
    assert_eq!(code(&resp), Some(300));
    assert_eq!(
        msg.get(AttributeType::ALTERNATE_SERVER).unwrap(),
        Some(Attribute::AlternateServer(peer("93.184.215.50:3478")))
    );
    assert!(msg.verify_integrity(&user_key()).is_ok());
    h.server.set_alternate_server(None);
    assert_eq!(decode(&h.allocate(Harness::udp(1))).class, Class::Success);
}

#[test]
fn closing_a_stream_connection_closes_its_allocation() {
    let mut h = Harness::new();
    let ft = FiveTuple {
        transport: Transport::Tcp,
        ..Harness::udp(1)
    };
    h.allocate(ft);
    h.server.handle_connection_closed(h.now, ft);
    h.drain();
    assert_eq!(h.server.allocation_count(), 0);
    assert!(h.events.iter().any(|e| matches!(
        e,
        Event::AllocationClosed {
            reason: CloseReason::ConnectionClosed,
            ..
        }
    )));
}

#[test]
fn without_credentials_everything_is_refused() {
    let mut h =
        Harness::with_config(|c| c.credentials = crate::auth::Credentials::new(REALM, None, []));
    assert_eq!(code(&h.allocate(Harness::udp(1))), Some(401));
    assert_eq!(
        h.server.stats().auth_failures[AuthFailure::NoCredentialsConfigured as usize],
        1
    );
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn garbage_is_reported_not_answered() {
    let mut h = Harness::new();
    let ft = Harness::udp(1);
    for junk in [
        &b""[..],
        &[0xFF; 40],
        &[0x40, 0x00, 0xFF, 0xFF],
        &[0x00, 0x01, 0x00, 0x04, 0x21, 0x12],
    ] {
        assert!(
            h.server.handle_datagram(h.now, ft, junk).is_err(),
            "{junk:?}"
        );
        assert!(h.drain().is_empty());
    }
    assert_eq!(h.server.stats().malformed, 4);
}
