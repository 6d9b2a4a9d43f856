//! Typed STUN/TURN attributes: decoding from and encoding to attribute values.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::txid::{MAGIC_COOKIE, TransactionId};

/// RFC 8489 §14.12 PASSWORD-ALGORITHM value for MD5.
pub const PASSWORD_ALGORITHM_MD5: u16 = 0x0001;
/// RFC 8489 §14.12 PASSWORD-ALGORITHM value for SHA-256.
pub const PASSWORD_ALGORITHM_SHA256: u16 = 0x0002;

/// Longest USERNAME value (RFC 8489 §14.3: less than 509 bytes; we allow the 513 of RFC 5389).
const MAX_USERNAME: usize = 513;
/// Longest REALM, NONCE, SOFTWARE and reason phrase (§14.9: fewer than 128 characters,
/// which can take up to 763 bytes of UTF-8).
const MAX_TEXT: usize = 763;

/// A STUN attribute type number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttributeType(pub u16);

impl AttributeType {
    /// RFC 8489.
    pub const MAPPED_ADDRESS: Self = Self(0x0001);
    /// RFC 8489.
    pub const USERNAME: Self = Self(0x0006);
    /// RFC 8489.
    pub const MESSAGE_INTEGRITY: Self = Self(0x0008);
    /// RFC 8489.
    pub const ERROR_CODE: Self = Self(0x0009);
    /// RFC 8489.
    pub const UNKNOWN_ATTRIBUTES: Self = Self(0x000A);
    /// RFC 8656.
    pub const CHANNEL_NUMBER: Self = Self(0x000C);
    /// RFC 8656.
    pub const LIFETIME: Self = Self(0x000D);
    /// RFC 8656.
    pub const XOR_PEER_ADDRESS: Self = Self(0x0012);
    /// RFC 8656.
    pub const DATA: Self = Self(0x0013);
    /// RFC 8489.
    pub const REALM: Self = Self(0x0014);
    /// RFC 8489.
    pub const NONCE: Self = Self(0x0015);
    /// RFC 8656.
    pub const XOR_RELAYED_ADDRESS: Self = Self(0x0016);
    /// RFC 8656.
    pub const REQUESTED_ADDRESS_FAMILY: Self = Self(0x0017);
    /// RFC 8656.
    pub const EVEN_PORT: Self = Self(0x0018);
    /// RFC 8656.
    pub const REQUESTED_TRANSPORT: Self = Self(0x0019);
    /// RFC 8656.
    pub const DONT_FRAGMENT: Self = Self(0x001A);
    /// RFC 8489.
    pub const MESSAGE_INTEGRITY_SHA256: Self = Self(0x001C);
    /// RFC 8489.
    pub const PASSWORD_ALGORITHM: Self = Self(0x001D);
    /// RFC 8489.
    pub const USERHASH: Self = Self(0x001E);
    /// RFC 8489.
    pub const XOR_MAPPED_ADDRESS: Self = Self(0x0020);
    /// RFC 8656.
    pub const RESERVATION_TOKEN: Self = Self(0x0022);
    /// RFC 8445 (ICE); tolerated in Binding requests.
    pub const PRIORITY: Self = Self(0x0024);
    /// RFC 8445 (ICE); tolerated in Binding requests.
    pub const USE_CANDIDATE: Self = Self(0x0025);
    /// RFC 8489.
    pub const PASSWORD_ALGORITHMS: Self = Self(0x8002);
    /// RFC 8489.
    pub const ALTERNATE_DOMAIN: Self = Self(0x8003);
    /// RFC 8489.
    pub const SOFTWARE: Self = Self(0x8022);
    /// RFC 8489.
    pub const ALTERNATE_SERVER: Self = Self(0x8023);
    /// RFC 8489.
    pub const FINGERPRINT: Self = Self(0x8028);
    /// RFC 8656.
    pub const ADDITIONAL_ADDRESS_FAMILY: Self = Self(0x8000);
    /// RFC 8656.
    pub const ADDRESS_ERROR_CODE: Self = Self(0x8001);
    /// RFC 8656.
    pub const ICMP: Self = Self(0x8004);
}

/// IP address family as encoded in STUN (RFC 8489 §14.1, RFC 8656 §18.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// 0x01
    V4,
    /// 0x02
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    fn code(self) -> u8 {
        match self {
            Family::V4 => 0x01,
            Family::V6 => 0x02,
        }
    }

    fn from_code(code: u8) -> Result<Family, AttributeValueError> {
        match code {
            0x01 => Ok(Family::V4),
            0x02 => Ok(Family::V6),
            other => Err(AttributeValueError::UnknownFamily(other)),
        }
    }
}

/// An ERROR-CODE value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode<'a> {
    /// 300..=699.
    pub code: u16,
    /// Reason phrase.
    pub reason: &'a str,
}

impl ErrorCode<'static> {
    /// 300 Try Alternate.
    pub const TRY_ALTERNATE: Self = Self {
        code: 300,
        reason: "Try Alternate",
    };
    /// 400 Bad Request.
    pub const BAD_REQUEST: Self = Self {
        code: 400,
        reason: "Bad Request",
    };
    /// 401 Unauthenticated.
    pub const UNAUTHENTICATED: Self = Self {
        code: 401,
        reason: "Unauthenticated",
    };
    /// 403 Forbidden.
    pub const FORBIDDEN: Self = Self {
        code: 403,
        reason: "Forbidden",
    };
    /// 420 Unknown Attribute.
    pub const UNKNOWN_ATTRIBUTE: Self = Self {
        code: 420,
        reason: "Unknown Attribute",
    };
    /// 437 Allocation Mismatch.
    pub const ALLOCATION_MISMATCH: Self = Self {
        code: 437,
        reason: "Allocation Mismatch",
    };
    /// 438 Stale Nonce.
    pub const STALE_NONCE: Self = Self {
        code: 438,
        reason: "Stale Nonce",
    };
    /// 440 Address Family not Supported.
    pub const ADDRESS_FAMILY_NOT_SUPPORTED: Self = Self {
        code: 440,
        reason: "Address Family not Supported",
    };
    /// 441 Wrong Credentials.
    pub const WRONG_CREDENTIALS: Self = Self {
        code: 441,
        reason: "Wrong Credentials",
    };
    /// 442 Unsupported Transport Protocol.
    pub const UNSUPPORTED_TRANSPORT: Self = Self {
        code: 442,
        reason: "Unsupported Transport Protocol",
    };
    /// 443 Peer Address Family Mismatch.
    pub const PEER_ADDRESS_FAMILY_MISMATCH: Self = Self {
        code: 443,
        reason: "Peer Address Family Mismatch",
    };
    /// 486 Allocation Quota Reached.
    pub const ALLOCATION_QUOTA_REACHED: Self = Self {
        code: 486,
        reason: "Allocation Quota Reached",
    };
    /// 500 Server Error.
    pub const SERVER_ERROR: Self = Self {
        code: 500,
        reason: "Server Error",
    };
    /// 508 Insufficient Capacity.
    pub const INSUFFICIENT_CAPACITY: Self = Self {
        code: 508,
        reason: "Insufficient Capacity",
    };
}

/// What is wrong with one attribute value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttributeValueError {
    /// Value length not what the attribute needs.
    #[error("value is {len} bytes, expected {expected}")]
    BadLength {
        /// Actual length.
        len: usize,
        /// What the attribute allows.
        expected: &'static str,
    },
    /// Text too long.
    #[error("value is {len} bytes, more than the {max} allowed")]
    TooLong {
        /// Actual length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Text is not UTF-8.
    #[error("value is not valid UTF-8")]
    NotUtf8,
    /// Unknown address family byte.
    #[error("unknown address family {0:#04x}")]
    UnknownFamily(u8),
    /// ERROR-CODE class/number out of range.
    #[error("error class {class} number {number} is not a 300..=699 code")]
    BadErrorCode {
        /// Hundreds digit.
        class: u8,
        /// Remainder.
        number: u8,
    },
}

/// A typed attribute. Values borrow from the message they were decoded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute<'a> {
    /// MAPPED-ADDRESS (not XORed; sent only for RFC 3489 clients, decoded for completeness).
    MappedAddress(SocketAddr),
    /// XOR-MAPPED-ADDRESS: the client's reflexive address.
    XorMappedAddress(SocketAddr),
    /// XOR-PEER-ADDRESS.
    XorPeerAddress(SocketAddr),
    /// XOR-RELAYED-ADDRESS.
    XorRelayedAddress(SocketAddr),
    /// ALTERNATE-SERVER.
    AlternateServer(SocketAddr),
    /// USERNAME.
    Username(&'a str),
    /// REALM.
    Realm(&'a str),
    /// NONCE.
    Nonce(&'a str),
    /// SOFTWARE.
    Software(&'a str),
    /// ALTERNATE-DOMAIN.
    AlternateDomain(&'a str),
    /// ERROR-CODE.
    ErrorCode(ErrorCode<'a>),
    /// UNKNOWN-ATTRIBUTES.
    UnknownAttributes(Vec<u16>),
    /// CHANNEL-NUMBER.
    ChannelNumber(u16),
    /// LIFETIME in seconds.
    Lifetime(u32),
    /// DATA.
    Data(&'a [u8]),
    /// REQUESTED-TRANSPORT protocol number (17 = UDP, 6 = TCP).
    RequestedTransport(u8),
    /// REQUESTED-ADDRESS-FAMILY.
    RequestedAddressFamily(Family),
    /// ADDITIONAL-ADDRESS-FAMILY.
    AdditionalAddressFamily(Family),
    /// ADDRESS-ERROR-CODE: which family failed, and why.
    AddressErrorCode(Family, ErrorCode<'a>),
    /// EVEN-PORT; the flag is the R bit (reserve the next port too).
    EvenPort(bool),
    /// DONT-FRAGMENT.
    DontFragment,
    /// RESERVATION-TOKEN.
    ReservationToken([u8; 8]),
    /// PASSWORD-ALGORITHM: algorithm number and parameters.
    PasswordAlgorithm(u16, &'a [u8]),
    /// MESSAGE-INTEGRITY value (decoded for completeness; [`super::MessageBuilder::finish`] adds it).
    MessageIntegrity(&'a [u8]),
    /// MESSAGE-INTEGRITY-SHA256 value.
    MessageIntegritySha256(&'a [u8]),
    /// Any other attribute, kept raw.
    Other(u16, &'a [u8]),
}

impl<'a> Attribute<'a> {
    /// The attribute's type number.
    pub fn typ(&self) -> AttributeType {
        match self {
            Attribute::MappedAddress(_) => AttributeType::MAPPED_ADDRESS,
            Attribute::XorMappedAddress(_) => AttributeType::XOR_MAPPED_ADDRESS,
            Attribute::XorPeerAddress(_) => AttributeType::XOR_PEER_ADDRESS,
            Attribute::XorRelayedAddress(_) => AttributeType::XOR_RELAYED_ADDRESS,
            Attribute::AlternateServer(_) => AttributeType::ALTERNATE_SERVER,
            Attribute::Username(_) => AttributeType::USERNAME,
            Attribute::Realm(_) => AttributeType::REALM,
            Attribute::Nonce(_) => AttributeType::NONCE,
            Attribute::Software(_) => AttributeType::SOFTWARE,
            Attribute::AlternateDomain(_) => AttributeType::ALTERNATE_DOMAIN,
            Attribute::ErrorCode(_) => AttributeType::ERROR_CODE,
            Attribute::UnknownAttributes(_) => AttributeType::UNKNOWN_ATTRIBUTES,
            Attribute::ChannelNumber(_) => AttributeType::CHANNEL_NUMBER,
            Attribute::Lifetime(_) => AttributeType::LIFETIME,
            Attribute::Data(_) => AttributeType::DATA,
            Attribute::RequestedTransport(_) => AttributeType::REQUESTED_TRANSPORT,
            Attribute::RequestedAddressFamily(_) => AttributeType::REQUESTED_ADDRESS_FAMILY,
            Attribute::AdditionalAddressFamily(_) => AttributeType::ADDITIONAL_ADDRESS_FAMILY,
            Attribute::AddressErrorCode(..) => AttributeType::ADDRESS_ERROR_CODE,
            Attribute::EvenPort(_) => AttributeType::EVEN_PORT,
            Attribute::DontFragment => AttributeType::DONT_FRAGMENT,
            Attribute::ReservationToken(_) => AttributeType::RESERVATION_TOKEN,
            Attribute::PasswordAlgorithm(..) => AttributeType::PASSWORD_ALGORITHM,
            Attribute::MessageIntegrity(_) => AttributeType::MESSAGE_INTEGRITY,
            Attribute::MessageIntegritySha256(_) => AttributeType::MESSAGE_INTEGRITY_SHA256,
            Attribute::Other(t, _) => AttributeType(*t),
        }
    }

    /// Decodes one attribute value of type `typ`.
    pub fn decode(
        typ: u16,
        v: &'a [u8],
        tid: &TransactionId,
    ) -> Result<Attribute<'a>, AttributeValueError> {
        Ok(match AttributeType(typ) {
            AttributeType::MAPPED_ADDRESS => Attribute::MappedAddress(decode_address(v, None)?),
            AttributeType::XOR_MAPPED_ADDRESS => {
                Attribute::XorMappedAddress(decode_address(v, Some(tid))?)
            }
            AttributeType::XOR_PEER_ADDRESS => {
                Attribute::XorPeerAddress(decode_address(v, Some(tid))?)
            }
            AttributeType::XOR_RELAYED_ADDRESS => {
                Attribute::XorRelayedAddress(decode_address(v, Some(tid))?)
            }
            AttributeType::ALTERNATE_SERVER => Attribute::AlternateServer(decode_address(v, None)?),
            AttributeType::USERNAME => Attribute::Username(text(v, MAX_USERNAME)?),
            AttributeType::REALM => Attribute::Realm(text(v, MAX_TEXT)?),
            AttributeType::NONCE => Attribute::Nonce(text(v, MAX_TEXT)?),
            AttributeType::SOFTWARE => Attribute::Software(text(v, MAX_TEXT)?),
            AttributeType::ALTERNATE_DOMAIN => Attribute::AlternateDomain(text(v, 255)?),
            AttributeType::ERROR_CODE => Attribute::ErrorCode(decode_error_code(v)?),
            AttributeType::UNKNOWN_ATTRIBUTES => {
                if !v.len().is_multiple_of(2) {
                    return Err(AttributeValueError::BadLength {
                        len: v.len(),
                        expected: "a multiple of 2",
                    });
                }
                Attribute::UnknownAttributes(
                    v.chunks_exact(2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]]))
                        .collect(),
                )
            }
            AttributeType::CHANNEL_NUMBER => {
                let b = fixed::<4>(v)?;
                Attribute::ChannelNumber(u16::from_be_bytes([b[0], b[1]]))
            }
            AttributeType::LIFETIME => Attribute::Lifetime(u32::from_be_bytes(fixed::<4>(v)?)),
            AttributeType::DATA => Attribute::Data(v),
            AttributeType::REQUESTED_TRANSPORT => Attribute::RequestedTransport(fixed::<4>(v)?[0]),
            AttributeType::REQUESTED_ADDRESS_FAMILY => {
                Attribute::RequestedAddressFamily(Family::from_code(fixed::<4>(v)?[0])?)
            }
            AttributeType::ADDITIONAL_ADDRESS_FAMILY => {
                Attribute::AdditionalAddressFamily(Family::from_code(fixed::<4>(v)?[0])?)
            }
            AttributeType::ADDRESS_ERROR_CODE => {
                if v.len() < 4 {
                    return Err(AttributeValueError::BadLength {
                        len: v.len(),
                        expected: "at least 4",
                    });
                }
                let family = Family::from_code(v[0])?;
                let code = decode_error_code_parts(v[2], v[3], &v[4..])?;
                Attribute::AddressErrorCode(family, code)
            }
            AttributeType::EVEN_PORT => Attribute::EvenPort(fixed::<1>(v)?[0] & 0x80 != 0),
            AttributeType::DONT_FRAGMENT => {
                fixed::<0>(v)?;
                Attribute::DontFragment
            }
            AttributeType::RESERVATION_TOKEN => Attribute::ReservationToken(fixed::<8>(v)?),
            AttributeType::PASSWORD_ALGORITHM => {
                if v.len() < 4 {
                    return Err(AttributeValueError::BadLength {
                        len: v.len(),
                        expected: "at least 4",
                    });
                }
                let alg = u16::from_be_bytes([v[0], v[1]]);
                let plen = usize::from(u16::from_be_bytes([v[2], v[3]]));
                if v.len() != 4 + plen {
                    return Err(AttributeValueError::BadLength {
                        len: v.len(),
                        expected: "4 + parameters length",
                    });
                }
                Attribute::PasswordAlgorithm(alg, &v[4..])
            }
            AttributeType::MESSAGE_INTEGRITY => Attribute::MessageIntegrity(v),
            AttributeType::MESSAGE_INTEGRITY_SHA256 => Attribute::MessageIntegritySha256(v),
            _ => Attribute::Other(typ, v),
        })
    }

    /// Appends the encoded value (without header or padding) to `out`.
    pub(crate) fn encode_value(&self, tid: &TransactionId, out: &mut Vec<u8>) {
        match self {
            Attribute::MappedAddress(a) | Attribute::AlternateServer(a) => {
                encode_address(*a, None, out)
            }
            Attribute::XorMappedAddress(a)
            | Attribute::XorPeerAddress(a)
            | Attribute::XorRelayedAddress(a) => encode_address(*a, Some(tid), out),
            Attribute::Username(s)
            | Attribute::Realm(s)
            | Attribute::Nonce(s)
            | Attribute::Software(s)
            | Attribute::AlternateDomain(s) => out.extend_from_slice(s.as_bytes()),
            Attribute::ErrorCode(e) => encode_error_code(e, out),
            Attribute::UnknownAttributes(types) => {
                for t in types {
                    out.extend_from_slice(&t.to_be_bytes());
                }
            }
            Attribute::ChannelNumber(n) => {
                out.extend_from_slice(&n.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
            }
            Attribute::Lifetime(secs) => out.extend_from_slice(&secs.to_be_bytes()),
            Attribute::Data(d) => out.extend_from_slice(d),
            Attribute::RequestedTransport(p) => out.extend_from_slice(&[*p, 0, 0, 0]),
            Attribute::RequestedAddressFamily(f) | Attribute::AdditionalAddressFamily(f) => {
                out.extend_from_slice(&[f.code(), 0, 0, 0])
            }
            Attribute::AddressErrorCode(f, e) => {
                out.extend_from_slice(&[f.code(), 0]);
                out.extend_from_slice(&[(e.code / 100) as u8, (e.code % 100) as u8]);
                out.extend_from_slice(e.reason.as_bytes());
            }
            Attribute::EvenPort(reserve) => out.push(if *reserve { 0x80 } else { 0 }),
            Attribute::DontFragment => {}
            Attribute::ReservationToken(t) => out.extend_from_slice(t),
            Attribute::PasswordAlgorithm(alg, params) => {
                out.extend_from_slice(&alg.to_be_bytes());
                out.extend_from_slice(&(params.len() as u16).to_be_bytes());
                out.extend_from_slice(params);
            }
            Attribute::MessageIntegrity(v)
            | Attribute::MessageIntegritySha256(v)
            | Attribute::Other(_, v) => out.extend_from_slice(v),
        }
    }
}

fn fixed<const N: usize>(v: &[u8]) -> Result<[u8; N], AttributeValueError> {
    <[u8; N]>::try_from(v).map_err(|_| AttributeValueError::BadLength {
        len: v.len(),
        expected: match N {
            0 => "0",
            1 => "1",
            4 => "4",
            8 => "8",
            _ => "a fixed size",
        },
    })
}

fn text(v: &[u8], max: usize) -> Result<&str, AttributeValueError> {
    if v.len() > max {
        return Err(AttributeValueError::TooLong { len: v.len(), max });
    }
    std::str::from_utf8(v).map_err(|_| AttributeValueError::NotUtf8)
}

fn decode_error_code(v: &[u8]) -> Result<ErrorCode<'_>, AttributeValueError> {
    if v.len() < 4 {
        return Err(AttributeValueError::BadLength {
            len: v.len(),
            expected: "at least 4",
        });
    }
    decode_error_code_parts(v[2], v[3], &v[4..])
}

fn decode_error_code_parts(
    class: u8,
    number: u8,
    reason: &[u8],
) -> Result<ErrorCode<'_>, AttributeValueError> {
    let class = class & 0x07;
    if !(3..=6).contains(&class) || number > 99 {
        return Err(AttributeValueError::BadErrorCode { class, number });
    }
    Ok(ErrorCode {
        code: u16::from(class) * 100 + u16::from(number),
        reason: text(reason, MAX_TEXT)?,
    })
}

fn encode_error_code(e: &ErrorCode<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(&[0, 0, (e.code / 100) as u8, (e.code % 100) as u8]);
    out.extend_from_slice(e.reason.as_bytes());
}

fn decode_address(
    v: &[u8],
    xor: Option<&TransactionId>,
) -> Result<SocketAddr, AttributeValueError> {
    if v.len() < 4 {
        return Err(AttributeValueError::BadLength {
            len: v.len(),
            expected: "8 or 20",
        });
    }
    let family = Family::from_code(v[1])?;
    let mut port = u16::from_be_bytes([v[2], v[3]]);
    let cookie = MAGIC_COOKIE.to_be_bytes();
    if xor.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    let ip = match family {
        Family::V4 => {
            let mut b: [u8; 4] = v[4..]
                .try_into()
                .map_err(|_| AttributeValueError::BadLength {
                    len: v.len(),
                    expected: "8 for IPv4",
                })?;
            if xor.is_some() {
                for (x, c) in b.iter_mut().zip(cookie) {
                    *x ^= c;
                }
            }
            IpAddr::V4(Ipv4Addr::from(b))
        }
        Family::V6 => {
            let mut b: [u8; 16] =
                v[4..]
                    .try_into()
                    .map_err(|_| AttributeValueError::BadLength {
                        len: v.len(),
                        expected: "20 for IPv6",
                    })?;
            if let Some(tid) = xor {
                let key = xor_key(tid);
                for (x, k) in b.iter_mut().zip(key) {
                    *x ^= k;
                }
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
    };
    Ok(SocketAddr::new(ip, port))
}

fn encode_address(addr: SocketAddr, xor: Option<&TransactionId>, out: &mut Vec<u8>) {
    let mut port = addr.port();
    if xor.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    out.push(0);
    out.push(Family::of(addr.ip()).code());
    out.extend_from_slice(&port.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            let mut b = ip.octets();
            if xor.is_some() {
                for (x, c) in b.iter_mut().zip(MAGIC_COOKIE.to_be_bytes()) {
                    *x ^= c;
                }
            }
            out.extend_from_slice(&b);
        }
        IpAddr::V6(ip) => {
            let mut b = ip.octets();
            if let Some(tid) = xor {
                for (x, k) in b.iter_mut().zip(xor_key(tid)) {
                    *x ^= k;
                }
            }
            out.extend_from_slice(&b);
        }
    }
}

/// Magic cookie followed by the transaction id: the XOR key for IPv6 addresses.
fn xor_key(tid: &TransactionId) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    key[4..].copy_from_slice(&tid.0);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    const TID: TransactionId = TransactionId([
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    ]);

    #[test]
    fn xor_address_matches_rfc5769_bytes() {
        let v4 = [0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43];
        assert_eq!(
            decode_address(&v4, Some(&TID)).unwrap(),
            "192.0.2.1:32853".parse().unwrap()
        );
        let mut out = Vec::new();
        encode_address("192.0.2.1:32853".parse().unwrap(), Some(&TID), &mut out);
        assert_eq!(out, v4);
    }

    #[test]
    fn bad_values_name_the_problem() {
        assert_eq!(
            Attribute::decode(0x0020, &[0, 3, 0, 0, 1, 2, 3, 4], &TID),
            Err(AttributeValueError::UnknownFamily(3))
        );
        assert_eq!(
            Attribute::decode(0x0020, &[0, 1, 0, 0, 1, 2], &TID),
            Err(AttributeValueError::BadLength {
                len: 6,
                expected: "8 for IPv4"
            })
        );
        assert_eq!(
            Attribute::decode(0x000D, &[0, 0, 1], &TID),
            Err(AttributeValueError::BadLength {
                len: 3,
                expected: "4"
            })
        );
        assert_eq!(
            Attribute::decode(0x0006, &[0xff, 0xfe], &TID),
            Err(AttributeValueError::NotUtf8)
        );
        assert_eq!(
            Attribute::decode(0x0009, &[0, 0, 7, 1], &TID),
            Err(AttributeValueError::BadErrorCode {
                class: 7,
                number: 1
            })
        );
        assert_eq!(
            Attribute::decode(0x0006, &[b'a'; 600], &TID),
            Err(AttributeValueError::TooLong {
                len: 600,
                max: MAX_USERNAME
            })
        );
    }

    #[test]
    fn error_code_round_trip() {
        let mut out = Vec::new();
        encode_error_code(&ErrorCode::STALE_NONCE, &mut out);
        assert_eq!(&out[..4], &[0, 0, 4, 38]);
        assert_eq!(decode_error_code(&out).unwrap(), ErrorCode::STALE_NONCE);
    }
}
