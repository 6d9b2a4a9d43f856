//! Wire formats: STUN messages (RFC 8489) with the TURN attributes (RFC 8656),
//! ChannelData messages, and the framing of both on stream transports.
//!
//! Decoding borrows from the input and never panics on any byte sequence; every
//! rejection is a [`DecodeError`] naming the offending value.

mod attr;
mod channel;
mod message;
mod txid;

pub use attr::{
    Attribute, AttributeType, ErrorCode, Family, PASSWORD_ALGORITHM_MD5, PASSWORD_ALGORITHM_SHA256,
};
pub use channel::{
    CHANNEL_MAX, CHANNEL_MIN, ChannelData, ChannelDataError, FramingError, looks_like_channel_data,
    stream_frame_len,
};
pub use message::{
    Class, DecodeError, HEADER_LEN, IntegrityError, IntegrityKind, MAGIC_COOKIE, MAX_ATTRIBUTES,
    Message, MessageBuilder, Method, RawAttribute, TransactionId, looks_like_stun,
};
