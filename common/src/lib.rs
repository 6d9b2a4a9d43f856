//! Server plumbing shared by every Natter service: configuration pieces, secrets,
//! database pools, access-token verification, metrics, health endpoints, rate
//! limits and graceful shutdown. No service crate depends on another; they all
//! depend on this one.

pub mod secret;
pub mod shutdown;

pub use secret::Secret;
pub use shutdown::Shutdown;
