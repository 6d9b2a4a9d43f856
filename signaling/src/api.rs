//! REST: `GET /v1/calls` (the caller's call log) and
//! `GET /v1/calls/ice-servers` (STUN/TURN URLs with fresh TURN credentials).
//! Both need an access token.

use crate::call::CallRecord;
use crate::ice::{IceServers, ice_servers};
use crate::service::SignalingState;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use natter_common::{ApiError, Authed};
use natter_proto::{CallId, CallMedia, DeviceId, EndReason, UserId};
use serde::{Deserialize, Serialize};

/// The routes.
pub fn router(state: SignalingState) -> Router {
    Router::new()
        .route("/v1/calls", get(history))
        .route("/v1/calls/ice-servers", get(ice))
        .layer(axum::middleware::from_fn(|req, next| {
            natter_common::metrics::track_http("signaling", req, next)
        }))
        .with_state(state)
}

/// Query of `GET /v1/calls`.
#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    /// Only calls that started before this (Unix ms); for paging.
    pub before: Option<i64>,
    /// Page size (default 50, at most `max_history_page`).
    pub limit: Option<u32>,
}

/// Placed or received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// This user called.
    Outgoing,
    /// This user was called.
    Incoming,
}

/// One entry of the call log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallLogEntry {
    /// The call.
    pub call_id: CallId,
    /// Placed or received.
    pub direction: Direction,
    /// The other party.
    pub peer: UserId,
    /// Audio or video.
    pub media: CallMedia,
    /// When it was offered (Unix ms).
    pub started_at: i64,
    /// When it was answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_at: Option<i64>,
    /// When it ended.
    pub ended_at: i64,
    /// Milliseconds from answer to end (0 if never answered).
    pub duration_ms: u64,
    /// `answered`, `rejected`, `busy`, `missed`, `cancelled`, `unavailable`, `failed`.
    pub outcome: String,
    /// The `call.ended` reason.
    pub reason: EndReason,
    /// For received calls: the device that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_device: Option<DeviceId>,
}

/// `GET /v1/calls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallLog {
    /// Newest first.
    pub calls: Vec<CallLogEntry>,
    /// Pass as `before` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<i64>,
}

async fn history(
    State(st): State<SignalingState>,
    Authed(claims): Authed,
    q: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<CallLog>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let max = st.0.cfg.max_history_page;
    let limit = q.limit.unwrap_or(50.min(max));
    if limit == 0 || limit > max {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit: must be within 1..={max}"),
        ));
    }
    let me = UserId(claims.sub);
    let rows =
        st.0.store
            .history(&me, q.before.unwrap_or(i64::MAX), limit)
            .await
            .map_err(ApiError::internal)?;
    let next_before = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.started_at))
        .flatten();
    Ok(Json(CallLog {
        calls: rows.into_iter().map(|r| entry(&me, r)).collect(),
        next_before,
    }))
}

fn entry(me: &UserId, r: CallRecord) -> CallLogEntry {
    let outgoing = r.caller == *me;
    CallLogEntry {
        duration_ms: r.duration_ms(),
        direction: if outgoing {
            Direction::Outgoing
        } else {
            Direction::Incoming
        },
        peer: if outgoing { r.callee } else { r.caller },
        call_id: r.call_id,
        media: r.media,
        started_at: r.started_at,
        answered_at: r.answered_at,
        ended_at: r.ended_at,
        outcome: r.outcome.as_str().to_owned(),
        reason: r.reason,
        answered_device: if outgoing { None } else { r.answered_device },
    }
}

async fn ice(
    State(st): State<SignalingState>,
    Authed(claims): Authed,
) -> Result<Json<IceServers>, ApiError> {
    let now_ms = st.0.clock.now_ms();
    if let Err(wait) = st.0.ice_limiter.check(claims.sub.as_str(), now_ms) {
        return Err(ApiError::too_many(
            "rate_limited",
            "too many ICE server requests; each one mints a TURN credential",
            wait.secs(),
        ));
    }
    let cfg = &st.0.cfg;
    Ok(Json(ice_servers(
        cfg.effective_stun_urls(),
        &cfg.turn_urls.0,
        &st.0.turn_secret,
        &claims.sub,
        st.0.clock.now_secs(),
        cfg.credential_ttl_secs,
    )))
}
