//! The HTTP error contract shared by every service, a JSON extractor whose
//! rejections follow it, and the bearer-token extractor.
//!
//! Every error body is `{"error": {"code": "<stable_code>", "message": "<for people>"}}`.
//! Codes are stable API; messages may change.

use crate::clock::SharedClock;
use crate::token::{Claims, TokenError, TokenKeys};
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// An error returned to an HTTP client.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `invalid_phone_number`.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// Seconds for `Retry-After` (429, 503).
    pub retry_after_secs: Option<u64>,
    /// Extra structured fields merged into the error object.
    pub details: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_secs: Option<u64>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    details: Option<&'a serde_json::Value>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
            details: None,
        }
    }

    /// 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401.
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// 403.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    /// 404.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 409.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 429 with `Retry-After`.
    pub fn too_many(code: &'static str, message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, code, message)
        }
    }

    /// 500. The cause is logged here, once, and never sent to the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error",
        )
    }

    /// Adds structured fields to the error object.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorObject {
                code: self.code,
                message: &self.message,
                retry_after_secs: self.retry_after_secs,
                details: self.details.as_ref(),
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::internal(format!("database: {e}"))
    }
}

/// A JSON body whose rejections are [`ApiError`]s naming the problem
/// (`invalid_json` with serde's message, `unsupported_media_type`, `body_too_large`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => {
            // The inner serde error names the field and what was expected.
            let detail = std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| e.body_text());
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", detail)
        }
        JsonRejection::JsonSyntaxError(e) => {
            let detail = std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| e.body_text());
            ApiError::bad_request("invalid_json", format!("malformed JSON: {detail}"))
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        ),
        JsonRejection::BytesRejection(e) => {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    "request body is larger than this endpoint accepts",
                )
            } else {
                ApiError::bad_request("unreadable_body", e.body_text())
            }
        }
        other => ApiError::bad_request("invalid_json", other.body_text()),
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// What a service needs to check bearer tokens.
#[derive(Clone)]
pub struct TokenVerifier {
    /// The key ring.
    pub keys: Arc<TokenKeys>,
    /// Source of "now" for expiry.
    pub clock: SharedClock,
    /// Where set, a token is also refused once its device was logged out,
    /// removed or re-registered (services that do not look the device up
    /// themselves: media, signaling).
    pub live: Option<Arc<crate::credentials::LiveCredentials>>,
}

/// The authenticated caller of a request: a valid access token's claims.
///
/// This checks the signature and expiry, and where the verifier has
/// [`TokenVerifier::live`], that the device still holds the token's credential
/// generation (answer `401 token_revoked` otherwise).
#[derive(Debug, Clone)]
pub struct Authed(pub Claims);

impl<S> FromRequestParts<S> for Authed
where
    TokenVerifier: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let verifier = TokenVerifier::from_ref(state);
        let token = bearer(parts).ok_or_else(|| {
            ApiError::unauthorized(
                "missing_token",
                "send the access token as `Authorization: Bearer <token>`",
            )
        })?;
        match verifier.keys.verify(token, verifier.clock.now_secs()) {
            Ok(claims) => match &verifier.live {
                None => Ok(Authed(claims)),
                Some(live) => match live.is_live(&claims).await {
                    Ok(true) => Ok(Authed(claims)),
                    Ok(false) => Err(ApiError::unauthorized(
                        "token_revoked",
                        "this device was logged out, removed or re-registered",
                    )),
                    Err(e) => Err(ApiError::internal(e)),
                },
            },
            Err(TokenError::Expired(_)) => Err(ApiError::unauthorized(
                "token_expired",
                "access token expired; refresh it",
            )),
            Err(e) => Err(ApiError::unauthorized("invalid_token", e.to_string())),
        }
    }
}

/// The token from `Authorization: Bearer …`, if present.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}
