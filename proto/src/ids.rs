//! Identifiers. Newtypes keep a user id from being passed where a group id is
//! expected; all are transparent in JSON.

use serde::{Deserialize, Serialize};

/// An account, as issued by auth (`sub` of the access token).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub String);

/// A group conversation, issued by the server.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GroupId(pub String);

/// A device within an account (1 = primary).
pub type DeviceId = u32;

/// A message, numbered by the server when it is stored.
pub type MsgId = u64;

/// A queued receipt, numbered by the server; acknowledged with `ack`.
pub type ReceiptId = u64;

/// The id a client gives a message it sends; resending the same id from the
/// same device is idempotent. 1 to 64 characters of `[A-Za-z0-9_.:-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientMsgId(pub String);

/// What a message is (`text`, `image`, …): 1 to 32 characters of `[a-z0-9._-]`,
/// chosen by clients; `system` is reserved for messages the server writes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Kind(pub String);

/// Longest client message id.
pub const MAX_CLIENT_MSG_ID_LEN: usize = 64;
/// Longest kind.
pub const MAX_KIND_LEN: usize = 32;
/// Longest user or group id accepted in a frame.
pub const MAX_ID_LEN: usize = 128;

impl UserId {
    /// Wraps a string.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Non-empty, at most 128 bytes, printable ASCII without spaces.
    pub fn is_valid(&self) -> bool {
        valid_id(&self.0, MAX_ID_LEN)
    }
}

impl GroupId {
    /// Wraps a string.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Non-empty, at most 128 bytes, printable ASCII without spaces.
    pub fn is_valid(&self) -> bool {
        valid_id(&self.0, MAX_ID_LEN)
    }
}

impl ClientMsgId {
    /// Wraps a string.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// 1 to 64 characters of `[A-Za-z0-9_.:-]`.
    pub fn is_valid(&self) -> bool {
        !self.0.is_empty()
            && self.0.len() <= MAX_CLIENT_MSG_ID_LEN
            && self
                .0
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
    }
}

impl Kind {
    /// The kind servers write for group events.
    pub const SYSTEM: &'static str = "system";

    /// Wraps a string.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// `text`, the default.
    pub fn text() -> Self {
        Self("text".into())
    }
    /// The kind.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// 1 to 32 characters of `[a-z0-9._-]`.
    pub fn is_valid(&self) -> bool {
        !self.0.is_empty()
            && self.0.len() <= MAX_KIND_LEN
            && self.0.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
            })
    }
}

impl Default for Kind {
    fn default() -> Self {
        Self::text()
    }
}

fn valid_id(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_graphic())
}

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for GroupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for ClientMsgId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Unix time in milliseconds.
pub type Millis = i64;

/// The sending side of a message (or a call).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct From {
    /// Account.
    pub user: UserId,
    /// Device (0 for messages the server writes).
    pub device: DeviceId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_rules() {
        assert!(ClientMsgId::new("a-1_b.c:d").is_valid());
        assert!(!ClientMsgId::new("").is_valid());
        assert!(!ClientMsgId::new("has space").is_valid());
        assert!(!ClientMsgId::new("x".repeat(65)).is_valid());
        assert!(Kind::new("image.jpeg").is_valid());
        assert!(!Kind::new("Text").is_valid());
        assert!(!Kind::new("").is_valid());
        assert!(UserId::new("0b5f3c1e-1d2c").is_valid());
        assert!(!UserId::new("a b").is_valid());
        assert!(!GroupId::new("").is_valid());
    }
}
