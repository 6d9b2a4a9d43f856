//! External address discovery (`turn.external_ip_stun_server`): behind 1:1 NAT
//! (a cloud VM or Kubernetes node with a public IP mapped onto a private one) the
//! relay IP is not what peers must send to. One STUN Binding (RFC 8489 §6) from
//! the relay IP to a server outside the NAT returns the address the server saw;
//! its IP is advertised in XOR-RELAYED-ADDRESS. The port is the NAT's choice for
//! that one socket and is not used: 1:1 NAT keeps ports, a port-translating NAT
//! cannot host a TURN relay at all.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use natter_turn_core::codec::{Attribute, AttributeType, Class, Message, MessageBuilder, Method};
use natter_turn_core::codec::{ErrorCode, TransactionId};
use tokio::net::UdpSocket;

/// Port of a STUN server given without one (RFC 8489 §18.4).
const STUN_PORT: u16 = 3478;
/// First retransmission timeout (RFC 8489 §6.2.1: RTO 500 ms, doubled each time).
const FIRST_RTO: Duration = Duration::from_millis(500);

/// `host:port`, `[v6]:port`, a bare host or a bare IPv6 address (port 3478).
pub(crate) fn split_host_port(s: &str) -> Result<(String, u16), String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty".to_owned());
    }
    if s.parse::<Ipv6Addr>().is_ok() {
        return Ok((s.to_owned(), STUN_PORT));
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{s:?}: unclosed ["))?;
        (host, after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{s:?}: no host"));
    }
    let port = match port {
        None => STUN_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{s:?}: {p:?} is not a port number"))?,
    };
    Ok((host.to_owned(), port))
}

/// A Binding request with FINGERPRINT (so a server multiplexing protocols can
/// tell it is STUN).
pub(crate) fn binding_request(tid: TransactionId) -> Vec<u8> {
    MessageBuilder::new(Class::Request, Method::BINDING, tid).finish(None, true)
}

/// What a datagram on the discovery socket says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// A success response to our request: the address the server saw.
    Mapped(SocketAddr),
    /// An error response to our request, or a success without an address.
    Failed(String),
    /// Not an answer to our request (stray or forged): keep waiting.
    NotOurs,
}

/// Reads a datagram received in answer to the request with `tid`.
pub(crate) fn read_reply(bytes: &[u8], tid: TransactionId) -> Reply {
    let Ok(msg) = Message::decode(bytes) else {
        return Reply::NotOurs;
    };
    if msg.method != Method::BINDING || msg.transaction_id != tid {
        return Reply::NotOurs;
    }
    match msg.class {
        Class::Success => {
            // XOR-MAPPED-ADDRESS; plain MAPPED-ADDRESS from RFC 3489-era servers.
            for typ in [
                AttributeType::XOR_MAPPED_ADDRESS,
                AttributeType::MAPPED_ADDRESS,
            ] {
                match msg.get(typ) {
                    Ok(Some(Attribute::XorMappedAddress(a) | Attribute::MappedAddress(a))) => {
                        return Reply::Mapped(SocketAddr::new(a.ip().to_canonical(), a.port()));
                    }
                    Ok(_) => {}
                    Err(e) => return Reply::Failed(format!("malformed mapped address: {e}")),
                }
            }
            Reply::Failed("success response without a mapped address".to_owned())
        }
        Class::Error => match msg.get(AttributeType::ERROR_CODE) {
            Ok(Some(Attribute::ErrorCode(ErrorCode { code, reason }))) => {
                Reply::Failed(format!("error response {code} {reason}"))
            }
            _ => Reply::Failed("error response without an error code".to_owned()),
        },
        _ => Reply::NotOurs,
    }
}

/// Why a discovered IP is probably not the public one, if it looks wrong: the
/// STUN server is then inside the same private network (or behind the same
/// carrier-grade NAT) and the address is unreachable from the Internet.
pub(crate) fn suspicious(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => Some("a loopback address"),
        IpAddr::V4(v4) if v4.is_private() => Some("a private (RFC 1918) address"),
        IpAddr::V4(v4) if v4.is_link_local() => Some("a link-local address"),
        IpAddr::V4(v4) if v4.octets()[0] == 100 && v4.octets()[1] & 0xC0 == 64 => {
            Some("a carrier-grade NAT (RFC 6598, 100.64.0.0/10) address")
        }
        IpAddr::V6(v6) if v6.is_loopback() => Some("a loopback address"),
        IpAddr::V6(v6) if v6.segments()[0] & 0xFE00 == 0xFC00 => {
            Some("a unique local (fc00::/7) address")
        }
        IpAddr::V6(v6) if v6.segments()[0] & 0xFFC0 == 0xFE80 => Some("a link-local address"),
        _ => None,
    }
}

/// Asks `server` (`host:port`) which address a socket on `from` has, retransmitting
/// on RFC 8489's schedule until `timeout`. The server's name is resolved to an
/// address of `from`'s family: the mapping of that family is the one wanted.
pub(crate) async fn discover(
    server: &str,
    from: IpAddr,
    timeout: Duration,
) -> Result<SocketAddr, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let (host, port) = split_host_port(server)?;
    let target = tokio::time::timeout_at(deadline, tokio::net::lookup_host((host.as_str(), port)))
        .await
        .map_err(|_| format!("resolving {host} timed out"))?
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .map(|a| SocketAddr::new(a.ip().to_canonical(), a.port()))
        .find(|a| a.is_ipv4() == from.is_ipv4())
        .ok_or_else(|| {
            let family = if from.is_ipv4() { "IPv4" } else { "IPv6" };
            format!("{host} has no {family} address (the relay IP {from} is {family})")
        })?;
    let socket = UdpSocket::bind(SocketAddr::new(from, 0))
        .await
        .map_err(|e| format!("cannot bind a socket on the relay IP {from}: {e}"))?;
    let mut tid = [0u8; 12];
    getrandom::fill(&mut tid).map_err(|e| format!("random source: {e}"))?;
    let tid = TransactionId(tid);
    let request = binding_request(tid);
    let mut rto = FIRST_RTO;
    let mut buf = vec![0u8; 2048];
    let mut sent = 0u32;
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(format!(
                "no answer from {target} within {} s ({sent} requests sent)",
                timeout.as_secs()
            ));
        }
        // A send error (no route yet, ICMP unreachable from the previous one) is
        // retried like a lost request.
        if socket.send_to(&request, target).await.is_ok() {
            sent += 1;
        }
        let wait_until = (now + rto).min(deadline);
        rto *= 2;
        loop {
            let got = tokio::time::timeout_at(wait_until, socket.recv_from(&mut buf)).await;
            let Ok(got) = got else { break }; // retransmit
            let Ok((n, from_addr)) = got else { continue };
            if from_addr != target {
                continue;
            }
            match read_reply(&buf[..n], tid) {
                Reply::Mapped(mapped) if mapped.is_ipv4() == from.is_ipv4() => return Ok(mapped),
                Reply::Mapped(mapped) => {
                    return Err(format!(
                        "{target} answered with {mapped}, another address family"
                    ));
                }
                Reply::Failed(why) => return Err(format!("{target}: {why}")),
                Reply::NotOurs => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_parse() {
        let ok = |s: &str| split_host_port(s).unwrap();
        assert_eq!(
            ok("stun.example.org:3479"),
            ("stun.example.org".into(), 3479)
        );
        assert_eq!(ok("stun.example.org"), ("stun.example.org".into(), 3478));
        assert_eq!(ok("192.0.2.1:19302"), ("192.0.2.1".into(), 19302));
        assert_eq!(ok("[2001:db8::1]:3479"), ("2001:db8::1".into(), 3479));
        assert_eq!(ok("[2001:db8::1]"), ("2001:db8::1".into(), 3478));
        assert_eq!(ok("2001:db8::1"), ("2001:db8::1".into(), 3478));
        for bad in ["", ":3478", "host:0", "host:99999", "host:x", "[::1"] {
            assert!(split_host_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn replies_are_matched_to_the_request() {
        let tid = TransactionId([5; 12]);
        let seen: SocketAddr = "203.0.113.7:40000".parse().unwrap();
        let mut b = MessageBuilder::new(Class::Success, Method::BINDING, tid);
        b.add(&Attribute::XorMappedAddress(seen));
        let success = b.finish(None, true);
        assert_eq!(read_reply(&success, tid), Reply::Mapped(seen));
        // Another transaction's answer, our own request echoed, garbage: not ours.
        assert_eq!(read_reply(&success, TransactionId([6; 12])), Reply::NotOurs);
        assert_eq!(read_reply(&binding_request(tid), tid), Reply::NotOurs);
        assert_eq!(read_reply(b"not stun at all, no", tid), Reply::NotOurs);
        // An RFC 3489-era server's MAPPED-ADDRESS.
        let mut b = MessageBuilder::new(Class::Success, Method::BINDING, tid);
        b.add(&Attribute::MappedAddress(seen));
        assert_eq!(read_reply(&b.finish(None, false), tid), Reply::Mapped(seen));
        // An error response says why.
        let mut b = MessageBuilder::new(Class::Error, Method::BINDING, tid);
        b.add(&Attribute::ErrorCode(ErrorCode::BAD_REQUEST));
        let Reply::Failed(why) = read_reply(&b.finish(None, false), tid) else {
            panic!("an error response fails discovery")
        };
        assert!(why.contains("400"), "{why}");
        let empty = MessageBuilder::new(Class::Success, Method::BINDING, tid).finish(None, false);
        assert!(matches!(read_reply(&empty, tid), Reply::Failed(_)));
    }

    #[test]
    fn private_answers_are_flagged() {
        for (ip, flagged) in [
            ("10.1.2.3", true),
            ("172.16.0.1", true),
            ("192.168.1.1", true),
            ("127.0.0.1", true),
            ("169.254.1.1", true),
            ("100.64.0.1", true),
            ("100.127.255.255", true),
            ("100.128.0.1", false),
            ("203.0.113.7", false),
            ("93.184.215.14", false),
            ("fd00::1", true),
            ("fe80::1", true),
            ("::1", true),
            ("2001:db8::1", false),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(suspicious(ip).is_some(), flagged, "{ip}");
        }
    }
}
