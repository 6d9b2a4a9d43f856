//! End-to-end-encryption key material for one device, and the key directory
//! calls: generate, publish, count, fetch bundles.
//!
//! A device holds an Ed25519 signing key, an identity key and prekeys. Identity
//! and prekeys are X25519 keys, derived here from Ed25519 key pairs (the public
//! Montgomery form and the clamped secret scalar), so one audited curve
//! implementation covers both. The server checks the signed prekey's signature
//! with the signing key; it never sees a secret.

use crate::{Api, Error};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// An X25519 key pair with the id the directory knows it by.
#[derive(Clone, Serialize, Deserialize)]
pub struct Prekey {
    /// Id chosen by the device, unique per device.
    pub key_id: u32,
    /// Public key, base64.
    pub public_key: String,
    /// Secret scalar, base64 (stays on the device).
    pub secret_key: String,
}

impl Prekey {
    fn generate(key_id: u32) -> Self {
        let ed = SigningKey::from_bytes(&random_32());
        Self {
            key_id,
            public_key: B64.encode(ed.verifying_key().to_montgomery().to_bytes()),
            secret_key: B64.encode(ed.to_scalar_bytes()),
        }
    }
}

/// Everything a device publishes, with its secrets. Serialize it to keep it;
/// [`DeviceKeys::publish_body`] is what goes to the server.
#[derive(Clone, Serialize, Deserialize)]
pub struct DeviceKeys {
    /// Ed25519 signing key seed, base64.
    pub signing_seed: String,
    /// Long-term X25519 identity key.
    pub identity: Prekey,
    /// Medium-term X25519 prekey, signed by the signing key.
    pub signed_prekey: Prekey,
    /// Signature of `signed_prekey`'s public key bytes, base64.
    pub signed_prekey_signature: String,
    /// Single-use X25519 prekeys.
    pub one_time: Vec<Prekey>,
}

impl std::fmt::Debug for DeviceKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceKeys")
            .field("identity", &self.identity.public_key)
            .field("one_time", &self.one_time.len())
            .finish_non_exhaustive()
    }
}

impl DeviceKeys {
    /// Fresh keys with `one_time` one-time prekeys (ids 1..=one_time).
    pub fn generate(one_time: u32) -> Self {
        let seed = random_32();
        let signing = SigningKey::from_bytes(&seed);
        let signed_prekey = Prekey::generate(1);
        let spk_public = B64.decode(&signed_prekey.public_key).expect("just encoded");
        let signature = signing.sign(&spk_public);
        Self {
            signing_seed: B64.encode(seed),
            identity: Prekey::generate(0),
            signed_prekey,
            signed_prekey_signature: B64.encode(signature.to_bytes()),
            one_time: (1..=one_time).map(Prekey::generate).collect(),
        }
    }

    /// The Ed25519 public key, base64.
    pub fn signing_public(&self) -> String {
        let seed: [u8; 32] = B64
            .decode(&self.signing_seed)
            .ok()
            .and_then(|v| v.try_into().ok())
            .unwrap_or_default();
        B64.encode(SigningKey::from_bytes(&seed).verifying_key().to_bytes())
    }

    /// The body of `PUT /v1/keys`: public halves only.
    pub fn publish_body(&self) -> Value {
        json!({
            "identity_key": self.identity.public_key,
            "signing_key": self.signing_public(),
            "signed_prekey": {
                "key_id": self.signed_prekey.key_id,
                "public_key": self.signed_prekey.public_key,
                "signature": self.signed_prekey_signature,
            },
            "one_time_prekeys": self.one_time.iter()
                .map(|p| json!({"key_id": p.key_id, "public_key": p.public_key}))
                .collect::<Vec<_>>(),
        })
    }
}

/// One device's bundle from the directory, as `GET /v1/keys/{user}` returns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bundle {
    /// Owner.
    pub user_id: String,
    /// Device.
    pub device_id: u32,
    /// X25519 identity key, base64.
    pub identity_key: String,
    /// Ed25519 key that signed the prekey, base64.
    pub signing_key: String,
    /// The signed prekey.
    pub signed_prekey: Value,
    /// A one-time prekey claimed for the caller, if any were left.
    pub one_time_prekey: Option<Value>,
}

impl Api {
    /// Publishes this device's keys (replacing earlier ones).
    pub async fn put_keys(&self, token: &str, keys: &DeviceKeys) -> Result<(), Error> {
        let _: Value = self
            .call(
                reqwest::Method::PUT,
                "/v1/keys",
                Some(token),
                Some(keys.publish_body()),
            )
            .await?;
        Ok(())
    }

    /// How many one-time prekeys the server still holds for this device.
    pub async fn prekey_count(&self, token: &str) -> Result<u32, Error> {
        #[derive(Deserialize)]
        struct Count {
            one_time_prekeys: u32,
        }
        let c: Count = self
            .call(reqwest::Method::GET, "/v1/keys/count", Some(token), None)
            .await?;
        Ok(c.one_time_prekeys)
    }

    /// One bundle per device of `user_id`, each claiming a one-time prekey.
    pub async fn key_bundles(&self, token: &str, user_id: &str) -> Result<Vec<Bundle>, Error> {
        #[derive(Deserialize)]
        struct List {
            bundles: Vec<Bundle>,
        }
        let l: List = self
            .call(
                reqwest::Method::GET,
                &format!("/v1/keys/{user_id}"),
                Some(token),
                None,
            )
            .await?;
        Ok(l.bundles)
    }
}

fn random_32() -> [u8; 32] {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("OS random source available");
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};

    #[test]
    fn publish_body_carries_a_valid_signature_and_no_secret() {
        let keys = DeviceKeys::generate(3);
        let body = keys.publish_body();
        let text = body.to_string();
        assert!(!text.contains(&keys.signing_seed));
        assert!(!text.contains(&keys.identity.secret_key));
        let vk: [u8; 32] = B64
            .decode(body["signing_key"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let sig: [u8; 64] = B64
            .decode(body["signed_prekey"]["signature"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let spk = B64
            .decode(body["signed_prekey"]["public_key"].as_str().unwrap())
            .unwrap();
        VerifyingKey::from_bytes(&vk)
            .unwrap()
            .verify(&spk, &Signature::from_bytes(&sig))
            .unwrap();
        assert_eq!(body["one_time_prekeys"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn x25519_halves_agree() {
        // The secret scalar times the base point is the published public key.
        let p = Prekey::generate(7);
        let scalar: [u8; 32] = B64.decode(&p.secret_key).unwrap().try_into().unwrap();
        let public = curve25519_dalek::MontgomeryPoint::mul_base_clamped(scalar);
        assert_eq!(B64.encode(public.to_bytes()), p.public_key);
    }
}
