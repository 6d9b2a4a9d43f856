//! The TURN server state machine (RFC 8656 with RFC 8489 STUN).
//!
//! # Driving contract
//!
//! The driver owns the sockets and the clock. After each `handle_*` call it drains
//! [`Server::poll_event`] and [`Server::poll_transmit`], then sleeps until
//! [`Server::poll_timeout`] (or the next input) and calls [`Server::handle_timeout`].
//!
//! * Datagrams and stream frames from clients go to [`Server::handle_datagram`] with
//!   the 5-tuple they arrived on; datagrams arriving on a relay socket go to
//!   [`Server::handle_peer_datagram`] with the allocation that owns the socket.
//! * An accepted Allocate yields [`Event::RelayRequested`]: the driver binds a relay
//!   socket and answers with [`Server::handle_relay_bound`] (the core never touches
//!   sockets, so it cannot choose a free port itself).
//! * [`Event::AllocationClosed`] and [`Event::ReservationReleased`] tell the driver to
//!   drop the corresponding sockets; a closed stream connection is reported with
//!   [`Server::handle_connection_closed`].
//!
//! Time is always passed in; the core never reads a clock.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::alloc::{Allocation, BindCheck};
use crate::auth::{AuthError, LongTermKey, NonceIssuer};
use crate::codec::{
    Attribute, AttributeType, CHANNEL_MAX, CHANNEL_MIN, ChannelData, Class, ErrorCode, Family,
    IntegrityKind, Message, MessageBuilder, Method, TransactionId, looks_like_channel_data,
};
use crate::limiter::SourceLimiter;
use crate::policy::PeerRefusal;

mod authn;
mod handlers;
pub(crate) mod types;

pub use types::{
    AllocationId, AuthFailure, CloseReason, Destination, Event, FiveTuple, InputError, PortRequest,
    Quotas, Refusal, RelayRequest, ReservationId, ServerConfig, Stats, Transmit, Transport,
    WallClock,
};

/// RFC 8656 §14.7: UDP is protocol 17.
const TRANSPORT_UDP: u8 = 17;
/// RFC 8656 §7.2: an unclaimed reserved port is released after about 30 s.
const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);
/// Housekeeping interval: expiry of allocations and reservations is acted on with
/// this precision (permissions and channels are also checked exactly at use).
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Attributes we understand in requests; other comprehension-required ones earn 420.
fn known_attribute(typ: u16) -> bool {
    matches!(
        AttributeType(typ),
        AttributeType::USERNAME
            | AttributeType::MESSAGE_INTEGRITY
            | AttributeType::MESSAGE_INTEGRITY_SHA256
            | AttributeType::REALM
            | AttributeType::NONCE
            | AttributeType::CHANNEL_NUMBER
            | AttributeType::LIFETIME
            | AttributeType::XOR_PEER_ADDRESS
            | AttributeType::DATA
            | AttributeType::REQUESTED_ADDRESS_FAMILY
            | AttributeType::EVEN_PORT
            | AttributeType::REQUESTED_TRANSPORT
            | AttributeType::RESERVATION_TOKEN
            | AttributeType::PASSWORD_ALGORITHM
            | AttributeType::PRIORITY
            | AttributeType::USE_CANDIDATE
    )
}

/// An authenticated request's credentials.
struct Authed {
    username: String,
    key: LongTermKey,
    kind: IntegrityKind,
}

/// How to answer a request.
#[derive(Clone, Copy)]
struct ReplyTo {
    now: Instant,
    five_tuple: FiveTuple,
    method: Method,
    tid: TransactionId,
    fingerprint: bool,
}

struct Pending {
    five_tuple: FiveTuple,
    username: String,
    /// Whose quota it counts against (see [`crate::auth::Credentials::account_of`]).
    account: String,
    key: LongTermKey,
    kind: IntegrityKind,
    tid: TransactionId,
    fingerprint: bool,
    family: Family,
    lifetime: Duration,
    /// Reservation to register once bound (EVEN-PORT with R).
    reserve: Option<(ReservationId, [u8; 8])>,
    /// ADDITIONAL-ADDRESS-FAMILY was asked for but we give only one family.
    refused_additional: Option<Family>,
}

struct Reservation {
    id: ReservationId,
    family: Family,
    expires: Instant,
    /// A held port counts against its requester's quota until claimed or released.
    account: String,
}

/// The sans-IO TURN server. See the module docs for the driving contract.
pub struct Server {
    config: ServerConfig,
    nonces: NonceIssuer,
    allocations: HashMap<AllocationId, Allocation>,
    by_five_tuple: HashMap<FiveTuple, AllocationId>,
    /// Live allocations and reservations per account (the user part of a REST
    /// username: one account minting many credentials still has one quota).
    per_user: HashMap<String, u32>,
    pending: HashMap<AllocationId, Pending>,
    reservations: HashMap<[u8; 8], Reservation>,
    limiter: SourceLimiter,
    next_id: u64,
    next_sweep: Option<Instant>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
    /// Set when the process is shutting down: new allocations are refused, live
    /// ones keep relaying (see [`Server::set_draining`]).
    draining: bool,
}

impl Server {
    /// A server with no allocations.
    pub fn new(config: ServerConfig) -> Server {
        let nonces = NonceIssuer::new(config.nonce_key, config.nonce_lifetime_secs);
        let q = config.quotas;
        let limiter = SourceLimiter::new(
            u64::from(q.unauthenticated_per_source_per_sec),
            u64::from(q.unauthenticated_burst),
            q.unauthenticated_sources as usize,
        );
        Server {
            config,
            nonces,
            allocations: HashMap::new(),
            by_five_tuple: HashMap::new(),
            per_user: HashMap::new(),
            pending: HashMap::new(),
            reservations: HashMap::new(),
            limiter,
            next_id: 1,
            next_sweep: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            draining: false,
        }
    }

    // ---- getters ----

    /// Counters since start.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Live allocations.
    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    /// The allocation on a 5-tuple, if any.
    pub fn allocation_for(&self, five_tuple: &FiveTuple) -> Option<AllocationId> {
        self.by_five_tuple.get(five_tuple).copied()
    }

    /// The advertised relay address of an allocation.
    pub fn relayed_address(&self, allocation: AllocationId) -> Option<SocketAddr> {
        self.allocations.get(&allocation).map(|a| a.advertised)
    }

    /// Allocate requests accepted and waiting for the driver's relay socket.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Whether new allocations are being refused (see [`Server::set_draining`]).
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// The configuration in force.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    // ---- mutators ----

    /// Starts (or stops, with `None`) redirecting new allocations elsewhere, e.g. while
    /// draining this node.
    pub fn set_alternate_server(&mut self, alternate: Option<SocketAddr>) {
        self.config.alternate_server = alternate;
    }

    /// Starts (or stops) draining: a new Allocate is answered 508 Insufficient
    /// Capacity (RFC 8656 §7.2: the server cannot provide a relayed address now),
    /// so a client falls back to its next TURN server at once, while every live
    /// allocation keeps being refreshed and relayed. A configured alternate server
    /// still takes precedence (300 Try Alternate).
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
    }

    /// Replaces the addresses that are never valid peers (the server's own). A
    /// driver on a wildcard listener calls this as the host's addresses change.
    pub fn set_own_addresses(&mut self, own: Vec<SocketAddr>) {
        self.config.policy.set_own(own);
    }

    // ---- outputs ----

    /// Next datagram or frame to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event for the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Server::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let sweep = if self.allocations.is_empty() && self.reservations.is_empty() {
            None
        } else {
            self.next_sweep
        };
        [sweep, self.limiter.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// EVEN-PORT reservations currently holding a port.
    pub fn reservation_count(&self) -> usize {
        self.reservations.len()
    }

    /// Sources the unauthenticated-answer limiter remembers (bounded).
    pub fn limited_sources(&self) -> usize {
        self.limiter.len()
    }

    /// Live allocations plus pending ones and held reservations of `account`, as
    /// the per-user quota counts them.
    pub fn account_usage(&self, account: &str) -> u32 {
        let pending = self.pending.values().filter(|p| p.account == account);
        self.per_user.get(account).copied().unwrap_or(0) + pending.count() as u32
    }

    // ---- inputs ----

    /// Expires allocations, permissions, channels and reservations due by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.limiter.handle_timeout(now);
        if self.next_sweep.is_some_and(|t| t > now) {
            return;
        }
        self.next_sweep = Some(now + SWEEP_INTERVAL);
        let expired: Vec<AllocationId> = self
            .allocations
            .values()
            .filter(|a| a.expires <= now)
            .map(|a| a.id)
            .collect();
        for id in expired {
            self.close_allocation(id, CloseReason::Expired);
        }
        for alloc in self.allocations.values_mut() {
            alloc.purge(now);
        }
        let expired: Vec<[u8; 8]> = self
            .reservations
            .iter()
            .filter(|(_, r)| r.expires <= now)
            .map(|(token, _)| *token)
            .collect();
        for token in expired {
            if let Some(r) = self.take_reservation(&token) {
                self.events.push_back(Event::ReservationReleased(r.id));
            }
        }
    }

    /// A datagram (UDP) or one frame (TCP/TLS) from a client.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        five_tuple: FiveTuple,
        data: &[u8],
    ) -> Result<(), InputError> {
        self.arm_sweep(now);
        if looks_like_channel_data(data) {
            let cd = ChannelData::decode(data).inspect_err(|_| self.stats.malformed += 1)?;
            self.relay_channel_data(now, five_tuple, cd);
            return Ok(());
        }
        if data.first().is_none_or(|b| b & 0xC0 != 0) {
            self.stats.malformed += 1;
            return Err(InputError::Unrecognized(data.len()));
        }
        let msg = Message::decode(data).inspect_err(|_| self.stats.malformed += 1)?;
        let reply = ReplyTo {
            now,
            five_tuple,
            method: msg.method,
            tid: msg.transaction_id,
            fingerprint: msg.has_fingerprint(),
        };
        match (msg.class, msg.method) {
            (Class::Request, Method::BINDING) => self.on_binding(&msg, reply),
            (Class::Request, Method::ALLOCATE) => self.on_allocate(now, &msg, reply),
            (Class::Request, Method::REFRESH) => self.on_refresh(now, &msg, reply),
            (Class::Request, Method::CREATE_PERMISSION) => {
                self.on_create_permission(now, &msg, reply)
            }
            (Class::Request, Method::CHANNEL_BIND) => self.on_channel_bind(now, &msg, reply),
            (Class::Indication, Method::SEND) => self.on_send(now, &msg, five_tuple),
            (Class::Request, _) => {
                self.count(Refusal::BadRequest);
                self.reply_error(&reply, ErrorCode::BAD_REQUEST, None, |_| {});
            }
            // Responses and other indications are not for a server; RFC 8489 §6.3 says ignore.
            _ => {}
        }
        Ok(())
    }

    /// A datagram that arrived on `allocation`'s relay socket from `peer`.
    pub fn handle_peer_datagram(
        &mut self,
        now: Instant,
        allocation: AllocationId,
        peer: SocketAddr,
        data: &[u8],
    ) {
        let Some(alloc) = self.allocations.get_mut(&allocation) else {
            return;
        };
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        if alloc.expires <= now {
            return;
        }
        if !alloc.has_permission(peer.ip(), now) {
            self.stats.refusals[Refusal::NoPermission as usize] += 1;
            return;
        }
        if !alloc.to_client.take(data.len() as u64, now) {
            self.stats.refusals[Refusal::Bandwidth as usize] += 1;
            return;
        }
        let ft = alloc.five_tuple;
        let payload = match alloc.channel_for_peer(peer, now) {
            Some(channel) => {
                let mut out = Vec::with_capacity(data.len() + 8);
                ChannelData { channel, data }.encode(ft.transport.is_stream(), &mut out);
                out
            }
            None => {
                let mut b = MessageBuilder::new(
                    Class::Indication,
                    Method::DATA,
                    data_indication_tid(alloc, peer),
                );
                b.add(&Attribute::XorPeerAddress(peer))
                    .add(&Attribute::Data(data));
                b.finish(None, false)
            }
        };
        self.stats.packets_to_client += 1;
        self.stats.bytes_to_client += data.len() as u64;
        self.transmits.push_back(Transmit {
            destination: Destination::Client(ft),
            payload,
        });
    }

    /// The driver's answer to [`Event::RelayRequested`]: the bound local address, or
    /// `None` when no socket could be bound. Returns false when the allocation is no
    /// longer wanted (its connection closed meanwhile): the driver drops the socket.
    pub fn handle_relay_bound(
        &mut self,
        now: Instant,
        allocation: AllocationId,
        bound: Option<SocketAddr>,
    ) -> bool {
        let Some(p) = self.pending.remove(&allocation) else {
            return false;
        };
        let reply = ReplyTo {
            now,
            five_tuple: p.five_tuple,
            method: Method::ALLOCATE,
            tid: p.tid,
            fingerprint: p.fingerprint,
        };
        let auth = Some((&p.key, p.kind));
        let Some(local) = bound else {
            self.count(Refusal::RelayUnavailable);
            if let Some((id, _)) = p.reserve {
                self.events.push_back(Event::ReservationReleased(id));
            }
            self.reply_error(&reply, ErrorCode::INSUFFICIENT_CAPACITY, auth, |_| {});
            return false;
        };
        let family = Family::of(local.ip());
        let advertised = match self
            .config
            .external_ips
            .iter()
            .find(|ip| Family::of(**ip) == family)
        {
            Some(ip) => SocketAddr::new(*ip, local.port()),
            None => local,
        };
        let mut alloc = Allocation::new(
            allocation,
            p.five_tuple,
            p.family,
            advertised,
            p.username.clone(),
            p.account.clone(),
            p.key.clone(),
            p.tid,
            p.lifetime,
            self.config.quotas.bandwidth_bytes_per_sec,
            now,
        );
        if let Some((id, token)) = p.reserve {
            self.reservations.insert(
                token,
                Reservation {
                    id,
                    family: p.family,
                    expires: now + RESERVATION_LIFETIME,
                    account: p.account.clone(),
                },
            );
            *self.per_user.entry(p.account.clone()).or_default() += 1;
            alloc.reservation_token = Some(token);
        }
        *self.per_user.entry(p.account.clone()).or_default() += 1;
        self.by_five_tuple.insert(p.five_tuple, allocation);
        self.stats.allocations_created += 1;
        self.events.push_back(Event::AllocationCreated {
            allocation,
            five_tuple: p.five_tuple,
            relay: local,
            username: p.username.clone(),
        });
        self.send_allocate_success(&reply, &alloc, p.kind, p.refused_additional);
        self.allocations.insert(allocation, alloc);
        self.arm_sweep(now);
        true
    }

    /// A stream connection closed: its allocation goes with it (RFC 8656 §3.1).
    pub fn handle_connection_closed(&mut self, _now: Instant, five_tuple: FiveTuple) {
        self.pending.retain(|_, p| p.five_tuple != five_tuple);
        if let Some(id) = self.by_five_tuple.get(&five_tuple).copied() {
            self.close_allocation(id, CloseReason::ConnectionClosed);
        }
    }

    // ---- helpers ----

    fn send_allocate_success(
        &mut self,
        reply: &ReplyTo,
        alloc: &Allocation,
        kind: IntegrityKind,
        refused_additional: Option<Family>,
    ) {
        let relayed = alloc.advertised;
        let lifetime = alloc.lifetime.as_secs() as u32;
        let client = reply.five_tuple.client;
        let token = alloc.reservation_token;
        self.reply(reply, Class::Success, Some((&alloc.key, kind)), |b| {
            b.add(&Attribute::XorRelayedAddress(relayed))
                .add(&Attribute::Lifetime(lifetime))
                .add(&Attribute::XorMappedAddress(client));
            if let Some(t) = token {
                b.add(&Attribute::ReservationToken(t));
            }
            if let Some(family) = refused_additional {
                b.add(&Attribute::AddressErrorCode(
                    family,
                    ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED,
                ));
            }
        });
    }

    fn close_allocation(&mut self, id: AllocationId, reason: CloseReason) {
        let Some(alloc) = self.allocations.remove(&id) else {
            return;
        };
        self.by_five_tuple.remove(&alloc.five_tuple);
        self.release_quota(&alloc.account);
        self.stats.allocations_closed += 1;
        self.events.push_back(Event::AllocationClosed {
            allocation: id,
            five_tuple: alloc.five_tuple,
            reason,
        });
    }

    /// Removes a reservation and gives its port back to its account's quota.
    fn take_reservation(&mut self, token: &[u8; 8]) -> Option<Reservation> {
        let r = self.reservations.remove(token)?;
        self.release_quota(&r.account);
        Some(r)
    }

    fn release_quota(&mut self, account: &str) {
        if let Some(count) = self.per_user.get_mut(account) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_user.remove(account);
            }
        }
    }

    /// RFC 8656 §7.2: max(default, min(requested, max)).
    fn lifetime(&self, requested: Option<u32>) -> Duration {
        let max = self.config.max_lifetime_secs;
        let default = self.config.default_lifetime_secs.min(max);
        let secs = requested.map_or(default, |r| r.min(max).max(default));
        Duration::from_secs(u64::from(secs))
    }

    fn family_available(&self, family: Family) -> bool {
        match family {
            Family::V4 => self.config.relay_ipv4,
            Family::V6 => self.config.relay_ipv6,
        }
    }

    /// An unguessable 8-byte token derived from the nonce key and the allocation id.
    fn reservation_token(&self, id: AllocationId) -> [u8; 8] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.config.nonce_key)
            .expect("HMAC takes any key length");
        mac.update(b"reservation");
        mac.update(&id.0.to_be_bytes());
        let full = mac.finalize().into_bytes();
        let mut token = [0u8; 8];
        token.copy_from_slice(&full[..8]);
        token
    }

    fn unix_secs(&self, now: Instant) -> u64 {
        self.config.clock.unix_secs
            + now
                .saturating_duration_since(self.config.clock.at)
                .as_secs()
    }

    fn arm_sweep(&mut self, now: Instant) {
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + SWEEP_INTERVAL);
        }
    }

    fn count(&mut self, refusal: Refusal) {
        self.stats.refusals[refusal as usize] += 1;
    }

    fn fail(&mut self, failure: AuthFailure) {
        self.stats.auth_failures[failure as usize] += 1;
    }

    fn reply(
        &mut self,
        to: &ReplyTo,
        class: Class,
        auth: Option<(&LongTermKey, IntegrityKind)>,
        build: impl FnOnce(&mut MessageBuilder),
    ) {
        // Answers to unauthenticated requests (Binding, challenges, 400/420) are
        // larger than the requests, and on UDP the source is unproven: limit them
        // per source so the server cannot be used to reflect traffic. Integrity-
        // protected answers need a nonce bound to the source, so they are exempt.
        if auth.is_none() && !self.limiter.allow(to.now, to.five_tuple.client.ip()) {
            self.count(Refusal::RateLimited);
            return;
        }
        let mut b = MessageBuilder::new(class, to.method, to.tid);
        build(&mut b);
        let payload = b.finish(auth.map(|(k, kind)| (kind, &k.0[..])), to.fingerprint);
        self.transmits.push_back(Transmit {
            destination: Destination::Client(to.five_tuple),
            payload,
        });
    }

    fn reply_error(
        &mut self,
        to: &ReplyTo,
        code: ErrorCode<'static>,
        auth: Option<(&LongTermKey, IntegrityKind)>,
        build: impl FnOnce(&mut MessageBuilder),
    ) {
        self.reply(to, Class::Error, auth, |b| {
            b.add(&Attribute::ErrorCode(code));
            build(b);
        });
    }
}

/// RFC 8656 §9.1 and §11: a peer's address family must be the allocation's. An
/// IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is IPv6 on the wire but IPv4 in
/// truth, so it matches neither family: answered 443 rather than canonicalised,
/// which would let a client reach IPv4 peers through a checked-as-IPv6 path.
fn family_matches(peer: SocketAddr, family: Family) -> bool {
    match peer.ip() {
        IpAddr::V4(_) => family == Family::V4,
        IpAddr::V6(v6) => family == Family::V6 && v6.to_ipv4_mapped().is_none(),
    }
}

/// A Data indication's transaction id only has to be unique-ish (RFC 8656 §11.3);
/// a cheap mix of the allocation id and peer avoids needing a random source.
fn data_indication_tid(alloc: &Allocation, peer: SocketAddr) -> TransactionId {
    let mut tid = [0u8; 12];
    tid[..8].copy_from_slice(&alloc.id.0.to_be_bytes());
    tid[8..10].copy_from_slice(&peer.port().to_be_bytes());
    tid[10] = 0x44;
    tid[11] = 0x49;
    TransactionId(tid)
}

struct AllocateParams {
    family: Family,
    port: PortChoice,
    lifetime: Option<u32>,
    additional: Option<Family>,
}

enum PortChoice {
    Any,
    Even { reserve: bool },
    Token([u8; 8]),
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "server_attack_tests.rs"]
mod attack_tests;

#[cfg(test)]
#[path = "server_drain_tests.rs"]
mod drain_tests;
