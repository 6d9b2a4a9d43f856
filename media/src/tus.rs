//! TUS 1.0 header parsing and formatting (pure): `Upload-Metadata`,
//! `Upload-Checksum`, numeric headers, and the HTTP dates of `Upload-Expires`.
//!
//! See the TUS 1.0.0 protocol: core (offsets), creation, creation-with-upload,
//! expiration, checksum and termination extensions.

use crate::error::MediaError;
use crate::hash::BlobHash;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sha1::Digest as _;

/// The protocol version we speak.
pub const VERSION: &str = "1.0.0";
/// Extensions we implement.
pub const EXTENSIONS: &str = "creation,creation-with-upload,expiration,checksum,termination";
/// Checksum algorithms accepted in `Upload-Checksum`.
pub const CHECKSUM_ALGORITHMS: &str = "sha1,sha256";
/// Content type of PATCH bodies.
pub const PATCH_CONTENT_TYPE: &str = "application/offset+octet-stream";
/// Longest `Upload-Metadata` accepted.
pub const MAX_METADATA_LEN: usize = 4096;

/// What we read from `Upload-Metadata`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadMetadata {
    /// The header as sent (echoed by HEAD).
    pub raw: String,
    /// `sha256`: the hash the client claims (hex), checked at completion.
    pub sha256: Option<BlobHash>,
    /// `opaque`: an end-to-end-encrypted upload (present without a value, or
    /// `true`/`1`).
    pub opaque: bool,
    /// `filename`, if given (informational only).
    pub filename: Option<String>,
}

fn invalid(name: &'static str, reason: impl Into<String>) -> MediaError {
    MediaError::InvalidHeader {
        name,
        reason: reason.into(),
    }
}

/// Parses `Upload-Metadata`: comma-separated `key base64value` pairs (value
/// optional), keys unique and free of spaces and commas.
pub fn parse_metadata(raw: &str) -> Result<UploadMetadata, MediaError> {
    const H: &str = "Upload-Metadata";
    if raw.len() > MAX_METADATA_LEN {
        return Err(invalid(H, format!("longer than {MAX_METADATA_LEN} bytes")));
    }
    let mut out = UploadMetadata {
        raw: raw.to_owned(),
        ..Default::default()
    };
    let mut seen: Vec<&str> = Vec::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut it = pair.split(' ');
        let key = it.next().unwrap_or_default();
        let value = it.next();
        if it.next().is_some() {
            return Err(invalid(
                H,
                format!("pair {pair:?} has more than a key and a value"),
            ));
        }
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
            return Err(invalid(H, "keys must be non-empty printable ASCII"));
        }
        if seen.contains(&key) {
            return Err(invalid(H, format!("key {key:?} appears twice")));
        }
        seen.push(key);
        let decoded = match value {
            Some(v) => Some(
                B64.decode(v)
                    .map_err(|_| invalid(H, format!("value of {key:?} is not base64")))?,
            ),
            None => None,
        };
        let text = || -> Result<Option<String>, MediaError> {
            decoded
                .as_ref()
                .map(|d| {
                    String::from_utf8(d.clone())
                        .map_err(|_| invalid(H, format!("value of {key:?} is not UTF-8")))
                })
                .transpose()
        };
        match key {
            "sha256" => {
                let v = text()?.ok_or_else(|| invalid(H, "sha256 needs a value"))?;
                out.sha256 = Some(
                    v.trim()
                        .parse()
                        .map_err(|_| invalid(H, "sha256 must be 64 hex digits"))?,
                );
            }
            "opaque" => {
                out.opaque = match text()?.as_deref() {
                    None | Some("true") | Some("1") => true,
                    Some("false") | Some("0") => false,
                    Some(other) => {
                        return Err(invalid(
                            H,
                            format!("opaque must be true or false, not {other:?}"),
                        ));
                    }
                };
            }
            "filename" | "name" => out.filename = text()?,
            // filetype, mime type and anything else are informational: the type
            // is sniffed from the bytes.
            _ => {}
        }
    }
    Ok(out)
}

/// A non-negative decimal header (`Upload-Length`, `Upload-Offset`).
pub fn parse_u64(name: &'static str, value: &str) -> Result<u64, MediaError> {
    if value.is_empty() || value.len() > 19 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(name, "must be a non-negative decimal integer"));
    }
    value.parse().map_err(|_| invalid(name, "out of range"))
}

/// A checksum to verify a PATCH body against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    algorithm: Algorithm,
    expected: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    Sha1,
    Sha256,
}

/// A running checksum of one PATCH body.
pub enum ChecksumState {
    /// SHA-1.
    Sha1(sha1::Sha1, Vec<u8>),
    /// SHA-256.
    Sha256(sha2::Sha256, Vec<u8>),
}

impl Checksum {
    /// Starts computing.
    pub fn start(&self) -> ChecksumState {
        match self.algorithm {
            Algorithm::Sha1 => ChecksumState::Sha1(sha1::Sha1::new(), self.expected.clone()),
            Algorithm::Sha256 => ChecksumState::Sha256(sha2::Sha256::new(), self.expected.clone()),
        }
    }
}

impl ChecksumState {
    /// Absorbs bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            ChecksumState::Sha1(h, _) => h.update(data),
            ChecksumState::Sha256(h, _) => sha2::Digest::update(h, data),
        }
    }

    /// Whether the body matched.
    pub fn matches(self) -> bool {
        use subtle::ConstantTimeEq;
        match self {
            ChecksumState::Sha1(h, e) => bool::from(h.finalize().as_slice().ct_eq(&e)),
            ChecksumState::Sha256(h, e) => {
                bool::from(sha2::Digest::finalize(h).as_slice().ct_eq(&e))
            }
        }
    }
}

/// Parses `Upload-Checksum: <algorithm> <base64 digest>`.
pub fn parse_checksum(value: &str) -> Result<Checksum, MediaError> {
    const H: &str = "Upload-Checksum";
    let (algo, digest) = value
        .trim()
        .split_once(' ')
        .ok_or_else(|| invalid(H, "expected \"<algorithm> <base64 digest>\""))?;
    let (algorithm, len) = match algo.to_ascii_lowercase().as_str() {
        "sha1" => (Algorithm::Sha1, 20),
        "sha256" => (Algorithm::Sha256, 32),
        other => {
            return Err(MediaError::UnsupportedChecksum(
                other.chars().take(32).collect(),
            ));
        }
    };
    let expected = B64
        .decode(digest.trim())
        .map_err(|_| invalid(H, "digest is not base64"))?;
    if expected.len() != len {
        return Err(invalid(H, format!("a {algo} digest is {len} bytes")));
    }
    Ok(Checksum {
        algorithm,
        expected,
    })
}

/// An HTTP date (RFC 9110 §5.6.7 IMF-fixdate) for `secs` since the epoch.
pub fn http_date(secs: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn metadata_pairs() {
        let h = BlobHash::of(b"x");
        let raw = format!(
            "filename {},opaque,sha256 {}",
            B64.encode("cat.jpg"),
            B64.encode(h.to_hex())
        );
        let m = parse_metadata(&raw).unwrap();
        assert_eq!(m.filename.as_deref(), Some("cat.jpg"));
        assert!(m.opaque);
        assert_eq!(m.sha256, Some(h));
        assert_eq!(m.raw, raw);
        assert!(!parse_metadata("filetype aW1hZ2UvcG5n").unwrap().opaque);
        for bad in [
            "a b c",
            "k !!!",
            "k YQ==,k YQ==",
            "sha256 YQ==",
            "opaque bWF5YmU=",
            " ,x\u{7f} YQ==",
        ] {
            assert!(parse_metadata(bad).is_err(), "{bad:?}");
        }
        assert!(parse_metadata(&"a".repeat(5000)).is_err());
    }

    #[test]
    fn checksums() {
        let c = parse_checksum(&format!(
            "sha1 {}",
            B64.encode(sha1::Sha1::digest(b"hello"))
        ))
        .unwrap();
        let mut s = c.start();
        s.update(b"hel");
        s.update(b"lo");
        assert!(s.matches());
        let c = parse_checksum(&format!(
            "sha256 {}",
            B64.encode(sha2::Sha256::digest(b"hello"))
        ))
        .unwrap();
        let mut s = c.start();
        s.update(b"hellO");
        assert!(!s.matches());
        assert!(matches!(
            parse_checksum("md5 AAAA"),
            Err(MediaError::UnsupportedChecksum(_))
        ));
        assert!(matches!(
            parse_checksum("sha1 AAAA"),
            Err(MediaError::InvalidHeader { .. })
        ));
        assert!(matches!(
            parse_checksum("sha1"),
            Err(MediaError::InvalidHeader { .. })
        ));
    }

    #[test]
    fn numbers_and_dates() {
        assert_eq!(parse_u64("Upload-Offset", "0").unwrap(), 0);
        assert_eq!(parse_u64("Upload-Offset", "1048576").unwrap(), 1_048_576);
        for bad in ["", "-1", "+1", "1.0", "0x10", "99999999999999999999", " 1"] {
            assert!(parse_u64("Upload-Offset", bad).is_err(), "{bad:?}");
        }
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(1_403_712_000), "Wed, 25 Jun 2014 16:00:00 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    proptest! {
        #[test]
        fn arbitrary_headers_never_panic(s in "\\PC{0,200}") {
            let _ = parse_metadata(&s);
            let _ = parse_checksum(&s);
            let _ = parse_u64("X", &s);
        }
    }
}
