//! Content hashes: the SHA-256 of a blob's bytes is its id. Hashes are parsed
//! from exactly 64 hex digits and always printed in lowercase, so a hash from a
//! URL can become a storage key without any path trick getting through.

use sha2::digest::common::hazmat::SerializableState;
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// The SHA-256 of a blob; its id everywhere (URLs, keys, messages).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobHash([u8; 32]);

/// Not 64 hexadecimal digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a media hash is 64 hexadecimal digits (the SHA-256 of the content)")]
pub struct InvalidHash;

impl BlobHash {
    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// From a raw digest.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The SHA-256 of `data` (for tests and small objects).
    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl FromStr for BlobHash {
    type Err = InvalidHash;

    fn from_str(s: &str) -> Result<Self, InvalidHash> {
        if s.len() != 64 {
            return Err(InvalidHash);
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| InvalidHash)?;
        Ok(Self(out))
    }
}

impl fmt::Display for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobHash({})", self.to_hex())
    }
}

impl serde::Serialize for BlobHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for BlobHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A SHA-256 computation that can be saved between the requests of a resumable
/// upload (and resumed on another node): the state is the chaining value, the
/// byte count and the unprocessed tail of the last block.
#[derive(Clone, Default)]
pub struct ResumableSha256(Sha256);

impl ResumableSha256 {
    /// A fresh hash.
    pub fn new() -> Self {
        Self(Sha256::new())
    }

    /// Absorbs bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The digest of everything absorbed.
    pub fn finish(self) -> BlobHash {
        BlobHash(self.0.finalize().into())
    }

    /// The state, to store.
    pub fn save(&self) -> Vec<u8> {
        self.0.serialize().to_vec()
    }

    /// A state saved by [`save`](Self::save); `None` if it is not one.
    pub fn restore(state: &[u8]) -> Option<Self> {
        let arr = state.try_into().ok()?;
        Sha256::deserialize(arr).ok().map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_64_hex_digits_and_prints_lowercase() {
        let h = BlobHash::of(b"abc");
        assert_eq!(
            h.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(h.to_hex().to_uppercase().parse::<BlobHash>().unwrap(), h);
        for bad in [
            "",
            "../../etc/passwd",
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a",
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015adz",
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a/",
            "zz7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        ] {
            assert_eq!(bad.parse::<BlobHash>(), Err(InvalidHash), "{bad:?}");
        }
    }

    #[test]
    fn saved_state_resumes_to_the_same_digest() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        for cut in [0, 1, 63, 64, 65, 4097, 9999, 10_000] {
            let mut a = ResumableSha256::new();
            a.update(&data[..cut]);
            let saved = a.save();
            let mut b = ResumableSha256::restore(&saved).unwrap();
            b.update(&data[cut..]);
            assert_eq!(b.finish(), BlobHash::of(&data), "cut at {cut}");
        }
        assert!(ResumableSha256::restore(b"short").is_none());
    }
}
