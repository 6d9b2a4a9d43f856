//! The core task: owns the sans-IO [`Server`], the UDP listener and the relay
//! sockets, and follows the core's contract — apply one input, drain events and
//! transmits, sleep until the next input or `poll_timeout`. Work per wake-up is
//! bounded by [`BATCH`] so one busy source cannot starve the others.
//!
//! Relay sockets are read by this task too, through one readiness future per
//! socket in a `FuturesUnordered`: no task, channel or copy per relayed packet, and
//! under overload packets wait (or drop) in the kernel's socket buffers instead of
//! queueing in user space, which keeps latency bounded.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use natter_common::Shutdown;
use natter_turn_core::{AllocationId, Destination, Event, FiveTuple, Server, Transport};
use tokio::net::UdpSocket;

use crate::udp::ClientSocket;
use tokio::sync::mpsc;
use tracing::{Span, debug, info, info_span, trace, warn};

use crate::metrics::Published;
use crate::relay::RelayBinder;
use crate::stream::{ConnHandle, Inbound};

/// Inputs handled per wake-up before outputs are flushed and other sources polled.
pub(crate) const BATCH: usize = 256;
/// Datagrams read from one relay socket per readiness event.
const RELAY_BATCH: usize = 64;

/// Resolves with the allocation id when its relay socket is readable, or `None`
/// once the relay is cancelled.
type RelayReady = Pin<Box<dyn Future<Output = Option<AllocationId>> + Send>>;
/// How often a wildcard listener re-reads the host's addresses (they are never
/// valid peers; interfaces come and go).
const OWN_ADDRESS_REFRESH: Duration = Duration::from_secs(30);
/// A stream connection that has not allocated within this is closed.
const CONNECTION_ALLOCATE_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest datagram we receive (and so relay).
const MAX_DATAGRAM: usize = 65_536;

/// What a wildcard listener needs to recompute its own addresses.
pub(crate) struct OwnAddresses {
    /// Listening addresses (some wildcard).
    pub(crate) listeners: Vec<SocketAddr>,
    /// Configured and loopback IPs, to which the host's current IPs are added.
    pub(crate) fixed_ips: Vec<std::net::IpAddr>,
}

struct Relay {
    socket: Arc<UdpSocket>,
    cancel: Shutdown,
    span: Span,
}

pub(crate) struct Driver {
    pub(crate) core: Server,
    pub(crate) udp: Arc<ClientSocket>,
    pub(crate) binder: RelayBinder,
    own_refresh: Option<(OwnAddresses, Instant)>,
    relays: HashMap<AllocationId, Relay>,
    /// Relay sockets bound for allocations the core has not confirmed yet.
    unclaimed: HashMap<AllocationId, std::net::UdpSocket>,
    relay_ready: FuturesUnordered<RelayReady>,
    conns: HashMap<FiveTuple, ConnHandle>,
    shutdown: Shutdown,
    drain: Drain,
    published: Published,
}

/// How the server stops on request (see [`Driver::run`]).
pub(crate) struct Drain {
    /// Cancelled when the process is asked to stop (SIGTERM).
    pub(crate) requested: Shutdown,
    /// How long live allocations may keep relaying after that.
    pub(crate) grace: Duration,
    /// Cancelled when draining starts: the TCP and TLS accept loops stop.
    pub(crate) accepting: Shutdown,
}

impl Driver {
    pub(crate) fn new(
        core: Server,
        udp: Arc<ClientSocket>,
        binder: RelayBinder,
        own_refresh: Option<OwnAddresses>,
        shutdown: Shutdown,
        drain: Drain,
    ) -> Driver {
        Driver {
            core,
            udp,
            binder,
            own_refresh: own_refresh.map(|o| (o, Instant::now() + OWN_ADDRESS_REFRESH)),
            relays: HashMap::new(),
            unclaimed: HashMap::new(),
            relay_ready: FuturesUnordered::new(),
            conns: HashMap::new(),
            shutdown,
            drain,
            published: Published::default(),
        }
    }

    /// Runs until `shutdown` is cancelled, or, once a drain is requested, until the
    /// last allocation ends or the grace period is over, whichever comes first.
    /// While draining, new allocations are refused and new TCP/TLS connections
    /// are no longer accepted; live allocations relay, refresh and bind as before.
    pub(crate) async fn run(mut self, mut inbox: mpsc::Receiver<Inbound>) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut cmsg = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // One timer, re-armed only when the core's deadline changes.
        let timer = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        // Registered once: a fresh `cancelled()` future per iteration would take the
        // token's lock twice per wake-up.
        let shutdown = self.shutdown.clone();
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        let drain_signal = self.drain.requested.clone();
        let drain_requested = drain_signal.cancelled();
        tokio::pin!(drain_requested);
        let drain_deadline = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(drain_deadline);
        let mut draining = false;
        let udp = self.udp.clone();
        loop {
            let deadline = self.core.poll_timeout();
            if deadline != armed {
                armed = deadline;
                if let Some(d) = deadline {
                    timer.as_mut().reset(tokio::time::Instant::from_std(d));
                }
            }
            tokio::select! {
                biased;
                _ = &mut cancelled => break,
                _ = &mut drain_requested, if !draining => {
                    draining = true;
                    if self.drain.grace.is_zero() {
                        break;
                    }
                    self.start_drain();
                    drain_deadline
                        .as_mut()
                        .reset(tokio::time::Instant::now() + self.drain.grace);
                }
                _ = &mut drain_deadline, if draining => {
                    warn!(
                        allocations = self.core.allocation_count(),
                        grace_secs = self.drain.grace.as_secs(),
                        "TURN drain grace period over; closing the allocations still live"
                    );
                    break;
                }
                r = udp.readable() => {
                    if r.is_ok() {
                        for _ in 0..BATCH {
                            match udp.try_recv(&mut buf, &mut cmsg) {
                                Ok(got) => self.client_datagram(got.from, got.to, &buf[..got.len]),
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                                // ICMP errors surface here (ECONNREFUSED from an
                                // earlier send): not fatal, read on.
                                Err(_) => {}
                            }
                        }
                    }
                }
                Some(ready) = self.relay_ready.next(), if !self.relay_ready.is_empty() => {
                    if let Some(id) = ready {
                        self.drain_relay(id, &mut buf);
                    }
                }
                Some(msg) = inbox.recv() => {
                    self.inbound(msg);
                    for _ in 1..BATCH {
                        match inbox.try_recv() {
                            Ok(msg) => self.inbound(msg),
                            Err(_) => break,
                        }
                    }
                }
                _ = &mut timer, if armed.is_some() => {
                    armed = None;
                    self.core.handle_timeout(Instant::now());
                }
                _ = tick.tick() => self.housekeeping(),
            }
            self.flush().await;
            if draining && self.core.allocation_count() == 0 && self.core.pending_count() == 0 {
                info!("TURN drained: the last allocation has ended");
                break;
            }
        }
        for relay in self.relays.values() {
            relay.cancel.cancel();
        }
        for conn in self.conns.values() {
            conn.close.cancel();
        }
        self.housekeeping();
        info!(
            allocations = self.core.allocation_count(),
            "TURN server stopped"
        );
    }

    fn start_drain(&mut self) {
        self.core.set_draining(true);
        self.drain.accepting.cancel();
        metrics::gauge!("natter_turn_draining").set(1.0);
        info!(
            allocations = self.core.allocation_count(),
            grace_secs = self.drain.grace.as_secs(),
            "TURN draining: new allocations are refused (508), live ones keep relaying"
        );
    }

    /// Reads up to [`RELAY_BATCH`] datagrams from an allocation's relay socket into
    /// the core, then waits for the socket again.
    fn drain_relay(&mut self, id: AllocationId, buf: &mut [u8]) {
        let Some(relay) = self.relays.get(&id) else {
            return;
        };
        let socket = relay.socket.clone();
        let now = Instant::now();
        for _ in 0..RELAY_BATCH {
            match socket.try_recv_from(buf) {
                Ok((n, from)) => self.core.handle_peer_datagram(now, id, from, &buf[..n]),
                Err(_) => break,
            }
        }
        let cancel = self.relays[&id].cancel.clone();
        self.relay_ready.push(wait_readable(id, socket, cancel));
    }

    fn client_datagram(&mut self, from: SocketAddr, to: SocketAddr, data: &[u8]) {
        let ft = FiveTuple {
            transport: Transport::Udp,
            client: from,
            server: to,
        };
        if let Err(e) = self.core.handle_datagram(Instant::now(), ft, data) {
            trace!(client = %from, error = %e, "dropped datagram");
        }
    }

    fn inbound(&mut self, msg: Inbound) {
        let now = Instant::now();
        match msg {
            Inbound::Client { ft, data } => {
                if let Err(e) = self.core.handle_datagram(now, ft, &data) {
                    trace!(client = %ft.client, error = %e, "dropped frame");
                }
            }
            Inbound::Opened { ft, conn } => {
                self.conns.insert(ft, conn);
            }
            Inbound::Closed { ft } => {
                self.conns.remove(&ft);
                self.core.handle_connection_closed(now, ft);
            }
        }
    }

    /// Acts on events, then sends transmits, until the core has nothing more.
    async fn flush(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(event) = self.core.poll_event() {
                progressed = true;
                self.event(event);
            }
            while let Some(t) = self.core.poll_transmit() {
                progressed = true;
                self.transmit(t.destination, t.payload).await;
            }
            if !progressed {
                return;
            }
        }
    }

    fn event(&mut self, event: Event) {
        let now = Instant::now();
        match event {
            Event::RelayRequested(req) => {
                let socket = self.binder.bind(req.family, req.port);
                let bound = socket.as_ref().and_then(|s| s.local_addr().ok());
                if bound.is_none() {
                    debug!(allocation = req.allocation.0, "no relay port available");
                }
                if self.core.handle_relay_bound(now, req.allocation, bound)
                    && let Some(socket) = socket
                {
                    self.unclaimed.insert(req.allocation, socket);
                }
            }
            Event::AllocationCreated {
                allocation,
                five_tuple,
                relay,
                username,
            } => {
                let span = info_span!(
                    "turn_allocation",
                    id = allocation.0,
                    user = %username,
                    client = %five_tuple.client,
                    transport = five_tuple.transport.as_str(),
                );
                let Some(std_socket) = self.unclaimed.remove(&allocation) else {
                    return;
                };
                let socket = match UdpSocket::from_std(std_socket) {
                    Ok(s) => Arc::new(s),
                    Err(e) => {
                        span.in_scope(
                            || tracing::warn!(error = %e, "cannot register relay socket"),
                        );
                        return;
                    }
                };
                span.in_scope(|| info!(relay = %relay, "allocation created"));
                let cancel = self.shutdown.child_token();
                self.relay_ready
                    .push(wait_readable(allocation, socket.clone(), cancel.clone()));
                self.relays.insert(
                    allocation,
                    Relay {
                        socket,
                        cancel,
                        span,
                    },
                );
            }
            Event::AllocationClosed {
                allocation,
                five_tuple,
                reason,
            } => {
                if let Some(relay) = self.relays.remove(&allocation) {
                    relay.cancel.cancel();
                    relay.span.in_scope(|| info!(?reason, "allocation closed"));
                }
                self.unclaimed.remove(&allocation);
                // RFC 8656 §3.1: a stream allocation and its connection end together.
                if five_tuple.transport.is_stream()
                    && let Some(conn) = self.conns.get(&five_tuple)
                {
                    conn.close.cancel();
                }
            }
            Event::ReservationReleased(id) => self.binder.release(id),
        }
    }

    async fn transmit(&mut self, destination: Destination, payload: Vec<u8>) {
        match destination {
            Destination::Client(ft) if ft.transport == Transport::Udp => {
                // The reply leaves from the address the client sent to.
                match self.udp.try_send(&payload, ft.client, ft.server) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if self.udp.send(&payload, ft.client, ft.server).await.is_err() {
                            count_send_error();
                        }
                    }
                    Err(_) => count_send_error(),
                }
            }
            Destination::Client(ft) => {
                if let Some(conn) = self.conns.get(&ft)
                    && conn.tx.try_send(payload).is_err()
                {
                    metrics::counter!("natter_turn_dropped_total", "reason" => "stream_backlog")
                        .increment(1);
                }
            }
            Destination::Peer { allocation, peer } => {
                if let Some(relay) = self.relays.get(&allocation) {
                    send_udp(&relay.socket, &payload, peer).await;
                }
            }
        }
    }

    fn housekeeping(&mut self) {
        // Stream connections that never allocate are closed, so idle sockets cannot
        // pile up against the connection limit.
        let now = Instant::now();
        if let Some((own, due)) = &mut self.own_refresh
            && *due <= now
        {
            *due = now + OWN_ADDRESS_REFRESH;
            let mut ips = own.fixed_ips.clone();
            ips.extend(crate::addrs::host_ips());
            self.core
                .set_own_addresses(crate::addrs::own_addresses(&own.listeners, &ips));
        }
        // While draining, one that has none will never get one.
        let draining = self.core.is_draining();
        for (ft, conn) in &self.conns {
            if (draining || now.duration_since(conn.opened) > CONNECTION_ALLOCATE_TIMEOUT)
                && self.core.allocation_for(ft).is_none()
            {
                conn.close.cancel();
            }
        }
        self.published.publish(
            self.core.stats(),
            self.core.allocation_count(),
            self.conns.len(),
            draining,
        );
    }
}

async fn send_udp(socket: &UdpSocket, payload: &[u8], to: SocketAddr) {
    match socket.try_send_to(payload, to) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            if socket.send_to(payload, to).await.is_err() {
                count_send_error();
            }
        }
        Err(_) => count_send_error(),
    }
}

fn count_send_error() {
    metrics::counter!("natter_turn_dropped_total", "reason" => "send_error").increment(1);
}

fn wait_readable(id: AllocationId, socket: Arc<UdpSocket>, cancel: Shutdown) -> RelayReady {
    Box::pin(async move {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => None,
            r = socket.readable() => r.ok().map(|()| id),
        }
    })
}
