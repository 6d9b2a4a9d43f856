//! Stable error codes (in `error` frames and REST error bodies) and WebSocket
//! close codes. Both are public API: add, never renumber or rename.

use serde::{Deserialize, Serialize};

/// Why a frame was refused. The connection stays open after an `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not an object, no `type`, or a binary frame.
    MalformedFrame,
    /// `type` names no frame this server knows.
    UnknownType,
    /// A known frame with a missing, mistyped or out-of-range field (the message names it).
    InvalidFrame,
    /// A frame other than `auth` before authentication.
    NotAuthenticated,
    /// A second `auth` frame.
    AlreadyAuthenticated,
    /// The access token is malformed, forged or signed with an unknown key.
    InvalidToken,
    /// The access token expired; refresh it.
    TokenExpired,
    /// The device was removed, logged out or re-registered.
    DeviceRevoked,
    /// The `v` asked for is not spoken here.
    UnsupportedVersion,
    /// The decoded body is larger than `max_body_bytes`.
    BodyTooLarge,
    /// The recipient user does not exist.
    UnknownRecipient,
    /// The group does not exist.
    UnknownGroup,
    /// The sender is not a member of the group.
    NotAMember,
    /// A message id the device has no pending message for.
    UnknownMessage,
    /// Too many frames of this kind; `retry_after_ms` says when to try again.
    RateLimited,
    /// Too many presence subscriptions on this connection.
    SubscriptionLimit,
    /// The caller may not do this (not an admin, privacy setting).
    Forbidden,
    /// The group is at its member limit.
    GroupFull,
    /// The server failed; the frame may be retried (sends are idempotent).
    InternalError,
    /// No live call with this id that this device takes part in.
    UnknownCall,
    /// A `call.offer` reused the id of a live call.
    CallExists,
    /// A `call.offer` from a user already in a call (or placing one).
    CallInProgress,
    /// Call signaling is not running on this server.
    CallsUnavailable,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedFrame => "malformed_frame",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidFrame => "invalid_frame",
            ErrorCode::NotAuthenticated => "not_authenticated",
            ErrorCode::AlreadyAuthenticated => "already_authenticated",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::DeviceRevoked => "device_revoked",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::UnknownRecipient => "unknown_recipient",
            ErrorCode::UnknownGroup => "unknown_group",
            ErrorCode::NotAMember => "not_a_member",
            ErrorCode::UnknownMessage => "unknown_message",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::SubscriptionLimit => "subscription_limit",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::GroupFull => "group_full",
            ErrorCode::InternalError => "internal_error",
            ErrorCode::UnknownCall => "unknown_call",
            ErrorCode::CallExists => "call_exists",
            ErrorCode::CallInProgress => "call_in_progress",
            ErrorCode::CallsUnavailable => "calls_unavailable",
        }
    }

    /// Every code, for documentation tests.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::MalformedFrame,
        ErrorCode::UnknownType,
        ErrorCode::InvalidFrame,
        ErrorCode::NotAuthenticated,
        ErrorCode::AlreadyAuthenticated,
        ErrorCode::InvalidToken,
        ErrorCode::TokenExpired,
        ErrorCode::DeviceRevoked,
        ErrorCode::UnsupportedVersion,
        ErrorCode::BodyTooLarge,
        ErrorCode::UnknownRecipient,
        ErrorCode::UnknownGroup,
        ErrorCode::NotAMember,
        ErrorCode::UnknownMessage,
        ErrorCode::RateLimited,
        ErrorCode::SubscriptionLimit,
        ErrorCode::Forbidden,
        ErrorCode::GroupFull,
        ErrorCode::InternalError,
        ErrorCode::UnknownCall,
        ErrorCode::CallExists,
        ErrorCode::CallInProgress,
        ErrorCode::CallsUnavailable,
    ];
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the server closed a socket (the WebSocket close frame's code).
///
/// 1000–1011 are RFC 6455 codes; 4000–4999 are private to this protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum CloseCode {
    /// The client asked to close.
    Normal = 1000,
    /// The server is shutting down or restarting; reconnect (to another node).
    GoingAway = 1001,
    /// A frame broke RFC 6455 (unmasked, a control frame over 125 bytes or
    /// fragmented, reserved bits or opcodes).
    ProtocolError = 1002,
    /// A text frame that is not UTF-8.
    InvalidPayload = 1007,
    /// Flooding: too many refused frames in a row.
    PolicyViolation = 1008,
    /// A frame larger than `max_frame_bytes`.
    MessageTooBig = 1009,
    /// The server failed.
    InternalError = 1011,
    /// Another connection for the same device replaced this one. Do not reconnect
    /// automatically (the other connection would be replaced in turn).
    Replaced = 4000,
    /// The token is malformed, forged or signed with an unknown key.
    AuthFailed = 4001,
    /// The token expired: refresh it, then reconnect.
    TokenExpired = 4002,
    /// The device no longer exists or its credentials were reissued (logout,
    /// removal, re-registration). Do not reconnect with these credentials.
    DeviceRevoked = 4003,
    /// No `auth` frame within `auth_timeout_secs`.
    AuthTimeout = 4004,
    /// Nothing received for `idle_timeout_secs` (not even a pong).
    IdleTimeout = 4005,
    /// The device did not read fast enough and its outbound queue filled. Its
    /// messages stay queued on the server; reconnect to drain them.
    SlowConsumer = 4006,
    /// The client asked for a protocol version the server does not speak.
    UnsupportedVersion = 4007,
}

impl CloseCode {
    /// The numeric code.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// A short reason for the close frame.
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "bye",
            CloseCode::GoingAway => "server going away",
            CloseCode::ProtocolError => "websocket protocol error",
            CloseCode::InvalidPayload => "text frame is not UTF-8",
            CloseCode::PolicyViolation => "too many refused frames",
            CloseCode::MessageTooBig => "frame too big",
            CloseCode::InternalError => "internal error",
            CloseCode::Replaced => "replaced by a newer connection for this device",
            CloseCode::AuthFailed => "authentication failed",
            CloseCode::TokenExpired => "token expired",
            CloseCode::DeviceRevoked => "device revoked",
            CloseCode::AuthTimeout => "no auth frame in time",
            CloseCode::IdleTimeout => "idle timeout",
            CloseCode::SlowConsumer => "slow consumer: outbound queue full",
            CloseCode::UnsupportedVersion => "unsupported protocol version",
        }
    }

    /// The code for a number, if it is one of ours.
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.code() == code)
    }

    /// Whether a client should reconnect automatically after this close.
    pub fn should_reconnect(self) -> bool {
        !matches!(
            self,
            CloseCode::Replaced
                | CloseCode::AuthFailed
                | CloseCode::DeviceRevoked
                | CloseCode::UnsupportedVersion
        )
    }

    /// Every code, for documentation tests.
    pub const ALL: &'static [CloseCode] = &[
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::ProtocolError,
        CloseCode::InvalidPayload,
        CloseCode::PolicyViolation,
        CloseCode::MessageTooBig,
        CloseCode::InternalError,
        CloseCode::Replaced,
        CloseCode::AuthFailed,
        CloseCode::TokenExpired,
        CloseCode::DeviceRevoked,
        CloseCode::AuthTimeout,
        CloseCode::IdleTimeout,
        CloseCode::SlowConsumer,
        CloseCode::UnsupportedVersion,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        for c in ErrorCode::ALL {
            let j = serde_json::to_string(c).unwrap();
            assert_eq!(j, format!("\"{}\"", c.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&j).unwrap(), *c);
        }
        for c in CloseCode::ALL {
            assert_eq!(CloseCode::from_code(c.code()), Some(*c));
        }
        assert_eq!(CloseCode::Replaced.code(), 4000);
        assert_eq!(CloseCode::MessageTooBig.code(), 1009);
        assert!(!CloseCode::Replaced.should_reconnect());
        assert!(CloseCode::SlowConsumer.should_reconnect());
    }
}
