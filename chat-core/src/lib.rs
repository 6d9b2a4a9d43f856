//! Natter chat-core: the WebSocket gateway, the message and receipt pipeline,
//! per-device queues with store-and-forward, push for offline devices,
//! presence, typing and groups.
//!
//! Layers: pure decisions (`pipeline`) | storage trait (`store`) | drivers
//! (`writer`: the group-commit task, `hub`: who is connected, `gateway`: one task
//! per socket, `api`: REST). The service wiring is in [`service`].

pub mod account_limits;
pub mod api;
pub mod bus_fuzz;
mod call_event;
mod calls;
mod cluster;
pub mod config;
mod gateway;
pub use gateway::MAX_FRAMES_BEFORE_AUTH;
mod host;
mod hub;
pub mod pipeline;
pub mod presence;
pub mod push;
pub mod service;
mod state;
pub mod store;
mod writer;

pub use cluster::RedisConfig;
pub use config::{ChatConfig, PushBackend, PushConfig};
pub use service::ChatService;
pub use state::ChatState;
