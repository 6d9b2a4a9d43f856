//! Every error in the documented JSON shape. Handlers answer [`ApiError`]s,
//! but some answers come from the framework before a handler runs: a path
//! parameter that does not parse (`DELETE /v1/devices/-1`), a WebSocket upgrade
//! without its headers. This layer rewrites any error answer that is not JSON
//! into `{"error": {"code", "message"}}`, keeping its status and headers.

use crate::ApiError;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Bytes of a framework error text carried into the JSON message.
const MAX_MESSAGE_BYTES: usize = 1024;

/// The middleware (`axum::middleware::from_fn(json_errors)`).
pub async fn json_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    // 416 answers carry Content-Range and, like HEAD answers, no body worth keeping.
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_MESSAGE_BYTES)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let code = code_for(status, &message);
    let mut rewritten = ApiError::new(status, code, message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rewritten.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rewritten
}

fn is_json(r: &Response<Body>) -> bool {
    r.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// A stable code for a framework answer.
fn code_for(status: StatusCode, message: &str) -> &'static str {
    match status.as_u16() {
        400 if message.starts_with("Invalid URL") => "invalid_path",
        400 if message.contains("query string") => "invalid_query",
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        411 => "length_required",
        413 => "body_too_large",
        415 => "unsupported_media_type",
        416 => "range_not_satisfiable",
        422 => "invalid_body",
        426 => "upgrade_required",
        429 => "rate_limited",
        503 => "unavailable",
        s if s >= 500 => "internal_error",
        _ => "bad_request",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::extract::Path;
    use axum::routing::get;
    use tower::ServiceExt;

    async fn call(app: Router, uri: &str) -> (StatusCode, serde_json::Value) {
        let r = app
            .oneshot(Request::builder().uri(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = r.status();
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        (
            status,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    fn app() -> Router {
        Router::new()
            .route(
                "/devices/{id}",
                get(|Path(id): Path<u32>| async move { id.to_string() }),
            )
            .route(
                "/teapot",
                get(|| async {
                    (
                        StatusCode::IM_A_TEAPOT,
                        [("x-kept", "1")],
                        "short and stout",
                    )
                }),
            )
            .route(
                "/api",
                get(|| async { ApiError::conflict("taken", "already there") }),
            )
            .layer(axum::middleware::from_fn(json_errors))
    }

    #[tokio::test]
    async fn a_path_that_does_not_parse_answers_json() {
        let (status, v) = call(app(), "/devices/-1").await;
        assert_eq!(status, 400);
        assert_eq!(v["error"]["code"], "invalid_path", "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("-1"),
            "{v}"
        );
    }

    #[tokio::test]
    async fn other_plain_errors_keep_status_and_headers_and_json_ones_pass() {
        let r = app()
            .oneshot(
                Request::builder()
                    .uri("/teapot")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(r.status(), 418);
        assert_eq!(r.headers()["x-kept"], "1");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let (_, v) = call(app(), "/api").await;
        assert_eq!(v["error"]["code"], "taken", "handler errors are untouched");
        let r = app()
            .oneshot(
                Request::builder()
                    .uri("/devices/7")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}
