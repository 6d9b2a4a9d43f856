//! Long-term credentials (RFC 8489 §9.2): the TURN REST API scheme, static users,
//! and stateless nonces.
//!
//! TURN REST API: the username is `expiry:user` (expiry in Unix seconds) and the
//! password is `base64(HMAC-SHA1(secret, username))`, so any service holding the
//! secret can mint credentials without telling the TURN server. A username whose
//! expiry has passed is refused.
//!
//! Passwords and usernames are used as given (no SASLprep/OpaqueString mapping):
//! REST passwords are base64 and static users are configured by the operator.

use std::collections::HashMap;
use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The long-term credential key: MD5(username ":" realm ":" password) (RFC 8489 §9.2.2).
#[derive(Clone, PartialEq, Eq)]
pub struct LongTermKey(pub [u8; 16]);

impl std::fmt::Debug for LongTermKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LongTermKey([redacted])")
    }
}

/// Why a username has no usable key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Not a static user and not a well-formed REST username (or no REST secret set).
    #[error("unknown user")]
    UnknownUser,
    /// A REST username whose expiry has passed.
    #[error("credentials expired at {expiry}, now is {now}")]
    Expired {
        /// Expiry from the username (Unix seconds).
        expiry: u64,
        /// Current Unix time.
        now: u64,
    },
    /// Neither a REST secret nor static users are configured: every request is refused.
    #[error("no credentials are configured on this server")]
    NoCredentialsConfigured,
}

/// Why a NONCE was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NonceError {
    /// Not a nonce this server issued in the expected format.
    #[error("nonce is not in this server's format")]
    Malformed,
    /// The MAC does not match (another server, another client address, or tampering).
    #[error("nonce was not issued to this client by this server")]
    Forged,
    /// Older than the nonce lifetime.
    #[error("nonce is {age_secs} s old")]
    Expired {
        /// Age in seconds.
        age_secs: u64,
    },
}

/// Who may authenticate: a REST secret and/or static users, within one realm.
#[derive(Clone)]
pub struct Credentials {
    realm: String,
    rest_secret: Option<Vec<u8>>,
    static_users: HashMap<String, LongTermKey>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("realm", &self.realm)
            .field(
                "rest_secret",
                &self.rest_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("static_users", &self.static_users.len())
            .finish()
    }
}

impl Credentials {
    /// `rest_secret` empty or `None` disables the REST scheme; static users are
    /// `(username, password)` pairs.
    pub fn new<'a>(
        realm: &str,
        rest_secret: Option<&[u8]>,
        static_users: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Credentials {
        let static_users = static_users
            .into_iter()
            .map(|(user, pass)| (user.to_owned(), long_term_key(user, realm, pass)))
            .collect();
        Credentials {
            realm: realm.to_owned(),
            rest_secret: rest_secret.filter(|s| !s.is_empty()).map(<[u8]>::to_vec),
            static_users,
        }
    }

    /// The realm credentials are bound to.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// True when no one can authenticate.
    pub fn is_empty(&self) -> bool {
        self.rest_secret.is_none() && self.static_users.is_empty()
    }

    /// The account a username belongs to, for quotas: a static user is itself; a
    /// REST username `expiry:user` is `user`, so minting a fresh credential does
    /// not buy a fresh quota (a bare `expiry` belongs to the empty account).
    pub fn account_of<'a>(&self, username: &'a str) -> &'a str {
        if self.static_users.contains_key(username) || rest_expiry(username).is_none() {
            return username;
        }
        username.split_once(':').map_or("", |(_, user)| user)
    }

    /// The long-term key for `username` at `now_unix`.
    pub fn key_for(&self, username: &str, now_unix: u64) -> Result<LongTermKey, AuthError> {
        if self.is_empty() {
            return Err(AuthError::NoCredentialsConfigured);
        }
        if let Some(key) = self.static_users.get(username) {
            return Ok(key.clone());
        }
        let Some(secret) = &self.rest_secret else {
            return Err(AuthError::UnknownUser);
        };
        let expiry = rest_expiry(username).ok_or(AuthError::UnknownUser)?;
        if expiry <= now_unix {
            return Err(AuthError::Expired {
                expiry,
                now: now_unix,
            });
        }
        let password = rest_password(secret, username);
        Ok(long_term_key(username, &self.realm, &password))
    }
}

/// The expiry of a REST username `expiry` or `expiry:user`, if it has that form.
pub fn rest_expiry(username: &str) -> Option<u64> {
    let stamp = username
        .split_once(':')
        .map_or(username, |(stamp, _)| stamp);
    if stamp.is_empty() || stamp.len() > 20 || !stamp.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stamp.parse().ok()
}

/// `base64(HMAC-SHA1(secret, username))`: the REST API password for `username`.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let mut mac =
        <Hmac<Sha1> as KeyInit>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// MD5(username ":" realm ":" password).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> LongTermKey {
    let mut h = Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    LongTermKey(h.finalize().into())
}

/// Issues and checks stateless nonces: `hex(timestamp) || hex(MAC)`, where the MAC is
/// HMAC-SHA256 over the timestamp and the client's IP with a per-process key. Nothing
/// is stored per client; a nonce older than the lifetime earns a 438 Stale Nonce.
///
/// The client's port is left out so that one client reconnecting over TCP keeps its
/// nonce; the IP still stops a nonce from being replayed from elsewhere.
#[derive(Clone)]
pub struct NonceIssuer {
    key: [u8; 32],
    lifetime_secs: u64,
}

/// 16 hex digits of timestamp + 24 of MAC.
const NONCE_LEN: usize = 40;

impl NonceIssuer {
    /// `key` must be random and secret; `lifetime_secs` bounds a nonce's age.
    pub fn new(key: [u8; 32], lifetime_secs: u64) -> NonceIssuer {
        NonceIssuer { key, lifetime_secs }
    }

    /// A fresh nonce for `client` at `now_unix`.
    pub fn issue(&self, now_unix: u64, client: IpAddr) -> String {
        let mac = self.mac(now_unix, client);
        let mut out = String::with_capacity(NONCE_LEN);
        push_hex(&mut out, &now_unix.to_be_bytes());
        push_hex(&mut out, &mac);
        out
    }

    /// Whether `nonce` was issued to `client` less than the lifetime ago.
    pub fn check(&self, nonce: &str, now_unix: u64, client: IpAddr) -> Result<(), NonceError> {
        // The NONCE is attacker-controlled UTF-8: split its bytes, never the `str`,
        // so a multi-byte character across the split is just a malformed nonce.
        let nonce = nonce.as_bytes();
        if nonce.len() != NONCE_LEN {
            return Err(NonceError::Malformed);
        }
        let (stamp_hex, mac_hex) = nonce.split_at(16);
        let mut stamp = [0u8; 8];
        let mut mac = [0u8; 12];
        if !parse_hex(stamp_hex, &mut stamp) || !parse_hex(mac_hex, &mut mac) {
            return Err(NonceError::Malformed);
        }
        let issued = u64::from_be_bytes(stamp);
        if !bool::from(self.mac(issued, client).ct_eq(&mac)) {
            return Err(NonceError::Forged);
        }
        // A nonce from the future (clock stepped back) is treated as fresh.
        let age_secs = now_unix.saturating_sub(issued);
        if age_secs >= self.lifetime_secs {
            return Err(NonceError::Expired { age_secs });
        }
        Ok(())
    }

    fn mac(&self, stamp: u64, client: IpAddr) -> [u8; 12] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .expect("HMAC takes any key length");
        mac.update(&stamp.to_be_bytes());
        match client.to_canonical() {
            IpAddr::V4(ip) => mac.update(&ip.octets()),
            IpAddr::V6(ip) => mac.update(&ip.octets()),
        }
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; 12];
        out.copy_from_slice(&full[..12]);
        out
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0F)]));
    }
}

fn parse_hex(s: &[u8], out: &mut [u8]) -> bool {
    if s.len() != out.len() * 2 {
        return false;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    for (i, o) in out.iter_mut().enumerate() {
        match (nibble(s[2 * i]), nibble(s[2 * i + 1])) {
            (Some(h), Some(l)) => *o = (h << 4) | l,
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_credentials_follow_the_scheme() {
        let creds = Credentials::new("natter", Some(b"s3cret"), []);
        let user = "2000000000:alice";
        let password = rest_password(b"s3cret", user);
        assert_eq!(
            creds.key_for(user, 1_000).unwrap(),
            long_term_key(user, "natter", &password)
        );
        assert_eq!(
            creds.key_for(user, 2_000_000_000),
            Err(AuthError::Expired {
                expiry: 2_000_000_000,
                now: 2_000_000_000
            })
        );
        assert_eq!(creds.key_for("alice", 0), Err(AuthError::UnknownUser));
        assert_eq!(creds.key_for(":alice", 0), Err(AuthError::UnknownUser));
        assert_eq!(creds.key_for("12x:alice", 0), Err(AuthError::UnknownUser));
        assert!(
            creds.key_for("2000000000", 0).is_ok(),
            "a bare timestamp is a valid REST username"
        );
    }

    #[test]
    fn quota_accounts_ignore_the_expiry() {
        let creds = Credentials::new("natter", Some(b"s3cret"), [("1700:ops", "pw")]);
        assert_eq!(creds.account_of("2000000000:alice"), "alice");
        assert_eq!(creds.account_of("2000000001:alice"), "alice");
        assert_eq!(creds.account_of("2000000001:al:ice"), "al:ice");
        assert_eq!(creds.account_of("2000000000"), "");
        assert_eq!(
            creds.account_of("1700:ops"),
            "1700:ops",
            "static users are themselves"
        );
        assert_eq!(creds.account_of("bob"), "bob");
    }

    #[test]
    fn rest_password_matches_openssl() {
        // printf %s '1700000000:alice' | openssl dgst -binary -sha1 -hmac secret | base64
        assert_eq!(
            rest_password(b"secret", "1700000000:alice"),
            "d8soP47RbdIKLDUOpnJPVQyq5Ts="
        );
    }

    #[test]
    fn static_users_win_and_empty_means_refuse_all() {
        let creds = Credentials::new("r", None, [("bob", "pw")]);
        assert_eq!(
            creds.key_for("bob", 0).unwrap(),
            long_term_key("bob", "r", "pw")
        );
        assert_eq!(creds.key_for("1:bob", 0), Err(AuthError::UnknownUser));
        let none = Credentials::new("r", Some(b""), []);
        assert!(none.is_empty());
        assert_eq!(
            none.key_for("bob", 0),
            Err(AuthError::NoCredentialsConfigured)
        );
        assert!(!format!("{creds:?}").contains("pw"));
    }

    #[test]
    fn nonces_are_bound_to_client_and_expire() {
        let issuer = NonceIssuer::new([7; 32], 600);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let n = issuer.issue(1_000, a);
        assert_eq!(n.len(), NONCE_LEN);
        assert_eq!(issuer.check(&n, 1_599, a), Ok(()));
        assert_eq!(
            issuer.check(&n, 1_600, a),
            Err(NonceError::Expired { age_secs: 600 })
        );
        assert_eq!(issuer.check(&n, 1_000, b), Err(NonceError::Forged));
        assert_eq!(
            NonceIssuer::new([8; 32], 600).check(&n, 1_000, a),
            Err(NonceError::Forged)
        );
        assert_eq!(issuer.check("xyz", 1_000, a), Err(NonceError::Malformed));
        assert_eq!(
            issuer.check(&n.to_uppercase(), 1_000, a),
            Err(NonceError::Malformed)
        );
        // Regression: a two-byte character across byte 16 once panicked here
        // (string slicing at a non-char boundary), stopping the TURN thread.
        let split = format!("{}é{}", &n[..15], &n[17..]);
        assert_eq!(split.len(), NONCE_LEN);
        assert_eq!(issuer.check(&split, 1_000, a), Err(NonceError::Malformed));
        let all_wide = "é".repeat(NONCE_LEN / 2);
        assert_eq!(
            issuer.check(&all_wide, 1_000, a),
            Err(NonceError::Malformed)
        );
        // The IPv4-mapped form of a client is the same client.
        assert_eq!(
            issuer.check(&n, 1_000, "::ffff:192.0.2.1".parse().unwrap()),
            Ok(())
        );
    }
}
