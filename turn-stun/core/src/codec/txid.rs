//! The parts of the STUN header that attributes need too (XOR-MAPPED-ADDRESS
//! is masked with both), kept apart so `attr` and `message` do not import
//! each other.

/// RFC 8489 §5: the fixed value in bytes 4..8 of every STUN message.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;

/// The 96-bit transaction id of a STUN message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransactionId(pub [u8; 12]);
