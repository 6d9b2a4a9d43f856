//! A two-party harness for driving [`Server`] with synthetic time: a scripted client
//! on one side, a fake driver (binding relay "sockets" by number) on the other.
//! Used by the unit tests and the fuzz bodies; hidden from the docs.

#![doc(hidden)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::auth::{Credentials, long_term_key};
use crate::codec::{
    Attribute, AttributeType, Class, IntegrityKind, Message, MessageBuilder, Method, TransactionId,
};
use crate::policy::PeerPolicy;
use crate::server::{
    Event, FiveTuple, PortRequest, Quotas, Server, ServerConfig, Transmit, Transport, WallClock,
};

/// Realm used by [`Harness::config`].
pub const REALM: &str = "natter.test";
/// Static user with password [`PASSWORD`].
pub const USER: &str = "user";
/// See [`USER`].
pub const PASSWORD: &str = "pass";
/// REST secret.
pub const SECRET: &[u8] = b"rest-secret";
/// Unix time at the harness's start.
pub const START_UNIX: u64 = 1_700_000_000;

/// Server plus synthetic clock and a fake relay-socket binder.
pub struct Harness {
    /// The server under test.
    pub server: Server,
    /// Synthetic now.
    pub now: Instant,
    /// Events seen so far (relay requests are answered automatically).
    pub events: Vec<Event>,
    /// When false, relay binding fails (to test 508).
    pub relay_bind_ok: bool,
    next_port: u16,
    tid: u32,
}

impl Harness {
    /// The configuration the harness uses unless told otherwise.
    pub fn config(now: Instant) -> ServerConfig {
        ServerConfig {
            credentials: Credentials::new(REALM, Some(SECRET), [(USER, PASSWORD)]),
            nonce_key: [9; 32],
            nonce_lifetime_secs: 600,
            default_lifetime_secs: 600,
            max_lifetime_secs: 3600,
            policy: PeerPolicy::new(vec![], vec!["192.0.2.10:3478".parse().expect("literal")]),
            quotas: Quotas::default(),
            external_ips: Vec::new(),
            relay_ipv4: true,
            relay_ipv6: true,
            alternate_server: None,
            clock: WallClock {
                at: now,
                unix_secs: START_UNIX,
            },
        }
    }

    /// A harness with the default test configuration.
    pub fn new() -> Harness {
        Harness::with_config(|_| {})
    }

    /// A harness whose configuration `edit` adjusts.
    pub fn with_config(edit: impl FnOnce(&mut ServerConfig)) -> Harness {
        let now = Instant::now();
        let mut config = Harness::config(now);
        edit(&mut config);
        Harness {
            server: Server::new(config),
            now,
            events: Vec::new(),
            relay_bind_ok: true,
            next_port: 50_000,
            tid: 0,
        }
    }

    /// A UDP 5-tuple for client number `n`.
    pub fn udp(n: u16) -> FiveTuple {
        FiveTuple {
            transport: Transport::Udp,
            client: SocketAddr::new([203, 0, 113, 5].into(), 40_000 + n),
            server: "192.0.2.10:3478".parse().expect("literal"),
        }
    }

    /// Moves the clock and lets the server expire things.
    pub fn advance(&mut self, by: Duration) -> Vec<Transmit> {
        self.now += by;
        self.server.handle_timeout(self.now);
        self.drain()
    }

    /// Feeds a client datagram and returns what the server sent.
    pub fn input(&mut self, ft: FiveTuple, data: &[u8]) -> Vec<Transmit> {
        let _ = self.server.handle_datagram(self.now, ft, data);
        self.drain()
    }

    /// Feeds a peer datagram into an allocation's relay.
    pub fn peer_input(&mut self, ft: FiveTuple, peer: SocketAddr, data: &[u8]) -> Vec<Transmit> {
        if let Some(id) = self.server.allocation_for(&ft) {
            self.server.handle_peer_datagram(self.now, id, peer, data);
        }
        self.drain()
    }

    /// Drains events (answering relay requests) and transmits.
    pub fn drain(&mut self) -> Vec<Transmit> {
        while let Some(ev) = self.server.poll_event() {
            if let Event::RelayRequested(req) = &ev {
                let bound = self.relay_bind_ok.then(|| {
                    let port = match req.port {
                        PortRequest::Even { .. } => (self.next_port + 1) & !1,
                        _ => self.next_port,
                    };
                    self.next_port = port + 2;
                    SocketAddr::new([192, 0, 2, 10].into(), port)
                });
                self.server
                    .handle_relay_bound(self.now, req.allocation, bound);
            }
            self.events.push(ev);
        }
        std::iter::from_fn(|| self.server.poll_transmit()).collect()
    }

    /// A fresh transaction id.
    pub fn tid(&mut self) -> TransactionId {
        self.tid += 1;
        let mut t = [0u8; 12];
        t[8..].copy_from_slice(&self.tid.to_be_bytes());
        TransactionId(t)
    }

    /// Sends an unauthenticated request and returns the single response, decoded into
    /// an owned copy of its bytes.
    pub fn request(&mut self, ft: FiveTuple, method: Method, attrs: &[Attribute<'_>]) -> Vec<u8> {
        let tid = self.tid();
        let mut b = MessageBuilder::new(Class::Request, method, tid);
        for a in attrs {
            b.add(a);
        }
        let out = self.input(ft, &b.finish(None, true));
        single(out)
    }

    /// Gets a nonce with an unauthenticated request, then sends the authenticated one.
    pub fn auth_request(
        &mut self,
        ft: FiveTuple,
        method: Method,
        attrs: &[Attribute<'_>],
        username: &str,
        password: &str,
        kind: IntegrityKind,
    ) -> Vec<u8> {
        let challenge = self.request(ft, method, attrs);
        let msg = Message::decode(&challenge).expect("challenge decodes");
        let Ok(Some(Attribute::Nonce(nonce))) = msg.get(AttributeType::NONCE) else {
            return challenge; // not challenged (e.g. rate limited or an error): hand it back
        };
        let nonce = nonce.to_owned();
        self.request_with_nonce(ft, method, attrs, username, password, &nonce, kind)
    }

    /// Sends a request authenticated with a known nonce.
    #[allow(clippy::too_many_arguments)]
    pub fn request_with_nonce(
        &mut self,
        ft: FiveTuple,
        method: Method,
        attrs: &[Attribute<'_>],
        username: &str,
        password: &str,
        nonce: &str,
        kind: IntegrityKind,
    ) -> Vec<u8> {
        let tid = self.tid();
        let bytes = signed(method, tid, attrs, username, password, nonce, kind);
        single(self.input(ft, &bytes))
    }

    /// Allocates for `ft` as the static user; returns the success response bytes.
    pub fn allocate(&mut self, ft: FiveTuple) -> Vec<u8> {
        self.auth_request(
            ft,
            Method::ALLOCATE,
            &[Attribute::RequestedTransport(17)],
            USER,
            PASSWORD,
            IntegrityKind::Sha1,
        )
    }
}

impl Default for Harness {
    fn default() -> Harness {
        Harness::new()
    }
}

/// Builds a long-term-authenticated request.
pub fn signed(
    method: Method,
    tid: TransactionId,
    attrs: &[Attribute<'_>],
    username: &str,
    password: &str,
    nonce: &str,
    kind: IntegrityKind,
) -> Vec<u8> {
    let mut b = MessageBuilder::new(Class::Request, method, tid);
    for a in attrs {
        b.add(a);
    }
    b.add(&Attribute::Username(username))
        .add(&Attribute::Realm(REALM))
        .add(&Attribute::Nonce(nonce));
    let key = long_term_key(username, REALM, password);
    b.finish(Some((kind, &key.0)), true)
}

fn single(mut out: Vec<Transmit>) -> Vec<u8> {
    match out.len() {
        1 => out.pop().map(|t| t.payload).unwrap_or_default(),
        _ => Vec::new(),
    }
}
