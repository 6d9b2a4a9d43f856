//! STUN message header, attribute walk, MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT.

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::attr::{Attribute, AttributeType, AttributeValueError};
pub use super::txid::{MAGIC_COOKIE, TransactionId};

/// Length of the STUN header.
pub const HEADER_LEN: usize = 20;
/// We stop decoding messages with more attributes than this: no legitimate STUN or
/// TURN request carries more than a dozen, and the cap bounds the work per packet.
pub const MAX_ATTRIBUTES: usize = 48;
/// RFC 8489 §14.8: FINGERPRINT is the CRC-32 of the message XORed with this value.
const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// STUN message class (RFC 8489 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// A request, answered by a success or error response.
    Request,
    /// An indication: no response.
    Indication,
    /// A success response.
    Success,
    /// An error response.
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }

    fn from_bits(bits: u16) -> Class {
        match bits & 0b11 {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::Success,
            _ => Class::Error,
        }
    }
}

/// A STUN method (12 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Method(pub u16);

impl Method {
    /// RFC 8489 Binding.
    pub const BINDING: Method = Method(0x001);
    /// RFC 8656 Allocate.
    pub const ALLOCATE: Method = Method(0x003);
    /// RFC 8656 Refresh.
    pub const REFRESH: Method = Method(0x004);
    /// RFC 8656 Send (indication).
    pub const SEND: Method = Method(0x006);
    /// RFC 8656 Data (indication).
    pub const DATA: Method = Method(0x007);
    /// RFC 8656 CreatePermission.
    pub const CREATE_PERMISSION: Method = Method(0x008);
    /// RFC 8656 ChannelBind.
    pub const CHANNEL_BIND: Method = Method(0x009);

    /// A short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Method::BINDING => "binding",
            Method::ALLOCATE => "allocate",
            Method::REFRESH => "refresh",
            Method::SEND => "send",
            Method::DATA => "data",
            Method::CREATE_PERMISSION => "create_permission",
            Method::CHANNEL_BIND => "channel_bind",
            _ => "other",
        }
    }
}

/// Which integrity attribute protects a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntegrityKind {
    /// MESSAGE-INTEGRITY: HMAC-SHA1, 20 bytes.
    Sha1,
    /// MESSAGE-INTEGRITY-SHA256: HMAC-SHA256, 32 bytes (we always send the full length).
    Sha256,
}

/// Why bytes are not a STUN message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than the 20-byte header.
    #[error("message is {0} bytes, shorter than the 20-byte STUN header")]
    TooShort(usize),
    /// The two most significant bits of a STUN message are zero.
    #[error("first byte {0:#04x} has its top two bits set, so this is not STUN")]
    NotStun(u8),
    /// Wrong magic cookie (RFC 3489 messages are not supported).
    #[error("magic cookie was {0:#010x}, expected 0x2112a442")]
    BadCookie(u32),
    /// The header length is not a multiple of four.
    #[error("declared length {0} is not a multiple of 4")]
    UnalignedLength(u16),
    /// Header length and datagram size disagree.
    #[error("declared length {declared} but {actual} bytes follow the header")]
    LengthMismatch {
        /// Length in the header.
        declared: usize,
        /// Bytes actually present after the header.
        actual: usize,
    },
    /// An attribute runs past the end of the message.
    #[error(
        "attribute {typ:#06x} at offset {offset} declares {len} bytes, past the end of the message"
    )]
    AttributeOverrun {
        /// Attribute type.
        typ: u16,
        /// Offset of the attribute header.
        offset: usize,
        /// Declared value length.
        len: usize,
    },
    /// More than [`MAX_ATTRIBUTES`] attributes.
    #[error("more than {MAX_ATTRIBUTES} attributes")]
    TooManyAttributes,
    /// Something follows FINGERPRINT, which must be last.
    #[error("attribute {0:#06x} follows FINGERPRINT, which must be the last attribute")]
    AfterFingerprint(u16),
    /// FINGERPRINT does not match the CRC of the message.
    #[error("FINGERPRINT is {found:#010x} but the message's is {computed:#010x}")]
    FingerprintMismatch {
        /// Value carried by the message.
        found: u32,
        /// Value computed over the message.
        computed: u32,
    },
    /// An attribute value is malformed.
    #[error("attribute {typ:#06x}: {error}")]
    Attribute {
        /// Attribute type.
        typ: u16,
        /// What is wrong with its value.
        error: AttributeValueError,
    },
}

/// Why MESSAGE-INTEGRITY did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityError {
    /// Neither MESSAGE-INTEGRITY nor MESSAGE-INTEGRITY-SHA256 is present.
    #[error("message has no integrity attribute")]
    Missing,
    /// The HMAC does not match.
    #[error("{0:?} message integrity does not match")]
    Mismatch(IntegrityKind),
}

/// An attribute as it sits in the message: type, value and where it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawAttribute<'a> {
    /// Attribute type.
    pub typ: u16,
    /// Value without padding.
    pub value: &'a [u8],
    /// Offset of the attribute header within the message.
    pub offset: usize,
}

/// A decoded STUN message borrowing the datagram.
///
/// Attributes after MESSAGE-INTEGRITY other than MESSAGE-INTEGRITY-SHA256 and
/// FINGERPRINT are ignored, as RFC 8489 §14.5 requires; FINGERPRINT, when present,
/// has been verified by [`Message::decode`].
#[derive(Debug, Clone)]
pub struct Message<'a> {
    /// Message class.
    pub class: Class,
    /// Message method.
    pub method: Method,
    /// Transaction id.
    pub transaction_id: TransactionId,
    raw: &'a [u8],
    attributes: Vec<RawAttribute<'a>>,
    integrity_sha1: Option<usize>,
    integrity_sha256: Option<usize>,
    fingerprint: bool,
}

/// Cheap check used to demultiplex STUN from ChannelData and other traffic:
/// top bits zero, length aligned, magic cookie present.
pub fn looks_like_stun(data: &[u8]) -> bool {
    data.len() >= HEADER_LEN
        && data[0] & 0xC0 == 0
        && data[3] & 0x03 == 0
        && data[4..8] == MAGIC_COOKIE.to_be_bytes()
}

impl<'a> Message<'a> {
    /// Decodes one complete STUN message; `data` must hold exactly the message.
    pub fn decode(data: &'a [u8]) -> Result<Message<'a>, DecodeError> {
        if data.len() < HEADER_LEN {
            return Err(DecodeError::TooShort(data.len()));
        }
        if data[0] & 0xC0 != 0 {
            return Err(DecodeError::NotStun(data[0]));
        }
        let msg_type = u16::from_be_bytes([data[0], data[1]]);
        let length = u16::from_be_bytes([data[2], data[3]]);
        let cookie = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
        if cookie != MAGIC_COOKIE {
            return Err(DecodeError::BadCookie(cookie));
        }
        if !length.is_multiple_of(4) {
            return Err(DecodeError::UnalignedLength(length));
        }
        if usize::from(length) != data.len() - HEADER_LEN {
            return Err(DecodeError::LengthMismatch {
                declared: length.into(),
                actual: data.len() - HEADER_LEN,
            });
        }
        let mut tid = [0u8; 12];
        tid.copy_from_slice(&data[8..20]);
        let class = Class::from_bits(((msg_type >> 4) & 0b01) | ((msg_type >> 7) & 0b10));
        let method =
            Method((msg_type & 0x000F) | ((msg_type >> 1) & 0x0070) | ((msg_type >> 2) & 0x0F80));

        let mut msg = Message {
            class,
            method,
            transaction_id: TransactionId(tid),
            raw: data,
            attributes: Vec::new(),
            integrity_sha1: None,
            integrity_sha256: None,
            fingerprint: false,
        };
        let mut offset = HEADER_LEN;
        while offset < data.len() {
            if msg.fingerprint {
                let typ = u16::from_be_bytes([data[offset], data[offset + 1]]);
                return Err(DecodeError::AfterFingerprint(typ));
            }
            // `offset` stays 4-aligned and `data.len() - HEADER_LEN` is a multiple of 4,
            // so a whole attribute header is always available here.
            let typ = u16::from_be_bytes([data[offset], data[offset + 1]]);
            let len = usize::from(u16::from_be_bytes([data[offset + 2], data[offset + 3]]));
            let start = offset + 4;
            let padded = (len + 3) & !3;
            if start + padded > data.len() {
                return Err(DecodeError::AttributeOverrun { typ, offset, len });
            }
            let value = &data[start..start + len];
            let raw = RawAttribute { typ, value, offset };
            offset = start + padded;

            if typ == AttributeType::FINGERPRINT.0 {
                let found = attr_u32(typ, value)?;
                let computed =
                    fingerprint_of(&data[..raw.offset], (raw.offset + 8 - HEADER_LEN) as u16);
                if found != computed {
                    return Err(DecodeError::FingerprintMismatch { found, computed });
                }
                msg.fingerprint = true;
                continue;
            }
            if msg.integrity_sha256.is_some() {
                continue; // §14.6: only FINGERPRINT counts after MESSAGE-INTEGRITY-SHA256
            }
            if msg.integrity_sha1.is_some() && typ != AttributeType::MESSAGE_INTEGRITY_SHA256.0 {
                continue; // §14.5: ignored after MESSAGE-INTEGRITY
            }
            if msg.attributes.len() == MAX_ATTRIBUTES {
                return Err(DecodeError::TooManyAttributes);
            }
            if typ == AttributeType::MESSAGE_INTEGRITY.0 {
                if len != 20 {
                    return Err(DecodeError::Attribute {
                        typ,
                        error: AttributeValueError::BadLength {
                            len,
                            expected: "20",
                        },
                    });
                }
                msg.integrity_sha1 = Some(msg.attributes.len());
            } else if typ == AttributeType::MESSAGE_INTEGRITY_SHA256.0 {
                // §14.6: 16 to 32 bytes, a multiple of 4.
                if !(16..=32).contains(&len) || len % 4 != 0 {
                    return Err(DecodeError::Attribute {
                        typ,
                        error: AttributeValueError::BadLength {
                            len,
                            expected: "16..=32, a multiple of 4",
                        },
                    });
                }
                msg.integrity_sha256 = Some(msg.attributes.len());
            }
            msg.attributes.push(raw);
        }
        Ok(msg)
    }

    /// The bytes the message was decoded from.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// All attributes that count, in order (integrity attributes included, FINGERPRINT not).
    pub fn raw_attributes(&self) -> &[RawAttribute<'a>] {
        &self.attributes
    }

    /// The first attribute of a type, undecoded.
    pub fn find(&self, typ: AttributeType) -> Option<&RawAttribute<'a>> {
        self.attributes.iter().find(|a| a.typ == typ.0)
    }

    /// Decodes the first attribute of `typ`; `Ok(None)` when absent.
    pub fn get(&self, typ: AttributeType) -> Result<Option<Attribute<'a>>, DecodeError> {
        match self.find(typ) {
            None => Ok(None),
            Some(raw) => Attribute::decode(raw.typ, raw.value, &self.transaction_id)
                .map(Some)
                .map_err(|error| DecodeError::Attribute {
                    typ: raw.typ,
                    error,
                }),
        }
    }

    /// Decodes every attribute of `typ`, in order.
    pub fn get_all(&self, typ: AttributeType) -> Result<Vec<Attribute<'a>>, DecodeError> {
        self.attributes
            .iter()
            .filter(|a| a.typ == typ.0)
            .map(|raw| {
                Attribute::decode(raw.typ, raw.value, &self.transaction_id).map_err(|error| {
                    DecodeError::Attribute {
                        typ: raw.typ,
                        error,
                    }
                })
            })
            .collect()
    }

    /// Decodes all attributes in order.
    pub fn attributes(&self) -> Result<Vec<Attribute<'a>>, DecodeError> {
        self.attributes
            .iter()
            .map(|raw| {
                Attribute::decode(raw.typ, raw.value, &self.transaction_id).map_err(|error| {
                    DecodeError::Attribute {
                        typ: raw.typ,
                        error,
                    }
                })
            })
            .collect()
    }

    /// True when the message carried a (valid) FINGERPRINT.
    pub fn has_fingerprint(&self) -> bool {
        self.fingerprint
    }

    /// The integrity attribute that [`Message::verify_integrity`] will check:
    /// MESSAGE-INTEGRITY-SHA256 when present (RFC 8489 §9.2.4), else MESSAGE-INTEGRITY.
    pub fn integrity_kind(&self) -> Option<IntegrityKind> {
        if self.integrity_sha256.is_some() {
            Some(IntegrityKind::Sha256)
        } else if self.integrity_sha1.is_some() {
            Some(IntegrityKind::Sha1)
        } else {
            None
        }
    }

    /// Comprehension-required attribute types (< 0x8000) that `known` does not list.
    pub fn unknown_required(&self, known: impl Fn(u16) -> bool) -> Vec<u16> {
        let mut unknown: Vec<u16> = self
            .attributes
            .iter()
            .map(|a| a.typ)
            .filter(|&t| t < 0x8000 && !known(t))
            .collect();
        unknown.dedup();
        unknown
    }

    /// Checks MESSAGE-INTEGRITY-SHA256 (preferred) or MESSAGE-INTEGRITY with `key`,
    /// in constant time.
    pub fn verify_integrity(&self, key: &[u8]) -> Result<IntegrityKind, IntegrityError> {
        let (kind, index) = match (self.integrity_sha256, self.integrity_sha1) {
            (Some(i), _) => (IntegrityKind::Sha256, i),
            (None, Some(i)) => (IntegrityKind::Sha1, i),
            (None, None) => return Err(IntegrityError::Missing),
        };
        let attr = &self.attributes[index];
        let covered = &self.raw[..attr.offset];
        // §14.5: the length field counts up to and including the integrity attribute.
        let length = (attr.offset + 4 + attr.value.len() - HEADER_LEN) as u16;
        let mac = compute_hmac(kind, key, covered, length);
        let expected = &mac[..attr.value.len()];
        if bool::from(expected.ct_eq(attr.value)) {
            Ok(kind)
        } else {
            Err(IntegrityError::Mismatch(kind))
        }
    }
}

/// Builds a STUN message; add attributes, then [`MessageBuilder::finish`].
#[derive(Debug, Clone)]
pub struct MessageBuilder {
    buf: Vec<u8>,
    transaction_id: TransactionId,
}

impl MessageBuilder {
    /// Starts a message with the given header.
    pub fn new(class: Class, method: Method, transaction_id: TransactionId) -> MessageBuilder {
        let m = method.0 & 0x0FFF;
        let c = class.bits();
        let msg_type = (m & 0x000F)
            | ((m & 0x0070) << 1)
            | ((m & 0x0F80) << 2)
            | ((c & 1) << 4)
            | ((c & 2) << 7);
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&msg_type.to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&transaction_id.0);
        MessageBuilder {
            buf,
            transaction_id,
        }
    }

    /// Appends a typed attribute.
    pub fn add(&mut self, attr: &Attribute<'_>) -> &mut Self {
        let typ = attr.typ();
        let start = self.buf.len();
        self.buf.extend_from_slice(&typ.0.to_be_bytes());
        self.buf.extend_from_slice(&[0, 0]);
        attr.encode_value(&self.transaction_id, &mut self.buf);
        self.close_attribute(start);
        self
    }

    /// Appends an attribute with a raw value.
    pub fn add_raw(&mut self, typ: u16, value: &[u8]) -> &mut Self {
        let start = self.buf.len();
        self.buf.extend_from_slice(&typ.to_be_bytes());
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(value);
        self.close_attribute(start);
        self
    }

    fn close_attribute(&mut self, start: usize) {
        // Values are capped well below 64 KiB by the attribute encoders; the cast keeps
        // a bug from producing a wrong frame silently.
        let len = u16::try_from(self.buf.len() - start - 4).unwrap_or(u16::MAX);
        self.buf[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn set_length(&mut self, extra: usize) {
        let len = u16::try_from(self.buf.len() - HEADER_LEN + extra).unwrap_or(u16::MAX);
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
    }

    /// Adds MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256 (when `integrity` is given)
    /// and FINGERPRINT (when asked), fixes up the length and returns the bytes.
    pub fn finish(
        mut self,
        integrity: Option<(IntegrityKind, &[u8])>,
        fingerprint: bool,
    ) -> Vec<u8> {
        if let Some((kind, key)) = integrity {
            let (typ, size) = match kind {
                IntegrityKind::Sha1 => (AttributeType::MESSAGE_INTEGRITY, 20),
                IntegrityKind::Sha256 => (AttributeType::MESSAGE_INTEGRITY_SHA256, 32),
            };
            let length = (self.buf.len() - HEADER_LEN + 4 + size) as u16;
            let mac = compute_hmac(kind, key, &self.buf, length);
            self.buf.extend_from_slice(&typ.0.to_be_bytes());
            self.buf.extend_from_slice(&(size as u16).to_be_bytes());
            self.buf.extend_from_slice(&mac[..size]);
        }
        if fingerprint {
            let length = (self.buf.len() - HEADER_LEN + 8) as u16;
            let crc = fingerprint_of(&self.buf, length);
            self.buf
                .extend_from_slice(&AttributeType::FINGERPRINT.0.to_be_bytes());
            self.buf.extend_from_slice(&4u16.to_be_bytes());
            self.buf.extend_from_slice(&crc.to_be_bytes());
        }
        self.set_length(0);
        self.buf
    }
}

/// HMAC over `covered` (header included) with the header's length field replaced by `length`.
fn compute_hmac(kind: IntegrityKind, key: &[u8], covered: &[u8], length: u16) -> [u8; 32] {
    let mut out = [0u8; 32];
    let len = length.to_be_bytes();
    match kind {
        IntegrityKind::Sha1 => {
            // HMAC accepts keys of any length, so new_from_slice cannot fail.
            let mut mac =
                <Hmac<Sha1> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
            mac.update(&covered[..2]);
            mac.update(&len);
            mac.update(&covered[4..]);
            out[..20].copy_from_slice(&mac.finalize().into_bytes());
        }
        IntegrityKind::Sha256 => {
            let mut mac =
                <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
            mac.update(&covered[..2]);
            mac.update(&len);
            mac.update(&covered[4..]);
            out.copy_from_slice(&mac.finalize().into_bytes());
        }
    }
    out
}

/// CRC-32 of `covered` with the length field replaced, XORed per §14.8.
fn fingerprint_of(covered: &[u8], length: u16) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&covered[..2]);
    hasher.update(&length.to_be_bytes());
    hasher.update(&covered[4..]);
    hasher.finalize() ^ FINGERPRINT_XOR
}

fn attr_u32(typ: u16, value: &[u8]) -> Result<u32, DecodeError> {
    <[u8; 4]>::try_from(value)
        .map(u32::from_be_bytes)
        .map_err(|_| DecodeError::Attribute {
            typ,
            error: AttributeValueError::BadLength {
                len: value.len(),
                expected: "4",
            },
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tid() -> TransactionId {
        TransactionId([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
    }

    #[test]
    fn type_bits_round_trip_for_every_class_and_method() {
        for method in [0x001u16, 0x003, 0x009, 0x0FFF, 0x0ABC] {
            for class in [
                Class::Request,
                Class::Indication,
                Class::Success,
                Class::Error,
            ] {
                let bytes = MessageBuilder::new(class, Method(method), tid()).finish(None, false);
                let msg = Message::decode(&bytes).unwrap();
                assert_eq!((msg.class, msg.method), (class, Method(method)));
            }
        }
        // Known encodings from RFC 8489 §5 / RFC 8656.
        let b = MessageBuilder::new(Class::Success, Method::BINDING, tid()).finish(None, false);
        assert_eq!(&b[..2], &[0x01, 0x01]);
        let b = MessageBuilder::new(Class::Error, Method::ALLOCATE, tid()).finish(None, false);
        assert_eq!(&b[..2], &[0x01, 0x13]);
        let b = MessageBuilder::new(Class::Indication, Method::DATA, tid()).finish(None, false);
        assert_eq!(&b[..2], &[0x00, 0x17]);
    }

    #[test]
    fn header_errors_are_precise() {
        assert_eq!(
            Message::decode(&[0; 19]).unwrap_err(),
            DecodeError::TooShort(19)
        );
        let mut b = MessageBuilder::new(Class::Request, Method::BINDING, tid()).finish(None, false);
        b[4] = 0;
        assert!(matches!(
            Message::decode(&b),
            Err(DecodeError::BadCookie(_))
        ));
        let mut b = MessageBuilder::new(Class::Request, Method::BINDING, tid()).finish(None, false);
        b[3] = 4;
        assert_eq!(
            Message::decode(&b).unwrap_err(),
            DecodeError::LengthMismatch {
                declared: 4,
                actual: 0
            }
        );
        b[3] = 2;
        assert_eq!(
            Message::decode(&b).unwrap_err(),
            DecodeError::UnalignedLength(2)
        );
        b[0] = 0x80;
        assert_eq!(Message::decode(&b).unwrap_err(), DecodeError::NotStun(0x80));
    }

    #[test]
    fn attribute_overrun_is_rejected() {
        let mut b = MessageBuilder::new(Class::Request, Method::BINDING, tid());
        b.add_raw(0x8022, b"abcd");
        let mut bytes = b.finish(None, false);
        bytes[23] = 9; // declared 9 bytes, 4 present
        let err = Message::decode(&bytes).unwrap_err();
        assert_eq!(
            err,
            DecodeError::AttributeOverrun {
                typ: 0x8022,
                offset: 20,
                len: 9
            }
        );
    }

    #[test]
    fn fingerprint_is_checked_and_must_be_last() {
        let bytes = MessageBuilder::new(Class::Request, Method::BINDING, tid()).finish(None, true);
        assert!(Message::decode(&bytes).unwrap().has_fingerprint());
        let mut bad = bytes.clone();
        bad[27] ^= 1;
        assert!(matches!(
            Message::decode(&bad),
            Err(DecodeError::FingerprintMismatch { .. })
        ));
        // Header + FINGERPRINT + one more attribute: the CRC covers the header with the
        // length counted up to FINGERPRINT, so it verifies and the ordering check fires.
        let mut after = bytes[..HEADER_LEN].to_vec();
        after[2..4].copy_from_slice(&12u16.to_be_bytes());
        let crc = fingerprint_of(&after, 8);
        after.extend_from_slice(&[0x80, 0x28, 0x00, 0x04]);
        after.extend_from_slice(&crc.to_be_bytes());
        after.extend_from_slice(&[0x80, 0x22, 0x00, 0x00]);
        assert_eq!(
            Message::decode(&after).unwrap_err(),
            DecodeError::AfterFingerprint(0x8022)
        );
    }

    #[test]
    fn integrity_round_trips_and_detects_tampering() {
        for kind in [IntegrityKind::Sha1, IntegrityKind::Sha256] {
            let mut b = MessageBuilder::new(Class::Request, Method::ALLOCATE, tid());
            b.add(&Attribute::Username("alice"));
            let bytes = b.finish(Some((kind, b"key")), true);
            let msg = Message::decode(&bytes).unwrap();
            assert_eq!(msg.integrity_kind(), Some(kind));
            assert_eq!(msg.verify_integrity(b"key"), Ok(kind));
            assert_eq!(
                msg.verify_integrity(b"other"),
                Err(IntegrityError::Mismatch(kind))
            );
        }
        let bytes =
            MessageBuilder::new(Class::Request, Method::ALLOCATE, tid()).finish(None, false);
        assert_eq!(
            Message::decode(&bytes).unwrap().verify_integrity(b"k"),
            Err(IntegrityError::Missing)
        );
    }

    #[test]
    fn attributes_after_integrity_are_ignored() {
        let mut b = MessageBuilder::new(Class::Request, Method::ALLOCATE, tid());
        b.add(&Attribute::Username("alice"));
        let mut bytes = b.finish(Some((IntegrityKind::Sha1, b"key")), false);
        bytes.extend_from_slice(&[0x00, 0x06, 0x00, 0x04, b'e', b'v', b'i', b'l']);
        let len = (bytes.len() - HEADER_LEN) as u16;
        bytes[2..4].copy_from_slice(&len.to_be_bytes());
        let msg = Message::decode(&bytes).unwrap();
        assert_eq!(
            msg.get_all(AttributeType::USERNAME).unwrap(),
            vec![Attribute::Username("alice")]
        );
        assert_eq!(msg.verify_integrity(b"key"), Ok(IntegrityKind::Sha1));
    }

    #[test]
    fn truncated_sha256_integrity_is_accepted_when_it_matches() {
        let mut b = MessageBuilder::new(Class::Request, Method::ALLOCATE, tid());
        b.add(&Attribute::Username("bob"));
        let prefix_len = b.buf.len();
        let mut bytes = b.buf.clone();
        let length = (prefix_len - HEADER_LEN + 4 + 16) as u16;
        let mac = compute_hmac(IntegrityKind::Sha256, b"key", &bytes, length);
        bytes.extend_from_slice(&[0x00, 0x1C, 0x00, 0x10]);
        bytes.extend_from_slice(&mac[..16]);
        bytes[2..4].copy_from_slice(&(length).to_be_bytes());
        let msg = Message::decode(&bytes).unwrap();
        assert_eq!(msg.verify_integrity(b"key"), Ok(IntegrityKind::Sha256));
        // 12 bytes is below the RFC minimum.
        let mut short = bytes[..prefix_len].to_vec();
        short.extend_from_slice(&[0x00, 0x1C, 0x00, 0x0C]);
        short.extend_from_slice(&mac[..12]);
        let len = (short.len() - HEADER_LEN) as u16;
        short[2..4].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(
            Message::decode(&short),
            Err(DecodeError::Attribute { typ: 0x001C, .. })
        ));
    }

    #[test]
    fn too_many_attributes_is_rejected() {
        let mut b = MessageBuilder::new(Class::Request, Method::BINDING, tid());
        for _ in 0..=MAX_ATTRIBUTES {
            b.add_raw(0x8022, b"x");
        }
        let bytes = b.finish(None, false);
        assert_eq!(
            Message::decode(&bytes).unwrap_err(),
            DecodeError::TooManyAttributes
        );
    }

    #[test]
    fn looks_like_stun_demultiplexes() {
        let bytes = MessageBuilder::new(Class::Request, Method::BINDING, tid()).finish(None, false);
        assert!(looks_like_stun(&bytes));
        assert!(!looks_like_stun(&[0x40, 0x00, 0x00, 0x00]));
        assert!(!looks_like_stun(&bytes[..19]));
    }
}
