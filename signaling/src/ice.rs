//! ICE servers with short-lived TURN credentials (the TURN REST API scheme,
//! as turn-stun checks it): username `expiry:user_id` (expiry in Unix
//! seconds), password `base64(HMAC-SHA1(secret, username))`. Any holder of the
//! secret can mint them; the TURN server refuses them once `expiry` passes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use natter_common::Secret;
use serde::{Deserialize, Serialize};
use sha1::Sha1;

/// One entry of `RTCConfiguration.iceServers`: the JSON can be given to a
/// browser's `RTCPeerConnection` as is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IceServer {
    /// `stun:`, `turn:` or `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN username (`expiry:user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// `GET /v1/calls/ice-servers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IceServers {
    /// STUN first, then TURN with credentials.
    pub ice_servers: Vec<IceServer>,
    /// Seconds the credentials stay valid.
    pub ttl_secs: u32,
    /// When they expire (Unix seconds); fetch new ones before.
    pub expires_at: i64,
}

/// `base64(HMAC-SHA1(secret, username))`.
pub fn turn_password(secret: &[u8], username: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(username.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// The ICE servers for `user` at `now_secs`.
pub fn ice_servers(
    stun_urls: Vec<String>,
    turn_urls: &[String],
    secret: &Secret,
    user: &str,
    now_secs: i64,
    ttl_secs: u32,
) -> IceServers {
    let expires_at = now_secs + i64::from(ttl_secs);
    let mut ice_servers = Vec::new();
    if !stun_urls.is_empty() {
        ice_servers.push(IceServer {
            urls: stun_urls,
            username: None,
            credential: None,
        });
    }
    // Without a secret no TURN credential would work: hand out STUN only.
    if !turn_urls.is_empty() && !secret.is_empty() {
        let username = format!("{expires_at}:{user}");
        let credential = turn_password(secret.expose().as_bytes(), &username);
        ice_servers.push(IceServer {
            urls: turn_urls.to_vec(),
            username: Some(username),
            credential: Some(credential),
        });
    }
    IceServers {
        ice_servers,
        ttl_secs,
        expires_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use natter_turn_core::auth::{AuthError, Credentials, long_term_key, rest_password};

    #[test]
    fn credentials_are_the_ones_turn_stun_accepts() {
        let secret = Secret::new("shared-secret");
        let s = ice_servers(
            vec!["stun:h:3478".into()],
            &["turn:h:3478?transport=udp".into()],
            &secret,
            "u-1",
            1_000,
            600,
        );
        assert_eq!(s.expires_at, 1_600);
        let turn = &s.ice_servers[1];
        let user = turn.username.as_deref().unwrap();
        let pass = turn.credential.as_deref().unwrap();
        assert_eq!(user, "1600:u-1");
        assert_eq!(pass, rest_password(b"shared-secret", user));
        // The TURN server derives the same long-term key, until expiry.
        let creds = Credentials::new("natter", Some(b"shared-secret"), []);
        assert_eq!(
            creds.key_for(user, 1_599).unwrap(),
            long_term_key(user, "natter", pass)
        );
        assert!(matches!(
            creds.key_for(user, 1_600),
            Err(AuthError::Expired { .. })
        ));
    }

    #[test]
    fn rfc_style_vector_and_no_turn_without_secret() {
        // HMAC-SHA1 of "1433895918:user" under "secret", checked against an
        // independent implementation (Python's hmac module).
        assert_eq!(
            turn_password(b"secret", "1433895918:user"),
            "duY86vsmGEXM+Ma7pGS//SXJIv0="
        );
        let s = ice_servers(
            vec!["stun:h:1".into()],
            &["turn:h:1".into()],
            &Secret::default(),
            "u",
            0,
            600,
        );
        assert_eq!(s.ice_servers.len(), 1);
        assert!(s.ice_servers[0].username.is_none());
    }
}
