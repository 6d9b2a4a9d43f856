//! Signed, expiring download URLs: `…/v1/media/{hash}?exp={unix}&sig={mac}`,
//! where `mac = base64url(HMAC-SHA256(key, "natter-media-v1\n{what}\n{hash}\n{exp}"))`.
//!
//! Anyone holding the URL may fetch that one object until `exp`; nothing else
//! (another hash, the thumbnail instead of the blob, a later expiry) verifies.
//! Keys can be rotated: sign with the current one, accept the previous ones.

use crate::hash::BlobHash;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = hmac::Hmac<Sha256>;

/// Which object of a blob a URL opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    /// The blob itself.
    Blob,
    /// Its thumbnail.
    Thumbnail,
}

impl Object {
    fn label(self) -> &'static str {
        match self {
            Object::Blob => "blob",
            Object::Thumbnail => "thumbnail",
        }
    }

    fn path_suffix(self) -> &'static str {
        match self {
            Object::Blob => "",
            Object::Thumbnail => "/thumbnail",
        }
    }
}

/// Why a signed URL was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// Past its expiry.
    #[error("this signed URL expired at {0}")]
    Expired(i64),
    /// The signature does not match (altered URL or unknown key).
    #[error("the URL signature is invalid")]
    Invalid,
}

/// Signs and checks URLs.
#[derive(Clone)]
pub struct UrlSigner {
    current: HmacSha256,
    previous: Vec<HmacSha256>,
}

impl std::fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UrlSigner")
            .field("previous", &self.previous.len())
            .finish()
    }
}

impl UrlSigner {
    /// Signs with `current`; also accepts `previous`.
    pub fn new(current: &[u8], previous: &[&[u8]]) -> Self {
        // HMAC takes keys of any length.
        let mac = |k: &[u8]| HmacSha256::new_from_slice(k).expect("HMAC accepts any key length");
        Self {
            current: mac(current),
            previous: previous.iter().map(|k| mac(k)).collect(),
        }
    }

    fn mac(key: &HmacSha256, what: Object, hash: &BlobHash, exp: i64) -> [u8; 32] {
        let mut m = key.clone();
        m.update(format!("natter-media-v1\n{}\n{hash}\n{exp}", what.label()).as_bytes());
        m.finalize().into_bytes().into()
    }

    /// The `sig` value for an object and expiry (seconds since the epoch).
    pub fn sign(&self, what: Object, hash: &BlobHash, exp: i64) -> String {
        B64.encode(Self::mac(&self.current, what, hash, exp))
    }

    /// A full URL under `public_url` (no trailing slash needed).
    pub fn url(&self, public_url: &str, what: Object, hash: &BlobHash, exp: i64) -> String {
        format!(
            "{}/v1/media/{hash}{}?exp={exp}&sig={}",
            public_url.trim_end_matches('/'),
            what.path_suffix(),
            self.sign(what, hash, exp)
        )
    }

    /// Checks `sig` for the object and `exp` at `now_secs`.
    pub fn verify(
        &self,
        what: Object,
        hash: &BlobHash,
        exp: i64,
        sig: &str,
        now_secs: i64,
    ) -> Result<(), SignError> {
        let mut given = [0u8; 32];
        match B64.decode_slice(sig.as_bytes(), &mut given) {
            Ok(32) => {}
            _ => return Err(SignError::Invalid),
        }
        let ok = std::iter::once(&self.current)
            .chain(&self.previous)
            .any(|k| bool::from(Self::mac(k, what, hash, exp).ct_eq(&given)));
        if !ok {
            return Err(SignError::Invalid);
        }
        // Checked after the signature, so an expiry is only reported for real URLs.
        if exp <= now_secs {
            return Err(SignError::Expired(exp));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_opens_only_its_object_until_expiry() {
        let s = UrlSigner::new(b"key", &[]);
        let h = BlobHash::of(b"x");
        let other = BlobHash::of(b"y");
        let sig = s.sign(Object::Blob, &h, 1000);
        assert_eq!(s.verify(Object::Blob, &h, 1000, &sig, 999), Ok(()));
        assert_eq!(
            s.verify(Object::Blob, &h, 1000, &sig, 1000),
            Err(SignError::Expired(1000))
        );
        assert_eq!(
            s.verify(Object::Blob, &h, 1001, &sig, 0),
            Err(SignError::Invalid)
        );
        assert_eq!(
            s.verify(Object::Thumbnail, &h, 1000, &sig, 0),
            Err(SignError::Invalid)
        );
        assert_eq!(
            s.verify(Object::Blob, &other, 1000, &sig, 0),
            Err(SignError::Invalid)
        );
        assert_eq!(
            s.verify(Object::Blob, &h, 1000, "garbage", 0),
            Err(SignError::Invalid)
        );
        assert_eq!(
            UrlSigner::new(b"other", &[]).verify(Object::Blob, &h, 1000, &sig, 0),
            Err(SignError::Invalid)
        );
        let rotated = UrlSigner::new(b"new", &[b"key"]);
        assert_eq!(rotated.verify(Object::Blob, &h, 1000, &sig, 0), Ok(()));
        let url = s.url("https://chat.example/", Object::Thumbnail, &h, 5);
        assert!(
            url.starts_with(&format!(
                "https://chat.example/v1/media/{h}/thumbnail?exp=5&sig="
            )),
            "{url}"
        );
    }
}
