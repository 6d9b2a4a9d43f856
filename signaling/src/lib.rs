//! Natter call signaling: the call state machine ([`call`], sans-IO) and its
//! tokio driver ([`driver`]), the ICE servers endpoint with TURN REST
//! credentials ([`ice`]), and the call log ([`store`], [`api`]).
//!
//! Call frames ride the chat WebSocket: chat-core hands `call.*` frames to the
//! [`driver::CallDriver`] through the seam in [`natter_common::calls`], and
//! the driver answers through chat-core's device link. No dependency on
//! chat-core: the `natter` binary plugs them together.

pub mod api;
pub mod call;
pub mod config;
pub mod driver;
pub mod ice;
pub mod service;
pub mod state;
pub mod store;

pub use api::openapi;
pub use config::SignalingConfig;
pub use service::SignalingService;
pub use state::SignalingState;
