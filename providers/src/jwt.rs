//! Compact JWS signing for the two provider token shapes: RS256 (Google's
//! OAuth2 JWT-bearer assertion) and ES256 (Apple's provider token). Only
//! signing: verifying is the providers' job (and the test fakes').

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde::Serialize;

/// Why a key cannot sign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The PEM wrapper is wrong.
    #[error(transparent)]
    Pem(#[from] crate::pem::PemError),
    /// The DER is not a key of the expected kind.
    #[error("not {expected} key in PKCS#8: {reason}")]
    Rejected {
        /// "an RSA" or "a P-256 (ES256)".
        expected: &'static str,
        /// aws-lc's reason.
        reason: String,
    },
    /// Signing failed (should not happen with a valid key).
    #[error("signing failed")]
    Sign,
}

/// A key that signs RS256 JWTs.
pub struct Rs256Key(RsaKeyPair);

impl Rs256Key {
    /// Reads a PKCS#8 PEM RSA key.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let der = crate::pem::pkcs8_der(pem)?;
        RsaKeyPair::from_pkcs8(&der)
            .map(Self)
            .map_err(|e| KeyError::Rejected {
                expected: "an RSA",
                reason: e.to_string(),
            })
    }

    fn sign(&self, input: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut sig = vec![0; self.0.public_modulus_len()];
        self.0
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input,
                &mut sig,
            )
            .map_err(|_| KeyError::Sign)?;
        Ok(sig)
    }
}

/// A key that signs ES256 JWTs.
pub struct Es256Key(EcdsaKeyPair);

impl Es256Key {
    /// Reads a PKCS#8 PEM P-256 key (an APNs `.p8` file).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let der = crate::pem::pkcs8_der(pem)?;
        EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &der)
            .map(Self)
            .map_err(|e| KeyError::Rejected {
                expected: "a P-256 (ES256)",
                reason: e.to_string(),
            })
    }

    fn sign(&self, input: &[u8]) -> Result<Vec<u8>, KeyError> {
        // FIXED: JWS wants r || s (64 bytes), not ASN.1 DER.
        self.0
            .sign(&SystemRandom::new(), input)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| KeyError::Sign)
    }
}

/// `header.claims` base64url-encoded, joined by a dot. Header and claims
/// are plain structs of strings and numbers, which always serialize.
fn signing_input(header: &impl Serialize, claims: &impl Serialize) -> String {
    let h = serde_json::to_vec(header).unwrap_or_default();
    let c = serde_json::to_vec(claims).unwrap_or_default();
    format!("{}.{}", B64URL.encode(h), B64URL.encode(c))
}

/// A signed RS256 JWT.
pub fn rs256(
    key: &Rs256Key,
    header: &impl Serialize,
    claims: &impl Serialize,
) -> Result<String, KeyError> {
    let input = signing_input(header, claims);
    let sig = key.sign(input.as_bytes())?;
    Ok(format!("{input}.{}", B64URL.encode(sig)))
}

/// A signed ES256 JWT.
pub fn es256(
    key: &Es256Key,
    header: &impl Serialize,
    claims: &impl Serialize,
) -> Result<String, KeyError> {
    let input = signing_input(header, claims);
    let sig = key.sign(input.as_bytes())?;
    Ok(format!("{input}.{}", B64URL.encode(sig)))
}

#[cfg(test)]
pub(crate) mod test_keys {
    //! Keys generated per test run, as PEM.
    use aws_lc_rs::encoding::AsDer;
    use base64::Engine;

    pub(crate) fn pem(der: &[u8]) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        )
    }

    pub(crate) fn rsa_pem() -> String {
        let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let der: aws_lc_rs::encoding::Pkcs8V1Der<'_> = key.as_der().unwrap();
        pem(der.as_ref())
    }

    pub(crate) fn p256_pem() -> String {
        let key = aws_lc_rs::signature::EcdsaKeyPair::generate(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        )
        .unwrap();
        pem(key.to_pkcs8v1().unwrap().as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{KeyPair, UnparsedPublicKey};
    use serde_json::json;

    fn parts(jwt: &str) -> (serde_json::Value, serde_json::Value, Vec<u8>, String) {
        let mut it = jwt.split('.');
        let h = it.next().unwrap();
        let c = it.next().unwrap();
        let s = it.next().unwrap();
        assert!(it.next().is_none());
        let dec = |p: &str| serde_json::from_slice(&B64URL.decode(p).unwrap()).unwrap();
        (
            dec(h),
            dec(c),
            B64URL.decode(s).unwrap(),
            format!("{h}.{c}"),
        )
    }

    #[test]
    fn es256_signatures_verify_as_raw_r_s() {
        let pem = test_keys::p256_pem();
        let key = Es256Key::from_pem(&pem).unwrap();
        let jwt = es256(
            &key,
            &json!({"alg":"ES256","kid":"K"}),
            &json!({"iss":"T","iat":1}),
        )
        .unwrap();
        let (h, c, sig, input) = parts(&jwt);
        assert_eq!(h["kid"], "K");
        assert_eq!(c["iss"], "T");
        assert_eq!(sig.len(), 64);
        let public = key.0.public_key().as_ref().to_vec();
        UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, public)
            .verify(input.as_bytes(), &sig)
            .unwrap();
    }

    #[test]
    fn rs256_signatures_verify() {
        let key = Rs256Key::from_pem(&test_keys::rsa_pem()).unwrap();
        let jwt = rs256(&key, &json!({"alg":"RS256"}), &json!({"aud":"x"})).unwrap();
        let (_, _, sig, input) = parts(&jwt);
        let public = key.0.public_key().as_ref().to_vec();
        UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, public)
            .verify(input.as_bytes(), &sig)
            .unwrap();
    }

    #[test]
    fn the_wrong_kind_of_key_is_named() {
        let err = Es256Key::from_pem(&test_keys::rsa_pem()).err().unwrap();
        assert!(err.to_string().contains("P-256"), "{err}");
        let err = Rs256Key::from_pem(&test_keys::p256_pem()).err().unwrap();
        assert!(err.to_string().contains("RSA"), "{err}");
    }
}
