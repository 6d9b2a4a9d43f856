//! Client-side helpers for the fakes' tests: a reqwest client trusting the
//! test CA, and JWT signing done directly with aws-lc-rs, independent of the
//! fakes' verification code.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use natter_provider_fakes::tls::TestCa;
use serde_json::Value;
use std::time::{SystemTime, UNIX_EPOCH};

/// A client that trusts only the test CA.
pub(crate) fn client(ca: &TestCa) -> reqwest::Client {
    builder(ca).build().expect("client")
}

/// A client builder that trusts only the test CA.
pub(crate) fn builder(ca: &TestCa) -> reqwest::ClientBuilder {
    let cert = reqwest::Certificate::from_pem(ca.ca_pem().as_bytes()).expect("CA PEM");
    reqwest::Client::builder().tls_certs_only([cert])
}

pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// DER bytes of the single block in a PEM document.
pub(crate) fn pem_der(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(b64).expect("PEM base64")
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// An RS256 JWT signed with the PKCS#8 PEM `key`.
pub(crate) fn sign_rs256(key_pem: &str, header: &Value, claims: &Value) -> String {
    let key = RsaKeyPair::from_pkcs8(&pem_der(key_pem)).expect("RSA key");
    let input = format!("{}.{}", b64(header), b64(claims));
    let mut sig = vec![0u8; key.public_modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .expect("sign");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// An ES256 JWT (raw r||s signature) signed with the PKCS#8 PEM `key`.
pub(crate) fn sign_es256(key_pem: &str, header: &Value, claims: &Value) -> String {
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pem_der(key_pem))
        .expect("EC key");
    let input = format!("{}.{}", b64(header), b64(claims));
    let sig = key
        .sign(&SystemRandom::new(), input.as_bytes())
        .expect("sign");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}
