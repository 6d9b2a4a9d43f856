//! Pure rules of registration and the key directory: no I/O, unit-tested.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, VerifyingKey};

/// Seconds to wait after the `sends`-th code (1-based) before another may go.
pub fn resend_wait_secs(sends: i64, waits: &[u32]) -> u32 {
    let idx = (sends.max(1) as usize - 1).min(waits.len().saturating_sub(1));
    waits.get(idx).copied().unwrap_or(600)
}

/// A registration-lock PIN: 4 to 64 characters (apps usually send digits; longer
/// passphrases are allowed).
pub fn check_pin(pin: &str) -> Result<(), &'static str> {
    let n = pin.chars().count();
    if !(4..=64).contains(&n) {
        return Err("registration-lock PIN must be 4 to 64 characters");
    }
    Ok(())
}

/// A one-time code as typed: exactly six ASCII digits.
pub fn check_code_shape(code: &str) -> Result<(), &'static str> {
    if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err("code must be exactly 6 digits")
    }
}

/// Text fields with a length limit in characters, no control characters.
pub fn check_text(field: &'static str, value: &str, max_chars: usize) -> Result<(), String> {
    if value.chars().count() > max_chars {
        return Err(format!("{field} is longer than {max_chars} characters"));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(format!("{field} contains control characters"));
    }
    Ok(())
}

/// A media hash: 64 lowercase hex characters (SHA-256).
pub fn check_media_hash(hash: &str) -> Result<(), &'static str> {
    if hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err("avatar must be a media hash: 64 lowercase hex characters")
    }
}

/// Why an uploaded key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not base64.
    #[error("{0} is not valid base64")]
    Base64(&'static str),
    /// Wrong length.
    #[error("{field} must be {expected} bytes, got {got}")]
    Length {
        /// Which field.
        field: &'static str,
        /// Required length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// The signing key is not a valid Ed25519 point.
    #[error("signing_key is not a valid Ed25519 public key")]
    BadSigningKey,
    /// The signed prekey's signature does not verify.
    #[error("signed_prekey.signature does not verify with signing_key")]
    BadSignature,
}

/// Decodes a base64 field of an exact length.
pub fn decode_key(field: &'static str, b64: &str, expected: usize) -> Result<Vec<u8>, KeyError> {
    // Refuse oversize input before decoding it.
    if b64.len() > expected * 2 + 4 {
        return Err(KeyError::Length {
            field,
            expected,
            got: b64.len() * 3 / 4,
        });
    }
    let bytes = B64
        .decode(b64.trim())
        .map_err(|_| KeyError::Base64(field))?;
    if bytes.len() != expected {
        return Err(KeyError::Length {
            field,
            expected,
            got: bytes.len(),
        });
    }
    Ok(bytes)
}

/// Checks that `signature` is `signing_key`'s Ed25519 signature of `prekey`.
pub fn verify_prekey_signature(
    signing_key: &[u8],
    prekey: &[u8],
    signature: &[u8],
) -> Result<(), KeyError> {
    let key_bytes: [u8; 32] = signing_key
        .try_into()
        .map_err(|_| KeyError::BadSigningKey)?;
    let key = VerifyingKey::from_bytes(&key_bytes).map_err(|_| KeyError::BadSigningKey)?;
    let sig_bytes: [u8; 64] = signature.try_into().map_err(|_| KeyError::BadSignature)?;
    let sig = Signature::from_bytes(&sig_bytes);
    key.verify_strict(prekey, &sig)
        .map_err(|_| KeyError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resend_waits_grow_then_stay() {
        let w = [60, 120, 300, 600];
        assert_eq!(resend_wait_secs(1, &w), 60);
        assert_eq!(resend_wait_secs(2, &w), 120);
        assert_eq!(resend_wait_secs(3, &w), 300);
        assert_eq!(resend_wait_secs(4, &w), 600);
        assert_eq!(resend_wait_secs(9, &w), 600);
    }

    #[test]
    fn code_and_pin_shapes() {
        assert!(check_code_shape("012345").is_ok());
        for bad in ["12345", "1234567", "12a456", "", "١٢٣٤٥٦"] {
            assert!(check_code_shape(bad).is_err(), "{bad}");
        }
        assert!(check_pin("1234").is_ok());
        assert!(check_pin("123").is_err());
        assert!(check_pin(&"9".repeat(65)).is_err());
    }

    #[test]
    fn text_and_hash_checks() {
        assert!(check_text("about", "hi there", 10).is_ok());
        assert!(check_text("about", "hi\u{0}", 10).is_err());
        assert!(check_text("about", "ééééééééééé", 10).is_err());
        assert!(check_media_hash(&"ab".repeat(32)).is_ok());
        assert!(check_media_hash(&"AB".repeat(32)).is_err());
        assert!(check_media_hash("../../etc/passwd").is_err());
    }

    #[test]
    fn signature_verification() {
        use ed25519_dalek::{Signer, SigningKey};
        let sk = SigningKey::from_bytes(&[7u8; 32]);
        let prekey = [9u8; 32];
        let sig = sk.sign(&prekey).to_bytes();
        let pk = sk.verifying_key().to_bytes();
        assert_eq!(verify_prekey_signature(&pk, &prekey, &sig), Ok(()));
        assert_eq!(
            verify_prekey_signature(&pk, &[8u8; 32], &sig),
            Err(KeyError::BadSignature)
        );
        assert_eq!(
            verify_prekey_signature(&pk, &prekey, &sig[..63]),
            Err(KeyError::BadSignature)
        );
    }

    #[test]
    fn key_decoding() {
        let k = B64.encode([1u8; 32]);
        assert_eq!(decode_key("identity_key", &k, 32).unwrap(), vec![1u8; 32]);
        assert!(matches!(
            decode_key("identity_key", &B64.encode([1u8; 31]), 32),
            Err(KeyError::Length { got: 31, .. })
        ));
        assert_eq!(
            decode_key("identity_key", "!!!", 32),
            Err(KeyError::Base64("identity_key"))
        );
        assert!(decode_key("identity_key", &"A".repeat(10_000), 32).is_err());
    }
}
