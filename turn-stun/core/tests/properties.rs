//! Property tests: encode → decode round-trips, and arbitrary bytes never panic.

use std::net::{IpAddr, SocketAddr};

use natter_turn_core::codec::{
    Attribute, ChannelData, Class, ErrorCode, Family, IntegrityKind, Message, MessageBuilder,
    Method, TransactionId, stream_frame_len,
};
use proptest::prelude::*;

/// Owned attribute values, from which borrowed [`Attribute`]s are built.
#[derive(Debug, Clone)]
enum Owned {
    Addr(u8, SocketAddr),
    Text(u8, String),
    Error(u16, String),
    Unknown(Vec<u16>),
    Channel(u16),
    Lifetime(u32),
    Data(Vec<u8>),
    Transport(u8),
    Family(bool, bool),
    EvenPort(bool),
    DontFragment,
    Token([u8; 8]),
    Other(u16, Vec<u8>),
}

impl Owned {
    fn attr(&self) -> Attribute<'_> {
        match self {
            Owned::Addr(k, a) => match k % 5 {
                0 => Attribute::XorMappedAddress(*a),
                1 => Attribute::XorPeerAddress(*a),
                2 => Attribute::XorRelayedAddress(*a),
                3 => Attribute::AlternateServer(*a),
                _ => Attribute::MappedAddress(*a),
            },
            Owned::Text(k, s) => match k % 4 {
                0 => Attribute::Username(s),
                1 => Attribute::Realm(s),
                2 => Attribute::Nonce(s),
                _ => Attribute::Software(s),
            },
            Owned::Error(code, reason) => Attribute::ErrorCode(ErrorCode {
                code: *code,
                reason,
            }),
            Owned::Unknown(types) => Attribute::UnknownAttributes(types.clone()),
            Owned::Channel(n) => Attribute::ChannelNumber(*n),
            Owned::Lifetime(l) => Attribute::Lifetime(*l),
            Owned::Data(d) => Attribute::Data(d),
            Owned::Transport(p) => Attribute::RequestedTransport(*p),
            Owned::Family(additional, v6) => {
                let f = if *v6 { Family::V6 } else { Family::V4 };
                if *additional {
                    Attribute::AdditionalAddressFamily(f)
                } else {
                    Attribute::RequestedAddressFamily(f)
                }
            }
            Owned::EvenPort(r) => Attribute::EvenPort(*r),
            Owned::DontFragment => Attribute::DontFragment,
            Owned::Token(t) => Attribute::ReservationToken(*t),
            Owned::Other(t, v) => Attribute::Other(*t, v),
        }
    }
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::from(ip), port)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::from(ip), port)),
    ]
}

fn owned() -> impl Strategy<Value = Owned> {
    prop_oneof![
        (any::<u8>(), socket_addr()).prop_map(|(k, a)| Owned::Addr(k, a)),
        (any::<u8>(), "\\PC{0,60}").prop_map(|(k, s)| Owned::Text(k, s)),
        (300u16..700, "[a-zA-Z ]{0,40}").prop_map(|(c, r)| Owned::Error(c, r)),
        proptest::collection::vec(any::<u16>(), 0..8).prop_map(Owned::Unknown),
        any::<u16>().prop_map(Owned::Channel),
        any::<u32>().prop_map(Owned::Lifetime),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(Owned::Data),
        any::<u8>().prop_map(Owned::Transport),
        (any::<bool>(), any::<bool>()).prop_map(|(a, v)| Owned::Family(a, v)),
        any::<bool>().prop_map(Owned::EvenPort),
        Just(Owned::DontFragment),
        any::<[u8; 8]>().prop_map(Owned::Token),
        // Types no typed variant claims (0x8050.. is unassigned).
        (
            0x8050u16..0x8100,
            proptest::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(|(t, v)| Owned::Other(t, v)),
    ]
}

fn class() -> impl Strategy<Value = Class> {
    prop_oneof![
        Just(Class::Request),
        Just(Class::Indication),
        Just(Class::Success),
        Just(Class::Error)
    ]
}

proptest! {
    #[test]
    fn messages_round_trip(
        class in class(),
        method in 0u16..0x1000,
        tid in any::<[u8; 12]>(),
        attrs in proptest::collection::vec(owned(), 0..12),
        integrity in prop_oneof![Just(None), Just(Some(IntegrityKind::Sha1)), Just(Some(IntegrityKind::Sha256))],
        fingerprint in any::<bool>(),
        key in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let attrs: Vec<Attribute<'_>> = attrs.iter().map(Owned::attr).collect();
        let mut b = MessageBuilder::new(class, Method(method), TransactionId(tid));
        for a in &attrs {
            b.add(a);
        }
        let bytes = b.finish(integrity.map(|k| (k, &key[..])), fingerprint);
        let msg = Message::decode(&bytes).expect("encoded message decodes");
        prop_assert_eq!(msg.class, class);
        prop_assert_eq!(msg.method, Method(method));
        prop_assert_eq!(msg.transaction_id, TransactionId(tid));
        prop_assert_eq!(msg.has_fingerprint(), fingerprint);
        let mut decoded = msg.attributes().expect("attributes decode");
        if integrity.is_some() {
            decoded.pop(); // the integrity attribute itself
            prop_assert_eq!(msg.verify_integrity(&key), Ok(integrity.unwrap()));
        }
        prop_assert_eq!(decoded, attrs);
    }

    #[test]
    fn channel_data_round_trips(channel in 0x4000u16..=0x7FFF, data in proptest::collection::vec(any::<u8>(), 0..2000), pad in any::<bool>()) {
        let mut out = Vec::new();
        ChannelData { channel, data: &data }.encode(pad, &mut out);
        if pad {
            // Padded frames are exactly what the stream framer expects.
            prop_assert_eq!(stream_frame_len(&out), Ok(Some(out.len())));
        }
        let cd = ChannelData::decode(&out).expect("encoded ChannelData decodes");
        prop_assert_eq!(cd, ChannelData { channel, data: &data });
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        natter_turn_core::fuzz::stun_message(&data);
        natter_turn_core::fuzz::channel_data(&data);
        natter_turn_core::fuzz::tcp_framing(&data);
        natter_turn_core::fuzz::server_datagram(&data);
    }

    #[test]
    fn stun_shaped_bytes_never_panic(
        typ in 0u16..0x4000,
        tid in any::<[u8; 12]>(),
        body in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        // A valid header in front of random attribute bytes reaches the attribute walk.
        let mut data = Vec::new();
        data.extend_from_slice(&typ.to_be_bytes());
        let len = (body.len() & !3) as u16;
        data.extend_from_slice(&len.to_be_bytes());
        data.extend_from_slice(&0x2112_A442u32.to_be_bytes());
        data.extend_from_slice(&tid);
        data.extend_from_slice(&body[..usize::from(len)]);
        natter_turn_core::fuzz::stun_message(&data);
        natter_turn_core::fuzz::server_datagram(&data);
    }
}
