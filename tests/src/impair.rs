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

struct Shared {
    settings: Mutex<Impairment>,
    down: AtomicBool,
    rng: AtomicU64,
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

    /// `None`: drop the packet; otherwise how long to hold it.
    fn fate(&self) -> Option<Duration> {
        if self.down.load(Ordering::Relaxed) {
            self.cut.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let s = *self.settings.lock().unwrap_or_else(|e| e.into_inner());
        if self.random() < s.loss {
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
                                if let Some(after) = s2.fate() {
                                    send_later(f2.clone(), client, buf[..n].to_vec(), after).await;
                                }
                            }
                        });
                        b
                    }
                };
                if let Some(after) = s.fate() {
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
