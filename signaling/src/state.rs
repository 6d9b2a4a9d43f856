//! The REST handlers' state: what `service` builds and `api` reads.

use crate::SignalingConfig;
use crate::store::CallStore;
use axum::extract::FromRef;
use natter_common::ratelimit::KeyedLimiter;
use natter_common::token::TokenKeys;
use natter_common::{Secret, SharedClock, TokenVerifier};
use std::sync::Arc;

/// Handler state (cheap to clone).
#[derive(Clone)]
pub struct SignalingState(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    pub(crate) cfg: SignalingConfig,
    pub(crate) store: Arc<dyn CallStore>,
    pub(crate) clock: SharedClock,
    pub(crate) tokens: Arc<TokenKeys>,
    /// `turn.auth_secret`, shared with the TURN server.
    pub(crate) turn_secret: Secret,
    /// `ice_servers_rate`, per user.
    pub(crate) ice_limiter: KeyedLimiter,
    /// Refuses tokens of logged-out devices (absent with a store of no database).
    pub(crate) live: Option<Arc<natter_common::credentials::LiveCredentials>>,
}

impl FromRef<SignalingState> for TokenVerifier {
    fn from_ref(state: &SignalingState) -> Self {
        TokenVerifier {
            keys: state.0.tokens.clone(),
            clock: state.0.clock.clone(),
            live: state.0.live.clone(),
        }
    }
}
