//! `[signaling]` settings (`NATTER_SIGNALING__*`). The TURN REST secret is not
//! here: it is `turn.auth_secret` (`NATTER_TURN__AUTH_SECRET`), shared with the
//! TURN server.

use natter_common::ratelimit::Quota;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The signaling service's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignalingConfig {
    /// How long a call rings before it is missed.
    pub ring_timeout_secs: u32,
    /// How long a party of a call whose socket dropped may take to reconnect
    /// before the call ends as `connection_lost`.
    pub reconnect_grace_secs: u32,
    /// Lifetime of the TURN credentials handed out by `/v1/calls/ice-servers`.
    pub credential_ttl_secs: u32,
    /// STUN URLs for clients (`stun:host:port`), comma-separated in the
    /// environment. Empty: derived from `turn_urls` (our TURN server answers
    /// STUN on the same port).
    pub stun_urls: UrlList,
    /// TURN URLs for clients (`turn:host:3478?transport=udp`,
    /// `turn:host:3478?transport=tcp`, `turns:host:5349?transport=tcp`),
    /// comma-separated in the environment (`NATTER_SIGNALING__TURN_URLS`).
    pub turn_urls: UrlList,
    /// Largest page of `GET /v1/calls`.
    pub max_history_page: u32,
    /// `GET /v1/calls/ice-servers` per user: each answer mints a TURN credential,
    /// so an unlimited hand-out is an unlimited supply of TURN usernames. Beyond it
    /// the answer is 429 with `Retry-After`. Default 30 per 60 s (a client fetches
    /// once per call or credential refresh).
    pub ice_servers_rate: Quota,
    /// `call.offer` frames per caller: each rings devices (VoIP pushes to
    /// offline ones) and writes a call-log entry. Beyond it the offer is
    /// refused with `rate_limited` and rings nothing.
    pub offers_per_caller: Quota,
    /// `call.offer` frames from one caller to one callee.
    pub offers_per_pair: Quota,
}

impl Default for SignalingConfig {
    fn default() -> Self {
        Self {
            ring_timeout_secs: 60,
            reconnect_grace_secs: 30,
            credential_ttl_secs: 600,
            stun_urls: UrlList::default(),
            turn_urls: UrlList::default(),
            max_history_page: 200,
            ice_servers_rate: Quota::new(30, 60),
            offers_per_caller: Quota::new(40, 600),
            offers_per_pair: Quota::new(10, 600),
        }
    }
}

impl SignalingConfig {
    /// Checks what types cannot; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        for (key, v) in [
            ("ring_timeout_secs", self.ring_timeout_secs),
            ("reconnect_grace_secs", self.reconnect_grace_secs),
            ("max_history_page", self.max_history_page),
            ("ice_servers_rate.count", self.ice_servers_rate.count),
            (
                "ice_servers_rate.period_secs",
                self.ice_servers_rate.period_secs,
            ),
            ("offers_per_caller.count", self.offers_per_caller.count),
            (
                "offers_per_caller.period_secs",
                self.offers_per_caller.period_secs,
            ),
            ("offers_per_pair.count", self.offers_per_pair.count),
            (
                "offers_per_pair.period_secs",
                self.offers_per_pair.period_secs,
            ),
        ] {
            if v == 0 {
                return Err(format!("signaling.{key}: must be at least 1"));
            }
        }
        if !(60..=86_400).contains(&self.credential_ttl_secs) {
            return Err("signaling.credential_ttl_secs: must be within 60..=86400".into());
        }
        for u in &self.stun_urls.0 {
            if !u.starts_with("stun:") && !u.starts_with("stuns:") {
                return Err(format!("signaling.stun_urls: {u:?} is not a stun: URL"));
            }
        }
        for u in &self.turn_urls.0 {
            if !u.starts_with("turn:") && !u.starts_with("turns:") {
                return Err(format!(
                    "signaling.turn_urls: {u:?} is not a turn: or turns: URL"
                ));
            }
        }
        Ok(())
    }

    /// The STUN URLs to hand out: configured, or one per TURN host and port.
    pub fn effective_stun_urls(&self) -> Vec<String> {
        if !self.stun_urls.0.is_empty() {
            return self.stun_urls.0.clone();
        }
        let mut out: Vec<String> = Vec::new();
        for u in &self.turn_urls.0 {
            // turn:host:port?transport=x -> stun:host:port (not turns: — STUN over TLS is rare).
            let Some(rest) = u.strip_prefix("turn:") else {
                continue;
            };
            let hostport = rest.split('?').next().unwrap_or(rest);
            let s = format!("stun:{hostport}");
            if !out.contains(&s) {
                out.push(s);
            }
        }
        out
    }
}

/// URLs, from a comma-separated string or a list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UrlList(pub Vec<String>);

impl UrlList {
    /// From a comma-separated string.
    pub fn parse(s: &str) -> Self {
        Self(
            s.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }
}

impl Serialize for UrlList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(&self.0)
    }
}

impl<'de> Deserialize<'de> for UrlList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<UrlList, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UrlList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("URLs as a comma-separated string or a list")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<UrlList, E> {
                Ok(UrlList::parse(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<UrlList, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    out.extend(UrlList::parse(&item).0);
                }
                Ok(UrlList(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail closures return figment::Error by design.
mod tests {
    use super::*;

    #[test]
    fn urls_from_env_string_or_list_and_stun_derived() {
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "NATTER_SIGNALING__TURN_URLS",
                "turn:t.example:3478?transport=udp, turn:t.example:3478?transport=tcp,turns:t.example:5349?transport=tcp",
            );
            jail.set_env("NATTER_SIGNALING__RING_TIMEOUT_SECS", "45");
            let c: SignalingConfig = figment::Figment::from(
                figment::providers::Serialized::defaults(SignalingConfig::default()),
            )
            .merge(figment::providers::Env::prefixed("NATTER_SIGNALING__"))
            .extract()
            .map_err(|e| e.to_string())?;
            c.validate()?;
            assert_eq!(c.turn_urls.0.len(), 3);
            assert_eq!(c.ring_timeout_secs, 45);
            assert_eq!(c.effective_stun_urls(), vec!["stun:t.example:3478"]);
            Ok(())
        });
        let c: SignalingConfig =
            serde_json::from_str(r#"{"stun_urls":["stun:a:1","stun:b:2"]}"#).unwrap();
        assert_eq!(c.effective_stun_urls(), vec!["stun:a:1", "stun:b:2"]);
    }

    #[test]
    fn bad_values_name_their_key() {
        let c = SignalingConfig {
            turn_urls: UrlList::parse("http://x"),
            ..SignalingConfig::default()
        };
        assert!(c.validate().unwrap_err().starts_with("signaling.turn_urls"));
        let c = SignalingConfig {
            credential_ttl_secs: 5,
            ..SignalingConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .starts_with("signaling.credential_ttl_secs")
        );
    }
}
