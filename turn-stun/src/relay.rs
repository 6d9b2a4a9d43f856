//! Relay sockets: one UDP socket per allocation, bound on the relay IP from the
//! configured port range (the core decides *that* a relay is needed, this decides
//! *which* port, because only the kernel knows which ports are free).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};

use natter_turn_core::codec::Family;
use natter_turn_core::{PortRequest, ReservationId};

use crate::config::PortRange;

/// Receive buffer asked for on relay sockets; the kernel caps it at `rmem_max`.
const RELAY_RECV_BUFFER: usize = 1 << 20;

pub(crate) struct RelayBinder {
    v4: Option<IpAddr>,
    v6: Option<IpAddr>,
    range: PortRange,
    rng: u64,
    /// Sockets held for EVEN-PORT reservations until claimed or released.
    reserved: HashMap<ReservationId, UdpSocket>,
}

impl RelayBinder {
    /// Relay IPs per family (either may be absent) and the port range.
    pub(crate) fn new(
        v4: Option<IpAddr>,
        v6: Option<IpAddr>,
        range: PortRange,
        seed: u64,
    ) -> RelayBinder {
        RelayBinder {
            v4,
            v6,
            range,
            rng: seed | 1,
            reserved: HashMap::new(),
        }
    }

    /// Binds a relay socket for `request`; `None` when no port is free.
    pub(crate) fn bind(&mut self, family: Family, request: PortRequest) -> Option<UdpSocket> {
        let ip = match family {
            Family::V4 => self.v4?,
            Family::V6 => self.v6?,
        };
        match request {
            PortRequest::Reserved(id) => self.reserved.remove(&id),
            PortRequest::Any => self.scan(ip, false, None),
            PortRequest::Even { reserve_next } => self.scan(ip, true, reserve_next),
        }
    }

    pub(crate) fn release(&mut self, id: ReservationId) {
        self.reserved.remove(&id);
    }

    /// Tries every port of the range once, starting at a random offset so that
    /// relay addresses are not predictable from one allocation to the next.
    fn scan(
        &mut self,
        ip: IpAddr,
        even: bool,
        reserve: Option<ReservationId>,
    ) -> Option<UdpSocket> {
        let len = self.range.len();
        if len == 0 {
            return None;
        }
        let offset = (self.next_random() % u64::from(len)) as u32;
        for i in 0..len {
            let port = (u32::from(self.range.start) + (offset + i) % len) as u16;
            if even && !port.is_multiple_of(2) {
                continue;
            }
            let Some(socket) = bind_udp(SocketAddr::new(ip, port)) else {
                continue;
            };
            if let Some(id) = reserve {
                // EVEN-PORT with R: the next port must be bound too, or this pair is no good.
                let next = port.checked_add(1).filter(|&p| p <= self.range.end)?;
                match bind_udp(SocketAddr::new(ip, next)) {
                    Some(pair) => {
                        self.reserved.insert(id, pair);
                    }
                    None => continue,
                }
            }
            return Some(socket);
        }
        None
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64: only spreads ports; unpredictability comes from the random seed.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

pub(crate) fn bind_udp(addr: SocketAddr) -> Option<UdpSocket> {
    let socket = UdpSocket::bind(addr).ok()?;
    socket.set_nonblocking(true).ok()?;
    // Best effort: a larger buffer absorbs bursts from peers; the kernel may cap it.
    let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(RELAY_RECV_BUFFER);
    Some(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_within_range_even_ports_and_reservations() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        // Find a free block of ports for the test.
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let base = probe
            .local_addr()
            .unwrap()
            .port()
            .saturating_sub(2000)
            .max(20000)
            & !1;
        drop(probe);
        let range = PortRange {
            start: base,
            end: base + 63,
        };
        let mut binder = RelayBinder::new(Some(ip), None, range, 42);
        let s = binder
            .bind(Family::V4, PortRequest::Any)
            .expect("a free port");
        let port = s.local_addr().unwrap().port();
        assert!((range.start..=range.end).contains(&port));
        let rid = ReservationId(7);
        let even = binder
            .bind(
                Family::V4,
                PortRequest::Even {
                    reserve_next: Some(rid),
                },
            )
            .expect("an even pair");
        let even_port = even.local_addr().unwrap().port();
        assert_eq!(even_port % 2, 0);
        let next = binder
            .bind(Family::V4, PortRequest::Reserved(rid))
            .expect("the reserved port");
        assert_eq!(next.local_addr().unwrap().port(), even_port + 1);
        assert!(
            binder
                .bind(Family::V4, PortRequest::Reserved(rid))
                .is_none(),
            "claimed once"
        );
        assert!(binder.bind(Family::V6, PortRequest::Any).is_none());
    }

    #[test]
    fn exhausted_range_gives_none() {
        let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let mut binder = RelayBinder::new(
            Some("127.0.0.1".parse().unwrap()),
            None,
            PortRange {
                start: port,
                end: port,
            },
            1,
        );
        assert!(binder.bind(Family::V4, PortRequest::Any).is_none());
    }
}
