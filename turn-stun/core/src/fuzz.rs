//! Fuzz target bodies, compiled into the library so that `cargo test` builds them and
//! replays the seed corpora in `turn-stun/fuzz/seeds/<target>/`, while the cargo-fuzz
//! crate in `turn-stun/fuzz/` only wraps them. Kept public (but hidden from docs)
//! rather than behind a feature so that a plain `cargo test` exercises them.
//!
//! Each body must not panic on any input; a panic is the bug the fuzzer looks for.

#![doc(hidden)]

use std::net::SocketAddr;
use std::time::Duration;

use crate::codec::{
    Attribute, ChannelData, IntegrityKind, Message, MessageBuilder, Method, stream_frame_len,
};
use crate::server::{FiveTuple, Transport};
use crate::testkit::{Harness, PASSWORD, USER};

pub use crate::fuzz_lifecycle::turn_lifecycle;

/// Decodes a STUN message; when it decodes, re-encodes its attributes and checks that
/// the result decodes to the same attributes, and exercises the integrity check.
pub fn stun_message(data: &[u8]) {
    let Ok(msg) = Message::decode(data) else {
        return;
    };
    let _ = msg.verify_integrity(b"fuzz-key");
    let Ok(attrs) = msg.attributes() else { return };
    let mut b = MessageBuilder::new(msg.class, msg.method, msg.transaction_id);
    for a in &attrs {
        b.add(a);
    }
    let bytes = b.finish(None, msg.has_fingerprint());
    let again = Message::decode(&bytes).expect("re-encoded message must decode");
    assert_eq!(
        again
            .attributes()
            .expect("re-encoded attributes must decode"),
        attrs
    );
}

/// Decodes ChannelData and checks that encoding gives back an equal message.
pub fn channel_data(data: &[u8]) {
    let Ok(cd) = ChannelData::decode(data) else {
        return;
    };
    for pad in [false, true] {
        let mut out = Vec::new();
        cd.encode(pad, &mut out);
        assert_eq!(
            ChannelData::decode(&out).expect("re-encoded ChannelData must decode"),
            cd
        );
    }
}

/// Splits a byte stream into frames as the TCP driver does, feeding each frame to a
/// server that has an allocation with a channel on that connection.
pub fn tcp_framing(data: &[u8]) {
    let ft = FiveTuple {
        transport: Transport::Tcp,
        client: SocketAddr::new([203, 0, 113, 5].into(), 40_000),
        server: "192.0.2.10:3478".parse().expect("literal"),
    };
    let mut h = ready_harness(ft);
    let mut rest = data;
    while let Ok(Some(len)) = stream_frame_len(rest) {
        if len > rest.len() {
            break;
        }
        h.input(ft, &rest[..len]);
        rest = &rest[len..];
    }
}

/// Feeds an arbitrary datagram, as client and as peer, to a server that already has
/// an allocation with a permission and a channel, so every handler is reachable.
pub fn server_datagram(data: &[u8]) {
    let ft = Harness::udp(1);
    let mut h = ready_harness(ft);
    h.input(ft, data);
    h.peer_input(ft, PEER.parse().expect("literal"), data);
    h.advance(Duration::from_secs(3600));
    h.input(ft, data);
}

const PEER: &str = "93.184.215.1:9";

fn ready_harness(ft: FiveTuple) -> Harness {
    let mut h = Harness::new();
    h.allocate(ft);
    let peer: SocketAddr = PEER.parse().expect("literal");
    h.auth_request(
        ft,
        Method::CHANNEL_BIND,
        &[
            Attribute::ChannelNumber(0x4000),
            Attribute::XorPeerAddress(peer),
        ],
        USER,
        PASSWORD,
        IntegrityKind::Sha1,
    );
    h
}
