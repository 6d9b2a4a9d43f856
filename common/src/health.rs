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

/// The health and metrics routes. Readiness fails while draining so load
/// balancers stop sending new work before the sockets close.
pub fn router(checks: Vec<(&'static str, ReadinessCheck)>, shutdown: Shutdown) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::render))
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
