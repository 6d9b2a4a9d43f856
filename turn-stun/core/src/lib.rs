//! Sans-IO STUN/TURN: the message codec and the allocation state machine of Natter's
//! TURN server, with no sockets, no async runtime and no clock of its own.
//!
//! * [`codec`]: STUN messages (RFC 8489) with TURN attributes (RFC 8656), ChannelData,
//!   and framing on TCP/TLS streams.
//! * [`auth`]: long-term credentials (TURN REST API and static users), stateless nonces.
//! * [`policy`]: which peers may be relayed to.
//! * [`server`]: the state machine; its module docs state the driving contract.
//!
//! The `natter-turn` crate drives this with tokio sockets.

#![warn(missing_docs)]

mod alloc;
pub mod auth;
pub mod codec;
pub mod fuzz;
mod fuzz_lifecycle;
mod limiter;
pub mod policy;
pub mod server;
pub mod testkit;

pub use alloc::{CHANNEL_COOLDOWN, CHANNEL_LIFETIME, PERMISSION_LIFETIME};
pub use codec::{looks_like_channel_data, looks_like_stun};
pub use server::{
    AllocationId, AuthFailure, CloseReason, Destination, Event, FiveTuple, InputError, PortRequest,
    Quotas, Refusal, RelayRequest, ReservationId, Server, ServerConfig, Stats, Transmit, Transport,
    WallClock,
};
