//! Natter auth: phone-number + one-time-code registration, accounts, devices,
//! tokens, registration-lock PIN and TOTP second factor, and the
//! end-to-end-encryption key directory.
//!
//! Layers: pure rules (`phone`, `rules`, `secrets`) | storage trait (`store`)
//! | axum handlers (`api`). The service wiring is in [`service`].

pub mod api;
pub mod avatars;
pub mod config;
pub mod phone;
pub mod rules;
pub mod secrets;
pub mod service;
pub mod sms;
pub mod store;

pub use api::{AuthState, openapi, router};
pub use avatars::{AvatarRefError, AvatarRefs};
pub use config::AuthConfig;
