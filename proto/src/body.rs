//! Opaque message bodies, carried in JSON as standard base64 (with padding).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes the server stores and forwards without looking at them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Body(pub Vec<u8>);

impl Body {
    /// Wraps bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes (decoded).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The body as UTF-8 text, if it is.
    pub fn as_text(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// Encoded length of `n` bytes in base64 with padding.
    pub const fn encoded_len(n: usize) -> usize {
        n.div_ceil(3) * 4
    }
}

// Bodies may be ciphertext or private text: Debug shows only the size.
impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Body({} bytes)", self.0.len())
    }
}

impl Serialize for Body {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Body;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a base64 string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Body, E> {
                STANDARD
                    .decode(v)
                    .map(Body)
                    .map_err(|e| E::custom(format_args!("body is not valid base64 ({e})")))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip_and_debug_hides_content() {
        let b = Body::new(b"hello".to_vec());
        let j = serde_json::to_string(&b).unwrap();
        assert_eq!(j, "\"aGVsbG8=\"");
        assert_eq!(serde_json::from_str::<Body>(&j).unwrap(), b);
        assert_eq!(format!("{b:?}"), "Body(5 bytes)");
        assert!(serde_json::from_str::<Body>("\"%%%\"").is_err());
        assert!(serde_json::from_str::<Body>("12").is_err());
        assert_eq!(Body::encoded_len(5), 8);
        assert_eq!(Body::encoded_len(65536), 87384);
    }
}
