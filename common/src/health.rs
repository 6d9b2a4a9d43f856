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
    if state.shutdown.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"ready": false, "draining": true})),
        );
    }
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
    if failures.is_empty() {
        (StatusCode::OK, Json(serde_json::json!({"ready": true})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"ready": false, "failing": failures})),
        )
    }
}
