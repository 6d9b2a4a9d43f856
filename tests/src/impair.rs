//! A UDP impairment relay for call tests and benchmarks: it sits between a
//! client and the TURN server and drops, delays, jitters (and so reorders)
//! packets both ways, and can cut the path entirely for an outage. Loopback
//! only; no privileges or network namespaces needed.
//!
//! Each client address seen gets its own upstream socket, so the TURN server
//! sees one distinct 5-tuple per client, as through a NAT.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;

/// What the path does to each packet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    /// Probability a packet is dropped (0–1), each way.
    pub loss: f64,
    /// Mean one-way delay.
    pub delay: Duration,
    /// Each packet's delay is `delay ± jitter`, uniformly (packets overtake
    /// each other when the jitter exceeds their spacing).
    pub jitter: Duration,
}

impl Impairment {
    /// A clean path.
    pub fn none() -> Self {
        Self {
            loss: 0.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
        }
    }
}

/// Figures about what the relay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathStats {
    /// Packets forwarded.
    pub forwarded: u64,
    /// Packets dropped at random.
    pub lost: u64,
    /// Packets dropped during an outage.
    pub cut: u64,
}

/// Per SSRC its first sequence number; every (SSRC, sequence number) seen.
type SeenRtp = (HashMap<u32, u16>, std::collections::HashSet<(u32, u16)>);

struct Shared {
    settings: Mutex<Impairment>,
    down: AtomicBool,
    rng: AtomicU64,
    /// Decides the fate of RTP packets by their place in their stream (below).
    seed: u64,
    /// The first sequence number seen of each SSRC (both are random per call),
    /// and every (SSRC, sequence number) seen: a retransmission (same number)
    /// draws afresh, or a lost packet would be lost every time it is resent.
    first_seq: Mutex<SeenRtp>,
    forwarded: AtomicU64,
    lost: AtomicU64,
    cut: AtomicU64,
}

impl Shared {
    /// xorshift64*: reproducible for a seed, good enough for coin flips.
    fn random(&self) -> f64 {
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.store(x, Ordering::Relaxed);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `None`: drop `packet`; otherwise how long to hold it. Whether an RTP
    /// packet is lost depends only on the seed, its payload type and its place
    /// in its stream (sequence number minus the stream's first), not on what
    /// else crossed the relay before it (ICE checks, DTLS, RTCP, the other
    /// direction) nor on the random SSRC and first sequence number of the
    /// call: so every run loses the same media packets, and a quality figure
    /// measured through the relay is repeatable. Other packets draw from the
    /// running generator.
    fn fate(&self, packet: &[u8]) -> Option<Duration> {
        if self.down.load(Ordering::Relaxed) {
            self.cut.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let s = *self.settings.lock().unwrap_or_else(|e| e.into_inner());
        let draw = match rtp_header(packet) {
            Some((pt, seq, ssrc)) => {
                let (first, again) = {
                    let mut g = self.first_seq.lock().unwrap_or_else(|e| e.into_inner());
                    let first = *g.0.entry(ssrc).or_insert(seq);
                    (first, !g.1.insert((ssrc, seq)))
                };
                if again {
                    self.random()
                } else {
                    let place = u64::from(seq.wrapping_sub(first));
                    unit(splitmix(self.seed ^ (u64::from(pt) << 16 | place)))
                }
            }
            None => self.random(),
        };
        if draw < s.loss {
            self.lost.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.forwarded.fetch_add(1, Ordering::Relaxed);
        let spread = s.jitter.as_secs_f64() * (2.0 * self.random() - 1.0);
        Some(Duration::from_secs_f64(
            (s.delay.as_secs_f64() + spread).max(0.0),
        ))
    }
}

/// Payload type, sequence number and SSRC of the RTP packet inside a TURN
/// ChannelData message (channel numbers 0x4000–0x4FFF); `None` for anything
/// else (STUN, RTCP, DTLS). SRTP leaves the RTP header in clear.
fn rtp_header(packet: &[u8]) -> Option<(u8, u16, u32)> {
    if packet.len() < 4 + 12 || !(0x40..=0x4F).contains(&packet[0]) {
        return None;
    }
    let rtp = &packet[4..];
    // RTCP shares the version bits; its packet types are 200–206 in byte 1.
    if rtp[0] >> 6 != 2 || (200..=206).contains(&rtp[1]) {
        return None;
    }
    let seq = u16::from_be_bytes([rtp[2], rtp[3]]);
    let ssrc = u32::from_be_bytes([rtp[8], rtp[9], rtp[10], rtp[11]]);
    Some((rtp[1] & 0x7f, seq, ssrc))
}

/// SplitMix64's finaliser: a well-mixed 64-bit hash of `x`.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A hash as a number in [0, 1).
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// A running impairment relay in front of `upstream`.
pub struct ImpairedPath {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

async fn send_later(socket: Arc<UdpSocket>, to: SocketAddr, data: Vec<u8>, after: Duration) {
    if after.is_zero() {
        let _ = socket.send_to(&data, to).await;
        return;
    }
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        let _ = socket.send_to(&data, to).await;
    });
}

impl ImpairedPath {
    /// Listens on 127.0.0.1 and relays to `upstream` with `impairment`.
    pub async fn start(
        upstream: SocketAddr,
        impairment: Impairment,
        seed: u64,
    ) -> std::io::Result<Self> {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = front.local_addr()?;
        let shared = Arc::new(Shared {
            settings: Mutex::new(impairment),
            down: AtomicBool::new(false),
            rng: AtomicU64::new(seed | 1),
            seed,
            first_seq: Mutex::new((HashMap::new(), std::collections::HashSet::new())),
            forwarded: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            cut: AtomicU64::new(0),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            let mut backs: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
            let mut buf = vec![0u8; 65_536];
            loop {
                let Ok((n, client)) = front.recv_from(&mut buf).await else {
                    break;
                };
                let back = match backs.get(&client) {
                    Some(b) => b.clone(),
                    None => {
                        let Ok(b) = UdpSocket::bind("127.0.0.1:0").await else {
                            continue;
                        };
                        let b = Arc::new(b);
                        backs.insert(client, b.clone());
                        // The way back: upstream → this client.
                        let (b2, f2, s2) = (b.clone(), front.clone(), s.clone());
                        tokio::spawn(async move {
                            let mut buf = vec![0u8; 65_536];
                            while let Ok((n, _)) = b2.recv_from(&mut buf).await {
                                if let Some(after) = s2.fate(&buf[..n]) {
                                    send_later(f2.clone(), client, buf[..n].to_vec(), after).await;
                                }
                            }
                        });
                        b
                    }
                };
                if let Some(after) = s.fate(&buf[..n]) {
                    send_later(back, upstream, buf[..n].to_vec(), after).await;
                }
            }
        });
        Ok(Self { addr, shared, task })
    }

    /// Where clients send (in place of the TURN server's address).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cuts the path (`true`) or restores it.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::Relaxed);
    }

    /// Changes the impairment from now on.
    pub fn set(&self, impairment: Impairment) {
        *self
            .shared
            .settings
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = impairment;
    }

    /// What the relay did so far.
    pub fn stats(&self) -> PathStats {
        PathStats {
            forwarded: self.shared.forwarded.load(Ordering::Relaxed),
            lost: self.shared.lost.load(Ordering::Relaxed),
            cut: self.shared.cut.load(Ordering::Relaxed),
        }
    }
}

impl Drop for ImpairedPath {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The address of the first `turn:` URL over UDP among `servers` (where an
/// impairment relay forwards to).
pub fn turn_udp_addr(servers: &[natter_client::IceServer]) -> Option<SocketAddr> {
    servers.iter().flat_map(|s| s.urls.iter()).find_map(|u| {
        let host = u.strip_prefix("turn:")?.split('?').next()?;
        (!u.contains("transport=tcp")).then(|| host.parse().ok())?
    })
}

/// The ICE servers a client would get, with every `turn:` URL over UDP
/// pointed at `via` instead (and no other URLs), so all its media crosses
/// the impaired path.
pub fn through(
    servers: &[natter_client::IceServer],
    via: SocketAddr,
) -> Vec<natter_client::IceServer> {
    servers
        .iter()
        .filter(|s| s.username.is_some())
        .map(|s| natter_client::IceServer {
            urls: s
                .urls
                .iter()
                .filter(|u| u.starts_with("turn:") && !u.contains("transport=tcp"))
                .map(|_| format!("turn:{via}?transport=udp"))
                .take(1)
                .collect(),
            ..s.clone()
        })
        .filter(|s| !s.urls.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel_rtp(pt: u8, seq: u16, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x40, 0x01, 0, 32, 0x80, pt];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0; 4]);
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0xaa; 20]);
        p
    }

    #[test]
    fn rtp_packets_are_lost_by_their_place_in_the_stream() {
        assert_eq!(
            rtp_header(&channel_rtp(111, 7, 0x1234)),
            Some((111, 7, 0x1234))
        );
        assert_eq!(rtp_header(&channel_rtp(200, 7, 0x1234)), None, "RTCP");
        assert_eq!(
            rtp_header(&[0x00, 0x01, 0, 8, 0x21, 0x12, 0xa4, 0x42]),
            None,
            "STUN"
        );
        let lost = |noise: usize, first: u16, ssrc: u32| {
            let shared = Shared {
                settings: Mutex::new(Impairment {
                    loss: 0.2,
                    delay: Duration::ZERO,
                    jitter: Duration::ZERO,
                }),
                down: AtomicBool::new(false),
                rng: AtomicU64::new(99),
                seed: 0x5eed,
                first_seq: Mutex::new((HashMap::new(), std::collections::HashSet::new())),
                forwarded: AtomicU64::new(0),
                lost: AtomicU64::new(0),
                cut: AtomicU64::new(0),
            };
            for _ in 0..noise {
                shared.fate(b"not rtp");
            }
            (0..500u16)
                .filter(|&i| {
                    let seq = first.wrapping_add(i);
                    shared.fate(&channel_rtp(111, seq, ssrc)).is_none()
                })
                .collect::<Vec<_>>()
        };
        let a = lost(0, 0, 0xbeef);
        assert_eq!(
            a,
            lost(37, 65_000, 0x1234_5678),
            "neither other traffic nor the call's random SSRC and first sequence number move the losses"
        );
        assert!((70..=130).contains(&a.len()), "about 20 %: {}", a.len());
    }

    #[tokio::test]
    async fn the_relay_drops_delays_and_cuts() {
        let far = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let path = ImpairedPath::start(
            far.local_addr().unwrap(),
            Impairment {
                loss: 0.5,
                delay: Duration::from_millis(20),
                jitter: Duration::from_millis(10),
            },
            7,
        )
        .await
        .unwrap();
        let near = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for i in 0..200u8 {
            near.send_to(&[i], path.addr()).await.unwrap();
        }
        let mut got = 0;
        let mut buf = [0u8; 8];
        while tokio::time::timeout(Duration::from_millis(300), far.recv_from(&mut buf))
            .await
            .is_ok()
        {
            got += 1;
        }
        assert!(
            (60..=140).contains(&got),
            "{got} of 200 through at 50 % loss"
        );
        assert_eq!(path.stats().forwarded, got);
        path.set_down(true);
        near.send_to(&[1], path.addr()).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(200), far.recv_from(&mut buf))
                .await
                .is_err()
        );
        assert_eq!(path.stats().cut, 1);
    }
}
