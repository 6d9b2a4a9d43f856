//! `/healthz` (the process is alive), `/readyz` (its dependencies answer and it is
//! not draining) and `/metrics`, served by every service.

use crate::Shutdown;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A named readiness check, e.g. "database".
pub type ReadinessCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

#[derive(Clone)]
struct HealthState {
    checks: Arc<Vec<(&'static str, ReadinessCheck)>>,
    shutdown: Shutdown,
}

/// Builds a readiness check from an async closure.
pub fn check<F, Fut>(f: F) -> ReadinessCheck
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    Arc::new(move || Box::pin(f()))
}

/// A part of the process whose loss must not leave it running half-alive (the
/// TURN thread): once [`Vital::fail`] is called, its readiness check fails with
/// the reason, for good.
#[derive(Clone, Default)]
pub struct Vital(Arc<std::sync::OnceLock<String>>);

impl Vital {
    /// A part that has not failed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the failure (the first reason wins).
    pub fn fail(&self, reason: impl Into<String>) {
        let _ = self.0.set(reason.into());
    }

    /// The failure, if any.
    pub fn failure(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }

    /// A readiness check that fails once the part has.
    pub fn check(&self) -> ReadinessCheck {
        let vital = self.clone();
        check(move || {
            let failure = vital.failure().map(str::to_owned);
            async move { failure.map_or(Ok(()), Err) }
        })
    }
}

/// Who may read `/metrics`: counts of users, calls and failures are not for
/// the internet.
#[derive(Debug, Clone, Default)]
pub struct MetricsAccess {
    /// A bearer token that grants access from anywhere (empty: none).
    pub token: crate::Secret,
    /// Everyone may read them.
    pub from_anywhere: bool,
}

impl MetricsAccess {
    /// What `[http]` says.
    pub fn from_config(cfg: &crate::http::HttpConfig) -> Self {
        Self {
            token: cfg.metrics_token.clone(),
            from_anywhere: cfg.metrics_from_anywhere,
        }
    }

    /// Whether a request from socket peer `peer` with `authorization` may read.
    /// The socket peer, never `X-Forwarded-For`: a proxy on the same host
    /// would otherwise make every client look local.
    pub fn allows(&self, peer: Option<std::net::IpAddr>, authorization: Option<&str>) -> bool {
        if self.from_anywhere || peer.is_some_and(|ip| ip.is_loopback()) {
            return true;
        }
        let token = self.token.expose();
        match authorization.and_then(|a| a.strip_prefix("Bearer ")) {
            Some(given) if !token.is_empty() => {
                use subtle::ConstantTimeEq;
                bool::from(given.as_bytes().ct_eq(token.as_bytes()))
            }
            _ => false,
        }
    }
}

/// The health and metrics routes. Readiness fails while draining so load
/// balancers stop sending new work before the sockets close.
pub fn router(
    checks: Vec<(&'static str, ReadinessCheck)>,
    shutdown: Shutdown,
    metrics: MetricsAccess,
) -> Router {
    let metrics = Arc::new(metrics);
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(
                move |req: axum::extract::Request| {
                    let metrics = metrics.clone();
                    async move {
                        let peer = req
                            .extensions()
                            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                            .map(|c| c.0.ip());
                        let auth = req
                            .headers()
                            .get(axum::http::header::AUTHORIZATION)
                            .and_then(|v| v.to_str().ok());
                        if metrics.allows(peer, auth) {
                            crate::metrics::render().await.into_response()
                        } else {
                            crate::ApiError::forbidden(
                                "metrics_forbidden",
                                "/metrics answers loopback clients, holders of http.metrics_token, or everyone with http.metrics_from_anywhere",
                            )
                            .into_response()
                        }
                    }
                },
            ),
        )
        .with_state(HealthState {
            checks: Arc::new(checks),
            shutdown,
        })
}

async fn readyz(State(state): State<HealthState>) -> impl IntoResponse {
    let mut failures = serde_json::Map::new();
    for (name, check) in state.checks.iter() {
        let outcome = tokio::time::timeout(std::time::Duration::from_secs(2), check()).await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failures.insert((*name).into(), e.into());
            }
            Err(_) => {
                failures.insert((*name).into(), "timed out after 2 s".into());
            }
        }
    }
    if state.shutdown.is_cancelled() {
        // Draining, perhaps because a part failed: say which, as before.
        let mut body = serde_json::json!({"ready": false, "draining": true});
        if !failures.is_empty() {
            body["failing"] = failures.into();
        }
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body));
    }
    if failures.is_empty() {
        let names: Vec<&str> = state.checks.iter().map(|(n, _)| *n).collect();
        (
            StatusCode::OK,
            Json(serde_json::json!({"ready": true, "checks": names})),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"ready": false, "failing": failures})),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_for_loopback_token_holders_or_everyone_when_configured() {
        let lo = Some("127.0.0.1".parse().unwrap());
        let far = Some("203.0.113.9".parse().unwrap());
        let closed = MetricsAccess::default();
        assert!(closed.allows(lo, None));
        assert!(!closed.allows(far, None));
        assert!(!closed.allows(far, Some("Bearer ")), "no token configured");
        assert!(!closed.allows(None, None), "no socket: not local");
        let token = MetricsAccess {
            token: crate::Secret::new("s3cret-scrape-token"),
            from_anywhere: false,
        };
        assert!(token.allows(far, Some("Bearer s3cret-scrape-token")));
        assert!(!token.allows(far, Some("Bearer s3cret-scrape-tokeN")));
        assert!(!token.allows(far, None));
        let open = MetricsAccess {
            from_anywhere: true,
            ..MetricsAccess::default()
        };
        assert!(open.allows(far, None));
    }
}
