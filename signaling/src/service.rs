//! Wiring: builds signaling from configuration. The REST routes run wherever
//! `serve signaling` (or `serve all`) runs; the call state machine runs where
//! the chat gateway does, plugged into it with [`SignalingService::attach`].

use crate::SignalingConfig;
use crate::call::{CallRules, Calls};
use crate::driver::{CallDriver, DriverTask};
use crate::state::{Inner, SignalingState};
use crate::store::{self, CallStore};
use natter_common::calls::DeviceLink;
use natter_common::ratelimit::KeyedLimiter;
use natter_common::token::TokenKeys;
use natter_common::{Db, Secret, SharedClock, Shutdown};
use std::sync::{Arc, Mutex};

/// What the binary needs to run signaling.
pub struct SignalingService {
    state: SignalingState,
    driver: Mutex<Option<DriverTask>>,
}

impl SignalingService {
    /// Opens the store (migrating when asked) and builds the state.
    pub async fn build(
        cfg: SignalingConfig,
        db: &Db,
        migrate: bool,
        clock: SharedClock,
        tokens: Arc<TokenKeys>,
        turn_secret: Secret,
    ) -> Result<Self, String> {
        let store = store::for_db(db);
        if migrate {
            store
                .migrate()
                .await
                .map_err(|e| format!("signaling: migrations failed: {e}"))?;
        }
        let live = Arc::new(natter_common::credentials::LiveCredentials::new(
            db.clone(),
            natter_common::credentials::LIVE_CACHE_TTL,
        ));
        Self::with_parts(cfg, store, clock, tokens, turn_secret, Some(live))
    }

    /// Like [`SignalingService::build`] with an open store.
    pub fn with_store(
        cfg: SignalingConfig,
        store: Arc<dyn CallStore>,
        clock: SharedClock,
        tokens: Arc<TokenKeys>,
        turn_secret: Secret,
    ) -> Result<Self, String> {
        Self::with_parts(cfg, store, clock, tokens, turn_secret, None)
    }

    fn with_parts(
        cfg: SignalingConfig,
        store: Arc<dyn CallStore>,
        clock: SharedClock,
        tokens: Arc<TokenKeys>,
        turn_secret: Secret,
        live: Option<Arc<natter_common::credentials::LiveCredentials>>,
    ) -> Result<Self, String> {
        cfg.validate()?;
        if turn_secret.is_empty() && !cfg.turn_urls.0.is_empty() {
            tracing::warn!(
                "signaling.turn_urls is set but turn.auth_secret is empty: no TURN credentials will be handed out"
            );
        }
        Ok(Self {
            state: SignalingState(Arc::new(Inner {
                ice_limiter: KeyedLimiter::new(cfg.ice_servers_rate),
                cfg,
                store,
                clock,
                tokens,
                turn_secret,
                live,
            })),
            driver: Mutex::new(None),
        })
    }

    /// Handler state.
    pub fn state(&self) -> &SignalingState {
        &self.state
    }

    /// `/v1/calls`, `/v1/calls/ice-servers`.
    pub fn router(&self) -> axum::Router {
        crate::api::router(self.state.clone())
    }

    /// Creates the call state machine, sending through `link` (chat-core).
    /// Install the returned handler in chat-core; frames queue until
    /// [`SignalingService::spawn_background`] starts the driver.
    pub fn attach(&self, link: Arc<dyn DeviceLink>) -> CallDriver {
        let cfg = &self.state.0.cfg;
        let calls = Calls::new(CallRules {
            ring_timeout_ms: i64::from(cfg.ring_timeout_secs) * 1000,
            reconnect_grace_ms: i64::from(cfg.reconnect_grace_secs) * 1000,
        });
        let limits = crate::call::OfferLimits::new(cfg.offers_per_caller, cfg.offers_per_pair);
        let (handle, task) = crate::driver::channel(
            calls,
            limits,
            link,
            self.state.0.store.clone(),
            self.state.0.clock.clone(),
        );
        *self.driver.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        handle
    }

    /// Starts the call driver (if attached) and its log writer.
    pub fn spawn_background(&self, shutdown: Shutdown) -> Vec<natter_common::parts::Part> {
        match self.driver.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(task) => task.spawn(shutdown),
            None => Vec::new(),
        }
    }
}
