//! Server plumbing shared by every Natter service: configuration pieces, secrets,
//! database pools, access-token verification, metrics, health endpoints, rate
//! limits and graceful shutdown. No service crate depends on another; they all
//! depend on this one.

pub mod api;
pub mod calls;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod db;
pub mod health;
pub mod http;
pub mod json_errors;
pub mod listener;
pub mod metrics;
pub mod migrate;
pub mod parts;
pub mod random;
pub mod ratelimit;
pub mod secret;
pub mod secrets_file;
pub mod shutdown;
pub mod telemetry;
pub mod token;

#[cfg(feature = "testing")]
pub mod testing;

pub use api::{ApiError, ApiJson, Authed, TokenVerifier};
pub use clock::{Clock, SharedClock, SystemClock, UnixMillis};
pub use db::Db;
pub use secret::Secret;
pub use shutdown::Shutdown;
