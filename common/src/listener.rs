//! The accept loop under every HTTP listener: how many connections may be
//! open (in all and per client address), how long a client may take to send a
//! request head, and how long a request body may stall. These are what stop a
//! slowloris client from holding the server's sockets: hyper alone waits for
//! a request head or body bytes forever.

use crate::Shutdown;
use crate::http::{ClientIpPolicy, HttpConfig};
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

/// The limits one listener enforces; see `[http]` in docs/configuration.md.
#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    /// Open connections in all (upgraded WebSockets included); the accept loop
    /// waits for a free slot, so the kernel's backlog queues the rest.
    pub max_connections: usize,
    /// Open connections from one client address (an IPv6 /64 counts as one);
    /// 0 turns the check off. Not applied behind trusted proxies, where every
    /// connection comes from a proxy.
    pub max_connections_per_ip: usize,
    /// A request head (or the next one on a kept-alive connection) must be
    /// complete within this.
    pub header_timeout: Duration,
    /// A request body that sends nothing for this long while the server reads
    /// it fails the request and closes the connection.
    pub body_idle_timeout: Duration,
    /// How client addresses are grouped for the per-address count.
    pub ip_policy: ClientIpPolicy,
}

impl ListenerLimits {
    /// The limits `[http]` asks for; `max_connections = 0` derives the cap
    /// from the process's open-file limit.
    pub fn from_config(cfg: &HttpConfig) -> Self {
        let policy = ClientIpPolicy::from_config(cfg);
        Self {
            max_connections: match cfg.max_connections {
                0 => derived_max_connections(open_file_limit()),
                n => n as usize,
            },
            max_connections_per_ip: if policy.forwarded_hops > 0 {
                0
            } else {
                cfg.max_connections_per_ip as usize
            },
            header_timeout: Duration::from_secs(u64::from(cfg.header_timeout_secs.max(1))),
            body_idle_timeout: Duration::from_secs(u64::from(cfg.body_idle_timeout_secs.max(1))),
            ip_policy: policy,
        }
    }
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self::from_config(&HttpConfig::default())
    }
}

/// File descriptors kept free for the database, Redis, media files and
/// outgoing connections when the connection cap comes from the open-file limit.
const RESERVED_FILES: u64 = 512;

/// The connection cap for an open-file limit: the limit less a reserve, so an
/// accept never fails with EMFILE (which takes the listener down for a second).
pub fn derived_max_connections(open_files: u64) -> usize {
    open_files.saturating_sub(RESERVED_FILES).max(64) as usize
}

/// The process's soft open-file limit, from `/proc/self/limits` (1,024 when
/// it cannot be read).
pub fn open_file_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|soft| soft.parse().ok())
        })
        .unwrap_or(1024)
}

/// Things held per client address (connections, unauthenticated sockets),
/// each given back when its slot is dropped.
#[derive(Debug, Default)]
pub struct AddressCounts {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One thing's place in [`AddressCounts`]; given back on drop.
#[derive(Debug)]
pub struct AddressSlot {
    table: Arc<AddressCounts>,
    ip: IpAddr,
}

impl AddressCounts {
    /// A slot for `ip`, unless it already holds `max`.
    pub fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<AddressSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Serves `router` on `listener` under `limits` until `shutdown`; then every
/// open HTTP connection finishes its request in flight and closes, and this
/// returns. Upgraded connections (WebSockets) are their handlers' to end.
pub async fn serve_with_limits(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: Shutdown,
    limits: ListenerLimits,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = Arc::new(AddressCounts::default());
    let tracker = TaskTracker::new();
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = shutdown.cancelled() => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: the listener itself is fine; back off
                    // so the loop does not spin while descriptors are short.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let address_slot = if limits.max_connections_per_ip > 0 {
            let ip = limits.ip_policy.rate_identity(peer.ip());
            match per_address.take(ip, limits.max_connections_per_ip) {
                Some(slot) => Some(slot),
                None => {
                    metrics::counter!("http_connections_refused_total", "reason" => "per_ip")
                        .increment(1);
                    drop(tcp);
                    continue;
                }
            }
        } else {
            None
        };
        // No Nagle: chat and call frames are small and latency-bound; with it a
        // frame can wait ~40 ms for the peer's delayed ACK.
        let _ = tcp.set_nodelay(true);
        // The slots travel with the socket, so an upgraded WebSocket (whose
        // socket hyper hands to the handler) still holds them until it closes.
        let stream = CountedStream::new(tcp, permit, address_slot);
        let service = connection_service(router.clone(), peer, limits.body_idle_timeout);
        let conn = http1
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .with_upgrades();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// An accepted socket with the connection slots it holds (given back when
/// the socket is dropped, whoever owns it by then).
struct CountedStream {
    tcp: tokio::net::TcpStream,
    _slots: (OwnedSemaphorePermit, Option<AddressSlot>),
}

impl CountedStream {
    fn new(
        tcp: tokio::net::TcpStream,
        permit: OwnedSemaphorePermit,
        address: Option<AddressSlot>,
    ) -> Self {
        metrics::gauge!("http_connections_open").increment(1.0);
        Self {
            tcp,
            _slots: (permit, address),
        }
    }
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        metrics::gauge!("http_connections_open").decrement(1.0);
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// The router for one connection: it sees the peer address (`ConnectInfo`)
/// and a request body that fails when the client stalls.
fn connection_service(
    router: Router,
    peer: SocketAddr,
    body_idle: Duration,
) -> impl tower::Service<
    axum::http::Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future + Send,
> + Clone
+ Send
+ 'static {
    use tower::ServiceExt;
    router.map_request(move |req: axum::http::Request<Incoming>| {
        let mut req = req.map(|body| Body::new(StallLimitedBody::new(body, body_idle)));
        req.extensions_mut().insert(ConnectInfo(peer));
        req
    })
}

/// The request body stalled: nothing arrived for the configured time while
/// the server was waiting for it.
#[derive(Debug, thiserror::Error)]
#[error("the request body sent nothing for {0:?}")]
pub struct BodyStalled(Duration);

/// A request body that fails once the client sends nothing for `idle` while
/// someone is reading it (time the handler spends elsewhere does not count).
struct StallLimitedBody {
    inner: Incoming,
    idle: Duration,
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl StallLimitedBody {
    fn new(inner: Incoming, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            waiting: None,
        }
    }
}

impl HttpBody for StallLimitedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let idle = this.idle;
                let sleep = this
                    .waiting
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        metrics::counter!("http_body_stalls_total").increment(1);
                        Poll::Ready(Some(Err(Box::new(BodyStalled(idle)))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `router` on `listener` with the default [`ListenerLimits`] until
/// `shutdown`, then lets in-flight requests finish before returning.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    serve_with_limits(listener, router, shutdown, Default::default()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_for_files_and_never_goes_below_a_floor() {
        assert_eq!(derived_max_connections(20_000), 19_488);
        assert_eq!(derived_max_connections(1024), 512);
        assert_eq!(derived_max_connections(100), 64);
    }

    #[test]
    fn the_open_file_limit_is_read() {
        assert!(open_file_limit() >= 64);
    }

    #[test]
    fn an_address_holds_at_most_its_share_and_gets_it_back() {
        let table = Arc::new(AddressCounts::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = table.take(a, 2).unwrap();
        let _second = table.take(a, 2).unwrap();
        assert!(table.take(a, 2).is_none(), "a third from the same address");
        assert!(
            table.take(b, 2).is_some(),
            "another address is not affected"
        );
        drop(first);
        assert!(
            table.take(a, 2).is_some(),
            "a closed connection frees its slot"
        );
    }

    #[test]
    fn behind_proxies_the_peer_is_a_proxy_so_no_per_address_cap() {
        let cfg = HttpConfig {
            trust_forwarded_for: true,
            ..HttpConfig::default()
        };
        assert_eq!(ListenerLimits::from_config(&cfg).max_connections_per_ip, 0);
        assert!(ListenerLimits::default().max_connections_per_ip > 0);
    }
}
