//! Compact JWS parsing shared by the FCM (RS256) and APNs (ES256) fakes.
//! Only decoding lives here; each fake applies its provider's own rules.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

/// A decoded but not yet verified JWT.
pub(crate) struct Jwt {
    pub(crate) header: Map<String, Value>,
    pub(crate) claims: Map<String, Value>,
    /// `base64url(header) "." base64url(claims)`: the bytes that are signed.
    pub(crate) signing_input: String,
    pub(crate) signature: Vec<u8>,
}

impl Jwt {
    /// Splits and decodes a compact JWS. Base64url must be unpadded and
    /// canonical, as both Google and Apple require (RFC 7515 section 2).
    pub(crate) fn parse(token: &str) -> Result<Jwt, &'static str> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("token is not three base64url segments");
        };
        let header = decode_object(h).ok_or("header is not base64url JSON object")?;
        let claims = decode_object(c).ok_or("claims are not a base64url JSON object")?;
        let signature = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| "signature is not unpadded base64url")?;
        Ok(Jwt {
            header,
            claims,
            signing_input: format!("{h}.{c}"),
            signature,
        })
    }

    pub(crate) fn header_str(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(Value::as_str)
    }

    pub(crate) fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// An integer NumericDate claim; fractional or string values are refused
    /// because both providers document integer seconds.
    pub(crate) fn claim_int(&self, name: &str) -> Option<i64> {
        self.claims.get(name).and_then(Value::as_i64)
    }
}

fn decode_object(seg: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(seg).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}
