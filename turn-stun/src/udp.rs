//! The client-facing UDP socket, which answers from the address each request
//! arrived on.
//!
//! Why: on a wildcard listener (`0.0.0.0`, `[::]`) one socket serves every local
//! address, and a plain `sendto` lets the kernel pick the reply's source. On a
//! host with several addresses a request sent to one is then answered from
//! another; clients (Chromium among them) drop such replies and report the TURN
//! server as not answering. So on a wildcard socket we ask for the destination of
//! each datagram (`IP_PKTINFO` / `IPV6_RECVPKTINFO`) and send the reply with that
//! address as its source (the same control messages on `sendmsg`), as coturn
//! does with one socket per address. A socket bound to one address needs none of
//! this and keeps the cheaper `recvfrom`/`sendto`.
//!
//! Addresses leave this module canonical: an IPv4 client of a dual-stack `[::]`
//! socket is `a.b.c.d`, not `::ffff:a.b.c.d`, so XOR-MAPPED-ADDRESS carries the
//! IPv4 family the client expects.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;

use nix::libc;
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn, SockaddrIn6, SockaddrStorage,
    recvmsg, sendmsg, setsockopt, sockopt,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// One received datagram's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Received {
    /// Bytes written into the buffer.
    pub(crate) len: usize,
    /// The sender, canonical.
    pub(crate) from: SocketAddr,
    /// The local address it was sent to, canonical (the listener's port).
    pub(crate) to: SocketAddr,
}

/// The listening UDP socket.
pub(crate) struct ClientSocket {
    socket: UdpSocket,
    local: SocketAddr,
    /// Destination addresses are read and replies sourced from them.
    pktinfo: bool,
}

impl ClientSocket {
    /// Wraps a bound socket; on a wildcard address, turns on destination
    /// reporting (failing loudly: without it replies may come from the wrong
    /// address).
    pub(crate) fn new(socket: UdpSocket) -> io::Result<ClientSocket> {
        let local = socket.local_addr()?;
        let pktinfo = local.ip().is_unspecified();
        if pktinfo {
            match local {
                SocketAddr::V4(_) => setsockopt(&socket, sockopt::Ipv4PacketInfo, &true)?,
                SocketAddr::V6(_) => setsockopt(&socket, sockopt::Ipv6RecvPacketInfo, &true)?,
            }
        }
        Ok(ClientSocket {
            socket,
            local,
            pktinfo,
        })
    }

    /// The bound address (possibly a wildcard).
    #[cfg(test)]
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Waits until a datagram can be read.
    pub(crate) async fn readable(&self) -> io::Result<()> {
        self.socket.readable().await
    }

    /// Reads one datagram without waiting (`WouldBlock` when there is none).
    pub(crate) fn try_recv(&self, buf: &mut [u8], cmsg: &mut Vec<u8>) -> io::Result<Received> {
        if !self.pktinfo {
            let (len, from) = self.socket.try_recv_from(buf)?;
            return Ok(Received {
                len,
                from: canonical(from),
                to: canonical(self.local),
            });
        }
        if cmsg.is_empty() {
            *cmsg = nix::cmsg_space!(libc::in6_pktinfo, libc::in_pktinfo);
        }
        self.socket.try_io(Interest::READABLE, || {
            let fd = self.socket.as_raw_fd();
            let mut iov = [IoSliceMut::new(buf)];
            let msg = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(cmsg), MsgFlags::empty())?;
            let from = msg
                .address
                .and_then(|a| socket_addr(&a))
                .ok_or_else(|| io::Error::other("datagram without a source address"))?;
            let mut to_ip = None;
            for c in msg.cmsgs()? {
                match c {
                    ControlMessageOwned::Ipv4PacketInfo(info) => {
                        to_ip = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                            info.ipi_addr.s_addr,
                        ))));
                    }
                    ControlMessageOwned::Ipv6PacketInfo(info) => {
                        to_ip = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
            let to_ip = to_ip.unwrap_or(self.local.ip());
            Ok(Received {
                len: msg.bytes,
                from: canonical(from),
                to: canonical(SocketAddr::new(to_ip, self.local.port())),
            })
        })
    }

    /// Sends `payload` to `to` from local address `from` (ignored on a socket
    /// bound to one address), waiting for buffer space if the socket is full.
    pub(crate) async fn send(
        &self,
        payload: &[u8],
        to: SocketAddr,
        from: SocketAddr,
    ) -> io::Result<()> {
        let to = self.for_family(to);
        if !self.pktinfo {
            return self.socket.send_to(payload, to).await.map(drop);
        }
        match self.try_send_pktinfo(payload, to, from) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.socket
                    .async_io(Interest::WRITABLE, || self.sendmsg(payload, to, from))
                    .await
            }
            other => other,
        }
    }

    /// Sends without waiting (`WouldBlock` when the socket buffer is full).
    pub(crate) fn try_send(
        &self,
        payload: &[u8],
        to: SocketAddr,
        from: SocketAddr,
    ) -> io::Result<()> {
        let to = self.for_family(to);
        if !self.pktinfo {
            return self.socket.try_send_to(payload, to).map(drop);
        }
        self.try_send_pktinfo(payload, to, from)
    }

    fn try_send_pktinfo(&self, payload: &[u8], to: SocketAddr, from: SocketAddr) -> io::Result<()> {
        self.socket
            .try_io(Interest::WRITABLE, || self.sendmsg(payload, to, from))
    }

    fn sendmsg(&self, payload: &[u8], to: SocketAddr, from: SocketAddr) -> io::Result<()> {
        let fd = self.socket.as_raw_fd();
        match (self.local, from.ip()) {
            (_, ip) if ip.is_unspecified() => nix_send_to(fd, payload, to, &[]),
            (SocketAddr::V4(_), IpAddr::V4(src)) => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(src).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                nix_send_to(fd, payload, to, &[ControlMessage::Ipv4PacketInfo(&info)])
            }
            (SocketAddr::V6(_), src) => {
                let src = match src {
                    IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                    IpAddr::V6(v6) => v6,
                };
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: src.octets(),
                    },
                    ipi6_ifindex: 0,
                };
                nix_send_to(fd, payload, to, &[ControlMessage::Ipv6PacketInfo(&info)])
            }
            // An IPv6 source on an IPv4 socket cannot happen (we only reply from
            // the address a request arrived at); let the kernel choose.
            (SocketAddr::V4(_), IpAddr::V6(_)) => nix_send_to(fd, payload, to, &[]),
        }
    }

    /// An IPv4 destination on an IPv6 socket is written IPv4-mapped.
    fn for_family(&self, to: SocketAddr) -> SocketAddr {
        match (self.local, to) {
            (SocketAddr::V6(_), SocketAddr::V4(v4)) => {
                SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
            }
            _ => to,
        }
    }
}

fn nix_send_to(
    fd: std::os::fd::RawFd,
    payload: &[u8],
    to: SocketAddr,
    cmsgs: &[ControlMessage<'_>],
) -> io::Result<()> {
    let iov = [IoSlice::new(payload)];
    match to {
        SocketAddr::V4(v4) => {
            sendmsg(
                fd,
                &iov,
                cmsgs,
                MsgFlags::empty(),
                Some(&SockaddrIn::from(v4)),
            )?;
        }
        SocketAddr::V6(v6) => {
            sendmsg(
                fd,
                &iov,
                cmsgs,
                MsgFlags::empty(),
                Some(&SockaddrIn6::from(v6)),
            )?;
        }
    }
    Ok(())
}

fn socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// `::ffff:a.b.c.d` becomes `a.b.c.d`; everything else is unchanged.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn server(bind: &str) -> ClientSocket {
        ClientSocket::new(UdpSocket::bind(bind).await.unwrap()).unwrap()
    }

    async fn echo_once(server: &ClientSocket) -> Received {
        let mut buf = [0u8; 64];
        let mut cmsg = Vec::new();
        loop {
            server.readable().await.unwrap();
            match server.try_recv(&mut buf, &mut cmsg) {
                Ok(r) => {
                    server.send(&buf[..r.len], r.from, r.to).await.unwrap();
                    return r;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// The bug: on `0.0.0.0` a request to 127.0.0.2 was answered from 127.0.0.1
    /// (the kernel's choice), which a connected client never sees.
    #[tokio::test]
    async fn a_wildcard_socket_answers_from_the_address_it_was_asked_on() {
        let server = server("0.0.0.0:0").await;
        let port = server.local_addr().port();
        for target in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
            let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            client
                .set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            let dest: SocketAddr = format!("{target}:{port}").parse().unwrap();
            client.send_to(b"ping", dest).unwrap();
            let got = echo_once(&server).await;
            assert_eq!(got.to, dest, "the destination is reported");
            assert_eq!(got.from, client.local_addr().unwrap());
            let mut buf = [0u8; 16];
            let (n, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], from), (&b"ping"[..], dest), "reply source");
        }
    }

    /// On a dual-stack `[::]` socket an IPv4 client is reported as IPv4 (so
    /// XOR-MAPPED-ADDRESS has the IPv4 family) and answered from the IPv4
    /// address it used.
    #[tokio::test]
    async fn a_dual_stack_socket_reports_ipv4_clients_canonically() {
        let Ok(socket) = UdpSocket::bind("[::]:0").await else {
            panic!("this host has no IPv6 stack; the dual-stack path cannot be tested");
        };
        let server = ClientSocket::new(socket).unwrap();
        let port = server.local_addr().port();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let dest: SocketAddr = format!("127.0.0.2:{port}").parse().unwrap();
        client.send_to(b"v4", dest).unwrap();
        let got = echo_once(&server).await;
        assert_eq!(got.from, client.local_addr().unwrap());
        assert_eq!(got.to, dest);
        let mut buf = [0u8; 16];
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"v4"[..], dest));

        let v6 = std::net::UdpSocket::bind("[::1]:0").unwrap();
        v6.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let dest6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
        v6.send_to(b"v6", dest6).unwrap();
        let got = echo_once(&server).await;
        assert_eq!(got.to, dest6);
        let (n, from) = v6.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"v6"[..], dest6));
    }

    #[tokio::test]
    async fn a_socket_on_one_address_uses_plain_calls() {
        let server = server("127.0.0.1:0").await;
        assert!(!server.pktinfo);
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.send_to(b"x", server.local_addr()).unwrap();
        let got = echo_once(&server).await;
        assert_eq!(got.to, server.local_addr());
    }
}
