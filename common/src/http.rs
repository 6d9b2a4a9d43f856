//! The HTTP listener every service uses: settings, the client address, and a
//! server that drains in-flight requests on shutdown.

use crate::Shutdown;
use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

/// `[http]` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address the HTTP API (and WebSocket gateway) listens on.
    pub listen: SocketAddr,
    /// Trust the first address of `X-Forwarded-For` as the client's (only behind a
    /// proxy that sets it; otherwise clients could pick their own rate-limit key).
    pub trust_forwarded_for: bool,
    /// Public base URL clients use, for links the server hands out (signed media URLs).
    pub public_url: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            trust_forwarded_for: false,
            public_url: "http://127.0.0.1:8080".into(),
        }
    }
}

/// Whether to trust `X-Forwarded-For`; put in router state via an `Extension`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrustForwardedFor(pub bool);

/// The client's IP address: the socket peer, or the proxy-reported one when
/// `trust_forwarded_for` is set. Falls back to `0.0.0.0` in `oneshot` tests that
/// have no socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        let trust = parts
            .extensions
            .get::<TrustForwardedFor>()
            .is_some_and(|t| t.0);
        if trust
            && let Some(ip) = parts
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.trim().parse::<IpAddr>().ok())
        {
            return Ok(ClientIp(ip));
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        Ok(ClientIp(peer))
    }
}

/// Serves `router` on `listener` until `shutdown`, then lets in-flight requests
/// finish (axum's graceful shutdown) before returning.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    // No Nagle: chat and call frames are small and latency-bound; with it a
    // frame can wait ~40 ms for the peer's delayed ACK.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
