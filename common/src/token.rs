//! Short-lived access tokens: JWTs signed with HMAC-SHA256 (`HS256`), verified by
//! every service from the shared key alone, without a database round trip.
//!
//! Why HMAC and not Ed25519: verification sits on the hot path of every request
//! and socket, and HMAC-SHA256 verifies in about a microsecond where Ed25519 takes
//! tens. All Natter services share one trust domain, so a shared key is no weaker
//! in practice; keys carry a `kid` so they can be rotated (sign with the new key,
//! keep verifying the old one until its tokens expire).
//!
//! The format is a standard compact JWT, so other tools can read the claims:
//! `base64url(header).base64url(claims).base64url(HMAC-SHA256(key, header.claims))`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = hmac::Hmac<Sha256>;

/// Tokens longer than this are refused before any work (a real one is ~250 bytes).
pub const MAX_TOKEN_LEN: usize = 1024;

/// What an access token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The account (user id).
    pub sub: String,
    /// The device within the account.
    pub dev: u32,
    /// The device's credential generation: bumped on logout so services that do
    /// look at the database can refuse tokens minted before it.
    #[serde(rename = "gen")]
    pub generation: u32,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Expires at, seconds since the epoch.
    pub exp: i64,
}

/// Why a token was refused. Messages are safe to return to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three dot-separated parts, bad base64, or too long.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header names a key this server does not know, or an algorithm other than HS256.
    #[error("token signed with an unknown key or algorithm")]
    UnknownKey,
    /// The signature does not match.
    #[error("token signature is invalid")]
    BadSignature,
    /// Past its `exp`.
    #[error("token expired at {0}")]
    Expired(i64),
}

/// One signing key and its id.
#[derive(Clone)]
struct Key {
    /// The exact base64url header this key signs with; verification compares bytes
    /// instead of parsing JSON.
    header_b64: String,
    /// HMAC state with the key already absorbed; cloned per use (saves two
    /// compressions per verification).
    mac: HmacSha256,
}

impl Key {
    fn new(secret: &[u8]) -> Self {
        let kid = hex::encode(&Sha256::digest(secret)[..6]);
        let header = format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{kid}"}}"#);
        Self {
            header_b64: B64.encode(header),
            // HMAC accepts keys of any length.
            mac: HmacSha256::new_from_slice(secret).expect("HMAC takes any key length"),
        }
    }
}

/// Signs and verifies access tokens.
#[derive(Clone)]
pub struct TokenKeys {
    current: Key,
    previous: Vec<Key>,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("current_kid_header", &self.current.header_b64)
            .field("previous", &self.previous.len())
            .finish()
    }
}

impl TokenKeys {
    /// Signs with `current`; also accepts tokens from each of `previous`.
    pub fn new(current: &[u8], previous: &[&[u8]]) -> Self {
        Self {
            current: Key::new(current),
            previous: previous.iter().map(|k| Key::new(k)).collect(),
        }
    }

    /// Makes a token for `claims`.
    pub fn sign(&self, claims: &Claims) -> String {
        // Serialising a struct of strings and integers cannot fail.
        let payload = serde_json::to_vec(claims).expect("claims serialise");
        let mut token = String::with_capacity(self.current.header_b64.len() + payload.len() * 2);
        token.push_str(&self.current.header_b64);
        token.push('.');
        B64.encode_string(&payload, &mut token);
        let mut mac = self.current.mac.clone();
        mac.update(token.as_bytes());
        let tag = mac.finalize().into_bytes();
        token.push('.');
        B64.encode_string(tag, &mut token);
        token
    }

    /// Checks the signature and expiry; `now_secs` is the caller's clock.
    pub fn verify(&self, token: &str, now_secs: i64) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed("longer than 1024 bytes"));
        }
        let (signed, sig_b64) = token
            .rsplit_once('.')
            .ok_or(TokenError::Malformed("expected header.claims.signature"))?;
        let (header_b64, claims_b64) = signed
            .split_once('.')
            .ok_or(TokenError::Malformed("expected header.claims.signature"))?;
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.header_b64.as_bytes() == header_b64.as_bytes())
            .ok_or(TokenError::UnknownKey)?;
        let mut sig = [0u8; 32];
        match B64.decode_slice(sig_b64, &mut sig) {
            Ok(32) => {}
            _ => {
                return Err(TokenError::Malformed(
                    "signature is not 32 bytes of base64url",
                ));
            }
        }
        let mut mac = key.mac.clone();
        mac.update(signed.as_bytes());
        let expected = mac.finalize().into_bytes();
        if !bool::from(expected.as_slice().ct_eq(&sig)) {
            return Err(TokenError::BadSignature);
        }
        let mut buf = [0u8; MAX_TOKEN_LEN];
        let n = B64
            .decode_slice(claims_b64, &mut buf)
            .map_err(|_| TokenError::Malformed("claims are not base64url"))?;
        let claims: Claims = serde_json::from_slice(&buf[..n])
            .map_err(|_| TokenError::Malformed("claims are not valid JSON"))?;
        if claims.exp <= now_secs {
            return Err(TokenError::Expired(claims.exp));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            sub: "0b5f3c1e-user".into(),
            dev: 2,
            generation: 1,
            iat: exp - 900,
            exp,
        }
    }

    #[test]
    fn round_trip() {
        let keys = TokenKeys::new(b"k1-0123456789abcdef0123456789abcdef", &[]);
        let t = keys.sign(&claims(2000));
        assert_eq!(keys.verify(&t, 1999).unwrap(), claims(2000));
        assert_eq!(keys.verify(&t, 2000), Err(TokenError::Expired(2000)));
    }

    #[test]
    fn another_key_is_refused_and_rotation_keeps_old_tokens_valid() {
        let old = TokenKeys::new(b"old-key", &[]);
        let other = TokenKeys::new(b"other-key", &[]);
        let t = old.sign(&claims(2000));
        assert_eq!(other.verify(&t, 0), Err(TokenError::UnknownKey));
        let rotated = TokenKeys::new(b"new-key", &[b"old-key"]);
        assert!(rotated.verify(&t, 0).is_ok());
        assert!(rotated.verify(&rotated.sign(&claims(2000)), 0).is_ok());
    }

    #[test]
    fn tampering_is_detected() {
        let keys = TokenKeys::new(b"k", &[]);
        let t = keys.sign(&claims(2000));
        let (head, rest) = t.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let forged_claims = B64.encode(
            serde_json::to_vec(&Claims {
                dev: 1,
                ..claims(2000)
            })
            .unwrap(),
        );
        let forged = format!("{head}.{forged_claims}.{sig}");
        assert_eq!(keys.verify(&forged, 0), Err(TokenError::BadSignature));
        // Same key, but a header claiming another algorithm: refused before HMAC.
        let none_header = B64.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let forged = format!("{none_header}.{forged_claims}.");
        assert_eq!(keys.verify(&forged, 0), Err(TokenError::UnknownKey));
    }

    #[test]
    fn garbage_is_malformed() {
        let keys = TokenKeys::new(b"k", &[]);
        for bad in ["", ".", "..", "abc", "a.b", &"x".repeat(2000)] {
            assert!(keys.verify(bad, 0).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_panics(s in "\\PC{0,400}", dots in 0usize..4) {
            let keys = TokenKeys::new(b"k", &[]);
            let mut t = s;
            for _ in 0..dots { t.push('.'); }
            let _ = keys.verify(&t, 0);
        }

        #[test]
        fn arbitrary_claims_round_trip(sub in "[a-z0-9-]{1,64}", dev in 1u32..100, exp in 1i64..i64::MAX / 2) {
            let keys = TokenKeys::new(b"k", &[]);
            let c = Claims { sub, dev, generation: 0, iat: 0, exp };
            prop_assert_eq!(keys.verify(&keys.sign(&c), exp - 1).unwrap(), c);
        }
    }
}
