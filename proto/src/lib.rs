//! The Natter wire protocol, defined once for the server and every client.
//!
//! Clients speak JSON text frames over one WebSocket per device at `/v1/ws`.
//! Every frame is an object with a `type` field; [`ClientFrame`] lists what a
//! device may send and [`ServerFrame`] what the server sends. Message bodies are
//! opaque bytes (clients may encrypt them end to end) carried as base64.
//! Errors carry a stable [`ErrorCode`]; the server closes sockets with a
//! documented [`CloseCode`]. `docs/protocol.md` describes every frame with examples.
//!
//! Versioning: the URL carries the major version (`/v1/ws`) and the `hello`
//! frame the exact [`PROTOCOL_VERSION`]. Additions (new frame types, new optional
//! fields) keep the version; clients ignore fields they do not know. Frame types
//! with a dotted prefix (`presence.*`, and `call.*` for call signaling)
//! group related frames.
//!
//! This crate is serde only: no I/O, no async runtime.

mod body;
mod call;
mod codes;
mod decode;
mod frames;
mod ids;

pub mod fuzz;

pub use body::Body;
pub use call::{
    CallAnswer, CallAnswered, CallClientFrame, CallEnded, CallIce, CallId, CallIncoming, CallMedia,
    CallOffer, CallRef, CallRinging, CallUpdate, EndReason, MAX_CANDIDATE_LEN, MAX_SDP_LEN,
    SdpKind,
};
pub use codes::{CloseCode, ErrorCode};
pub use decode::{DecodeError, decode_client_frame, decode_server_frame, describe_frame};
pub use frames::*;
pub use ids::{
    ClientMsgId, DeviceId, From, GroupId, Kind, MAX_CLIENT_MSG_ID_LEN, MAX_ID_LEN, MAX_KIND_LEN,
    Millis, MsgId, ReceiptId, UserId,
};

/// The protocol version spoken by this crate (`hello.v`).
pub const PROTOCOL_VERSION: u32 = 1;

/// The WebSocket path of this protocol version.
pub const WS_PATH: &str = "/v1/ws";
