//! Wiring: builds the auth state from configuration and runs its background
//! clean-up.

use crate::api::AuthState;
use crate::config::AuthConfig;
use crate::store::{self, AuthStore};
use natter_common::token::TokenKeys;
use natter_common::{Db, SharedClock, Shutdown};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// What the binary needs to start auth.
pub struct AuthService {
    /// Handler state.
    pub state: AuthState,
    store: Arc<dyn AuthStore>,
    clock: SharedClock,
}

impl AuthService {
    /// Opens the store (migrating when asked), builds the SMS sender and state.
    pub async fn build(
        cfg: AuthConfig,
        db: &Db,
        migrate: bool,
        data_dir: &Path,
        clock: SharedClock,
        tokens: Arc<TokenKeys>,
        access_ttl_secs: u32,
    ) -> Result<Self, String> {
        cfg.validate()?;
        let store = store::for_db(db);
        if migrate {
            store
                .migrate()
                .await
                .map_err(|e| format!("auth: migrations failed: {e}"))?;
        }
        let sms = crate::sms::from_config(&cfg.sms, data_dir)?;
        let state = AuthState::new(
            cfg,
            store.clone(),
            sms,
            clock.clone(),
            tokens,
            access_ttl_secs,
        )?;
        Ok(Self {
            state,
            store,
            clock,
        })
    }

    /// The HTTP routes.
    pub fn router(&self) -> axum::Router {
        crate::api::router(self.state.clone())
    }

    /// Deletes expired sessions, link codes and refresh tokens every few minutes
    /// until shutdown.
    pub fn spawn_cleanup(&self, shutdown: Shutdown) -> natter_common::parts::Part {
        let store = self.store.clone();
        let clock = self.clock.clone();
        natter_common::parts::Part::spawn("auth-cleanup", async move {
            let mut tick = tokio::time::interval(Duration::from_secs(300));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {
                        match store.purge_expired(clock.now_ms()).await {
                            Ok(n) if n > 0 => tracing::info!(rows = n, "auth: purged expired rows"),
                            Ok(_) => {}
                            Err(e) => tracing::warn!(error = %e, "auth: purge failed"),
                        }
                    }
                }
            }
        })
    }
}
