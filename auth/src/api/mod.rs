//! The auth HTTP API under `/v1`: handlers, state and the OpenAPI document.

mod account;
mod devices;
mod keys;
mod registration;
mod tokens;
pub mod types;

use crate::config::AuthConfig;
use crate::secrets::{SecretHasher, token_digest};
use crate::sms::SmsSender;
use crate::store::{AuthStore, Device, NewDevice, NewRefresh};
use axum::extract::{DefaultBodyLimit, FromRef, FromRequestParts};
use axum::http::request::Parts;
use natter_common::ratelimit::KeyedLimiter;
use natter_common::token::{Claims, TokenKeys};
use natter_common::{ApiError, Authed, SharedClock, TokenVerifier};
use std::sync::Arc;
use types::Credentials;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Everything the handlers share.
#[derive(Clone)]
pub struct AuthState(Arc<Inner>);

struct Inner {
    cfg: AuthConfig,
    store: Arc<dyn AuthStore>,
    hasher: SecretHasher,
    sms: Arc<dyn SmsSender>,
    clock: SharedClock,
    tokens: Arc<TokenKeys>,
    access_ttl_secs: i64,
    limits: Limits,
    /// Set once by the binary when media runs in the same process.
    avatar_refs: std::sync::OnceLock<Arc<dyn crate::avatars::AvatarRefs>>,
}

struct Limits {
    per_number: KeyedLimiter,
    per_ip: KeyedLimiter,
    per_prefix: KeyedLimiter,
    verify_per_ip: KeyedLimiter,
    /// Registration attempts (PIN and TOTP guesses) per IP: the same quota as
    /// code checks, a bucket of its own.
    register_per_ip: KeyedLimiter,
    link_per_ip: KeyedLimiter,
    refresh_per_ip: KeyedLimiter,
    key_fetch_per_user: KeyedLimiter,
    prekey_claims_per_pair: KeyedLimiter,
    prekey_claims_per_target: KeyedLimiter,
    lookup_per_user: KeyedLimiter,
}

impl AuthState {
    /// Builds the state; `cfg` must have passed `validate`.
    pub fn new(
        cfg: AuthConfig,
        store: Arc<dyn AuthStore>,
        sms: Arc<dyn SmsSender>,
        clock: SharedClock,
        tokens: Arc<TokenKeys>,
        access_ttl_secs: u32,
    ) -> Result<Self, String> {
        let hasher = SecretHasher::new(cfg.argon2).map_err(|e| format!("auth.argon2: {e}"))?;
        let limits = Limits {
            per_number: KeyedLimiter::new(cfg.limit_per_number),
            per_ip: KeyedLimiter::new(cfg.limit_per_ip),
            per_prefix: KeyedLimiter::new(cfg.limit_per_prefix),
            verify_per_ip: KeyedLimiter::new(cfg.limit_verify_per_ip),
            register_per_ip: KeyedLimiter::new(cfg.limit_verify_per_ip),
            link_per_ip: KeyedLimiter::new(cfg.limit_link_per_ip),
            refresh_per_ip: KeyedLimiter::new(cfg.limit_refresh_per_ip),
            key_fetch_per_user: KeyedLimiter::new(cfg.limit_key_fetch_per_user),
            prekey_claims_per_pair: KeyedLimiter::new(cfg.limit_prekey_claims_per_pair),
            prekey_claims_per_target: KeyedLimiter::new(cfg.limit_prekey_claims_per_target),
            lookup_per_user: KeyedLimiter::new(cfg.limit_lookup_per_user),
        };
        Ok(Self(Arc::new(Inner {
            cfg,
            store,
            hasher,
            sms,
            clock,
            tokens,
            access_ttl_secs: i64::from(access_ttl_secs),
            limits,
            avatar_refs: std::sync::OnceLock::new(),
        })))
    }

    /// Lets auth hold media references for avatars (see [`crate::avatars`]).
    /// Only the first call takes effect.
    pub fn set_avatar_refs(&self, refs: Arc<dyn crate::avatars::AvatarRefs>) {
        let _ = self.0.avatar_refs.set(refs);
    }

    fn avatar_refs(&self) -> Option<&Arc<dyn crate::avatars::AvatarRefs>> {
        self.0.avatar_refs.get()
    }

    /// The store (for background jobs and tests).
    pub fn store(&self) -> &Arc<dyn AuthStore> {
        &self.0.store
    }

    fn now_ms(&self) -> i64 {
        self.0.clock.now_ms()
    }

    /// Makes a new device record with fresh credentials; returns it with the
    /// plaintext refresh token (only its hash is stored).
    fn new_device(&self, name: &str) -> (NewDevice, String) {
        let refresh = natter_common::random::token();
        let device = NewDevice {
            name: name.to_owned(),
            generation: new_generation(),
            refresh: NewRefresh {
                token_hash: token_digest(&refresh),
                expires_at: self.now_ms() + i64::from(self.0.cfg.refresh_ttl_secs) * 1000,
            },
        };
        (device, refresh)
    }

    /// The credentials response for a stored device and its refresh token.
    fn credentials(
        &self,
        device: &Device,
        refresh_token: String,
        refresh_expires_at_ms: i64,
    ) -> Credentials {
        let now = self.0.clock.now_secs();
        let exp = now + self.0.access_ttl_secs;
        let claims = Claims {
            sub: device.user_id.clone(),
            dev: device.device_id as u32,
            generation: device.generation as u32,
            iat: now,
            exp,
        };
        Credentials {
            user_id: device.user_id.clone(),
            device_id: device.device_id as u32,
            access_token: self.0.tokens.sign(&claims),
            access_expires_at: exp,
            refresh_token,
            refresh_expires_at: refresh_expires_at_ms / 1000,
        }
    }
}

/// A random non-zero credential generation (fits the token's u32 claim).
fn new_generation() -> i64 {
    i64::from(u32::from_le_bytes(natter_common::random::bytes::<4>()).max(1))
}

impl FromRef<AuthState> for TokenVerifier {
    fn from_ref(state: &AuthState) -> Self {
        TokenVerifier {
            keys: state.0.tokens.clone(),
            clock: state.0.clock.clone(),
            // Checks the device itself, with its own store.
            live: None,
        }
    }
}

/// The caller's device, checked against the database: a valid token whose device
/// still exists with the same credential generation (so logout, removal and
/// re-registration take effect at once here, not only when the token expires).
pub struct LiveDevice(pub Device);

impl FromRequestParts<AuthState> for LiveDevice {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AuthState) -> Result<Self, ApiError> {
        let Authed(claims) = Authed::from_request_parts(parts, state).await?;
        let device = state
            .0
            .store
            .device(&claims.sub, i64::from(claims.dev))
            .await
            .map_err(ApiError::internal)?;
        match device {
            Some(d) if d.generation == i64::from(claims.generation) => Ok(LiveDevice(d)),
            _ => Err(ApiError::unauthorized(
                "token_revoked",
                "this device was logged out, removed or re-registered",
            )),
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Natter auth API",
        description = "Phone-number registration, accounts, devices, tokens, second factors and the end-to-end-encryption key directory.",
        version = "1"
    ),
    components(schemas(types::ErrorResponse)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

fn api_router() -> OpenApiRouter<AuthState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(registration::create_session))
        .routes(routes!(registration::get_session))
        .routes(routes!(registration::resend_code))
        .routes(routes!(registration::verify_code))
        .routes(routes!(registration::register))
        .routes(routes!(tokens::refresh))
        .routes(routes!(tokens::logout))
        .routes(routes!(devices::list_devices))
        .routes(routes!(devices::create_link_code))
        .routes(routes!(devices::link_device))
        .routes(routes!(devices::remove_device))
        .routes(routes!(account::get_account, account::delete_account))
        .routes(routes!(
            account::set_registration_lock,
            account::clear_registration_lock
        ))
        .routes(routes!(account::enrol_totp))
        .routes(routes!(account::confirm_totp))
        .routes(routes!(account::disable_totp))
        .routes(routes!(account::get_own_profile, account::update_profile))
        .routes(routes!(account::get_profile))
        .routes(routes!(account::lookup_number))
        .routes(routes!(keys::put_keys))
        .routes(routes!(keys::add_prekeys))
        .routes(routes!(keys::count_prekeys))
        .routes(routes!(keys::get_device_bundle))
        .routes(routes!(keys::get_user_bundles))
}

/// The OpenAPI document of this API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_router().split_for_parts().1
}

/// The auth routes (`/v1/...` and `/v1/openapi.json`), with body limits and
/// request metrics.
pub fn router(state: AuthState) -> axum::Router {
    let max_body = state.0.cfg.max_body_bytes;
    let (router, doc) = api_router().split_for_parts();
    let doc = Arc::new(doc);
    router
        .route(
            "/v1/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { axum::Json((*doc).clone()) }
            }),
        )
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(|req, next| {
            natter_common::metrics::track_http("auth", req, next)
        }))
        .with_state(state)
}
